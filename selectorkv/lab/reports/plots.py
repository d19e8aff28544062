"""The study's plots, drawn with matplotlib from the saved runs.

- Latency by percentile, as the seed's images (and HdrHistogram's plotter)
  draw it: the x axis is 1 / (1 - percentile) on a log scale, labelled 0%,
  90%, 99%, 99.9%, 99.99%, so that every "nine" of the tail gets the same
  width; one line per mode at the same rate.
- Throughput against p99 for both modes: the served rate on x, p99 on y
  (log), one point per constant-rate run; the bound is drawn, and where a
  curve crosses it is the breaking point.

A figure measured in several rounds is drawn as its median, with the
rounds' min-max as a shaded band around it: a difference between two lines
is only as real as the gap between their bands.
- Queue depth over time in async mode, one line per rate: how the queue in
  front of the PayloadThreads fills as the rate nears and passes capacity.
- Latency over time (the cluster study's hang): per 100 ms of due time, the
  p99 and the maximum of the requests due then, one colour per peer-call
  style, the node's stop and resume marked.
- Capacity against the number of nodes (the scale-out study): one line per
  routing and replication, and N times one node's as the line of perfect
  scaling.
- The stall timeline: per 10 ms of due time the p99, and beneath it on the
  same axis what held the server up (lab/studies/stalls.py).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt
from matplotlib.ticker import FixedLocator, NullLocator

from selectorkv.lab.harness.spread import Spread

NINES = 5  # the x axis goes to 99.999%
COLOURS = {"sync": "tab:blue", "async": "tab:orange", "blocking": "tab:red", "single": "tab:green"}


def read_hgrm(path: Path) -> list[tuple[float, float]]:
    """(percentile, latency ms) pairs from an .hgrm spectrum file."""
    points = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4 and not line.startswith("#") and parts[0][0].isdigit():
            points.append((float(parts[1]), float(parts[0])))
    return points


def latency_at(points: list[tuple[float, float]], quantile: float) -> float:
    """The latency at ``quantile`` of one spectrum: that of its first point
    at or above it (an .hgrm spectrum is a step function)."""
    for q, ms in points:
        if q >= quantile:
            return ms
    return points[-1][1]


def latency_by_percentile(
    curves: dict[str, list[list[tuple[float, float]]]], title: str, out: Path
) -> None:
    """One line per label, from one or more spectra of (percentile in
    [0, 1], latency ms) points: their median at each percentile, and their
    min-max as a band when there are several."""
    figure, axes = plt.subplots(figsize=(8, 4.5))
    # Percentiles evenly spaced on the axis, to just short of the last nine.
    grid = [1 - 10 ** (-k / 20) for k in range(NINES * 20)]
    for label, spectra in curves.items():
        spectra = [[(q, ms) for q, ms in points if q < 1] for points in spectra]
        spectra = [points for points in spectra if points]
        if not spectra:
            continue
        top = min(points[-1][0] for points in spectra)  # as far as every spectrum goes
        quantiles = [q for q in grid if q <= top]
        at = [[latency_at(points, q) for points in spectra] for q in quantiles]
        xs = [1 / (1 - q) for q in quantiles]
        colour = COLOURS.get(label.split()[0])
        axes.plot(xs, [statistics.median(v) for v in at], label=label, color=colour, linewidth=1.6)
        if len(spectra) > 1:
            axes.fill_between(
                xs, [min(v) for v in at], [max(v) for v in at], color=colour, alpha=0.2, linewidth=0
            )
    axes.set_xscale("log")
    ticks = [10.0**k for k in range(NINES + 1)]
    axes.xaxis.set_major_locator(FixedLocator(ticks))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.set_xticklabels(["0%"] + [f"{100 - 100 / t:g}%" for t in ticks[1:]])
    axes.set_xlim(1, ticks[-1])
    axes.set_ylim(bottom=0)
    axes.grid(True, which="major", alpha=0.3)
    _finish(figure, axes, "percentile", "latency, ms", title, out)


def throughput_against_p99(
    points: dict[str, list[tuple[Spread, Spread]]], bound_ms: float, title: str, out: Path
) -> None:
    """points: mode -> [(served req/s, p99 ms)] in the order of the target
    rates, each the spread of its rounds: the medians as a line, the p99's
    min-max as a band and the served rate's as a horizontal bar."""
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for mode, series in points.items():
        colour = COLOURS.get(mode)
        xs = [served.median for served, _ in series]
        axes.plot(xs, [p99.median for _, p99 in series], marker="o", label=mode, color=colour)
        if any(p99.count > 1 for _, p99 in series):
            axes.fill_between(
                xs,
                [p99.low for _, p99 in series],
                [p99.high for _, p99 in series],
                color=colour,
                alpha=0.2,
                linewidth=0,
            )
            axes.hlines(
                [p99.median for _, p99 in series],
                [served.low for served, _ in series],
                [served.high for served, _ in series],
                color=colour,
                linewidth=1,
            )
    axes.axhline(
        bound_ms, color="grey", linestyle="--", linewidth=1, label=f"bound {bound_ms:g} ms"
    )
    axes.set_yscale("log")
    axes.grid(True, which="both", alpha=0.3)
    _finish(figure, axes, "served, req/s", "p99 latency, ms", title, out)


