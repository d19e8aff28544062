"""One client connection: its socket, its h11 state machine, its outbound
buffer, and the rule that says which thread may touch them.

# design: ownership

A connection has exactly one owner at a time, recorded in ``owner``:

``Owner.SELECTOR``
    The SelectorThread that adopted the connection reads the socket, feeds
    h11, parses requests and, in sync mode, executes them and writes the
    responses. This is the state between requests.

``Owner.PAYLOAD``
    In async mode, from the moment a complete request is put on the
    PayloadThread queue until the SelectorThread runs the hand-back. The
    PayloadThread that takes the request executes it and writes the response
    through the non-blocking socket itself (``respond``). It owns the h11
    state, the outbound buffer and the socket's send side meanwhile; the
    SelectorThread does not read, parse or write this connection. Ownership
    returns in ``hand_back``: the PayloadThread puts ``_on_handed_back`` on the
    reactor's wakeup queue and must not touch the connection after that.

Every transfer is a single assignment made by the thread that gives up the
connection, before the other thread can see it (the queue and the wakeup
list both take a lock, which orders the memory too).

What the SelectorThread keeps, even while a PayloadThread owns the
connection: its selector registration (``interest``), its timer
(``deadline``, ``timer_at``) and its place in the round's writes
(``write_scheduled``). They are the reactor's bookkeeping, not the
connection's state, and no PayloadThread touches them. The reactor does not
bother to unregister a connection when it hands it off: if the socket
becomes readable while the request is in flight (a pipelining client), the
reactor "parks" it then, and the hand-back registers it again. A client that
waits for its response, as nearly all do, costs no selector change at all.

# design: the request cycle

    bytes -> h11.receive_data -> next_event(): Request, Data..., EndOfMessage
          -> executor.execute(conn, Request)         (sync: inline; async: queue)
          -> respond(Response) -> h11.send -> outbound buffer -> socket
          -> h11.start_next_cycle() -> next_event() again (pipelined requests)

One request is in flight per connection. Pipelined requests wait, still
unparsed, in h11's receive buffer; they are answered in order because the
next one is parsed only after the current response has been produced.

# design: flow control

A PayloadThread's ``respond`` tries ``send`` at once; the SelectorThread's
waits for the end of its round (reactor.py, "reads first, writes last") and
then tries ``send``. What the socket does not take stays in the outbound
buffer, and the reactor registers EVENT_WRITE only while bytes are pending.
Above ``HIGH_WATER`` pending bytes the connection stops reading and parsing:
a client that pipelines requests without reading responses fills its own
socket buffers, not our memory.

# design: streaming

A response with a ``stream`` (GET /v0/entities) is produced by its
connection's owner a slice at a time, never all at once and never by a
thread that waits for the client:

    respond: head (chunked) + first slice ──> outbound buffer ──> socket
    EVENT_WRITE (kept while a stream runs) -> flush -> less than a slice left?
        -> executor.resume(conn): sync: produce_slice() right here
                                  async: queue (conn, None) for a PayloadThread,
                                         which produces one slice and hands back
    stream exhausted -> end_response (zero-length chunk) -> next request

A client that reads slowly leaves bytes in the buffer, so no write event
comes and no slice is produced: the producer runs exactly as fast as the
client reads, and the server holds about two slices per stream. While a
stream runs the connection is not read (a pipelined request waits in the
socket), and closing the connection closes the stream and its storage
cursor.

# design: closing

We close after the last response when h11 says so (HTTP/1.0,
``Connection: close``), after an error response (400, 408, 413, 431), when
the peer closed its side, and when the server drains. A close that we start
while the client may still be sending is a "lingering close": shut down our
sending side, read and discard until the client closes or ``LINGER_SECONDS``
pass. Closing a socket with unread input makes the kernel send RST, which can
destroy an error response before the client has read it.
"""

from __future__ import annotations

import enum
import functools
import logging
import re
import socket
import time
from collections.abc import Generator
from dataclasses import dataclass
from http import HTTPStatus
from selectors import EVENT_READ, EVENT_WRITE
from typing import TYPE_CHECKING, Protocol

from selectorkv import metrics
from selectorkv.api import Request, Response
from selectorkv.outbound import OutboundBuffer
from selectorkv.parser import h11

