"""Peer calls: HTTP requests from one node to another over non-blocking
sockets that a SelectorThread owns, like its client connections.

A ``PeerConnection`` is the client side of what ``Connection`` is the
server side of: the same ``Transport``, registered with the same
SelectorThread and driven by the same rounds, with the lean client side of
HTTP/1.1 that calls between nodes need (``http/client_wire.py``). The
connect is non-blocking, every call has a deadline, a failed connection is
closed and never reused, and addresses are resolved once at start. The
result goes to a callback on the SelectorThread, exactly once.
``PeerPool`` keeps the idle keep-alive connections per peer, bounds the
calls in flight (over the bound a call fails at once), and sends a call
once more on a new connection when a kept-alive one turns out closed
before any byte of an answer (every internal request is idempotent).

docs/cluster.md, "The internal protocol" and "One replicated request".
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable
from selectors import EVENT_READ, EVENT_WRITE
from typing import TYPE_CHECKING, NamedTuple

from selectorkv.http.client_wire import BadReply, ReplyReader, header_lines, request_bytes
from selectorkv.reactor.stats import TIMED_OUT
from selectorkv.reactor.transport import Transport

if TYPE_CHECKING:
    from selectorkv.reactor.selector_thread import SelectorThread, Timer

log = logging.getLogger("selectorkv.cluster.peer")

# A peer's answer is bounded like a client's request: head and body (a pool
# is given the body bound that fits the largest record: PeerPool).
MAX_REPLY_HEAD = 16 * 1024
MAX_REPLY_BODY = 64 * 1024 * 1024


class PeerReply(NamedTuple):
    """What a peer answered; ``status`` 0 and ``error`` set when the call
    failed. ``unanswered``: it failed because the connection closed before
    any answer began (may be sent again on a new connection)."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes
    error: str = ""
    unanswered: bool = False


TOO_MANY = "too many calls in flight to this peer"
CLOSED = "the peer closed the connection"


def failed(why: str, unanswered: bool = False) -> PeerReply:
    return PeerReply(0, {}, b"", why, unanswered)


class PeerRequest(NamedTuple):
    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


OnReply = Callable[[PeerReply], None]


def url_of(address: tuple[str, int]) -> str:
    """``http://host:port`` of an address (the peer's label in /metrics)."""
    host = f"[{address[0]}]" if ":" in address[0] else address[0]
    return f"http://{host}:{address[1]}"


class PeerConnection:
    """One keep-alive connection to a peer, owned by one SelectorThread."""

    holds_shutdown = False

    def __init__(self, pool: PeerPool, address: tuple[str, int]) -> None:
        """Opens the socket and starts the connect; OSError (no descriptor
        left, a source address that cannot be bound) leaves nothing open."""
        self._pool = pool
        self._reactor = pool.reactor
        self.address = address
        self._host = b"%s:%d" % (address[0].encode("ascii"), address[1])
        sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if pool.source is not None:
                sock.bind((pool.source, 0))
            code = sock.connect_ex(address)
        except OSError:
            sock.close()
            raise
        self._transport = Transport(sock, self._reactor, self)
        self._reader = ReplyReader(MAX_REPLY_HEAD, pool.max_reply_body)
        self._closed = False
        self._on_reply: OnReply | None = None
        self._deadline: Timer | None = None
        self._connecting = code == errno.EINPROGRESS  # writable once connected
        self._connect_failed = (
            "" if code in (0, errno.EINPROGRESS) else errno.errorcode.get(code, str(code))
        )

    def __repr__(self) -> str:
        return f"<PeerConnection {self.address[0]}:{self.address[1]}>"

    @property
    def busy(self) -> bool:
        return self._on_reply is not None

    def send(self, request: PeerRequest, timeout: float, on_reply: OnReply) -> None:
        """Start ``request``; ``on_reply`` gets the answer or the failure."""
        assert self._on_reply is None, "one call at a time per connection"
        self._on_reply = on_reply
        self._deadline = self._reactor.call_later(timeout, self._on_deadline, self)
        if self._connect_failed:
            self._fail(f"connect failed: {self._connect_failed}")
            return
        self._transport.out.append(
            request_bytes(
                request.method, request.target, self._host, header_lines(request.headers),
                request.body,
            )
        )  # fmt: skip
        if not self._connecting:
            self._transport.write_at_round_end()
        self._advance()

    # The reactor's calls (reactor.Handler)

    def on_events(self, mask: int) -> None:
        transport = self._transport
        if self._connecting and mask & EVENT_WRITE:
            code = transport.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self._fail(f"connect failed: {errno.errorcode.get(code, str(code))}")
                return
            self._connecting = False
        if mask & EVENT_WRITE:
            transport.flush(self._reactor.stats)
        if mask & EVENT_READ:
            data = transport.read()
            if data:
                if not self.busy:  # bytes nobody asked for: not a peer to trust
                    self._fail("an answer to no request")
                    return
                self._reader.feed(data)
                self._parse()
        if transport.broken or transport.peer_eof:
            # Mid-call this fails the call; an idle connection the peer
            # closed (its keep-alive timeout) is simply dropped.
            self._fail(CLOSED, closed=True)
            return
        self._advance()

    def on_round_end(self) -> None:
        self._transport.flush(self._reactor.stats)
        if self._transport.broken:
            self._fail("the connection failed", closed=True)
            return
        self._advance()

    def drain(self) -> None:
        if not self.busy:
            self.close()

    def abort(self) -> None:
        if self.busy:
            self._fail("shutting down")
        else:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._deadline is not None:
            self._deadline.cancel()
        self._transport.close()
        self._pool.forget(self)

    # The answer

    def _parse(self) -> None:
        try:
            reply = self._reader.next()
        except BadReply as exc:
            self._fail(f"a malformed answer: {exc}")
            return
        if reply is None:
            return  # not all here yet
        on_reply = self._finish()
        if reply.keep_alive and not self._reader.started and not self._transport.out.size:
            self._pool.idle(self)
        else:  # the peer closes it, answered before it had the whole request, or said more
            self.close()
        on_reply(PeerReply(reply.status, reply.headers, reply.body))

    def _fail(self, why: str, closed: bool = False) -> None:
        """Fail the call in progress, if any, and close. ``closed``: the
        connection broke or the peer closed it (not a deadline, not a bad
        answer)."""
        unanswered = closed and not self._reader.started
        on_reply = self._finish() if self._on_reply is not None else None
        if on_reply is not None:
            log.debug("%r: %s", self, why)
        self.close()
        if on_reply is not None:
            on_reply(failed(why, unanswered))

    def _finish(self) -> OnReply:
        on_reply, self._on_reply = self._on_reply, None
        assert on_reply is not None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        return on_reply

    def _on_deadline(self) -> None:
        if self._on_reply is not None:
            self._fail(TIMED_OUT)

    def _advance(self) -> None:
        if self._closed:
            return
        transport = self._transport
        if self._connecting:
            events = EVENT_WRITE
        else:
            events = EVENT_READ | EVENT_WRITE if transport.out.size else EVENT_READ
        transport.watch(events)


