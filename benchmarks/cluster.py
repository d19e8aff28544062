"""A cluster's figures, side by side: ``python -m benchmarks.cluster``.

# design

Two comparisons, each with every server up at once and the load visiting
them in interleaved rounds (the order rotated each round), as
benchmarks/peers.py does, so that the machine's drift is not read as a
difference:

1. Closed loop (``wrk -t1 -c64``, PUT then GET): one node against a 3-node
   cluster (``selectorkv cluster``) asked ``ack=1&from=1`` (pure sharding:
   a key on one node, two thirds of them one hop away) and with the default
   2 of 3. The load enters the cluster through one node. Requests/s, the
   ratio to the single node within each round, and the servers' CPU time per
   request (all of a cluster's node processes counted).
2. Constant rate (wrk + paced.lua, latency from each request's due time),
   one node of each cluster stopped with SIGSTOP: asynchronous against
   blocking peer calls, default 2 of 3. p50 and p99.
3. With ``--base REV`` only: this checkout's 3-node cluster against an
   earlier commit's (a ``git worktree``, as benchmarks/builds.py does),
   healthy, closed loop, PUT and GET with the default 2 of 3: what a change
   to the coordinator costs (the blocking read repair, for one, costs
   nothing when the replicas agree).

Every server process is pinned to one CPU and wrk to the others (peers.py's
``cpus``): on the 2-core machine a 3-node cluster shares one core, so part 1
shows what the hops cost, not how a cluster scales; that needs a machine
with a core per node and more for the load.

The key space is 62^2 = 3,844 keys (wrk_scripts/common.lua,
``SELECTORKV_ID_LENGTH=2``), written to every node of every server before
the rounds, so that every GET finds its key.
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from benchmarks.peers import PY, ROOT, cpus, wrk, wrk_missing
from selectorkv.lab.harness.cpus import cpu_seconds
from selectorkv.lab.harness.rounds import rotated
from selectorkv.lab.harness.servers import ServerProcess, free_port, free_ports
from selectorkv.lab.harness.spread import Spread
from selectorkv.lab.load.tools import WrkPaced

ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
KEYS = [a + b for a in ALPHABET for b in ALPHABET]
PEER_TIMEOUT = "0.2"  # part 2: a stopped node costs each blocking call this long


@contextmanager
def server(
    command: list[str], server_cpus: set[int], port: int, cwd: Path = ROOT
) -> Iterator[ServerProcess]:
    """A server (a node, or a launcher of nodes) pinned to ``server_cpus``,
    ready once ``port`` answers its status."""
    process = ServerProcess(command, port=port, cwd=cwd, cpus=sorted(server_cpus))
    try:
        process.wait_ready(ready=lambda: answers(port))
        yield process
    finally:
        process.stop()  # continued first: a stopped node must see the SIGTERM


def answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/v0/status")
        return conn.getresponse().status == 200
    except OSError:
        return False


def fill(port: int, query: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for key in KEYS:
        conn.request("PUT", f"/v0/entity?id={key}{query}", body=b"v" * 300)
        reply = conn.getresponse()
        reply.read()
        if reply.status != 201:
            raise RuntimeError(f"filling port {port}: {reply.status}")
    conn.close()


def loaded(
    url: str, workload: str, seconds: int, load_cpus: set[int], pid: int, label: str
) -> tuple[float, float]:
    """One closed-loop run (wrk -c64): requests/s and the server CPU per
    request in microseconds (``pid`` and its descendants), said on stderr."""
    before = cpu_seconds(pid, descendants=True)
    rate = wrk(url, workload, seconds, 64, load_cpus)
    cost = (cpu_seconds(pid, descendants=True) - before) / (rate * seconds) * 1e6
    print(f"{label}: {rate:,.0f} req/s, {cost:.0f} us CPU/request", file=sys.stderr, flush=True)
    return rate, cost


def signal_node(port: int, name: str) -> None:
    """SIGSTOP or SIGCONT the node serving ``port`` (a child of its launcher)."""
    pattern = f"selectorkv serve --port {port} "
    if subprocess.run(["pkill", f"-{name}", "-f", pattern], check=False).returncode != 0:
        raise RuntimeError(f"no node serves port {port}")


def closed_loop(rounds: int, seconds: int, scratch: Path) -> str:
    server_cpus, load_cpus = cpus()
    single_port, cluster_port = free_port(), free_ports(3)
    base = [PY, "-m", "selectorkv"]
    quiet = ["--log-level", "warning"]
    targets = {  # name -> (port, query, which process)
        "one node": (single_port, "", "single"),
        "3 nodes, ack=1&from=1": (cluster_port, "&ack=1&from=1", "cluster"),
        "3 nodes, ack=2&from=3": (cluster_port, "", "cluster"),
    }
    rates: dict[str, dict[str, list[float]]] = {w: {n: [] for n in targets} for w in ("put", "get")}
    costs: dict[str, dict[str, list[float]]] = {w: {n: [] for n in targets} for w in ("put", "get")}
    with ExitStack() as stack:
        processes = {
            "single": stack.enter_context(server(
                [*base, "serve", "--port", str(single_port), "--data", str(scratch / "single"),
                 *quiet], server_cpus, single_port)),
            "cluster": stack.enter_context(server(
                [*base, "cluster", "--nodes", "3", "--base-port", str(cluster_port),
                 "--data", str(scratch / "cluster"), "--cpu", "none", *quiet],
                server_cpus, cluster_port)),
        }  # fmt: skip
        for port in (cluster_port + 1, cluster_port + 2):
            while not answers(port):
                time.sleep(0.2)
        fill(single_port, "")
        fill(cluster_port, "&ack=3&from=3")  # every key on every node
        os.environ["SELECTORKV_ID_LENGTH"] = "2"
        names = list(targets)
        for number in range(rounds):
            for workload in ("put", "get"):
                for name in rotated(names, number):
                    port, query, which = targets[name]
                    os.environ["SELECTORKV_QUERY"] = query
                    rate, cost = loaded(
                        f"http://127.0.0.1:{port}", workload, seconds, load_cpus,
                        processes[which].pid, f"round {number + 1}/{rounds} {workload} {name}",
                    )  # fmt: skip
                    rates[workload][name].append(rate)
                    costs[workload][name].append(cost)
        os.environ.pop("SELECTORKV_QUERY", None)
    lines = []
    for workload in ("put", "get"):
        base_rates = rates[workload]["one node"]
        lines += [
            f"{workload.upper()}, closed loop, wrk -t1 -c64 -d{seconds}s, median (min-max) "
            f"of {rounds} rounds:",
            "",
            "| server | req/s | ratio to one node, per round | server CPU per request |",
            "|---|---|---|---|",
        ]
        for name in targets:
            ratio = Spread.of(r / b for r, b in zip(rates[workload][name], base_rates, strict=True))
            lines.append(
                f"| {name} | {Spread.of(rates[workload][name]).format()} | "
                f"{ratio.format('.2f', 'x')} | {Spread.of(costs[workload][name]).format()} us |"
            )
        lines.append("")
    return "\n".join(lines)


def one_node_stopped(rounds: int, seconds: int, rate: float, scratch: Path) -> str:
    server_cpus, _ = cpus()  # the paced wrk is not pinned (it runs 16 threads)
    ports = {"async": free_ports(3), "blocking": free_ports(3)}
    latencies: dict[str, dict[str, list[float]]] = {k: {"p50": [], "p99": []} for k in ports}
    served: dict[str, list[float]] = {k: [] for k in ports}
    tool = WrkPaced()
    with ExitStack() as stack:
        launchers = {}
        for calls, port in ports.items():
            launchers[calls] = stack.enter_context(server(
                [PY, "-m", "selectorkv", "cluster", "--nodes", "3", "--base-port", str(port),
                 "--data", str(scratch / calls), "--cpu", "none", "--log-level", "warning",
                 "--peer-calls", calls, "--peer-timeout", PEER_TIMEOUT],
                server_cpus, port))  # fmt: skip
            for other in (port + 1, port + 2):
                while not answers(other):
                    time.sleep(0.2)
            fill(port, "&ack=3&from=3")
        for port in ports.values():  # stop the third node of each
            signal_node(port + 2, "STOP")
            stack.callback(signal_node, port + 2, "CONT")  # before the cluster stops
        os.environ["SELECTORKV_ID_LENGTH"] = "2"
        os.environ.pop("SELECTORKV_QUERY", None)
        for number in range(rounds):
            for calls in rotated(list(ports), number):
                measured = tool.constant_rate(
                    f"http://127.0.0.1:{ports[calls]}", "get", rate, 16, seconds
                )
                figures = measured.figures
                latencies[calls]["p50"].append(figures["latency_ms"]["p50"])
                latencies[calls]["p99"].append(figures["latency_ms"]["p99"])
                served[calls].append(figures["rate"])
                latency = figures["latency_ms"]
                print(f"round {number + 1}/{rounds} {calls}: p50 {latency['p50']:.1f} ms, "
                      f"p99 {latency['p99']:.1f} ms, {figures['rate']:.0f} req/s answered, "
                      f"statuses {figures['status_counts']}",
                      file=sys.stderr, flush=True)  # fmt: skip
    lines = [
        f"GET at {rate:.0f} req/s (wrk + paced.lua, 16 connections, {seconds} s), default "
        f"ack=2&from=3, one node of three stopped (SIGSTOP), --peer-timeout {PEER_TIMEOUT}; "
        f"median (min-max) of {rounds} rounds:",
        "",
        "| peer calls | p50 | p99 | answered req/s |",
        "|---|---|---|---|",
    ]
    for calls in ports:
        lines.append(
            f"| {calls} | {Spread.of(latencies[calls]['p50']).format('.1f')} ms | "
            f"{Spread.of(latencies[calls]['p99']).format('.1f')} ms | "
            f"{Spread.of(served[calls]).format()} |"
        )
    return "\n".join(lines) + "\n"


def against_base(rounds: int, seconds: int, scratch: Path, base: str) -> str:
    """Part 3: this checkout's cluster and ``base``'s, up at once."""
    server_cpus, load_cpus = cpus()
    tree = scratch / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), base],
                   cwd=ROOT, check=True, capture_output=True)  # fmt: skip
    builds = {"new": (ROOT, free_ports(3)), f"base {base}": (tree, free_ports(3))}
    rates: dict[str, dict[str, list[float]]] = {w: {n: [] for n in builds} for w in ("put", "get")}
    costs: dict[str, dict[str, list[float]]] = {w: {n: [] for n in builds} for w in ("put", "get")}
    try:
        with ExitStack() as stack:
            launchers = {}
            for name, (cwd, port) in builds.items():
                launchers[name] = stack.enter_context(server(
                    [PY, "-m", "selectorkv", "cluster", "--nodes", "3", "--base-port", str(port),
                     "--data", str(scratch / name.split()[0]), "--cpu", "none",
                     "--log-level", "warning"], server_cpus, port, cwd))  # fmt: skip
                for other in (port + 1, port + 2):
                    while not answers(other):
                        time.sleep(0.2)
                fill(port, "&ack=3&from=3")
            os.environ["SELECTORKV_ID_LENGTH"] = "2"
            os.environ.pop("SELECTORKV_QUERY", None)
            for number in range(rounds):
                for workload in ("put", "get"):
                    for name in rotated(list(builds), number):
                        rate, cost = loaded(
                            f"http://127.0.0.1:{builds[name][1]}", workload, seconds, load_cpus,
                            launchers[name].pid, f"round {number + 1}/{rounds} {workload} {name}",
                        )  # fmt: skip
                        rates[workload][name].append(rate)
                        costs[workload][name].append(cost)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT)
    lines = [
        f"A healthy 3-node cluster, default ack=2&from=3, closed loop, wrk -t1 -c64 "
        f"-d{seconds}s through one node; median (min-max) of {rounds} rounds:",
        "",
        "| workload | build | req/s | new / base, per round | server CPU per request |",
        "|---|---|---|---|---|",
    ]
    for workload, by_build in rates.items():
        new, old = by_build["new"], by_build[f"base {base}"]
        ratio = Spread.of(n / o for n, o in zip(new, old, strict=True))
        for name, label, shown in (("new", "new", ratio.format(".2f", "x")),
                                   (f"base {base}", base, "")):  # fmt: skip
            cost = Spread.of(costs[workload][name]).format()
            lines.append(f"| {workload.upper()} | {label} | {Spread.of(by_build[name]).format()} "
                         f"| {shown} | {cost} us |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--seconds", type=int, default=8, help="seconds of each run (8)")
    parser.add_argument("--rate", type=float, default=100.0, help="part 2's rate (100/s)")
    parser.add_argument(
        "--base", help="part 3 alone: this checkout's cluster against this commit's"
    )
    args = parser.parse_args()
    if wrk_missing(parser.prog):
        return 2
    with tempfile.TemporaryDirectory(prefix="selectorkv-cluster-") as temp:
        if args.base:
            print(against_base(args.rounds, args.seconds, Path(temp), args.base))
            return 0
        print(closed_loop(args.rounds, args.seconds, Path(temp) / "closed"))
        print(one_node_stopped(args.rounds, args.seconds, args.rate, Path(temp) / "stopped"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
