"""Fault runs: a cluster of real node processes on this machine, clients
that record what they did, faults injected on a schedule, then healing,
and the checker's verdict (``selectorkv lab --faults``, ``make
test-faults``; a few short runs are tests/system/test_faults.py).

The faults one machine can cause: kill -9 and a restart, SIGSTOP and
SIGCONT, a node cut from the others both ways, and one way. For the
partitions every node listens on an address of its own (127.0.0.2-4) and
sends from it, and ``Partitions`` puts iptables rules on the loopback
interface in a chain of the run's own, removed when the run ends, also when
it fails (root only; otherwise those faults are skipped, and the report says
so). After the faults everything is healed, the time to convergence is
measured, each key is read through each node, and the checker judges the
history. docs/cluster.md, "Fault runs".
"""

from __future__ import annotations

import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from selectorkv.lab.harness.nodes import Node, Nodes, wait_until
from selectorkv.lab.studies import skew
from selectorkv.lab.studies.checker import Verdict, check
from selectorkv.lab.studies.history import FAIL, OK, READ, UNKNOWN, WRITE, History, Op

KINDS = ("kill", "stop", "partition", "one-way")
PARTITION_KINDS = ("partition", "one-way")


class Partitions:
    """iptables rules on the loopback interface that drop packets between
    pairs of addresses, in a chain of this process's own; a context: on
    exit every rule and the chain are removed."""

    def __init__(self) -> None:
        self.chain = f"SELECTORKV-{os.getpid()}"

    @staticmethod
    def available() -> str:
        """Empty when partitions can be made here; else why not."""
        if os.geteuid() != 0:
            return "partitions need root (iptables)"
        if shutil.which("iptables") is None:
            return "partitions need iptables (apt-get install iptables)"
        probe = subprocess.run(["iptables", "-L", "-n"], capture_output=True, text=True)
        if probe.returncode != 0:
            return f"iptables does not work here: {probe.stderr.strip()}"
        return ""

    def _iptables(self, *args: str) -> None:
        subprocess.run(["iptables", "-w", *args], check=True, capture_output=True)

    def __enter__(self) -> Partitions:
        self._iptables("-N", self.chain)
        self._iptables("-I", "INPUT", "-i", "lo", "-j", self.chain)
        return self

    def cut(self, source: str, destination: str) -> None:
        """Drop every packet from ``source`` to ``destination``."""
        self._iptables("-A", self.chain, "-s", source, "-d", destination, "-j", "DROP")

    def heal(self) -> None:
        self._iptables("-F", self.chain)

    def __exit__(self, *exc: object) -> None:
        for args in (
            ("-D", "INPUT", "-i", "lo", "-j", self.chain),
            ("-F", self.chain),
            ("-X", self.chain),
        ):
            subprocess.run(["iptables", "-w", *args], capture_output=True)


@dataclass(frozen=True)
class FaultSettings:
    nodes: int = 3
    mode: str = "async"
    peer_calls: str = "async"
    kinds: tuple[str, ...] = KINDS
    seconds: float = 30.0  # of load with faults
    hold: float = 2.0  # each fault, and the calm between two
    clients: int = 4
    # PayloadThreads per node: blocking peer calls need a thread for each
    # request in flight, or nodes wait on each other until the peer timeout
    # (docs/cluster.md, "Blocking peer calls").
    workers: int = 8
    keys: int = 12
    peer_timeout: float = 0.5
    client_timeout: float = 5.0
    converge_timeout: float = 60.0
    seed: int = 0


@dataclass
class FaultReport:
    """What one run measured (the table's row)."""

    settings: FaultSettings
    operations: Counter[str] = field(default_factory=Counter)  # kind/outcome -> count
    faults: Counter[str] = field(default_factory=Counter)
    skipped: str = ""  # why partition faults were not run
    hints_stored: float = 0.0
    hints_delivered: float = 0.0
    hints_delivered_seconds: float | None = None  # heal -> no hint pending
    converged_seconds: float | None = None  # heal -> every replica alike
    not_converged: int = 0  # keys still different at the converge timeout
    verdict: Verdict = field(default_factory=Verdict)

    def summary(self) -> dict[str, object]:
        verdict = self.verdict
        return {
            "peer_calls": self.settings.peer_calls,
            "mode": self.settings.mode,
            "operations": sum(self.operations.values()),
            "by_outcome": dict(self.operations),
            "faults": dict(self.faults),
            "partitions_skipped": self.skipped,
            "acknowledged_writes_lost": len(verdict.lost),
            "stale_quorum_reads": len(verdict.stale),
            "unwritten_values_read": len(verdict.unwritten),
            "keys_not_linearizable": verdict.not_linearizable,
            "keys_undecided": verdict.undecided,
            "hints_stored": self.hints_stored,
            "hints_delivered": self.hints_delivered,
            "heal_to_hints_delivered_s": self.hints_delivered_seconds,
            "heal_to_convergence_s": self.converged_seconds,
            "keys_not_converged": self.not_converged,
        }


