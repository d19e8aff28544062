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

from collections import Counter

from selectorkv.reactor.stats import LATENCY_BOUNDS, Family, PeerCounters, StatsThread

# Events, counted by the thread that sees them: name -> help.
EVENTS = {
    "commit_batches": "Batches that group commit stored (one write-ahead log append each).",
    "commit_writes": "Writes that group commit stored: over commit_batches, the mean batch.",
    "writes_superseded": "Replica writes that found a newer record there (the write lost to it).",
    "topology_mismatches": "Internal requests refused: the sender has another node list.",
    "read_repairs": "Records sent to replicas that answered a read with an older one.",
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(
    selector_threads: list[StatsThread],
    payload_threads: list[StatsThread],
    gauges: dict[str, tuple[str, float]],
    more_counters: dict[str, tuple[str, float]] | None = None,
    families: list[Family] | None = None,
) -> bytes:
    """The Prometheus text for the threads' counters, the given gauges, any
    more counters (name -> (help, value)) and families made elsewhere."""
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
    for family in families or []:
        lines += metric_lines(f"selectorkv_{family.name}", family.kind, family.text, family.samples)
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
