"""selectorkv against the servers a Python user would pick instead, side by
side: ``python -m benchmarks.peers`` (or ``make peers``).

# design

A comparison that runs the servers one after another (the compare.sh this
project was given) reads a drift of the machine between two servers as a
difference between them (this machine's speed drifts 10-40 % from minute to
minute). Here every server is
up at once, each on its own port and its own copy of one database that
holds every key of the workload's key space (``selectorkv fill``, so that
every GET finds its key, as in the lab), and the load
visits them in rounds: in each round every server gets the same closed-loop
wrk run (``wrk -t1 -c64`` with wrk_scripts/put.lua, then get.lua), in an
order rotated by one each round so that none is always first or last. The
ratio to uvicorn + h11 (the same HTTP parser as selectorkv) is taken within
each round, minutes apart at most, and the table gives medians with their
min-max over the rounds.

The servers: selectorkv in both modes, uvicorn + h11 on asyncio, uvicorn +
httptools on uvloop (the fastest common stack), gunicorn's gthread worker
(selectors and a thread pool: the closest relative of async mode), the last
three serving benchmarks/peer_apps.py. Every server process is pinned to
one CPU (the highest-numbered) and wrk to the others, so that on a 2-core
machine each server gets one core, as selectorkv uses one core's worth of
Python. The peers need ``pip install 'selectorkv[peers]'``; wrk is Debian's.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from benchmarks.serving import answers
from selectorkv.lab.harness.cpus import load_cpus, pinned, server_cpus
from selectorkv.lab.harness.rounds import rotated
from selectorkv.lab.harness.servers import ServerProcess, free_port
from selectorkv.lab.harness.spread import Spread
from selectorkv.lab.load.fill import fill

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "wrk_scripts"
BASELINE = "uvicorn-h11"
FASTEST = "uvicorn-httptools-uvloop"  # the fastest common Python stack
WORKLOADS = ("put", "get")
PY = sys.executable
# name -> command; {port} is filled in, the database comes from the environment.
SERVERS = {
    "selectorkv-sync": [PY, "-m", "selectorkv", "serve", "--mode", "sync", "--port", "{port}",
                        "--data", "{db}", "--log-level", "warning"],
    "selectorkv-async": [PY, "-m", "selectorkv", "serve", "--mode", "async", "--port", "{port}",
                         "--data", "{db}", "--log-level", "warning"],
    # The same sync server with the compiled parser (the fast extra): env(1)
    # sets the variable and execs Python, so the process is the server's own.
    "selectorkv-sync-mypyc": ["env", "SELECTORKV_HTTP_PARSER=h11-mypyc", PY, "-m", "selectorkv",
                              "serve", "--mode", "sync", "--port", "{port}", "--data", "{db}",
                              "--log-level", "warning"],
    "uvicorn-h11": [PY, "-m", "uvicorn", "benchmarks.peer_apps:asgi_app", "--http", "h11",
                    "--loop", "asyncio", "--port", "{port}", "--no-access-log",
                    "--log-level", "warning"],
    "uvicorn-httptools-uvloop": [PY, "-m", "uvicorn", "benchmarks.peer_apps:asgi_app",
                                 "--http", "httptools", "--loop", "uvloop", "--port", "{port}",
                                 "--no-access-log", "--log-level", "warning"],
    "gunicorn-gthread": [PY, "-m", "gunicorn", "-k", "gthread", "--threads", "8", "-w", "1",
                         "-b", "127.0.0.1:{port}", "--log-level", "warning",
                         "benchmarks.peer_apps:wsgi_app"],
}  # fmt: skip


def cpus() -> tuple[set[int], set[int]]:
    """(the servers' CPU, the load's CPUs): the highest-numbered for the
    servers, the rest for wrk (all of them on a 1-CPU machine)."""
    return set(server_cpus(1)), load_cpus(1)


@contextmanager
def running(
    name: str, template: list[str], scratch: Path, on_cpus: set[int], cwd: Path = ROOT
) -> Iterator[str]:
    """One server (``template`` with {port} and {db} filled in, run in
    ``cwd``), on a free port and its own copy of scratch/filled; yields its
    URL once it answers /v0/status."""
    port = free_port()
    db = scratch / name
    shutil.copytree(scratch / "filled", db)
    command = [part.format(port=port, db=db) for part in template]
    with open(scratch / f"{name}.log", "wb") as log:
        server = ServerProcess(
            command, port=port, env={"SELECTORKV_PEER_DB": str(db)}, cwd=cwd, log=log,
            cpus=sorted(on_cpus),
        )  # fmt: skip
        try:
            try:
                server.wait_ready(timeout=30, ready=lambda: answers(server.url))
            except RuntimeError:
                raise RuntimeError(f"{name} did not start; its log: {scratch / name}.log") from None
            yield server.url
        finally:
            server.stop(timeout=30)


def wrk(url: str, workload: str, seconds: int, connections: int, load_cpus: set[int]) -> float:
    """Requests/s of one closed-loop wrk run (``wrk_run``)."""
    return wrk_run(url, workload, seconds, connections, load_cpus)[0]


def wrk_run(
    url: str, workload: str, seconds: int, connections: int, load_cpus: set[int]
) -> tuple[float, float]:
    """Requests/s and p99 in ms of one closed-loop wrk run; a run with
    socket errors or non-2xx answers is refused, not averaged in."""
    done = subprocess.run(
        [*pinned(load_cpus), "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-s", str(SCRIPTS / f"{workload}.lua"), url],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    )  # fmt: skip
    out = done.stdout
    if "Socket errors" in out or "Non-2xx" in out:
        raise RuntimeError(f"wrk saw errors or non-2xx answers from {url}:\n{out}")
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", out)
    if not found or not p99:
        raise RuntimeError(f"no Requests/sec or 99% in wrk's output:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return float(found.group(1)), float(p99.group(1)) * scale


def compare(
    servers: dict[str, tuple[list[str], Path]],
    rounds: int,
    seconds: int,
    connections: int,
    p99: dict[str, dict[str, list[float]]] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """workload -> server -> requests/s of each round; ``servers`` maps a
    name to its command template and working directory. ``p99``, if given,
    is filled the same way with each run's p99 in ms."""
    server_cpus, load_cpus = cpus()
    names = list(servers)
    results: dict[str, dict[str, list[float]]] = {w: {n: [] for n in names} for w in WORKLOADS}
    with tempfile.TemporaryDirectory(prefix="selectorkv-peers-") as temp, ExitStack() as stack:
        scratch = Path(temp)
        fill(str(scratch / "filled"), 0)  # the key space alone
        urls = {}
        for name, (template, cwd) in servers.items():
            urls[name] = stack.enter_context(running(name, template, scratch, server_cpus, cwd))
        for number in range(rounds):
            order = rotated(names, number)
            for workload in WORKLOADS:
                for name in order:
                    rate, tail = wrk_run(urls[name], workload, seconds, connections, load_cpus)
                    results[workload][name].append(rate)
                    if p99 is not None:
                        p99.setdefault(workload, {}).setdefault(name, []).append(tail)
                    print(f"round {number + 1}/{rounds} {workload} {name}: {rate:,.0f} req/s",
                          file=sys.stderr, flush=True)  # fmt: skip
    return results