class Client(threading.Thread):
    """Sends operations to random nodes until told to stop, recording each."""

    def __init__(
        self, number: int, nodes: list[Node], history: History, settings: FaultSettings
    ) -> None:
        super().__init__(name=f"client-{number}", daemon=True)
        self.number = number
        self._nodes = nodes
        self._history = history
        self._settings = settings
        self._random = random.Random(settings.seed * 1000 + number)
        self.stop = threading.Event()
        self._count = 0

    def run(self) -> None:
        while not self.stop.is_set():
            key = f"key{self._random.randrange(self._settings.keys)}"
            node = self._random.choice(self._nodes)
            roll = self._random.random()
            if roll < 0.45:
                self._count += 1
                self.operate(node, WRITE, key, f"c{self.number}-{self._count}")
            elif roll < 0.55:
                self.operate(node, WRITE, key, None)
            else:
                self.operate(node, READ, key, None)

    def operate(self, node: Node, kind: str, key: str, value: str | None) -> Op:
        """One operation, recorded with its outcome."""
        if kind == READ:
            method, body = "GET", None
        else:
            method, body = ("PUT", value.encode()) if value is not None else ("DELETE", None)
        invoked = time.monotonic()
        conn = http.client.HTTPConnection(
            node.host, node.port, timeout=self._settings.client_timeout
        )
        try:
            conn.request(method, f"/v0/entity?id={key}", body=body)
            reply = conn.getresponse()
            status, text = reply.status, reply.read()
        except (OSError, http.client.HTTPException):
            status, text = 0, b""
        finally:
            conn.close()
        completed = time.monotonic()
        if kind == READ:
            outcome = OK if status in (200, 404) else FAIL
            value = text.decode() if status == 200 else None
        elif status in (201, 202):
            outcome = OK
        elif status == 0 or status >= 500:
            outcome = UNKNOWN  # 504: not confirmed, maybe written
        else:
            outcome = FAIL
        op = Op(self.number, kind, key, value, invoked, completed, outcome)
        self._history.add(op)
        return op


class FaultRun:
    """One run (see the module's design)."""

    def __init__(self, settings: FaultSettings, root: Path, log: IO[bytes] | None = None) -> None:
        self.settings = settings
        self._root = root
        self._log = log
        self._random = random.Random(settings.seed)
        self.report = FaultReport(settings)
        self.history = History()
        self._killed: set[int] = set()
        self._stopped: set[int] = set()
        self._final_after = float("inf")  # when the final reads began

    def run(self) -> FaultReport:
        settings = self.settings
        kinds = settings.kinds
        why_not = Partitions.available() if set(kinds) & set(PARTITION_KINDS) else ""
        if why_not:
            kinds = tuple(kind for kind in kinds if kind not in PARTITION_KINDS)
            self.report.skipped = why_not
        nodes_of = Nodes(self._root, self._log)
        hosts = [f"127.0.0.{i + 2}" for i in range(settings.nodes)]
        try:
            with Partitions() if not why_not else _NoPartitions() as partitions:
                nodes = nodes_of.make(
                    settings.nodes, settings.mode, "--peer-calls", settings.peer_calls,
                    "--peer-timeout", str(settings.peer_timeout),
                    "--workers", str(settings.workers), hosts=hosts,
                )  # fmt: skip
                self._load_with_faults(nodes, partitions, kinds)
                healed = time.monotonic()
                self._heal(nodes, partitions)
                self._settle(nodes, healed)
                self._final_reads(nodes)
        finally:
            nodes_of.stop_all()
        report = self.report
        for op in self.history:
            report.operations[f"{op.kind}-{op.outcome}"] += 1
        report.verdict = check(self.history, final_after=self._final_after)
        return report

    def _load_with_faults(
        self, nodes: list[Node], partitions: Partitions, kinds: tuple[str, ...]
    ) -> None:
        settings = self.settings
        clients = [Client(i, nodes, self.history, settings) for i in range(settings.clients)]
        for client in clients:
            client.start()
        end = time.monotonic() + settings.seconds
        turn = 0
        try:
            while kinds and time.monotonic() + 2 * settings.hold <= end:
                time.sleep(settings.hold)  # calm
                kind = kinds[turn % len(kinds)]
                turn += 1
                undo = self._inject(kind, nodes, partitions)
                self.report.faults[kind] += 1
                time.sleep(settings.hold)
                undo()
            time.sleep(max(0.0, end - time.monotonic()))
        finally:
            for client in clients:
                client.stop.set()
            for client in clients:
                client.join(settings.client_timeout + 5)

    def _inject(self, kind: str, nodes: list[Node], partitions: Partitions) -> Callable[[], None]:
        """Start a fault; the callable ends it."""
        index = self._random.randrange(len(nodes))
        node = nodes[index]
        if kind == "kill":
            node.kill()
            self._killed.add(index)

            def restart() -> None:
                node.start()
                wait_until(node.answers, f"{node.url} answers after its restart", timeout=30)
                self._killed.discard(index)

            return restart
        if kind == "stop":
            node.pause()
            self._stopped.add(index)

            def resume() -> None:
                node.resume()
                self._stopped.discard(index)

            return resume
        others = [other for other in nodes if other is not node]
        if kind == "partition":
            for other in others:
                partitions.cut(node.host, other.host)
                partitions.cut(other.host, node.host)
        else:  # one-way: what this node sends to one other is lost
            partitions.cut(node.host, self._random.choice(others).host)
        return partitions.heal

    def _heal(self, nodes: list[Node], partitions: Partitions) -> None:
        partitions.heal()
        for index in sorted(self._stopped):
            nodes[index].resume()
        for index in sorted(self._killed):
            nodes[index].start()
        for node in nodes:
            wait_until(node.answers, f"{node.url} answers after the heal", timeout=30)

    def _settle(self, nodes: list[Node], healed: float) -> None:
        """Wait for the hints, then for the replicas to agree; time both."""
        report = self.report
        deadline = healed + self.settings.converge_timeout

        def pending() -> float:
            return sum(node.metric("selectorkv_hints_pending") for node in nodes)

        while pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not pending():
            report.hints_delivered_seconds = time.monotonic() - healed
        report.hints_stored = sum(node.metric("selectorkv_hints_stored_total") for node in nodes)
        report.hints_delivered = sum(
            node.metric("selectorkv_hints_delivered_total") for node in nodes
        )
        keys = sorted({op.key for op in self.history if op.kind == WRITE})
        while True:
            different = [
                key for key in keys if len({node.internal("GET", key) for node in nodes}) > 1
            ]
            if not different:
                report.converged_seconds = time.monotonic() - healed
                return
            if time.monotonic() > deadline:
                report.not_converged = len(different)
                return
            time.sleep(0.1)

    def _final_reads(self, nodes: list[Node]) -> None:
        self._final_after = time.monotonic()
        reader = Client(len(nodes) + self.settings.clients, nodes, self.history, self.settings)
        for key in sorted({op.key for op in self.history}):
            for node in nodes:
                reader.operate(node, READ, key, None)


