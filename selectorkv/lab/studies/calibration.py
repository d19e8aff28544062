"""``selectorkv lab --calibrate``: each load tool against a known truth.

Each tool is pointed at the known-latency targets (calibration_target.py)
at a few constant rates and service times, and its *bias* is what it
reported minus the truth, ``floor + hold(p)``, at p50, p99 and p99.9: the
hold measured by the target, the floor by a paced one-connection ping loop
before the runs. The tools take turns within each round; a bias is the
median of its rounds with min-max. The single-node study runs a short
calibration of its own tool first (``for_study``), so that its report can
state that tool's bias beside every table. docs/lab.md, "The instruments".
"""

from __future__ import annotations

import functools
import http.client
import json
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from hdrh.histogram import HdrHistogram

from selectorkv.lab.harness.cpus import on_load_cpus, server_cpus
from selectorkv.lab.harness.servers import ServerProcess
from selectorkv.lab.harness.spread import Spread
from selectorkv.lab.load import tools
from selectorkv.lab.studies.node import SETTLE, describe_machine

PERCENTILES = {"p50": 50.0, "p99": 99.0, "p99.9": 99.9}
PING_INTERVAL = 0.002  # seconds between two pings: the target is idle for each

FULL = {
    "services_ms": (0.0, 1.0, 5.0),
    "rates": (250.0, 1000.0, 3000.0),
    "run_seconds": 5.0,
    "repeat": 3,
    "ping_requests": 1000,
}
QUICK = {
    "services_ms": (0.0, 1.0),
    "rates": (1000.0,),
    "run_seconds": 2.0,
    "repeat": 1,
    "ping_requests": 300,
}


@dataclass
class CalibrationSettings:
    out: Path
    tools: tuple[str, ...]  # names of lab/load/tools.py's FACTORIES
    services_ms: tuple[float, ...]
    rates: tuple[float, ...]
    run_seconds: float
    repeat: int
    ping_requests: int
    connections: int = 64
    workload: str = "put"


@dataclass
class Floor:
    """The ping loop against one target: round trip, the target's hold of
    each ping, and their difference, the floor (percentiles in ms)."""

    round_trip_ms: dict[str, float]
    hold_ms: dict[str, float]
    floor_ms: dict[str, float]


@dataclass
class CalibrationRun:
    tool: str
    service_ms: float
    rate: float
    round: int
    stem: str  # data/<stem>.json and .hgrm, relative to the out directory
    measured_ms: dict[str, float]
    hold_ms: dict[str, float]
    truth_ms: dict[str, float]
    bias_ms: dict[str, float]
    served_rate: float
    seconds: float  # how long the tool ran (with its warm-up)


@dataclass
class Calibration:
    settings: dict[str, Any]
    machine: list[str]
    versions: dict[str, str]  # tool -> its version line
    floors: dict[str, Floor] = field(default_factory=dict)  # str(service_ms) -> floor
    runs: list[CalibrationRun] = field(default_factory=list)
    warmups: dict[str, float] = field(default_factory=dict)  # tool -> seconds added to a run
    started: float = field(default_factory=time.time)
    finished: float = 0.0

    def save(self, out: Path) -> None:
        (out / "calibration.json").write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, out: Path) -> Calibration:
        raw = json.loads((out / "calibration.json").read_text())
        raw["floors"] = {key: Floor(**value) for key, value in raw["floors"].items()}
        raw["runs"] = [CalibrationRun(**run) for run in raw["runs"]]
        return cls(**raw)

    @property
    def tools(self) -> list[str]:
        return list(dict.fromkeys(run.tool for run in self.runs))

    def points(self, tool: str) -> dict[tuple[float, float], list[CalibrationRun]]:
        """(service ms, rate) -> the rounds of that point, for one tool."""
        found: dict[tuple[float, float], list[CalibrationRun]] = {}
        for run in self.runs:
            if run.tool == tool:
                found.setdefault((run.service_ms, run.rate), []).append(run)
        return found

    def bias(self, tool: str, percentile: str) -> Spread:
        """The tool's bias at one percentile over all its points: the median
        point's bias and the range of the points' medians."""
        return Spread.of(
            Spread.of(run.bias_ms[percentile] for run in rounds).median
            for rounds in self.points(tool).values()
        )

    def score(self, tool: str) -> float:
        """How far off the tool is: the mean over its points of the absolute
        median bias at p50 and p99 (ms). p99.9 rests on too few samples in a
        short run to rank tools by."""
        values = [
            abs(Spread.of(run.bias_ms[p] for run in rounds).median)
            for rounds in self.points(tool).values()
            for p in ("p50", "p99")
        ]
        return statistics.fmean(values)

    def least_biased(self) -> str:
        return min(self.tools, key=self.score)

    def summary(self, tool: str) -> str:
        """One line for beside a table: the tool and its bias."""
        parts = []
        for p in ("p50", "p99"):
            bias = self.bias(tool, p)
            parts.append(f"{p} {bias.median:+.2f} ms ({bias.low:+.2f} to {bias.high:+.2f})")
        return (
            f"its bias on the known-latency target, over {len(self.points(tool))} rates and "
            f"service times (median, and range): {', '.join(parts)}"
        )


