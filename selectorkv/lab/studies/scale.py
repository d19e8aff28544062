"""The scale-out study: what N nodes serve against one, each node limited
to the same CPU share (``selectorkv lab --scale-out``, ``make scale``).

# design

A cluster can only show that it scales where each node has a core of its
own and the load has more. On a machine of two cores that is made with
cgroup quotas (harness/cgroups.py): every node may use the same share of
one CPU (a fifth by default, so that four nodes take 0.8 of the servers'
CPU and never meet its limit), all nodes on the highest CPU and the load
on the others. N nodes are then N equal small cores. With ``share`` None
(``--quota none``), on a machine with more cores, each node gets a CPU of
its own instead and the load the rest.

For each workload, new clusters of each node count (1, 2, 4 by default),
all up at once (before the GETs, each node given the same PUTs and left
until its flushes and compactions are done: every node reads the same
kind of data, whatever its cluster ran before), and the runs in rounds,
the order rotated each round:

- capacity, closed loop: one wrk per node (``wrk_scripts/``), each with
  the connections one node gets alone (``--connections``), sending either
  the keys its node holds (``placement``: a client that knows the
  placement, ``SELECTORKV_KEYS_FILE``) or any key (``round-robin``: the
  node coordinates what it does not hold). Answers per second, and the
  nodes' CPU time per answer. Each node sees the load shape one node
  sees: split among the nodes, the connections would leave each node
  smaller rounds, and a round's fixed costs would be counted against the
  cluster (docs/cluster.md, "Scaling", measures that effect);
- then a constant rate of half of each configuration's capacity, with
  ``selectorkv load`` (open loop, latency from each request's due time,
  ``--route`` as above): p50 and p99;

for 1/1 and for the majority of three (``ack=2&from=3``; 2 of 2 on two
nodes), PUT and GET. The report gives each configuration's capacity
against N times one node's, ratio taken within each round, and its CPU per
answer against one node's (reports/scale_report.py).
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from selectorkv.cluster.placement import Topology
from selectorkv.lab.harness.cgroups import Quotas
from selectorkv.lab.harness.cpus import load_cpus, on_load_cpus, pinned, server_cpus
from selectorkv.lab.harness.rounds import rotated
from selectorkv.lab.harness.servers import ServerProcess, free_port, selectorkv_serve
from selectorkv.lab.harness.spread import Spread
from selectorkv.lab.load import generator
from selectorkv.lab.load.keyspace import all_keys
from selectorkv.lab.load.tools import WRK_SCRIPTS
from selectorkv.lab.studies.node import describe_machine, describe_versions

ROUTES = ("placement", "round-robin")
SETTLE = 0.5  # seconds between runs: the previous run's queues drain
IDLE = 0.01  # a node using less of a CPU than this has no background work left


@dataclass
class ScaleSettings:
    out: Path
    counts: tuple[int, ...] = (1, 2, 4)
    share: float | None = None  # each node's share of one CPU; None: a CPU each, no quota
    connections: int = 64
    capacity_seconds: float = 4.0
    run_seconds: float = 4.0
    repeat: int = 3
    workloads: tuple[str, ...] = ("put", "get")
    mode: str = "async"
    quick: bool = False


FULL = {"capacity_seconds": 4.0, "run_seconds": 4.0, "repeat": 3}
QUICK = {"capacity_seconds": 1.0, "run_seconds": 1.0, "repeat": 1}


def default_share(counts: tuple[int, ...]) -> float:
    """A share of one CPU per node that leaves the most nodes a fifth of
    the servers' CPU unused: 1 / (most nodes + 1)."""
    return round(1 / (max(counts) + 1), 3)


def replications(nodes: int) -> dict[str, str]:
    """label -> query: 1/1, and the majority of three (of two on two nodes)."""
    found = {"1/1": "ack=1&from=1"}
    if nodes > 1:
        replicas = min(3, nodes)
        found[f"{replicas // 2 + 1}/{replicas}"] = f"ack={replicas // 2 + 1}&from={replicas}"
    return found


@dataclass
class ScaleRun:
    """One run, as runs.json keeps it."""

    workload: str
    nodes: int
    route: str
    replication: str
    phase: str  # capacity | fixed
    round: int
    rate: float  # fixed: the rate asked for; capacity: 0
    answered_per_s: float
    errors: int
    cpu_s: float
    answered: int
    p50_ms: float | None = None
    p99_ms: float | None = None


@dataclass
class ScaleStudy:
    settings: dict[str, Any]
    machine: list[str]
    versions: str
    server_cpus: list[int]
    load_cpus: list[int]
    runs: list[ScaleRun] = field(default_factory=list)
    throttled_s: float = 0.0  # how long the quotas held the nodes back, in all
    finished: float = 0.0

    def save(self, out: Path) -> None:
        (out / "runs.json").write_text(json.dumps(asdict(self), indent=1, default=str) + "\n")

    @classmethod
    def load(cls, out: Path) -> ScaleStudy:
        raw = json.loads((out / "runs.json").read_text())
        raw["runs"] = [ScaleRun(**run) for run in raw["runs"]]
        return cls(**raw)


