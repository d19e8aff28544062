"""SelectorThread: a reactor that owns a selector and the connections in it.

# design

Each SelectorThread runs one loop; one pass is a "round":

    select(timeout = time to the nearest deadline)
      -> the wakeup socket is ready:  run the calls other threads queued
      -> a client socket is ready:    connection.on_events(mask)
    expire the deadlines that have passed
    write the responses this round produced

Reads first, writes last. A response that this thread produces (every one in
sync mode; 503s and errors in async mode) waits in its connection's outbound
buffer until every ready socket of the round has been read and parsed, then
all of them are written together. Writing each response as soon as it exists
interleaves recv and send, and each send then wakes the client process for
that one response; writing them in a burst lets a client that holds many
connections (a load generator, a proxy) wake once for many. Measured on the
2-core machine with wrk -t1 -c64: sync PUT 12.4k -> 15.3k req/s, GET
16.6k -> 18.7k req/s. The delay this adds is one round of parsing, tens of
microseconds. A PayloadThread does not wait for rounds: it writes at once.

Only this thread touches its selector, its timers and the connections it
owns (see connection.py, "design: ownership"). Other threads talk to it in
one way only: ``call_soon``, which queues a callable and writes one byte to
the wakeup socketpair (wakeup.py). The acceptor uses it to hand over a new
socket, PayloadThreads to hand a connection back, the server to shut down.

Timers. A connection has one ``deadline`` at a time (header, body, write or
keep-alive timeout, or the end of a lingering close); it changes on nearly
every request, nearly always to a later time. A heap entry is therefore a
reminder to look, not a promise: setting a later deadline pushes nothing;
when a reminder comes due and the deadline has moved on, one new reminder
is pushed for it. A keep-alive connection serving thousands of requests
costs a handful of heap operations, not thousands.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import socket
import time
from collections.abc import Callable

from selectorkv.connection import Connection, Owner
from selectorkv.metrics import StatsThread
from selectorkv.wakeup import Wakeup

log = logging.getLogger("selectorkv.reactor")

ConnectionFactory = Callable[[socket.socket, "SelectorThread"], Connection]


class SelectorThread(StatsThread):
    """One reactor: a selector, a wakeup channel, timers, its connections."""

    def __init__(
        self,
        index: int,
        make_connection: ConnectionFactory,
        on_connection_gone: Callable[[], None],
    ) -> None:
        super().__init__(name=f"SelectorThread-{index}", daemon=True)
        self._make_connection = make_connection
        self._on_connection_gone = on_connection_gone  # frees a slot of the connection cap
        self._selector = selectors.DefaultSelector()
        self._wakeup = Wakeup()
        self._selector.register(self._wakeup.reader, selectors.EVENT_READ, None)
        self._connections: set[Connection] = set()
        self._timers: list[tuple[float, int, Connection]] = []
        self._round_writes: list[Connection] = []
        self._timer_seq = itertools.count()
        self._shutdown_deadline: float | None = None

    # ------------------------------------------------------------------
    # Any thread
    # ------------------------------------------------------------------

    def call_soon(self, call: Callable[[], None]) -> None:
        """Run ``call`` on this reactor's thread at its next wake-up."""
        self._wakeup.call_soon(call)

    def adopt(self, sock: socket.socket) -> None:
        """From the acceptor: take ownership of a newly accepted socket."""
        self.call_soon(lambda: self._on_adopt(sock))

    def shut_down(self, deadline: float) -> None:
        """Close idle connections now, busy ones after their response; at
        ``deadline`` (time.monotonic) cut whatever is left and exit."""
        self.call_soon(lambda: self._on_shut_down(deadline))

    # ------------------------------------------------------------------
    # This reactor's thread only
    # ------------------------------------------------------------------

    def set_interest(self, conn: Connection, events: int) -> None:
        """Watch ``conn`` for ``events`` (0: not at all) with few system calls."""
        if events == conn.interest:
            return
        if conn.interest == 0:
            self._selector.register(conn.sock, events, conn)
        elif events == 0:
            self._selector.unregister(conn.sock)
        else:
            self._selector.modify(conn.sock, events, conn)
        conn.interest = events

    def write_at_round_end(self, conn: Connection) -> None:
        """Flush ``conn`` once this round's reads are done (see "design")."""
        if not conn.write_scheduled:
            conn.write_scheduled = True
            self._round_writes.append(conn)

    def set_deadline(self, conn: Connection, when: float) -> None:
        conn.deadline = when
        if conn.timer_at is None or when < conn.timer_at:
            conn.timer_at = when
            heapq.heappush(self._timers, (when, next(self._timer_seq), conn))

    @property
    def connection_count(self) -> int:
        return len(self._connections)  # len() of a set is atomic: safe from any thread

    def forget(self, conn: Connection) -> None:
        """``conn`` is closed; drop it (its stale timer entries expire alone)."""
        if conn in self._connections:
            self._connections.remove(conn)
            self._on_connection_gone()

    def run(self) -> None:
        try:
            while not self._finished():
                self._poll_once()
        except BaseException:
            log.exception("%s crashed", self.name)
            raise
        finally:
            for conn in list(self._connections):
                conn.abort()
            self._selector.close()
            self._wakeup.close()

    def _poll_once(self) -> None:
        for key, mask in self._selector.select(self._select_timeout()):
            conn: Connection | None = key.data
            if conn is None:
                self._wakeup.run_calls()
            elif conn.closed:
                continue  # closed earlier in this same batch of events
            elif conn.owner is Owner.PAYLOAD:
                # Pipelined bytes arrived while a PayloadThread owns the
                # connection: stop watching it until the hand-back.
                self.set_interest(conn, 0)
            else:
                try:
                    conn.on_events(mask)
                except Exception:  # a bug: lose this connection, not the reactor
                    self._lose(conn)
        self._expire_deadlines()
        self._write_round()

    def _write_round(self) -> None:
        # Writing can let a connection parse a pipelined request whose
        # response is then scheduled again: loop until nothing is left.
        while self._round_writes:
            writes, self._round_writes = self._round_writes, []
            for conn in writes:
                conn.write_scheduled = False
                if not conn.closed:
                    try:
                        conn.on_round_end()
                    except Exception:
                        self._lose(conn)

    def _lose(self, conn: Connection) -> None:
        log.exception("%r failed; closing it", conn)
        conn.abort()

    def _select_timeout(self) -> float | None:
        due = self._timers[0][0] if self._timers else None
        if self._shutdown_deadline is not None:
            due = self._shutdown_deadline if due is None else min(due, self._shutdown_deadline)
        return None if due is None else max(0.0, due - time.monotonic())

    def _expire_deadlines(self) -> None:
        timers = self._timers
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            at, _, conn = heapq.heappop(timers)
            if conn.closed or conn.timer_at != at:
                continue  # superseded by an earlier reminder, or closed
            conn.timer_at = None
            if conn.deadline is None:
                continue
            if conn.deadline > now:
                self.set_deadline(conn, conn.deadline)  # moved on: remind again
            else:
                try:
                    conn.on_timeout()
                except Exception:
                    self._lose(conn)

    def _finished(self) -> bool:
        if self._shutdown_deadline is None:
            return False
        if not self._connections:
            return True
        if time.monotonic() >= self._shutdown_deadline:
            log.warning(
                "%s: grace period over, cutting %d connection(s)",
                self.name,
                len(self._connections),
            )
            return True
        return False

    def _on_adopt(self, sock: socket.socket) -> None:
        if self._shutdown_deadline is not None:
            sock.close()
            return
        conn = self._make_connection(sock, self)
        self._connections.add(conn)
        conn.start()

    def _on_shut_down(self, deadline: float) -> None:
        self._shutdown_deadline = deadline
        for conn in list(self._connections):
            conn.drain()
