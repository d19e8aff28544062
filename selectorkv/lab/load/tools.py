"""The load tools the lab can drive, behind one interface: ``selectorkv``
(this package's open-loop generator), ``wrk`` (Debian's, paced to a
constant rate by wrk_scripts/paced.lua) and ``wrk2`` (the seed's tool, when
it is on PATH or named by ``$WRK2``; its first seconds calibrate it and its
runs are lengthened by its warm-up).

Every run comes back as a ``Measurement``: the figures of ``selectorkv load
--json`` plus the histogram, so the rest of the lab never asks which tool
made it. No tool is picked silently: the default is the one the calibration
found least biased. docs/lab.md, "Load tools" and "The instruments".
"""

from __future__ import annotations

import abc
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

import selectorkv
from selectorkv.lab.load import generator as load


def find_wrk_scripts() -> Path:
    """wrk_scripts/: beside the package in a checkout, or where a wheel
    installed them (setup.cfg's data_files, under the environment's share/)."""
    checkout = Path(selectorkv.__file__).resolve().parents[1] / "wrk_scripts"
    installed = Path(sys.prefix) / "share" / "selectorkv" / "wrk_scripts"
    return checkout if (checkout / "paced.lua").exists() else installed


WRK_SCRIPTS = find_wrk_scripts()


# Seconds of due time per bucket of a constant-rate run's timeline (the
# stall timeline's resolution: lab/studies/stalls.py).
TIMELINE_BUCKET = 0.01


@dataclass
class Measurement:
    figures: dict[str, Any]  # the schema of ``selectorkv load --json``, less its timeline
    histogram: HdrHistogram  # latency in microseconds, every answer
    # Per TIMELINE_BUCKET of due time (the tools that keep one): the requests
    # due then and their latency; figures["start_monotonic"] is its zero.
    timeline: list[dict[str, float]] | None = None

    @property
    def served_rate(self) -> float:
        return served_rate(self.figures)

    def save(self, stem: Path) -> None:
        """``stem.json`` (the figures) and ``stem.hgrm`` (the spectrum, in ms)."""
        stem.with_suffix(".json").write_text(json.dumps(self.figures, indent=2) + "\n")
        with open(stem.with_suffix(".hgrm"), "wb") as out:
            out.write(load.spectrum_ms(self.histogram))


# A run held its rate when it served this share of it (the rest is the
# noise of a constant-rate run's start and end, not the server falling behind).
SERVED_SHARE = 0.97


def served_rate(figures: dict[str, Any]) -> float:
    """Answers below 500 per second: what the server did, not what it shed.
    (wrk2 counts only "non-2xx", which is then taken as not served.)"""
    served = sum(n for code, n in figures["status_counts"].items() if code[0] in "1234")
    seconds: float = figures["elapsed_s"]
    return served / seconds if seconds else 0.0


def figures_from(
    tool: str,
    workload: str,
    target_rate: float | None,
    connections: int,
    duration: float,
    elapsed: float,
    statuses: dict[str, int],
    errors: int,
    histogram: HdrHistogram,
    behind_schedule: bool,
) -> dict[str, Any]:
    requests = sum(statuses.values())
    return {
        "tool": tool,
        "workload": workload,
        "target_rate": target_rate,
        "rate": requests / elapsed if elapsed else 0.0,
        "requests": requests,
        "duration_s": duration,
        "elapsed_s": elapsed,
        "connections": connections,
        "errors": errors,
        "status_counts": statuses,
        "latency_ms": load.percentiles_ms(histogram),
        "behind_schedule": behind_schedule,
    }


# wrk2's calibration (10 s) and its connections' staggered start (1 ms each,
# 64 per thread in the lab), rounded up: every wrk2 run is this much longer.
WRK2_WARMUP = 11.0


