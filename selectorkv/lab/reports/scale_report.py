"""The scale-out study's report: report-scale.md and its plots, from the
runs.json that lab/studies/scale.py saved (``--report-only`` redraws them).

For each workload: every configuration's capacity against N times one
node's (the ratio taken within each round: round r of N nodes over N times
round r of one node), its CPU time per answer against one node's, and the
p50 and p99 at half its capacity; one plot of capacity by node count.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from selectorkv.lab.harness.spread import Spread
from selectorkv.lab.reports import plots
from selectorkv.lab.studies.scale import ScaleRun, ScaleStudy

REPORT = "report-scale.md"


def _spread(values: Iterable[float | None], spec: str, unit: str = "") -> str:
    found = [value for value in values if value is not None]
    return Spread.of(found).format(spec, unit) if found else "n/a"


def _per_round(runs: list[ScaleRun]) -> dict[int, ScaleRun]:
    return {run.round: run for run in runs}


def write_report(out: Path) -> Path:
    study = ScaleStudy.load(out)
    s = study.settings
    share = s["share"]
    lines = [
        "# Scale-out: N nodes against one",
        "",
        *study.machine,
        "",
        (
            f"Each node limited to {share:g} of one CPU by a cgroup quota, every node on CPU "
            f"{', '.join(map(str, study.server_cpus))} and the load on CPU "
            f"{', '.join(map(str, study.load_cpus))}: N nodes are N equal small cores. "
            f"The quotas held the nodes back {study.throttled_s:.1f} s in all."
            if share
            else f"Each node on a CPU of its own ({', '.join(map(str, study.server_cpus))}), "
            f"the load on CPU {', '.join(map(str, study.load_cpus))}; no quota."
        ),
        "",
        f"{s['mode']} mode. Capacity: closed loop, one wrk per node ({s['connections']} "
        f"connections each, as one node alone, {s['capacity_seconds']:g} s), sending the keys "
        "the node holds (placement, as `selectorkv.client` does) or any key (round-robin: the node "
        "coordinates what it does not hold). Then `selectorkv load` at half of each "
        f"configuration's capacity ({s['run_seconds']:g} s, latency from each request's due "
        f"time). {s['repeat']} round(s), the order rotated each round; median (min-max). "
        '"to N x one" is the capacity over N times one node\'s, taken within each round; '
        "\"CPU to one\" the nodes' CPU time per answer over one node's.",
        "",
    ]
    for workload in s["workloads"]:
        runs = [run for run in study.runs if run.workload == workload]
        one = _per_round([r for r in runs if r.nodes == 1 and r.phase == "capacity"
                          and r.replication == "1/1"])  # fmt: skip
        configurations = sorted(
            {(r.nodes, r.route, r.replication) for r in runs},
            key=lambda c: (c[2] != "1/1", c[1], c[0]),
        )
        rows = []
        series: dict[str, list[tuple[int, Spread]]] = {}
        for n, route, replication in configurations:
            mine = [r for r in runs if (r.nodes, r.route, r.replication) == (n, route, replication)]
            capacity = [r for r in mine if r.phase == "capacity"]
            fixed = [r for r in mine if r.phase == "fixed"]
            scaling = [run.answered_per_s / (n * one[run.round].answered_per_s)
                       for run in capacity if run.round in one]  # fmt: skip
            cpu = [run.cpu_s / max(1, run.answered) * 1e6 for run in capacity]
            cpu_one = {k: v.cpu_s / max(1, v.answered) * 1e6 for k, v in one.items()}
            cpu_ratio = [c / cpu_one[run.round] for c, run in zip(cpu, capacity, strict=True)
                         if run.round in cpu_one]  # fmt: skip
            rows.append([
                str(n), route if n > 1 else "-", replication,
                _spread((r.answered_per_s for r in capacity), ",.0f"),
                _spread(scaling, ".2f", "x"), _spread(cpu, ",.0f", " us"),
                _spread(cpu_ratio, ".2f", "x"),
                _spread((r.rate for r in fixed), ",.0f"),
                f"{_spread((r.p50_ms for r in fixed), '.2f')} / "
                f"{_spread((r.p99_ms for r in fixed), '.2f')}",
            ])  # fmt: skip
            # The majority of three is 2 of 2 on two nodes: one line for both.
            quorum = "1/1" if replication == "1/1" else "majority (2/2, 2/3)"
            label = f"{quorum} {route}" if n > 1 else None
            for name in [label] if label else [f"1/1 {r}" for r in ("placement", "round-robin")]:
                series.setdefault(name, []).append(
                    (n, Spread.of(r.answered_per_s for r in capacity))
                )
        lines += [f"## {workload.upper()}", ""]
        lines.append("| nodes | route | ack/from | capacity, answers/s | to N x one | "
                     "CPU per answer | CPU to one | fixed rate | p50 / p99 ms |")  # fmt: skip
        lines.append("|---|---|---|---|---|---|---|---|---|")
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
        if one:
            plot = f"scale-{workload}.png"
            plots.capacity_by_nodes(
                series, Spread.of(r.answered_per_s for r in one.values()).median,
                f"{workload.upper()}: capacity by nodes", out / plot,
            )  # fmt: skip
            lines += [f"![{workload} capacity by nodes]({plot})", ""]
    path = out / REPORT
    path.write_text("\n".join(lines))
    return path
