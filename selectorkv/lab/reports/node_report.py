"""report.md and the plots, computed from the out directory alone.

# design

Every sentence of the report that states a finding is computed from the
saved runs (runs.json, the .hgrm spectra, the speedscope profiles, memray's
stats), and its wording follows the numbers: which mode is ahead is decided
here, not written in advance. A figure measured in several rounds is given
as its median and min-max (lab/spread.py), and one mode is said to be ahead
of the other only when their ranges do not overlap: otherwise the report
says "within noise". The comparison with the seed is the same: each
of the seed's findings is stated, then checked against this run's data and
marked as agreeing or not. The machine and versions are the ones recorded
in runs.json when the study ran, so running ``write_report`` again on the
same directory, anywhere, writes the same report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from selectorkv.config import DEFAULTS
from selectorkv.lab.harness.profile import ThreadProfile, thread_profiles
from selectorkv.lab.harness.spread import Agreement, Comparison, Spread
from selectorkv.lab.load.tools import SERVED_SHARE, served_rate
from selectorkv.lab.reports import markdown, plots
from selectorkv.lab.reports.markdown import Page
from selectorkv.lab.studies.calibration import bias_note
from selectorkv.lab.studies.node import MODES, first_unheld, held
from selectorkv.lab.studies.stalls import attribute

CATEGORIES = (
    "wait: select",
    "wait: queue",
    "wait: lock",
    "RocksDB",
    "h11",
    "socket I/O",
    "other Python",
)
SERVER_THREADS = ("SelectorThread", "PayloadThread")
PROFILE_FILES = {  # kind -> (link text, file suffix)
    **{
        kind: [("svg", ".svg"), ("speedscope", ".speedscope.json")]
        for kind in ("cpu", "wait", "gil")
    },
    "alloc": [("html", ".html"), ("offline html", "-offline.html"), ("stats", "-stats.json")],
}


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


class NodeReportData:
    """runs.json and the files beside it."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.study: dict[str, Any] = json.loads((out / "runs.json").read_text())
        self.settings: dict[str, Any] = self.study["settings"]
        self.runs: list[dict[str, Any]] = self.study["runs"]

    def workloads(self) -> list[str]:
        return list(self.study["capacity"])

    def select(self, workload: str, mode: str, phases: Iterable[str]) -> list[dict[str, Any]]:
        wanted = set(phases)
        chosen = [
            r
            for r in self.runs
            if r["workload"] == workload and r["mode"] == mode and r["phase"] in wanted
        ]
        return sorted(chosen, key=lambda r: r["rate"])

    def rounds(
        self, workload: str, mode: str, rate: float, phases: Iterable[str] = ("ladder",)
    ) -> list[dict[str, Any]]:
        """The runs of one mode at one rate, one per round."""
        return [run for run in self.select(workload, mode, phases) if run["rate"] == rate]

    def at(self, workload: str, mode: str, rate: float) -> dict[str, Any] | None:
        """The round with the median p99 at a ladder rate: the one run that
        stands for the rate where a single run is needed (its CPU counts)."""
        runs = sorted(self.rounds(workload, mode, rate), key=lambda r: p99_of(r))
        return runs[(len(runs) - 1) // 2] if runs else None

    def held_at(self, workload: str, mode: str, rate: float) -> bool:
        runs = self.rounds(workload, mode, rate, ("ladder", "search"))
        bound: float = self.settings["p99_bound_ms"]
        return bool(runs) and held([r["figures"] for r in runs], rate, bound)

    def latency(self, workload: str, mode: str, rate: float, key: str = "p99") -> Spread | None:
        runs = self.rounds(workload, mode, rate)
        return Spread.of(r["figures"]["latency_ms"][key] for r in runs) if runs else None

    def capacity_rounds(self, workload: str) -> dict[str, list[float]]:
        """Each round's capacity per mode (a study from before rounds had one)."""
        rounds: dict[str, list[float]] = self.study.get("capacity_rounds", {}).get(workload)
        return rounds or {m: [self.study["capacity"][workload][m]] for m in MODES}

    def ladder_rates(self, workload: str) -> list[float]:
        return sorted(
            {r["rate"] for r in self.runs if r["workload"] == workload and r["phase"] == "ladder"}
        )

    def half_rate(self, workload: str) -> float:
        """The ladder rate nearest half of capacity."""
        top: float = max(self.study["capacity"][workload].values())
        return min(self.ladder_rates(workload), key=lambda rate: abs(rate - top / 2))

    def first_break(self, workload: str) -> float | None:
        """The lowest ladder rate that some mode did not hold (by the median
        of its rounds)."""
        for rate in self.ladder_rates(workload):
            if not all(self.held_at(workload, m, rate) for m in MODES):
                return rate
        return None

    def first_break_of(self, workload: str, mode: str) -> float | None:
        """The lowest ladder rate this mode did not hold (by its ladder rounds)."""
        rates = self.ladder_rates(workload)
        by_rate = {
            rate: [r["figures"] for r in self.rounds(workload, mode, rate)] for rate in rates
        }
        return first_unheld(by_rate, self.settings["p99_bound_ms"])

    def stalls(self, run: dict[str, Any]) -> dict[str, Any] | None:
        """A ladder run's stall timeline, where the lab kept it."""
        path = self.out / f"{run['stem']}.stalls.json"
        return json.loads(path.read_text()) if path.exists() else None

    def threads(self, workload: str, mode: str, kind: str) -> list[ThreadProfile]:
        stem = self.study["profiles"].get(workload, {}).get(mode, {}).get(kind)
        path = self.out / f"{stem}.speedscope.json"
        return thread_profiles(path) if stem and path.exists() else []


def shares(profiles: list[ThreadProfile], kind: str) -> dict[str, float]:
    """Category -> share of the sampled time of the threads of one kind."""
    chosen = [p for p in profiles if p.kind == kind]
    total = sum(p.seconds for p in chosen)
    if not total:
        return {}
    return {c: sum(p.categories[c] for p in chosen) / total for c in CATEGORIES}


def cpu_seconds(run: dict[str, Any], tids: Iterable[str] | None = None) -> float:
    """The server's CPU seconds (user + system, from /proc) during a run,
    for all its threads or the given ones."""
    cpu: dict[str, list[float]] = run.get("cpu", {})
    chosen = cpu if tids is None else {t: cpu[t] for t in tids if t in cpu}
    return sum(sum(used) for used in chosen.values())


def cpu_per_request(run: dict[str, Any]) -> float:
    """The server's CPU microseconds per request during a run."""
    requests: int = run["figures"]["requests"]
    return 1e6 * cpu_seconds(run) / max(1, requests)


def p99_of(run: dict[str, Any]) -> float:
    p99: float = run["figures"]["latency_ms"]["p99"]
    return p99


def seconds_of(run: dict[str, Any]) -> float:
    seconds: float = run["figures"].get("elapsed_s") or run["figures"]["duration_s"]
    return seconds


def seed_verdict(agreement: Agreement, short_of_the_claim: bool = False) -> str:
    """How this report words one of the seed's findings against this run:
    agrees, differs, or cannot tell. ``short_of_the_claim``: the side the
    seed named is ahead, but by less than the seed said."""
    if agreement.agrees is None:
        return "within noise: cannot tell"
    if not agreement.agrees:
        text = "differs"
    else:
        text = "differs (faster, not much faster)" if short_of_the_claim else "agrees"
    return text + (" (one run, no spread)" if agreement.single_run else "")


def pct(value: float) -> str:
    return f"{100 * value:.0f}%"


CALIBRATION = "calibration"  # the study's calibration of its tool, beside report.md


def tool_note(out: Path, tool: str) -> str:
    """What the study's calibration measured of its load tool: the sentence
    that follows every latency table of a report in ``out``."""
    return bias_note(out / CALIBRATION, tool, f"{CALIBRATION}/calibration.md")


# Per mode, per server thread kind: category -> share (wall), or one share.
Shares = dict[str, dict[str, dict[str, float]]]
Shares2 = dict[str, dict[str, float]]

THREADS_NOTE = (
    "Where each server thread's time goes, from the wait profiles (py-spy `--idle`: "
    "wall-clock samples of every thread; the innermost frame decides). A wait includes "
    "taking the GIL back afterwards: a PayloadThread woken by a task waits for the GIL "
    "inside `queue.get()`. Then, as shares of the run's duration: the samples in which "
    "py-spy `--gil` saw the thread holding the GIL, and the thread's user and system "
    "CPU time counted by the kernel (/proc) during the ladder run at the same rate "
    "without a profiler. User time is Python running, so the GIL held; system time is "
    "the system calls, made with the GIL released."
)


class NodePage(Page):
    """The report so far, and what its last two sections gather from every
    workload: the observations and the seed table."""

    def __init__(self) -> None:
        super().__init__()
        self.observations: list[str] = []
        self.seed: list[tuple[str, str, str]] = []  # (seed's finding, here, verdict)


class Section(markdown.Section[NodeReportData, NodePage]):
    """A section of report.md: it also adds to the observations and the
    seed table that close the report."""

    def __init__(self, data: NodeReportData, page: NodePage, tool_note: str) -> None:
        super().__init__(data, page, tool_note)
        self.observations = page.observations
        self.seed = page.seed


class NodeReportWriter(Section):
    def __init__(self, data: NodeReportData) -> None:
        super().__init__(data, NodePage(), tool_note(data.out, data.study["tool"]))

    def write(self) -> str:
        d = self.data
        self.header()
        for workload in d.workloads():
            RateSection(d, self.page, self.tool_note).write(workload)
            PlotSection(d, self.page, self.tool_note).write(workload)
            StallSection(d, self.page, self.tool_note).write(workload)
            ModeComparison(d, self.page, self.tool_note).write(workload)
            ProfileSection(d, self.page, self.tool_note).write(workload)
        self.add("## Observations", "", *(f"- {o}" for o in self.observations), "")
        self.add(
            "## Compared with the seed",
            "",
            "The seed's findings (the course's stage 5 report), each checked against this run.",
            "",
        )
        self.table(["the seed found", "here", "verdict"], [list(row) for row in self.seed])
        return "\n".join(self.page.lines)

    def header(self) -> None:
        """The title, the machine and the method."""
        d = self.data
        s = d.settings
        minutes = (d.study["finished"] - d.study["started"]) / 60
        self.add(
            "# selectorkv lab report: sync against async",
            "",
            f"Made by `selectorkv lab{' --quick' if s['quick'] else ''}` on "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(d.study['started']))}, "
            f"in {minutes:.1f} minutes. Every figure below was measured in that run; every "
            "observation is computed from the data files beside this report.",
            "",
            "## Machine, versions, tool",
            "",
            *d.study["machine"],
            d.study["versions"],
            f"- Load tool: **{d.study['tool']}** for every figure (capacity and constant "
            "rates); latency counted from each request's due time.",
            f"- {self.tool_note}",
            f"- Server: defaults ({DEFAULTS.selectors} SelectorThread, {DEFAULTS.workers} "
            f"PayloadThread in async mode, queue {DEFAULTS.queue_size})"
            + "".join(f", `{flag}`" for flag in d.study.get("server_flags", []))
            + ", Python threads on the "
            f"highest-numbered CPU; the load tool, py-spy and the metrics sampler on CPUs "
            f"{d.study['load_cpus']}.",
            "",
            "## Method",
            "",
            f"- Database filled to {int(s['size']) / 2**20:.0f} MiB (every key of the 3-letter "
            "key space, then filler); each server starts on a fresh copy.",
            f"- {s['connections']} keep-alive connections; ids random 3-letter strings, bodies "
            "300 random letters (as the seed's put.lua/get.lua).",
            f"- Capacity: closed loop for {s['capacity_seconds']:g} s. Ladder: constant rates at "
            f"{', '.join(f'{f:g}' for f in s['ladder'])} of the larger capacity, "
            f"{s['run_seconds']:g} s each, the same rates for both modes.",
            f"- A rate is *held* when at least {SERVED_SHARE:.0%} of it was served (answers "
            f"below 500), p99 is at most {s['p99_bound_ms']:g} ms, and no request failed. The "
            "breaking point "
            f"is the highest rate held; the step search halves the interval above the "
            f"highest held ladder rate {s['refine']} time(s).",
            f"- Profiles at half of capacity for {s['profile_seconds']:g} s: py-spy CPU, waits "
            "(`--idle`), GIL (`--gil`), at 100 Hz (each sample stops the server briefly); "
            "allocations with memray "
            "(`--trace-python-allocators`) at a tenth of capacity (memray slows the server).",
            "",
        )