if TYPE_CHECKING:
    from selectorkv.reactor import SelectorThread

log = logging.getLogger("selectorkv.connection")

# One recv takes at most this much; h11's buffer holds at most one request
# head (max_header_size) plus one read beyond what has been parsed.
RECV_SIZE = 64 * 1024
# Pending outbound bytes above which the connection stops reading.
HIGH_WATER = 256 * 1024
# How long a lingering close waits for the client to finish sending.
LINGER_SECONDS = 2.0
# A streamed response is produced a slice at a time: about this many bytes,
# then the producer yields the thread, and resumes when fewer than this many
# are still waiting for the socket. The trade-off, measured streaming 1M
# entries beside small GETs on other connections (sync / async mode):
# 64 KiB slices: 57 / 51 MB/s, the GETs' p99 3.9 / 1.8 ms;
# 16 KiB slices: 50 / 40 MB/s, the GETs' p99 0.9 / 0.9 ms.
SLICE_BYTES = 16 * 1024


class Owner(enum.Enum):
    """Which thread may touch the connection's h11 state and socket writes."""

    SELECTOR = "selector"
    PAYLOAD = "payload"


@dataclass(frozen=True)
class Limits:
    """The per-connection bounds, taken from the server's settings."""

    max_body: int
    max_header_size: int
    header_timeout: float
    keepalive_timeout: float


class Executor(Protocol):
    """Runs a complete request: ``InlineExecutor`` (sync) or ``PayloadPool``
    (async). Called by the SelectorThread, which owns ``conn`` at the time."""

    def execute(self, conn: Connection, request: Request) -> None: ...

    def resume(self, conn: Connection) -> None:
        """Produce the next slice of ``conn``'s streamed response."""
        ...

    def is_full(self) -> bool:
        """True when a new request would be answered 503 (async, queue full)."""
        ...


