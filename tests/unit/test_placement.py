"""Placement without sockets: topology parsing, rendezvous hashing's
determinism, prefix property and uniformity, and the ack/from rules."""

from __future__ import annotations

import subprocess
import sys

import pytest

from selectorkv.cluster.placement import Topology, TopologyError, normalise
from selectorkv.cluster.replication import replica_counts

NODES = "http://127.0.0.1:8080,http://127.0.0.1:8081,http://127.0.0.1:8082"


def test_urls_are_normalised() -> None:
    assert normalise(" http://LocalHost:8080/ ") == "http://localhost:8080"
    assert normalise("http://[::1]:9000") == "http://[::1]:9000"


@pytest.mark.parametrize(
    "url",
    ["https://a:1", "http://a", "a:1", "http://a:1/x", "http://a:1?q", "http://a:99999", ""],
)
def test_a_malformed_node_url_is_refused(url: str) -> None:
    with pytest.raises(TopologyError):
        normalise(url)


def test_a_topology_needs_self_in_the_list_and_no_duplicates() -> None:
    topology = Topology.parse(NODES, "http://127.0.0.1:8081")
    assert topology.self_url == "http://127.0.0.1:8081"
    assert len(topology.nodes) == 3
    with pytest.raises(TopologyError, match="is not in --cluster"):
        Topology.parse(NODES, "http://127.0.0.1:9999")
    with pytest.raises(TopologyError, match="more than once"):
        Topology.parse(NODES + ",http://127.0.0.1:8080/", "http://127.0.0.1:8080")
    with pytest.raises(TopologyError, match="no node"):
        Topology.parse(" , ", "http://127.0.0.1:8080")


def test_replicas_of_a_smaller_from_are_a_prefix_of_a_larger_one() -> None:
    topology = Topology.parse(NODES, "http://127.0.0.1:8080")
    for i in range(200):
        key = b"%d" % i
        three = topology.replicas(key, 3)
        assert sorted(three) == sorted(topology.nodes)
        assert topology.replicas(key, 2) == three[:2]
        assert topology.replicas(key, 1) == three[:1]


def test_replicas_do_not_depend_on_the_process_or_the_list_order() -> None:
    """Python's hash() is salted per process; placement must not be."""
    program = (
        "from selectorkv.cluster.placement import Topology\n"
        f"t = Topology.parse({NODES!r}, 'http://127.0.0.1:8080')\n"
        "print([t.replicas(b'%d' % i, 3) for i in range(50)])\n"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    assert len(runs) == 1
    reordered = Topology.parse(",".join(reversed(NODES.split(","))), "http://127.0.0.1:8080")
    here = Topology.parse(NODES, "http://127.0.0.1:8080")
    assert all(here.replicas(b"%d" % i, 3) == reordered.replicas(b"%d" % i, 3) for i in range(50))


def test_two_nodes_share_ten_thousand_keys_evenly() -> None:
    """5,000 +/- 250 (five standard deviations of a fair split) for any
    pair of URLs: the tests' ports are random."""
    for ports in ((8080, 8081), (40123, 51234), (1, 65535)):
        topology = Topology.parse(
            ",".join(f"http://127.0.0.1:{port}" for port in ports), f"http://127.0.0.1:{ports[0]}"
        )
        first = sum(topology.replicas(b"%d" % i, 1)[0] == topology.nodes[0] for i in range(10_000))
        assert 4750 <= first <= 5250, (ports, first)


def test_removing_a_node_moves_only_its_keys() -> None:
    three = Topology.parse(NODES, "http://127.0.0.1:8080")
    two = Topology.parse(",".join(NODES.split(",")[:2]), "http://127.0.0.1:8080")
    gone = NODES.split(",")[2]
    for i in range(2000):
        key = b"%d" % i
        before = three.replicas(key, 1)[0]
        if before != gone:
            assert two.replicas(key, 1)[0] == before


@pytest.mark.parametrize(
    ("query", "nodes", "expected"),
    [
        (b"id=k", 1, (1, 1)),
        (b"id=k", 2, (2, 2)),
        (b"id=k", 3, (2, 3)),
        (b"id=k", 4, (3, 4)),
        (b"id=k", 5, (3, 5)),
        (b"id=k&ack=1&from=3", 3, (1, 3)),
        (b"id=k&ack=1", 3, None),
        (b"id=k&from=1", 3, None),
        (b"id=k&ack=0&from=1", 3, None),
        (b"id=k&ack=2&from=1", 3, None),
        (b"id=k&ack=1&from=4", 3, None),
        (b"id=k&ack=-1&from=2", 3, None),
        (b"id=k&ack=1&ack=1&from=2", 3, None),
    ],
)
def test_ack_and_from_rules(query: bytes, nodes: int, expected: tuple[int, int] | None) -> None:
    assert replica_counts(query, nodes) == expected
