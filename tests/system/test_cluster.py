"""A cluster of real node processes on loopback: sharding, replication with
ack/from, the internal protocol's token, and nodes that are down or stopped.
Every node is ``selectorkv serve --cluster ...`` in a child process."""

from __future__ import annotations

import http.client
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from selectorkv.kv.records import Record
from selectorkv.lab.harness.nodes import ClusterFactory, Node, serve_once
from selectorkv.lab.harness.servers import free_ports
from tests.support import MODES, wait_until

KINDS = [(mode, calls) for calls in ("async", "blocking") for mode in MODES]


@pytest.mark.parametrize(("mode", "calls"), KINDS)
def test_any_node_coordinates_and_every_node_reads_the_write(
    make_cluster: ClusterFactory, mode: str, calls: str
) -> None:
    nodes = make_cluster(3, mode, "--peer-calls", calls)
    assert nodes[0].put("k", b"value") == 201  # the default: ack 2 of from 3
    for node in nodes:
        assert node.get("k") == (200, b"value")
        assert node.get("k", "&ack=3&from=3") == (200, b"value")
    assert nodes[1].delete("k") == 202
    for node in nodes:
        assert node.get("k", "&ack=3&from=3")[0] == 404
    assert nodes[2].get("never-written")[0] == 404


@pytest.mark.parametrize(
    "counts", ["&ack=1", "&from=1", "&ack=0&from=1", "&ack=3&from=2", "&ack=1&from=4",
               "&ack=x&from=2", "&ack=1&ack=1&from=2"],
)  # fmt: skip
def test_bad_ack_and_from_are_400(make_cluster: ClusterFactory, counts: str) -> None:
    node = make_cluster(3)[0]
    assert node.put("k", b"v", counts) == 400
    assert node.get("k", counts)[0] == 400


def test_internal_requests_need_the_token(make_cluster: ClusterFactory) -> None:
    node = make_cluster(2)[0]
    record = Record(1, b"forged", 2).encode()
    status, _ = node.request("PUT", "/v0/internal/entity?id=k", record)
    assert status == 403
    status, _ = node.request(
        "PUT", "/v0/internal/entity?id=k", record, {"X-Selectorkv-Token": "wrong"}
    )
    assert status == 403
    assert node.get("k", "&ack=2&from=2")[0] == 404  # nothing was written


@pytest.mark.parametrize(("mode", "calls"), KINDS)
def test_a_quorum_survives_one_node_down_and_more_is_504(
    make_cluster: ClusterFactory, mode: str, calls: str
) -> None:
    nodes = make_cluster(3, mode, "--peer-calls", calls)
    nodes[2].stop()
    assert nodes[0].put("k", b"v1") == 201  # 2 of 3 still answer
    assert nodes[1].get("k") == (200, b"v1")
    assert nodes[0].put("k", b"v2", "&ack=3&from=3") == 504
    assert nodes[0].delete("k", "&ack=3&from=3") == 504
    assert nodes[1].get("k", "&ack=3&from=3")[0] == 504


@pytest.mark.timing
@pytest.mark.parametrize("calls", ["async", "blocking"])
def test_a_stopped_node_costs_the_peer_timeout_not_a_hang(
    make_cluster: ClusterFactory, calls: str
) -> None:
    """SIGSTOP: connects and requests to it hang; the others go on."""
    nodes = make_cluster(3, "sync", "--peer-timeout", "0.3", "--peer-calls", calls)
    nodes[2].process.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert nodes[0].put("k", b"v", "&ack=3&from=3") == 504
        assert time.monotonic() - started < 10  # the peer timeout, not a hang
        assert nodes[0].put("k", b"v") == 201  # 2 of 3
        assert nodes[1].get("k") == (200, b"v")
    finally:
        nodes[2].process.send_signal(signal.SIGCONT)


@pytest.mark.parametrize("calls", ["async", "blocking"])
def test_a_killed_node_fails_its_calls_and_is_used_again_when_back(
    make_cluster: ClusterFactory, calls: str
) -> None:
    """SIGKILL: the kept-alive connections to it break; nothing hangs, and
    once it is back the others reach it again without a restart."""
    nodes = make_cluster(3, "async", "--peer-calls", calls)
    assert nodes[0].put("k", b"v1", "&ack=3&from=3") == 201  # connections to both peers kept
    nodes[2].process.kill()
    nodes[2].process.wait(10)
    assert nodes[0].put("k", b"v2") == 201  # 2 of 3
    assert nodes[0].put("k", b"v3", "&ack=3&from=3") == 504
    nodes[2].restart()
    assert nodes[0].put("k", b"v4", "&ack=3&from=3") == 201
    assert nodes[2].get("k", "&ack=3&from=3") == (200, b"v4")