class RateSection(Section):
    """A workload's capacity, its constant-rate runs and its breaking point."""

    def write(self, workload: str) -> None:
        self.capacity(workload)
        self.constant_rates(workload)
        self.breaking_point(workload)

    def capacity(self, workload: str) -> None:
        d = self.data
        name = workload.upper()
        rounds = d.capacity_rounds(workload)
        cap = {m: Spread.of(rounds[m]) for m in MODES}
        # The ratio within each round: both modes measured minutes apart.
        ratios = Spread.of(a / s for s, a in zip(rounds["sync"], rounds["async"], strict=False))
        self.add(f"## {name}", "", "### Capacity (closed loop)", "")
        self.table(
            ["rounds", "sync req/s", "async req/s", "async / sync, per round"],
            [
                [
                    str(cap["sync"].count),
                    cap["sync"].format(),
                    cap["async"].format(),
                    ratios.format(".2f", "x"),
                ]
            ],
        )
        self.add(f"Closed loop, measured with **{d.study['tool']}** (no latency).", "")
        self.observations.append(
            f"{name} capacity: sync {cap['sync'].format()} req/s, async "
            f"{cap['async'].format()} req/s (async/sync {ratios.format('.2f', 'x')}): "
            + Comparison.of(
                "sync", cap["sync"], "async", cap["async"], lower_is_better=False
            ).text()
            + "."
        )

    def constant_rates(self, workload: str) -> None:
        d = self.data
        self.add("### Constant-rate runs", "")
        if len(d.capacity_rounds(workload)["sync"]) > 1:
            self.add(
                "Each row is one rate in one mode, measured in every round: the median, and "
                "in brackets the min-max of the rounds; *errors* counts all rounds together. "
                "*held* is the verdict on the medians.",
                "",
            )
        rows = []
        for rate in sorted(
            {
                r["rate"]
                for r in d.runs
                if r["workload"] == workload and r["phase"] in ("ladder", "search")
            }
        ):
            for mode in MODES:
                for phase in ("ladder", "search"):
                    runs = d.rounds(workload, mode, rate, (phase,))
                    if runs:
                        rows.append(self.rate_row(runs))
        self.table(
            [
                "rate",
                "mode",
                "served req/s",
                "p50",
                "p90",
                "p99",
                "p99.9",
                "max",
                "503",
                "errors",
                "held",
                "server CPU",
                "CPU µs/req",
                "data",
            ],
            rows,
        )
        self.add(self.tool_note, "")
        if any(row[0].endswith("*") for row in rows):
            self.add(
                "\\* the load tool fell behind its own schedule with connections free (its "
                "own loop was late, not the server); those latencies include its delay.",
                "",
            )

    def breaking_point(self, workload: str) -> None:
        d = self.data
        bp = d.study["breaking_point"][workload]
        lowest = min(d.ladder_rates(workload))
        self.add("### Breaking point", "")
        self.table(
            ["mode", f"highest rate held (p99 <= {d.settings['p99_bound_ms']:g} ms)"],
            [[m, f"{bp[m]:,.0f} req/s" if bp[m] else f"none (below {lowest:,.0f})"] for m in MODES],
        )
        self.add(self.tool_note, "")

    def rate_row(self, runs: list[dict[str, Any]]) -> list[str]:
        """One rate in one mode: the median of its rounds, with min-max for
        the figures the verdict rests on (served rate, p50, p99)."""
        first = runs[0]
        rate = first["rate"]
        figures = [r["figures"] for r in runs]

        def spread(key: str) -> Spread:
            return Spread.of(f["latency_ms"][key] for f in figures)

        tool_late = any(
            f.get("behind_schedule")
            and 2 * f.get("late_with_free_connection", 0) > f.get("late_requests", 0)
            for f in figures
        )
        links = " ".join(
            f"[json]({r['stem']}.json) [hgrm]({r['stem']}.hgrm)" if len(runs) == 1
            else f"r{r['round'] + 1}: [json]({r['stem']}.json) [hgrm]({r['stem']}.hgrm)"
            for r in sorted(runs, key=lambda r: r.get("round", 0))
        )  # fmt: skip
        verdict = held(figures, rate, self.data.settings["p99_bound_ms"])
        return [
            f"{rate:,.0f}{' (search)' if first['phase'] == 'search' else ''}"
            + ("*" if tool_late else ""),
            first["mode"],
            Spread.of(served_rate(f) for f in figures).format(),
            spread("p50").format(".2f"),
            f"{spread('p90').median:.2f}",
            spread("p99").format(".2f"),
            f"{spread('p99.9').median:.2f}",
            f"{spread('max').median:.2f}",
            f"{Spread.of(f['status_counts'].get('503', 0) for f in figures).median:.0f}",
            str(sum(f["errors"] for f in figures)),
            "yes" if verdict else "**no**",
            f"{Spread.of(100 * cpu_seconds(r) / seconds_of(r) for r in runs).median:.0f}%",
            f"{Spread.of(cpu_per_request(r) for r in runs).median:.0f}",
            links,
        ]


