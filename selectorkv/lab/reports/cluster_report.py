"""report-cluster.md and its plots, computed from the out directory alone.

# design

As lab/reports/node_report.py: every finding is computed from runs.json, the spectra
and the profiles beside it, a figure measured in rounds is its median and
min-max, and one style is said to be ahead only when the ranges do not
overlap. The course's stage-5 claim (send to the replicas in parallel and
take the fastest answers; threads must not block) is broken into the
predictions it makes, and each is checked against the data and marked as
agreeing, differing, or not telling. The machine is the one recorded when
the study ran: ``--report-only`` redraws the same report anywhere.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from selectorkv.config import DEFAULTS
from selectorkv.lab.harness.profile import PEER_WAIT, ThreadProfile, thread_profiles
from selectorkv.lab.harness.spread import Agreement, Comparison, Spread
from selectorkv.lab.load.tools import served_rate
from selectorkv.lab.reports import markdown, plots
from selectorkv.lab.reports.markdown import Page
from selectorkv.lab.reports.node_report import tool_note

STYLES = ("blocking", "async")
SCENARIO_TEXT = {
    "healthy": "healthy",
    "stopped": "last node stopped (SIGSTOP) for the whole run",
}
CATEGORIES = (
    "wait: select",
    "wait: queue",
    PEER_WAIT,
    "RocksDB",
    "h11",
    "socket I/O",
    "other Python",
)
SERVER_THREADS = ("SelectorThread", "PayloadThread")

Run = dict[str, Any]


class ClusterReportData:
    """runs.json of a cluster study and the files beside it."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.study: dict[str, Any] = json.loads((out / "runs.json").read_text())
        self.settings: dict[str, Any] = self.study["settings"]
        self.runs: list[Run] = self.study["runs"]
        self.nodes: int = self.settings["nodes"]

    def workloads(self) -> list[str]:
        return list(self.study["breaking_point"])

    def replications(self) -> list[str]:
        return [f"{self.nodes // 2 + 1}/{self.nodes}", "1/1"]

    def select(self, **wanted: Any) -> list[Run]:
        """The runs whose fields have the given values (a tuple: any of them)."""

        def matches(run: Run) -> bool:
            for name, value in wanted.items():
                allowed = value if isinstance(value, tuple) else (value,)
                if run[name] not in allowed:
                    return False
            return True

        return [run for run in self.runs if matches(run)]

    def measured(self, **wanted: Any) -> list[Run]:
        return [run for run in self.select(**wanted) if not run["skipped"]]

    def capacity(self, workload: str, calls: str, replication: str, scenario: str) -> Spread | None:
        runs = self.select(workload=workload, calls=calls, replication=replication,
                           scenario=scenario, phase="capacity")  # fmt: skip
        return Spread.of(served_rate(r["figures"]) for r in runs) if runs else None

    def rates(self, workload: str, replication: str, scenario: str) -> list[float]:
        runs = self.select(workload=workload, replication=replication, scenario=scenario,
                           phase=("ladder", "search"))  # fmt: skip
        return sorted({run["rate"] for run in runs})

    def at(
        self, workload: str, calls: str, replication: str, scenario: str, rate: float
    ) -> list[Run]:
        return self.measured(workload=workload, calls=calls, replication=replication,
                             scenario=scenario, phase=("ladder", "search"), rate=rate)  # fmt: skip

    def point(self, workload: str, replication: str, scenario: str, calls: str) -> float | None:
        value: float | None = self.study["breaking_point"][workload][replication][scenario][calls]
        return value

    def threads(self, workload: str, label: str, kind: str) -> list[ThreadProfile]:
        stem = self.study["profiles"].get(workload, {}).get(label, {}).get(kind)
        path = self.out / f"{stem}.speedscope.json"
        return thread_profiles(path) if stem and path.exists() else []


def spread(runs: Iterable[Run], key: str, field: str = "latency_ms_served") -> Spread | None:
    """A latency percentile over the runs that got answers (None if none did)."""
    values = [run["figures"][field][key] for run in runs if answered(run)]
    return Spread.of(values) if values else None


def answered(run: Run) -> bool:
    """The run got at least one answer below 500 (its latencies mean something)."""
    return served_rate(run["figures"]) > 0


def served(runs: Iterable[Run]) -> Spread | None:
    values = [served_rate(run["figures"]) for run in runs]
    return Spread.of(values) if values else None


