"""Counters for ``GET /metrics``, kept per thread, gathered only when scraped.

# design

A counter shared by all threads would need a lock on every request, and
the request path is the one thing that must stay cheap. So each
SelectorThread and each PayloadThread owns a ``ThreadStats`` and is the only
one to write it: a plain ``+= 1`` on the thread's own object, no lock. A
scrape reads every thread's numbers and adds them up. Reading an int, or
copying a dict (one C call), is atomic under the GIL, so a scrape sees each
counter at some recent value; counters only grow, so the sums are as good
as a Prometheus counter needs.

The text is the Prometheus exposition format, written by hand: the server
has no dependency for it (prometheus-client parses it in the tests).
"""

from __future__ import annotations

import threading
from collections import Counter

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


# The cluster's events, counted by the thread that sees them: name -> help.
EVENTS = {
    "writes_superseded": "Replica writes that found a newer record there (the write lost to it).",
    "topology_mismatches": "Internal requests refused: the sender has another node list.",
    "read_repairs": "Records sent to replicas that answered a read with an older one.",
}


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


def count(event: str) -> None:
    """Count one of ``EVENTS`` on the calling thread; nothing on a thread
    without stats (a unit test calling the API directly)."""
    stats: ThreadStats | None = getattr(threading.current_thread(), "stats", None)
    if stats is not None:
        stats.events[event] += 1


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(
    selector_threads: list[StatsThread],
    payload_threads: list[StatsThread],
    gauges: dict[str, tuple[str, float]],
    more_counters: dict[str, tuple[str, float]] | None = None,
    more_lines: list[str] | None = None,
) -> bytes:
    """The Prometheus text for the threads' counters, the given gauges, any
    more counters (name -> (help, value)) and lines made elsewhere."""
    threads = selector_threads + payload_threads
    responses: Counter[tuple[bytes, int]] = Counter()
    for thread in threads:
        responses.update(dict(thread.stats.responses))  # dict(): one atomic copy
    lines = [
        "# HELP selectorkv_responses_total Responses sent, by request method and status.",
        "# TYPE selectorkv_responses_total counter",
    ]
    for (method, status), count in sorted(responses.items()):
        name = _label(method.decode("ascii", "replace"))
        lines.append(f'selectorkv_responses_total{{method="{name}",status="{status}"}} {count}')
    shed = sum(count for (_, status), count in responses.items() if status == 503)
    too_few = sum(count for (_, status), count in responses.items() if status == 504)
    counters: dict[str, tuple[str, float]] = {
        "shed": ("Requests answered 503: the PayloadThread queue was full.", shed),
        "gateway_timeouts": (
            "Requests answered 504: too few replicas answered (cluster), or no answer in time.",
            too_few,
        ),
        "bytes_received": ("Bytes read from clients.", sum(t.stats.bytes_in for t in threads)),
        "bytes_sent": ("Bytes written to clients.", sum(t.stats.bytes_out for t in threads)),
    }
    events: Counter[str] = Counter()
    for thread in threads:
        events.update(dict(thread.stats.events))
    for name, text in EVENTS.items():
        counters[name] = (text, events[name])
    for name, (text, value) in {**counters, **(more_counters or {})}.items():
        lines += metric_lines(f"selectorkv_{name}_total", "counter", text, [("", value)])
    for name, (text, value) in gauges.items():
        lines += metric_lines(f"selectorkv_{name}", "gauge", text, [("", value)])
    for name, text, group in (
        ("requests", "Complete requests dispatched, per SelectorThread.", selector_threads),
        ("tasks", "Tasks run (requests and stream slices), per PayloadThread.", payload_threads),
        ("busy_seconds", "Seconds spent running tasks, per PayloadThread.", payload_threads),
    ):
        samples = [(f'{{thread="{_label(t.name)}"}}', getattr(t.stats, name)) for t in group]
        lines += metric_lines(f"selectorkv_thread_{name}_total", "counter", text, samples)
    lines += _peer_metrics(threads)
    lines += more_lines or []
    return ("\n".join(lines) + "\n").encode()


def _peer_metrics(threads: list[StatsThread]) -> list[str]:
    """Calls to other nodes, summed over the threads, per peer."""
    peers: dict[str, PeerCounters] = {}
    for thread in threads:
        for peer, counters in list(thread.stats.peers.items()):
            total = peers.setdefault(peer, PeerCounters())
            total.requests += counters.requests
            total.failures += counters.failures
            total.timeouts += counters.timeouts
            total.seconds += counters.seconds
            total.buckets = [a + b for a, b in zip(total.buckets, counters.buckets, strict=True)]
    if not peers:
        return []
    lines = []
    for name, text in (
        ("requests", "Calls made to another node."),
        ("failures", "Calls to another node that failed (refused, reset, timed out...)."),
        ("timeouts", "Calls to another node that ran out of --peer-timeout."),
    ):
        samples = [(f'{{peer="{_label(p)}"}}', getattr(c, name)) for p, c in sorted(peers.items())]
        lines += metric_lines(f"selectorkv_peer_{name}_total", "counter", text, samples)
    name = "selectorkv_peer_latency_seconds"
    lines += [
        f"# HELP {name} Time from sending a call to another node to its answer or failure.",
        f"# TYPE {name} histogram",
    ]
    for peer, counters in sorted(peers.items()):
        label = _label(peer)
        cumulative = 0
        for bound, count in zip((*LATENCY_BOUNDS, "+Inf"), counters.buckets, strict=True):
            cumulative += count
            lines.append(f'{name}_bucket{{peer="{label}",le="{bound}"}} {cumulative}')
        lines.append(f'{name}_sum{{peer="{label}"}} {counters.seconds}')
        lines.append(f'{name}_count{{peer="{label}"}} {counters.requests}')
    return lines


def metric_lines(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"] + [
        f"{name}{labels} {value}" for labels, value in samples
    ]
