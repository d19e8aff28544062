"""Group commit over real sockets and a real RocksDB with --fsync: the log
syncs counted by RocksDB itself (its statistics, exported in /metrics as
selectorkv_wal_syncs_total), one per write without concurrency and fewer
than the writes when they arrive together; a failed batch answers 500 to
each of its writes."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from selectorkv.kv.storage import RocksStorage, Storage, StorageError
from selectorkv.server import Server
from tests.support import (
    BlockingServerFactory,
    BlockingStorage,
    RawClient,
    ServerFactory,
    queue_depth,
    request_bytes,
    wait_until,
)


def wal_syncs(server: Server) -> int:
    found = re.search(rb"^selectorkv_wal_syncs_total (\S+)$", server.metrics(), re.MULTILINE)
    assert found, "no selectorkv_wal_syncs_total: is --fsync on?"
    return int(float(found.group(1)))


def counter(server: Server, name: str) -> int:
    found = re.search(rb"^selectorkv_%s_total (\S+)$" % name.encode(), server.metrics(), re.M)
    assert found, f"no selectorkv_{name}_total"
    return int(float(found.group(1)))


def accepted(server: Server) -> int:
    return counter(server, "connections_accepted")


def test_one_sync_per_write_without_concurrency(make_server: ServerFactory, mode: str) -> None:
    server = make_server(mode, fsync=True)
    client = RawClient(server.address)
    before = wal_syncs(server)
    batches, writes = counter(server, "commit_batches"), counter(server, "commit_writes")
    for i in range(20):
        assert client.request("PUT", f"/v0/entity?id=k{i}", b"v").status == 201
    assert client.request("DELETE", "/v0/entity?id=k0").status == 202
    assert wal_syncs(server) - before == 21
    assert counter(server, "commit_batches") - batches == 21  # a batch of one each
    assert counter(server, "commit_writes") - writes == 21
    assert client.request("GET", "/v0/entity?id=k1").body == b"v"


@pytest.mark.timing
def test_writes_that_arrive_together_share_a_sync_injected_blocking_storage(
    make_blocking_server: BlockingServerFactory, mode: str
) -> None:
    """Injected blocking storage holds the first write while 16 more arrive
    on 16 connections; they are then stored as one batch, one sync."""
    server, storage = make_blocking_server(mode, fsync=True)
    first = RawClient(server.address)
    first.send(request_bytes("PUT", "/v0/entity?id=first", b"1"))
    assert storage.entered.acquire(timeout=10)
    rocks = storage.inner
    assert isinstance(rocks, RocksStorage)
    before = rocks.wal_syncs()
    assert before is not None
    batches, writes = counter(server, "commit_batches"), counter(server, "commit_writes")
    clients = [RawClient(server.address) for _ in range(16)]
    for i, client in enumerate(clients):
        client.send(request_bytes("PUT", f"/v0/entity?id=c{i}", b"%d" % i))
    if mode == "async":
        wait_until(lambda: queue_depth(server) == 16, "16 writes queued")
    else:
        # The one SelectorThread is held in the storage; it adopts the new
        # connections when released. All 16 must be handed to it by then,
        # or a late one is read in a round of its own (a second batch).
        wait_until(lambda: accepted(server) == 17, "17 connections handed over")
    storage.gate.set()
    assert first.read_reply().status == 201
    assert [client.read_reply().status for client in clients] == [201] * 16
    after = rocks.wal_syncs()
    assert after is not None
    assert after - before <= 2  # 17 writes: the first alone, the 16 others together
    assert counter(server, "commit_batches") - batches <= 2
    assert counter(server, "commit_writes") - writes == 17
    for i, client in enumerate(clients):
        assert client.request("GET", f"/v0/entity?id=c{i}").body == b"%d" % i


def test_a_client_reads_its_own_write_at_once(server: Server) -> None:
    client = RawClient(server.address)
    client.send(
        request_bytes("PUT", "/v0/entity?id=mine", b"new")
        + request_bytes("GET", "/v0/entity?id=mine")
    )
    assert client.read_reply().status == 201
    assert client.read_reply().body == b"new"  # pipelined: parsed only after the commit


class FailingBatchStorage(BlockingStorage):
    """Injected storage: single writes wait for the gate and succeed; a
    batch of writes fails as a full disk would."""

    def apply_batch(self, writes: Sequence[tuple[bytes, bytes | None]]) -> None:
        raise StorageError("batch write failed: IO error: No space left on device")


@pytest.mark.timing
def test_a_failed_batch_answers_500_to_each_of_its_writes_injected_failing_storage(
    make_server: ServerFactory, mode: str
) -> None:
    held: list[FailingBatchStorage] = []

    def wrap(inner: Storage) -> Storage:
        held.append(FailingBatchStorage(inner))
        return held[0]

    server = make_server(mode, storage_wrapper=wrap)
    storage = held[0]
    first = RawClient(server.address)
    first.send(request_bytes("PUT", "/v0/entity?id=first", b"1"))
    assert storage.entered.acquire(timeout=10)
    clients = [RawClient(server.address) for _ in range(4)]
    for i, client in enumerate(clients):
        client.send(request_bytes("PUT", f"/v0/entity?id=b{i}", b"x"))
    if mode == "async":
        wait_until(lambda: queue_depth(server) == 4, "4 writes queued")
    storage.gate.set()
    assert first.read_reply().status == 201
    assert [client.read_reply().status for client in clients] == [500] * 4
    assert clients[0].request("GET", "/v0/entity?id=b0").status == 404  # nothing stored
    assert clients[0].request("GET", "/v0/entity?id=first").body == b"1"