def cpu_per_answer(runs: Iterable[Run]) -> Spread | None:
    """Microseconds of CPU, all nodes together, per answered request (runs
    that got no answer left out)."""
    values = [1e6 * r["cpu_s"] / r["figures"]["requests"] for r in runs if r["figures"]["requests"]]
    return Spread.of(values) if values else None


def fmt(value: Spread | None, spec: str = ".1f", unit: str = "") -> str:
    return value.format(spec, unit) if value else "n/a"


def verdict(agreement: Agreement) -> str:
    """How this report words a prediction against what was measured."""
    if agreement.agrees is None:
        return "not shown: within noise"
    return ("agrees" if agreement.agrees else "differs") + (
        " (one round, no spread)" if agreement.single_run else ""
    )


Section = markdown.Section[ClusterReportData, Page]


class ClusterReportWriter(Section):
    def __init__(self, data: ClusterReportData) -> None:
        super().__init__(data, Page(), tool_note(data.out, data.study["tool"]))

    def write(self) -> str:
        d = self.data
        s = d.settings
        study = d.study
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(study["started"]))
        self.add(
            f"# The cluster study: blocking against asynchronous peer calls, {d.nodes} nodes",
            "",
            f"Measured {when}{' (--quick: the figures mean little)' if s['quick'] else ''}; "
            "written by `selectorkv lab --cluster` from runs.json and the files beside it.",
            "",
            "## Machine, versions, tool",
            "",
            *study["machine"],
            study["versions"],
            f"- Load: {study['tool']} (open loop, latency from each request's due time), "
            f"{s['connections']} connections split evenly over the entry nodes; requests go to "
            "the entry nodes round-robin, as a client library spreads them over a cluster.",
            f"- {self.tool_note}",
            f"- CPUs: the nodes' Python threads pinned in turn to CPU(s) "
            f"{', '.join(map(str, study['server_cpus']))}; the load and py-spy on "
            f"{', '.join(map(str, study['load_cpus'])) or 'the same CPUs'}.",
            "",
            "## Method",
            "",
        )
        self.method()
        page, note = self.page, self.tool_note
        for workload in d.workloads():
            ConfigurationSection(d, page, note).write(workload)
        HangSection(d, page, note).write()
        ProfilesSection(d, page, note).write()
        ScaleSection(d, page, note).write()
        ClaimsSection(d, page, note).write()
        return "\n".join(page.lines) + "\n"

    def method(self) -> None:
        d = self.data
        s = d.settings
        study = d.study
        cores = len(study["server_cpus"])
        default = d.replications()[0]
        self.add(
            f"- A local cluster of {d.nodes} `selectorkv serve` processes, each on its own copy of "
            f"one database filled to {s['size'] / 2**20:.0f} MiB as a cluster node's (every key of "
            "the key space on every node, as versioned records), fresh for every cluster.",
            f"- Peer calls: `--peer-calls blocking` (the executing thread calls the replicas "
            "one after another and waits) against `async` (the SelectorThread sends to every "
            "replica at once and answers at the ack-th answer), each in the server setup "
            "chosen below; the server's defaults otherwise, with `--peer-timeout "
            f"{study['peer_timeout']:g}` s (the server's default is {DEFAULTS.peer_timeout:g} s).",
            f"- Replication: the default ack/from ({default}) and 1/1 (sharding only: each key "
            "on one node, a request proxied at most once).",
            "- Scenarios: healthy; the last node stopped with SIGSTOP for the whole run (its "
            "socket still accepts connections, the kernel queues the requests, nothing "
            "answers: a hung process, not a refused connection); and the hang, the last "
            "node stopped a third of the way into one run and resumed at two thirds.",
            "- Entry points: with a node stopped, and in the hang from the start, the load "
            "goes to the nodes that are up. The study measures what a coordinator does when a "
            "replica hangs; a client whose own entry node hangs waits for it with either style.",
            f"- Per configuration: capacity (closed loop, {s['capacity_seconds']:g} s), then a "
            f"ladder of constant rates at {', '.join(f'{f:g}' for f in s['ladder'])} of the "
            "larger healthy capacity (with the node stopped too, so that both scenarios run at "
            f"the same rates; {s['run_seconds']:g} s each), then {s['refine']} halving(s) "
            f"of the step above the highest rate held: the breaking point. {s['repeat']} "
            "round(s) of each, both styles' clusters up at once and taking turns within a "
            "round (the order rotated each round). Figures are the median (min-max) of the "
            "rounds. Above a rate that a style did not hold in a round it is not run in that "
            "round (such a rate counts as not held).",
            f"- Held: at least 97% of the answerable requests served (answers below 500), the p99 "
            f"of those answers at most {s['p99_bound_ms']:g} ms, no errors (connections "
            f"that failed, or answers still missing {s['drain_seconds']:g} s after the last "
            "request). Answerable: with the last node stopped, the share of the key space "
            "that still has enough replicas up: "
            + ", ".join(f"{label}: {share:.1%}" for label, share in study["reachable"].items())
            + " (counted by the placement over every key).",
            f"- The machine has {len(study['server_cpus']) + len(study['load_cpus'])} CPUs: "
            + (
                f"all {d.nodes} nodes share CPU {study['server_cpus'][0]}, so what this study "
                "shows is what the hops and the waits cost, not how a cluster scales."
                if cores == 1
                else f"the nodes share {cores} CPUs."
            ),
            "",
        )


