"""``selectorkv lab``: the seed's sync-versus-async study, in one command.

Per workload: a database filled once and copied for every server, each
mode's closed-loop capacity, a ladder of constant rates at fractions of the
larger one (the same rates for both modes), the step search for the
breaking point, profiles at half of capacity, allocations under memray,
and ``/metrics`` sampled all along. Capacity, ladder and search are measured
in rounds in which the modes take turns (the machine drifts); a rate is
held when the median of its rounds held. Everything is saved as it comes,
and the report is computed from the saved files alone. The load, py-spy
and the sampler run on the CPUs the server does not use. docs/lab.md,
"What it does", is the reference.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from prometheus_client.parser import text_string_to_metric_families

from selectorkv.lab.harness import profile
from selectorkv.lab.harness.cpus import load_cpus, on_load_cpus, thread_cpu
from selectorkv.lab.harness.rounds import rotated
from selectorkv.lab.harness.servers import ServerProcess, free_port, selectorkv_serve
from selectorkv.lab.harness.spread import Spread
from selectorkv.lab.load.fill import fill as fill_database
from selectorkv.lab.load.tools import (
    SERVED_SHARE,
    TIMELINE_BUCKET,
    LoadTool,
    served_rate,
    tool_version,
)
from selectorkv.lab.studies.stalls import RunWatch

log = logging.getLogger("selectorkv.lab")

MODES = ("sync", "async")
WORKLOADS = ("put", "get")
SAMPLE_EVERY = 0.2  # seconds between two scrapes of /metrics
PROFILE_FRACTION = 0.5  # profiles run at this fraction of capacity
ALLOC_FRACTION = 0.1  # ... and the allocation profile at this one (memray is slow)
SETTLE = 1.0  # seconds between runs: the previous run's queues drain
# What the metrics sampler keeps from each scrape: the async queue's depth,
# and group commit's batches and the writes in them (their mean batch).
SCRAPED = ("selectorkv_queue_depth", "selectorkv_commit_batches", "selectorkv_commit_writes")
# Every server of the study runs with these flags beside its defaults: the
# stall record costs 0.2 µs a round, and the report's timelines need it.
SERVER_FLAGS = ("--record-stalls",)


@dataclass
class Settings:
    out: Path
    data: Path  # the filled database that every server starts from a copy of
    size: int  # bytes of table files the database is filled to
    tool: str  # auto, selectorkv, wrk, wrk2 (lab/load/tools.py)
    connections: int
    capacity_seconds: float
    run_seconds: float
    profile_seconds: float
    ladder: tuple[float, ...]  # fractions of capacity
    refine: int  # halvings of the step search
    p99_bound_ms: float
    quick: bool
    repeat: int  # rounds of every capacity, ladder and search measurement
    workloads: tuple[str, ...] = WORKLOADS


FULL = {
    "capacity_seconds": 5.0,
    "run_seconds": 10.0,
    "profile_seconds": 10.0,
    "ladder": (0.25, 0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25),
    "refine": 2,
    "repeat": 3,
}
QUICK = {
    "capacity_seconds": 2.0,
    "run_seconds": 3.0,
    "profile_seconds": 2.0,
    "ladder": (0.5, 0.8, 1.0, 1.2),
    "refine": 1,
    "repeat": 1,
}


@dataclass
class Run:
    """One constant-rate run, as runs.json keeps it."""

    workload: str
    mode: str
    phase: str  # ladder, search, profile-<kind>[-flamegraph] (kind: cpu, wait, gil), alloc
    rate: float  # the target rate
    stem: str  # data/<stem>.json and .hgrm, relative to the out directory
    figures: dict[str, Any]
    held: bool  # this run alone; a rate's verdict is its rounds' median (Study.held)
    round: int = 0  # which of the ``repeat`` rounds
    queue: list[tuple[float, float]] = field(default_factory=list)  # (s, queue depth)
    # Server CPU seconds during the run, per thread id: [user, system].
    cpu: dict[str, list[float]] = field(default_factory=dict)
    commit_batch: float | None = None  # writes per group-commit batch, on average


@dataclass
class Study:
    settings: dict[str, Any]
    tool: str
    load_cpus: list[int]
    machine: list[str]
    versions: str
    server_flags: list[str] = field(default_factory=list)  # beside the defaults
    # workload -> mode -> the median of the rounds, and each round's figure
    capacity: dict[str, dict[str, float]] = field(default_factory=dict)
    capacity_rounds: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # workload -> mode -> each capacity round's writes per group-commit batch,
    # and the server's CPU microseconds per request
    capacity_batch: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    capacity_cpu_us: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    breaking_point: dict[str, dict[str, float | None]] = field(default_factory=dict)
    profiles: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    alloc_sites: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    finished: float = 0.0

    def save(self, out: Path) -> None:
        (out / "runs.json").write_text(json.dumps(asdict(self), indent=1, default=str) + "\n")


def describe_machine() -> list[str]:
    """The machine, as the report states it (recorded when measured)."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory = Path("/proc/meminfo").read_text().split()[1]
        memory_text = f"{int(memory) / 2**20:.0f} GiB memory"
    except OSError:
        memory_text = "memory unknown"
    return [
        f"- Machine: {cpu}, {os.cpu_count()} CPUs, {memory_text}, Linux {platform.release()}",
        f"- Python {platform.python_version()} ({sys.implementation.name})",
    ]


