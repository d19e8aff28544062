"""What stalls a server at a share of its capacity, on one time axis:
``python -m benchmarks.stall_timeline``.

One server (``--record-stalls``, pinned to one CPU, the load on the
other), over the lab's filled database. Its closed-loop capacity first
(64 connections, ``--capacity-seconds``), then a constant rate at
``--share`` of it for ``--seconds``, latency kept per 10 ms of due time,
while this process samples the server's threads' run-queue time. Then the
server's record of collections and long rounds, RocksDB's flushes,
compactions and write stalls from its LOG, and the generator's own
lateness are laid beside the latency (lab/studies/stalls.py): a PNG and a
JSON in ``--out``, and each kind's share of the buckets whose p99 broke
``--bound`` printed.

    python -m benchmarks.stall_timeline [--mode sync] [--workload put] [--share 0.7]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from selectorkv.config import byte_size
from selectorkv.lab.harness.cpus import on_load_cpus
from selectorkv.lab.load.fill import fill
from selectorkv.lab.load.generator import generate
from selectorkv.lab.load.tools import TIMELINE_BUCKET, SelectorkvLoad
from selectorkv.lab.reports.plots import stall_timeline
from selectorkv.lab.studies.node import start_server, stop_server
from selectorkv.lab.studies.stalls import RunWatch, attribute

CONNECTIONS = 64


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.stall_timeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--mode", choices=("sync", "async"), default="sync", help="(sync)")
    parser.add_argument("--workload", choices=("get", "put"), default="put", help="(put)")
    parser.add_argument("--share", type=float, default=0.7, help="of the capacity (0.7)")
    parser.add_argument(
        "--rate", type=float, help="requests/s, instead of a share of a capacity measured first"
    )
    parser.add_argument("--seconds", type=float, default=15, help="of constant rate (15)")
    parser.add_argument("--capacity-seconds", type=float, default=5, help="closed loop (5)")
    parser.add_argument("--bound", type=float, default=10.0, help="p99 bound, ms (10)")
    parser.add_argument("--size", default="100MiB", help="the database (100MiB)")
    parser.add_argument("--data", help="a directory to fill once and keep (default: a new one)")
    parser.add_argument(
        "--processes", type=int, help="load generator processes (default: one per 30,000/s)"
    )
    parser.add_argument("--out", default="stall-timeline", help="where the PNG and JSON go")
    parser.add_argument(
        "--server-flag", action="append", default=[], help="one more server flag: --server-flag=-X"
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="selectorkv-stalls-") as temp:
        data = Path(args.data or Path(temp) / "data")
        fill(str(data), byte_size(args.size))
        log = open(out / "server.log", "wb")  # noqa: SIM115 (kept open for the server)
        extra = ("--record-stalls", *args.server_flag)
        server = start_server(args.mode, data, log, extra=extra)
        try:
            capacity = (
                args.rate / args.share
                if args.rate
                else on_load_cpus(
                    lambda: SelectorkvLoad().capacity(
                        server.url, args.workload, CONNECTIONS, args.capacity_seconds
                    )
                )
            )
            rate = args.share * capacity
            with RunWatch(server.url, server.pid, data) as watch:
                load = on_load_cpus(
                    lambda: generate(
                        server.url,
                        args.workload,
                        rate,
                        CONNECTIONS,
                        args.seconds,
                        args.processes,
                        timeline=TIMELINE_BUCKET,
                        separate=True,
                    )
                ).as_json()
            data_ = watch.timeline(load, TIMELINE_BUCKET)
        finally:
            stop_server(server)
            log.close()
    shares = attribute(data_, args.bound)
    of = "" if args.rate else f" ({args.share:.0%} of {capacity:,.0f}/s)"
    title = (
        f"{args.mode} {args.workload.upper()} at {rate:,.0f}/s{of}: "
        f"p99 {load['latency_ms']['p99']:.1f} ms"
    )
    stall_timeline(data_, args.bound, title, out / "stall-timeline.png")
    (out / "stall-timeline.json").write_text(
        json.dumps({"title": title, "load": load, "attribution": shares, **data_})
    )
    print(title)
    print(json.dumps(shares, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
