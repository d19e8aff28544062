"""The lab's commands: ``selectorkv fill``, ``selectorkv load`` and
``selectorkv lab`` (the studies, the calibration and the fault runs).

The top-level command line (selectorkv/cli.py) adds them beside ``serve``
and ``cluster``. Only the argument parsers are built at import; a command
imports what it runs when it runs, so that ``selectorkv serve`` loads
nothing of the lab, and a command that needs the ``lab`` extra says so.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from selectorkv.client import ClusterError
from selectorkv.config import DEFAULTS, byte_size, positive_float, positive_int
from selectorkv.kv.storage import StorageError
from selectorkv.lab.load.keyspace import WORKLOADS

SINGLE_OUT = "reports/latest"
SINGLE_BOUND_MS = 10.0
# Three nodes sharing one core answer a 2/3 GET in 4-5 ms at p50 and 7-11 ms
# at p99 when the load is light (docs/lab.md, the cluster study's floor).
CLUSTER_BOUND_MS = 25.0
SINGLE_DATA = "./data-lab"
CALIBRATION_OUT = "reports/calibration"
# The load tool when --tool is not given: the least biased on the project's
# machine (selectorkv lab --calibrate; docs/lab.md, "The instruments").
DEFAULT_TOOL = "selectorkv"


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the lab's commands to the top-level parser's subcommands."""
    add_fill(commands)
    add_load(commands)
    lab = add_lab(commands)
    add_cluster_study(lab)
    add_scale_study(lab)
    add_fault_runs(lab)