class ConfigurationSection(Section):
    """One workload: each replication and scenario, its tables and plots."""

    def write(self, workload: str) -> None:
        d = self.data
        name = workload.upper()
        self.add(f"## {name}", "", "### The server setup for each style", "")
        chosen = d.study["chosen_mode"][workload]
        tried = sorted({r["mode"] for r in d.select(workload=workload, phase="mode")}, key=len)
        rows = []
        for calls in STYLES:
            cells = [
                fmt(served(d.select(workload=workload, calls=calls, mode=setup, phase="mode")),
                    ",.0f")
                for setup in tried
            ]  # fmt: skip
            rows.append([calls, *cells, f"**{chosen[calls]}**"])
        self.table(["peer calls", *tried, "measured in"], rows)
        self.add(
            "Capacity (closed loop, req/s, healthy, default ack/from) in sync mode, in async "
            "mode with the default workers, and in async mode with a PayloadThread per load "
            "connection (`-wN`: `--workers N`); each style is measured from here on in the "
            "setup with the higher median. " + " ".join(setup_reason(c, chosen[c]) for c in STYLES),
            "",
        )
        for replication in d.replications():
            for scenario in ("healthy", "stopped"):
                self.configuration(workload, replication, scenario)

    def configuration(self, workload: str, replication: str, scenario: str) -> None:
        d = self.data
        title = f"{workload.upper()}, ack/from {replication}, {SCENARIO_TEXT[scenario]}"
        self.add(f"### {title}", "")
        rows = []
        for calls in STYLES:
            capacity = d.capacity(workload, calls, replication, scenario)
            point = d.point(workload, replication, scenario, calls)
            runs = [r for rate in d.rates(workload, replication, scenario)
                    for r in d.at(workload, calls, replication, scenario, rate)]  # fmt: skip
            rows.append([
                calls, fmt(capacity, ",.0f"),
                f"{point:,.0f}" if point else "below the lowest rate tried",
                fmt(cpu_per_answer(runs), ",.0f", " us"),
            ])  # fmt: skip
        self.table(["peer calls", "capacity, req/s", "breaking point, req/s",
                    "CPU per answer, all nodes"], rows)  # fmt: skip
        rows = []
        for rate in d.rates(workload, replication, scenario):
            if not any(d.at(workload, calls, replication, scenario, rate) for calls in STYLES):
                continue  # above where both failed
            row = [f"{rate:,.0f}"]
            for calls in STYLES:
                runs = d.at(workload, calls, replication, scenario, rate)
                if not runs:
                    row += ["not run: a lower rate failed", "", ""]
                    continue
                statuses: dict[str, int] = {}
                for run in runs:
                    for code, count in run["figures"]["status_counts"].items():
                        statuses[code] = statuses.get(code, 0) + count
                errors = sum(run["figures"]["errors"] for run in runs)
                answers = [f"{c}: {n}" for c, n in sorted(statuses.items())]
                row += [fmt(served(runs), ",.0f"),
                        f"{fmt(spread(runs, 'p50'))} / {fmt(spread(runs, 'p99'))}",
                        ", ".join(answers + ([f"errors: {errors}"] if errors else []))]  # fmt: skip
            rows.append(row)
        self.table(
            ["rate", "blocking: served/s", "p50 / p99 ms", "answers", "async: served/s",
             "p50 / p99 ms", "answers"], rows,
        )  # fmt: skip
        self.add(self.tool_note, "")
        self.config_plots(workload, replication, scenario, title)

    def config_plots(self, workload: str, replication: str, scenario: str, title: str) -> None:
        d = self.data
        stem = f"{workload}-{replication.replace('/', 'of')}-{scenario}"
        points = {}
        for calls in STYLES:
            series = []
            for rate in d.rates(workload, replication, scenario):
                runs = d.at(workload, calls, replication, scenario, rate)
                got, p99 = served(runs), spread(runs, "p99")
                if got and p99:
                    series.append((got, p99))
            points[calls] = series
        throughput = f"throughput-p99-{stem}.png"
        plots.throughput_against_p99(
            points, d.settings["p99_bound_ms"], f"{title}: served rate against p99",
            d.out / throughput,
        )  # fmt: skip
        both = [
            rate for rate in d.rates(workload, replication, scenario)
            if all(d.at(workload, calls, replication, scenario, rate) for calls in STYLES)
        ]  # fmt: skip
        self.add(f"![throughput against p99]({throughput})", "")
        if both:
            rate = both[-1]
            curves = {
                f"{calls} {rate:,.0f} req/s": [
                    plots.read_hgrm(d.out / f"{run['stem']}.hgrm")
                    for run in d.at(workload, calls, replication, scenario, rate)
                ]
                for calls in STYLES
            }
            latency = f"latency-{stem}.png"
            plots.latency_by_percentile(
                curves, f"{title}: latency by percentile at {rate:,.0f} req/s", d.out / latency
            )
            self.add(
                f"Latency by percentile at {rate:,.0f} req/s, the highest rate both styles "
                "ran in every round (every answer, the failed ones too):",
                "",
                f"![latency by percentile]({latency})",
                "",
            )


