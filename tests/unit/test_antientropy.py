"""Anti-entropy's peer side driven without sockets: its endpoints called as
the node's API calls them, over an injected failing storage (the seam the
tests share), with no peer to call."""

from __future__ import annotations

from selectorkv.cluster.antientropy import TREE, AntiEntropy
from selectorkv.cluster.clock import HybridClock
from selectorkv.cluster.placement import Topology
from selectorkv.cluster.replication import Cluster
from selectorkv.http.exchange import Request
from selectorkv.kv.records import ReplicaStore
from selectorkv.kv.storage import Cursor, StorageError
from selectorkv.lab.harness.nodes import wait_until
from tests.support import FailingStorage

NODES = "http://127.0.0.1:1,http://127.0.0.1:2"
PEER = b"http://127.0.0.1:2"


class FailingScanStorage(FailingStorage):
    """Injected failing storage whose scans fail too."""

    def range(self, start: bytes, end: bytes | None) -> Cursor:
        raise StorageError("disk on fire")


def anti_entropy() -> AntiEntropy:
    topology = Topology.parse(NODES, "http://127.0.0.1:1")
    cluster = Cluster(
        topology, {node: ("127.0.0.1", 1) for node in topology.nodes}, b"token",
        HybridClock(topology.index), peer_timeout=1.0, max_body=1024,
    )  # fmt: skip
    storage = FailingScanStorage()
    replica = ReplicaStore(storage, lambda version: None, ceiling=0)
    return AntiEntropy(replica, cluster, share=1.0, tombstone_grace=86400.0)


def test_a_tree_that_cannot_be_built_is_not_waited_for_failing_storage() -> None:
    tree = anti_entropy().routes()[TREE]
    query = b"peer=" + PEER
    assert tree(Request(b"POST", TREE + b"?" + query, b"", ()), query).status == 202
    ask = b"peer=" + PEER + b"&level=0&nodes=0"
    wait_until(
        lambda: tree(Request(b"GET", TREE + b"?" + ask, b"", ()), ask).status == 404,
        "the failed build is dropped",
    )


def test_a_peer_that_is_no_other_node_is_refused() -> None:
    tree = anti_entropy().routes()[TREE]
    for peer in (b"http://127.0.0.1:1", b"http://127.0.0.1:3", b""):
        query = b"peer=" + peer
        assert tree(Request(b"POST", TREE + b"?" + query, b"", ()), query).status == 400
