"""calibration.md and its plot, from calibration.json alone.

The calibration (lab/studies/calibration.py) keeps every run; this module turns
them into the tables a reader needs to trust, or discount, the study's
latencies: the floor, each tool's bias at each point, which tool is least
biased, and a plot of bias against rate.
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt

from selectorkv.lab.harness.spread import Spread
from selectorkv.lab.load.tools import FACTORIES
from selectorkv.lab.studies.calibration import PERCENTILES, Calibration

PLOT = "calibration-bias.png"


def _ms(spread: Spread, sign: bool = False) -> str:
    spec = "+.3f" if sign else ".3f"
    text = f"{spread.median:{spec}}"
    if spread.count > 1:
        text += f" ({spread.low:{spec}} to {spread.high:{spec}})"
    return text


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def plot_bias(calibration: Calibration, out: Path) -> None:
    """Bias against rate, one panel per percentile (p50, p99), one line per
    tool and service time: the median of the rounds, their range shaded."""
    figure, panels = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    styles = ["-", "--", ":", "-."]
    colours = {"selectorkv": "tab:green", "wrk": "tab:blue", "wrk2": "tab:red"}
    for panel, percentile in zip(panels, ("p50", "p99"), strict=True):
        for tool in calibration.tools:
            points = calibration.points(tool)
            services = sorted({service for service, _ in points})
            for style, service in zip(styles, services, strict=False):
                rates = sorted(rate for s, rate in points if s == service)
                spreads = [
                    Spread.of(run.bias_ms[percentile] for run in points[(service, rate)])
                    for rate in rates
                ]
                colour = colours.get(tool, "tab:gray")
                panel.plot(
                    rates, [s.median for s in spreads], style, marker="o", color=colour,
                    label=f"{tool}, {service:g} ms",
                )  # fmt: skip
                panel.fill_between(
                    rates, [s.low for s in spreads], [s.high for s in spreads],
                    color=colour, alpha=0.12,
                )  # fmt: skip
        panel.axhline(0, color="black", linewidth=0.8)
        panel.set_xscale("log")
        panel.set_xlabel("rate (req/s)")
        panel.set_ylabel(f"{percentile} measured - true (ms)")
        panel.set_title(f"bias at {percentile}")
        panel.grid(True, alpha=0.3)
    panels[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / PLOT, dpi=110)
    plt.close(figure)


def write_report(out: Path) -> Path:
    """calibration.md and its plot in ``out`` (which holds calibration.json)."""
    c = Calibration.load(out)
    lines = [*method_lines(c), *floor_lines(c), *bias_lines(c), *point_lines(c)]
    plot_bias(c, out)
    path = out / "calibration.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def method_lines(c: Calibration) -> list[str]:
    """The title, the machine and the method."""
    s = c.settings
    return [
        "# selectorkv lab: the instruments' calibration",
        "",
        f"Made by `selectorkv lab --calibrate` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(c.started))}, in "
        f"{(c.finished - c.started) / 60:.1f} minutes. Every figure is computed from "
        "calibration.json and the data files beside this page.",
        "",
        *c.machine,
        *(f"- {tool}: {version}" for tool, version in c.versions.items()),
        "",
        "## Method",
        "",
        "Each load tool runs against the known-latency target (lab/calibration_target.py): a "
        "server that answers every request after a fixed service time and measures, on its own "
        "side, each request's *hold*, from the kernel's receive timestamp to the moment the "
        "answer is handed back to the kernel. The truth of a run at percentile p is "
        "*floor + hold(p)*; the floor is the median of a paced one-connection ping loop's "
        "round trip minus the hold each answer reports. *bias = measured - truth*; a bias "
        "within the floor's own spread (below) is noise.",
        "",
        f"- Workload `{s['workload']}`, {s['connections']} connections, "
        f"{s['run_seconds']:g} s per run at "
        f"{', '.join(f'{r:,.0f}' for r in s['rates'])} req/s, service times "
        f"{', '.join(f'{v:g}' for v in s['services_ms'])} ms; {s['repeat']} round(s), the "
        "tools taking turns in each. The targets run on the server CPU, the tools and the "
        "ping loop on the others.",
        *(
            f"- {tool}: every run lengthened by its {seconds:g} s warm-up, which it does not "
            "measure."
            for tool, seconds in c.warmups.items()
            if seconds
        ),
        "",
    ]


def floor_lines(c: Calibration) -> list[str]:
    """The ping loop's round trip, hold and floor per service time."""
    s = c.settings
    lines = [
        "## The floor",
        "",
        f"A ping loop of {s['ping_requests']} requests, one connection, paced 2 ms apart (ms):",
        "",
    ]
    lines += table(
        ["service time", "round trip p50", "round trip p99", "hold p50", "hold p99",
         "floor p50", "floor p99"],
        [
            [f"{float(service):g} ms", f"{f.round_trip_ms['p50']:.3f}",
             f"{f.round_trip_ms['p99']:.3f}", f"{f.hold_ms['p50']:.3f}", f"{f.hold_ms['p99']:.3f}",
             f"{f.floor_ms['p50']:.3f}", f"{f.floor_ms['p99']:.3f}"]
            for service, f in c.floors.items()
        ],
    )  # fmt: skip
    return lines


