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


class ThreadStats:
    """What one thread counts. Only its own thread writes it."""

    __slots__ = (
        "busy_seconds",
        "bytes_in",
        "bytes_out",
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


class StatsThread(threading.Thread):
    """A thread that carries its own ThreadStats."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.stats = ThreadStats()


def current() -> ThreadStats:
    """The calling thread's stats (SelectorThreads and PayloadThreads have one)."""
    stats: ThreadStats = threading.current_thread().stats  # type: ignore[attr-defined]
    return stats


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(
    selector_threads: list[StatsThread],
    payload_threads: list[StatsThread],
    gauges: dict[str, tuple[str, float]],
) -> bytes:
    """The Prometheus text for the threads' counters and the given gauges
    (name -> (help, value))."""
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
    counters: dict[str, tuple[str, float]] = {
        "shed": ("Requests answered 503: the PayloadThread queue was full.", shed),
        "bytes_received": ("Bytes read from clients.", sum(t.stats.bytes_in for t in threads)),
        "bytes_sent": ("Bytes written to clients.", sum(t.stats.bytes_out for t in threads)),
    }
    for name, (text, value) in counters.items():
        lines += _metric(f"selectorkv_{name}_total", "counter", text, [("", value)])
    for name, (text, value) in gauges.items():
        lines += _metric(f"selectorkv_{name}", "gauge", text, [("", value)])
    for name, text, group in (
        ("requests", "Complete requests dispatched, per SelectorThread.", selector_threads),
        ("tasks", "Tasks run (requests and stream slices), per PayloadThread.", payload_threads),
        ("busy_seconds", "Seconds spent running tasks, per PayloadThread.", payload_threads),
    ):
        samples = [(f'{{thread="{_label(t.name)}"}}', getattr(t.stats, name)) for t in group]
        lines += _metric(f"selectorkv_thread_{name}_total", "counter", text, samples)
    return ("\n".join(lines) + "\n").encode()


def _metric(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"] + [
        f"{name}{labels} {value}" for labels, value in samples
    ]
