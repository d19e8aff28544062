"""What an anti-entropy repair costs the requests around it:
``python -m benchmarks.repair_tail``.

A 3-node cluster, every node holding the same filled database (the lab's
``fill``: the benchmark key space and filler records, on every node), so
that a repair finds nothing to exchange and costs its scans: the trees of
both nodes of each pair and the tombstone scan, the common case of a
background repair. A constant-rate load (``selectorkv load``'s generator,
latency from each request's due time, the default 2 of 3, requests to the
nodes in turn) runs in windows of ``--seconds``: with no repair, and with
a repair running for the whole window (one starts again as soon as the
last one ends, driven by the first node). The two alternate, the order
rotated each round, GET and PUT each; the ratio of the p99s is taken
within each round, then the median with min-max.

    python -m benchmarks.repair_tail [--rounds 3] [--seconds 15] [--rate 1000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from selectorkv.lab.harness.nodes import TOKEN, Node, Nodes, wait_until
from selectorkv.lab.load.fill import fill
from selectorkv.lab.load.generator import generate

HEADERS = {"X-Selectorkv-Token": TOKEN}
WORKLOADS = ("get", "put")


class RepairLoop:
    """Keeps a repair running on ``node`` until stopped; counts them."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._stop = threading.Event()
        self.repairs = 0
        self.seconds: list[float] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RepairLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        wait_until(lambda: self._state()["state"] != "running", "the last repair ends", 600)

    def _state(self) -> dict[str, object]:
        status, body = self._node.request("GET", "/v0/internal/repair", None, HEADERS)
        assert status == 200, status
        report: dict[str, object] = json.loads(body)
        return report

    def _run(self) -> None:
        while not self._stop.is_set():
            status, _ = self._node.request("POST", "/v0/internal/repair", None, HEADERS)
            assert status == 202, status
            self.repairs += 1
            while (report := self._state())["state"] == "running" and not self._stop.is_set():
                time.sleep(0.1)
            if report["state"] != "running":
                self.seconds.append(float(report["seconds"]))  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.repair_tail",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--seconds", type=float, default=15, help="seconds a window (15)")
    parser.add_argument("--rate", type=float, default=1000, help="requests/s (1000)")
    parser.add_argument("--size", default="64MiB", help="each node's database (64MiB)")
    parser.add_argument("--mode", choices=("sync", "async"), default="async", help="(async)")
    parser.add_argument("--share", default="0.1", help="the nodes' --repair-share (0.1)")
    args = parser.parse_args()
    from selectorkv.config import byte_size

    with tempfile.TemporaryDirectory(prefix="selectorkv-repair-tail-") as temp:
        root = Path(temp)
        filled = fill(str(root / "filled"), byte_size(args.size), records=True)
        print(f"each node holds {filled.keys + filled.fillers:,} records", file=sys.stderr)
        nodes = Nodes(root)
        flags = ("--repair-share", args.share, "--repair-interval", "0", "--log-level", "info")
        cluster = nodes.make(3, args.mode, *flags, start=False)
        for node in cluster:
            shutil.copytree(root / "filled", node.data)
            node.start()
        try:
            for node in cluster:
                wait_until(node.ready, f"{node.url} answers", timeout=60)
            return measure(cluster, args.rounds, args.seconds, args.rate)
        finally:
            nodes.stop_all()


def measure(cluster: list[Node], rounds: int, seconds: float, rate: float) -> int:
    urls = ",".join(node.url for node in cluster)
    ratios: dict[str, list[float]] = {workload: [] for workload in WORKLOADS}
    for round_ in range(rounds):
        for workload in WORKLOADS:
            p99 = {}
            for repairing in (False, True) if round_ % 2 == 0 else (True, False):
                loop = RepairLoop(cluster[0]) if repairing else None
                if loop is not None:
                    loop.__enter__()
                try:
                    report = generate(urls, workload, rate, 16, seconds, separate=True)
                finally:
                    if loop is not None:
                        loop.__exit__()
                summary = report.as_json()
                p99[repairing] = summary["latency_ms"]["p99"]
                print(
                    f"round {round_ + 1} {workload:>3} "
                    f"{'repairing' if repairing else 'no repair':>9}: "
                    f"p50 {summary['latency_ms']['p50']:6.2f} ms, p99 {p99[repairing]:6.2f} ms, "
                    f"{summary['rate']:,.0f} req/s, errors {summary['errors']}, "
                    f"behind schedule: {summary['behind_schedule']}"
                    + (
                        f"; repairs {loop.repairs}, each "
                        + ", ".join(f"{s:.1f}" for s in loop.seconds)
                        + " s"
                        if loop is not None
                        else ""
                    ),
                    flush=True,
                )
            ratios[workload].append(p99[True] / p99[False])
    for workload, values in ratios.items():
        print(
            f"{workload}: p99 repairing / none, median {statistics.median(values):.2f}x "
            f"({min(values):.2f}-{max(values):.2f}), {rounds} rounds at {rate:g} req/s"
        )
    with RepairLoop(cluster[0]) as loop:  # one repair alone, with no load
        wait_until(lambda: bool(loop.seconds), "a repair ends", timeout=3600)
    print(f"a repair alone, with no load: {loop.seconds[0]:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
