"""``selectorkv lab --cluster N``: blocking against asynchronous peer calls,
on a local cluster, healthy and with a node down.

The single-node study's method between nodes, where there is real waiting:
the server setup each peer-call style serves best at (``choose_setups``);
per replication and scenario (healthy, the last node stopped), capacity, a
ladder and the step search of both styles in rounds (``StyleComparison``);
a run during which a node hangs, the profiles of node 1 and the scale-out
(``ClusterScenarios``). The load goes round-robin over the entry nodes, a
stopped node never among them; a rate is held on the answers the cluster
can give (``reachable_share``). Each node's Python threads are pinned to one
of the server CPUs in turn. docs/lab.md, "The cluster study".
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from selectorkv.cluster.placement import Topology
from selectorkv.config import DEFAULTS
from selectorkv.kv.records import FORMAT_FILE
from selectorkv.lab.harness import profile
from selectorkv.lab.harness.cpus import on_load_cpus, server_cpus
from selectorkv.lab.harness.rounds import rotated
from selectorkv.lab.harness.servers import ServerProcess, free_port
from selectorkv.lab.harness.spread import Spread
from selectorkv.lab.load import generator as load
from selectorkv.lab.load.fill import fill as fill_database
from selectorkv.lab.load.keyspace import all_keys
from selectorkv.lab.load.tools import SERVED_SHARE, Measurement, served_rate
from selectorkv.lab.studies.node import (
    SETTLE,
    Workbench,
    describe_machine,
    describe_versions,
    start_server,
    stop_server,
)

PEER_CALLS = ("blocking", "async")
SCENARIOS = ("healthy", "stopped")  # stopped: the last node, SIGSTOP, for the whole run
TOOL = "selectorkv load"  # the only tool that spreads over several URLs and keeps a timeline
TIMELINE_BUCKET = 0.1  # seconds of due time per point of the hang's latency over time
PROFILE_KINDS = ("cpu", "wait")


@dataclass
class ClusterSettings:
    out: Path
    data: Path
    size: int
    nodes: int
    connections: int
    capacity_seconds: float
    run_seconds: float
    profile_seconds: float
    hang_seconds: float
    ladder: tuple[float, ...]
    refine: int
    repeat: int
    p99_bound_ms: float
    drain_seconds: float
    peer_timeout: float
    scale: tuple[int, ...]
    quick: bool
    profile_scenarios: tuple[str, ...]
    workloads: tuple[str, ...] = ("get", "put")


FULL = {
    "capacity_seconds": 3.0,
    "run_seconds": 4.0,
    "profile_seconds": 4.0,
    "hang_seconds": 30.0,
    "ladder": (0.1, 0.25, 0.5, 0.75, 1.0),
    "refine": 1,
    "repeat": 3,
    "profile_scenarios": ("healthy", "stopped"),
}
QUICK = {
    "capacity_seconds": 1.0,
    "run_seconds": 2.0,
    "profile_seconds": 2.0,
    "hang_seconds": 6.0,
    "ladder": (0.5, 1.0),
    "refine": 0,
    "repeat": 1,
    "profile_scenarios": ("stopped",),
}


def setups(connections: int) -> tuple[str, ...]:
    """The server setups tried for each style: a mode, and in async mode
    the default workers or one per load connection (``async-w64``)."""
    return ("sync", "async", f"async-w{connections}")


def setup_flags(setup: str) -> tuple[str, tuple[str, ...]]:
    """The server mode and the extra flags of a setup."""
    mode, _, workers = setup.partition("-w")
    return mode, ("--workers", workers) if workers else ()


def replications(nodes: int) -> dict[str, str]:
    """label -> the query that asks for it: the default ack/from, and 1/1."""
    return {f"{nodes // 2 + 1}/{nodes}": "", "1/1": "ack=1&from=1"}


def reachable_share(nodes: int, replicas: int, ack: int, down: int | None) -> float:
    """The share of the key space whose requests can be answered with node
    ``down`` (an index) stopped: those with at least ``ack`` replicas up."""
    if down is None:
        return 1.0
    urls = [f"http://127.0.0.1:{i}" for i in range(nodes)]  # placement scores only the URLs'
    topology = Topology(tuple(urls), urls[0])  # order; the ports stand for the nodes' own
    stopped = urls[down]
    keys = reachable = 0
    for key in all_keys():
        keys += 1
        reachable += replicas - (stopped in topology.replicas(key, replicas)) >= ack
    return reachable / keys


@dataclass
class ClusterRun:
    """One load run, as runs.json keeps it."""

    workload: str
    calls: str  # blocking | async | single (scale-out's plain node) | cluster-<n>
    mode: str  # the server setup it ran in (setups)
    replication: str  # 2/3, 1/1
    scenario: str  # healthy, stopped, hang
    phase: str  # capacity, mode, ladder, search, hang, scale, profile-<kind>[-flamegraph]
    rate: float  # the target rate; 0 in the closed loop
    stem: str
    figures: dict[str, Any]
    held: bool
    round: int = 0
    cpu_s: float = 0.0  # CPU seconds of every node process during the run
    skipped: bool = False  # not run: a lower rate failed in the same round


@dataclass
class ClusterStudy:
    settings: dict[str, Any]
    tool: str
    load_cpus: list[int]
    server_cpus: list[int]
    machine: list[str]
    versions: str
    peer_timeout: float
    workers: int
    # workload -> calls -> the server setup it was measured in
    chosen_mode: dict[str, dict[str, str]] = field(default_factory=dict)
    reachable: dict[str, float] = field(default_factory=dict)  # replication -> share, one stopped
    # workload -> replication -> scenario -> calls -> the breaking point (median rounds)
    breaking_point: dict[str, dict[str, dict[str, dict[str, float | None]]]] = field(
        default_factory=dict
    )
    hang: dict[str, Any] = field(default_factory=dict)  # stop and resume times (s into the run)
    profiles: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    runs: list[ClusterRun] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    finished: float = 0.0

    def save(self, out: Path) -> None:
        (out / "runs.json").write_text(json.dumps(asdict(self), indent=1, default=str) + "\n")


IDLE_ANSWER = 0.2  # seconds: a node that answers its status this fast is idle
IDLE_LIMIT = 120.0  # seconds to wait for a cluster to become idle before a run


def answers_quickly(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=IDLE_ANSWER)
        conn.request("GET", "/v0/status")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except (OSError, http.client.HTTPException):
        return False


class StudyNodes:
    """N ``selectorkv serve`` nodes (or one plain node when ``nodes`` is 1
    and ``plain``), each on its own copy of the filled data, pinned in turn
    to the server CPUs."""

    def __init__(
        self,
        nodes: int,
        mode: str,
        calls: str,
        data: Path,
        scratch: Path,
        log_file: IO[bytes],
        plain: bool = False,
        peer_timeout: float | None = None,
    ) -> None:
        self.ports = [free_port() for _ in range(nodes)]
        self.urls = [f"http://127.0.0.1:{port}" for port in self.ports]
        self.stopped: set[int] = set()
        self.nodes: list[ServerProcess] = []
        self._copies: list[Path] = []
        env = {**os.environ, "SELECTORKV_CLUSTER_TOKEN": secrets.token_hex(16)}
        cpus = server_cpus(nodes)
        try:
            for i, port in enumerate(self.ports):
                copy = Path(tempfile.mkdtemp(dir=scratch, prefix=f"{calls}-{mode}-{i}-"))
                shutil.rmtree(copy)
                shutil.copytree(data, copy)
                self._copies.append(copy)
                server_mode, flags = setup_flags(mode)
                extra = ("--cpu", str(cpus[i % len(cpus)]), *flags)
                if plain:
                    (copy / FORMAT_FILE).unlink()  # served as a single node's
                else:
                    extra += ("--cluster", ",".join(self.urls), "--self", self.urls[i],
                              "--peer-calls", calls)  # fmt: skip
                    if peer_timeout is not None:
                        extra += ("--peer-timeout", str(peer_timeout))
                self.nodes.append(start_server(server_mode, copy, log_file, extra=extra,
                                               env=env, port=port, wait=False))  # fmt: skip
            for node in self.nodes:  # started together, waited for together
                node.wait_ready()
        except BaseException:
            self.stop()
            raise

    def entry_urls(self) -> list[str]:
        """Where the load goes: every node that is not stopped."""
        return [url for i, url in enumerate(self.urls) if i not in self.stopped]

    def pause(self, index: int) -> None:
        self.nodes[index].pause()
        self.stopped.add(index)

    def resume(self, index: int) -> None:
        self.nodes[index].resume()
        self.stopped.discard(index)

    def cpu(self) -> float:
        return sum(node.cpu_seconds() for node in self.nodes)

    def wait_idle(self, limit: float) -> bool:
        """Wait until every node that is up answers ``/v0/status`` within
        IDLE_ANSWER: the requests an earlier run left queued are done (a
        node whose threads block on a stopped peer may hold many, a second
        each). False if that took longer than ``limit`` seconds."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if all(answers_quickly(self.ports[i]) for i in range(len(self.ports))
                   if i not in self.stopped):  # fmt: skip
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        for index in list(self.stopped):
            self.resume(index)  # a stopped node must see its SIGTERM
        try:
            for node in self.nodes:
                stop_server(node)
        finally:
            for copy in self._copies:
                shutil.rmtree(copy, ignore_errors=True)


