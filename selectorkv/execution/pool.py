"""Async mode's executor: a bounded pool of PayloadThreads.

# design

``PayloadPool`` gives the connection away with the request
(``cycle.hand_off``, the ownership rule in connection.py) and returns to its
loop at once. A PayloadThread takes the pair from the bounded queue, calls
the API, and gives the response to ``cycle.respond``; on the thread that
owns the connection that writes it through the non-blocking socket and
hands the connection back. When the queue is full the request is not queued and not executed: the
SelectorThread answers 503 itself, immediately. Shedding load at the door
keeps latency bounded for the requests that are accepted.

The GIL. rocksdict holds the GIL while it works, and so does every line of
Python here, so M PayloadThreads never run M requests at once: they only
move the storage call off the SelectorThread. What that buys is a reactor
that keeps reading and shedding while a storage call waits, if the call
releases the GIL while it waits; a rocksdict call does not, so the reactor
waits for it too (docs/architecture.md, "What async mode buys, exactly",
measures both). What it costs (a queue, a wake-up and two GIL hand-overs
per request) is what the sync/async study measures.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from selectorkv.execution.commit import GroupCommit
from selectorkv.http.exchange import Application, Request, Responder, Task
from selectorkv.kv.api import INTERNAL_ERROR, SERVICE_UNAVAILABLE, Write
from selectorkv.reactor.stats import StatsThread, current

log = logging.getLogger("selectorkv.execution.pool")

# What the queue holds: a request with the cycle it answers, or a task.
Item = tuple[Responder, Request] | Task


class PayloadPool:
    """Async mode: a bounded queue in front of ``workers`` PayloadThreads."""

    def __init__(
        self, handle: Application, workers: int, queue_size: int, group: GroupCommit | None = None
    ) -> None:
        self._handle = handle
        self._group = group
        self._capacity = queue_size
        # SimpleQueue is implemented in C and unbounded; the bound is the
        # check in ``execute``, made atomic with the put by ``_admission``
        # (several SelectorThreads submit at once). queue.Queue would bound it
        # for us, at several times the cost per request in Python locking.
        # An item is a request to execute with its cycle, or a task to run
        # (the next slice of a streamed response, a coordinator's calls to
        # this node's own replica).
        self._queue: queue.SimpleQueue[Item | None] = queue.SimpleQueue()
        self._admission = threading.Lock()
        self.threads = [
            StatsThread(target=self._work, name=f"PayloadThread-{i}", daemon=True)
            for i in range(1, workers + 1)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def execute(self, request: Request, cycle: Responder) -> None:
        """On the SelectorThread: queue the request, or answer 503 at once."""
        with self._admission:
            admitted = self._queue.qsize() < self._capacity
            if admitted:
                cycle.hand_off()  # given away before any PayloadThread sees it
                self._queue.put((cycle, request))
        if not admitted:
            cycle.respond(SERVICE_UNAVAILABLE)

    def is_full(self) -> bool:
        return self._queue.qsize() >= self._capacity

    def resume(self, cycle: Responder) -> None:
        """On the SelectorThread: have a PayloadThread produce the next slice
        of a streamed response. Not bounded by the queue size: the request
        was admitted already, and each stream has at most one slice queued."""
        cycle.hand_off()
        self._queue.put(cycle.continue_stream)

    def run(self, task: Task) -> None:
        """On the SelectorThread: have a PayloadThread run ``task``. Not
        bounded by the queue size: the caller bounds what it asks (a
        coordinator's calls in flight to its own replica)."""
        self._queue.put(task)

    def stop(self) -> None:
        """Let the queued requests finish, then end the threads."""
        for _ in self.threads:
            self._queue.put(None)
        for thread in self.threads:
            thread.join()

    def depth(self) -> int:
        """Requests waiting for a PayloadThread."""
        return self._queue.qsize()

    def busy(self) -> int:
        """PayloadThreads running a task now."""
        return sum(thread.stats.running for thread in self.threads)

    def _work(self) -> None:
        stats = current()
        running = True
        while running and (item := self._queue.get()) is not None:
            started = time.perf_counter()
            stats.running = 1
            batch, running = self._take_more(item)
            try:
                self._run(batch)
            finally:
                stats.running = 0
                stats.tasks += len(batch)
                stats.busy_seconds += time.perf_counter() - started

    def _take_more(self, first: Item) -> tuple[list[Item], bool]:
        """``first`` and what else is queued now, up to the group-commit
        bound (never waiting for more); False if the stop sign came too."""
        batch = [first]
        group = self._group
        while group is not None and len(batch) < group.max_writes:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, False
            batch.append(item)
        return batch, True

    def _run(self, batch: list[Item]) -> None:
        """Answer the reads and run the tasks at once; store the writes as
        one group, then answer them (commit.py)."""
        group = self._group
        writes: list[tuple[Write, Responder]] = []
        size = 0
        for item in batch:
            if not isinstance(item, tuple):
                item()
                continue
            cycle, request = item
            write = None
            if group is not None and request.method != b"GET":
                write = group.write_of(request)
            if write is not None and group is not None:
                writes.append((write, cycle))
                size += len(write.value or b"")
                if group.full(len(writes), size):
                    group.commit(writes)
                    writes, size = [], 0
                continue
            try:
                response = self._handle(request)
            except Exception:  # Api.handle does not raise; another handler might
                log.exception("handling %r failed", request)
                response = INTERNAL_ERROR
            # Writes the response here and hands the connection back.
            cycle.respond(response)
        if group is not None:
            group.commit(writes)