class PlotSection(Section):
    """A workload's plots: latency by percentile, p99 against throughput,
    the async queue over time."""

    def write(self, workload: str) -> None:
        self.add("### Plots", "")
        rates = self.latency(workload)
        self.throughput(workload)
        self.queue(workload, rates)

    def latency(self, workload: str) -> list[float]:
        """Latency by percentile at half of capacity, the first rate that
        broke and the highest; the rates it drew."""
        d = self.data
        name = workload.upper()
        rates = [d.half_rate(workload)]
        for rate in (d.first_break(workload), max(d.ladder_rates(workload))):
            if rate and rate not in rates:
                rates.append(rate)
        for rate in rates:
            curves = {}
            for mode in MODES:
                runs = d.rounds(workload, mode, rate)
                p99 = d.latency(workload, mode, rate)
                if runs and p99:
                    curves[f"{mode} ({p99.format('.1f')} ms p99)"] = [
                        plots.read_hgrm(d.out / f"{run['stem']}.hgrm") for run in runs
                    ]
            png = f"latency-{workload}-{rate:.0f}.png"
            plots.latency_by_percentile(
                curves,
                f"{name} at {rate:,.0f} req/s, {d.settings['connections']} connections",
                d.out / png,
            )
            self.add(f"![{name} latency by percentile at {rate:,.0f} req/s]({png})", "")
        return rates

    def throughput(self, workload: str) -> None:
        d = self.data
        name = workload.upper()
        points: dict[str, list[tuple[Spread, Spread]]] = {}
        for mode in MODES:
            points[mode] = []
            for rate in sorted({r["rate"] for r in d.select(workload, mode, ("ladder", "search"))}):
                runs = d.rounds(workload, mode, rate, ("ladder", "search"))
                points[mode].append(
                    (Spread.of(served_rate(r["figures"]) for r in runs),
                     Spread.of(p99_of(r) for r in runs))
                )  # fmt: skip
        png = f"throughput-p99-{workload}.png"
        plots.throughput_against_p99(
            points, d.settings["p99_bound_ms"], f"{name}: p99 against throughput", d.out / png
        )
        self.add(f"![{name} throughput against p99]({png})", "")

    def queue(self, workload: str, rates: list[float]) -> None:
        d = self.data
        name = workload.upper()
        series = {  # the first round's, at the rates of the latency plots
            f"{r['rate']:,.0f} req/s": r["queue"]
            for r in d.select(workload, "async", ("ladder",))
            if r["queue"] and r["rate"] in rates and r.get("round", 0) == 0
        }
        png = f"queue-depth-{workload}.png"
        plots.queue_depth(
            series,
            DEFAULTS.queue_size,
            f"{name}, async: PayloadThread queue over time",
            d.out / png,
        )
        self.add(f"![{name} queue depth over time, async]({png})", "")


