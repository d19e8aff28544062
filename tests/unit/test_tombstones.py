"""Tombstone purge's rules without sockets, over a real RocksDB in a
temporary directory: which tombstones are candidates (a fake clock handed
in says how old they are), and a replica's purge, which deletes only the
tombstone it is sent, never a write that came since. The purge across
nodes runs on real node processes (tests/system/test_antientropy.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from selectorkv.cluster.clock import NODE_BITS, HybridClock
from selectorkv.cluster.placement import Topology
from selectorkv.cluster.replication import BlockingPeerCalls, Cluster
from selectorkv.cluster.tombstones import PURGE, TombstonePurge
from selectorkv.config import ServerConfig
from selectorkv.http.exchange import Request
from selectorkv.kv import batch
from selectorkv.kv.records import Record, ReplicaStore, version_of
from selectorkv.kv.storage import RocksStorage

NODES = "http://127.0.0.1:1,http://127.0.0.1:2,http://127.0.0.1:3"
ME = "http://127.0.0.1:1"
GRACE = 60.0
NOW_NS = 1_000_000 * 10**9  # the fake clock's time


def version(seconds_ago: float) -> int:
    return int(NOW_NS - seconds_ago * 1e9) << NODE_BITS


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[RocksStorage]:
    storage = RocksStorage(str(tmp_path / "db"))
    yield storage
    storage.close()


def purger(storage: RocksStorage) -> tuple[TombstonePurge, ReplicaStore]:
    topology = Topology.parse(NODES, ME)
    cluster = Cluster(
        topology, {node: ("127.0.0.1", 1) for node in topology.nodes}, b"token",
        HybridClock(topology.index), peer_timeout=1.0, max_body=1024,
    )  # fmt: skip
    replica = ReplicaStore(storage, lambda version: None, ceiling=0)
    purge = TombstonePurge(
        replica, cluster, BlockingPeerCalls(cluster), GRACE, now_ns=lambda: NOW_NS
    )
    return purge, replica


def test_only_old_tombstones_whose_replicas_a_repair_reached_are_candidates_fake_clock(
    storage: RocksStorage,
) -> None:
    purge, _ = purger(storage)
    topology = Topology.parse(NODES, ME)
    # A key whose two replicas are this node and another one, and a key on all three.
    pair = next(k for i in range(100) if ME in topology.replicas(k := b"k%d" % i, 2))
    other = next(node for node in topology.replicas(pair, 2) if node != ME)
    records = [
        (pair, Record(version(GRACE + 5), None, 2).encode()),  # old: a candidate
        (b"young", Record(version(GRACE - 5), None, 3).encode()),  # within the grace period
        (b"value", Record(version(GRACE + 5), b"v", 3).encode()),  # not a tombstone
        (b"all", Record(version(GRACE + 5), None, 3).encode()),  # needs both peers
    ]
    found = list(purge.candidates(records, confirmed={other}))
    assert [(key, others) for key, _, others in found] == [(pair, [other])]
    both = set(topology.nodes) - {ME}
    found = list(purge.candidates(records, confirmed=both))
    assert [key for key, _, _ in found] == [pair, b"all"]


def test_a_replica_purges_only_the_tombstone_it_is_sent(storage: RocksStorage) -> None:
    purge, replica = purger(storage)
    old = Record(version(GRACE + 5), None, 3).encode()
    rewritten = Record(version(1), b"written since", 3).encode()
    for key, raw in ((b"gone", old), (b"back", rewritten)):
        replica.apply_all([(key, version_of(raw), raw)])
    body = batch.encode_calls(
        [batch.Call(b"gone", old), batch.Call(b"back", old), batch.Call(b"none", old)]
    )
    answer = purge.route(Request(b"POST", PURGE, body, ()), b"")
    assert answer.status == 200
    assert [status for status, _ in batch.decode_answers(answer.body, 3)] == [200, 409, 409]
    assert storage.get(b"gone") is None
    assert storage.get(b"back") == rewritten
    assert purge.purged == 1


def test_the_purge_endpoint_refuses_anything_but_tombstones(storage: RocksStorage) -> None:
    purge, replica = purger(storage)
    value = Record(version(GRACE + 5), b"v", 3).encode()
    replica.apply_all([(b"k", version_of(value), value)])
    body = batch.encode_calls([batch.Call(b"k", value)])
    assert purge.route(Request(b"POST", PURGE, body, ()), b"").status == 400
    assert purge.route(Request(b"POST", PURGE, b"junk", ()), b"").status == 400
    assert purge.route(Request(b"GET", PURGE, b"", ()), b"").status == 405
    assert storage.get(b"k") == value


def test_a_grace_period_within_the_hints_lifetime_is_refused() -> None:
    with pytest.raises(ValueError, match="must be longer than hint_ttl"):
        ServerConfig(tombstone_grace=60, hint_ttl=3600)
    ServerConfig(tombstone_grace=60, hint_ttl=3600, hinted_handoff=False)  # no hints: allowed