class LoadTool(abc.ABC):
    name = ""
    warmup_seconds = 0.0  # added to every run: the part the tool does not measure

    def warmup_note(self, duration: float) -> str:
        """What the warm-up does to a run of ``duration`` seconds."""
        return (
            f"{self.name} does not measure its first {self.warmup_seconds:g} s (its warm-up): "
            f"each {duration:g} s run is lengthened to {duration + self.warmup_seconds:g} s"
        )

    @abc.abstractmethod
    def capacity(self, url: str, workload: str, connections: int, duration: float) -> float:
        """Closed-loop answers below 500 per second."""

    @abc.abstractmethod
    def constant_rate(
        self, url: str, workload: str, rate: float, connections: int, duration: float
    ) -> Measurement:
        """A run at a constant rate, latency counted from each due time."""


class SelectorkvLoad(LoadTool):
    name = "selectorkv load"

    def _run(
        self,
        url: str,
        workload: str,
        rate: float,
        connections: int,
        duration: float,
        closed_loop: bool,
    ) -> Measurement:
        # In a process of its own: the lab's threads must not share its GIL.
        report = load.generate(
            url, workload, rate, connections, duration, closed_loop=closed_loop,
            timeline=0.0 if closed_loop else TIMELINE_BUCKET, separate=True,
        )  # fmt: skip
        figures = report.as_json()
        if closed_loop:
            figures["target_rate"] = None
        return Measurement(figures, report.histogram, figures.pop("timeline", None))

    def capacity(self, url: str, workload: str, connections: int, duration: float) -> float:
        return self._run(url, workload, 1e6, connections, duration, True).served_rate

    def constant_rate(
        self, url: str, workload: str, rate: float, connections: int, duration: float
    ) -> Measurement:
        return self._run(url, workload, rate, connections, duration, False)


def _wrk_duration(duration: float) -> str:
    return f"{max(1, round(duration))}s"


class WrkPaced(LoadTool):
    """Debian's wrk: plain for the closed loop, paced.lua for a constant rate."""

    name = "wrk + paced.lua"

    def __init__(self, binary: str = "wrk") -> None:
        self.binary = binary

    def capacity(self, url: str, workload: str, connections: int, duration: float) -> float:
        script = WRK_SCRIPTS / f"{workload}.lua"
        out = _run_tool(
            [
                self.binary,
                "-t1",
                f"-c{connections}",
                f"-d{_wrk_duration(duration)}",
                "-s",
                str(script),
                url,
            ]
        )
        # Every answer counts: wrk cannot tell a 404 (served) from a 503, and
        # a closed loop of 64 connections never fills the server's queue.
        return float(_find(r"Requests/sec:\s+([\d.]+)", out))

    def constant_rate(
        self, url: str, workload: str, rate: float, connections: int, duration: float
    ) -> Measurement:
        with tempfile.TemporaryDirectory() as scratch:
            out_path = Path(scratch) / "paced.json"
            env = dict(
                os.environ,
                PACED_RATE=str(rate),
                PACED_THREADS=str(connections),
                PACED_WORKLOAD=workload,
                PACED_OUT=str(out_path),
            )
            _run_tool(
                [
                    self.binary,
                    f"-t{connections}",
                    f"-c{connections}",
                    f"-d{_wrk_duration(duration)}",
                    "-s",
                    str(WRK_SCRIPTS / "paced.lua"),
                    url,
                ],
                env,
            )
            paced = json.loads(out_path.read_text())
        histogram = HdrHistogram(1, load.HIGHEST_US, 3)
        for micros, count in paced["histogram_us"].items():
            histogram.record_value(max(1, int(float(micros))), count)
        requests = sum(paced["status_counts"].values())
        return Measurement(
            figures_from(
                self.name,
                workload,
                rate,
                connections,
                duration,
                paced["elapsed_s"],
                paced["status_counts"],
                paced["errors"],
                histogram,
                paced["late"] > load.LATE_SHARE * max(1, requests),
            ),
            histogram,
        )