class StallSection(Section):
    """What held the server up at each mode's first rate that broke: the
    stall timeline of its median round, each kind of event's share of the
    slow buckets in every round, and group commit's batches, closed loop
    against constant rates."""

    def write(self, workload: str) -> None:
        self.add("### Stalls at the first rate that breaks", "")
        self.add(
            "Per 10 ms of due time, the p99 of the requests due then, beside what the server "
            "recorded (collections, SelectorThread rounds of 1 ms or more), what the kernel "
            "counted (its Python threads waiting on a run queue, RocksDB's threads running, "
            "a CPU stolen by the hypervisor), RocksDB's flushes, compactions and write stalls "
            "(its LOG), and the load generator's own lateness (docs/lab.md, \"The stall "
            "timeline\"). A kind's share is the share of the buckets over the bound whose "
            "slowest requests it overlapped; a bucket may have several kinds, or none.",
            "",
        )
        for mode in MODES:
            self.mode(workload, mode)
        self.cost(workload)

    def mode(self, workload: str, mode: str) -> None:
        d = self.data
        bound: float = d.settings["p99_bound_ms"]
        rate = d.first_break_of(workload, mode)
        if rate is None:
            self.add(f"{mode}: every ladder rate held; nothing to draw.", "")
            return
        kept = {
            run["stem"]: data
            for run in d.rounds(workload, mode, rate)
            if (data := d.stalls(run)) is not None
        }
        median = d.at(workload, mode, rate)
        drawn = kept.get(median["stem"]) if median else None
        if median is None or drawn is None:
            self.add(
                f"{mode} at {rate:,.0f} req/s: no timeline (only `selectorkv load` keeps one).", ""
            )
            return
        name = workload.upper()
        png = f"stalls-{workload}-{mode}.png"
        plots.stall_timeline(
            drawn, bound,
            f"{name} {mode} at {rate:,.0f} req/s, round {median['round'] + 1}: "
            f"p99 {p99_of(median):.1f} ms",
            d.out / png,
        )  # fmt: skip
        self.add(
            f"**{mode}**, {rate:,.0f} req/s, the round with the median p99:", "",
            f"![{name} {mode} stall timeline at {rate:,.0f} req/s]({png})", "",
        )  # fmt: skip
        found = [attribute(data, bound) for data in kept.values()]
        kinds = sorted({kind for one in found for kind in one["share_by_kind"]})

        def share(kind: str) -> str:
            return Spread.of(100 * one["share_by_kind"].get(kind, 0.0) for one in found).format(
                ".0f", "%"
            )

        rows = [["slow buckets", Spread.of(one["slow_buckets"] for one in found).format()]]
        rows += [[kind, share(kind)] for kind in kinds]
        rows.append(
            ["no event", Spread.of(100 * one["unexplained"] for one in found).format(".0f", "%")]
        )
        self.table([f"{mode}, {rate:,.0f} req/s, {len(found)} round(s)", "share"], rows)
        # A long round is what any stall looks like from inside the server:
        # the observation names the cause that overlapped the most besides it.
        causes = [kind for kind in kinds if kind != "round"]
        worst = max(causes, key=lambda kind: Spread.of(
            one["share_by_kind"].get(kind, 0.0) for one in found).median, default=None)  # fmt: skip
        if worst is not None:
            self.observations.append(
                f"{name} {mode} first broke at {rate:,.0f} req/s; of its buckets over "
                f'{bound:g} ms, "{worst}" overlapped the most besides long rounds '
                f"({share(worst)})."
            )

    def cost(self, workload: str) -> None:
        """The server's cost per request in the closed loop against each
        constant rate, and the breaking point against both references."""
        d = self.data
        closed_cpu = d.study.get("capacity_cpu_us", {}).get(workload, {})
        closed_batch = d.study.get("capacity_batch", {}).get(workload, {})
        if not any(closed_cpu.values()):
            return  # a study from before the capacity runs' cost was kept
        writes = any(closed_batch.values())
        self.add(
            "**Closed loop against constant rates.** The server's CPU per request (all its "
            "threads, from /proc), the load generator's own CPU (a share of one CPU)"
            + (" and group commit's writes per batch" if writes else "")
            + ": with 64 connections always waiting, each SelectorThread round serves many "
            "requests"
            + (" and each commit stores many writes" if writes else "")
            + "; at a constant rate the rounds carry fewer, and each request pays more of "
            "their fixed cost.",
            "",
        )

        def spread(values: list[float], spec: str, unit: str = "") -> str:
            return Spread.of(values).format(spec, unit) if values else "-"

        def generator(runs: list[dict[str, Any]]) -> str:
            return spread([
                100 * r["figures"]["generator_cpu_s"] / r["figures"]["elapsed_s"]
                for r in runs if "generator_cpu_s" in r["figures"]
            ], ".0f", "%")  # fmt: skip

        rows = []
        closed = ["closed loop"]
        for mode in MODES:
            closed += [spread(closed_cpu.get(mode, []), ",.0f"), "-"]
            closed += [spread(closed_batch.get(mode, []), ".1f")] if writes else []
        rows.append(closed)
        for rate in d.ladder_rates(workload):
            row = [f"{rate:,.0f} req/s"]
            for mode in MODES:
                runs = d.rounds(workload, mode, rate)
                row += [spread([cpu_per_request(r) for r in runs], ",.0f"), generator(runs)]
                if writes:
                    row.append(spread([r["commit_batch"] for r in runs if r.get("commit_batch")],
                                      ".1f"))  # fmt: skip
            rows.append(row)
        header = ["load"]
        for mode in MODES:
            header += [f"{mode} CPU µs/req", f"{mode} load generator's CPU"]
            header += [f"{mode} writes/batch"] if writes else []
        self.table(header, rows)
        for mode in MODES:
            self.references(workload, mode)
        self.add("")

    def references(self, workload: str, mode: str) -> None:
        """The breaking point as a share of the closed-loop capacity and of
        the highest constant rate the mode served at all."""
        d = self.data
        capacity = Spread.of(d.capacity_rounds(workload)[mode]).median
        rates = sorted({r["rate"] for r in d.select(workload, mode, ("ladder", "search"))})
        served = [
            rate for rate in rates
            if Spread.of(served_rate(r["figures"])
                         for r in d.rounds(workload, mode, rate, ("ladder", "search"))).median
            >= SERVED_SHARE * rate
        ]  # fmt: skip
        point = d.study["breaking_point"][workload][mode]
        if not served or not point:
            return
        text = (
            f"{workload.upper()} {mode}: breaking point {point:,.0f} req/s, "
            f"{point / capacity:.0%} of the closed-loop capacity ({capacity:,.0f}) and "
            f"{point / max(served):.0%} of the highest constant rate served at all "
            f"({max(served):,.0f}, p99 aside)"
        )
        self.add(f"- {text}.")
        self.observations.append(text + ".")


