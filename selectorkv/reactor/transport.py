"""The transport: one non-blocking stream socket on a SelectorThread, with
its outbound buffer. It knows bytes, not HTTP.

As in CPython's asyncio, a transport moves bytes and a protocol on top
gives them meaning: a client connection (h11 SERVER) and a peer connection
(h11 CLIENT) share everything below HTTP. The protocol calls the transport,
one call per read and one per flush, and reads ``out.size`` and the flags
(``peer_eof``, ``broken``, ``lingering_until``) directly. A close we start
while the client may still send is a lingering close (``start_lingering``).
``close`` is for the connection's owner; ``cut`` stops a connection that
another thread may be writing to, leaving the descriptor open until that
writer lets go; ``discard_unsent`` makes the close that follows a reset.
docs/architecture.md, "Closing", says why.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from selectorkv.reactor.outbound import OutboundBuffer
from selectorkv.reactor.stats import ThreadStats

if TYPE_CHECKING:
    from selectorkv.reactor.selector_thread import Handler, Registration, SelectorThread

log = logging.getLogger("selectorkv.reactor.transport")

# One recv takes at most this much (1 KiB to 64 KiB reads cost the same:
# 2.4 us per call on a socketpair, docs/architecture.md).
RECV_SIZE = 64 * 1024
# Pending outbound bytes above which a protocol should stop reading.
HIGH_WATER = 256 * 1024
# How long a lingering close waits for the peer to finish sending.
LINGER_SECONDS = 2.0
# SO_LINGER on, with a zero timeout: close() sends a reset at once.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


class Transport:
    """A socket registered with one SelectorThread, and its outbound bytes."""

    def __init__(
        self,
        sock: socket.socket,
        reactor: SelectorThread,
        handler: Handler,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.sock = sock
        self.reactor = reactor
        self.registration: Registration = reactor.register(sock, handler)
        self.out = OutboundBuffer()
        self.peer_eof = False  # the peer closed its sending side
        self.broken = False  # the socket failed: nothing more goes through it
        self.lingering_until: float | None = None  # our side is shut down
        self._on_close = on_close

    def __repr__(self) -> str:
        return f"fd={self.sock.fileno()}"

    def read(self) -> bytes | None:
        """One ``recv``: the bytes, b"" when the peer closed, None when there
        was nothing to read or the socket failed (``broken`` is set)."""
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            log.debug("%r recv failed: %s", self, exc)
            self.peer_eof = True
            self.broken = True
            return None
        if not data:
            self.peer_eof = True
        return data

    def flush(self, stats: ThreadStats) -> None:
        """Send what the socket takes now; count it in ``stats`` (those of the
        thread that owns the connection). The rest waits for EVENT_WRITE."""
        if not self.out.size or self.broken:
            return
        try:
            stats.bytes_out += self.out.send_to(self.sock)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            log.debug("%r send failed: %s", self, exc)
            self.broken = True
            self.out.clear()

    def watch(self, events: int) -> None:
        """Have the reactor watch the socket for ``events`` (0: not at all)."""
        self.reactor.set_interest(self.registration, events)

    def write_at_round_end(self) -> None:
        self.reactor.write_at_round_end(self.registration)

    def start_lingering(self, until: float) -> bool:
        """Shut down our sending side and read (and discard) until ``until``;
        False if the socket could not be shut down (close it then)."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            return False
        self.lingering_until = until
        return True

    def discard_unsent(self) -> None:
        """Make the close to come abortive: the kernel drops the bytes it still
        holds for the peer and sends a reset. Without it, a cut response of
        megabytes would still trickle out to a slow reader long after the
        server let go of it (through a zero window, at the pace of the
        kernel's probes), and the peer would learn of the cut only at its end."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        except OSError:
            pass

    def close(self) -> None:
        """Unregister and close the socket (by its owner only)."""
        if self.reactor.unregister(self.registration):
            self.sock.close()
            self._closed()
        elif self.sock.fileno() >= 0:
            self.sock.close()  # cut earlier; the writer is done with it now
            self.reactor.cut_sockets.discard(self.sock)

    def cut(self) -> None:
        """Stop the connection under a thread that may be writing to it now
        (see "Close and cut")."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self.reactor.unregister(self.registration):
            self.reactor.cut_sockets.add(self.sock)
            self._closed()

    def _closed(self) -> None:
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()
