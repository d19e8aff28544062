"""What each thread counts: a ``ThreadStats`` per SelectorThread and per
PayloadThread, written only by its own thread (no lock on the request
path), read and summed by a scrape (``selectorkv/metrics.py``, which also
explains why this is safe under the GIL).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import NamedTuple

# The error text of a peer call that ran out of time (peer.py, replication.py).
TIMED_OUT = "timed out"


# Upper bounds of the peer-call latency histogram, in seconds (Prometheus "le").
LATENCY_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class PeerCounters:
    """Calls to one peer made by one thread (a cluster node's coordinator)."""

    __slots__ = ("buckets", "failures", "requests", "seconds", "timeouts")

    def __init__(self) -> None:
        self.requests = 0
        self.failures = 0  # refused, reset, closed early, malformed, timed out
        self.timeouts = 0
        self.seconds = 0.0
        self.buckets = [0] * (len(LATENCY_BOUNDS) + 1)  # the last one: +Inf

    def record(self, seconds: float, error: str) -> None:
        self.requests += 1
        if error:
            self.failures += 1
            if error == TIMED_OUT:
                self.timeouts += 1
        self.seconds += seconds
        index = 0
        while index < len(LATENCY_BOUNDS) and seconds > LATENCY_BOUNDS[index]:
            index += 1
        self.buckets[index] += 1


class ThreadStats:
    """What one thread counts. Only its own thread writes it."""

    __slots__ = (
        "busy_seconds",
        "bytes_in",
        "bytes_out",
        "events",
        "peers",
        "requests",
        "responses",
        "running",
        "tasks",
    )

    def __init__(self) -> None:
        self.responses: Counter[tuple[bytes, int]] = Counter()  # (method, status)
        self.requests = 0  # complete requests a SelectorThread dispatched
        self.tasks = 0  # tasks a PayloadThread ran (requests and stream slices)
        self.busy_seconds = 0.0  # time a PayloadThread spent running them
        self.running = 0  # 1 while a PayloadThread runs a task
        self.bytes_in = 0
        self.bytes_out = 0
        self.peers: dict[str, PeerCounters] = {}  # peer URL -> its calls
        self.events: Counter[str] = Counter()  # EVENTS

    def peer_call(self, peer: str, seconds: float, error: str) -> None:
        """Count a call to ``peer`` that took ``seconds`` and failed with
        ``error`` (empty: it succeeded)."""
        counters = self.peers.get(peer)
        if counters is None:
            counters = self.peers[peer] = PeerCounters()
        counters.record(seconds, error)


class StatsThread(threading.Thread):
    """A thread that carries its own ThreadStats."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.stats = ThreadStats()


def current() -> ThreadStats:
    """The calling thread's stats (SelectorThreads and PayloadThreads have one)."""
    stats: ThreadStats = threading.current_thread().stats  # type: ignore[attr-defined]
    return stats


def count(event: str, n: int = 1) -> None:
    """Count ``n`` of one of ``EVENTS`` on the calling thread; nothing on a
    thread without stats (a unit test calling the API directly)."""
    stats: ThreadStats | None = getattr(threading.current_thread(), "stats", None)
    if stats is not None:
        stats.events[event] += n


class Family(NamedTuple):
    """A metric family made outside the threads' counters (the hints'
    per-node counts): ``metrics.exposition`` writes it out."""

    name: str  # without the selectorkv_ prefix
    kind: str  # "counter" or "gauge"
    text: str
    samples: list[tuple[str, float]]  # (labels as written, e.g. '{peer="..."}', value)