def describe_versions(tool: str) -> str:
    """The versions of what was measured and what measured it."""
    parts = []
    for package in ("selectorkv", "h11", "rocksdict", "py-spy", "memray", "matplotlib"):
        try:
            parts.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    if tool.startswith("wrk"):
        parts.append(tool_version(tool))
    return "- Versions: " + ", ".join(parts)


def start_server(
    mode: str,
    data: Path,
    log_file: IO[bytes],
    memray: Path | None = None,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    port: int | None = None,
    wait: bool = True,
) -> ServerProcess:
    """``selectorkv serve`` in a child process, on its own copy of the data;
    ``extra`` flags and ``env`` for a cluster node. ``wait``: return once it
    listens; else call ``wait_ready`` later (several servers then start at once)."""
    port = port or free_port()
    command = selectorkv_serve(
        "--mode", mode, "--data", str(data), "--port", str(port), "--log-level", "warning", *extra
    )
    if memray is not None:
        command = profile.memray_command(command[1:], memray)
    server = ServerProcess(command, port=port, env=env, log=log_file)
    if wait:
        server.wait_ready()
    return server


def stop_server(server: ServerProcess) -> None:
    """SIGTERM (a process started in the background ignores SIGINT, and the
    server stops gracefully on either: memray then writes its file)."""
    code = server.stop(timeout=120)
    if code != 0:
        raise RuntimeError(f"the server exited with {code}")


def scrape(conn: http.client.HTTPConnection) -> dict[str, float]:
    """One ``GET /metrics`` on ``conn``: the SCRAPED families' values."""
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    return {
        family.name: family.samples[0].value
        for family in text_string_to_metric_families(text)
        if family.name in SCRAPED
    }