class Connection:
    """A client connection, adopted by one SelectorThread for its lifetime."""

    def __init__(
        self,
        sock: socket.socket,
        reactor: SelectorThread,
        limits: Limits,
        executor: Executor,
    ) -> None:
        self.sock = sock
        self.reactor = reactor
        self.owner = Owner.SELECTOR
        self.closed = False
        # The reactor's bookkeeping (see "design: ownership").
        self.interest = 0
        self.deadline: float | None = None
        self.timer_at: float | None = None
        self.write_scheduled = False  # output waits for the end of the round

        self._limits = limits
        self._executor = executor
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_size)
        self._out = OutboundBuffer()
        self._head: h11.Request | None = None
        self._method = b"-"  # of the request being answered, for the metrics
        self._body: list[bytes] = []
        self._body_size = 0
        # When the head of the next request started to arrive; a fresh
        # connection counts from its accept, so a silent client times out.
        self._head_since: float | None = time.monotonic()
        self._closing = False  # close once the outbound buffer is flushed
        self._parsing_paused = False  # stopped above HIGH_WATER; resume once it drains
        self._stream: Generator[bytes, None, None] | None = None  # a response still producing
        self._lingering_until: float | None = None
        self._peer_eof = False
        self._broken = False  # the socket or our state failed: close at once
        self._draining = False  # the server is shutting down

    def __repr__(self) -> str:
        return f"<Connection fd={self.sock.fileno()} owner={self.owner.value}>"

    # ------------------------------------------------------------------
    # Reactor side: called by the owning SelectorThread only
    # ------------------------------------------------------------------

    def start(self) -> None:
        """The reactor adopted us: start watching for the first request."""
        self._advance()

    def on_events(self, mask: int) -> None:
        """The selector reported the socket ready for ``mask``."""
        if mask & EVENT_WRITE:
            self._flush()
            if self._stream is not None and self._out.size < SLICE_BYTES and not self._closing:
                self._executor.resume(self)  # the socket drained: the next slice
                if self.owner is not Owner.SELECTOR:
                    return  # a PayloadThread produces it
        if mask & EVENT_READ and not self._broken:
            self._read()
        elif self._parsing_paused:
            self._process()  # the buffer drained: parse what h11 already holds
        self._advance()

    def on_round_end(self) -> None:
        """The reactor's round is over: write what this round produced, then
        parse any pipelined request that waited for the buffer to drain."""
        self._flush()
        if self._parsing_paused:
            self._process()
        self._advance()

    def on_timeout(self) -> None:
        """The reactor's timer for this connection expired."""
        if self.owner is not Owner.SELECTOR or self.write_scheduled:
            # A request in flight is not idle, and a response produced in this
            # round (after a long storage call in sync mode) is about to be
            # written: the hand-back or the end of the round re-arms the timer.
            return
        if self._lingering_until is not None or self._out.size:
            self.close()  # the client neither finished nor read: give up
        elif self._head_since is not None or self._h11.their_state is h11.SEND_BODY:
            self._reject(408, b"request timed out\n")
            self._advance()
        else:
            log.debug("%r idle for %ss, closing", self, self._limits.keepalive_timeout)
            self.close()

    def drain(self) -> None:
        """The server is shutting down: close now if idle, else after the
        response to the request that has begun."""
        self._draining = True
        if self.owner is Owner.SELECTOR and not self._request_begun() and not self._out.size:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.reactor.set_interest(self, 0)
        self.sock.close()
        self.reactor.forget(self)
        if self._stream is not None:
            self._stream.close()  # releases the storage cursor now, not at GC
            self._stream = None

    def abort(self) -> None:
        """Grace period over: cut the connection whoever owns it.

        A PayloadThread may be inside ``send`` on this socket right now, so
        the descriptor is not closed under it (its number could be reused by
        another file). ``shutdown`` makes that send fail with EPIPE instead.
        """
        if self.owner is Owner.SELECTOR:
            self.close()
            return
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.reactor.forget(self)

    # ------------------------------------------------------------------
    # Reading and parsing (SelectorThread)
    # ------------------------------------------------------------------

    def _read(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("%r recv failed: %s", self, exc)
            self._peer_eof = True
            self._broken = True
            return
        if self._lingering_until is not None:
            if not data:
                self._peer_eof = True  # the client is done: now we may close
            return  # lingering: whatever the client still sends is discarded
        self.reactor.stats.bytes_in += len(data)
        if not data:
            self._peer_eof = True
        elif self._executor.is_full() and self._between_requests():
            data = self._shed(data)
            if not data:
                return
        self._h11.receive_data(data)  # b"" tells h11 about the end of input
        self._process()

    def _between_requests(self) -> bool:
        conn = self._h11
        return (
            conn.their_state is h11.IDLE
            and conn.our_state is h11.IDLE
            and not conn.trailing_data[0]
            and not self._out.size
        )

    def _shed(self, data: bytes) -> bytes:
        """The PayloadThread queue is full: answer 503 to the plain requests
        in ``data`` without parsing them with h11; return what is left.

        Shedding must cost less than serving, or a server at twice its
        capacity cannot even say no fast enough. A 503 that went through h11
        cost nearly a whole request (measured: at 30k req/s offered, 17k
        answered and the accepted requests' p99 was 2.9 s). So while the
        queue is full, a request that is plainly framed (complete head, no
        Transfer-Encoding, its Content-Length body all here, nothing h11 or
        the raw-head check would refuse) is answered from its bytes alone,
        and h11 never sees it; the connection stays at h11's IDLE, keep-alive
        intact. Anything less plain goes to h11 as usual.
        """
        shed = 0
        responses = self.reactor.stats.responses
        while (size := _plain_request_size(data, self._limits.max_header_size)) is not None:
            responses[(data[: data.find(b" ")], 503)] += 1
            data = data[size:]
            self._out.append(_SHED_RESPONSE)
            shed += 1
        if shed:
            self._head_since = None  # whole requests came: the connection is idle again
            self.reactor.write_at_round_end(self)
        return data

    def _process(self) -> None:
        """Turn buffered bytes into events until h11 needs more data, or the
        connection is handed off, or its outbound buffer is too full."""
        conn = self._h11
        self._parsing_paused = False
        while self.owner is Owner.SELECTOR and not self._closing:
            if self._out.size > HIGH_WATER:
                self._parsing_paused = True  # let the client read what it asked for first
                return
            if conn.their_state is h11.IDLE:
                buffered, eof = conn.trailing_data
                if not buffered and not eof:
                    return  # between requests with nothing buffered: no need to ask h11
                if len(buffered) > self._limits.max_header_size and not _head_ends_within(
                    buffered, self._limits.max_header_size
                ):
                    # h11 bounds only a head that is still incomplete; one that
                    # arrived whole in a single read must be measured here.
                    self._reject(431, _REJECT_BODIES[431])
                    return
                problem = _raw_head_problem(buffered)
                if problem:
                    self._reject(400, problem)
                    return
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                log.debug("%r bad request: %s", self, exc)
                self._reject(exc.error_status_hint, _REJECT_BODIES.get(exc.error_status_hint))
                return
            kind = type(event)
            if kind is h11.Data:
                self._on_body_data(event.data)  # type: ignore[union-attr]
            elif kind is h11.EndOfMessage:
                self._on_request_complete()
            elif kind is h11.Request:
                self._on_request_head(event)  # type: ignore[arg-type]
            elif kind is h11.ConnectionClosed:
                self._closing = True
            else:  # NEED_DATA (or PAUSED, which a connection we own never sees)
                if self._head_since is None and conn.their_state is h11.IDLE:
                    self._head_since = time.monotonic()  # part of a new head is here
                return

    def _on_request_head(self, head: h11.Request) -> None:
        self._head_since = None
        self._head = head
        self._method = head.method
        if head.http_version not in (b"1.0", b"1.1"):
            self._reject(505, b"only HTTP/1.0 and HTTP/1.1 are served\n")
            return
        declared, problem = _body_length(head)
        if problem:
            self._reject(400, problem)
            return
        if declared is not None and declared > self._limits.max_body:
            self._reject(413, _too_large(self._limits.max_body))
            return
        if self._h11.they_are_waiting_for_100_continue:
            # The client holds the body back until we say we want it.
            self._send(_CONTINUE)
            self._flush()

    def _on_body_data(self, data: bytes) -> None:
        self._body_size += len(data)
        if self._body_size > self._limits.max_body:  # a chunked body grew too large
            self._reject(413, _too_large(self._limits.max_body))
            return
        self._body.append(data)

    def _on_request_complete(self) -> None:
        assert self._head is not None
        request = Request(self._head.method, self._head.target, b"".join(self._body))
        self._head = None
        self._body = []
        self._body_size = 0
        self.reactor.stats.requests += 1
        self._executor.execute(self, request)

    def _request_begun(self) -> bool:
        return self._h11.their_state is not h11.IDLE or self._head_since is not None

    def _reject(self, status: int, message: bytes | None) -> None:
        """Answer a client's mistake with ``status`` and close."""
        self._body = []
        if self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self.respond(Response(status, message or b"", ((b"connection", b"close"),)))
        self._closing = True

    # ------------------------------------------------------------------
    # Writing: called by the current owner (SelectorThread or PayloadThread)
    # ------------------------------------------------------------------

    def respond(self, response: Response) -> None:
        """Produce a response: a whole one, which ends the request cycle, or
        the head and first slice of a streamed one (see ``produce_slice``)."""
        self._stats().responses[(self._method, response.status)] += 1
        self._method = b"-"  # until the next request's head
        if response.stream is None:
            self.send_head(response.status, response.headers, len(response.body))
            self.send_body(response.body)
            self.end_response()
            return
        self.send_head(response.status, response.headers, None)  # chunked
        self._stream = response.stream
        self._parsing_paused = True  # no next request until this one has been sent
        self.produce_slice()

    def produce_slice(self) -> None:
        """Add about SLICE_BYTES of the streamed body, one chunk per piece,
        and write it; end the response when the stream runs out.

        The producer never waits for the client. It stops after a slice, and
        the reactor asks for the next one (``Executor.resume``) when the
        socket has taken most of it: a slow reader slows the producer, and
        the memory a stream holds stays under about two slices. Between
        slices the thread serves everyone else.
        """
        stream = self._stream
        assert stream is not None
        budget = self._out.size + SLICE_BYTES
        try:
            while self._out.size < budget and not self._broken:
                piece = next(stream, None)
                if piece is None:
                    self._stream = None
                    self.end_response()  # the terminating zero-length chunk
                    self._parsing_paused = True  # a pipelined request may wait in h11
                    return
                self.send_body(piece)
        except Exception:
            # The storage failed mid-body. The status line has gone, so the
            # only honest answer left is a cut connection: the client sees
            # a chunked body without its last chunk, never a short success.
            log.exception("%r: streamed response failed; cutting the connection", self)
            self._broken = True
        if self._broken:
            stream.close()
            self._stream = None
            return
        self._flush()

    def send_head(
        self,
        status: int,
        headers: tuple[tuple[bytes, bytes], ...],
        content_length: int | None,
    ) -> None:
        """Start a response. With ``content_length`` None, h11 frames the body
        as chunked (HTTP/1.1) or by closing (HTTP/1.0): a streamed response."""
        self._send(_response_head(status, headers, content_length, self._draining))

    def send_body(self, piece: bytes) -> None:
        """Add a piece of the body; it leaves as the socket takes it."""
        if piece:
            self._send(h11.Data(data=piece))

    def end_response(self) -> None:
        """Finish the response and, if the connection goes on, the cycle."""
        self._send(_END_OF_MESSAGE)
        if self.owner is Owner.SELECTOR:
            self.reactor.write_at_round_end(self)  # reads first, writes last
        else:
            self._flush()  # a PayloadThread writes at once
        conn = self._h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE and not self._draining:
            conn.start_next_cycle()  # keep-alive: the next request may be parsed
        else:
            self._closing = True  # HTTP/1.0, Connection: close, an early error, shutdown

    def hand_back(self, *, broken: bool = False) -> None:
        """From the PayloadThread: return the connection to its SelectorThread
        (``broken``: responding failed, so the reactor must close it).

        The last thing a PayloadThread does with the connection; see
        "design: ownership".
        """
        self._broken = self._broken or broken
        self.reactor.call_soon(self._on_handed_back)

    def _send(self, event: h11.Event) -> None:
        """Serialise ``event`` into the outbound buffer.

        h11 writes a head as many small pieces, joined here into one; body
        data comes back "passed through", the very object we gave it, so a
        large value is never copied on its way to the socket.
        """
        if self._broken:
            return  # the peer is gone; the reactor will close
        pieces = self._h11.send_with_data_passthrough(event) or []
        if type(event) is h11.Data:
            for piece in pieces:
                self._out.append(piece)
        else:
            self._out.append(b"".join(pieces))

    def _stats(self) -> metrics.ThreadStats:
        """The counters of the thread that owns the connection now."""
        return self.reactor.stats if self.owner is Owner.SELECTOR else metrics.current()

    def _flush(self) -> None:
        if not self._out.size or self._broken:
            return
        try:
            self._stats().bytes_out += self._out.send_to(self.sock)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            log.debug("%r send failed: %s", self, exc)
            self._broken = True
            self._out.clear()

    # ------------------------------------------------------------------
    # Back on the SelectorThread: interest, timers, closing
    # ------------------------------------------------------------------

    def _on_handed_back(self) -> None:
        self.owner = Owner.SELECTOR
        if self.closed:
            return  # aborted at the end of a shutdown while in flight
        self._process()  # pipelined requests already buffered by h11
        self._advance()

    def _advance(self) -> None:
        """After any event: close, linger, or update the selector and timer."""
        if self.owner is not Owner.SELECTOR or self.closed or self.write_scheduled:
            return  # not ours now, or the end of the round will come back here
        if self._broken or (self._closing and not self._out.size and self._peer_eof):
            self.close()
            return
        now = time.monotonic()
        if (
            self._closing
            and not self._out.size
            and self._lingering_until is None
            and not self._start_lingering(now)
        ):
            return  # our side could not be shut down: closed instead
        events = EVENT_WRITE if self._out.size or self._stream is not None else 0
        if self._lingering_until is not None:
            events = EVENT_READ
            deadline = self._lingering_until
        elif self._out.size:
            deadline = now + self._limits.keepalive_timeout  # a stalled reader
        elif self._h11.their_state is h11.SEND_BODY:
            deadline = now + self._limits.header_timeout  # a stalled body
        elif self._head_since is not None:
            deadline = self._head_since + self._limits.header_timeout
        else:
            deadline = now + self._limits.keepalive_timeout  # idle keep-alive
        if not self._closing and self._out.size <= HIGH_WATER and self._stream is None:
            events |= EVENT_READ
        self.reactor.set_interest(self, events)
        self.reactor.set_deadline(self, deadline)

    def _start_lingering(self, now: float) -> bool:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return False
        self._lingering_until = now + LINGER_SECONDS
        return True


_REJECT_BODIES = {
    400: b"malformed HTTP request\n",
    431: b"request head too large\n",
}

# h11 events are immutable, so the common ones are built once: constructing
# and validating an h11.Response costs about 3 microseconds, a tenth of what
# h11 spends on a whole request.
_END_OF_MESSAGE = h11.EndOfMessage()
_SHED_RESPONSE = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
_CONTINUE = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")


@functools.lru_cache(maxsize=1024)
def _response_head(
    status: int,
    headers: tuple[tuple[bytes, bytes], ...],
    content_length: int | None,
    close: bool,
) -> h11.Response:
    framing: tuple[tuple[bytes, bytes], ...] = ()
    if content_length is not None:
        framing = ((b"content-length", b"%d" % content_length),)
    if close:
        framing += ((b"connection", b"close"),)
    return h11.Response(
        status_code=status,
        headers=[*framing, *headers],
        reason=HTTPStatus(status).phrase.encode("ascii"),
    )


_HEAD_END = re.compile(rb"\n\r?\n")


def _head_ends_within(buffered: bytes, limit: int) -> bool:
    """Does the request head at the start of ``buffered`` end within ``limit`` bytes?"""
    return _HEAD_END.search(buffered, 0, limit) is not None


def _plain_request_size(data: bytes, max_head: int) -> int | None:
    """The size of the request at the start of ``data`` if it is complete and
    plainly framed: an HTTP/1.1 head that passes the raw-head check, with no
    Transfer-Encoding, Connection or Expect header, and its Content-Length
    body (if any) all present. None for anything else."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or end > max_head:
        return None
    head = data[: end + 4]
    lowered = head.lower()
    if (
        not head.endswith(b" HTTP/1.1\r\n", 0, head.find(b"\r\n") + 2)
        or b"\ntransfer-encoding" in lowered
        or b"\nconnection:" in lowered
        or b"\nexpect:" in lowered
        or b"\ncontent-length " in lowered  # h11 refuses space before the colon
        or b"\ncontent-length\t" in lowered
        or _raw_head_problem(head)
    ):
        return None
    length = 0
    for value in _CONTENT_LENGTH.findall(head):  # at most one: _raw_head_problem checked
        if not value.strip().isdigit():
            return None
        length = int(value)
    size = end + 4 + length
    return size if len(data) >= size else None


def _too_large(limit: int) -> bytes:
    return b"request body larger than %d bytes\n" % limit


def _body_length(head: h11.Request) -> tuple[int | None, bytes]:
    """The declared Content-Length, and why the head's framing is refused
    (empty when it is not).

    h11 accepts Content-Length beside Transfer-Encoding (chunked wins): that
    is how requests are smuggled past a proxy that reads the framing the
    other way, so it is refused here. raw_items() hands over h11's list in
    one call; iterating the Headers sequence costs a Python call per header.
    """
    declared: int | None = None
    chunked = False
    for name, value in head.headers.raw_items():
        lowered = name.lower()
        if lowered == b"content-length":
            declared = int(value)  # h11 has checked that it is a number
        elif lowered == b"transfer-encoding":
            chunked = True
    if declared is not None and chunked:
        return None, b"both Content-Length and Transfer-Encoding\n"
    return declared, b""


# Control bytes other than HTAB, CR and LF (which frame the head).
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTENT_LENGTH = re.compile(rb"\ncontent-length[ \t]*:([^\r\n]*)", re.IGNORECASE)


def _raw_head_problem(buffered: bytes) -> bytes:
    """Why the request head at the start of ``buffered`` is refused before
    h11 parses it, or b"" (the body that may follow is not looked at).

    h11 is lenient where a proxy in front of us may not be: it lets control
    bytes through in header values, and it quietly merges a Content-Length
    that is repeated (or listed, "3, 3") with the same value. Two readers
    that disagree on a head are how requests get smuggled, so both are
    refused here, on the raw bytes.
    """
    found = _HEAD_END.search(buffered)
    end = found.end() if found else len(buffered)
    if _CONTROL_BYTES.search(buffered, 0, end):
        return b"control bytes in the request head\n"
    lengths = _CONTENT_LENGTH.findall(buffered, 0, end)
    if len(lengths) > 1 or (lengths and b"," in lengths[0]):
        return b"Content-Length given more than once\n"
    return b""
