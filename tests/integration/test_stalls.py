"""``--record-stalls`` on a real server: a round that a slow storage (a
seam that sleeps in each write) holds up is in ``GET /v0/debug/stalls``,
on the clock a load generator's due times use; without the flag the path
is unknown. ``--rocksdb-threads idle`` runs RocksDB's own threads as
SCHED_IDLE."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from selectorkv.kv.storage import Storage
from tests.support import ForwardingStorage, RawClient, ServerFactory, serve_process

WRITE_SECONDS = 0.02


class SlowWriteStorage(ForwardingStorage):
    """Injected: each write takes WRITE_SECONDS more."""

    def put(self, key: bytes, value: bytes) -> None:
        time.sleep(WRITE_SECONDS)
        self.inner.put(key, value)

    def apply_batch(self, writes: Sequence[tuple[bytes, bytes | None]]) -> None:
        time.sleep(WRITE_SECONDS)
        self.inner.apply_batch(writes)


def test_a_round_held_up_by_a_slow_write_is_recorded_slow_storage(
    make_server: ServerFactory,
) -> None:
    def slow(storage: Storage) -> Storage:
        return SlowWriteStorage(storage)

    server = make_server("sync", storage_wrapper=slow, record_stalls=True)
    client = RawClient(server.address)
    before = time.monotonic()
    assert client.request("PUT", "/v0/entity?id=k", b"v").status == 201
    reply = client.request("GET", f"/v0/debug/stalls?since={before}")
    assert reply.status == 200
    page = json.loads(reply.body)
    assert page["clock"] == "monotonic" and page["now"] >= before
    rounds = [event for event in page["events"] if event["kind"] == "round"]
    assert any(
        event["detail"] == "SelectorThread-1" and event["seconds"] >= WRITE_SECONDS
        for event in rounds
    )
    assert all(event["start"] >= before for event in page["events"])
    assert client.request("GET", "/v0/debug/stalls?since=soon").status == 400
    assert client.request("POST", "/v0/debug/stalls").status == 405


def test_without_the_flag_there_is_no_record(make_server: ServerFactory) -> None:
    server = make_server("sync")
    assert RawClient(server.address).request("GET", "/v0/debug/stalls").status == 400


def rocksdb_policies(pid: int) -> dict[int, int]:
    """The scheduling policy of each of RocksDB's threads in process ``pid``."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().startswith("rocksdb"):
            found[int(task.name)] = os.sched_getscheduler(int(task.name))
    return found


@pytest.mark.parametrize(
    ("setting", "policy"), [("idle", os.SCHED_IDLE), ("normal", os.SCHED_OTHER)]
)
def test_rocksdb_threads_run_as_asked(tmp_path: Path, setting: str, policy: int) -> None:
    proc = serve_process("--data", str(tmp_path / "db"), "--rocksdb-threads", setting)
    try:
        policies = rocksdb_policies(proc.pid)
        assert policies, "RocksDB started no thread of its own"
        assert set(policies.values()) == {policy}
    finally:
        assert proc.stop() == 0