def percentiles_ms(histogram: HdrHistogram) -> dict[str, float]:
    return {name: histogram.get_value_at_percentile(p) / 1000 for name, p in PERCENTILES.items()}


class KnownLatencyTargets:
    """One calibration target per service time, pinned to the server CPU."""

    def __init__(self, services_ms: tuple[float, ...], log_file: IO[bytes]) -> None:
        cpu = server_cpus()[0]
        self.ports: dict[float, int] = {}
        self.processes: list[ServerProcess] = []
        for service in services_ms:
            # Bound here on a port the kernel picks and handed to the child
            # open: a port probed free and bound later may be taken between.
            with socket.create_server(("127.0.0.1", 0), backlog=1024) as listener:
                fd = listener.fileno()
                port = listener.getsockname()[1]
                command = [
                    sys.executable, "-m", "selectorkv.lab.studies.calibration_target",
                    "--listen-fd", str(fd), "--service-ms", str(service), "--cpu", str(cpu),
                ]  # fmt: skip
                self.processes.append(
                    ServerProcess(command, port=port, log=log_file, pass_fds=(fd,))
                )
                self.ports[service] = port
        for target in self.processes:
            target.wait_ready(timeout=30)

    def url(self, service_ms: float) -> str:
        return f"http://127.0.0.1:{self.ports[service_ms]}/v0/entity"

    def holds(self, service_ms: float) -> HdrHistogram:
        """The target's holds since the last call (microseconds)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.ports[service_ms], timeout=10)
        try:
            conn.request("GET", "/hold")
            return HdrHistogram.decode(conn.getresponse().read())
        finally:
            conn.close()

    def ping(self, service_ms: float, requests: int) -> Floor:
        """A one-connection closed loop, paced: the round trip and the floor."""
        round_trip = HdrHistogram(1, 60_000_000, 3)
        holds = HdrHistogram(1, 60_000_000, 3)
        floor = HdrHistogram(1, 60_000_000, 3)
        request = b"GET /v0/entity?id=ping HTTP/1.1\r\nHost: calibration\r\n\r\n"
        with socket.create_connection(("127.0.0.1", self.ports[service_ms])) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(requests):
                sent = time.perf_counter()
                sock.sendall(request)
                answer = b""
                while not answer.endswith(b"x" * 64):  # the target's GET body
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise RuntimeError("the calibration target closed the ping connection")
                    answer += chunk
                micros = round((time.perf_counter() - sent) * 1e6)
                hold = int(answer.split(b"X-Hold-Us: ", 1)[1].split(b"\r\n", 1)[0])
                round_trip.record_value(max(1, micros))
                holds.record_value(max(1, hold))
                floor.record_value(max(1, micros - hold))
                time.sleep(PING_INTERVAL)
        self.holds(service_ms)  # the pings are not part of the first run's hold
        return Floor(percentiles_ms(round_trip), percentiles_ms(holds), percentiles_ms(floor))

    def close(self) -> None:
        for target in self.processes:
            target.stop(timeout=10)


@contextmanager
def targets(services_ms: tuple[float, ...], log_file: IO[bytes]) -> Iterator[KnownLatencyTargets]:
    started = KnownLatencyTargets(services_ms, log_file)
    try:
        yield started
    finally:
        started.close()


class Calibrator:
    """Measures each tool of the settings against the targets; writes
    calibration.json (and data/) under ``settings.out`` as it goes."""

    def __init__(self, settings: CalibrationSettings, out: IO[str]) -> None:
        self.settings = settings
        self.out = out
        self.data_dir = settings.out / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for old in self.data_dir.glob("*"):
            old.unlink()
        self.tools = {name: tools.choose(name) for name in settings.tools}
        self.calibration = Calibration(
            settings={k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
            machine=describe_machine(),
            versions={name: tools.tool_version(tool.name) for name, tool in self.tools.items()},
            warmups={name: tool.warmup_seconds for name, tool in self.tools.items()},
        )

    def say(self, text: str) -> None:
        self.out.write(f"[calibration {time.strftime('%H:%M:%S')}] {text}\n")
        self.out.flush()

    def run(self) -> Calibration:
        s = self.settings
        for tool in self.tools.values():
            if tool.warmup_seconds:
                self.say(tool.warmup_note(s.run_seconds))
        with open(s.out / "targets.log", "wb") as log_file, targets(s.services_ms, log_file) as up:
            for service in s.services_ms:
                floor = on_load_cpus(functools.partial(up.ping, service, s.ping_requests))
                self.calibration.floors[str(service)] = floor
                self.say(
                    f"target {service:g} ms: round trip p50 {floor.round_trip_ms['p50']:.3f} ms, "
                    f"of which the target held {floor.hold_ms['p50']:.3f}: "
                    f"floor {floor.floor_ms['p50']:.3f} ms"
                )
            names = list(self.tools)
            for number in range(s.repeat):
                shift = number % len(names)
                for name in names[shift:] + names[:shift]:
                    for service in s.services_ms:
                        for rate in s.rates:
                            self.measure(up, name, service, rate, number)
        self.calibration.finished = time.time()
        self.calibration.save(s.out)
        return self.calibration

    def measure(
        self, up: KnownLatencyTargets, name: str, service: float, rate: float, number: int
    ) -> None:
        s = self.settings
        tool = self.tools[name]
        up.holds(service)  # start the hold afresh
        started = time.monotonic()
        measurement = on_load_cpus(
            lambda: tool.constant_rate(up.url(service), s.workload, rate, s.connections,
                                       s.run_seconds)
        )  # fmt: skip
        seconds = time.monotonic() - started
        hold = percentiles_ms(up.holds(service))
        floor = self.calibration.floors[str(service)].floor_ms["p50"]
        measured = {p: measurement.figures["latency_ms"][p] for p in PERCENTILES}
        truth = {p: floor + hold[p] for p in PERCENTILES}
        stem = f"{name}-{service:g}ms-{round(rate)}-r{number + 1}"
        measurement.save(self.data_dir / stem)
        run = CalibrationRun(
            tool=name,
            service_ms=service,
            rate=rate,
            round=number,
            stem=f"data/{stem}",
            measured_ms=measured,
            hold_ms=hold,
            truth_ms=truth,
            bias_ms={p: measured[p] - truth[p] for p in PERCENTILES},
            served_rate=measurement.served_rate,
            seconds=seconds,
        )
        self.calibration.runs.append(run)
        self.calibration.save(s.out)
        short = (
            "" if run.served_rate >= tools.SERVED_SHARE * rate else " (NOT all of the rate served)"
        )
        self.say(
            f"{tool.name}, {service:g} ms, {rate:,.0f} req/s: "
            + ", ".join(
                f"{p} {measured[p]:.3f} (true {truth[p]:.3f}, bias {run.bias_ms[p]:+.3f})"
                for p in ("p50", "p99")
            )
            + f" ms; served {run.served_rate:,.0f}/s{short} (round {number + 1} of {s.repeat})"
        )
        time.sleep(SETTLE)


def bias_note(calibration_dir: Path, tool: str, link: str) -> str:
    """A sentence for beside a table: the tool (its ``LoadTool.name``) and
    its bias from the calibration in ``calibration_dir``, linked as ``link``."""
    key = tools.key_of(tool)
    path = calibration_dir / "calibration.json"
    if not path.exists():
        return (
            f"Measured with **{tool}**; its bias was not measured for this report (no "
            "calibration beside it: `selectorkv lab --calibrate`)."
        )
    calibration = Calibration.load(calibration_dir)
    if key not in calibration.tools:
        return f"Measured with **{tool}**, which [the calibration]({link}) did not measure."
    return f"Measured with **{tool}**; {calibration.summary(key)} ([calibration]({link}))."


def available_tools() -> tuple[str, ...]:
    """The tools this machine has: selectorkv load always, wrk and wrk2 when found."""
    return tuple(name for name in tools.FACTORIES if tools.find(name) is not None)


def for_study(out: Path, tool: str, run_seconds: float, connections: int, log: IO[str]) -> None:
    """The study's own short calibration of its tool, into ``out``."""
    settings = CalibrationSettings(
        out=out,
        tools=(tool,),
        services_ms=(0.0, 1.0),
        rates=(1000.0, 3000.0),
        run_seconds=run_seconds,
        repeat=1,
        ping_requests=QUICK["ping_requests"],  # type: ignore[arg-type]
        connections=connections,
    )
    out.mkdir(parents=True, exist_ok=True)
    Calibrator(settings, log).run()