def queue_depth(series: dict[str, list[Any]], limit: int, title: str, out: Path) -> None:
    """series: label (a rate) -> [(seconds, depth)]."""
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for label, samples in series.items():
        axes.plot([t for t, _ in samples], [d for _, d in samples], label=label, linewidth=1.2)
    axes.axhline(limit, color="grey", linestyle="--", linewidth=1, label=f"--queue-size {limit}")
    axes.set_yscale("symlog", linthresh=1)
    axes.grid(True, alpha=0.3)
    _finish(figure, axes, "seconds into the run", "requests queued for a PayloadThread", title, out)


def latency_over_time(
    series: dict[str, list[dict[str, float]]], marks: dict[str, float], title: str, out: Path
) -> None:
    """series: label -> timeline buckets (load.timeline_bucket); marks:
    label -> seconds (a vertical line each)."""
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for label, buckets in series.items():
        colour = COLOURS.get(label.split()[0])
        times = [b["t"] for b in buckets]
        axes.plot(times, [b["p99_ms"] for b in buckets], label=f"{label} p99", color=colour)
        axes.plot(times, [b["max_ms"] for b in buckets], label=f"{label} max", color=colour,
                  linestyle=":", linewidth=1)  # fmt: skip
    for label, at in marks.items():
        axes.axvline(at, color="grey", linestyle="--", linewidth=1)
        axes.annotate(label, (at, 1), xycoords=("data", "axes fraction"), fontsize="small",
                      xytext=(3, -12), textcoords="offset points")  # fmt: skip
    axes.set_yscale("log")
    axes.grid(True, which="both", alpha=0.3)
    _finish(figure, axes, "seconds into the run (due time)", "latency, ms", title, out)


# The rows of the stall timeline's lower panel, top to bottom.
STALL_KINDS = (
    "gc",
    "round",
    "run queue",
    "steal",
    "rocksdb threads",
    "flush",
    "compaction",
    "write stall",
    "generator late",
)


def stall_timeline(data: dict[str, Any], bound_ms: float, title: str, out: Path) -> None:
    """The stall timeline (lab/studies/stalls.py): above, per bucket of due
    time, the p99 and the maximum latency with the bound; below, on the same
    axis, a row per kind of event, each drawn as long as it lasted (at
    least a bucket, to be seen)."""
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    rows = data["latency"]
    times = [row["t"] for row in rows]
    top.plot(times, [row["max_ms"] for row in rows], color="tab:blue", linewidth=0.6,
             alpha=0.5, label="max")  # fmt: skip
    top.plot(times, [row["p99_ms"] for row in rows], color="tab:blue", linewidth=1, label="p99")
    top.axhline(bound_ms, color="tab:red", linestyle="--", linewidth=1, label=f"{bound_ms:g} ms")
    top.set_yscale("log")
    top.set_ylabel("latency, ms")
    top.set_title(title)
    top.grid(True, which="both", alpha=0.3)
    top.legend(fontsize="small", loc="upper right")
    bucket = data["bucket_s"]
    for row, kind in enumerate(STALL_KINDS):
        spans = [
            (event["start"], max(event["seconds"], bucket))
            for event in data["events"]
            if event["kind"] == kind
        ]
        bottom.broken_barh(spans, (row - 0.4, 0.8), color=f"C{row}")
    bottom.set_yticks(range(len(STALL_KINDS)), STALL_KINDS, fontsize="small")
    bottom.invert_yaxis()
    bottom.set_xlabel("seconds into the run (due time)")
    bottom.grid(True, axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(out, dpi=90)
    plt.close(figure)


def capacity_by_nodes(
    series: dict[str, list[tuple[int, Spread]]], one_node: float, title: str, out: Path
) -> None:
    """series: label -> [(nodes, capacity)]; ``one_node``: the capacity
    that N nodes would multiply if they scaled perfectly."""
    figure, axes = plt.subplots(figsize=(8, 4.5))
    counts = sorted({n for points in series.values() for n, _ in points})
    axes.plot(counts, [n * one_node for n in counts], color="grey", linestyle="--",
              linewidth=1, label="N x one node")  # fmt: skip
    for label, points in series.items():
        xs = [n for n, _ in points]
        line = axes.plot(xs, [c.median for _, c in points], marker="o", label=label)[0]
        axes.vlines(xs, [c.low for _, c in points], [c.high for _, c in points],
                    color=line.get_color(), linewidth=1)  # fmt: skip
    axes.set_xticks(counts)
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    _finish(figure, axes, "nodes", "capacity, answers/s", title, out)


def _finish(figure: Any, axes: Any, xlabel: str, ylabel: str, title: str, out: Path) -> None:
    """Labels, legend, and the PNG written (the figure is then released)."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(out, dpi=90)
    plt.close(figure)