def halt(node: Node, how: str) -> None:
    """Take a node out: a clean stop, SIGSTOP (it hangs) or SIGKILL."""
    if how == "sigterm":
        node.stop()
    elif how == "sigstop":
        node.process.send_signal(signal.SIGSTOP)
    else:
        node.process.kill()
        node.process.wait(10)


@pytest.mark.parametrize("how", ["sigterm", "sigstop", "sigkill"])
def test_invariants_with_one_replica_down(make_cluster: ClusterFactory, how: str) -> None:
    """The course's: GET 1/2 sees a PUT 2/2 and a DELETE 2/2 with one
    replica down afterwards; GET 2/3 sees a PUT 2/3 made before or while
    one replica is down."""
    two = make_cluster(2, "sync", "--peer-timeout", "0.3")
    assert two[0].put("a", b"x", "&ack=2&from=2") == 201
    assert two[0].put("b", b"y", "&ack=2&from=2") == 201
    assert two[0].delete("b", "&ack=2&from=2") == 202
    halt(two[1], how)
    assert two[0].get("a", "&ack=1&from=2") == (200, b"x")
    assert two[0].get("b", "&ack=1&from=2")[0] == 404
    three = make_cluster(3, "async", "--peer-timeout", "0.3")
    assert three[0].put("c", b"z", "&ack=2&from=3") == 201
    halt(three[1], how)
    assert three[2].get("c", "&ack=2&from=3") == (200, b"z")
    assert three[0].put("d", b"w", "&ack=2&from=3") == 201  # with the replica down
    assert three[2].get("d", "&ack=2&from=3") == (200, b"w")
    assert three[2].delete("d", "&ack=2&from=3") == 202
    assert three[0].get("d", "&ack=2&from=3")[0] == 404


@pytest.mark.parametrize("mode", MODES)
def test_read_repair_gives_a_replica_the_write_it_missed(
    make_cluster: ClusterFactory, mode: str
) -> None:
    # No hints: one delivered as the node comes back would race the read.
    nodes = make_cluster(3, mode, "--no-hinted-handoff")
    nodes[2].stop()
    assert nodes[0].put("k", b"v") == 201  # on the two nodes that are up
    nodes[2].restart()
    assert nodes[2].stored("k") == 404
    assert nodes[1].get("k", "&ack=3&from=3") == (200, b"v")  # the freshest of three wins
    wait_until(lambda: nodes[2].stored("k") == 200, "the missed write repaired")


@pytest.mark.parametrize("calls", ["async", "blocking"])
def test_metrics_count_each_peers_calls_failures_and_504s(
    make_cluster: ClusterFactory, calls: str
) -> None:
    nodes = make_cluster(3, "sync", "--peer-calls", calls)
    nodes[2].stop()
    for i in range(5):
        assert nodes[0].put(f"m{i}", b"v", "&ack=3&from=3") == 504
    up, down = nodes[1].url, nodes[2].url

    def scrape() -> dict[tuple[str, str, str], float]:
        status, body = nodes[0].request("GET", "/metrics")
        assert status == 200
        return {
            (sample.name, sample.labels.get("peer", ""), sample.labels.get("le", "")): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples
        }

    # The 504 goes out when the down node fails; the up node's answer to the
    # last write may still be on its way: wait for it to be counted.
    requests = ("selectorkv_peer_requests_total", up, "")
    wait_until(lambda: scrape().get(requests) == 5, "the up node's five calls counted")
    samples = scrape()
    assert samples[("selectorkv_peer_failures_total", up, "")] == 0
    assert samples[("selectorkv_peer_failures_total", down, "")] == 5
    assert samples[("selectorkv_peer_latency_seconds_count", up, "")] == 5
    assert samples[("selectorkv_peer_latency_seconds_bucket", up, "+Inf")] == 5
    assert samples[("selectorkv_gateway_timeouts_total", "", "")] == 5


def test_two_nodes_share_ten_thousand_keys_evenly(make_cluster: ClusterFactory) -> None:
    """ack=1&from=1 is pure sharding: each key on one node, 5,000 +/- 250
    of 10,000 on each (counted with the node-local range)."""
    nodes = make_cluster(2)
    conn = http.client.HTTPConnection("127.0.0.1", nodes[0].port, timeout=10)
    for i in range(10_000):
        conn.request("PUT", f"/v0/entity?id={i}&ack=1&from=1", body=b"v")
        reply = conn.getresponse()
        reply.read()
        assert reply.status == 201
    conn.close()
    held = []
    for node in nodes:
        status, body = node.request("GET", "/v0/entities?start=0&local=true")
        assert status == 200
        held.append(body.count(b"\n"))  # one "<key>\n<value>" chunk per entry
    assert sum(held) == 10_000
    assert all(4750 <= count <= 5250 for count in held), held