def add_fill(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fill = commands.add_parser(
        "fill",
        help="fill a database for the study: the whole key space, then filler",
        description=(
            "Write every key of the benchmark key space (random 3-letter ids, 238,328 of "
            "them) with a random 300-byte value, then filler entries after them until "
            "RocksDB's table files reach --size. The key space alone is about 70 MiB and is "
            "always written whole, whatever --size says. Safe to interrupt and run again. "
            "Needs no server (and no server may hold the directory)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    fill.add_argument("--data", default="./data", help="RocksDB directory")
    fill.add_argument("--size", type=byte_size, default="100MiB", help="target size on disk")


def add_load(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    load = commands.add_parser(
        "load",
        help="send load at a constant rate and report latency (open loop)",
        description=(
            "Send requests at a constant rate, request i due at t0 + i/RATE, over "
            "keep-alive connections, and measure each latency from its due time (no "
            "coordinated omission). Workloads follow wrk_scripts/: random 3-letter ids "
            "and 300-byte bodies; mixed is half GET, half PUT. Works against any HTTP "
            "server with selectorkv's API. Needs the 'load' extra (hdrhistogram only): pip "
            "install 'selectorkv[load]'."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    load.add_argument(
        "--url",
        default="http://127.0.0.1:8080",
        help="server to load; several, comma-separated (a cluster's nodes), take the requests "
        "in turn",
    )
    load.add_argument(
        "--route",
        choices=("round-robin", "placement"),
        default="round-robin",
        help="with several servers: in turn, or each request to its key's first replica (the "
        "nodes' placement, as selectorkv.client does; the URLs must be the nodes' --cluster list)",
    )
    load.add_argument(
        "--workload",
        choices=WORKLOADS,
        default="get",
        help="get and put: one random key of the key space each; delete; mixed: half each",
    )
    load.add_argument("--rate", type=positive_float, required=True, help="requests per second")
    load.add_argument("--connections", type=positive_int, default=64, help="keep-alive connections")
    load.add_argument("--duration", type=positive_float, default=10.0, help="seconds of load")
    load.add_argument(
        "--processes",
        type=positive_int,
        default=None,
        help="processes to spread over (default: one per 30k req/s, at most one per core)",
    )
    load.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    load.add_argument("--hgrm", metavar="FILE", help="write the HdrHistogram percentile spectrum")


def add_lab(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """``selectorkv lab``: the single-node study's and the calibration's flags."""
    lab = commands.add_parser(
        "lab",
        help="the sync-versus-async study: fill, load, profile, plot, report",
        description=(
            "Run the seed's study on this machine and write report.md, plots, raw data and "
            "profiles to --out: for PUT and GET, each mode's capacity, constant-rate runs at "
            "fractions of it, the breaking point, and py-spy/memray profiles, each figure the "
            "median of --repeat interleaved rounds. Takes about 30 minutes (--quick: a few). "
            "Needs the 'lab' extra; py-spy needs ptrace rights (root, or "
            "kernel.yama.ptrace_scope=0)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    lab.add_argument("--quick", action="store_true", help="short runs, fewer steps")
    lab.add_argument(
        "--out", default=SINGLE_OUT,
        help="directory for the report (reports/cluster with --cluster)",
    )  # fmt: skip
    lab.add_argument(
        "--data", default=SINGLE_DATA,
        help="filled database, reused across runs (./data-lab-cluster with --cluster)",
    )  # fmt: skip
    lab.add_argument("--size", type=byte_size, default="100MiB", help="fill the database to this")
    lab.add_argument(
        "--tool",
        choices=("selectorkv", "wrk", "wrk2"),
        help=f"load tool (default {DEFAULT_TOOL}, the least biased in the calibration: "
        "docs/lab.md); wrk means Debian's wrk paced by wrk_scripts/paced.lua, wrk2 is found "
        "on PATH or through $WRK2. With --calibrate: the one tool to calibrate (default: "
        "every tool this machine has)",
    )
    lab.add_argument(
        "--calibrate", action="store_true",
        help="measure each load tool's bias against a server of known latency and write "
        f"calibration.md (default --out {CALIBRATION_OUT}); about 10 minutes with wrk2, "
        "--quick: one",
    )  # fmt: skip
    add_measurement(lab)
    return lab


def add_measurement(lab: argparse.ArgumentParser) -> None:
    """How the studies measure: connections, the bound, the ladder, rounds, seconds."""
    lab.add_argument("--connections", type=positive_int, default=64, help="keep-alive connections")
    lab.add_argument(
        "--p99-bound-ms", type=positive_float, default=argparse.SUPPRESS,
        help=f"p99 bound of a held rate (default {SINGLE_BOUND_MS:g}; {CLUSTER_BOUND_MS:g} with "
        "--cluster, where the idle cluster's own p99 is close to 10 ms: docs/lab.md)",
    )  # fmt: skip
    lab.add_argument(
        "--ladder", type=fractions, help="fractions of capacity to run at, comma-separated"
    )
    lab.add_argument("--refine", type=int, help="halvings of the breaking-point search")
    lab.add_argument(
        "--repeat",
        type=positive_int,
        help="rounds of every capacity, ladder and search run, the modes taking turns in each; "
        "figures are their median and min-max (default 3, 1 with --quick)",
    )
    for name in ("capacity", "run", "profile"):
        lab.add_argument(
            f"--{name}-seconds", type=positive_float, help=f"seconds of each {name} measurement"
        )
    lab.add_argument(
        "--workloads", type=workload_list, default="put,get", help="comma-separated: put, get"
    )
    lab.add_argument(
        "--report-only", action="store_true", help="redraw the report from --out's data"
    )


def add_cluster_study(lab: argparse.ArgumentParser) -> None:
    study = lab.add_argument_group(
        "the cluster study (--cluster)",
        "Blocking against asynchronous peer calls on a local cluster of N nodes, healthy, "
        "with the last node stopped (SIGSTOP), and hanging in the middle of a run; profiles of "
        "the coordinating node; one node against clusters asked ack=1&from=1. Writes "
        "report-cluster.md (default --out reports/cluster, --data ./data-lab-cluster). About "
        "35 minutes on 2 cores; --quick: a few.",
    )
    study.add_argument(
        "--cluster", type=positive_int, nargs="?", const=3, metavar="N",
        help="run the cluster study on N nodes (3 when N is left out)",
    )  # fmt: skip
    study.add_argument(
        "--hang-seconds", type=positive_float, help="seconds of the run in which a node hangs"
    )
    study.add_argument(
        "--drain-seconds", type=positive_float, default=5.0,
        help="after a run's last request, how long answers are waited for (later: errors)",
    )  # fmt: skip
    study.add_argument(
        "--peer-timeout", type=positive_float, default=DEFAULTS.peer_timeout,
        help="the nodes' --peer-timeout: what a blocking call to a stopped replica costs",
    )  # fmt: skip
    study.add_argument(
        "--scale", type=node_counts,
        help="node counts of the scale-out runs, 1 a plain node (default 1,N)",
    )  # fmt: skip


def add_scale_study(lab: argparse.ArgumentParser) -> None:
    study = lab.add_argument_group(
        "the scale-out study (--scale-out)",
        "Clusters of 1, 2 and 4 nodes up at once, each node limited to the same share of one "
        "CPU with a cgroup quota (root), the load on the other CPUs: capacity (closed loop, "
        "wrk per node) and p50/p99 at half of it, with placement-aware and round-robin "
        "routing, 1/1 and 2 of 3, PUT and GET; capacity against N times one node's and CPU "
        "per answer. Writes report-scale.md (default --out reports/scale). About 10 minutes "
        "on 2 cores; --quick: about two.",
    )
    study.add_argument(
        "--scale-out", type=node_counts, nargs="?", const=(1, 2, 4), metavar="COUNTS",
        help="run the scale-out study with these node counts (1,2,4 when left out)",
    )  # fmt: skip
    study.add_argument(
        "--quota", type=quota_share, default="auto",
        help="each node's share of one CPU (auto: 1 / (most nodes + 1)); none: a CPU of its "
        "own per node and no quota, on a machine with more cores",
    )  # fmt: skip


def quota_share(text: str) -> str | float:
    if text in ("auto", "none"):
        return text
    try:
        share = float(text)
    except ValueError:
        share = 0.0
    if not 0 < share <= 64:
        raise argparse.ArgumentTypeError("auto, none, or a share of one CPU such as 0.25")
    return share


def add_fault_runs(lab: argparse.ArgumentParser) -> None:
    faults = lab.add_argument_group(
        "fault runs (--faults)",
        "A 3-node cluster on 127.0.0.2-4 under clients that record every operation, with "
        "kill -9, SIGSTOP and full and one-way partitions (iptables, root) injected in turn; "
        "then healed, and the history checked: acknowledged writes lost, stale quorum reads, "
        "values nobody wrote, hints, time to convergence. One run per peer-call kind; writes "
        'faults.md (default --out reports/faults). docs/cluster.md, "Faults".',
    )
    faults.add_argument(
        "--faults", action="store_true", help="run the fault runs (async and blocking peer calls)"
    )
    faults.add_argument(
        "--faults-seconds", type=positive_float, default=60.0,
        help="seconds of load with faults in each run",
    )  # fmt: skip
    faults.add_argument(
        "--fault-hold", type=positive_float, default=3.0,
        help="seconds each fault lasts, and the calm between two",
    )  # fmt: skip


def fractions(text: str) -> tuple[float, ...]:
    values = tuple(float(part) for part in text.split(","))
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("positive fractions, such as 0.5,0.8,1.0")
    return values


def node_counts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        values = ()
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError("node counts such as 1,2,4,8")
    return values


def workload_list(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(","))
    if not names or any(name not in ("put", "get") for name in names):
        raise argparse.ArgumentTypeError("put, get or put,get")
    return names


def fill(args: argparse.Namespace) -> int:
    from selectorkv.lab.load.fill import fill as fill_database

    try:
        report = fill_database(args.data, args.size, sys.stderr)
    except KeyboardInterrupt:
        print("\nfill interrupted: run the same command again to continue", file=sys.stderr)
        return 130
    except StorageError as exc:
        print(f"selectorkv fill: {exc}", file=sys.stderr)
        return 1
    print(
        f"{args.data}: {report.keys:,} keys of the key space and {report.fillers:,} filler "
        f"entries, {report.size / 2**20:.1f} MiB on disk"
        + (
            f" (the key space alone is larger than --size {args.size / 2**20:g} MiB, and is "
            "always written whole)"
            if report.size > args.size and not report.fillers
            else ""
        )
    )
    return 0


def needs_extra(command: str, extra: str, exc: ImportError) -> int:
    print(f"selectorkv {command} needs the {extra} extra: pip install 'selectorkv[{extra}]' "
          f"({exc})", file=sys.stderr)  # fmt: skip
    return 2


def load(args: argparse.Namespace) -> int:
    try:
        from selectorkv.lab.load import generator
    except ImportError as exc:
        return needs_extra("load", "load", exc)
    try:
        report = generator.generate(
            args.url, args.workload, args.rate, args.connections, args.duration, args.processes,
            route=args.route,
        )  # fmt: skip
    except (ValueError, ClusterError) as exc:
        print(f"selectorkv load: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"selectorkv load: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    generator.write_outputs(report, args.json, args.hgrm)
    report.print_summary(sys.stdout, sys.stderr)
    generator.print_spectrum(report)
    return 0


def lab(args: argparse.Namespace) -> int:
    try:
        from selectorkv.lab.load import tools
        from selectorkv.lab.reports import node_report as report
        from selectorkv.lab.studies import calibration
        from selectorkv.lab.studies import node as study
    except ImportError as exc:
        return needs_extra("lab", "lab", exc)
    if args.calibrate:
        return lab_calibrate(args)
    if args.cluster:
        return lab_cluster(args)
    if args.faults:
        return lab_faults(args)
    if args.scale_out:
        return lab_scale(args)
    out = Path(args.out)
    tool = args.tool or DEFAULT_TOOL
    if not args.report_only:
        preset = study.QUICK if args.quick else study.FULL
        given = {key: getattr(args, key) for key in preset if getattr(args, key) is not None}
        settings = study.Settings(
            out=out, data=Path(args.data), size=args.size, tool=tool,
            connections=args.connections, quick=args.quick,
            p99_bound_ms=getattr(args, "p99_bound_ms", SINGLE_BOUND_MS),
            workloads=args.workloads, **{**preset, **given},
        )  # fmt: skip

        def calibrated_study() -> None:
            chosen = tools.choose(tool)  # before anything runs: a missing tool fails at once
            calibration.for_study(out / report.CALIBRATION, tool, settings.run_seconds,
                                  settings.connections, sys.stderr)  # fmt: skip
            study.Lab(settings, chosen, sys.stderr).run()

        failed = run_study(calibrated_study, out)
        if failed:
            return failed
    return write_reports(out, report.write_report)


def lab_calibrate(args: argparse.Namespace) -> int:
    """``selectorkv lab --calibrate``: each tool against the known-latency
    target (lab/studies/calibration.py)."""
    try:
        from selectorkv.lab.reports import calibration_report
        from selectorkv.lab.studies import calibration
    except ImportError as exc:
        return needs_extra("lab", "lab", exc)
    out = Path(CALIBRATION_OUT if args.out == SINGLE_OUT else args.out)
    if not args.report_only:
        preset = calibration.QUICK if args.quick else calibration.FULL
        given = {"run_seconds": args.run_seconds, "repeat": args.repeat}
        settings = calibration.CalibrationSettings(
            out=out, tools=(args.tool,) if args.tool else calibration.available_tools(),
            connections=args.connections,
            **{**preset, **{key: value for key, value in given.items() if value is not None}},
        )  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        failed = run_study(lambda: calibration.Calibrator(settings, sys.stderr).run(), out)
        if failed:
            return failed
    print(f"report: {calibration_report.write_report(out)}")
    return 0


def write_reports(out: Path, write: Callable[[Path], Path]) -> int:
    """The study's calibration report, when it made one, then its own."""
    from selectorkv.lab.reports import calibration_report
    from selectorkv.lab.reports.node_report import CALIBRATION

    if (out / CALIBRATION / "calibration.json").exists():
        calibration_report.write_report(out / CALIBRATION)
    print(f"report: {write(out)}")
    return 0


def run_study(study: Callable[[], object], out: Path) -> int:
    """Run a study; 0, or the exit status of its failure (said on stderr)."""
    try:
        study()
    except (RuntimeError, ValueError, StorageError) as exc:
        print(f"selectorkv lab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nselectorkv lab interrupted: the data measured so far is in {out}",
              file=sys.stderr)  # fmt: skip
        return 130
    return 0


def lab_cluster(args: argparse.Namespace) -> int:
    """``selectorkv lab --cluster N``: the cluster study (lab/studies/cluster.py)."""
    try:
        from selectorkv.lab.reports import cluster_report
        from selectorkv.lab.reports import node_report as report
        from selectorkv.lab.studies import calibration
        from selectorkv.lab.studies import cluster as cluster_study
    except ImportError as exc:
        return needs_extra("lab", "lab", exc)
    # The single-node study's directories hold plain values; the cluster's
    # versioned records: each study its own unless told otherwise.
    out = Path("reports/cluster" if args.out == SINGLE_OUT else args.out)
    data = Path("./data-lab-cluster" if args.data == SINGLE_DATA else args.data)
    if not args.report_only:
        preset = cluster_study.QUICK if args.quick else cluster_study.FULL
        given = {key: getattr(args, key) for key in preset if getattr(args, key, None) is not None}
        settings = cluster_study.ClusterSettings(
            out=out, data=data, size=args.size, nodes=args.cluster,
            connections=args.connections,
            p99_bound_ms=getattr(args, "p99_bound_ms", CLUSTER_BOUND_MS),
            drain_seconds=args.drain_seconds, peer_timeout=args.peer_timeout,
            scale=args.scale or (1, args.cluster),
            quick=args.quick, workloads=args.workloads, **{**preset, **given},
        )  # fmt: skip

        def calibrated_study() -> None:
            calibration.for_study(out / report.CALIBRATION, "selectorkv", settings.run_seconds,
                                  settings.connections, sys.stderr)  # fmt: skip
            cluster_study.ClusterLab(settings, sys.stderr).run()

        failed = run_study(calibrated_study, out)
        if failed:
            return failed
    return write_reports(out, cluster_report.write_report)


def lab_scale(args: argparse.Namespace) -> int:
    """``selectorkv lab --scale-out``: the scale-out study (lab/studies/scale.py)."""
    from selectorkv.lab.harness.cgroups import QuotaError, Quotas
    from selectorkv.lab.reports import scale_report
    from selectorkv.lab.studies import scale

    out = Path("reports/scale" if args.out == SINGLE_OUT else args.out)
    if not args.report_only:
        preset = scale.QUICK if args.quick else scale.FULL
        given = {key: getattr(args, key) for key in preset if getattr(args, key, None) is not None}
        counts = args.scale_out
        share = {"auto": scale.default_share(counts), "none": None}.get(args.quota, args.quota)
        settings = scale.ScaleSettings(
            out=out, counts=counts, share=share, connections=args.connections,
            workloads=args.workloads, quick=args.quick, **{**preset, **given},
        )  # fmt: skip
        if shutil.which("wrk") is None:
            print("selectorkv lab --scale-out needs wrk (apt-get install wrk)", file=sys.stderr)
            return 2
        try:
            if share is not None:
                with Quotas("selectorkv-scale-probe"):
                    pass  # can quotas be set here at all? (before minutes of work)
        except QuotaError as exc:
            print(f"selectorkv lab: {exc}; --quota none runs without quotas", file=sys.stderr)
            return 2
        failed = run_study(lambda: scale.ScaleLab(settings, sys.stderr).run(), out)
        if failed:
            return failed
    print(f"report: {scale_report.write_report(out)}")
    return 0


def lab_faults(args: argparse.Namespace) -> int:
    """``selectorkv lab --faults``: the fault runs (lab/studies/faults.py)."""
    from selectorkv.lab.studies import faults

    out = Path("reports/faults" if args.out == SINGLE_OUT else args.out)
    settings = [
        faults.FaultSettings(
            peer_calls=calls, seconds=args.faults_seconds, hold=args.fault_hold, seed=seed
        )
        for seed, calls in enumerate(("async", "blocking"))
    ]
    verdicts: list[int] = []
    failed = run_study(lambda: verdicts.append(faults.main(out, settings)), out)
    return failed or verdicts[0]


# The commands this module runs, by name.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"fill": fill, "load": load, "lab": lab}