class ModeComparison(Section):
    """The modes against each other, and against the seed: at half of
    capacity, at the breaking point, in CPU per request and in the queue."""

    def write(self, workload: str) -> None:
        self.half_capacity(workload)
        reached = self.breaking_points(workload)
        self.cpu_per_request(workload, reached)
        self.put_at_the_break(workload, reached)
        self.queue(workload)

    def half_capacity(self, workload: str) -> None:
        d = self.data
        name = workload.upper()
        half = d.half_rate(workload)
        s99, a99 = d.latency(workload, "sync", half), d.latency(workload, "async", half)
        s50, a50 = (
            d.latency(workload, "sync", half, "p50"),
            d.latency(workload, "async", half, "p50"),
        )
        if s99 and a99 and s50 and a50:
            comparison = Comparison.of("sync", s99, "async", a99, lower_is_better=True)
            self.observations.append(
                f"{name} at {half:,.0f} req/s (about half of capacity): p50 sync "
                f"{s50.format('.2f')} ms, async {a50.format('.2f')} ms; p99 sync "
                f"{s99.format('.2f')} ms, async {a99.format('.2f')} ms: on p99, "
                f"{comparison.text()}; the "
                f"medians differ by {ratio(*sorted((s99.median, a99.median), reverse=True))}."
            )
            seed_mode = "sync" if workload == "put" else "async"
            self.seed.append(
                (
                    f"{name} at a moderate rate: {seed_mode} is faster"
                    + (
                        " (async slower than sync)"
                        if workload == "put"
                        else " (the other way round)"
                    ),
                    f"at {half:,.0f} req/s p99 sync {s99.format('.2f')} ms, async "
                    f"{a99.format('.2f')} ms",
                    seed_verdict(Agreement.of(comparison, seed_mode)),
                )
            )

    def breaking_points(self, workload: str) -> dict[str, float]:
        """The breaking points, and how they compare; each mode's (0: none)."""
        d = self.data
        name = workload.upper()
        bp = d.study["breaking_point"][workload]
        reached = {m: bp[m] or 0.0 for m in MODES}
        ahead = max(MODES, key=lambda m: reached[m])
        behind = MODES[1 - MODES.index(ahead)]
        if reached["sync"] != reached["async"]:
            lowest = min(d.ladder_rates(workload))
            text = {
                m: f"{reached[m]:,.0f} req/s" if reached[m] else f"below {lowest:,.0f} req/s"
                for m in MODES
            }
            times = (
                ratio(max(reached.values()), min(reached.values())) if min(reached.values()) else ""
            )
            self.observations.append(
                f"{name} breaking point: sync {text['sync']}, async {text['async']}: {ahead} "
                f"holds {times + ' ' if times else ''}more. "
                + self.breaking_point_noise(workload, ahead, behind)
            )
        else:
            self.observations.append(
                f"{name} breaking point: both modes held up to {reached['sync']:,.0f} req/s."
            )
        return reached

    def cpu_per_request(self, workload: str, reached: dict[str, float]) -> None:
        d = self.data
        name = workload.upper()
        cap_of = d.study["capacity"][workload]
        for mode in MODES:
            # Per rate, the median of the rounds: the served rate and the
            # server's CPU per request.
            per: dict[float, float] = {}
            for rate in sorted({r["rate"] for r in d.select(workload, mode, ("ladder", "search"))}):
                runs = [
                    r for r in d.rounds(workload, mode, rate, ("ladder", "search")) if r.get("cpu")
                ]
                if (
                    runs
                    and Spread.of(served_rate(r["figures"]) for r in runs).median
                    >= SERVED_SHARE * rate
                ):
                    per[rate] = Spread.of(cpu_per_request(r) for r in runs).median
            if len(per) >= 2 and reached[mode]:
                low, high = min(per), max(per)
                self.observations.append(
                    f"{name} {mode}: the breaking point is {pct(reached[mode] / cap_of[mode])} of "
                    f"the closed-loop capacity. Server CPU per request (median of the rounds): "
                    f"{per[low]:.0f} µs at {low:,.0f} req/s, {per[high]:.0f} µs at {high:,.0f} "
                    "req/s (the highest rate fully served)."
                )

    def put_at_the_break(self, workload: str, reached: dict[str, float]) -> None:
        d = self.data
        broken = d.first_break(workload)
        if workload == "put" and broken:
            s99, a99 = d.latency(workload, "sync", broken), d.latency(workload, "async", broken)
            if s99 and a99:
                # "Much faster": half the p99 or less, in every round's range.
                much = a99.high < s99.low / 2
                self.seed.append(
                    (
                        "PUT at the breaking point: async much faster than sync",
                        f"at {broken:,.0f} req/s (first rate a mode did not hold) p99 sync "
                        f"{s99.format('.1f')} ms, async {a99.format('.1f')} ms; breaking points "
                        f"sync {reached['sync']:,.0f}, async {reached['async']:,.0f} req/s",
                        "agrees" if much else seed_verdict(Agreement.of(
                            Comparison.of("sync", s99, "async", a99, lower_is_better=True), "async"
                        ), short_of_the_claim=True),
                    )
                )  # fmt: skip

    def queue(self, workload: str) -> None:
        d = self.data
        name = workload.upper()
        queues = [
            (
                r["rate"],
                max((q for _, q in r["queue"]), default=0.0),
                r["figures"]["status_counts"].get("503", 0),
            )
            for r in d.select(workload, "async", ("ladder",))
        ]
        if queues:
            deepest = max(queues, key=lambda q: q[1])
            shed = sum(q[2] for q in queues)
            connections = d.settings["connections"]
            self.observations.append(
                f"{name} async queue: deepest {deepest[1]:.0f} requests (at {deepest[0]:,.0f} "
                f"req/s, bound {DEFAULTS.queue_size}); {shed} requests shed with 503 over "
                "the ladder's rounds."
                + (
                    f" The queue cannot outgrow the {connections} connections, each with one "
                    "request in flight: past capacity, requests wait in the load tool for a "
                    "free connection, and that wait is in their latency."
                    if deepest[1] <= connections < DEFAULTS.queue_size
                    else ""
                )
            )

    def breaking_point_noise(self, workload: str, ahead: str, behind: str) -> str:
        """Whether the rounds carry the difference in breaking points: at
        the highest ladder rate that one mode held and the other did not,
        do their p99 ranges overlap?"""
        d = self.data
        split = [
            rate
            for rate in d.ladder_rates(workload)
            if d.held_at(workload, ahead, rate) and not d.held_at(workload, behind, rate)
        ]
        if not split:
            return (
                "The ladder's rates were held or not alike: the difference comes from the "
                "step search alone."
            )
        rate = max(split)
        first, second = d.latency(workload, ahead, rate), d.latency(workload, behind, rate)
        assert first and second
        if first.count < 2:
            return f"At {rate:,.0f} req/s: one run each, so no spread to judge it by."
        if first.overlaps(second):
            return (
                f"But at {rate:,.0f} req/s the p99 ranges overlap ({ahead} "
                f"{first.format('.1f')} ms, {behind} {second.format('.1f')} ms): within noise, "
                "near the bound."
            )
        return (
            f"At {rate:,.0f} req/s the p99 ranges do not overlap ({ahead} "
            f"{first.format('.1f')} ms, {behind} {second.format('.1f')} ms)."
        )


