"""SelectorThread: a reactor that owns a selector, the sockets registered in
it, and their timers.

One pass of its loop is a round: ``select()`` until the nearest timer, the
calls other threads queued (wakeup.py), ``on_events`` for each ready
socket's ``Handler``, the timers that are due, then the round's end: the
calls queued for it (group commit) and ``on_round_end`` for each handler
that asked (its writes). The reactor knows a socket only through its
``Handler`` and keeps its own bookkeeping in a ``Registration``. Only this
thread touches its selector, its timers and its handlers; other threads
reach it through ``call_soon``.

docs/architecture.md explains the design: "Readiness" (level-triggered
epoll, and why a handler that will not read stops watching), "Rounds: reads
first, writes last", "Timers" (a heap of reminders, not of promises) and
"The ownership rule".
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Protocol

from selectorkv.reactor.stalls import StallRecorder
from selectorkv.reactor.stats import StatsThread
from selectorkv.reactor.wakeup import Wakeup

log = logging.getLogger("selectorkv.reactor.selector_thread")


class Handler(Protocol):
    """What a SelectorThread calls on the object behind a registered socket."""

    # True for what shutdown must wait for (a client's request), False for
    # what it may cut at once (an idle outbound connection).
    holds_shutdown: bool

    def on_events(self, mask: int) -> None:
        """The socket is ready for ``mask`` (EVENT_READ and/or EVENT_WRITE)."""

    def on_round_end(self) -> None:
        """Called once at the end of a round in which it asked for it."""

    def drain(self) -> None:
        """The server is stopping: finish what has begun, take nothing new."""

    def abort(self) -> None:
        """Stop now (the grace period is over, or the handler failed)."""


class Registration:
    """The reactor's bookkeeping for one socket. Fields are written by the
    reactor only; the handler may read them."""

    __slots__ = ("active", "handler", "interest", "round_write", "sock")

    def __init__(self, sock: socket.socket, handler: Handler) -> None:
        self.sock = sock
        self.handler = handler
        self.interest = 0  # the events the selector watches for; 0: not in it
        self.round_write = False  # on_round_end is due at the end of this round
        self.active = True  # False once unregistered


class Timer:
    """A callback due on one SelectorThread; ``when`` is None when cancelled
    or run. Use and move it on that thread only."""

    __slots__ = ("callback", "handler", "queued_at", "when")

    def __init__(self, callback: Callable[[], None], handler: Handler | None) -> None:
        self.when: float | None = None
        self.callback = callback
        self.handler = handler  # aborted if the callback fails
        self.queued_at: float | None = None  # the earliest reminder in the heap

    def cancel(self) -> None:
        self.when = None


# Builds the handler of an adopted socket, which registers itself and starts.
ConnectionFactory = Callable[[socket.socket, "SelectorThread", Callable[[], None]], object]


class SelectorThread(StatsThread):
    """One reactor: a selector, a wakeup channel, timers, its sockets."""

    def __init__(self, index: int, make_connection: ConnectionFactory) -> None:
        super().__init__(name=f"SelectorThread-{index}", daemon=True)
        self._make_connection = make_connection
        self._selector = selectors.DefaultSelector()
        self._wakeup = Wakeup()
        self._selector.register(self._wakeup.reader, selectors.EVENT_READ, None)
        self._registrations: set[Registration] = set()
        self._holding: set[Registration] = set()  # those that shutdown waits for
        self._timers: list[tuple[float, int, Timer]] = []
        self._round_writes: list[Registration] = []
        self._round_end_calls: list[Callable[[], None]] = []
        self._timer_seq = itertools.count()
        self.stalls: StallRecorder | None = None  # --record-stalls: its long rounds
        self._shutdown_deadline: float | None = None
        # Sockets cut while a PayloadThread owned them: its hand-back closes
        # them, unless this reactor has ended by then (``close_cut_sockets``).
        self.cut_sockets: set[socket.socket] = set()
        # Set once, on this thread, when shutdown begins. PayloadThreads read
        # it (docs/architecture.md, "The ownership rule", says why that is safe).
        self.draining = False
        self.thread_id: int | None = None  # threading.get_ident() of the loop

    # ------------------------------------------------------------------
    # Any thread
    # ------------------------------------------------------------------

    @staticmethod
    def current() -> SelectorThread:
        """The SelectorThread the caller runs on. Raises RuntimeError on any
        other thread: code that must run on a reactor is called elsewhere by
        a bug, and says so."""
        thread = threading.current_thread()
        if not isinstance(thread, SelectorThread):
            raise RuntimeError(f"{thread.name} is not a SelectorThread")
        return thread

    def call_soon(self, call: Callable[[], None]) -> None:
        """Run ``call`` on this reactor's thread at its next wake-up."""
        self._wakeup.call_soon(call)

    def adopt(self, sock: socket.socket, release: Callable[[], None]) -> None:
        """From the acceptor: take ownership of a newly accepted socket;
        ``release`` (thread-safe) is called once when it is closed."""
        self.call_soon(lambda: self._on_adopt(sock, release))

    def shut_down(self, deadline: float) -> None:
        """Drain every handler now; at ``deadline`` (time.monotonic) abort
        whatever still holds the shutdown, and exit."""
        self.call_soon(lambda: self._on_shut_down(deadline))

    def close_cut_sockets(self) -> None:
        """Once this reactor and every PayloadThread have ended (nobody can
        write to them any more): close the sockets cut under a PayloadThread
        whose hand-back came too late to be run, sending their reset now."""
        assert not self.is_alive()
        for sock in self.cut_sockets:
            sock.close()
        self.cut_sockets.clear()

    @property
    def connection_count(self) -> int:
        """Client connections open now (len() of a set: safe from any thread)."""
        return len(self._holding)

    # ------------------------------------------------------------------
    # This reactor's thread only
    # ------------------------------------------------------------------

    def register(self, sock: socket.socket, handler: Handler) -> Registration:
        """Start tracking ``sock``; it is watched once ``set_interest`` says for what."""
        registration = Registration(sock, handler)
        self._registrations.add(registration)
        if handler.holds_shutdown:
            self._holding.add(registration)
        return registration

    def unregister(self, registration: Registration) -> bool:
        """Stop watching and tracking; False if that was done already."""
        if not registration.active:
            return False
        self.set_interest(registration, 0)
        registration.active = False
        self._registrations.discard(registration)
        self._holding.discard(registration)
        return True

    def set_interest(self, registration: Registration, events: int) -> None:
        """Watch for ``events`` (0: not at all) with few system calls."""
        if events == registration.interest or not registration.active:
            return
        if registration.interest == 0:
            self._selector.register(registration.sock, events, registration)
        elif events == 0:
            self._selector.unregister(registration.sock)
        else:
            self._selector.modify(registration.sock, events, registration)
        registration.interest = events

    def at_round_end(self, call: Callable[[], None]) -> None:
        """Run ``call`` at the end of this round, before its writes (group
        commit stores the round's writes there, commit.py)."""
        self._round_end_calls.append(call)

    def write_at_round_end(self, registration: Registration) -> None:
        """Call the handler's ``on_round_end`` once this round's reads are done."""
        if not registration.round_write:
            registration.round_write = True
            self._round_writes.append(registration)

    def timer(self, callback: Callable[[], None], handler: Handler | None = None) -> Timer:
        """A timer not yet due; ``schedule`` it. If ``callback`` raises,
        ``handler`` is aborted (the reactor goes on)."""
        return Timer(callback, handler)

    def call_later(
        self, delay: float, callback: Callable[[], None], handler: Handler | None = None
    ) -> Timer:
        """Run ``callback`` on this thread after ``delay`` seconds."""
        timer = self.timer(callback, handler)
        self.schedule(timer, time.monotonic() + delay)
        return timer

    def schedule(self, timer: Timer, when: float) -> None:
        """Make ``timer`` due at ``when`` (time.monotonic); a later time than
        the one already queued pushes nothing (docs/architecture.md, "Timers")."""
        timer.when = when
        queued = timer.queued_at
        if queued is None or when < queued:
            timer.queued_at = when
            heapq.heappush(self._timers, (when, next(self._timer_seq), timer))

    def run(self) -> None:
        self.thread_id = threading.get_ident()
        try:
            while not self._finished():
                self._poll_once()
        except BaseException:
            log.exception("%s crashed", self.name)
            raise
        finally:
            for registration in list(self._registrations):
                registration.handler.abort()
            self._selector.close()
            self._wakeup.close()

    def _poll_once(self) -> None:
        ready = self._selector.select(self._select_timeout())
        stalls = self.stalls
        started = time.monotonic() if stalls is not None else 0.0
        for key, mask in ready:
            registration: Registration | None = key.data
            if registration is None:
                self._wakeup.run_calls()
            elif registration.active:  # not unregistered earlier in this batch
                try:
                    registration.handler.on_events(mask)
                except Exception:  # a bug: lose this handler, not the reactor
                    self._lose(registration.handler)
        self._run_timers()
        self._end_round()
        if stalls is not None:
            stalls.round(started, self.name)

    def _end_round(self) -> None:
        # The round-end calls first (they produce responses), then the
        # writes. Writing can let a connection parse a pipelined request
        # whose response (or write to commit) is then scheduled again: loop
        # until nothing is left.
        while self._round_end_calls or self._round_writes:
            calls, self._round_end_calls = self._round_end_calls, []
            for call in calls:
                try:
                    call()
                except Exception:
                    log.exception("round-end call %r failed", call)
            writes, self._round_writes = self._round_writes, []
            for registration in writes:
                registration.round_write = False
                if registration.active:
                    try:
                        registration.handler.on_round_end()
                    except Exception:
                        self._lose(registration.handler)

    def _lose(self, handler: Handler | None) -> None:
        log.exception("%r failed; aborting it", handler)
        if handler is not None:
            handler.abort()

    def _select_timeout(self) -> float | None:
        due = self._timers[0][0] if self._timers else None
        if self._shutdown_deadline is not None:
            due = self._shutdown_deadline if due is None else min(due, self._shutdown_deadline)
        return None if due is None else max(0.0, due - time.monotonic())

    def _run_timers(self) -> None:
        timers = self._timers
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            at, _, timer = heapq.heappop(timers)
            if timer.queued_at != at:
                continue  # superseded by an earlier reminder
            timer.queued_at = None
            when = timer.when
            if when is None:
                continue  # cancelled
            if when > now:
                self.schedule(timer, when)  # moved on: remind again
                continue
            timer.when = None
            try:
                timer.callback()
            except Exception:
                self._lose(timer.handler)

    def _finished(self) -> bool:
        if self._shutdown_deadline is None:
            return False
        if not self._holding:
            return True
        if time.monotonic() >= self._shutdown_deadline:
            log.warning(
                "%s: grace period over, cutting %d connection(s)",
                self.name,
                len(self._holding),
            )
            return True
        return False

    def _on_adopt(self, sock: socket.socket, release: Callable[[], None]) -> None:
        if self._shutdown_deadline is not None:
            sock.close()
            release()
            return
        self._make_connection(sock, self, release)

    def _on_shut_down(self, deadline: float) -> None:
        self._shutdown_deadline = deadline
        self.draining = True
        for registration in list(self._registrations):
            registration.handler.drain()
