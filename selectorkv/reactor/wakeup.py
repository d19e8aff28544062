"""The wakeup channel: how another thread interrupts a blocked ``select()``.

A SelectorThread spends its idle time inside ``selector.select()``. When a
PayloadThread hands a connection back, or the acceptor brings a new one, that
thread must not touch the selector itself (only the SelectorThread that owns
it does: docs/architecture.md, "The ownership rule"), so it leaves
a note for the owner and wakes it up. The note goes into a list guarded
by a lock; the wake-up is one byte written to a socketpair whose reading end
is registered in the selector like any client socket. This is the "self-pipe
trick" of CPython's asyncio (``_write_to_self``) and gunicorn's gthread
(``PollableMethodQueue``).

One byte per wake-up is enough, and one per batch is better: a flag records
that a byte is already on its way, so a burst of a thousand hand-backs costs
one ``send`` and one ``recv`` rather than a thousand of each.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable

log = logging.getLogger("selectorkv.reactor.wakeup")


class Wakeup:
    """A queue of callables for one selector's owner, with a wake-up socket."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._lock = threading.Lock()
        self._calls: list[Callable[[], None]] = []
        self._byte_sent = False
        self._closed = False

    @property
    def reader(self) -> socket.socket:
        """Register this in the selector (EVENT_READ); call ``run_calls`` when ready."""
        return self._reader

    def call_soon(self, call: Callable[[], None]) -> None:
        """From any thread: have the owner run ``call`` in its own thread, soon.

        The byte is written under the lock so that ``close`` cannot close the
        socket between the check and the write (a closed descriptor's number
        may already belong to another file by then).
        """
        with self._lock:
            if self._closed:
                return  # the owner has shut down; nobody would run the call
            self._calls.append(call)
            if self._byte_sent:
                return  # the owner is already due to wake and will see this call
            self._byte_sent = True
            try:
                self._writer.send(b"\0")
            except (BlockingIOError, InterruptedError):
                pass  # the pipe is full of wake-ups already: the owner will wake

    def run_calls(self) -> None:
        """In the owner's thread: consume the wake-up bytes, then run the calls.

        The order matters. The flag is cleared under the lock while the calls
        are taken, so a ``call_soon`` that comes after this point sends a new
        byte and the next ``select()`` returns at once; none is lost.
        """
        try:
            while self._reader.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        with self._lock:
            calls, self._calls = self._calls, []
            self._byte_sent = False
        for call in calls:
            try:
                call()
            except Exception:  # a bug in one call must not lose the others
                log.exception("queued call %r failed", call)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._calls.clear()
            self._reader.close()
            self._writer.close()