def test_a_bad_topology_is_a_clear_error(tmp_path: Path) -> None:
    data = str(tmp_path / "db")
    result = serve_once("--data", data, "--cluster", "http://127.0.0.1:1", "--self", "http://x:2")
    assert result.returncode == 2
    assert "--self http://x:2 is not in --cluster" in result.stderr
    result = serve_once(
        "--data", data, "--cluster", "http://a:1,http://a:1", "--self", "http://a:1"
    )
    assert result.returncode == 2
    assert "more than once" in result.stderr
    result = serve_once("--data", data, "--cluster", "ftp://a:1", "--self", "ftp://a:1")
    assert result.returncode == 2
    assert "a node is http://host:port" in result.stderr


def test_databases_of_the_other_format_are_refused(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    """A single node's plain values must not be read as records, nor the reverse."""
    from selectorkv.kv.storage import RocksStorage

    single = tmp_path / "single"
    storage = RocksStorage(str(single))
    storage.put(b"k", b"plain value")
    storage.close()
    cluster = "http://127.0.0.1:1,http://127.0.0.1:2"
    result = serve_once("--data", str(single), "--cluster", cluster, "--self", "http://127.0.0.1:1")
    assert result.returncode == 2
    assert "holds a single node's data" in result.stderr
    node = make_cluster(1)[0]
    assert node.put("k", b"v") == 201
    node.stop()
    result = serve_once("--data", node.data)
    assert result.returncode == 2
    assert "holds a cluster node's data" in result.stderr


def launch(tmp_path: Path, nodes: int, base: int, *flags: str) -> subprocess.Popen[str]:
    """``selectorkv cluster`` in a child process, its output to read; in a
    session of its own, so that ``stop_launcher`` can reach its nodes too."""
    return subprocess.Popen(
        [sys.executable, "-m", "selectorkv", "cluster", "--nodes", str(nodes),
         "--base-port", str(base), "--data", str(tmp_path), "--mode", "sync",
         "--log-level", "warning", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def stop_launcher(launcher: subprocess.Popen[str]) -> None:
    """SIGTERM (the launcher stops its nodes), then SIGKILL to the whole
    session for whatever is left: a launcher killed alone would leave its
    nodes running."""
    if launcher.poll() is None:
        launcher.terminate()
        try:
            launcher.wait(30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(launcher.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # nothing left
    launcher.wait(30)


def launcher_lines(launcher: subprocess.Popen[str], *until: str) -> list[str]:
    """The launcher's lines up to the first that contains one of ``until``."""
    assert launcher.stdout is not None
    lines = []
    for line in launcher.stdout:
        lines.append(line.strip())
        if any(text in line for text in until):
            return lines
    raise AssertionError(f"the launcher ended without {until!r}: {lines}")


class Launched(NamedTuple):
    launcher: subprocess.Popen[str]
    base: int  # the first node's port
    lines: list[str]  # the launcher's output up to "all N nodes are up"
    data: Path


def launched(tmp_path: Path, nodes: int, *flags: str) -> Launched:
    """``selectorkv cluster`` with all its nodes up. Its ports are probed
    free, but one may be taken before a node binds it (another server, the
    source port of a connection): the launcher then stops, as it must, and
    the cluster is started again on other ports."""
    for attempt in range(3):
        base, data = free_ports(nodes), tmp_path / f"attempt-{attempt}"
        launcher = launch(data, nodes, base, *flags)
        lines = launcher_lines(launcher, "are up", "could not start")
        if "are up" in lines[-1]:
            return Launched(launcher, base, lines, data)
        stop_launcher(launcher)
        assert "Address already in use" in lines[-1], lines
    raise AssertionError("three launches in a row met a port taken meanwhile")


def test_selectorkv_cluster_starts_the_nodes_and_stops_them_on_sigterm(tmp_path: Path) -> None:
    launcher, base, lines, data = launched(tmp_path, 2)
    try:
        urls = [f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 1}"]
        assert f"selectorkv cluster: 2 nodes: {' '.join(urls)}" in lines
        assert any("token" in line for line in lines)
        nodes = [Node(url, int(url.rsplit(":", 1)[1])) for url in urls]
        for node in nodes:
            assert node.answers()  # up, as the launcher said
        assert nodes[0].put("k", b"v") == 201
        assert nodes[1].get("k") == (200, b"v")
        launcher.terminate()
        assert launcher.wait(30) == 0
        assert (data / "node-1").is_dir() and (data / "node-2").is_dir()
        assert not any(node.answers() for node in nodes)
    finally:
        stop_launcher(launcher)


def pinned_cpus(pid: int) -> set[str]:
    """The CPU lists that the threads of process ``pid`` may run on."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                found.add(line.split()[1])
    return found


def node_pids(launcher: subprocess.Popen[str]) -> list[int]:
    """The launcher's children, the nodes, in the order they were started."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    return sorted(int(pid) for pid in children)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_selectorkv_cluster_gives_each_node_its_own_cpu(tmp_path: Path) -> None:
    allowed = sorted(os.sched_getaffinity(0), reverse=True)
    launcher, _, lines, _ = launched(tmp_path, 2)
    try:
        said = [line.rsplit("cpu=", 1)[1] for line in lines if " cpu=" in line]
        assert said == [str(allowed[0]), str(allowed[1])]
        first, second = (pinned_cpus(pid) for pid in node_pids(launcher))
        # The server's own threads are pinned; RocksDB's are left to the OS.
        assert str(allowed[0]) in first and str(allowed[0]) not in second
        assert str(allowed[1]) in second and str(allowed[1]) not in first
    finally:
        stop_launcher(launcher)


def test_selectorkv_cluster_with_cpu_given_puts_every_node_there(tmp_path: Path) -> None:
    cpu = str(min(os.sched_getaffinity(0)))
    launcher, _, lines, _ = launched(tmp_path, 2, "--cpu", cpu)
    try:
        assert [line.rsplit(" ", 2)[1:] for line in lines if " cpu=" in line] == [
            [f"cpu={cpu}", "(--cpu)"]
        ] * 2
        for pid in node_pids(launcher):
            assert cpu in pinned_cpus(pid)
    finally:
        stop_launcher(launcher)


def test_selectorkv_cluster_stops_at_once_when_a_node_cannot_start(tmp_path: Path) -> None:
    """The second node's port is taken: the launcher says why, stops the
    first node and exits 1, instead of leaving a cluster without it."""
    base = free_ports(3)
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", base + 1))
        taken.listen()
        launcher = launch(tmp_path, 3, base)
        try:
            out, err = launcher.communicate(timeout=60)
        finally:
            stop_launcher(launcher)
    assert launcher.returncode == 1
    assert f"http://127.0.0.1:{base + 1} could not start (exit 1)" in out
    assert "Address already in use" in out
    assert "Address already in use" in err  # the node's own log, passed on
    for port in (base, base + 2):
        assert not Node(f"http://127.0.0.1:{port}", port).answers()


@pytest.mark.timing
def test_with_blocking_calls_a_request_waiting_for_a_peer_holds_up_no_other(
    make_cluster: ClusterFactory,
) -> None:
    """Async mode, blocking peer calls, four PayloadThreads: while one of
    them waits for a stopped replica, requests that arrive right behind it
    go to the others. (A PayloadThread that took them in one batch with the
    waiting request, as it takes writes for group commit, would answer them
    only after the peer timeout.)"""
    nodes = make_cluster(3, "async", "--peer-calls", "blocking", "--workers", "4",
                         "--peer-timeout", "5")  # fmt: skip
    nodes[2].process.send_signal(signal.SIGSTOP)
    waiting = socket.create_connection(("127.0.0.1", nodes[0].port), timeout=10)
    others = [socket.create_connection(("127.0.0.1", nodes[0].port), timeout=10) for _ in range(3)]
    try:
        body = b"v" * 10
        waiting.sendall(b"PUT /v0/entity?id=k&ack=3&from=3 HTTP/1.1\r\nHost: t\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
        for sock in others:
            sock.sendall(b"GET /v0/status HTTP/1.1\r\nHost: t\r\n\r\n")
        for sock in others:
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        readable, _, _ = select.select([waiting], [], [], 0)
        assert not readable, "the request waiting for the stopped replica answered first"
        assert waiting.recv(65536).startswith(b"HTTP/1.1 504 ")  # after the peer timeout
    finally:
        nodes[2].process.send_signal(signal.SIGCONT)
        for sock in (waiting, *others):
            sock.close()


def open_connections(node: Node) -> float:
    """The node's open client connections, the one asking included."""
    _, text = node.request("GET", "/metrics")
    for family in text_string_to_metric_families(text.decode()):
        if family.name == "selectorkv_connections":
            return float(family.samples[0].value)
    raise AssertionError("no selectorkv_connections gauge")


def test_blocking_calls_survive_a_kept_alive_connection_the_peer_closed(
    make_cluster: ClusterFactory,
) -> None:
    """The PayloadThread's connection to the peer sits idle past the peer's
    keep-alive timeout and the peer closes it; the next call on it is made
    again on a new connection instead of failing the replica (a 504 here)."""
    nodes = make_cluster(2, "async", "--peer-calls", "blocking", "--keepalive-timeout", "0.3")
    assert nodes[0].put("k", b"v1", "&ack=2&from=2") == 201
    wait_until(lambda: open_connections(nodes[1]) == 1, "node 2 closed the idle connection")
    assert nodes[0].put("k", b"v2", "&ack=2&from=2") == 201
    assert nodes[1].get("k", "&ack=2&from=2") == (200, b"v2")
