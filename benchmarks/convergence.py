"""How anti-entropy repair brings a node back: ``python -m benchmarks.convergence``.

A 3-node cluster (async mode, hinted handoff off, so that repair alone
restores what a node missed) is written ``--keys`` keys of 300 bytes
through ``selectorkv.client`` at the default 2 of 3 (every key on every
node). Then, for each case:

1. node 3 is stopped while ``--overwrites`` of those keys are written
   again through the others, and started again;
2. node 3 is stopped, its data directory deleted, and started empty.

Each time ``selectorkv repair --node`` node 3 runs, and the figures are:
the keys behind before and after (node 3's record older than the newest of
the other two, or missing, read through the internal GET), the repair's
time, and what it compared and exchanged (its own report), beside a full
copy of the data. The trees' build times are in the nodes' log lines.

    python -m benchmarks.convergence [--keys 20000] [--overwrites 100,3000]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selectorkv.client import Client
from selectorkv.kv.records import decode
from selectorkv.lab.harness.nodes import TOKEN, Node, Nodes, wait_until

VALUE_BYTES = 300


def record_version(node: Node, key: str) -> int | None:
    status, body = node.internal("GET", key)
    return decode(body).version if status == 200 else None


def behind(nodes: list[Node], keys: list[str]) -> int:
    """Keys whose record on the last node is older than the others' newest."""
    count = 0
    for key in keys:
        newest = max(v for v in (record_version(n, key) for n in nodes[:2]) if v is not None)
        mine = record_version(nodes[2], key)
        count += mine is None or mine < newest
    return count


def repair(node: Node) -> tuple[float, str]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "selectorkv", "repair", "--node", node.url, "--token", TOKEN],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return time.monotonic() - started, done.stdout


def case(what: str, nodes: list[Node], keys: list[str]) -> None:
    nodes[2].start()
    wait_until(nodes[2].answers, "node 3 answers", timeout=60)
    before = behind(nodes, keys)
    seconds, report = repair(nodes[2])
    after = behind(nodes, keys)
    full = len(keys) * (len(keys[0]) + VALUE_BYTES + 18)
    print(
        f"## {what}\nkeys behind before: {before:,}; repair: {seconds:.1f} s; "
        f"keys behind after: {after:,}; a full copy: {len(keys):,} records, {full:,} bytes\n"
        f"{report}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.convergence",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--keys", type=int, default=20_000, help="keys written (20000)")
    parser.add_argument(
        "--overwrites", default="100,3000", help="writes node 3 misses, per case (100,3000)"
    )
    args = parser.parse_args()
    keys = [f"key{i:06d}" for i in range(args.keys)]
    with tempfile.TemporaryDirectory(prefix="selectorkv-convergence-") as temp:
        nodes_ = Nodes(Path(temp))
        nodes = nodes_.make(3, "async", "--no-hinted-handoff", "--log-level", "info")
        try:
            with Client([node.url for node in nodes], timeout=10) as kv:
                for key in keys:
                    kv.put(key, b"x" * VALUE_BYTES)
                for count in (int(n) for n in args.overwrites.split(",")):
                    nodes[2].stop()
                    for i in range(count):
                        kv.put(keys[(i * 7919) % len(keys)], b"y" * VALUE_BYTES)
                    case(f"node 3 missed {count:,} overwrites", nodes, keys)
            nodes[2].stop()
            shutil.rmtree(nodes[2].data)
            case("node 3's disk lost (started empty)", nodes, keys)
        finally:
            nodes_.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
