"""Hinted handoff: the store on a real RocksDB in a temporary directory,
then real node processes, one of them down while writes go on, and back."""

from __future__ import annotations

from pathlib import Path

import pytest

from selectorkv.cluster.hints import HintLimits, HintStore, hint_key, split_hint_key
from selectorkv.kv.records import Record
from selectorkv.kv.storage import RocksStorage
from selectorkv.lab.harness.nodes import ClusterFactory, Node
from tests.support import wait_until

LIMITS = HintLimits(ttl=3600, max_hints=1000, max_bytes=1 << 20, rate=100)


def open_store(path: Path, limits: HintLimits = LIMITS) -> HintStore:
    return HintStore(RocksStorage(str(path)), limits)


def test_hints_come_back_oldest_first_and_outlive_a_restart(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    for i in range(5):
        store.add("http://b:1", b"k%d" % i, Record(i << 32, b"v%d" % i, 3))
    store.add("http://c:1", b"other", Record(1, None, 3))
    store.close()
    store = open_store(tmp_path)  # as after a restart
    hints = store.oldest("http://b:1", 3, set())
    assert [hint.key for hint in hints] == [b"k0", b"k1", b"k2"]
    assert hints[1].record == Record(1 << 32, b"v1", 3)
    store.delivered("http://b:1", hints[0])
    assert [h.key for h in store.oldest("http://b:1", 10, {hints[1].sequence})] == [
        b"k2",
        b"k3",
        b"k4",
    ]
    assert store.pending("http://b:1") == 4 and store.pending("http://c:1") == 1
    assert store.counts["http://b:1"].delivered == 1
    store.close()


def test_over_a_bound_the_oldest_hints_are_dropped_and_counted(tmp_path: Path) -> None:
    store = open_store(tmp_path, HintLimits(ttl=3600, max_hints=3, max_bytes=1 << 20, rate=100))
    for i in range(5):
        store.add("http://b:1", b"k%d" % i, Record(i, b"v", 3))
    assert [hint.key for hint in store.oldest("http://b:1", 10, set())] == [b"k2", b"k3", b"k4"]
    assert store.counts["http://b:1"].dropped == 2
    store.close()
    by_bytes = open_store(tmp_path / "bytes", HintLimits(3600, 1000, max_bytes=100, rate=100))
    for i in range(5):
        by_bytes.add("http://b:1", b"k%d" % i, Record(i, b"x" * 40, 3))  # 69 bytes each
    assert by_bytes.pending("http://b:1") == 1
    assert by_bytes.counts["http://b:1"].dropped == 4
    by_bytes.close()


def test_a_hint_past_its_age_is_expired_not_returned(tmp_path: Path) -> None:
    store = open_store(tmp_path, HintLimits(ttl=1e-9, max_hints=10, max_bytes=1 << 20, rate=100))
    store.add("http://b:1", b"k", Record(1, b"v", 3))
    assert store.oldest("http://b:1", 10, set()) == []
    assert store.counts["http://b:1"].expired == 1
    assert store.pending("http://b:1") == 0
    store.close()


def hints(node: Node, kind: str, target: Node) -> float:
    return node.metric(f"selectorkv_hints_{kind}", peer=target.url)


def holds_all(node: Node, keys: list[str]) -> bool:
    return all(node.stored(key) == 200 for key in keys)


@pytest.mark.timing
@pytest.mark.parametrize("calls", ["async", "blocking"])
def test_a_node_that_was_down_gets_every_write_it_missed_without_a_read(
    make_cluster: ClusterFactory, calls: str
) -> None:
    nodes = make_cluster(3, "async", "--peer-calls", calls, "--peer-timeout", "0.5")
    a, b, c = nodes
    c.kill()
    keys = [f"k{i}" for i in range(40)]
    for key in keys:
        assert a.put(key, key.encode()) == 201  # 2 of 3: a and b
    assert hints(a, "stored_total", c) == 40
    assert hints(a, "pending", c) == 40
    assert c.process.poll() is not None
    c.restart()
    wait_until(lambda: holds_all(c, keys), "the missed writes handed to the node", timeout=30)
    wait_until(lambda: hints(a, "pending", c) == 0, "the hints deleted once delivered")
    assert hints(a, "delivered_total", c) == 40
    assert b.get("k7", "&ack=3&from=3") == (200, b"k7")


@pytest.mark.timing
def test_hints_survive_the_coordinators_restart(make_cluster: ClusterFactory) -> None:
    a, _b, c = make_cluster(3, "sync", "--peer-timeout", "0.5")
    c.kill()
    assert a.put("kept", b"v") == 201
    assert a.delete("gone") == 202
    a.kill()  # kill -9: the hints are in its RocksDB's log
    a.restart()
    c.restart()
    wait_until(lambda: c.stored("kept") == 200 and c.stored("gone") == 200, "hints delivered")
    _status, body = c.internal("GET", "gone")
    assert body.startswith(b"T")  # the tombstone reached it too


@pytest.mark.timing
def test_hints_expire_and_are_bounded_per_node(make_cluster: ClusterFactory) -> None:
    a, _b, c = make_cluster(
        3, "sync", "--peer-timeout", "0.5", "--hint-ttl", "0.5", "--hints-max", "3"
    )
    c.kill()
    for i in range(5):
        assert a.put(f"k{i}", b"v") == 201
    assert hints(a, "dropped_total", c) == 2
    wait_until(lambda: hints(a, "expired_total", c) == 3, "the three kept hints expired")
    assert hints(a, "pending", c) == 0


def test_hinted_handoff_can_be_turned_off(make_cluster: ClusterFactory) -> None:
    a, _b, c = make_cluster(3, "sync", "--peer-timeout", "0.5", "--no-hinted-handoff")
    c.kill()
    assert a.put("k", b"v") == 201
    assert hints(a, "stored_total", c) == 0


@pytest.mark.parametrize("sequence", [0, 1 << 56, 0x0100_0000_0000_00EE, 2**64 - 1])
def test_a_hints_place_names_its_target_whatever_bytes_its_sequence_holds(sequence: int) -> None:
    """A sequence with zero bytes in it (one hint in about 37) must not be
    split there: a restarted node read such a key as a target it could not
    decode, and did not start (found by a fault run)."""
    assert split_hint_key(hint_key("http://127.0.0.3:4000", sequence)) == (
        "http://127.0.0.3:4000",
        sequence,
    )
