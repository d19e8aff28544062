"""A record says how many replicas it was written to, on real node
processes: the `from` of the request that wrote it, kept by every replica;
and a node directory of the earlier format (records without it) is
refused with what to do, then served after ``selectorkv upgrade-records``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from selectorkv.kv.records import FIRST_FORMAT, FORMAT_FILE, Record, decode
from selectorkv.kv.storage import RocksStorage
from selectorkv.lab.harness.nodes import TOKEN, ClusterFactory, wait_until


def test_a_record_keeps_the_from_it_was_written_with(make_cluster: ClusterFactory) -> None:
    nodes = make_cluster(3)
    assert nodes[0].put("all", b"x") == 201  # the default: from = 3
    assert nodes[0].put("two", b"y", "&ack=2&from=2") == 201
    assert nodes[1].delete("gone", "&ack=1&from=1") == 202
    held = {}
    for key in ("all", "two", "gone"):
        for node in nodes:
            status, body = node.internal("GET", key)
            if status == 200:
                held.setdefault(key, set()).add(decode(body).replicas)
    assert held == {"all": {3}, "two": {2}, "gone": {1}}


def first_format(data: str) -> int:
    """Rewrite a stopped node's records as the earlier format stored them
    (lower-case kind, no replicas byte); how many."""
    storage = RocksStorage(data)
    try:
        records = list(storage.range(b"", None))
        old = [(key, raw[:1].lower() + raw[1:17] + raw[18:]) for key, raw in records]
        storage.apply_batch(old)
    finally:
        storage.close()
    (Path(data) / FORMAT_FILE).write_text(FIRST_FORMAT)
    return len(old)


def upgrade_records(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "selectorkv", "upgrade-records", *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_node_of_the_earlier_format_is_refused_then_upgraded(
    make_cluster: ClusterFactory,
) -> None:
    nodes = make_cluster(2)
    for i in range(20):
        assert nodes[0].put(f"k{i}", b"v%d" % i) == 201
    assert nodes[0].delete("k0") == 202
    for node in nodes:
        node.stop()
        assert first_format(node.data) == 20

    refused = subprocess.run(
        nodes[0].command, capture_output=True, text=True, timeout=60,
        env={**os.environ, "SELECTORKV_CLUSTER_TOKEN": TOKEN},
    )  # fmt: skip
    assert refused.returncode == 2
    assert "selectorkv upgrade-records --data" in refused.stderr

    for node in nodes:
        done = upgrade_records("--data", node.data, "--replicas", "2")
        assert done.returncode == 0, done.stderr
        assert "20 records and 0 hints rewritten" in done.stderr
        node.start()
    for node in nodes:
        wait_until(node.answers, f"{node.url} answers", timeout=30)
    assert nodes[1].get("k5") == (200, b"v5")
    assert nodes[1].get("k0")[0] == 404
    status, body = nodes[1].internal("GET", "k5")
    assert status == 200 and decode(body) == Record(decode(body).version, b"v5", 2)

    again = upgrade_records("--data", nodes[0].data, "--replicas", "2")
    assert again.returncode == 1  # the node holds its directory
    assert "stop it first" in again.stderr


def test_upgrade_records_refuses_a_directory_that_is_no_cluster_node(tmp_path: Path) -> None:
    RocksStorage(str(tmp_path / "single")).close()
    done = upgrade_records("--data", str(tmp_path / "single"), "--replicas", "3")
    assert done.returncode == 2
    assert "no cluster node's records" in done.stderr
    missing = upgrade_records("--data", str(tmp_path / "nowhere"), "--replicas", "3")
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
    zero = upgrade_records("--data", str(tmp_path / "single"), "--replicas", "0")
    assert zero.returncode == 2
