"""A client connection: the HTTP server protocol on top of a transport. h11
in the SERVER role (a plain request skips it: ``_serve_plain``), the request
cycle, the phase the connection is in, and the rule that says which thread
may touch it.

docs/architecture.md is where the design is explained; the sections that
are about this module:

- "The ownership rule": ``owner`` is SELECTOR or PAYLOAD, and each
  transfer is one assignment made on the SelectorThread (``lend``, and
  ``_on_handed_back``); only ``draining`` is read across it.
- "A connection's phases": ``Phase`` (the table is on the class), from
  which ``_advance`` derives the selector interest and the timer.
- "Flow control" and "Streaming a range": one request in flight,
  ``BACKPRESSURED`` above ``HIGH_WATER``, a stream produced a slice at a
  time as the socket drains.
- "Closing": when we close, and why a close is a lingering one.
- "Plain requests": which requests skip h11, and how the two paths are
  kept one server.
"""

from __future__ import annotations

import enum
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from selectors import EVENT_READ, EVENT_WRITE
from typing import NamedTuple

from selectorkv.http import framing
from selectorkv.http.cycle import RequestCycle
from selectorkv.http.exchange import Executor, Pause, Request, Response, Stream
from selectorkv.http.parser import h11
from selectorkv.reactor import stats
from selectorkv.reactor.selector_thread import Handler, SelectorThread
from selectorkv.reactor.transport import HIGH_WATER, LINGER_SECONDS, Transport

log = logging.getLogger("selectorkv.http.connection")

# A streamed response is produced a slice at a time: about this many bytes,
# then the producer yields the thread, and resumes when fewer than this many
# are still waiting for the socket. The trade-off is measured in
# docs/architecture.md ("Streaming a range").
SLICE_BYTES = 16 * 1024

_get_ident = threading.get_ident


class Owner(enum.Enum):
    """Which thread may touch a connection's h11 state and socket writes
    (docs/architecture.md, "The ownership rule")."""

    SELECTOR = "selector"
    PAYLOAD = "payload"


class Phase(enum.Enum):
    """Where a connection stands; ``_advance`` derives from it:

    =============  ============================  ==================  =======================
    phase          h11 (theirs / ours)           watched for         timer
    =============  ============================  ==================  =======================
    IDLE           IDLE / IDLE                   read (+write)       keep-alive timeout
    HEAD           IDLE / IDLE, bytes here       read (+write)       header timeout, 408
    BODY           SEND_BODY / IDLE              read (+write)       header timeout, 408
    EXECUTING      DONE / IDLE                   unchanged (parked)  none: a thread owns it
    AWAITING       DONE / IDLE                   unchanged (parked)  request timeout, 504
    BACKPRESSURED  any / IDLE                    write               keep-alive timeout
    STREAMING      DONE / SEND_BODY              write (*)           keep-alive timeout
    CLOSING        any / DONE or MUST_CLOSE      write               keep-alive timeout
    LINGERING      any / any, our side shut      read (discarded)    LINGER_SECONDS
    CLOSED         -                             -                   -
    =============  ============================  ==================  =======================

    "+write" while response bytes wait for the socket; the timer is then
    the keep-alive timeout (a client that does not read). (*) Nothing while
    the stream is paused (it yielded a ``Pause``) with no bytes to send.
    """

    IDLE = "idle"  # between requests, nothing of the next one here
    HEAD = "head"  # a request head is arriving (or a new connection is silent)
    BODY = "body"  # the head is parsed, the body is arriving
    EXECUTING = "executing"  # the request is with a thread of the executor
    AWAITING = "awaiting"  # its answer comes later, from another thread
    BACKPRESSURED = "backpressured"  # the outbound buffer is above HIGH_WATER: no parsing
    STREAMING = "streaming"  # a streamed response is being produced
    CLOSING = "closing"  # the last response is produced; close once it is sent
    LINGERING = "lingering"  # our side is shut; waiting for the client to close
    CLOSED = "closed"