class Wrk2(LoadTool):
    """wrk2 (-R, -L), the seed's tool, with the same workload scripts."""

    name = "wrk2"
    warmup_seconds = WRK2_WARMUP

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or find("wrk2") or "wrk2"

    def _command(
        self, url: str, workload: str, rate: float, connections: int, duration: float
    ) -> list[str]:
        # One thread per CPU this thread may run on (the lab pins it to the
        # load CPUs): more would share a core and be late to their own timers.
        threads = min(connections, len(os.sched_getaffinity(0)))
        return [
            self.binary,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{math.ceil(duration + self.warmup_seconds)}s",
            f"-R{round(rate)}",
            "-L",
            "-s",
            str(WRK_SCRIPTS / f"{workload}.lua"),
            url,
        ]

    def capacity(self, url: str, workload: str, connections: int, duration: float) -> float:
        # A rate far above any capacity: wrk2 then sends as fast as answers come.
        out = _run_tool(self._command(url, workload, 1e6, connections, duration))
        return parse_wrk2(out, self.name, workload, None, connections, duration).served_rate

    def constant_rate(
        self, url: str, workload: str, rate: float, connections: int, duration: float
    ) -> Measurement:
        out = _run_tool(self._command(url, workload, rate, connections, duration))
        return parse_wrk2(out, self.name, workload, rate, connections, duration)


SPECTRUM_LINE = re.compile(r"^\s*([\d.]+)\s+([\d.]+)\s+(\d+)\s+([\d.]+|inf)\s*$", re.M)


def parse_wrk2(
    out: str, tool: str, workload: str, rate: float | None, connections: int, duration: float
) -> Measurement:
    """A Measurement from wrk2's output with ``-L``: the detailed percentile
    spectrum (value in ms, cumulative count) becomes a histogram again."""
    histogram = HdrHistogram(1, load.HIGHEST_US, 3)
    seen = 0
    for value_ms, _, cumulative, _ in SPECTRUM_LINE.findall(out.split("Detailed Percentile")[-1]):
        count = int(cumulative) - seen
        if count > 0:
            histogram.record_value(max(1, round(float(value_ms) * 1000)), count)
            seen = int(cumulative)
    requests = int(_find(r"(\d+) requests in", out))
    rejected = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non_2xx = int(rejected.group(1)) if rejected else 0
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    rate_seen = float(_find(r"Requests/sec:\s+([\d.]+)", out))
    statuses = {"2xx": requests - non_2xx}
    if non_2xx:
        statuses["non-2xx"] = non_2xx  # wrk2 does not say which codes
    elapsed = requests / rate_seen if rate_seen else duration
    return Measurement(
        figures_from(
            tool, workload, rate, connections, duration, elapsed, statuses, errors, histogram, False
        ),
        histogram,
    )


def _find(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    if not found:
        raise RuntimeError(f"unexpected load tool output (no {pattern!r}):\n{text[-2000:]}")
    return found.group(1)


def _run_tool(command: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


FACTORIES: dict[str, type[LoadTool]] = {
    "selectorkv": SelectorkvLoad,
    "wrk": WrkPaced,
    "wrk2": Wrk2,
}


def find(name: str) -> str | None:
    """The binary of a tool: None when this machine lacks it. wrk2 is not
    packaged by Debian; ``$WRK2`` may name a build outside PATH."""
    if name == "selectorkv":
        return name  # this package
    if name == "wrk2" and os.environ.get("WRK2"):
        path = os.environ["WRK2"]
        return path if os.access(path, os.X_OK) else None
    return shutil.which(name)


def tool_version(tool: str) -> str:
    """The version line of a tool, by its ``LoadTool.name``."""
    binary = tool.split()[0]
    if binary == "selectorkv":
        return f"selectorkv load {metadata.version('selectorkv')}"
    try:
        done = subprocess.run(
            [find(binary) or binary, "-v"], capture_output=True, text=True, check=False
        )
        return (done.stdout or done.stderr).splitlines()[0].strip()
    except (OSError, IndexError):
        return binary


def key_of(tool: str) -> str:
    """The ``--tool`` name of a ``LoadTool.name``."""
    return next((key for key, kind in FACTORIES.items() if kind.name == tool), tool)


def choose(name: str) -> LoadTool:
    if find(name) is None:
        raise RuntimeError(
            f"{name} is not on this machine"
            + (" (put it on PATH or name it in $WRK2: docs/lab.md)" if name == "wrk2" else "")
        )
    if name != "selectorkv" and not (WRK_SCRIPTS / "paced.lua").exists():
        raise RuntimeError(f"{name} needs wrk_scripts/, found neither in a checkout nor installed")
    return FACTORIES[name]()
