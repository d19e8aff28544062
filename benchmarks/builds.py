"""This checkout against an earlier commit, side by side:
``python -m benchmarks.builds --base REV`` (or ``make builds BASE=REV``).

# design

A change to the request path must not cost throughput, and on this
machine (speed drifting 10-40 % from minute to minute) a run of the old
build followed by a run of the new one measures the drift. So both builds
are up at once, in both modes, and loaded in interleaved rounds exactly as
benchmarks/peers.py loads the peers (same database, same wrk runs, same
pinning, the order rotated each round); the ratio new/base is taken within
each round, per mode and workload, and the table gives its median and
min-max. The earlier commit is checked out with ``git worktree`` into a
temporary directory and run from there with this checkout's interpreter
and dependencies; a server started in that directory imports that
directory's ``selectorkv`` first.

Two identical builds compared this way came out at 1.01-1.05 in one run
and 0.98-1.18 in another, so repeat before believing a
shortfall of a few per cent.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.peers import ROOT, SERVERS, add_round_arguments, compare, table, wrk_missing
from selectorkv.lab.harness.spread import Spread

MODES = ("sync", "async")


def against(template: str, name: str) -> str:
    """The baseline named by ``template`` for server ``name`` (build-mode[flags])."""
    mode = next(mode for mode in MODES if name.split("-", 1)[1].startswith(mode))
    return template.format(mode=mode)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.builds",
        description="this checkout's selectorkv against an earlier commit's, both modes, all up "
        "at once and loaded in interleaved rounds with wrk; prints medians with min-max and "
        "the ratio new/base taken within each round.",
    )
    parser.add_argument("--base", required=True, help="the commit to compare with, e.g. HEAD~1")
    parser.add_argument(
        "--variants",
        default="",
        help="comma-separated sets of extra serve flags, each run by both builds in both "
        "modes, e.g. ',--fsync' (plain and with --fsync); default: plain only",
    )
    parser.add_argument(
        "--against",
        default="",
        help="also give each server's ratio to this one within each round; {mode} stands "
        "for the server's own mode, e.g. 'base-{mode}'",
    )
    add_round_arguments(parser, rounds=6)
    args = parser.parse_args()
    if wrk_missing(parser.prog):
        return 2
    with tempfile.TemporaryDirectory(prefix="selectorkv-base-") as temp:
        tree = Path(temp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), args.base],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        try:
            servers = {}
            for variant in args.variants.split(","):
                suffix = variant.replace(" ", "")
                for mode in MODES:
                    command = [*SERVERS[f"selectorkv-{mode}"], *variant.split()]
                    servers[f"base-{mode}{suffix}"] = (command, tree)
                    servers[f"new-{mode}{suffix}"] = (command, ROOT)
            p99: dict[str, dict[str, list[float]]] = {}
            results = compare(servers, args.rounds, args.seconds, args.connections, p99)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    print(f"base: {args.base}, variants: {args.variants or '(plain)'}\n")
    print(table(results, lambda name: "base-" + name.split("-", 1)[1], "the base, same flags"))
    if args.against:
        print(table(results, lambda name: against(args.against, name), args.against))
    for workload, servers_p99 in p99.items():
        print(f"{workload.upper()} p99, ms, median (min-max):\n")
        for name, values in servers_p99.items():
            print(f"- {name}: {Spread.of(values).format('.2f')}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
