"""What a Dynamo-style store promises, tried on real node processes the way
a distributed-systems reviewer does: ties that every replica breaks alike,
values and keys at the client's limits, names that do not resolve, quorum
reads that never go back, skewed clocks (through the experiment's clock
seam, SELECTORKV_CLOCK_SKEW), answers that carry no record, and nodes that
disagree about the cluster."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from selectorkv.cluster.placement import Topology
from selectorkv.kv.records import Record, decode
from selectorkv.lab.harness.nodes import ClusterFactory, serve_once
from selectorkv.lab.harness.servers import free_port

# One of selectorkv's records, as a replica stores it: (version, value), written
# to 3 replicas.


def record(version: int, value: bytes | None) -> bytes:
    return Record(version, value, 3).encode()


def test_the_node_list_order_does_not_give_two_nodes_one_index() -> None:
    """A version's low bits are the coordinator's index: in the sorted list,
    so two nodes given the list in opposite orders still differ."""
    a, b = "http://127.0.0.1:1", "http://127.0.0.1:2"
    first = Topology.parse(f"{a},{b}", a)
    second = Topology.parse(f"{b},{a}", b)
    assert first.index != second.index
    assert first.cluster_id == second.cluster_id


def test_replicas_break_a_tie_between_equal_versions_alike(make_cluster: ClusterFactory) -> None:
    """Two records with one version reach two replicas in opposite orders:
    both keep the same one (before: each kept whichever came first, and
    they stayed split for good)."""
    nodes = make_cluster(2, "sync", order=[[0, 1], [1, 0]])
    a, b = record(7 << 32, b"a"), record(7 << 32, b"b")
    assert nodes[0].internal("PUT", "tie", a)[0] == 201
    assert nodes[0].internal("PUT", "tie", b)[0] == 201
    assert nodes[1].internal("PUT", "tie", b)[0] == 201
    assert nodes[1].internal("PUT", "tie", a)[0] == 200  # kept b
    held = {decode(node.internal("GET", "tie")[1]) for node in nodes}
    assert held == {Record(7 << 32, b"b", 3)}


@pytest.mark.parametrize("calls", ["async", "blocking"])
def test_values_and_keys_at_the_clients_limits_are_replicated(
    make_cluster: ClusterFactory, calls: str
) -> None:
    """A value of exactly --max-body and a key that fills the client's head
    reach all three replicas (before: the internal request, a record header more
    or its key escaped, hit the same limits and got 504)."""
    nodes = make_cluster(
        3, "async", "--max-body", "1000", "--max-header-size", "2048", "--peer-calls", calls
    )
    value = bytes(range(256)) * 3 + b"v" * 232  # 1000 bytes
    assert nodes[0].put("big", value, "&ack=3&from=3") == 201
    assert nodes[0].put("big", value + b"x", "&ack=3&from=3") == 413
    assert all(node.stored("big") == 200 for node in nodes)
    assert nodes[1].get("big", "&ack=3&from=3") == (200, value)
    # The head: request line, Host and the client's headers, about 80 bytes.
    key = "k#+!$'()*,/:;=?@[]^`{|}~" * 78  # bytes a client may send unescaped
    assert nodes[0].put(key, b"long", "&ack=3&from=3") == 201
    assert nodes[2].get(key, "&ack=3&from=3") == (200, b"long")
    escaped = "%00%FF" * 320  # a binary key, escaped by the client
    assert nodes[0].put(escaped, b"binary", "&ack=3&from=3") == 201
    assert nodes[1].get(escaped, "&ack=3&from=3") == (200, b"binary")


def test_a_node_name_that_does_not_resolve_is_a_start_error(tmp_path: Path) -> None:
    me = f"http://127.0.0.1:{free_port()}"
    result = serve_once(
        "--data", str(tmp_path / "db"), "--cluster", f"{me},http://no-such-node.invalid:9",
        "--self", me, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "'no-such-node.invalid' does not resolve" in result.stderr


def test_a_missing_self_says_what_is_missing(tmp_path: Path) -> None:
    result = serve_once("--data", str(tmp_path / "db"), "--cluster", "http://127.0.0.1:1")
    assert result.returncode == 2
    assert "--cluster needs --self" in result.stderr


@pytest.mark.timing
def test_quorum_reads_do_not_go_backwards(make_cluster: ClusterFactory) -> None:
    """Old data on all three replicas, new data on one (a write that
    reached only it). A 2/3 read that returns the new value has put it on
    the replicas it read from before answering; so a later 2/3 read from
    two others sees it, even if the node that had it is gone (before: the
    repair waited for the third replica, and died with the coordinator)."""
    nodes = make_cluster(3, "async", "--peer-timeout", "3")
    a, b, c = nodes
    assert a.put("k", b"old", "&ack=3&from=3") == 201
    old = decode(a.internal("GET", "k")[1])
    assert a.internal("PUT", "k", record(old.version + (1 << 32), b"new"))[0] == 201
    c.pause()
    assert a.get("k", "&ack=2&from=3") == (200, b"new")  # from a and b
    a.kill()  # with any repair it had not sent yet
    c.resume()
    assert b.get("k", "&ack=2&from=3") == (200, b"new")  # from b and c


def test_a_read_of_agreeing_replicas_repairs_nothing(make_cluster: ClusterFactory) -> None:
    nodes = make_cluster(3, "sync")
    assert nodes[0].put("k", b"v", "&ack=3&from=3") == 201
    for node in nodes:
        assert node.get("k", "&ack=3&from=3") == (200, b"v")
    assert sum(node.metric("selectorkv_read_repairs_total") for node in nodes) == 0


def test_a_write_through_a_node_whose_clock_is_behind_is_kept_skewed_clock_seam(
    make_cluster: ClusterFactory,
) -> None:
    """Node 1's clock runs 5 s behind, node 2's 5 s ahead (the experiment's
    seam, SELECTORKV_CLOCK_SKEW). A write through the slow node after one
    through another, and a write after a delete through the fast one, are
    each kept: every replica of the earlier write saw its version and
    issues higher ones (the hybrid clock)."""
    nodes = make_cluster(
        3, "sync", env=[{}, {"SELECTORKV_CLOCK_SKEW": "-5"}, {"SELECTORKV_CLOCK_SKEW": "5"}]
    )
    assert nodes[0].put("k", b"first") == 201
    assert nodes[1].put("k", b"second") == 201
    assert nodes[0].get("k", "&ack=3&from=3") == (200, b"second")
    assert nodes[2].delete("d") == 202
    assert nodes[0].put("d", b"after the delete") == 201
    assert nodes[1].get("d", "&ack=3&from=3") == (200, b"after the delete")


def test_an_internal_put_says_when_the_replica_kept_a_newer_record(
    make_cluster: ClusterFactory,
) -> None:
    node = make_cluster(1)[0]
    assert node.internal("PUT", "k", record(9 << 32, b"newer"))[0] == 201
    status, body = node.internal("PUT", "k", record(5 << 32, b"older"))
    assert (status, decode(body)) == (200, Record(9 << 32, b"newer", 3))
    assert node.metric("selectorkv_writes_superseded_total") == 1
    assert node.get("k") == (200, b"newer")


@pytest.mark.timing
def test_the_quorum_decides_before_the_request_times_out(make_cluster: ClusterFactory) -> None:
    """A stopped replica: the 3/3 read ends in the quorum's 504 after the
    peer timeout, not in the request timeout's (which is raised to fit a
    read and its repair when set lower)."""
    nodes = make_cluster(3, "async", "--peer-timeout", "0.5", "--request-timeout", "0.6")
    nodes[2].pause()
    try:
        assert nodes[0].get("k", "&ack=3&from=3") == (504, b"not enough replicas answered\n")
    finally:
        nodes[2].resume()


class AlwaysCreated(http.server.BaseHTTPRequestHandler):
    """A fake node that answers every request 201 with nothing in it."""

    def _created(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        self.send_response(201)
        self.send_header("content-length", "0")
        self.end_headers()

    do_GET = do_PUT = _created

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def fake_node() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AlwaysCreated)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("calls", ["async", "blocking"])
def test_a_read_answer_without_a_record_is_no_replicas_answer(
    make_cluster: ClusterFactory, fake_node: str, calls: str
) -> None:
    """A replica that answers a read 201 (no record) does not count toward
    ack: the 2/2 read is 504, not 404."""
    node = make_cluster(1, "sync", "--peer-calls", calls, strangers=[fake_node])[0]
    assert node.get("k", "&ack=2&from=2")[0] == 504
    assert node.get("k", "&ack=1&from=2")[0] == 404  # its own replica answers


def test_nodes_refuse_a_node_with_another_node_list(make_cluster: ClusterFactory) -> None:
    """Node 2 restarted with a list that names a third node: node 1 and it
    place keys differently, so node 2 refuses node 1's internal requests
    (409), logs it and counts it; node 1's writes that need it get 504."""
    nodes = make_cluster(2)
    first, second = nodes
    command = list(second.command)
    at = command.index("--cluster") + 1
    command[at] += f",http://127.0.0.1:{free_port()}"
    second.command = tuple(command)
    second.restart()
    assert first.put("k", b"v", "&ack=2&from=2") == 504
    assert second.metric("selectorkv_topology_mismatches_total") >= 1


def test_a_data_directory_remembers_its_node(make_cluster: ClusterFactory) -> None:
    node = make_cluster(1)[0]
    node.stop()
    other = f"http://127.0.0.1:{free_port()}"
    result = serve_once("--data", node.data, "--cluster", f"{node.url},{other}", "--self", other)
    assert result.returncode == 2
    assert f"holds the data of node {node.url}" in result.stderr


def test_a_peer_that_is_down_costs_no_client_its_answer_nor_a_socket(
    make_cluster: ClusterFactory,
) -> None:
    """Every request that needs a node that is down is answered (504), and
    the coordinator's open descriptors do not grow with them."""
    first, second = make_cluster(2, "sync")
    second.stop()
    assert first.put("warm", b"v", "&ack=2&from=2") == 504
    descriptors = Path(f"/proc/{first.process.pid}/fd")
    before = len(list(descriptors.iterdir()))
    for i in range(40):
        assert first.put(f"k{i}", b"v", "&ack=2&from=2") == 504
    assert len(list(descriptors.iterdir())) <= before + 2
