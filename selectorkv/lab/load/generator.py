"""``selectorkv load``: an open-loop load generator with constant arrival rate.

Request i is due at ``t0 + i / rate`` whatever the server does, and its
latency counts from its due time (no coordinated omission). One process runs
one ``selectors`` loop over keep-alive connections (``PlanRun``), woken for
a due request by a timerfd; several processes split the rate when one core
cannot keep the schedule, and their histograms are merged. Falling behind
is reported, not hidden. Several servers (a cluster's nodes) take the
requests in turn, or, with ``route="placement"``, each request goes to its
key's first replica, as ``selectorkv.client`` sends it; each waits only for
a connection to its own server. docs/lab.md, "The generator", explains each
of these choices and what it measured.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import random
import re
import selectors
import socket
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import urlsplit

from hdrh.histogram import HdrHistogram

from selectorkv.client import Client
from selectorkv.lab.load.due_timer import DueTimer
from selectorkv.lab.load.keyspace import ALPHABET, BODY_LENGTH, ID_LENGTH

ROUTES = ("round-robin", "placement")  # how requests are shared among several servers
LATE_AFTER = 0.001  # seconds after its due time that make a request late
LATE_SHARE = 0.01  # the share of late requests that is reported as falling behind
HIGHEST_US = 3_600_000_000  # an hour, in microseconds
# What one process keeps up with: pinned to a core of the project's machine,
# one sent 30,000 PUT/s to a server that refused them all, p99 0.9 ms.
PER_PROCESS_RATE = 30_000
DRAIN_SECONDS = 10.0  # how long to wait for answers after the last request
START_AFTER = 0.2  # seconds from the call to request 0 in one process: time to connect
GATE_SLACK = 0.01  # seconds from "every worker is connected" to request 0
WORKER_START_TIMEOUT = 60.0
BODY_POOL = 1 << 20  # letters of random text that PUT bodies are cut from


@dataclass
class Plan:
    targets: list[tuple[str, int]]  # (host, port) of each server, requests in turn
    workload: str
    rate: float  # requests per second for this process
    connections: int
    requests: int
    start: float  # time.monotonic() of request 0, shared by all processes
    seed: int
    closed_loop: bool = False  # send whenever a connection is free, until start + requests / rate
    timeline: float = 0.0  # seconds per timeline bucket; 0: no timeline
    query: str = ""  # appended to every request's query (the first URL's)
    drain: float = DRAIN_SECONDS  # how long to wait for answers after the last request
    # "round-robin": the servers in turn; "placement": each key's first
    # replica, among ``nodes`` (the cluster's URLs, in the targets' order)
    route: str = "round-robin"
    nodes: list[str] = field(default_factory=list)


@dataclass
class Result:
    histogram: bytes  # HdrHistogram of every answer, encoded
    served: bytes = b""  # HdrHistogram of the answers below 500 (not shed, not failed)
    status_counts: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    late: int = 0
    late_with_free_connection: int = 0
    max_lag: float = 0.0
    finished: float = 0.0  # time.monotonic() of the last answer
    cpu: float = 0.0  # CPU seconds this process used from request 0 to the end
    # timeline bucket (due time // bucket) -> latencies in us, and answers of 500 and above
    timeline: dict[int, list[int]] = field(default_factory=dict)
    timeline_failed: Counter[int] = field(default_factory=Counter)
    # timeline bucket -> the longest the generator itself was late (seconds):
    # a request due then went out late although a connection was free
    timeline_lag: dict[int, float] = field(default_factory=dict)


class Workload:
    """Request bytes for the seed's key and body distribution.

    A body is a window of BODY_LENGTH letters at a random offset in one
    random text of BODY_POOL letters, drawn once. Each letter is still
    uniform over the alphabet, and values that land in the same 4 KiB table
    block almost never overlap, so RocksDB cannot compress them away. Drawing
    300 fresh letters per request took 26 us, more than the server spends on
    a PUT: at 20,000 PUT/s the generator, not the server, fell behind.
    """

    def __init__(self, name: str, seed: int, query: str = "") -> None:
        self._name = name
        self._query = b"&" + query.encode() if query else b""  # e.g. ack=1&from=1
        self._random = random.Random(seed)
        self._pool = self._text(BODY_POOL) if name in ("put", "mixed") else b""

    def _text(self, length: int) -> bytes:
        return "".join(self._random.choices(ALPHABET, k=length)).encode()

    def _body(self) -> bytes:
        start = self._random.randrange(BODY_POOL - BODY_LENGTH)
        return self._pool[start : start + BODY_LENGTH]

    def next_key(self) -> bytes:
        return self._text(ID_LENGTH)

    def next_request(self, host: bytes, key: bytes | None = None) -> bytes:
        """The next request, ``host`` its Host header line; for ``key``, or
        a random one."""
        method = self._name
        if method == "mixed":
            method = "get" if self._random.random() < 0.5 else "put"
        target = b"/v0/entity?id=" + (key or self.next_key()) + self._query
        if method == "put":
            body = self._body()
            return b"PUT %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s" % (
                target,
                host,
                len(body),
                body,
            )
        verb = b"GET" if method == "get" else b"DELETE"
        return b"%s %s HTTP/1.1\r\n%s\r\n" % (verb, target, host)


class ClientConnection:
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, target: int, host: str, port: int) -> None:
        self.target = target  # which of the plan's servers
        self.host = f"Host: {host}:{port}\r\n".encode()
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buffer = bytearray()
        self.in_flight = False
        self.due = 0.0  # due time of the request in flight
        self.free_since = 0.0

    def send(self, data: bytes) -> None:
        # A request is small and the socket's buffer empty (one request in
        # flight), so one non-blocking send takes it all in practice; the
        # blocking fallback is there for the exception, not the rule.
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            self.sock.setblocking(True)
            try:
                self.sock.sendall(data[sent:])
            finally:
                self.sock.setblocking(False)

    def take_response(self) -> int | None:
        """The status of a complete response in the buffer (consumed), or None."""
        head = take_message(self.buffer)
        return None if head is None else int(head[9:12])


def take_message(buffer: bytearray) -> bytes | None:
    """The head of the first complete HTTP message in ``buffer`` (the message,
    body too, consumed), or None until all of it has arrived. Only
    Content-Length framing: what selectorkv and the calibration target send."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buffer[:end])
    length = 0
    at = head.lower().find(b"\r\ncontent-length:")
    if at >= 0:
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : line_end if line_end >= 0 else len(head)])
    if len(buffer) < end + 4 + length:
        return None
    del buffer[: end + 4 + length]
    return head