class HangSection(Section):
    """A node hanging in the middle of a run: what a client sees."""

    def write(self) -> None:
        d = self.data
        hang = d.study["hang"]
        if not hang:
            return
        stop, resume = hang["stop_s"], hang["resume_s"]
        self.add(
            "## A replica hangs in the middle of a run",
            "",
            f"Node {hang['node']} is stopped (SIGSTOP) {stop:g} s into the run and resumed "
            f"{resume:g} s in; the load, at half the lower healthy breaking point (or, if a style "
            "held no rate, the lowest rate tried), goes to "
            "the other nodes all along. Per 100 ms of due time: the p99 and the maximum of "
            "the requests due then.",
            "",
        )
        for workload in d.workloads():
            runs = {calls: d.select(workload=workload, calls=calls, phase="hang")
                    for calls in STYLES}  # fmt: skip
            if not all(runs.values()):
                continue
            series = {calls: runs[calls][0]["figures"].get("timeline", []) for calls in STYLES}
            image = f"latency-over-time-{workload}.png"
            plots.latency_over_time(
                {f"{calls} peer calls": buckets for calls, buckets in series.items()},
                {"stopped": stop, "resumed": resume},
                f"{workload.upper()} at {runs['async'][0]['rate']:,.0f} req/s, "
                f"{runs['async'][0]['replication']}: node {hang['node']} hangs",
                d.out / image,
            )
            rows = []
            for calls, buckets in series.items():
                phases = {
                    "before": [b for b in buckets if b["t"] < stop],
                    "while stopped": [b for b in buckets if stop <= b["t"] < resume],
                    "after": [b for b in buckets if b["t"] >= resume],
                }
                cells = []
                for part in phases.values():
                    worst = max((b["p99_ms"] for b in part), default=0.0)
                    failed = sum(b["failed"] for b in part)
                    answers = sum(b["answers"] for b in part)
                    cells.append(f"{worst:,.1f} ms, {failed} of {answers} failed")
                back = recovered_after(buckets, resume, d.settings["p99_bound_ms"])
                rows.append([calls, *cells, back])
            self.add(f"### {workload.upper()}", "", f"![latency over time]({image})", "")
            self.table(
                ["peer calls", "worst 100 ms p99, before", "while stopped", "after",
                 "p99 under the bound again"], rows,
            )  # fmt: skip
            self.add(self.tool_note, "")