def table(
    results: dict[str, dict[str, list[float]]],
    baseline_of: Callable[[str], str] = lambda name: BASELINE,
    baseline_name: str = BASELINE,
) -> str:
    """Markdown: per workload and server, the median req/s with min-max and
    the ratio to its baseline (``baseline_of``) taken within each round."""
    lines = []
    for workload, servers in results.items():
        rounds = len(next(iter(servers.values())))
        lines += [
            f"{workload.upper()}: requests/s, median (min-max) of {rounds} rounds",
            "",
            f"| server | req/s | ratio to {baseline_name}, per round |",
            "|---|---|---|",
        ]
        for name, rates in servers.items():
            base = servers[baseline_of(name)]
            ratios = Spread.of(r / b for r, b in zip(rates, base, strict=True))
            lines.append(f"| {name} | {Spread.of(rates).format()} | {ratios.format('.2f', 'x')} |")
        lines.append("")
    return "\n".join(lines)


def add_round_arguments(parser: argparse.ArgumentParser, rounds: int) -> None:
    """The options of a side-by-side comparison in interleaved rounds."""
    parser.add_argument("--rounds", type=int, default=rounds, help=f"rounds (default {rounds})")
    parser.add_argument("--seconds", type=int, default=8, help="seconds of each wrk run (8)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--json", metavar="FILE", help="also write every round's figures")


def wrk_missing(prog: str) -> bool:
    """Say so when wrk is not installed."""
    if shutil.which("wrk") is None:
        print(f"{prog} needs wrk: apt-get install wrk", file=sys.stderr)
        return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description="selectorkv (sync, async, sync with h11-mypyc), uvicorn + h11, uvicorn + "
        "httptools + uvloop and gunicorn gthread, all up at once and loaded in interleaved "
        "rounds with wrk; prints medians with min-max and the ratios to uvicorn + h11 (the "
        "same parser) and to uvicorn + httptools + uvloop (the fastest) taken within each round.",
    )
    add_round_arguments(parser, rounds=5)
    args = parser.parse_args()
    if wrk_missing(parser.prog):
        return 2
    try:
        import gunicorn  # noqa: F401
        import httptools  # noqa: F401
        import uvicorn  # noqa: F401
        import uvloop  # noqa: F401
    except ImportError as exc:
        print(f"benchmarks.peers needs the peers extra: pip install -e '.[peers]' ({exc})",
              file=sys.stderr)  # fmt: skip
        return 2
    servers = {name: (template, ROOT) for name, template in SERVERS.items()}
    results = compare(servers, args.rounds, args.seconds, args.connections)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    print(table(results, lambda name: FASTEST, FASTEST))
    return 0


if __name__ == "__main__":
    sys.exit(main())
