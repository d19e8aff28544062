"""selectorkv.client against real node processes: it places keys as the
nodes do (its requests make no hop), falls over to the next replica when
the first is gone, and refuses a node list that is not the nodes' own."""

from __future__ import annotations

import pytest

from selectorkv.client import (
    Client,
    NoNodeAvailable,
    NotEnoughReplicas,
    RequestFailed,
    TopologyMismatch,
)
from selectorkv.lab.harness.nodes import ClusterFactory, Node
from tests.support import ServerFactory

PEER_CALLS = "selectorkv_peer_requests_total"


def peer_calls(nodes: list[Node]) -> float:
    """Peer calls the nodes have made, all of them together."""
    return sum(
        node.metric(PEER_CALLS, peer=other.url)
        for node in nodes
        for other in nodes
        if other is not node
    )


def test_the_client_places_keys_as_the_nodes_do(make_cluster: ClusterFactory) -> None:
    nodes = make_cluster(3, "sync")
    by_url = {node.url: node for node in nodes}
    with Client([node.url for node in reversed(nodes)]) as kv:  # any order
        keys = [f"key-{i}" for i in range(60)]
        for key in keys:
            kv.put(key, key.encode(), ack=1, from_=1)
        assert peer_calls(nodes) == 0  # every request entered at its key's replica
        for key in keys:
            (home,) = kv.replicas(key, 1)
            assert [by_url[url].stored(key) for url in sorted(by_url)] == [
                200 if url == home else 404 for url in sorted(by_url)
            ]
            assert kv.get(key, ack=1, from_=1) == key.encode()
        assert peer_calls(nodes) == 0
        homes = {kv.replicas(key, 1)[0] for key in keys}
        assert homes == set(by_url)  # the keys spread over every node
        elsewhere = next(url for url in by_url if url != kv.replicas("key-0", 1)[0])
        assert by_url[elsewhere].put("key-0", b"v", "&ack=1&from=1") == 201
        assert peer_calls(nodes) == 1  # what a request that misses its replica costs


def test_get_put_delete_and_range_through_the_cluster(make_cluster: ClusterFactory) -> None:
    nodes = make_cluster(3, "async")
    with Client([node.url for node in nodes]) as kv:
        assert kv.get(b"missing") is None
        kv.put(b"a key/with?odd&bytes%", b"\x00binary\xff")
        assert kv.get(b"a key/with?odd&bytes%") == b"\x00binary\xff"
        kv.delete(b"a key/with?odd&bytes%")
        assert kv.get(b"a key/with?odd&bytes%") is None
        for i in range(20):
            kv.put(f"r{i:02d}", b"v%d" % i, ack=1, from_=1)  # each on one node only
        kv.put("r05", b"again")  # the default 2 of 3
        entries = list(kv.range("r03", "r08"))
        assert entries == [
            (b"r03", b"v3"), (b"r04", b"v4"), (b"r05", b"again"), (b"r06", b"v6"), (b"r07", b"v7"),
        ]  # fmt: skip
        assert [key for key, _ in kv.range("r18")] == [b"r18", b"r19"]


def test_a_dead_first_replica_falls_over_to_the_next(make_cluster: ClusterFactory) -> None:
    nodes = make_cluster(3, "sync", "--peer-timeout", "0.5")
    urls = [node.url for node in nodes]
    with Client(urls, timeout=5) as kv:
        key = "the-key"
        first = kv.replicas(key)[0]
        kv.put(key, b"before")  # connections to every node it used are kept
        next(node for node in nodes if node.url == first).kill()
        kv.put(key, b"after")  # 2 of 3: the other two replicas still make a quorum
        assert kv.get(key) == b"after"
        with pytest.raises(NotEnoughReplicas):
            kv.put(key, b"all three", ack=3, from_=3)


def test_no_node_at_all_is_said_as_such(make_cluster: ClusterFactory) -> None:
    nodes = make_cluster(2, "sync")
    urls = [node.url for node in nodes]
    for node in nodes:
        node.stop()
    with Client(urls, timeout=2) as kv, pytest.raises(NoNodeAvailable, match="no node answered"):
        kv.get("k")


def test_a_wrong_node_list_is_refused_loudly(make_cluster: ClusterFactory) -> None:
    nodes = make_cluster(3, "sync")
    with Client([node.url for node in nodes[:2]]) as kv, pytest.raises(TopologyMismatch) as found:
        kv.put("k", b"v")
    assert "cluster id" in str(found.value) and nodes[2].url in str(found.value)
    other_name = [node.url.replace("127.0.0.1", "localhost") for node in nodes]
    with Client(other_name) as kv, pytest.raises(TopologyMismatch):
        kv.get("k")
    assert all(node.stored("k") == 404 for node in nodes)  # nothing was written


def test_bad_arguments_are_errors_before_any_request(make_cluster: ClusterFactory) -> None:
    nodes = make_cluster(2, "sync")
    with Client([node.url for node in nodes]) as kv:
        for ack, from_ in ((1, None), (0, 1), (2, 1), (1, 3)):
            with pytest.raises(ValueError):
                kv.put("k", b"v", ack=ack, from_=from_)
        with pytest.raises(ValueError):
            kv.get("")
    for bad in ([], ["not a url"], ["http://127.0.0.1:1", "http://127.0.0.1:1"]):
        with pytest.raises(ValueError):
            Client(bad)


def test_a_node_refusal_is_raised_with_its_reason(make_server: ServerFactory) -> None:
    server = make_server("sync", max_body=10)
    host, port = server.address
    with Client([f"http://{host}:{port}"]) as kv:  # a single node: no /v0/cluster
        kv.put("k", b"small")
        assert kv.get("k") == b"small"
        with pytest.raises(RequestFailed) as found:
            kv.put("k", b"far too large for the node")
    assert found.value.status == 413 and "larger than 10 bytes" in str(found.value)


@pytest.mark.parametrize("closed_loop", [False, True])
def test_the_load_generator_routes_by_placement_too(
    make_cluster: ClusterFactory, closed_loop: bool
) -> None:
    from selectorkv.lab.load import generator  # the lab extra

    nodes = make_cluster(3, "sync")
    urls = [node.url for node in nodes]
    report = generator.generate(
        urls[0] + "?ack=1&from=1," + ",".join(urls[1:]), "put", rate=300, connections=6,
        duration=1.0, closed_loop=closed_loop, route="placement",
    )  # fmt: skip
    assert report.status_counts[201] > 100 and set(report.status_counts) == {201}
    assert peer_calls(nodes) == 0  # each request entered at its key's replica
    assert all(
        node.metric("selectorkv_responses_total", method="PUT", status="201") > 10 for node in nodes
    )
    round_robin = generator.generate(
        urls[0] + "?ack=1&from=1," + ",".join(urls[1:]), "put", rate=300, connections=6,
        duration=0.5,
    )  # fmt: skip
    assert set(round_robin.status_counts) == {201}
    assert peer_calls(nodes) > 0  # two requests in three miss their replica


def test_the_load_generator_refuses_another_node_list(make_cluster: ClusterFactory) -> None:
    from selectorkv.lab.load import generator

    nodes = make_cluster(3, "sync")
    with pytest.raises(TopologyMismatch):
        generator.generate(",".join(node.url for node in nodes[:2]), "get", rate=10,
                           connections=2, duration=0.2, route="placement")  # fmt: skip