class ProfilesSection(Section):
    """Where the coordinating node's threads wait."""

    def write(self) -> None:
        d = self.data
        profiles = d.study["profiles"]
        if not profiles:
            return
        self.add(
            "## Where the coordinating node's threads wait",
            "",
            "py-spy on node 1 (an entry node) at one rate for both styles (as the hang's), "
            "healthy and with the last node stopped: CPU profiles "
            "(threads on CPU) and wait profiles (`--idle`: every thread, waiting or not). "
            "Shares of each thread kind's wall-clock samples, from the wait profiles; the "
            "innermost frame decides, and a sample inside BlockingCoordinator's call to a "
            f"peer is `{PEER_WAIT}`.",
            "",
        )
        for workload, labels in profiles.items():
            rows = []
            for label, stems in labels.items():
                links = ", ".join(
                    f"{kind} [svg]({stem}.svg) [speedscope]({stem}.speedscope.json)"
                    for kind, stem in stems.items()
                )
                threads = d.threads(workload, label, "wait")
                for kind in SERVER_THREADS:
                    chosen = [p for p in threads if p.kind == kind]
                    total = sum(p.seconds for p in chosen)
                    if not total:
                        continue
                    cells = [f"{100 * sum(p.categories[c] for p in chosen) / total:.0f}%"
                             for c in CATEGORIES]  # fmt: skip
                    rows.append([label, kind, *cells, links])
                    links = ""
            self.add(f"### {workload.upper()}", "")
            self.table(["scenario, peer calls", "thread", *CATEGORIES, "profiles"], rows)
            self.profile_observations(workload, labels)

    def profile_observations(self, workload: str, labels: dict[str, Any]) -> None:
        d = self.data
        for label in labels:
            threads = d.threads(workload, label, "wait")
            waiting = {
                kind: sum(p.categories[PEER_WAIT] for p in threads if p.kind == kind)
                / max(1e-9, sum(p.seconds for p in threads if p.kind == kind))
                for kind in SERVER_THREADS
                if any(p.kind == kind for p in threads)
            }
            blocked = [f"{kind} {share:.0%}" for kind, share in waiting.items() if share >= 0.005]
            text = (
                f"waiting for a replica: {', '.join(blocked)} of their samples"
                if blocked
                else "no server thread was seen waiting for a replica"
            )
            self.add(f"- {label}: {text}.")
        self.add("")


class ScaleSection(Section):
    """One plain node against clusters asked 1/1."""

    def write(self) -> None:
        d = self.data
        labels = sorted({r["calls"] for r in d.select(phase="scale")}, key=scale_order)
        if not labels:
            return
        single = "single"
        self.add(
            "## Scale-out: one node against clusters asked ack=1&from=1",
            "",
            "Closed-loop capacity, then a constant rate of half the plain node's capacity, in "
            "rounds; async mode, asynchronous peer calls; the load round-robin over every node. "
            "The ratio is taken within each round.",
            "",
        )
        cores = len(d.study["server_cpus"])
        if cores < max(scale_order(label) for label in labels):
            self.add(
                f"On this machine the nodes share {cores} CPU(s), so a cluster cannot serve more "
                "than one node does: every request it proxies costs the shared CPU a second "
                "parse and a second answer. The figure that shows scaling needs a core per "
                "node and more for the load (`selectorkv lab --cluster 8 --scale 1,2,4,8` on "
                "a machine with 16 or more).",
                "",
            )
        for workload in d.workloads():
            capacity = {
                label: d.select(workload=workload, calls=label, phase="scale-capacity")
                for label in labels
            }
            fixed = {label: d.select(workload=workload, calls=label, phase="scale")
                     for label in labels}  # fmt: skip
            rows = []
            for label in labels:
                ratios = [
                    served_rate(a["figures"]) / max(1e-9, served_rate(b["figures"]))
                    for a, b in zip(capacity[label], capacity[single], strict=False)
                ]
                rate = fixed[label][0]["rate"] if fixed[label] else 0
                rows.append([
                    label, fmt(served(capacity[label]), ",.0f"),
                    fmt(Spread.of(ratios) if ratios else None, ".2f", "x"),
                    f"{rate:,.0f}", fmt(served(fixed[label]), ",.0f"),
                    f"{fmt(spread(fixed[label], 'p50'), '.2f')} / "
                    f"{fmt(spread(fixed[label], 'p99'), '.2f')}",
                    fmt(cpu_per_answer(fixed[label]), ",.0f", " us"),
                ])  # fmt: skip
            self.add(f"### {workload.upper()}", "")
            self.table(["nodes", "capacity, req/s", "to one node", "fixed rate", "served/s",
                        "p50 / p99 ms", "CPU per answer"], rows)  # fmt: skip