# Enum members are found through a descriptor: about 130 ns per lookup on
# CPython 3.11, five times a module name. The request path compares phases
# and owners dozens of times per request, so it uses these names.
IDLE, HEAD, BODY = Phase.IDLE, Phase.HEAD, Phase.BODY
EXECUTING, AWAITING, BACKPRESSURED = Phase.EXECUTING, Phase.AWAITING, Phase.BACKPRESSURED
STREAMING, CLOSING, LINGERING, CLOSED = (
    Phase.STREAMING,
    Phase.CLOSING,
    Phase.LINGERING,
    Phase.CLOSED,
)
SELECTOR, PAYLOAD = Owner.SELECTOR, Owner.PAYLOAD


@dataclass(frozen=True)
class Limits:
    """The per-connection bounds, taken from the server's settings."""

    max_body: int
    max_header_size: int
    header_timeout: float
    keepalive_timeout: float
    request_timeout: float
    wider: Allowance | None = None


class Allowance(NamedTuple):
    """Larger bounds for requests whose target starts with ``prefix``: the
    server gives its cluster's internal requests this much more head and body
    (a record's version and the node's headers around a client's value).
    Whether such a request may be served is not this layer's to say."""

    prefix: bytes
    head: int
    body: int


# Builds a connection's transport: (socket, reactor, handler, on_close).
TransportFactory = Callable[[socket.socket, SelectorThread, Handler, Callable[[], None]], Transport]


