"""What a hop costs: ``python -m benchmarks.hop`` (``make hop``).

The server CPU time per request of four kinds of request, on one node and
on a 3-node cluster entered through its first node:

- **one node**: a single node's request, the unit of everything else;
- **local 1/1**: ``ack=1&from=1`` for a key whose replica is the node the
  request enters (the request a placement-aware client sends);
- **proxied 1/1**: ``ack=1&from=1`` for a key another node holds: a
  coordinator's request, a peer call, and the replica's internal request;
- **2 of 3**: the default quorum, one replica local and two over HTTP.

Closed loop (``wrk -t1 -c64``, PUT then GET of 300-byte values over the
3,844 two-letter keys, the keys of a kind chosen with
``SELECTORKV_KEYS_FILE``), every server process on one CPU and wrk on the
others; the CPU time of all of a server's processes, divided by the
requests answered. Each round runs every kind in a rotated order, and the
ratios (proxied to local, each to one node) are taken within each round,
then given as medians with min-max. ``--base REV`` runs an earlier
commit's node and cluster beside this checkout's, in the same rounds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from benchmarks.cluster import KEYS, answers, fill, loaded, server
from benchmarks.peers import PY, ROOT, cpus, wrk_missing
from selectorkv.cluster.placement import Topology
from selectorkv.lab.harness.rounds import rotated
from selectorkv.lab.harness.servers import free_port, free_ports
from selectorkv.lab.harness.spread import Spread

NODES = 3
KINDS = ("one node", "local 1/1", "proxied 1/1", "2 of 3")
ONE_BY_ONE = "&ack=1&from=1"


def key_files(base_port: int, scratch: Path) -> dict[str, Path]:
    """The keys of each kind, in files for wrk: those whose 1/1 replica is
    the first node, those held by another, and all of them."""
    urls = [f"http://127.0.0.1:{base_port + i}" for i in range(NODES)]
    topology = Topology(tuple(urls), urls[0])
    first = [key for key in KEYS if topology.replicas(key.encode(), 1)[0] == urls[0]]
    files = {"local": first, "proxied": sorted(set(KEYS) - set(first)), "all": KEYS}
    paths = {}
    for name, keys in files.items():
        paths[name] = scratch / f"keys-{base_port}-{name}"
        paths[name].write_text("\n".join(keys) + "\n")
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.hop",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds of each run (5)")
    parser.add_argument("--mode", choices=("sync", "async"), default="async", help="(async)")
    parser.add_argument("--base", help="an earlier commit to run beside this checkout")
    args = parser.parse_args()
    if wrk_missing(parser.prog):
        return 2
    with tempfile.TemporaryDirectory(prefix="selectorkv-hop-") as temp:
        scratch = Path(temp)
        builds = {"new": ROOT}
        if args.base:
            tree = scratch / "tree"
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.base],
                           cwd=ROOT, check=True, capture_output=True)  # fmt: skip
            builds[args.base] = tree
        try:
            costs, rates = measure(builds, args.rounds, args.seconds, args.mode, scratch)
        finally:
            if args.base:
                subprocess.run(["git", "worktree", "remove", "--force", str(scratch / "tree")],
                               cwd=ROOT, check=False)  # fmt: skip
    print(table(costs, rates, args))
    return 0


Results = dict[str, dict[tuple[str, str], list[float]]]  # workload -> (build, kind) -> rounds


def measure(
    builds: dict[str, Path], rounds: int, seconds: int, mode: str, scratch: Path
) -> tuple[Results, Results]:
    server_cpus, load_cpus = cpus()
    quiet = ["--mode", mode, "--log-level", "warning"]
    costs: Results = {"put": {}, "get": {}}
    rates: Results = {"put": {}, "get": {}}
    with ExitStack() as stack:
        runs = []  # (build, kind, port, query, keys file, pid)
        for name, tree in builds.items():
            single, base = free_port(), free_ports(NODES)
            one = stack.enter_context(
                server(
                    [
                        PY,
                        "-m",
                        "selectorkv",
                        "serve",
                        "--port",
                        str(single),
                        "--data",
                        str(scratch / f"{name}-single"),
                        *quiet,
                    ],
                    server_cpus,
                    single,
                    tree,
                )
            )
            cluster = stack.enter_context(server(
                [PY, "-m", "selectorkv", "cluster", "--nodes", str(NODES), "--base-port",
                 str(base), "--data", str(scratch / f"{name}-cluster"), "--cpu", "none",
                 *quiet], server_cpus, base, tree))  # fmt: skip
            for port in range(base + 1, base + NODES):
                while not answers(port):
                    time.sleep(0.2)
            fill(single, "")
            fill(base, f"&ack={NODES}&from={NODES}")  # every key on every node
            keys = key_files(base, scratch)
            runs += [
                (name, "one node", single, "", keys["all"], one.pid),
                (name, "local 1/1", base, ONE_BY_ONE, keys["local"], cluster.pid),
                (name, "proxied 1/1", base, ONE_BY_ONE, keys["proxied"], cluster.pid),
                (name, "2 of 3", base, "", keys["all"], cluster.pid),
            ]
        for number in range(rounds):
            for workload in ("put", "get"):
                for build, kind, port, query, keys_file, pid in rotated(runs, number):
                    os.environ["SELECTORKV_QUERY"] = query
                    os.environ["SELECTORKV_KEYS_FILE"] = str(keys_file)
                    rate, cost = loaded(
                        f"http://127.0.0.1:{port}", workload, seconds, load_cpus, pid,
                        f"round {number + 1}/{rounds} {workload} {build} {kind}",
                    )  # fmt: skip
                    costs[workload].setdefault((build, kind), []).append(cost)
                    rates[workload].setdefault((build, kind), []).append(rate)
    return costs, rates


def table(costs: Results, rates: Results, args: argparse.Namespace) -> str:
    lines = [
        f"Server CPU per request, {args.mode} mode, closed loop (wrk -t1 -c64 -d{args.seconds}s), "
        f"median (min-max) of {args.rounds} rounds; ratios taken within each round.",
        "",
        "| workload | build | request | req/s | server CPU per request | to one node | "
        "to local 1/1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for workload, by_run in costs.items():
        for build in dict.fromkeys(build for build, _ in by_run):
            unit, local = by_run[(build, "one node")], by_run[(build, "local 1/1")]
            for kind in KINDS:
                mine = by_run[(build, kind)]
                to_one = Spread.of(c / u for c, u in zip(mine, unit, strict=True))
                to_local = Spread.of(c / lo for c, lo in zip(mine, local, strict=True))
                lines.append(
                    f"| {workload.upper()} | {build} | {kind} | "
                    f"{Spread.of(rates[workload][(build, kind)]).format()} | "
                    f"{Spread.of(mine).format()} us | {to_one.format('.2f', 'x')} | "
                    f"{to_local.format('.2f', 'x') if kind == 'proxied 1/1' else ''} |"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
