"""The figures of docs/reliability.md: what hostile or heavy load costs the
clients that behave. Needs wrk.

    python -m benchmarks.reliability_figures
"""

from __future__ import annotations

import functools
import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.serving import serving
from selectorkv.lab.harness.cpus import on_load_cpus
from selectorkv.lab.load.tools import SelectorkvLoad
from tests.support import RawClient, request_bytes, rss_bytes

SCRIPTS = Path(__file__).resolve().parent.parent / "wrk_scripts"
PORT = 8099


def wrk(url: str, script: str, connections: int, seconds: int = 5) -> dict[str, str]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
         str(SCRIPTS / script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    found = {
        "rate": re.search(r"Requests/sec:\s+([\d.]+)", out),
        "p50": re.search(r"50%\s+(\S+)", out),
        "p99": re.search(r"99%\s+(\S+)", out),
        "non2xx": re.search(r"Non-2xx or 3xx responses: (\d+)", out),
        "total": re.search(r"(\d+) requests in", out),
    }
    return {key: match.group(1) if match else "0" for key, match in found.items()}


def server_pid(port: int) -> int:
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True)
    return int(re.search(r"pid=(\d+)", out.stdout).group(1))  # type: ignore[union-attr]


def slow_heads() -> None:
    with (
        tempfile.TemporaryDirectory() as data,
        serving(PORT, data, "--header-timeout", "30") as url,
    ):
        wrk(url, "put.lua", 16, 2)
        alone = wrk(url, "get.lua", 16)
        stalled = []
        for _ in range(500):
            sock = socket.create_connection(("127.0.0.1", PORT))
            sock.sendall(b"GET /v0/status HTTP/1.1\r\nHost: t\r\nX-Wait: ")
            stalled.append(sock)
        beside = wrk(url, "get.lua", 16)
        for sock in stalled:
            sock.close()
    print(
        f"| 500 connections stalled mid-head | GET, 16 connections: {float(alone['rate']):,.0f} "
        f"req/s, p99 {alone['p99']} alone; {float(beside['rate']):,.0f} req/s, p99 "
        f"{beside['p99']} beside them |"
    )


def stalled_readers() -> None:
    with tempfile.TemporaryDirectory() as data, serving(PORT, data) as url:
        value = b"x" * (4 * 1024 * 1024)
        RawClient(("127.0.0.1", PORT)).request("PUT", "/v0/entity?id=big", value)
        pid = server_pid(PORT)
        before = rss_bytes(pid)
        readers = [RawClient(("127.0.0.1", PORT), rcvbuf=4096) for _ in range(100)]
        for reader in readers:
            reader.send(request_bytes("GET", "/v0/entity?id=big") * 8)
        time.sleep(2)
        grown = rss_bytes(pid) - before
        status = RawClient(("127.0.0.1", PORT)).request("GET", "/v0/status").status
        for reader in readers:
            reader.close()
        assert url
    print(
        f"| 100 clients pipelining 8 GETs of a 4 MiB value, reading nothing | server RSS "
        f"+{grown / 2**20:.0f} MiB (one 4 MiB response each, not 8); other clients: {status} |"
    )


def overload() -> None:
    """Closed loop with more connections than queue slots (a burst)."""
    with tempfile.TemporaryDirectory() as data, serving(PORT, data, "--queue-size", "32") as url:
        normal = wrk(url, "put.lua", 16)
        heavy = wrk(url, "put.lua", 512)
        after = wrk(url, "put.lua", 16, 2)
    share = int(heavy["non2xx"]) / max(1, int(heavy["total"]))
    print(
        f"| async, queue 32: 16 connections, then 512, then 16 again | {float(normal['rate']):,.0f}"
        f" req/s, p99 {normal['p99']}; with 512: {float(heavy['rate']):,.0f} req/s, "
        f"{share:.0%} shed with 503, p99 {heavy['p99']}; after: {float(after['rate']):,.0f} req/s, "
        f"{after['non2xx']} errors |"
    )


def twice_the_capacity(queues: tuple[int, ...]) -> None:
    """Open loop (constant arrival rate, latency from each due time), PUT,
    async mode. The capacity is the closed-loop maximum with 64 connections
    and the default queue; then, for each queue size on a fresh server, half
    of it, twice it and half again, over 256 connections. The generator runs
    on the CPUs the server does not use (study.on_load_cpus)."""
    tool = SelectorkvLoad()
    with tempfile.TemporaryDirectory() as data, serving(PORT, data) as url:
        capacity = on_load_cpus(lambda: tool.capacity(url, "put", 64, 5))
    print(f"closed-loop capacity {capacity:,.0f} PUT/s\n")
    print(
        "| queue | offered PUT/s | answered/s | 201s/s | 503 | 201s' p50 / p99 / max ms "
        "| errors | late, connection free |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for queue in queues:
        args = ("--queue-size", str(queue))
        with tempfile.TemporaryDirectory() as data, serving(PORT, data, *args) as url:
            for phase, factor, seconds in (("half", 0.5, 5), ("twice", 2, 10), ("half", 0.5, 5)):
                rate = factor * capacity
                figures = on_load_cpus(
                    functools.partial(tool.constant_rate, url, "put", rate, 256, seconds)
                ).figures
                statuses, elapsed = figures["status_counts"], figures["elapsed_s"]
                served = figures["latency_ms_served"]
                print(
                    f"| {queue} | {phase}: {rate:,.0f} | {figures['requests'] / elapsed:,.0f} | "
                    f"{statuses.get('201', 0) / elapsed:,.0f} | "
                    f"{statuses.get('503', 0) / max(1, figures['requests']):.0%} | "
                    f"{served['p50']:.1f} / {served['p99']:.1f} / {served['max']:.1f} | "
                    f"{figures['errors']} | {figures['late_with_free_connection']:,} |"
                )


def idle_connections() -> None:
    with tempfile.TemporaryDirectory() as data, serving(PORT, data, "--max-connections", "10100"):
        pid = server_pid(PORT)
        before = rss_bytes(pid)
        held = []
        for _ in range(10_000):
            client = RawClient(("127.0.0.1", PORT))
            client.request("GET", "/v0/status")
            held.append(client)
        grown = rss_bytes(pid) - before
        status = RawClient(("127.0.0.1", PORT)).request("GET", "/v0/status").status
        for client in held:
            client.close()
    print(
        f"| 10,000 idle keep-alive connections | server RSS +{grown / 2**20:.0f} MiB "
        f"({grown / 10_000 / 1024:.1f} KiB each); a new client: {status} |"
    )


def main() -> None:
    print("| case | measured |")
    print("|---|---|")
    slow_heads()
    stalled_readers()
    overload()
    idle_connections()
    print()
    twice_the_capacity((16, 32, 64, 1024))


if __name__ == "__main__":
    main()