def bias_lines(c: Calibration) -> list[str]:
    """Each tool's bias and score, and the least biased."""
    lines: list[str] = []
    lines += ["## Each tool's bias", ""]
    ranked = sorted(c.tools, key=c.score)
    lines += table(
        ["tool", "score (ms)", *(f"bias {p} (ms)" for p in PERCENTILES)],
        [
            [tool, f"{c.score(tool):.3f}", *(_ms(c.bias(tool, p), sign=True) for p in PERCENTILES)]
            for tool in ranked
        ],
    )
    missing = [name for name in FACTORIES if name not in c.tools]
    lines += [
        "The bias columns give the median over the points (rate and service time) of each "
        "point's median bias, and in brackets the lowest and highest point. The score is the "
        "mean absolute bias at p50 and p99 over the points; p99.9 rests on the slowest "
        "1 to 15 answers of a run and does not rank.",
        "",
        f"**Least biased here: {c.least_biased()}.**"
        + (f" Not measured (not on this machine): {', '.join(missing)}." if missing else ""),
        "",
        f"![bias against rate]({PLOT})",
        "",
        "## Every point",
        "",
        "Medians of the rounds, with min-max where there were several (ms).",
        "",
    ]
    return lines


def point_lines(c: Calibration) -> list[str]:
    """Every point (tool, service time, rate): measured, true, bias."""
    lines: list[str] = []
    rows = []
    for tool in c.tools:
        for (service, rate), rounds in sorted(c.points(tool).items()):

            def spread(kind: str, p: str) -> Spread:
                return Spread.of(getattr(run, kind)[p] for run in rounds)  # noqa: B023

            rows.append(
                [tool, f"{service:g}", f"{rate:,.0f}",
                 f"{Spread.of(r.served_rate for r in rounds).median:,.0f}",
                 *(f"{spread('measured_ms', p).median:.3f}" for p in PERCENTILES),
                 *(f"{spread('truth_ms', p).median:.3f}" for p in PERCENTILES),
                 *(_ms(spread('bias_ms', p), sign=True) for p in PERCENTILES),
                 " ".join(f"[r{r.round + 1}]({r.stem}.json)" for r in rounds)]
            )  # fmt: skip
    lines += table(
        ["tool", "service ms", "rate", "served/s",
         *(f"measured {p}" for p in PERCENTILES), *(f"true {p}" for p in PERCENTILES),
         *(f"bias {p}" for p in PERCENTILES), "data"],
        rows,
    )  # fmt: skip
    return lines
