"""The acceptor: takes new connections off the listening socket and deals
them out round-robin to the SelectorThreads.

A small reactor of its own (the listening socket and a wakeup channel): it
accepts up to ``ACCEPT_BATCH`` connections per readiness and hands each to
the next SelectorThread with ``adopt``; the connection belongs to that
thread for its whole life. ``ConnectionSlots`` bounds the connections
(``--max-connections``): with no slot free the listening socket leaves the
selector and new clients wait in the kernel's backlog, until a connection
closes and gives its slot back. docs/architecture.md ("Reading order",
"One request in sync mode") places it in the whole.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence

from selectorkv.reactor.selector_thread import SelectorThread
from selectorkv.reactor.wakeup import Wakeup

log = logging.getLogger("selectorkv.reactor.acceptor")

# Accept at most this many connections per wake-up before selecting again,
# so a flood of connections cannot starve the stop request.
ACCEPT_BATCH = 64
# Out of file descriptors: how long to stop accepting before trying again.
FD_EXHAUSTED_PAUSE = 0.1


class ConnectionSlots:
    """How many more connections the server may hold. Thread-safe: the
    acceptor takes slots, SelectorThreads give them back."""

    def __init__(self, limit: int) -> None:
        self._lock = threading.Lock()
        self._free = limit
        self._on_free: Callable[[], None] | None = None

    def take(self) -> bool:
        with self._lock:
            if self._free == 0:
                return False
            self._free -= 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._free += 1
            on_free, self._on_free = self._on_free, None
        if on_free is not None:
            on_free()

    def call_when_free(self, on_free: Callable[[], None]) -> None:
        """Call ``on_free`` once a slot is free (now, if one already is)."""
        with self._lock:
            if not self._free:
                self._on_free = on_free
                return
        on_free()


class Acceptor(threading.Thread):
    """Accepts on ``listener`` and hands each socket to a SelectorThread."""

    def __init__(
        self,
        listener: socket.socket,
        reactors: Sequence[SelectorThread],
        slots: ConnectionSlots,
    ) -> None:
        super().__init__(name="Acceptor", daemon=True)
        listener.setblocking(False)
        self._listener = listener
        self._reactors = reactors
        self._slots = slots
        self._next = 0
        # Sockets handed to SelectorThreads so far (/metrics). Written by
        # this thread only; another thread reads a whole int.
        self.accepted = 0
        self._running = True
        self._paused = False
        self._wakeup = Wakeup()
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, self._accept_ready)
        self._selector.register(self._wakeup.reader, selectors.EVENT_READ, self._wakeup.run_calls)

    def stop(self) -> None:
        """Stop accepting and close the listening socket; returns when done."""
        self._wakeup.call_soon(self._on_stop)
        self.join()

    def run(self) -> None:
        try:
            while self._running:
                for key, _ in self._selector.select():
                    key.data()
        finally:
            self._selector.close()
            self._listener.close()
            self._wakeup.close()

    def _on_stop(self) -> None:
        self._running = False

    def _accept_ready(self) -> None:
        for _ in range(ACCEPT_BATCH):
            if not self._slots.take():
                self._pause()
                return
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                self._slots.give_back()
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # The pending connection stays in the backlog; waiting
                    # beats spinning on a socket that stays readable.
                    log.warning("accept failed (%s); pausing %ss", exc, FD_EXHAUSTED_PAUSE)
                    time.sleep(FD_EXHAUSTED_PAUSE)
                else:
                    log.debug("accept failed: %s", exc)  # e.g. the client already reset
                self._slots.give_back()
                return
            sock.setblocking(False)
            # Responses leave in one write; Nagle would only delay them.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._reactors[self._next].adopt(sock, self._slots.give_back)
            self.accepted += 1
            self._next = (self._next + 1) % len(self._reactors)

    def _pause(self) -> None:
        """The cap is reached: leave new clients in the backlog until a slot frees."""
        if not self._paused:
            log.warning("connection cap reached; new connections wait in the backlog")
            self._paused = True
            self._selector.unregister(self._listener)
            self._slots.call_when_free(lambda: self._wakeup.call_soon(self._resume))

    def _resume(self) -> None:
        if self._paused and self._running:
            log.info("a connection slot is free again; accepting")
            self._paused = False
            self._selector.register(self._listener, selectors.EVENT_READ, self._accept_ready)