class Connection:
    """A client connection, adopted by one SelectorThread for its lifetime.
    Building one registers it with the reactor and starts it."""

    holds_shutdown = True  # shutdown waits for a client's request to finish

    def __init__(
        self,
        sock: socket.socket,
        reactor: SelectorThread,
        release: Callable[[], None],
        *,
        limits: Limits,
        executor: Executor,
        clock: Callable[[], float] = time.monotonic,
        make_transport: TransportFactory = Transport,
    ) -> None:
        """``clock`` and ``make_transport`` are seams: the unit tests hand in
        a clock they move and a transport without a socket."""
        self.reactor = reactor
        self.owner = SELECTOR
        self._clock = clock
        self._transport = make_transport(sock, reactor, self, release)
        self._timer = reactor.timer(self._on_timeout, self)
        self._limits = limits
        self._executor = executor
        # h11's own bound is the backstop; scan_head applies the exact one,
        # which is larger for a node's internal request (_head_limit).
        self._h11 = h11.Connection(
            h11.SERVER,
            max_incomplete_event_size=limits.max_header_size
            + (limits.wider.head if limits.wider else 0),
        )
        # A fresh connection counts from its accept, so a silent client times out.
        self._phase = HEAD
        self._head_since: float | None = clock()  # when the head in HEAD began
        self._cycle: RequestCycle | None = None  # the request being read or answered
        self._stream: Stream | None = None  # a response still producing
        # The stream paused (it yielded a Pause): not asked for a slice until
        # it says it has more. Set by the producing thread, cleared on the
        # SelectorThread (``_on_stream_ready``).
        self._stream_paused = False
        # This cycle's request was read without h11 (``_serve_plain``): its
        # response is framed here too, and h11 stays idle throughout.
        self._plain = False
        self._chunked = False  # a plain cycle's response is a chunked stream
        self._advance()

    def __repr__(self) -> str:
        return f"<Connection {self._transport!r} {self.owner.value} {self._phase.value}>"

    # ------------------------------------------------------------------
    # The reactor's calls (reactor.Handler), on the SelectorThread
    # ------------------------------------------------------------------

    def on_events(self, mask: int) -> None:
        """The selector reported the socket ready for ``mask``."""
        if self.owner is not SELECTOR or self._phase is AWAITING:
            # Pipelined bytes arrived, or the socket drained, while a
            # PayloadThread owns the connection or its answer is awaited:
            # park it until the hand-back or the answer.
            self._transport.watch(0)
            return
        transport = self._transport
        if mask & EVENT_WRITE:
            self._flush()
            if (
                self._phase is STREAMING
                and transport.out.size < SLICE_BYTES
                and self._cycle is not None
                and not self._stream_paused
            ):
                self._executor.resume(self._cycle)  # the socket drained: the next slice
                if self.owner is PAYLOAD:
                    return  # a PayloadThread produces it
        if mask & EVENT_READ and not transport.broken:
            self._read()
        elif not transport.broken:
            self._process()  # the buffer drained, or a stream ended: parse what h11 holds
        self._advance()

    def on_round_end(self) -> None:
        """The reactor's round is over: write what this round produced, then
        parse any pipelined request that waited for the buffer to drain."""
        if self.owner is not SELECTOR:
            # Handed off after this write was scheduled: the PayloadThread
            # sends these bytes ahead of its own response.
            return
        self._flush()
        if self._phase is BACKPRESSURED:
            self._process()
        self._advance()

    def drain(self) -> None:
        """The server is shutting down: close now if idle, else once the
        request that has begun is answered (``_end_response`` reads the
        reactor's ``draining``)."""
        if self.owner is not SELECTOR or self._phase is not IDLE:
            return
        if self._transport.out.size:
            self._phase = CLOSING
            self._advance()
        else:
            self.close()

    def abort(self) -> None:
        """Cut the connection whoever owns it (grace period over, or a bug):
        a reset, and what was not sent yet is dropped."""
        self._transport.discard_unsent()
        if self.owner is SELECTOR:
            self.close()
        else:
            self._transport.cut()  # the hand-back, if it comes, closes it

    def close(self) -> None:
        """On the owning SelectorThread: close now."""
        if self._phase is CLOSED:
            return
        self._phase = CLOSED
        self._timer.cancel()
        self._transport.close()
        if self._cycle is not None:
            self._cycle.expire()  # a later answer finds nobody waiting
        if self._stream is not None:
            self._stream.close()  # releases the storage cursor now, not at GC
            self._stream = None

    # ------------------------------------------------------------------
    # Reading and parsing (SelectorThread)
    # ------------------------------------------------------------------

    def _read(self) -> None:
        transport = self._transport
        data = transport.read()
        if data is None or self._phase is LINGERING:
            return  # nothing, or discarded: a lingering close reads only to see the end
        self.reactor.stats.bytes_in += len(data)
        if data and self._between_requests():
            if self._executor.is_full():
                data = self._shed(data)
                if not data:
                    return
            elif (
                plain := framing.plain_request(data, self._head_limit(data))
            ) is not None and plain[4] <= self._body_limit(plain[2]):
                self._serve_plain(plain, data)  # a body too large is h11's to refuse
                return
        self._h11.receive_data(data)  # b"" tells h11 about the end of input
        self._process()

    def _between_requests(self) -> bool:
        conn = self._h11
        return (
            (self._phase is IDLE or self._phase is HEAD)
            and conn.their_state is h11.IDLE
            and not conn.trailing_data[0]
            and not self._transport.out.size
        )

    def _shed(self, data: bytes) -> bytes:
        """The PayloadThread queue is full: answer 503 to the plain requests
        in ``data`` without parsing them with h11; return what is left.

        Shedding must cost less than serving, or a server at twice its
        capacity cannot even say no fast enough. A 503 that went through h11
        cost nearly a whole request (measured: at 30k req/s offered, 17k
        answered and the accepted requests' p99 was 2.9 s). So while the
        queue is full, a request that is plainly framed
        (``framing.plain_request``) is answered from its bytes alone,
        and h11 never sees it; the connection stays at h11's IDLE, keep-alive
        intact. Anything less plain goes to h11 as usual.
        """
        shed = 0
        responses = self.reactor.stats.responses
        max_head = self._limits.max_header_size
        out = self._transport.out
        while (plain := framing.plain_request(data, max_head)) is not None:
            responses[(plain[1], 503)] += 1
            data = data[plain[0] :]
            out.append(framing.SHED_RESPONSE)
            shed += 1
        if shed:
            self._phase = IDLE  # whole requests came: idle again
            self._head_since = None
            self._transport.write_at_round_end()
        return data

    def _serve_plain(self, plain: framing.PlainRequest, data: bytes) -> None:
        """A whole, plainly framed request came in a read of its own, between
        requests: dispatch it without h11, whose parse and state machine
        cost as much as the rest of a PUT (docs/architecture.md, "Plain
        requests"). h11 stays at IDLE; whatever came after the request waits
        in h11's buffer and is parsed by h11 once this one is answered."""
        size, method, target, headers, length = plain
        self._plain = True
        self._head_since = None
        if len(data) > size:
            self._h11.receive_data(data[size:])
        self._cycle = RequestCycle(self, method, target, headers)
        self._dispatch(data[size - length : size])
        self._process()

    def _process(self) -> None:
        """Turn buffered bytes into events until h11 needs more data, the
        request goes to the executor, or the outbound buffer is too full."""
        conn = self._h11
        while self.owner is SELECTOR:
            phase = self._phase
            if phase is BACKPRESSURED:
                phase = self._phase = self._reading_phase()
            elif not (phase is IDLE or phase is HEAD or phase is BODY):
                return  # executing, awaiting, streaming, closing: nothing to parse now
            if self._transport.out.size > HIGH_WATER:
                self._phase = BACKPRESSURED  # let the client read what it asked for first
                return
            if conn.their_state is h11.IDLE:
                buffered, eof = conn.trailing_data
                if not buffered and not eof:
                    return  # between requests with nothing buffered: no need to ask h11
                _, status, problem, _ = framing.scan_head(buffered, self._head_limit(buffered))
                if status:
                    self._reject(status, problem)
                    return
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                log.debug("%r bad request: %s", self, exc)
                status = exc.error_status_hint
                self._reject(status, framing.REJECT_BODIES.get(status, b""))
                return
            kind = type(event)
            if kind is h11.Data:
                self._on_body_data(event.data)  # type: ignore[union-attr]
            elif kind is h11.EndOfMessage:
                assert self._cycle is not None
                self._dispatch(b"".join(self._cycle.body))
            elif kind is h11.Request:
                self._on_request_head(event)  # type: ignore[arg-type]
            elif kind is h11.ConnectionClosed:
                self._phase = CLOSING
            else:  # NEED_DATA, or PAUSED (see below)
                if self._phase is IDLE and conn.their_state is h11.IDLE:
                    self._phase = HEAD  # part of a new head is here
                    self._head_since = self._clock()
                # PAUSED: h11 holds a pipelined request while our side still
                # sends a streamed body (SEND_BODY, theirs DONE). It is parsed
                # once the stream ends and start_next_cycle has run.
                return

    def _head_limit(self, buffered: bytes) -> int:
        """The largest head allowed for the request at the start of
        ``buffered``: a client's, or more for a target the server widened
        the limits for (``Limits.wider``)."""
        wider = self._limits.wider
        if wider is not None and buffered.find(b" " + wider.prefix, 0, 24) != -1:
            return self._limits.max_header_size + wider.head
        return self._limits.max_header_size

    def _body_limit(self, target: bytes) -> int:
        """The largest body for a request to ``target`` (``Limits.wider``)."""
        wider = self._limits.wider
        if wider is not None and target.startswith(wider.prefix):
            return self._limits.max_body + wider.body
        return self._limits.max_body

    def _reading_phase(self) -> Phase:
        """The phase to return to once the outbound buffer has drained."""
        if self._h11.their_state is h11.SEND_BODY:
            return BODY
        return IDLE if self._head_since is None else HEAD

    def _on_request_head(self, head: h11.Request) -> None:
        self._phase = BODY
        self._head_since = None
        self._cycle = RequestCycle(self, head.method, head.target, head.headers)
        if head.http_version not in (b"1.0", b"1.1"):
            self._reject(505, b"only HTTP/1.0 and HTTP/1.1 are served\n")
            return
        declared, problem = framing.body_length(head)
        if problem:
            self._reject(400, problem)
            return
        max_body = self._body_limit(head.target)
        if declared is not None and declared > max_body:
            self._reject(413, framing.too_large(max_body))
            return
        if self._h11.they_are_waiting_for_100_continue:
            # The client holds the body back until we say we want it, so
            # this is written now, not at the end of the round.
            self._send(framing.CONTINUE)
            self._flush()

    def _on_body_data(self, data: bytes) -> None:
        cycle = self._cycle
        assert cycle is not None
        cycle.body_size += len(data)
        max_body = self._body_limit(cycle.target)
        if cycle.body_size > max_body:  # a chunked body grew too large
            self._reject(413, framing.too_large(max_body))
            return
        cycle.body.append(data)

    def _dispatch(self, body: bytes) -> None:
        """The request is complete: give it to the executor with its cycle."""
        cycle = self._cycle
        assert cycle is not None
        self.reactor.stats.requests += 1
        self._phase = EXECUTING
        request = Request(cycle.method, cycle.target, body, cycle.headers)
        self._executor.execute(request, cycle)
        # From here a PayloadThread may own the connection: look at nothing
        # but ``owner``, which only this thread sets back.
        if self.owner is SELECTOR and self._phase is EXECUTING:
            self._phase = AWAITING  # the answer comes later, from elsewhere
            cycle.started = self._clock()

    def _reject(self, status: int, message: bytes) -> None:
        """Answer a client's mistake with ``status`` and close."""
        if self._plain:  # nothing of its response is written before the answer
            unanswered = self._phase is AWAITING or self._phase is EXECUTING
        else:
            unanswered = self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE)
        if unanswered:
            self._respond(Response(status, message, ((b"connection", b"close"),)))
        self._phase = CLOSING

    # ------------------------------------------------------------------
    # Answers: from the cycle, on whichever thread gives them
    # ------------------------------------------------------------------

    def deliver(self, cycle: RequestCycle, response: Response) -> None:
        """``cycle.respond`` won its token: write ``response``. On a
        PayloadThread that owns the connection: here, then hand back. On the
        SelectorThread: here. Anywhere else: posted to the SelectorThread."""
        if self.owner is PAYLOAD:
            self._then_hand_back(self._respond, response)
        elif _get_ident() != self.reactor.thread_id:
            self.reactor.call_soon(lambda: self._deliver_later(cycle, response))
        elif self._phase is EXECUTING and cycle is self._cycle:
            self._respond(response)  # inline, inside execute (sync mode): _process goes on
        else:
            self._deliver_later(cycle, response)  # a later answer, given on this thread

    def lend(self) -> None:
        """On the SelectorThread, from ``RequestCycle.hand_off``: a
        PayloadThread owns the connection until it hands it back."""
        self.owner = PAYLOAD

    def continue_stream(self) -> None:
        """On the owner: the next slice of the streamed response."""
        if self.owner is PAYLOAD:
            self._then_hand_back(self._produce_slice)
        else:
            self._produce_slice()

    def _then_hand_back(self, work: Callable[..., None], *args: object) -> None:
        """On the PayloadThread that owns the connection: ``work``, then give
        the connection back to its SelectorThread, the last touch
        (docs/architecture.md, "The ownership rule")."""
        try:
            work(*args)
        except Exception:  # a bug: lose this connection, not the PayloadThread
            log.exception("responding on %r failed", self)
            self._transport.broken = True
        self.reactor.call_soon(self._on_handed_back)

    def _deliver_later(self, cycle: RequestCycle, response: Response) -> None:
        """On the SelectorThread, an answer that came later: write it, then
        go on with the connection (nothing else will)."""
        if cycle is not self._cycle or self._phase is not AWAITING:
            return  # the connection closed meanwhile
        self._respond(response)
        self._process()
        self._advance()

    def _on_handed_back(self) -> None:
        self.owner = SELECTOR
        if not self._transport.registration.active:
            self.close()  # aborted while in flight (after a bug here): close it now
            return
        if self.reactor.draining:
            self.drain()
        self._process()  # pipelined requests already buffered by h11
        self._advance()

    # ------------------------------------------------------------------
    # Writing: called by the current owner (SelectorThread or PayloadThread)
    # ------------------------------------------------------------------

    def _respond(self, response: Response) -> None:
        """Produce a response: a whole one, which ends the request cycle, or
        the head and first slice of a streamed one (see ``_produce_slice``)."""
        cycle = self._cycle
        method = cycle.method if cycle is not None else b"-"
        self._stats().responses[(method, response.status)] += 1
        if response.stream is None:
            self._send_head(response.status, response.headers, len(response.body))
            if response.body:
                self._send_data(response.body)
            self._end_response()
            return
        self._send_head(response.status, response.headers, None)  # chunked
        self._stream = response.stream
        self._stream_paused = False
        self._phase = STREAMING
        self._produce_slice()

    def _produce_slice(self) -> None:
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
        transport = self._transport
        budget = transport.out.size + SLICE_BYTES
        try:
            while transport.out.size < budget and not transport.broken:
                piece = next(stream, None)
                if piece is None:
                    self._stream = None
                    self._end_response()  # the terminating zero-length chunk
                    return
                if type(piece) is Pause:
                    self._pause_stream(stream, piece)
                    break
                if piece:
                    self._send_data(piece)  # type: ignore[arg-type]
        except Exception:
            # The storage failed mid-body. The status line has gone, so the
            # only honest answer left is a cut connection: the client sees
            # a chunked body without its last chunk, never a short success.
            log.exception("%r: streamed response failed; cutting the connection", self)
            transport.broken = True
        if transport.broken:
            stream.close()
            self._stream = None
            return
        self._flush()  # as soon as produced: the socket's readiness paces the stream

    def _pause_stream(self, stream: Stream, pause: Pause) -> None:
        """On the owner: the stream has nothing yet. It is not asked again
        until its producer calls back; the call back is posted to the
        SelectorThread, which watches the socket for writing again."""
        self._stream_paused = True

        def ready() -> None:  # any thread
            self.reactor.call_soon(lambda: self._on_stream_ready(stream))

        pause.notify(ready)

    def _on_stream_ready(self, stream: Stream) -> None:
        """On the SelectorThread: a paused stream has more. The next
        EVENT_WRITE asks for its slice (``on_events``); if a PayloadThread
        still owns the connection, its hand-back sets the interest."""
        if self._stream is not stream or self._phase is not STREAMING:
            return  # it ended, or the connection closed, meanwhile
        self._stream_paused = False
        if self.owner is SELECTOR:
            self._advance()

    def _send_head(
        self,
        status: int,
        headers: tuple[tuple[bytes, bytes], ...],
        content_length: int | None,
    ) -> None:
        """Start a response. With ``content_length`` None, h11 frames the body
        as chunked (HTTP/1.1) or by closing (HTTP/1.0): a streamed response.
        A plain cycle's head is the same bytes, framed here."""
        close = self.reactor.draining
        if not self._plain:
            self._send(framing.response_head(status, headers, content_length, close))
            return
        # A broken socket's buffer is never flushed (the reactor closes it):
        # a plain cycle, with no h11 state to keep, writes on regardless.
        self._chunked = content_length is None
        self._transport.out.append(
            framing.plain_response_head(status, headers, content_length, close)
        )

    def _send_data(self, data: bytes) -> None:
        """Add a piece of the body: as it is, or as one chunk of a stream."""
        if not self._plain:
            self._send(h11.Data(data=data))
            return
        out = self._transport.out
        if self._chunked:
            out.append(b"%x\r\n" % len(data))
            out.append(data)
            out.append(b"\r\n")
        else:
            out.append(data)

    def _end_response(self) -> None:
        """Finish the response and, if the connection goes on, the cycle."""
        if self._plain:
            self._plain = False
            if self._chunked:
                self._transport.out.append(framing.LAST_CHUNK)
            self._chunked = False
            keep_alive = not self.reactor.draining  # HTTP/1.1, no Connection header
        else:
            self._send(framing.END_OF_MESSAGE)
            conn = self._h11
            keep_alive = (
                conn.our_state is h11.DONE
                and conn.their_state is h11.DONE
                and not self.reactor.draining
            )
            if keep_alive:
                conn.start_next_cycle()  # the next request may be parsed
        if self.owner is SELECTOR:
            self._transport.write_at_round_end()  # reads first, writes last
        else:
            self._flush()  # a PayloadThread writes at once
        # CLOSING: HTTP/1.0, Connection: close, an early error, shutdown
        self._phase = IDLE if keep_alive else CLOSING
        self._cycle = None

    def _send(self, event: h11.Event) -> None:
        """Serialise ``event`` into the outbound buffer.

        h11 writes a head as many small pieces, joined here into one; body
        data comes back "passed through", the very object we gave it, so a
        large value is never copied on its way to the socket.
        """
        out = self._transport.out
        if self._transport.broken:
            return  # the peer is gone; the reactor will close
        pieces = self._h11.send_with_data_passthrough(event) or []
        if type(event) is h11.Data:
            for piece in pieces:
                out.append(piece)
        else:
            out.append(b"".join(pieces))

    def _stats(self) -> stats.ThreadStats:
        """The counters of the thread that owns the connection now."""
        return self.reactor.stats if self.owner is SELECTOR else stats.current()

    def _flush(self) -> None:
        self._transport.flush(self._stats())

    # ------------------------------------------------------------------
    # Interest and timer from the phase (SelectorThread)
    # ------------------------------------------------------------------

    def _advance(self) -> None:
        """After any event: close, linger, or set the selector interest and
        the timer from the phase (the table on ``Phase``)."""
        transport = self._transport
        if (
            self.owner is not SELECTOR
            or self._phase is CLOSED
            or transport.registration.round_write
        ):
            return  # not ours now, or the end of the round will come back here
        phase = self._phase
        pending = transport.out.size
        closing = phase is CLOSING or phase is LINGERING
        if transport.broken or (closing and not pending and transport.peer_eof):
            self.close()
            return
        now = self._clock()
        limits = self._limits
        if phase is CLOSING and not pending:
            if not transport.start_lingering(now + LINGER_SECONDS):
                self.close()  # our side could not be shut down
                return
            phase = self._phase = LINGERING
        if phase is LINGERING:
            events = EVENT_READ
            deadline = transport.lingering_until or now
        elif phase is AWAITING:
            # Left as it is: most answers come within the round (group
            # commit) and a readable socket is parked when it says so.
            events = transport.registration.interest
            assert self._cycle is not None
            deadline = self._cycle.started + limits.request_timeout
        elif phase is IDLE or phase is HEAD or phase is BODY:
            events = EVENT_READ | EVENT_WRITE if pending else EVENT_READ
            if pending or phase is IDLE:
                deadline = now + limits.keepalive_timeout  # idle, or a stalled reader
            elif phase is BODY:
                deadline = now + limits.header_timeout  # a stalled body
            else:
                deadline = (self._head_since or now) + limits.header_timeout
        else:  # BACKPRESSURED, STREAMING, CLOSING with bytes pending
            # A paused stream with nothing left to send waits for its
            # producer, not for the socket.
            paused = phase is STREAMING and self._stream_paused and not pending
            events = 0 if paused else EVENT_WRITE
            deadline = now + limits.keepalive_timeout  # a stalled reader, or producer
        if events != transport.registration.interest:
            transport.watch(events)
        self.reactor.schedule(self._timer, deadline)

    def _on_timeout(self) -> None:
        """The connection's timer expired: what that means depends on the phase."""
        if self.owner is not SELECTOR or self._transport.registration.round_write:
            # A request in flight is not idle, and a response produced in this
            # round (after a long storage call in sync mode) is about to be
            # written: the hand-back or the end of the round re-arms the timer.
            return
        phase = self._phase
        if phase is AWAITING:
            assert self._cycle is not None
            if self._cycle.expire():
                log.warning("%r: no answer within %ss", self, self._limits.request_timeout)
                self._reject(504, b"no answer within the request timeout\n")
                self._advance()
            return  # else the answer is on its way through the wakeup channel
        if self._transport.out.size or not (phase is IDLE or phase is HEAD or phase is BODY):
            self.close()  # lingering, or a client that does not read
        elif phase is IDLE:
            log.debug("%r idle for %ss, closing", self, self._limits.keepalive_timeout)
            self.close()
        else:
            self._reject(408, b"request timed out\n")
            self._advance()