class ProfileSection(Section):
    """A workload's profiles: links, what profiling cost, where each server
    thread's time goes, and the allocation sites."""

    def write(self, workload: str) -> None:
        self.links(workload)
        self.profiling_cost(workload)
        self.add(THREADS_NOTE, "")
        name = workload.upper()
        wall, gil, user, cpu = self.thread_table(workload)
        self.thread_observations(name, wall, gil, user, cpu)
        self.alloc_section(name, workload)

    def links(self, workload: str) -> None:
        """The flame graphs of each mode, where they are there."""
        d = self.data
        self.add("### Profiles", "")
        rows = []
        for mode in MODES:
            stems = dict(d.study["profiles"].get(workload, {}).get(mode, {}))
            stems["alloc"] = f"profiles/{workload}-{mode}-alloc"
            links = []
            for kind, stem in stems.items():
                # Only what is there: a copy of the report may leave the
                # large offline flame graphs out.
                files = [(label, f"{stem}{suffix}") for label, suffix in PROFILE_FILES[kind]]
                present = [f"[{label}]({path})" for label, path in files if (d.out / path).exists()]
                links.append(f"{kind}: {', '.join(present) or 'missing'}")
            rows.append([mode, "; ".join(links)])
        self.table(["mode", "flame graphs"], rows)

    def profiling_cost(self, workload: str) -> None:
        """The load under each profiler, beside the ladder run at the same
        rate without one: what the profiles cost the server."""
        d = self.data
        rows = []
        for mode in MODES:
            for run in d.select(workload, mode, ("profile-cpu", "profile-wait", "profile-gil")):
                lat = run["figures"]["latency_ms"]
                plain = d.at(workload, mode, run["rate"])
                base = plain["figures"]["latency_ms"] if plain else None
                rows.append(
                    [
                        mode,
                        run["phase"].removeprefix("profile-"),
                        f"{run['rate']:,.0f}",
                        f"{lat['p50']:.2f} / {lat['p99']:.2f}",
                        f"{base['p50']:.2f} / {base['p99']:.2f}" if base else "n/a",
                    ]
                )
        if rows:
            self.add(
                "What profiling cost: latency (ms) under py-spy (100 Hz, each sample "
                "stopping the server) against the ladder run at the same rate without it:",
                "",
            )
            self.table(["mode", "profile", "rate", "p50 / p99 profiled", "p50 / p99 plain"], rows)

    def thread_table(self, workload: str) -> tuple[Shares, Shares2, Shares2, Shares2]:
        """Each server thread's time by category (wall), and as shares of the
        run: GIL held (py-spy), user and user + system CPU (/proc)."""
        d = self.data
        rows = []
        wall: dict[str, dict[str, dict[str, float]]] = {}
        gil: dict[str, dict[str, float]] = {}
        user: dict[str, dict[str, float]] = {}
        cpu: dict[str, dict[str, float]] = {}
        seconds = max(1, round(d.settings["profile_seconds"]))  # py-spy's -d
        plain_rate = d.half_rate(workload)
        for mode in MODES:
            profiles = d.threads(workload, mode, "wait")
            holding = d.threads(workload, mode, "gil")
            plain = d.at(workload, mode, plain_rate)
            wall[mode], gil[mode], user[mode], cpu[mode] = {}, {}, {}, {}
            for kind in SERVER_THREADS:
                share = shares(profiles, kind)
                if not share:
                    continue
                wall[mode][kind] = share
                gil[mode][kind] = sum(p.seconds for p in holding if p.kind == kind) / seconds
                tids = [p.tid for p in profiles if p.kind == kind]
                used = [0.0, 0.0]
                if plain:
                    for tid in tids:
                        for i, value in enumerate(plain.get("cpu", {}).get(tid, [0.0, 0.0])):
                            used[i] += value / seconds_of(plain)
                user[mode][kind] = used[0]
                cpu[mode][kind] = used[0] + used[1]
                rows.append([mode, kind, *(pct(share[c]) for c in CATEGORIES),
                             pct(gil[mode][kind]), pct(used[0]), pct(used[1])])  # fmt: skip
        self.table(["mode", "thread", *CATEGORIES, "GIL (py-spy)", "user CPU", "system CPU"], rows)
        return wall, gil, user, cpu

    def thread_observations(
        self, name: str, wall: Shares, gil: Shares2, user: Shares2, cpu: Shares2
    ) -> None:
        self.threads_against_the_seed(name, wall)
        self.samples_against_the_kernel(name, wall, cpu)
        self.gil_against_user_time(name, gil, user)

    def threads_against_the_seed(self, name: str, wall: Shares) -> None:
        sync_sel = wall.get("sync", {}).get("SelectorThread")
        a_sel = wall.get("async", {}).get("SelectorThread")
        a_pay = wall.get("async", {}).get("PayloadThread")
        if sync_sel and a_sel and a_pay:
            self.observations.append(
                f"{name} threads: in sync mode the SelectorThread spends "
                f"{pct(sync_sel['RocksDB'])} of its time in RocksDB and {pct(sync_sel['h11'])} in "
                f"h11; in async mode the SelectorThread spends {pct(a_sel['RocksDB'])} in RocksDB "
                f"and {pct(a_sel['h11'])} in h11, the PayloadThread {pct(a_pay['RocksDB'])} in "
                f"RocksDB, {pct(a_pay['h11'])} in h11 (writing responses) and "
                f"{pct(a_pay['wait: queue'])} waiting for a task."
            )
            moved = a_pay["RocksDB"] > a_sel["RocksDB"]
            self.seed.append(
                (
                    f"CPU profiles ({name}): in async mode the PayloadThread executes the tasks "
                    "and sends the responses",
                    f"async: RocksDB {pct(a_pay['RocksDB'])} of the PayloadThread's time, "
                    f"{pct(a_sel['RocksDB'])} of the SelectorThread's",
                    "agrees" if moved else "differs",
                )
            )
            lock = max(w.get("wait: lock", 0.0) for mode in wall.values() for w in mode.values())
            self.observations.append(
                f"{name} locks: no server thread spent more than {pct(lock)} of its time "
                f"waiting to acquire a lock; the async SelectorThread waited "
                f"{pct(a_sel['wait: lock'])} (the hand-off is a lock-free SimpleQueue put, "
                "under a short admission lock)."
            )
            self.seed.append(
                (
                    f"Lock profiles ({name}): handing a task to the pool almost never blocks",
                    f"async SelectorThread waiting on a lock: {pct(a_sel['wait: lock'])}",
                    "agrees" if a_sel["wait: lock"] < 0.05 else "differs",
                )
            )

    def samples_against_the_kernel(self, name: str, wall: Shares, cpu: Shares2) -> None:
        for mode, kinds in wall.items():
            for kind, share in kinds.items():
                working = 1 - sum(share[c] for c in share if c.startswith("wait"))
                counted = cpu[mode].get(kind, 0.0)
                if counted > 2 * working:
                    self.observations.append(
                        f"{name} {mode} {kind}: py-spy found it outside a wait in "
                        f"{pct(working)} of its samples, but the kernel counted {pct(counted)} "
                        "CPU for it: py-spy's samples of this thread land mostly in the waits. "
                        "Read its flame graph for proportions between its own frames, and the "
                        "kernel's figures for how much it works."
                    )

    def gil_against_user_time(self, name: str, gil: Shares2, user: Shares2) -> None:
        for mode, holding in gil.items():
            if not holding:
                continue
            sampled, counted = sum(holding.values()), sum(user[mode].values())
            verdict = (
                "py-spy's GIL samples undercount it"
                if sampled < 0.8 * counted
                else "py-spy's GIL samples agree with it"
                if sampled <= 1.25 * counted
                else "py-spy's GIL samples overcount it"
            )
            self.observations.append(
                f"{name} {mode} GIL: the server threads' user CPU time, which is Python "
                f"running under the GIL, adds up to {pct(counted)} of the run "
                f"({', '.join(f'{t} {pct(v)}' for t, v in sorted(user[mode].items()))}); "
                f"py-spy --gil saw the GIL held in {pct(sampled)} of its samples: {verdict}. "
                "Neither can pass 100%: one GIL, one thread running Python at a time."
            )

    def alloc_section(self, name: str, workload: str) -> None:
        sites = self.data.study["alloc_sites"].get(workload, {})
        if not sites:
            return
        self.add("Top allocation sites by bytes allocated (memray stats):", "")
        rows = []
        for mode in MODES:
            for site in sites.get(mode, [])[:5]:
                where = site["site"].replace("<stack trace unavailable>", "(no Python stack)")
                rows.append(
                    [mode, f"`{where}`", f"{site['bytes'] / 2**20:,.1f} MiB", pct(site["share"])]
                )
        self.table(["mode", "site", "bytes", "share"], rows)
        tops = {mode: [s["site"] for s in sites.get(mode, [])[:5]] for mode in MODES}
        common = set(tops["sync"]) & set(tops["async"])
        if tops["sync"] and tops["async"]:
            first = sites["sync"][0]
            self.observations.append(
                f"{name} allocations: the largest site in sync mode is `{first['site']}` "
                f"({pct(first['share'])} of bytes); {len(common)} of the top 5 sites are the same "
                "in both modes."
            )
            self.seed.append(
                (
                    f"Allocation profiles ({name}): the same allocations, on other threads",
                    f"{len(common)} of the top 5 allocation sites shared by the modes",
                    "agrees" if len(common) >= 3 else "differs",
                )
            )


def write_report(out: Path) -> Path:
    """Plots and report.md in ``out`` (which holds runs.json)."""
    text = NodeReportWriter(NodeReportData(out)).write()
    path = out / "report.md"
    path.write_text(text + "\n")
    return path
