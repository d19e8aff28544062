"""The full range's throughput on a 3-node cluster against one node, side by
side: ``python -m benchmarks.cluster_range``.

Both hold the lab's filled database (``fill``: the benchmark key space and
filler entries of 300-byte values, ``--size`` of table files): the single
node as plain values, every cluster node a copy of it as records (each key
on all three nodes, as the default ``from`` puts it). Both are up at once;
each round reads the whole range with curl (which decodes the chunked
body) from the single node, from a cluster node (the cluster-wide range:
three streams merged, freshest first) and from the same node with
``local=true`` (its own records only), the order rotated each round. The
ratio to the single node is taken within each round, then the median with
min-max.

    python -m benchmarks.cluster_range [--rounds 3] [--size 64MiB]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.serving import serving
from selectorkv.config import byte_size
from selectorkv.lab.harness.nodes import Nodes, wait_until
from selectorkv.lab.load.fill import fill

PORT = 8097


def read_range(url: str) -> tuple[float, int]:
    """Seconds to read the whole range at ``url``, and its bytes."""
    started = time.perf_counter()
    size = subprocess.run(
        ["curl", "-s", "-f", "-o", "/dev/null", "-w", "%{size_download}", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return time.perf_counter() - started, int(size)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cluster_range",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--size", default="64MiB", help="the database's size (64MiB)")
    parser.add_argument("--mode", choices=("sync", "async"), default="async", help="(async)")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        print(f"{parser.prog}: needs curl", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="selectorkv-cluster-range-") as temp:
        root = Path(temp)
        plain = fill(str(root / "plain"), byte_size(args.size))
        fill(str(root / "records"), byte_size(args.size), records=True)
        entries = plain.keys + plain.fillers
        nodes = Nodes(root)
        cluster = nodes.make(3, args.mode, start=False)
        for node in cluster:
            shutil.copytree(root / "records", node.data)
            node.start()
        try:
            for node in cluster:
                wait_until(node.ready, f"{node.url} answers", timeout=60)
            with serving(PORT, str(root / "plain"), "--mode", args.mode, "--cpu", "none") as one:
                targets = {
                    "one node": f"{one}/v0/entities?start=0",
                    "cluster": f"{cluster[0].url}/v0/entities?start=0",
                    "local=true": f"{cluster[0].url}/v0/entities?start=0&local=true",
                }
                measure(targets, entries, args.rounds)
        finally:
            nodes.stop_all()
    return 0


def measure(targets: dict[str, str], entries: int, rounds: int) -> None:
    names = list(targets)
    ratios: dict[str, list[float]] = {name: [] for name in names[1:]}
    for round_ in range(rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        seconds = {}
        for name in order:
            seconds[name], size = read_range(targets[name])
            print(
                f"round {round_ + 1} {name:>10}: {size / 1e6:.0f} MB in {seconds[name]:.2f} s, "
                f"{entries / seconds[name]:,.0f} entries/s",
                flush=True,
            )
        for name in names[1:]:
            ratios[name].append(seconds[names[0]] / seconds[name])
    for name, values in ratios.items():
        print(
            f"{name}: throughput / one node's, median {statistics.median(values):.2f}x "
            f"({min(values):.2f}-{max(values):.2f}), {rounds} rounds, {entries:,} entries"
        )


if __name__ == "__main__":
    sys.exit(main())