class _NoPartitions(Partitions):
    """Where iptables cannot be used: partition faults are left out."""

    def __enter__(self) -> Partitions:
        return self

    def __exit__(self, *exc: object) -> None:
        """Nothing was made."""


def table(reports: list[FaultReport]) -> str:
    """The figures of several runs as a Markdown table."""
    lines = [
        "| peer calls | operations (ok/unknown/fail) | faults | acknowledged writes lost "
        "| stale quorum reads | unwritten values read | not linearizable | hints stored "
        "| hints delivered | heal to hints delivered | heal to convergence |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        s = report.summary()
        by = report.operations
        outcomes = "/".join(
            str(sum(count for name, count in by.items() if name.endswith(outcome)))
            for outcome in (OK, UNKNOWN, FAIL)
        )
        faults = ", ".join(f"{kind} {count}" for kind, count in sorted(report.faults.items()))
        converged = (
            f"{report.converged_seconds:.2f} s"
            if report.converged_seconds is not None
            else f"not within the timeout: {report.not_converged} keys"
        )
        delivered = s["heal_to_hints_delivered_s"]
        lines.append(
            f"| {report.settings.peer_calls} | {s['operations']} ({outcomes}) | {faults} "
            f"| {s['acknowledged_writes_lost']} | {s['stale_quorum_reads']} "
            f"| {s['unwritten_values_read']} | {len(report.verdict.not_linearizable)} "
            f"| {report.hints_stored:.0f} | {report.hints_delivered:.0f} "
            f"| {f'{delivered:.2f} s' if isinstance(delivered, float) else 'no'} | {converged} |"
        )
    return "\n".join(lines)


# Clock skew against the gap between two writes (lab/studies/skew.py): seconds.
SKEWS = (0.0, 0.01, 0.1, 1.0)
SKEW_GAP = 0.05
SKEW_PAIRS = 20


def main(out: Path, settings: list[FaultSettings], stream: IO[str] = sys.stdout) -> int:
    """Run each setting, then the clock-skew measurement; print and write
    the tables (faults.md); 1 if any check failed."""
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    with open(out / "nodes.log", "wb") as log:
        for number, setting in enumerate(settings):
            print(f"fault run {number + 1}/{len(settings)}: {setting}", file=stream, flush=True)
            run = FaultRun(setting, out / f"run-{number + 1}", log)
            report = run.run()
            run.history.save(out / f"run-{number + 1}-history.jsonl")
            reports.append(report)
            print(json.dumps(report.summary()), file=stream, flush=True)
        print("clock skew against the gap between two writes", file=stream, flush=True)
        skews = [
            skew.measure(out / f"skew-{number}", seconds, SKEW_GAP, SKEW_PAIRS, log)
            for number, seconds in enumerate(SKEWS)
        ]
    text = table(reports)
    skipped = {report.skipped for report in reports if report.skipped}
    if skipped:
        text += "\n\nNot run: " + "; ".join(sorted(skipped))
    text += "\n\n" + skew.table(skews)
    (out / "faults.md").write_text(text + "\n")
    (out / "faults.json").write_text(
        json.dumps([{**r.summary(), "settings": asdict(r.settings)} for r in reports], indent=1)
    )
    print(text, file=stream)
    return 0 if all(report.verdict.ok and not report.not_converged for report in reports) else 1