class ClaimsSection(Section):
    """The course's claim, prediction by prediction, and the observations."""

    def write(self) -> None:
        """The course's stage-5 claim, prediction by prediction."""
        rows = [row for workload in self.data.workloads() for row in self.claim_rows(workload)]
        self.add(
            "## The course's claim, point by point",
            "",
            "Stage 5 of the course: send a request to the replicas in parallel and answer "
            "with the fastest `ack` answers; no thread should block waiting for a peer. What "
            "each part predicts for these configurations, and what was measured (a verdict "
            "needs the rounds' ranges apart):",
            "",
        )
        self.table(["prediction", "measured", "verdict"], rows)
        self.observations()

    def claim_rows(self, workload: str) -> list[list[str]]:
        """The predictions for one workload: (prediction, measured, verdict)."""
        d = self.data
        default = d.replications()[0]
        rows = []
        name = workload.upper()
        # 1. In parallel: healthy, the async coordinator answers sooner.
        rates = [r for r in d.rates(workload, default, "healthy")
                 if all(d.at(workload, c, default, "healthy", r) for c in STYLES)]  # fmt: skip
        if rates:
            rate = rates[0]
            got = {c: spread(d.at(workload, c, default, "healthy", rate), "p50")
                   for c in STYLES}  # fmt: skip
            rows.append([
                f"{name}, healthy, {default}: sending to the replicas in parallel "
                "answers sooner than one after another (p50)",
                f"at {rate:,.0f} req/s: " + latency_pair(got, ".2f"),
                latency_verdict(got),
            ])  # fmt: skip
        # 2. Fastest answers: a stopped replica costs async nothing.
        for scenario_rate in d.rates(workload, default, "stopped")[:1]:
            runs = {c: d.at(workload, c, default, "stopped", scenario_rate) for c in STYLES}
            p99 = {c: spread(runs[c], "p99") for c in STYLES}
            rows.append([
                f"{name}, {default}, a node stopped: taking the fastest answers, "
                "the async coordinator does not wait for the stopped replica (p99)",
                f"at {scenario_rate:,.0f} req/s: {latency_pair(p99, '.1f')} "
                f"(peer timeout {d.study['peer_timeout'] * 1000:g} ms)",
                latency_verdict(p99),
            ])  # fmt: skip
        # 3. Capacity: threads that never block serve more.
        for scenario in ("healthy", "stopped"):
            caps = {c: d.capacity(workload, c, default, scenario) for c in STYLES}
            if caps["async"] and caps["blocking"]:
                comparison = Comparison.of(
                    "async", caps["async"], "blocking", caps["blocking"], False
                )
                rows.append([
                    f"{name}, {default}, {scenario}: threads that never block serve more "
                    "(capacity)",
                    f"async {caps['async'].format()} req/s, blocking "
                    f"{caps['blocking'].format()} req/s",
                    verdict(Agreement.of(comparison, "async")),
                ])  # fmt: skip
        # 4. Healthy 1/1: one hop, nothing to do in parallel: no difference expected.
        caps = {c: d.capacity(workload, c, "1/1", "healthy") for c in STYLES}
        if caps["async"] and caps["blocking"]:
            comparison = Comparison.of("async", caps["async"], "blocking", caps["blocking"], False)
            rows.append([
                f"{name}, 1/1, healthy: with one replica there is nothing to send in "
                "parallel, so the styles should serve alike (capacity)",
                f"async {caps['async'].format()} req/s, blocking "
                f"{caps['blocking'].format()} req/s",
                "agrees" if comparison.within_noise else f"differs: {comparison.text()}",
            ])  # fmt: skip
        return rows

    def observations(self) -> None:
        """Findings computed from the data, for the reader in a hurry."""
        d = self.data
        default = d.replications()[0]
        lines = []
        timeout = d.study["peer_timeout"]
        entries = d.nodes - 1
        for workload in d.workloads():
            cap = d.capacity(workload, "blocking", default, "stopped")
            workers = threads_of(d.study["chosen_mode"][workload]["blocking"], d.study["workers"])
            connections = d.settings["connections"]
            if cap:
                # Each request waits out the timeout and holds a thread and a
                # client connection meanwhile (Little's law).
                by_threads = entries * workers / timeout
                by_client = connections / timeout
                lines.append(
                    f"- {workload.upper()}, {default}, a node stopped: blocking calls wait "
                    f"{timeout:g} s for the stopped replica on every request, holding a thread "
                    f"and a client connection: at most {by_threads:g} req/s by the threads "
                    f"({workers} per node, {entries} entry nodes) and {by_client:g} req/s by the "
                    f"load's {connections} connections; measured {cap.format()} req/s."
                )
            share = d.study["reachable"].get("1/1", 1.0)
            caps = [d.capacity(workload, c, "1/1", "stopped") for c in STYLES]
            if all(caps) and share < 1:
                offered = connections / ((1 - share) * timeout)
                lines.append(
                    f"- {workload.upper()}, 1/1, a node stopped: the {1 - share:.0%} of requests "
                    f"whose one replica is stopped each hold a client connection for the "
                    f"{timeout:g} s peer timeout, with either style, so the load's {connections} "
                    f"connections can offer at most {offered:,.0f} req/s, {share:.0%} of them "
                    f"answerable: {share * offered:,.0f} req/s served. Measured capacity: "
                    + ", ".join(
                        f"{c} {cap.format()}" for c, cap in zip(STYLES, caps, strict=True) if cap
                    )
                    + " req/s: the client's limit, not the servers'."
                )
            for scenario in ("healthy", "stopped"):
                points = {c: d.point(workload, default, scenario, c) for c in STYLES}
                if points["async"] and points["blocking"]:
                    lines.append(
                        f"- {workload.upper()}, {default}, {scenario}: breaking point async "
                        f"{points['async']:,.0f} req/s against blocking "
                        f"{points['blocking']:,.0f} ({points['async'] / points['blocking']:.1f}x)."
                    )
                elif points["async"] and not points["blocking"]:
                    lines.append(
                        f"- {workload.upper()}, {default}, {scenario}: async held up to "
                        f"{points['async']:,.0f} req/s; blocking held no rate tried."
                    )
        self.add("## Observations", "", *(lines or ["- none computed"]), "")