class ClusterLab(Workbench):
    def __init__(self, settings: ClusterSettings, out: IO[str]) -> None:
        self.settings = settings
        self.study = ClusterStudy(
            settings={k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
            tool=TOOL,
            load_cpus=sorted(set(os.sched_getaffinity(0)) - set(server_cpus(settings.nodes))),
            server_cpus=server_cpus(settings.nodes),
            machine=describe_machine(),
            versions=describe_versions(TOOL),
            peer_timeout=settings.peer_timeout,
            workers=DEFAULTS.workers,
        )
        super().__init__(settings.out, out)
        self.scale: dict[tuple[str, str], float] = {}  # (workload, replication) -> req/s

    @contextmanager
    def cluster(
        self, nodes: int, mode: str, calls: str, plain: bool = False
    ) -> Iterator[StudyNodes]:
        s = self.settings
        cluster = StudyNodes(
            nodes, mode, calls, s.data, self.scratch, self.server_log, plain, s.peer_timeout
        )
        try:
            yield cluster
        finally:
            cluster.stop()

    def run(self) -> ClusterStudy:
        s = self.settings
        try:
            self.say(f"filling {s.data} to {s.size / 2**20:.0f} MiB (as a cluster node's)")
            fill_database(str(s.data), s.size, None, records=True)
            for label, query in replications(s.nodes).items():
                ack, replicas = (1, 1) if query else (s.nodes // 2 + 1, s.nodes)
                self.study.reachable[label] = reachable_share(s.nodes, replicas, ack, s.nodes - 1)
            for workload in s.workloads:
                self.measure_workload(workload)
                self.study.save(s.out)
            ClusterScenarios(self).scale_out()
        finally:
            self.close()
        self.study.finished = time.time()
        self.study.save(s.out)
        return self.study

    # -- measuring ---------------------------------------------------------

    def measure(
        self,
        cluster: StudyNodes,
        run: ClusterRun,
        *,
        closed_loop: bool = False,
        seconds: float | None = None,
        timeline: float = 0.0,
        during: HangSignals | None = None,
        entries: list[str] | None = None,
    ) -> ClusterRun:
        """One load run against ``cluster``'s entry nodes (or ``entries``);
        ``during``, if given, runs beside the load (the hang's signals)."""
        s = self.settings
        duration = seconds or (s.capacity_seconds if closed_loop else s.run_seconds)
        query = replications(s.nodes).get(run.replication, "")
        urls = ",".join(entries or cluster.entry_urls())
        if query:
            urls = urls.replace(",", f"/?{query},", 1) if "," in urls else f"{urls}/?{query}"
        rate = run.rate or 1e6
        if not cluster.wait_idle(IDLE_LIMIT):
            self.say(f"{run.calls}/{run.mode}: still busy after {IDLE_LIMIT:g} s; measuring anyway")
        cpu_before = cluster.cpu()
        if during is not None:
            during.start()
        report = on_load_cpus(
            functools.partial(
                load.generate, urls, run.workload, rate, s.connections, duration, 1,
                closed_loop=closed_loop, timeline=timeline, drain=s.drain_seconds,
            ),
            s.nodes,
        )  # fmt: skip
        if during is not None:
            during.join()
        run.cpu_s = cluster.cpu() - cpu_before
        measurement = Measurement(report.as_json(), report.histogram)
        if closed_loop:
            measurement.figures["target_rate"] = None
        run.figures = measurement.figures
        share = self.study.reachable[run.replication] if cluster.stopped else 1.0
        run.held = (not closed_loop) and held_cluster(run.figures, share, s.p99_bound_ms)
        stem = "-".join(
            [run.workload, run.calls, run.mode, run.replication.replace("/", "of"), run.scenario,
             run.phase, str(round(run.rate))] + ([f"r{run.round + 1}"] if s.repeat > 1 else [])
        )  # fmt: skip
        measurement.save(self.data_dir / stem)
        run.stem = f"data/{stem}"
        self.study.runs.append(run)
        lat = run.figures["latency_ms_served"]
        what = "capacity" if closed_loop else f"{run.rate:,.0f} req/s"
        self.say(
            f"{run.workload} {run.calls}/{run.mode} {run.replication} {run.scenario} {run.phase} "
            f"{what}: answered {run.figures['rate']:,.0f}/s, "
            f"statuses {run.figures['status_counts']}"
            f", served p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} ms"
            + ("" if closed_loop else f", {'held' if run.held else 'NOT held'}")
        )
        time.sleep(SETTLE)
        return run

    def new_run(self, workload: str, calls: str, mode: str, replication: str, scenario: str,
                phase: str, rate: float = 0.0, number: int = 0) -> ClusterRun:  # fmt: skip
        return ClusterRun(workload, calls, mode, replication, scenario, phase, rate, "", {},
                          False, number)  # fmt: skip

    def measure_workload(self, workload: str) -> None:
        s = self.settings
        default = next(iter(replications(s.nodes)))
        chosen = self.choose_setups(workload, default)
        self.study.chosen_mode[workload] = chosen
        self.say(f"{workload}: server setups chosen by capacity: {chosen}")
        self.study.breaking_point[workload] = {}
        with ExitStack() as stack:
            clusters_by_calls = {
                calls: stack.enter_context(self.cluster(s.nodes, chosen[calls], calls))
                for calls in PEER_CALLS
            }
            for replication in replications(s.nodes):
                points = self.study.breaking_point[workload].setdefault(replication, {})
                for scenario in SCENARIOS:
                    if scenario == "stopped":
                        for cluster in clusters_by_calls.values():
                            cluster.pause(s.nodes - 1)
                    try:
                        points[scenario] = StyleComparison(
                            self, (workload, replication, scenario), clusters_by_calls, chosen
                        ).breaking_points()
                    finally:
                        for cluster in clusters_by_calls.values():
                            if cluster.stopped:
                                cluster.resume(s.nodes - 1)
            scenarios = ClusterScenarios(self)
            scenarios.hang(workload, default, clusters_by_calls, chosen)
            if workload == ("get" if "get" in s.workloads else s.workloads[0]):
                scenarios.profile(workload, default, clusters_by_calls, chosen)

    def choose_setups(self, workload: str, default: str) -> dict[str, str]:
        """The server setup for each style: each measured in the closed
        loop, healthy, in rounds; the one with the higher median kept."""
        s = self.settings
        with ExitStack() as stack:
            clusters = {
                (calls, setup): stack.enter_context(self.cluster(s.nodes, setup, calls))
                for calls in PEER_CALLS
                for setup in setups(s.connections)
            }
            capacity: dict[tuple[str, str], list[float]] = {key: [] for key in clusters}
            for number in range(s.repeat):
                for key in rotated(list(clusters), number):
                    run = self.measure(
                        clusters[key],
                        self.new_run(
                            workload, key[0], key[1], default, "healthy", "mode", number=number
                        ),
                        closed_loop=True,
                    )
                    capacity[key].append(served_rate(run.figures))
        chosen = {
            calls: max(
                setups(s.connections), key=lambda setup: Spread.of(capacity[(calls, setup)]).median
            )
            for calls in PEER_CALLS
        }
        return chosen

    def common_rate(self, workload: str, replication: str) -> float:
        """A rate that both styles serve when healthy: half the lower
        breaking point; if a style held no rate, the lowest rate tried."""
        points = self.study.breaking_point[workload][replication]["healthy"]
        if all(points.values()):
            return float(max(1, round(min(p or 0 for p in points.values()) / 2)))
        tried = [r.rate for r in self.study.runs if r.workload == workload
                 and r.replication == replication and r.scenario == "healthy"
                 and r.phase == "ladder"]  # fmt: skip
        return min(tried)


class StyleComparison:
    """Capacity, ladder and step search of both peer-call styles, in rounds,
    for one workload, replication and scenario: the breaking point of each."""

    def __init__(
        self,
        lab: ClusterLab,
        run: tuple[str, str, str],
        clusters: dict[str, StudyNodes],
        chosen: dict[str, str],
    ) -> None:
        self.lab = lab
        self.workload, self.replication, self.scenario = run
        self.clusters = clusters
        self.chosen = chosen
        self.measured: dict[str, dict[float, list[ClusterRun]]] = {c: {} for c in PEER_CALLS}

    def breaking_points(self) -> dict[str, float | None]:
        s = self.lab.settings
        for rate in self.ladder(self.capacity()):
            self.probe({calls: rate for calls in PEER_CALLS}, "ladder")
        low: dict[str, float | None] = {}
        high: dict[str, float] = {}
        for calls in PEER_CALLS:
            held_rates = [r for r, runs in self.measured[calls].items() if rounds_held(runs)]
            low[calls] = max(held_rates) if held_rates else None
            above = [r for r in self.measured[calls] if held_rates and r > max(held_rates)]
            if above:
                high[calls] = min(above)
        self.search(low, high, s.refine)
        for calls in PEER_CALLS:
            self.lab.say(
                f"{self.workload} {self.replication} {self.scenario} {calls}: "
                f"breaking point {low[calls]}"
            )
        return low

    def new_run(self, calls: str, phase: str, rate: float = 0.0, number: int = 0) -> ClusterRun:
        return self.lab.new_run(self.workload, calls, self.chosen[calls], self.replication,
                                self.scenario, phase, rate, number)  # fmt: skip

    def capacity(self) -> dict[str, list[float]]:
        """Each style's closed-loop capacity, per round."""
        capacity: dict[str, list[float]] = {calls: [] for calls in PEER_CALLS}
        for number in range(self.lab.settings.repeat):
            for calls in rotated(list(PEER_CALLS), number):
                run = self.lab.measure(
                    self.clusters[calls], self.new_run(calls, "capacity", number=number),
                    closed_loop=True,
                )  # fmt: skip
                capacity[calls].append(served_rate(run.figures))
        return capacity

    def ladder(self, capacity: dict[str, list[float]]) -> list[float]:
        """The ladder's rates. Its scale is the larger healthy capacity, for
        the stopped node too, so that both scenarios run at the same rates (a
        closed loop whose connections wait out peer timeouts says little)."""
        key = (self.workload, self.replication)
        if self.scenario == "healthy":
            self.lab.scale[key] = max(Spread.of(rounds).median for rounds in capacity.values())
        top = self.lab.scale[key]
        return sorted({max(1, round(top * fraction)) for fraction in self.lab.settings.ladder})

    def probe(self, rates: dict[str, float], phase: str) -> None:
        """Each style at its rate, in rounds; above a failure, skipped."""
        for number in range(self.lab.settings.repeat):
            for calls in rotated(list(rates), number):
                rate = rates[calls]
                earlier = [
                    runs[number] for r, runs in self.measured[calls].items()
                    if r < rate and len(runs) > number
                ]  # fmt: skip
                run = self.new_run(calls, phase, rate, number)
                if phase == "ladder" and any(not before.held for before in earlier):
                    run.skipped = True
                    self.lab.study.runs.append(run)
                else:
                    self.lab.measure(self.clusters[calls], run)
                self.measured[calls].setdefault(rate, []).append(run)

    def search(self, low: dict[str, float | None], high: dict[str, float], halvings: int) -> None:
        """The step search: halve the interval above each style's highest
        held rate ``halvings`` times, moving ``low`` and ``high``."""
        for _ in range(halvings):
            probes = {}
            for calls, top_rate in high.items():
                bottom = low[calls]
                assert bottom is not None
                middle = float(round((bottom + top_rate) / 2))
                if middle not in (bottom, top_rate):
                    probes[calls] = middle
            if not probes:
                break
            self.probe(probes, "search")
            for calls, middle in probes.items():
                if rounds_held(self.measured[calls][middle]):
                    low[calls] = middle
                else:
                    high[calls] = middle


class ClusterScenarios:
    """The study's runs beyond the comparison of the styles: a node hanging
    mid-run, the profiles of node 1, and the scale-out."""

    def __init__(self, lab: ClusterLab) -> None:
        self.lab = lab

    def hang(
        self, workload: str, replication: str, clusters: dict[str, StudyNodes],
        chosen: dict[str, str],
    ) -> None:  # fmt: skip
        """A run during which the last node hangs (SIGSTOP) from one third
        to two thirds of the way, at the common rate."""
        s = self.lab.settings
        rate = self.lab.common_rate(workload, replication)
        stop_at, resume_at = s.hang_seconds / 3, 2 * s.hang_seconds / 3
        self.lab.study.hang = {"stop_s": stop_at, "resume_s": resume_at, "node": s.nodes}
        last = s.nodes - 1
        for calls in PEER_CALLS:
            cluster = clusters[calls]
            run = self.lab.new_run(
                workload, calls, chosen[calls], replication, "hang", "hang", rate
            )
            try:
                self.lab.measure(
                    cluster, run, seconds=s.hang_seconds, timeline=TIMELINE_BUCKET,
                    during=HangSignals(cluster, last, stop_at, resume_at),
                    entries=[url for i, url in enumerate(cluster.urls) if i != last],
                )  # fmt: skip
            finally:
                if last in cluster.stopped:
                    cluster.resume(last)

    def profile(
        self, workload: str, replication: str, clusters: dict[str, StudyNodes],
        chosen: dict[str, str],
    ) -> None:  # fmt: skip
        """py-spy CPU and wait profiles of node 1 under both styles at the
        common rate, in the settings' profile scenarios (healthy, and with
        the last node stopped)."""
        s = self.lab.settings
        rate = self.lab.common_rate(workload, replication)
        self.lab.study.profiles[workload] = {}
        for scenario in s.profile_scenarios:
            for calls in PEER_CALLS:
                cluster = clusters[calls]
                if scenario == "stopped":
                    cluster.pause(s.nodes - 1)
                try:
                    found_files = {}
                    for kind in PROFILE_KINDS:
                        stem = f"{workload}-{scenario}-{calls}-{kind}"
                        for fmt, suffix in profile.FORMATS:
                            recorder = on_load_cpus(
                                functools.partial(
                                    profile.start_pyspy, cluster.nodes[0].pid,
                                    s.profile_seconds, self.lab.profile_dir / f"{stem}{suffix}",
                                    kind, fmt,
                                ),
                                s.nodes,
                            )  # fmt: skip
                            phase = f"profile-{kind}" + ("" if fmt == "speedscope" else f"-{fmt}")
                            self.lab.measure(
                                cluster,
                                self.lab.new_run(workload, calls, chosen[calls], replication,
                                             scenario, phase, rate),
                                seconds=s.profile_seconds + 1.5,
                            )  # fmt: skip
                            profile.finish(recorder)
                        found_files[kind] = f"profiles/{stem}"
                    self.lab.study.profiles[workload][f"{scenario} {calls}"] = found_files
                finally:
                    if cluster.stopped:
                        cluster.resume(s.nodes - 1)
        self.lab.say(f"{workload}: profiles of node 1 recorded at {rate:,.0f} req/s")

    def scale_out(self) -> None:
        """One plain node against clusters asked 1/1, in rounds: capacity,
        then a constant rate of half the plain node's capacity."""
        s = self.lab.settings
        mode = "async"
        with ExitStack() as stack:
            targets = {
                n: stack.enter_context(self.lab.cluster(n, mode, "async", plain=n == 1))
                for n in s.scale
            }
            for workload in s.workloads:
                capacity: dict[int, list[float]] = {n: [] for n in targets}
                for number in range(s.repeat):
                    for n in rotated(list(targets), number):
                        run = self.lab.measure(
                            targets[n],
                            self.lab.new_run(workload, scale_label(n), mode, "1/1", "healthy",
                                         "scale-capacity", number=number),
                            closed_loop=True,
                        )  # fmt: skip
                        capacity[n].append(served_rate(run.figures))
                rate = max(1.0, round(Spread.of(capacity[min(targets)]).median / 2))
                for number in range(s.repeat):
                    for n in rotated(list(targets), number):
                        self.lab.measure(
                            targets[n],
                            self.lab.new_run(workload, scale_label(n), mode, "1/1", "healthy",
                                         "scale", rate, number),
                        )  # fmt: skip


def scale_label(nodes: int) -> str:
    return "single" if nodes == 1 else f"cluster-{nodes}"


class HangSignals:
    """Stops a node at ``stop_at`` seconds and resumes it at ``resume_at``,
    in a thread beside the load run."""

    def __init__(self, cluster: StudyNodes, index: int, stop_at: float, resume_at: float) -> None:
        self._thread = threading.Thread(target=self._run, name="lab-hang", daemon=True)
        self._cluster, self._index = cluster, index
        self._stop_at, self._resume_at = stop_at, resume_at

    def start(self) -> None:
        self._started = time.monotonic() + load.START_AFTER  # when request 0 is due
        self._thread.start()

    def _run(self) -> None:
        time.sleep(max(0.0, self._started + self._stop_at - time.monotonic()))
        self._cluster.pause(self._index)
        time.sleep(max(0.0, self._started + self._resume_at - time.monotonic()))
        self._cluster.resume(self._index)

    def join(self) -> None:
        self._thread.join()


def held_cluster(figures: dict[str, Any], share: float, bound_ms: float) -> bool:
    """One run held its rate: of the requests it sent, SERVED_SHARE of those
    the cluster can answer (``share``) were served (below 500), their p99
    within the bound, and no errors. Counted in requests, not per second
    as study.held does: a run whose last requests wait out a peer timeout
    ends that much later, and its rate over the longer time would fall
    short of a rate it kept."""
    served = sum(n for code, n in figures["status_counts"].items() if code[0] in "1234")
    sent: int = figures["requests"] + figures["errors"]
    p99: float = figures["latency_ms_served"]["p99"]
    return served >= SERVED_SHARE * share * sent and p99 <= bound_ms and figures["errors"] == 0


def rounds_held(runs: list[ClusterRun]) -> bool:
    """A rate's verdict: the median of its rounds (a skipped round: not held)."""
    verdicts = sorted(run.held and not run.skipped for run in runs)
    return verdicts[(len(verdicts) - 1) // 2]  # of two rounds, both must hold
