"""``selectorkv load``: constant rate, latency from the due time, status and
error counts, and a loud report when it falls behind."""

from __future__ import annotations

import io
import json
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from selectorkv.lab.load.generator import Workload, generate, percentiles_ms
from selectorkv.lab.load.keyspace import ALPHABET, BODY_LENGTH, ID_LENGTH
from tests.support import (
    AnsweringHandler,
    FreezingServer,
    assert_counts_the_stall,
    assert_on_schedule,
    serve_process,
)


@pytest.fixture
def selectorkv_url(tmp_path: Path) -> Iterator[str]:
    proc = serve_process("--data", str(tmp_path / "db"), "--mode", "sync")
    yield f"http://{proc.address[0]}:{proc.address[1]}"
    proc.stop()


def test_put_requests_carry_fresh_bodies_of_the_seeds_alphabet() -> None:
    workload = Workload("put", seed=1)
    letters = set(ALPHABET.encode())
    bodies = set()
    for _ in range(200):
        head, _, body = workload.next_request(b"Host: 127.0.0.1:8080\r\n").partition(b"\r\n\r\n")
        assert head.startswith(b"PUT /v0/entity?id=")
        assert len(head.split(b" ")[1]) == len("/v0/entity?id=") + ID_LENGTH
        assert b"\r\nContent-Length: %d" % BODY_LENGTH in head
        assert len(body) == BODY_LENGTH and set(body) <= letters
        bodies.add(body)
    assert len(bodies) == 200  # each request its own window of the random text


@pytest.mark.timing
def test_keeps_to_its_schedule_or_says_it_fell_behind(selectorkv_url: str) -> None:
    report = generate(selectorkv_url, "put", rate=2000, connections=16, duration=3, processes=1)
    figures = report.as_json()
    assert_on_schedule(figures, 2000)
    assert figures["requests"] == 6000  # every planned request, however late
    assert figures["status_counts"] == {"201": 6000}
    assert figures["errors"] == 0


@pytest.mark.timing
def test_a_server_stall_shows_in_p90_not_only_in_max() -> None:
    server = FreezingServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = server.server_address[:2]
        report = generate(f"http://{host}:{port}", "get", 400, 4, 4, processes=1)
    finally:
        server.shutdown()
        server.server_close()
    latency = percentiles_ms(report.histogram)
    assert_counts_the_stall(latency)
    assert report.status_counts == {200: 1600}


def test_counts_status_codes(selectorkv_url: str) -> None:
    report = generate(selectorkv_url, "get", rate=500, connections=4, duration=1, processes=1)
    assert report.status_counts == {404: 500}  # an empty database
    mixed = generate(selectorkv_url, "mixed", rate=500, connections=4, duration=1, processes=1)
    assert set(mixed.status_counts) <= {200, 201, 404} and 201 in mixed.status_counts


def test_counts_errors_when_the_server_hangs_up() -> None:
    """A test server that reads each request and closes without answering."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def hang_up() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.recv(65536)
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        port = listener.getsockname()[1]
        report = generate(f"http://127.0.0.1:{port}", "get", 100, 2, 1, processes=1)
    finally:
        stop.set()
        listener.close()
    assert report.errors == 100
    assert report.requests == 0


@pytest.mark.timing
def test_reports_falling_behind_loudly(selectorkv_url: str) -> None:
    # 2 connections cannot carry 50k/s: one round trip through Python's h11
    # alone is tens of microseconds, so this is behind on any machine.
    report = generate(selectorkv_url, "get", 50_000, connections=2, duration=0.2, processes=1)
    assert report.behind_schedule
    out, err = io.StringIO(), io.StringIO()
    report.print_summary(out, err)
    assert err.getvalue().startswith("WARNING: behind schedule")
    assert "busy connections" in err.getvalue()  # 2 connections cannot carry 50k/s


def test_command_line_writes_json_and_hgrm(selectorkv_url: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "selectorkv", "load", "--url", selectorkv_url,
         "--workload", "put", "--rate", "1000", "--connections", "8", "--duration", "1",
         "--json", str(tmp_path / "run.json"), "--hgrm", str(tmp_path / "run.hgrm")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Requests/sec:" in result.stdout and "Detailed percentile spectrum" in result.stdout
    figures = json.loads((tmp_path / "run.json").read_text())
    for key in ("target_rate", "rate", "requests", "duration_s", "errors", "status_counts"):
        assert key in figures
    assert set(figures["latency_ms"]) == {"p50", "p90", "p99", "p99.9", "max"}
    assert figures["requests"] == 1000
    assert "Percentile" in (tmp_path / "run.hgrm").read_text()


def test_spreads_over_processes(selectorkv_url: str) -> None:
    report = generate(selectorkv_url, "get", rate=2000, connections=8, duration=1, processes=2)
    assert report.processes == 2
    assert report.requests == 2000


class CountingServer(socketserver.ThreadingTCPServer):
    """A test server that answers every request at once with 200 and keeps
    each request line with the time it arrived."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), CountingHandler)
        self.seen: list[tuple[float, bytes]] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class CountingHandler(AnsweringHandler):
    server: CountingServer

    def seen(self, head: bytes) -> None:
        self.server.seen.append((time.monotonic(), head.split(b"\r\n")[0]))


def test_several_urls_take_the_requests_in_turn_with_the_first_urls_query() -> None:
    servers = [CountingServer(), CountingServer()]
    try:
        urls = f"{servers[0].url}/?ack=1&from=1,{servers[1].url}"
        report = generate(urls, "get", rate=400, connections=4, duration=1, processes=1)
    finally:
        for server in servers:
            server.close()
    assert report.status_counts == {200: 400}
    assert [len(server.seen) for server in servers] == [200, 200]
    for server in servers:
        for _, line in server.seen:
            assert line.startswith(b"GET /v0/entity?id=")
            assert line.endswith(b"&ack=1&from=1 HTTP/1.1")


@pytest.mark.timing
def test_a_stalled_server_delays_only_its_own_share() -> None:
    """A client library that spreads over a cluster's nodes does not stop
    sending to one node because another hangs: the requests due to the
    working server keep going out during the other's one-second stall."""
    frozen = FreezingServer()
    threading.Thread(target=frozen.serve_forever, daemon=True).start()
    working = CountingServer()
    try:
        host, port = frozen.server_address[:2]
        report = generate(
            f"http://{host!s}:{port},{working.url}", "get", 400, 4, 4, processes=1, timeline=0.5
        )
    finally:
        for server in (frozen, working):
            server.shutdown()
            server.server_close()
    assert frozen.frozen_from is not None
    stall = (frozen.frozen_from, frozen.frozen_from + 1.0)
    during = [t for t, _ in working.seen if stall[0] + 0.1 <= t <= stall[1] - 0.1]
    assert len(during) >= 100, f"{len(during)} requests reached the working server in 0.8 s"
    # The timeline: 4 s in half-second buckets by due time, every answer in one.
    assert [bucket["t"] for bucket in report.timeline] == [0.5 * i for i in range(8)]
    assert sum(bucket["answers"] for bucket in report.timeline) == 1600
    assert max(bucket["max_ms"] for bucket in report.timeline) > 500  # the stall is in it