def latency_pair(got: dict[str, Spread | None], spec: str) -> str:
    return ", ".join(
        f"{calls} {value.format(spec)} ms" if value else f"{calls} answered nothing"
        for calls, value in got.items()
    )


def latency_verdict(got: dict[str, Spread | None]) -> str:
    """The prediction that async answers sooner; a style that answered
    nothing is behind any that did."""
    fast, slow = got["async"], got["blocking"]
    if fast and slow:
        return verdict(Agreement.of(Comparison.of("async", fast, "blocking", slow, True), "async"))
    if fast:
        return "agrees: blocking answered nothing below 500"
    return "differs: async answered nothing below 500" if slow else "not shown: neither answered"


def threads_of(setup: str, workers: int) -> int:
    """How many threads of a node execute requests in a setup."""
    mode, _, count = setup.partition("-w")
    return 1 if mode == "sync" else int(count or workers)


def setup_reason(calls: str, setup: str) -> str:
    """What the chosen setup means for a style's threads."""
    if calls == "blocking":
        where = {
            "sync": "the SelectorThread itself waits for each peer",
            "async": "the one PayloadThread waits for each peer",
        }.get(setup, "a PayloadThread per request in flight waits for its peers")
        return f"Blocking calls in `{setup}`: {where}."
    where = {
        "sync": "the node's own part runs inline on the SelectorThread",
        "async": "the node's own part goes to the PayloadThread",
    }.get(setup, "the node's own part goes to one of many PayloadThreads")
    return f"Asynchronous calls in `{setup}`: the SelectorThread sends to the peers; {where}."


def recovered_after(buckets: list[dict[str, float]], resume: float, bound_ms: float) -> str:
    """How long after the resume the 100 ms p99 stayed under the bound."""
    after = [b for b in buckets if b["t"] >= resume]
    for i, bucket in enumerate(after):
        if all(b["p99_ms"] <= bound_ms for b in after[i:]):
            return f"{bucket['t'] - resume:.1f} s after the resume"
    return "not within the run"


def scale_order(label: str) -> int:
    return 1 if label == "single" else int(label.split("-")[1])


def write_report(out: Path) -> Path:
    for old in out.glob("*.png"):
        old.unlink()  # plots of an earlier drawing: only this one's stay
    text = ClusterReportWriter(ClusterReportData(out)).write()
    path = out / "report-cluster.md"
    path.write_text(text)
    return path
