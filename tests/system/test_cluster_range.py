"""The cluster-wide range on real node processes: ``GET /v0/entities`` on
any node equals a model of the writes and deletes made through all of them;
it repairs the stale replicas it sees; a node that cannot be asked makes it
a 504; a slow reader holds the coordinator to bounded memory; ``local=true``
is the node's own range."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from selectorkv.kv.records import FORMAT_FILE, RECORDS_FORMAT, Record, decode
from selectorkv.kv.storage import RocksStorage
from selectorkv.lab.harness.nodes import ClusterFactory, Node, wait_until
from tests.support import RawClient, request_bytes, rss_bytes

NO_HINTS = "--no-hinted-handoff"


def entries(node: Node, query: str) -> list[tuple[bytes, bytes]]:
    """The entries of a range, one ``<key>\\n<value>`` per chunk."""
    client = RawClient(("127.0.0.1", node.port))
    client.send(request_bytes("GET", f"/v0/entities?{query}", extra="Connection: close\r\n"))
    head, _, body = client.read_until_closed().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    found = []
    at = 0
    while True:
        line_end = body.index(b"\r\n", at)
        size = int(body[at:line_end], 16)
        if size == 0:
            assert body[line_end:] == b"\r\n\r\n", "the stream ends with its last chunk"
            return found
        chunk = body[line_end + 2 : line_end + 2 + size]
        key, _, value = chunk.partition(b"\n")
        found.append((key, value))
        at = line_end + 2 + size + 2


@pytest.mark.parametrize(("mode", "flags"), [("async", ()), ("sync", ("--peer-calls", "blocking"))])
def test_the_range_of_every_node_equals_the_model(
    make_cluster: ClusterFactory, mode: str, flags: tuple[str, ...]
) -> None:
    nodes = make_cluster(3, mode, *flags)
    rng = random.Random(7)
    model: dict[bytes, bytes] = {}
    counts = ["", "&ack=1&from=1", "&ack=2&from=2", "&ack=1&from=3"]
    for _ in range(300):
        key = f"k{rng.randrange(120):03d}"
        node = rng.choice(nodes)
        if rng.random() < 0.3:
            assert node.delete(key, rng.choice(counts)) == 202
            model.pop(key.encode(), None)
        else:
            value = b"v%d" % rng.randrange(10**6)
            assert node.put(key, value, rng.choice(counts)) == 201
            model[key.encode()] = value
    expected = sorted(model.items())
    for node in nodes:
        assert entries(node, "start=k") == expected
        assert entries(node, "start=k030&end=k090") == [
            (k, v) for k, v in expected if b"k030" <= k < b"k090"
        ]
    assert entries(nodes[0], "start=z") == []


def test_local_true_is_the_nodes_own_range(make_cluster: ClusterFactory) -> None:
    nodes = make_cluster(3, "sync")
    for i in range(30):
        assert nodes[0].put(f"k{i:02d}", b"v", "&ack=1&from=1") == 201
    local = [entries(node, "start=k&local=true") for node in nodes]
    assert sum(len(found) for found in local) == 30  # each key on one node
    for node, found in zip(nodes, local, strict=True):
        assert all(node.stored(key.decode()) == 200 for key, _ in found)
    assert len(entries(nodes[1], "start=k")) == 30


def test_the_range_repairs_the_stale_replicas_it_sees(make_cluster: ClusterFactory) -> None:
    nodes = make_cluster(3, "sync", NO_HINTS)
    for i in range(20):
        assert nodes[0].put(f"k{i:02d}", b"old") == 201
    nodes[2].stop()
    for i in range(20):
        assert nodes[0].put(f"k{i:02d}", b"new") == 201
    assert nodes[0].delete("k00") == 202
    nodes[2].start()
    wait_until(nodes[2].answers, "the node answers again", timeout=30)
    assert decode(nodes[2].internal("GET", "k05")[1]).value == b"old"

    found = entries(nodes[2], "start=k")  # through the stale node itself
    assert found == [(b"k%02d" % i, b"new") for i in range(1, 20)]
    for i in range(20):  # no client read of any key: the range repaired them
        record = decode(nodes[2].internal("GET", f"k{i:02d}")[1])
        assert record.value == (None if i == 0 else b"new")
    assert nodes[2].metric("selectorkv_range_repairs_total") == 20


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_node_that_cannot_be_asked_makes_it_a_504(
    make_cluster: ClusterFactory, mode: str
) -> None:
    nodes = make_cluster(3, mode)
    assert nodes[0].put("k", b"v") == 201
    nodes[2].stop()
    status, body = nodes[0].request("GET", "/v0/entities?start=a")
    assert status == 504
    assert nodes[2].url.encode() in body
    status, _ = nodes[0].request("GET", "/v0/entities?start=a&local=true")
    assert status == 200  # the node's own range needs no other node
    assert nodes[0].request("GET", "/v0/entities?start=")[0] == 400


def fill_records(data: str, count: int, value_size: int) -> None:
    """``count`` records of 3 replicas, straight into a node's RocksDB."""
    Path(data).mkdir(parents=True)
    (Path(data) / FORMAT_FILE).write_text(RECORDS_FORMAT)
    storage = RocksStorage(data)
    try:
        version = time.time_ns() << 32
        writes = []
        for i in range(count):
            writes.append((b"%07d" % i, Record(version, b"v" * value_size, 3).encode()))
            if len(writes) == 4096:
                storage.apply_batch(writes)
                writes = []
        storage.apply_batch(writes)
    finally:
        storage.close()


@pytest.mark.timing
def test_a_slow_reader_holds_the_coordinator_to_bounded_memory(
    make_cluster: ClusterFactory,
) -> None:
    """300-byte values: the merged range is 31 MB; the coordinator holds a
    few slices of it, and its peers hold back. Four such merges at once are
    the most a node runs."""
    nodes = make_cluster(3, "async", start=False)
    for node in nodes:
        fill_records(node.data, 100_000, 300)
        node.start()
    for node in nodes:
        wait_until(node.ready, f"{node.url} answers", timeout=60)
    coordinator = nodes[0]
    before = rss_bytes(coordinator.process.pid)
    slow = RawClient(("127.0.0.1", coordinator.port), rcvbuf=4096)
    slow.send(request_bytes("GET", "/v0/entities?start=0000000"))
    peak = 0
    for _ in range(20):  # read 20 small pieces over a second
        assert slow.sock.recv(4096)
        time.sleep(0.05)
        peak = max(peak, rss_bytes(coordinator.process.pid) - before)
    assert peak < 16 * 1024 * 1024, f"the coordinator grew by {peak} bytes"
    assert coordinator.request("GET", "/v0/status")[0] == 200

    # Three more slow readers make four merges at once: a fifth is refused.
    others = []
    for _ in range(3):
        other = RawClient(("127.0.0.1", coordinator.port), rcvbuf=4096)
        other.send(request_bytes("GET", "/v0/entities?start=0000000"))
        assert other.sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        others.append(other)
    status, _ = coordinator.request("GET", "/v0/entities?start=0000000")
    assert status == 503
    for client in [slow, *others]:
        client.close()
    wait_until(
        lambda: coordinator.request("GET", "/v0/entities?start=0099999")[0] == 200,
        "the merges of the readers that left end",
    )