# In a worker process of generate()'s pool: (ready, go, base), set by
# gate_worker. The schedule's start is only known once every worker is up.
_gate: tuple[Any, Any, Any] | None = None


def gate_worker(ready: Any, go: Any, base: Any) -> None:
    global _gate
    _gate = (ready, go, base)


def wait_for_start(plan: Plan) -> None:
    """In a pool's worker, connected: say so, wait for the others, and take
    the schedule's start (``plan.start`` holds this worker's offset)."""
    if _gate is None:
        return
    ready, go, base = _gate
    ready.release()
    go.wait()
    plan.start += base.value


def run_plan(plan: Plan) -> Result:
    """One process's share of the load: the open-loop schedule."""
    return PlanRun(plan).run()


class PlanRun:
    """One process's share of the load on a selector of its own: requests
    sent when they are due (open loop) or as connections free up (closed
    loop), answers read as they come, each latency counted from its due time."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.histogram = HdrHistogram(1, HIGHEST_US, 3)
        self.served = HdrHistogram(1, HIGHEST_US, 3)
        self.result = Result(histogram=b"")
        self.workload = Workload(plan.workload, plan.seed, plan.query)
        self.selector = selectors.DefaultSelector()
        # The selector's own timeout is whole milliseconds, rounded up: the timer
        # wakes the loop when the next request is due, to the microsecond.
        self.timer = DueTimer()
        self.selector.register(self.timer, selectors.EVENT_READ, self.timer)
        self.count = count = len(plan.targets)
        # Per server: its free connections (first freed, first reused: all stay
        # warm), and the requests that wait for one of them: (due time, key;
        # None when any key will do).
        self.free: list[deque[ClientConnection]] = [deque() for _ in plan.targets]
        self.waiting: list[deque[tuple[float, bytes | None]]] = [deque() for _ in plan.targets]
        self.placement: Client | None = None
        if plan.route == "placement":
            self.placement = Client(plan.nodes)
            self.home = {node: i for i, node in enumerate(self.placement.topology.nodes)}
        for i in range(plan.connections):
            conn = ClientConnection(i % count, *plan.targets[i % count])
            self.selector.register(conn.sock, selectors.EVENT_READ, conn)
            self.free[conn.target].append(conn)
        self.busy = self.queued = 0
        self.interval = 1.0 / plan.rate
        self.requests = plan.requests
        self.next_index = 0

    def run(self) -> Result:
        plan = self.plan
        wait_for_start(plan)
        self.result.cpu = -time.process_time()
        closes = plan.start + plan.requests * self.interval  # closed loop: no request after
        deadline = closes + plan.drain
        timer, select = self.timer, self.selector.select
        while self.next_index < self.requests or self.busy or self.queued:
            now = time.monotonic()
            if now > deadline:
                self.result.errors += self.busy + self.queued  # never answered, or never sent
                break
            self.dispatch(now, closes)
            for key, _ in select(self.timeout(now)):
                if key.data is timer:
                    timer.clear()
                else:
                    self.on_readable(key.data)
        return self.finish()

    def dispatch(self, now: float, closes: float) -> None:
        """Send what is due now on the free connections."""
        plan, free = self.plan, self.free
        if plan.closed_loop and now >= plan.start:  # every free connection sends, until closes
            for conns in free:
                while conns and self.next_index < self.requests:
                    if now >= closes:
                        self.requests = self.next_index
                        break
                    self.next_index += 1
                    conn = conns.popleft()  # latency from the send, as in wrk:
                    self.send(conn, now, self.key_for(conn.target), now=now)
        elif not plan.closed_loop:
            start, interval, count = plan.start, self.interval, self.count
            while self.next_index < self.requests and start + self.next_index * interval <= now:
                due = start + self.next_index * interval
                if self.placement is None:
                    self.waiting[self.next_index % count].append((due, None))
                else:
                    key = self.workload.next_key()
                    self.waiting[self.home_of(key)].append((due, key))
                self.next_index += 1
                self.queued += 1
            for target, dues in enumerate(self.waiting):
                while dues and free[target]:
                    self.queued -= 1
                    self.send(free[target].popleft(), *dues.popleft(), now=now)

    def timeout(self, now: float) -> float | None:
        """How long the selector may wait: until the next request is due
        (the timer is armed for it), or a tenth of a second."""
        plan = self.plan
        if self.next_index < self.requests and not plan.closed_loop:
            due = plan.start + self.next_index * self.interval
            self.timer.arm(due)
            return max(0.0, due - now)
        if self.next_index < self.requests and any(self.free):
            self.timer.arm(plan.start)
            return max(0.0, plan.start - now)
        return 0.1

    def home_of(self, key: bytes) -> int:
        """The target that is ``key``'s first replica."""
        assert self.placement is not None
        return self.home[self.placement.replicas(key, 1)[0]]

    def key_for(self, target: int) -> bytes | None:
        """A key for a request to ``target``: with placement, one of the keys
        whose first replica it is (drawn until one is), else any key."""
        if self.placement is None:
            return None
        while True:
            key = self.workload.next_key()
            if self.home_of(key) == target:
                return key

    def send(
        self, conn: ClientConnection, due: float, key: bytes | None = None, *, now: float
    ) -> None:
        result = self.result
        lag = now - due
        if lag > LATE_AFTER:
            own = conn.free_since <= due  # a connection was free: the generator's lateness
            result.late += 1
            result.late_with_free_connection += own
            result.max_lag = max(result.max_lag, lag)
            if own and self.plan.timeline:
                bucket = int((due - self.plan.start) // self.plan.timeline)
                result.timeline_lag[bucket] = max(result.timeline_lag.get(bucket, 0.0), lag)
        conn.due = due
        try:
            conn.send(self.workload.next_request(conn.host, key))
        except OSError:
            result.errors += 1
            self.free[conn.target].append(reconnect(self.selector, conn, self.plan))
            return
        conn.in_flight = True
        self.busy += 1

    def on_readable(self, conn: ClientConnection) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the server closed the connection (or reset it)
            if conn.in_flight:
                self.result.errors += 1  # that request will never be answered
                self.busy -= 1
            else:
                self.free[conn.target].remove(conn)
            self.free[conn.target].append(reconnect(self.selector, conn, self.plan))
            return
        conn.buffer += data
        status = conn.take_response()
        if status is not None and conn.in_flight:  # else not an answer to us (a 408 before
            self.answered(conn, status)  # closing an idle connection), or not complete yet

    def answered(self, conn: ClientConnection, status: int) -> None:
        plan, result = self.plan, self.result
        done = time.monotonic()
        latency_us = max(1, round((done - conn.due) * 1e6))
        self.histogram.record_value(latency_us)
        if status < 500:
            self.served.record_value(latency_us)
        if plan.timeline:
            bucket = int((conn.due - plan.start) // plan.timeline)
            result.timeline.setdefault(bucket, []).append(latency_us)
            if status >= 500:
                result.timeline_failed[bucket] += 1
        result.status_counts[status] += 1
        result.finished = done
        conn.in_flight = False
        conn.free_since = done
        self.busy -= 1
        self.free[conn.target].append(conn)

    def finish(self) -> Result:
        selector = self.selector
        selector.unregister(self.timer)
        self.timer.close()
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()
        self.result.histogram = self.histogram.encode()
        self.result.served = self.served.encode()
        self.result.cpu += time.process_time()
        return self.result


def reconnect(
    selector: selectors.BaseSelector, conn: ClientConnection, plan: Plan
) -> ClientConnection:
    selector.unregister(conn.sock)
    conn.sock.close()
    fresh = ClientConnection(conn.target, *plan.targets[conn.target])
    selector.register(fresh.sock, selectors.EVENT_READ, fresh)
    fresh.free_since = time.monotonic()
    return fresh


def percentiles_ms(histogram: HdrHistogram) -> dict[str, float]:
    """The summary percentiles of a histogram of microseconds, in ms."""
    at = histogram.get_value_at_percentile
    return {
        "p50": at(50) / 1000,
        "p90": at(90) / 1000,
        "p99": at(99) / 1000,
        "p99.9": at(99.9) / 1000,
        "max": histogram.get_max_value() / 1000,
    }


@dataclass
class Report:
    url: str
    workload: str
    target_rate: float
    connections: int
    processes: int
    duration: float
    histogram: HdrHistogram
    served: HdrHistogram
    status_counts: Counter[int]
    errors: int
    late: int
    late_with_free_connection: int
    max_lag: float
    elapsed: float
    cpu: float = 0.0  # CPU seconds the generator's processes used, all together
    start: float = 0.0  # time.monotonic() of request 0's due time: the timeline's zero
    timeline: list[dict[str, float]] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.status_counts.values())

    @property
    def behind_schedule(self) -> bool:
        """More than LATE_SHARE of the requests went out late."""
        return self.late > LATE_SHARE * max(1, self.requests + self.errors)

    def as_json(self) -> dict[str, Any]:
        return {
            "tool": "selectorkv load",
            "url": self.url,
            "workload": self.workload,
            "target_rate": self.target_rate,
            "rate": self.requests / self.elapsed if self.elapsed else 0.0,
            "requests": self.requests,
            "duration_s": self.duration,
            "elapsed_s": self.elapsed,  # from request 0's due time to the last answer
            "start_monotonic": self.start,  # that due time, on time.monotonic()
            "connections": self.connections,
            "processes": self.processes,
            "errors": self.errors,
            "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
            "latency_ms": percentiles_ms(self.histogram),
            "latency_ms_served": percentiles_ms(self.served),  # answers below 500
            "behind_schedule": self.behind_schedule,
            "late_requests": self.late,
            "late_with_free_connection": self.late_with_free_connection,
            "max_lag_ms": self.max_lag * 1000,
            # its own CPU: near one CPU per process, it is the limit, not the server
            "generator_cpu_s": self.cpu,
            **({"timeline": self.timeline} if self.timeline else {}),
        }

    def print_summary(self, out: IO[str], err: IO[str]) -> None:
        summary = self.as_json()
        lat = summary["latency_ms"]
        out.write(
            f"Running {self.duration:g}s test @ {self.url}\n"
            f"  {self.workload}, {self.connections} connections, {self.processes} process(es), "
            f"target {self.target_rate:g} req/s (open loop, latency from each due time)\n"
            f"  Latency ms: p50 {lat['p50']:.3f}  p90 {lat['p90']:.3f}  p99 {lat['p99']:.3f}  "
            f"p99.9 {lat['p99.9']:.3f}  max {lat['max']:.3f}\n"
            f"  {summary['requests']} requests in {self.elapsed:.2f}s, {self.errors} errors, "
            f"status {summary['status_counts']}\n"
            f"Requests/sec: {summary['rate']:.2f}\n"
        )
        if self.behind_schedule:
            cause = (
                "this generator's loop"
                if self.late_with_free_connection * 2 > self.late
                else "busy connections: the server is at capacity, or raise --connections"
            )
            err.write(
                f"WARNING: behind schedule: {self.late} of {self.requests + self.errors} requests "
                f"went out more than {LATE_AFTER * 1000:g} ms after their due time (max lag "
                f"{self.max_lag * 1000:.1f} ms); mostly {cause}. Their latency counts from the "
                f"due time, so the figures above include the delay.\n"
            )


def plan_processes(rate: float, requested: int | None) -> int:
    if requested:
        return requested
    return max(1, min(os.cpu_count() or 1, math.ceil(rate / PER_PROCESS_RATE)))


def generate(
    url: str,
    workload: str,
    rate: float,
    connections: int,
    duration: float,
    processes: int | None = None,
    *,
    closed_loop: bool = False,
    timeline: float = 0.0,
    drain: float = DRAIN_SECONDS,
    separate: bool = False,
    route: str = "round-robin",
) -> Report:
    """Run the load and return the merged report. ``url`` may be several,
    comma-separated: the requests go to them in turn.

    With ``closed_loop`` the rate only sets the length of the run (the
    number of requests is not bounded by it): each connection sends its next
    request as soon as its answer arrives, as wrk does, for ``duration``
    seconds, from one process. The lab measures a server's capacity so.
    ``timeline`` (seconds per bucket) keeps the latencies by due time. The
    first URL's query (``?ack=1&from=1``) goes with every request. Answers
    still missing ``drain`` seconds after the last request count as errors.

    ``separate`` runs even a single process's share in a child process. In
    the caller's process, any other thread that takes the GIL holds up the
    schedule: the lab's metrics sampler, parsing a scrape every 200 ms, added
    0.3-0.5 ms to the p99 of a 1,000 req/s run against the known-latency
    target (docs/lab.md, "The instruments").
    """
    targets = [target(one) for one in url.split(",")]
    nodes = [one.strip().split("?")[0] for one in url.split(",")]
    if route not in ROUTES:
        raise ValueError(f"route: {' or '.join(ROUTES)}, not {route!r}")
    if route == "placement":
        with Client(nodes) as client:
            client.verify()  # the nodes place keys with this very list
    count = 1 if closed_loop else plan_processes(rate, processes)
    if connections < len(targets):
        raise ValueError(f"{connections} connections cannot reach {len(targets)} servers")
    count = min(count, connections // len(targets))  # each process reaches every server
    total = round(rate * duration)

    def plans(start: float) -> list[Plan]:
        """Each process's share, on a schedule that starts at ``start``."""
        return [
            Plan(
                targets=targets,
                workload=workload,
                rate=rate / count,
                connections=connections // count + (i < connections % count),
                requests=total // count + (i < total % count),
                start=start + i / rate,  # interleave the processes' schedules
                seed=random.randrange(1 << 30),
                closed_loop=closed_loop,
                timeline=timeline,
                query=urlsplit(url.split(",")[0]).query,
                drain=drain,
                route=route,
                nodes=nodes,
            )
            for i in range(count)
        ]

    if count == 1 and not separate:
        start = time.monotonic() + START_AFTER  # time to connect before request 0
        results = [run_plan(plans(start)[0])]
    else:
        results, start = run_in_processes(plans(0.0))
    return merged_report(
        results, start, url, workload, rate, connections, count, duration, timeline
    )


def run_in_processes(plans: list[Plan]) -> tuple[list[Result], float]:
    """Each plan in a process of its own; the results, and the time the
    schedules started from (the plans' starts are offsets from it).

    Never fork this process: it may run threads (the lab's sampler, a
    test's server), and a lock one of them held at the fork would stay
    locked in the child for ever. A forkserver is a clean single-threaded
    process that has imported this module once; each worker is forked from
    it, and gets its Plan, a plain dataclass, through the pool. The schedule
    starts once every worker has connected: a start fixed in advance was
    missed by 20-170 ms when the forkserver or a worker was slow to come up,
    and every request due meanwhile counted the delay as latency."""
    count = len(plans)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    ready, go, base = context.Semaphore(0), context.Event(), context.Value("d", 0.0)
    with context.Pool(count, gate_worker, (ready, go, base)) as pool:
        pending = pool.map_async(run_plan, plans, chunksize=1)
        for _ in range(count):
            # Each worker takes one plan: it holds it until all are ready.
            if not ready.acquire(timeout=WORKER_START_TIMEOUT):
                raise RuntimeError("a load process did not start")
        start = base.value = time.monotonic() + GATE_SLACK
        go.set()
        return pending.get(), start


def merged_report(
    results: list[Result],
    start: float,
    url: str,
    workload: str,
    rate: float,
    connections: int,
    processes: int,
    duration: float,
    timeline: float,
) -> Report:
    """The processes' results as one report."""
    merged = HdrHistogram(1, HIGHEST_US, 3)
    served = HdrHistogram(1, HIGHEST_US, 3)
    statuses: Counter[int] = Counter()
    by_bucket: dict[int, list[int]] = {}
    failed: Counter[int] = Counter()
    lag: dict[int, float] = {}
    for result in results:
        merged.decode_and_add(result.histogram)
        served.decode_and_add(result.served)
        statuses.update(result.status_counts)
        for bucket, latencies in result.timeline.items():
            by_bucket.setdefault(bucket, []).extend(latencies)
        failed.update(result.timeline_failed)
        for bucket, seconds in result.timeline_lag.items():
            lag[bucket] = max(lag.get(bucket, 0.0), seconds)
    finished = max((r.finished for r in results), default=start)
    return Report(
        url=url,
        workload=workload,
        target_rate=rate,
        connections=connections,
        processes=processes,
        duration=duration,
        histogram=merged,
        served=served,
        status_counts=statuses,
        errors=sum(r.errors for r in results),
        late=sum(r.late for r in results),
        late_with_free_connection=sum(r.late_with_free_connection for r in results),
        max_lag=max(r.max_lag for r in results),
        cpu=sum(r.cpu for r in results),
        elapsed=max(finished - start, 1e-9),
        start=start,
        timeline=[
            timeline_bucket(
                bucket * timeline, by_bucket[bucket], failed[bucket], lag.get(bucket, 0.0)
            )
            for bucket in sorted(by_bucket)
        ],
    )


def target(url: str) -> tuple[str, int]:
    parts = urlsplit(url.strip())
    return parts.hostname or "127.0.0.1", parts.port or 80


def timeline_bucket(
    start: float, latencies_us: list[int], failed: int, lag: float = 0.0
) -> dict[str, float]:
    """One bucket of the timeline: the requests due in it, their latency,
    and the longest the generator itself was late sending one of them."""
    ordered = sorted(latencies_us)

    def at(quantile: float) -> float:
        return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] / 1000

    return {
        "t": round(start, 3),  # seconds from request 0's due time
        "answers": len(ordered),
        "failed": failed,  # answered 500 or above
        "p50_ms": at(0.5),
        "p99_ms": at(0.99),
        "max_ms": ordered[-1] / 1000,
        "generator_lag_ms": round(lag * 1000, 3),
    }


def spectrum_ms(histogram: HdrHistogram) -> bytes:
    """HdrHistogram's percentile spectrum of latencies kept in µs, written
    in ms. hdrh scales every figure but the standard deviation in its
    footer, which would read in µs beside a mean in ms: that one is
    written again, scaled too."""
    out = io.BytesIO()
    histogram.output_percentile_distribution(out, 1000.0)
    stddev = b"%12.3f" % (histogram.get_stddev() / 1000.0)
    return re.sub(rb"(StdDeviation   = ) *[0-9.]+", lambda m: m.group(1) + stddev, out.getvalue())


def write_outputs(report: Report, json_path: str | None, hgrm_path: str | None) -> None:
    if json_path:
        with open(json_path, "w") as out:
            json.dump(report.as_json(), out, indent=2)
    if hgrm_path:
        with open(hgrm_path, "wb") as out:
            out.write(spectrum_ms(report.histogram))


def print_spectrum(report: Report) -> None:
    sys.stdout.write("\n  Detailed percentile spectrum (ms):\n")
    sys.stdout.flush()
    sys.stdout.buffer.write(spectrum_ms(report.histogram))
    sys.stdout.buffer.flush()