def mean_batch(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Writes per group-commit batch between two scrapes (None: no batch)."""
    batches = after["selectorkv_commit_batches"] - before["selectorkv_commit_batches"]
    writes = after["selectorkv_commit_writes"] - before["selectorkv_commit_writes"]
    return writes / batches if batches else None


def scraped_once(port: int) -> dict[str, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        return scrape(conn)
    finally:
        conn.close()


class MetricsSampler(threading.Thread):
    """Scrapes ``GET /metrics`` every SAMPLE_EVERY seconds on one keep-alive
    connection and keeps (time, the SCRAPED values)."""

    def __init__(self, port: int) -> None:
        super().__init__(name="lab-metrics", daemon=True)
        self._port = port
        self._stopping = threading.Event()
        self.samples: list[tuple[float, dict[str, float]]] = []

    def run(self) -> None:
        os.sched_setaffinity(0, load_cpus())
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=5)
        while not self._stopping.wait(SAMPLE_EVERY):
            try:
                self.samples.append((time.monotonic(), scrape(conn)))
            except (OSError, http.client.HTTPException):
                conn.close()  # reconnects on the next request
        conn.close()

    def between(self, start: float, end: float) -> list[tuple[float, float]]:
        """(seconds from ``start``, queue depth) of the scrapes in between."""
        return [
            (round(t - start, 3), values["selectorkv_queue_depth"])
            for t, values in self.samples
            if start <= t <= end and "selectorkv_queue_depth" in values
        ]

    def batch_between(self, start: float, end: float) -> float | None:
        """Writes per group-commit batch from the first scrape after
        ``start`` to the last before ``end``."""
        inside = [values for t, values in self.samples if start <= t <= end]
        return mean_batch(inside[0], inside[-1]) if len(inside) > 1 else None

    def stop(self) -> None:
        self._stopping.set()
        self.join()


def cpu_between(
    before: dict[str, list[float]], after: dict[str, list[float]]
) -> dict[str, list[float]]:
    """Per thread id, the CPU seconds [user, system] used between two
    ``thread_cpu`` readings (threads that lived through both)."""
    return {
        tid: [b - a for a, b in zip(before[tid], used, strict=True)]
        for tid, used in after.items()
        if tid in before
    }


def held(rounds: list[dict[str, Any]], rate: float, bound_ms: float) -> bool:
    """The rate was held: in the median of its rounds' figures, nearly all
    of it served, p99 under the bound, no errors."""
    return (
        Spread.of(served_rate(f) for f in rounds).median >= SERVED_SHARE * rate
        and Spread.of(f["latency_ms"]["p99"] for f in rounds).median <= bound_ms
        and Spread.of(f["errors"] for f in rounds).median == 0
    )


def first_unheld(by_rate: dict[float, list[dict[str, Any]]], bound_ms: float) -> float | None:
    """The lowest rate not held (by the median of its rounds' figures)."""
    return min((rate for rate, rounds in by_rate.items() if not held(rounds, rate, bound_ms)),
               default=None)  # fmt: skip


def turns(round_number: int) -> tuple[str, ...]:
    """The order of the modes in one round: sync first in even rounds,
    async first in odd ones, so that neither always runs first."""
    return tuple(rotated(MODES, round_number))


class Workbench:
    """What both studies keep while they run: the out directory's data/ and
    profiles/ (emptied first), a scratch directory for the servers' copies
    of the data, the servers' log, and progress lines on ``out``."""

    def __init__(self, out_dir: Path, out: IO[str]) -> None:
        self.out = out
        self.data_dir = out_dir / "data"
        self.profile_dir = out_dir / "profiles"
        # A previous study's files would mix with this one's: what the lab
        # wrote before (and only that) goes.
        for directory in (self.data_dir, self.profile_dir):
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
        for old in out_dir.glob("*.png"):
            old.unlink()
        self.scratch = Path(tempfile.mkdtemp(prefix="selectorkv-lab-"))
        self.server_log = open(out_dir / "servers.log", "wb")  # noqa: SIM115 (closed in close)

    def say(self, text: str) -> None:
        self.out.write(f"[lab {time.strftime('%H:%M:%S')}] {text}\n")
        self.out.flush()

    def close(self) -> None:
        self.server_log.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


class Lab(Workbench):
    def __init__(self, settings: Settings, tool: LoadTool, out: IO[str]) -> None:
        self.settings = settings
        self.tool = tool
        self.study = Study(
            settings={k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
            tool=tool.name,
            load_cpus=sorted(load_cpus()),
            machine=describe_machine(),
            versions=describe_versions(tool.name),
            server_flags=list(SERVER_FLAGS),
        )
        super().__init__(settings.out, out)
        self.copies: dict[int, Path] = {}  # a running server's pid -> its data

    @contextmanager
    def server(self, mode: str, memray: Path | None = None) -> Iterator[ServerProcess]:
        """A fresh server on a fresh copy of the filled database, keeping a
        record of its stalls for the timeline (it costs 0.2 µs a round)."""
        copy = Path(tempfile.mkdtemp(dir=self.scratch, prefix=f"{mode}-"))
        shutil.rmtree(copy)
        shutil.copytree(self.settings.data, copy)
        server = start_server(mode, copy, self.server_log, memray, extra=SERVER_FLAGS)
        self.copies[server.pid] = copy
        try:
            yield server
        finally:
            stop_server(server)
            del self.copies[server.pid]
            shutil.rmtree(copy, ignore_errors=True)

    def run(self) -> Study:
        try:
            if self.tool.warmup_seconds:
                self.say(self.tool.warmup_note(self.settings.run_seconds))
            self.say(f"filling {self.settings.data} to {self.settings.size / 2**20:.0f} MiB")
            report = fill_database(str(self.settings.data), self.settings.size, None)
            self.say(f"database: {report.keys:,} keys, {report.size / 2**20:.1f} MiB")
            for workload in self.settings.workloads:
                self.measure_workload(workload)
        finally:
            self.close()
        self.study.finished = time.time()
        self.study.save(self.settings.out)
        return self.study

    def measure_workload(self, workload: str) -> None:
        s = self.settings
        rounds: dict[str, list[float]] = {mode: [] for mode in MODES}
        batches: dict[str, list[float]] = {mode: [] for mode in MODES}
        cpu_us: dict[str, list[float]] = {mode: [] for mode in MODES}
        for number in range(s.repeat):
            for mode in turns(number):
                with self.server(mode) as server:
                    before, cpu_before = scraped_once(server.port), thread_cpu(server.pid)
                    found = on_load_cpus(
                        lambda: self.tool.capacity(
                            server.url, workload, s.connections, s.capacity_seconds
                        )
                    )
                    used = cpu_between(cpu_before, thread_cpu(server.pid))
                    batch = mean_batch(before, scraped_once(server.port))
                rounds[mode].append(found)
                cpu_us[mode].append(
                    1e6 * sum(map(sum, used.values())) / max(1.0, found * s.capacity_seconds)
                )
                if batch is not None:
                    batches[mode].append(batch)
                self.say(
                    f"{workload} {mode}: capacity {found:,.0f} req/s (closed loop, "
                    f"round {number + 1} of {s.repeat})"
                    + (f", {batch:.1f} writes per commit" if batch else "")
                )
        self.study.capacity_rounds[workload] = rounds
        self.study.capacity_batch[workload] = batches
        self.study.capacity_cpu_us[workload] = cpu_us
        capacity = {mode: Spread.of(rounds[mode]).median for mode in MODES}
        self.study.capacity[workload] = capacity
        top = max(capacity.values())
        ladder = sorted({round(top * fraction) for fraction in s.ladder})
        self.study.profiles[workload] = {}
        with self.server("sync") as sync, self.server("async") as asyn:
            servers = {"sync": sync, "async": asyn}
            samplers = {mode: MetricsSampler(server.port) for mode, server in servers.items()}
            for sampler in samplers.values():
                sampler.start()
            try:
                measured: dict[str, dict[float, list[Run]]] = {mode: {} for mode in MODES}
                for number in range(s.repeat):
                    for rate in ladder:
                        for mode in turns(number):
                            run = self.measure(
                                servers[mode], samplers[mode], workload, mode, "ladder", rate,
                                number=number,
                            )  # fmt: skip
                            measured[mode].setdefault(rate, []).append(run)
                self.keep_timelines(measured)
                self.study.breaking_point[workload] = self.step_search(
                    servers, samplers, workload, measured
                )
                for mode in MODES:
                    point = self.study.breaking_point[workload][mode]
                    self.say(f"{workload} {mode}: breaking point {point} req/s (median)")
                    self.study.profiles[workload][mode] = ModeProfiles(self).record(
                        servers[mode], samplers[mode], workload, mode, round(top * PROFILE_FRACTION)
                    )
            finally:
                for sampler in samplers.values():
                    sampler.stop()
        self.study.save(s.out)
        self.study.alloc_sites[workload] = {
            mode: ModeProfiles(self).allocations(workload, mode, round(top * ALLOC_FRACTION))
            for mode in MODES
        }
        self.study.save(s.out)

    def measure(
        self,
        server: ServerProcess,
        sampler: MetricsSampler,
        workload: str,
        mode: str,
        phase: str,
        rate: float,
        seconds: float | None = None,
        number: int = 0,
    ) -> Run:
        s = self.settings
        duration = s.run_seconds if seconds is None else seconds
        started = time.monotonic()
        cpu_before = thread_cpu(server.pid)
        with RunWatch(server.url, server.pid, self.copies[server.pid]) as watch:
            measurement = on_load_cpus(
                lambda: self.tool.constant_rate(server.url, workload, rate, s.connections, duration)
            )
        cpu_after = thread_cpu(server.pid)
        stem = f"{workload}-{mode}-{phase}-{round(rate)}"
        if phase in ("ladder", "search"):  # the measurements made in rounds
            stem += f"-r{number + 1}"
        measurement.save(self.data_dir / stem)
        if phase == "ladder" and measurement.timeline is not None:
            load = {**measurement.figures, "timeline": measurement.timeline}
            timeline = watch.timeline(load, TIMELINE_BUCKET)
            (self.data_dir / f"{stem}.stalls.json").write_text(json.dumps(timeline) + "\n")
        run = Run(
            workload=workload,
            mode=mode,
            phase=phase,
            rate=rate,
            stem=f"data/{stem}",
            figures=measurement.figures,
            held=held([measurement.figures], rate, s.p99_bound_ms),
            round=number,
            queue=sampler.between(started, time.monotonic()),
            commit_batch=sampler.batch_between(started, time.monotonic()),
            cpu=cpu_between(cpu_before, cpu_after),
        )
        self.study.runs.append(run)
        lat = measurement.figures["latency_ms"]
        self.say(
            f"{workload} {mode} {phase} {rate:,.0f} req/s: served {measurement.served_rate:,.0f}, "
            f"p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} ms, "
            f"{'held' if run.held else 'NOT held'}"
            + (f" (round {number + 1} of {s.repeat})" if phase in ("ladder", "search") else "")
        )
        time.sleep(SETTLE)
        return run

    def keep_timelines(self, ladder: dict[str, dict[float, list[Run]]]) -> None:
        """Each ladder run saved its stall timeline; the report draws those
        of each mode's first rate that broke, and only those are kept."""
        for by_rate in ladder.values():
            figures = {rate: [run.figures for run in runs] for rate, runs in by_rate.items()}
            drawn = first_unheld(figures, self.settings.p99_bound_ms)
            for rate, runs in by_rate.items():
                if rate != drawn:
                    for run in runs:
                        (self.settings.out / f"{run.stem}.stalls.json").unlink(missing_ok=True)

    def step_search(
        self,
        servers: dict[str, ServerProcess],
        samplers: dict[str, MetricsSampler],
        workload: str,
        ladder: dict[str, dict[float, list[Run]]],
    ) -> dict[str, float | None]:
        """Per mode, the highest rate held (by the median of its rounds),
        refined by halving the step above it. The two modes' searches go in
        step, each probe measured in the same interleaved rounds as the
        ladder."""
        bound = self.settings.p99_bound_ms

        def rate_held(rate: float, runs: list[Run]) -> bool:
            return held([run.figures for run in runs], rate, bound)

        low: dict[str, float | None] = {}
        high: dict[str, float] = {}
        for mode in MODES:
            held_rates = [rate for rate, runs in ladder[mode].items() if rate_held(rate, runs)]
            if not held_rates:
                low[mode] = None  # below the lowest rate tried: the report says so
                continue
            low[mode] = highest = max(held_rates)
            failed = [rate for rate in ladder[mode] if rate > highest]
            if failed:
                high[mode] = min(failed)
        for _ in range(self.settings.refine):
            probes = {}
            for mode, top in high.items():
                bottom = low[mode]
                assert bottom is not None  # only modes that held a rate search
                middle = round((bottom + top) / 2)
                if middle not in (bottom, top):
                    probes[mode] = middle
            if not probes:
                break
            runs: dict[str, list[Run]] = {mode: [] for mode in probes}
            for number in range(self.settings.repeat):
                for mode in turns(number):
                    if mode in probes:
                        run = self.measure(
                            servers[mode], samplers[mode], workload, mode, "search",
                            probes[mode], number=number,
                        )  # fmt: skip
                        runs[mode].append(run)
            for mode, middle in probes.items():
                if rate_held(middle, runs[mode]):
                    low[mode] = middle
                else:
                    high[mode] = middle
        return low


class ModeProfiles:
    """The profiles of one mode's server: py-spy's CPU, wait and GIL
    recordings under a constant rate, and memray's allocations."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def record(
        self,
        server: ServerProcess,
        sampler: MetricsSampler,
        workload: str,
        mode: str,
        rate: float,
    ) -> dict[str, str]:
        """py-spy CPU, wait and GIL profiles under a constant rate: per kind
        a flame graph, then the speedscope recording (the one the report
        reads, so its load run is the one kept as "profile-<kind>")."""
        s = self.lab.settings
        found = {}
        for kind in profile.KINDS:
            stem = f"{workload}-{mode}-{kind}"
            for fmt, suffix in profile.FORMATS:
                recorder = on_load_cpus(
                    functools.partial(
                        profile.start_pyspy,
                        server.process.pid,
                        s.profile_seconds,
                        self.lab.profile_dir / f"{stem}{suffix}",
                        kind,
                        fmt,
                    )
                )
                # The load covers the recording: py-spy takes a moment to attach.
                phase = f"profile-{kind}" if fmt == "speedscope" else f"profile-{kind}-{fmt}"
                self.lab.measure(
                    server, sampler, workload, mode, phase, rate, s.profile_seconds + 1.5
                )
                profile.finish(recorder)
            found[kind] = f"profiles/{stem}"
        self.lab.say(f"{workload} {mode}: profiles recorded at {rate:,.0f} req/s")
        return found

    def allocations(self, workload: str, mode: str, rate: float) -> list[dict[str, Any]]:
        capture = self.lab.scratch / f"{workload}-{mode}.memray"
        with self.lab.server(mode, memray=capture) as server:
            sampler = MetricsSampler(server.port)
            sampler.start()
            try:
                self.lab.measure(
                    server,
                    sampler,
                    workload,
                    mode,
                    "alloc",
                    rate,
                    self.lab.settings.profile_seconds,
                )
            finally:
                sampler.stop()
        sites = profile.memray_outputs(capture, self.lab.profile_dir, f"{workload}-{mode}-alloc")
        capture.unlink()
        self.lab.say(f"{workload} {mode}: allocation profile at {rate:,.0f} req/s")
        return sites