class ScaleCluster:
    """N nodes (``selectorkv serve --cluster``), each on an empty data
    directory; pinned, and limited by ``quotas`` when given."""

    def __init__(
        self, nodes: int, settings: ScaleSettings, scratch: Path, log: IO[bytes],
        quotas: Quotas | None,
    ) -> None:  # fmt: skip
        self.ports = [free_port() for _ in range(nodes)]
        self.urls = [f"http://127.0.0.1:{port}" for port in self.ports]
        self.topology = Topology(tuple(self.urls), self.urls[0])
        env = {"SELECTORKV_CLUSTER_TOKEN": secrets.token_hex(16)}
        cpus = server_cpus(1) if settings.share is not None else server_cpus(nodes)
        self.processes: list[ServerProcess] = []
        self.data: list[str] = []
        for i, port in enumerate(self.ports):
            data = tempfile.mkdtemp(dir=scratch, prefix=f"n{nodes}-{i}-")
            self.data.append(data)
            cpu = cpus[i % len(cpus)]
            command = selectorkv_serve(
                "--mode", settings.mode, "--port", str(port), "--data", data, "--cpu", str(cpu),
                "--log-level", "warning", "--cluster", ",".join(self.urls), "--self", self.urls[i],
            )  # fmt: skip
            self.processes.append(ServerProcess(command, port=port, env=env, log=log, cpus=[cpu]))
        for process in self.processes:
            process.wait_ready()
            if quotas is not None and settings.share is not None:
                quotas.limit(process.pid, settings.share)
        self.key_files = self._key_files(scratch / f"keys-{nodes}")

    def _key_files(self, directory: Path) -> list[Path]:
        """The keys of the workload's key space that each node holds first."""
        directory.mkdir(exist_ok=True)  # a later workload's clusters: new ports, new files
        by_node: dict[str, list[str]] = {url: [] for url in self.urls}
        for key in all_keys():
            by_node[self.topology.replicas(key, 1)[0]].append(key.decode())
        files = []
        for i, url in enumerate(self.urls):
            files.append(directory / f"node-{i}")
            files[-1].write_text("\n".join(by_node[url]) + "\n")
        return files

    def cpu(self) -> float:
        return sum(process.cpu_seconds() for process in self.processes)

    def settle(self, limit: float = 60.0) -> float:
        """Wait until the nodes are idle (under IDLE of a CPU each over
        half a second: their flushes and compactions done), at most
        ``limit`` seconds; the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < limit:
            before = self.cpu()
            time.sleep(0.5)
            if self.cpu() - before < IDLE * 0.5 * len(self.processes):
                break
        return time.monotonic() - started

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        for data in self.data:
            shutil.rmtree(data, ignore_errors=True)


def wrk_closed_loop(
    url: str, workload: str, seconds: float, connections: int, env: dict[str, str]
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*pinned(load_cpus(1)), "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
         "-s", str(WRK_SCRIPTS / f"{workload}.lua"), url],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def wrk_answers(output: str) -> tuple[int, int]:
    """(requests answered, socket errors) of a wrk run. A GET of a key no
    PUT wrote is answered 404, an answer like any other (wrk counts it
    among the "non-2xx")."""
    found = re.search(r"(\d+) requests in", output)
    if found is None:
        raise RuntimeError(f"no request count in wrk's output:\n{output}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)  # fmt: skip
    return int(found.group(1)), sum(int(n) for n in errors.groups()) if errors else 0


class ScaleLab:
    def __init__(self, settings: ScaleSettings, out: IO[str]) -> None:
        self.settings = settings
        self.out = out
        single = settings.share is not None
        self.study = ScaleStudy(
            settings={k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()},
            machine=describe_machine(),
            versions=describe_versions("wrk"),
            server_cpus=server_cpus(1 if single else max(settings.counts)),
            load_cpus=sorted(load_cpus(1 if single else max(settings.counts))),
        )

    def say(self, text: str) -> None:
        self.out.write(f"[scale {time.strftime('%H:%M:%S')}] {text}\n")
        self.out.flush()

    @contextmanager
    def clusters(self, scratch: Path, log: IO[bytes]) -> Iterator[dict[int, ScaleCluster]]:
        s = self.settings
        with ExitStack() as stack:
            quotas = stack.enter_context(Quotas("selectorkv-scale")) if s.share else None
            clusters: dict[int, ScaleCluster] = {}
            try:
                for n in s.counts:
                    clusters[n] = ScaleCluster(n, s, scratch, log, quotas)
                yield clusters
                if quotas is not None:
                    self.study.throttled_s += quotas.throttled_seconds()
            finally:
                for cluster in clusters.values():
                    cluster.stop()

    def run(self) -> ScaleStudy:
        s = self.settings
        s.out.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="selectorkv-scale-"))
        try:
            with open(s.out / "servers.log", "wb") as log:
                for workload in s.workloads:
                    # New clusters for each workload: after the PUTs, the
                    # nodes of larger clusters (which run more
                    # configurations) held more data and owed more
                    # compaction, done inside their quotas while the GETs ran.
                    with self.clusters(scratch, log) as clusters:
                        quota = f"a {s.share:g} CPU quota each" if s.share else "a CPU each"
                        self.say(f"clusters of {', '.join(map(str, s.counts))} nodes up, {quota}")
                        if workload == "get":
                            self.prefill(clusters)
                        self.measure(workload, clusters)
                    self.study.save(s.out)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.study.finished = time.time()
        self.study.save(s.out)
        return self.study

    def configurations(self, clusters: dict[int, ScaleCluster]) -> list[tuple[int, str, str]]:
        return [
            (n, route, replication)
            for n in clusters
            for route in (ROUTES if n > 1 else ROUTES[:1])
            for replication in replications(n)
        ]

    def measure(self, workload: str, clusters: dict[int, ScaleCluster]) -> None:
        s = self.settings
        configurations = self.configurations(clusters)
        capacity: dict[tuple[int, str, str], list[float]] = {c: [] for c in configurations}
        for number in range(s.repeat):
            for n, route, replication in rotated(configurations, number):
                run = self.capacity(workload, clusters[n], route, replication, number)
                capacity[(n, route, replication)].append(run.answered_per_s)
        for number in range(s.repeat):
            for config in rotated(configurations, number):
                rate = max(1.0, round(Spread.of(capacity[config]).median / 2))
                self.fixed(workload, clusters[config[0]], *config[1:], number, rate)

    def prefill(self, clusters: dict[int, ScaleCluster]) -> None:
        """The same data on every node before the GETs: each node a closed
        loop of PUTs of its own keys at 1/1 for a capacity run's time (the
        same quota, so about the same writes), then left until its
        background work (memtable flushes, compactions) is done."""
        for n, cluster in clusters.items():
            written, _ = self.closed_loop("put", cluster, "placement", "1/1")
            waited = cluster.settle()
            self.say(f"{n} node(s) prefilled: {written:,} PUTs, idle after {waited:.1f} s")

    def closed_loop(
        self, workload: str, cluster: ScaleCluster, route: str, replication: str
    ) -> tuple[int, int]:
        """One wrk per node for a capacity run's time: (answered, socket errors)."""
        s = self.settings
        query = replications(len(cluster.urls))[replication]
        runs = []
        for i, url in enumerate(cluster.urls):
            env = {"SELECTORKV_QUERY": "&" + query}
            if route == "placement":
                env["SELECTORKV_KEYS_FILE"] = str(cluster.key_files[i])
            runs.append(wrk_closed_loop(url, workload, s.capacity_seconds, s.connections, env))
        answered = errors = 0
        for process in runs:
            output, _ = process.communicate(timeout=s.capacity_seconds + 60)
            done, failed = wrk_answers(output)
            answered, errors = answered + done, errors + failed
        return answered, errors

    def capacity(
        self, workload: str, cluster: ScaleCluster, route: str, replication: str, number: int
    ) -> ScaleRun:
        s = self.settings
        n = len(cluster.urls)
        time.sleep(SETTLE)
        before = cluster.cpu()
        answered, errors = self.closed_loop(workload, cluster, route, replication)
        cpu = cluster.cpu() - before
        seconds = max(1, round(s.capacity_seconds))
        run = ScaleRun(workload, n, route, replication, "capacity", number, 0.0,
                       answered / seconds, errors, cpu, answered)  # fmt: skip
        self.study.runs.append(run)
        self.say(f"{workload} {n} node(s) {route} {replication} capacity: "
                 f"{run.answered_per_s:,.0f}/s, {cpu / max(1, answered) * 1e6:,.0f} us CPU "
                 f"per answer")  # fmt: skip
        return run

    def fixed(
        self, workload: str, cluster: ScaleCluster, route: str, replication: str, number: int,
        rate: float,
    ) -> None:  # fmt: skip
        s = self.settings
        n = len(cluster.urls)
        query = replications(n)[replication]
        urls = f"{cluster.urls[0]}/?{query}," + ",".join(cluster.urls[1:])
        time.sleep(SETTLE)
        before = cluster.cpu()
        report = on_load_cpus(
            functools.partial(
                generator.generate, urls.rstrip(","), workload, rate, s.connections,
                s.run_seconds, route=route,
            ),
            1 if s.share is not None else n,
        )  # fmt: skip
        cpu = cluster.cpu() - before
        figures = report.as_json()
        latency = figures["latency_ms_served"]
        answered = sum(count for status, count in report.status_counts.items() if status < 500)
        run = ScaleRun(workload, n, route, replication, "fixed", number, rate,
                       answered / s.run_seconds, report.errors, cpu, answered,
                       latency["p50"], latency["p99"])  # fmt: skip
        self.study.runs.append(run)
        self.say(f"{workload} {n} node(s) {route} {replication} at {rate:,.0f}/s: "
                 f"p50 {run.p50_ms:.2f} p99 {run.p99_ms:.2f} ms")  # fmt: skip