class PeerPool:
    """The connections of one SelectorThread to the peers: idle keep-alive
    ones for reuse, and a bound on the calls in flight to each peer.
    ``source``: the address to send from (None: the kernel's choice)."""

    def __init__(
        self,
        reactor: SelectorThread,
        max_in_flight: int,
        timeout: float,
        source: str | None = None,
        max_reply_body: int = MAX_REPLY_BODY,
    ) -> None:
        self.reactor = reactor
        self.source = source
        self.max_reply_body = max_reply_body
        self._max_in_flight = max_in_flight
        self._timeout = timeout
        self._idle: dict[tuple[str, int], list[PeerConnection]] = {}
        self._in_flight: dict[tuple[str, int], int] = {}

    def call(self, address: tuple[str, int], request: PeerRequest, on_reply: OnReply) -> None:
        """On the SelectorThread: send ``request`` to the peer at ``address``;
        ``on_reply`` is called on this thread, once, with the answer or why
        there is none (at once if the peer already has ``max_in_flight``)."""
        if self._in_flight.get(address, 0) >= self._max_in_flight:
            on_reply(failed(TOO_MANY))  # not a call: not counted as one
            return
        self._in_flight[address] = self._in_flight.get(address, 0) + 1
        started = time.perf_counter()

        def done(reply: PeerReply) -> None:
            self._in_flight[address] -= 1
            elapsed = time.perf_counter() - started
            self.reactor.stats.peer_call(url_of(address), elapsed, reply.error)
            on_reply(reply)

        self._send(address, request, done, reuse=True)

    def _send(
        self, address: tuple[str, int], request: PeerRequest, done: OnReply, reuse: bool
    ) -> None:
        """One attempt: on an idle connection when ``reuse`` and there is
        one, else on a new one; a reused one that turns out closed by the
        peer gets the request again on a new one (the module's docstring)."""
        idle = self._idle.get(address) if reuse else None
        reused = bool(idle)
        try:
            conn = idle.pop() if idle else PeerConnection(self, address)
        except OSError as exc:
            done(failed(f"cannot open a connection: {exc}"))
            return

        def replied(reply: PeerReply) -> None:
            if reused and reply.unanswered:
                log.debug("%r was closed while idle: the request goes again on a new one", conn)
                self._send(address, request, done, reuse=False)
            else:
                done(reply)

        conn.send(request, self._timeout, replied)

    def idle(self, conn: PeerConnection) -> None:
        self._idle.setdefault(conn.address, []).append(conn)

    def forget(self, conn: PeerConnection) -> None:
        idle = self._idle.get(conn.address)
        if idle and conn in idle:
            idle.remove(conn)

    def idle_count(self, address: tuple[str, int]) -> int:
        return len(self._idle.get(address, ()))
