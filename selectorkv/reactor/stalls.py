"""A record of what held the server up, on the clock a load generator's due
times use (``time.monotonic``, CLOCK_MONOTONIC: one clock for every process
of the machine), so that a run's latency timeline and the server's own
events can be laid on one time axis (docs/lab.md, "The server's stall record").

Two kinds of event are recorded here, where only the server sees them:

- ``gc``: a garbage collection, from its start to its end
  (``gc.callbacks``), with its generation. Every thread waits for it: the
  collector runs holding the GIL.
- ``round``: a SelectorThread's round (a ``select()`` returned, to the end
  of its writes) that took ``round_threshold`` or longer. Every connection
  of that thread waited for it.

What the kernel and RocksDB did (time off the CPU, flushes, compactions,
write stalls) is read from outside the process, by the lab. The record is
off unless ``--record-stalls`` asks for it, and bounded (``capacity``
events, the oldest dropped first): a recording server costs two clock reads
a round and one callback per collection.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections import deque
from typing import Any, NamedTuple

CAPACITY = 200_000  # events kept; at 10 ms apart, more than half an hour
ROUND_THRESHOLD = 0.001  # seconds: a shorter round is not an event


class Stall(NamedTuple):
    kind: str  # "gc" or "round"
    start: float  # time.monotonic()
    seconds: float
    detail: str  # the generation collected, or the thread's name


class StallRecorder:
    """The events, appended by the threads that see them (a deque's append
    is atomic under the GIL) and read by ``since``."""

    def __init__(self, capacity: int = CAPACITY, round_threshold: float = ROUND_THRESHOLD) -> None:
        self._events: deque[Stall] = deque(maxlen=capacity)
        self.round_threshold = round_threshold
        self._gc_started = 0.0
        self._installed = False
        self._lock = threading.Lock()

    def record(self, kind: str, start: float, seconds: float, detail: str) -> None:
        self._events.append(Stall(kind, start, seconds, detail))

    def round(self, start: float, name: str) -> None:
        """A SelectorThread's round that began at ``start`` has ended."""
        seconds = time.monotonic() - start
        if seconds >= self.round_threshold:
            self._events.append(Stall("round", start, seconds, name))

    def install(self) -> None:
        """Record every garbage collection from now on (``uninstall`` ends it)."""
        with self._lock:
            if not self._installed:
                gc.callbacks.append(self._on_gc)
                self._installed = True

    def uninstall(self) -> None:
        with self._lock:
            if self._installed:
                gc.callbacks.remove(self._on_gc)
                self._installed = False

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # Collections do not nest: the thread that starts one ends it.
        if phase == "start":
            self._gc_started = time.monotonic()
        else:
            started = self._gc_started
            self.record("gc", started, time.monotonic() - started, str(info["generation"]))

    def since(self, start: float) -> list[Stall]:
        """The events that began at ``start`` or later, oldest first."""
        return [event for event in list(self._events) if event.start >= start]

    def as_json(self, start: float) -> bytes:
        """``GET /v0/debug/stalls?since=START``: the events since ``start``,
        with the clock they are on and its time now."""
        return json.dumps(
            {
                "clock": "monotonic",
                "now": time.monotonic(),
                "round_threshold_s": self.round_threshold,
                "events": [event._asdict() for event in self.since(start)],
            }
        ).encode()
