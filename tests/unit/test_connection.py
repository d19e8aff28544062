"""The connection's phase table (selectorkv/http/connection.py, ``Phase``)
driven without sockets, as uvicorn's tests drive its protocol: a transport
and a clock handed in, a reactor that runs rounds and timers when the test
says so. Keep-alive, 408, 504, lingering close, the high-water stop and
pipelining, each at the exact moment the table names."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from selectors import EVENT_READ, EVENT_WRITE

import h11
import pytest

from selectorkv.http.connection import Connection, Limits
from selectorkv.http.exchange import Pause, Request, Responder, Response, Stream, Task
from selectorkv.reactor.outbound import OutboundBuffer
from selectorkv.reactor.selector_thread import Handler, Timer
from selectorkv.reactor.stats import ThreadStats
from selectorkv.reactor.transport import HIGH_WATER, LINGER_SECONDS

LIMITS = Limits(
    max_body=1 << 20,
    max_header_size=8192,
    header_timeout=5.0,
    keepalive_timeout=30.0,
    request_timeout=10.0,
)


class Clock:
    """Time that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeRegistration:
    def __init__(self) -> None:
        self.interest = 0
        self.round_write = False
        self.active = True


class FakeTransport:
    """A transport without a socket: the test puts the client's bytes in
    ``inbox`` (b"" is the client's EOF) and finds what the server sent in
    ``sent``; ``window`` is how much more the client would take (None: all)."""

    def __init__(
        self,
        sock: object,
        reactor: FakeReactor,
        handler: Handler,
        on_close: Callable[[], None] | None,
    ) -> None:
        self.reactor = reactor
        self.handler = handler
        self.registration = FakeRegistration()
        self.out = OutboundBuffer()
        self.peer_eof = False
        self.broken = False
        self.lingering_until: float | None = None
        self.inbox: deque[bytes] = deque()
        self.sent = bytearray()
        self.window: int | None = None
        self.closed = False
        self._on_close = on_close
        reactor.transport = self

    # What OutboundBuffer.send_to needs of a socket
    def send(self, data: bytes | memoryview) -> int:
        taken = len(data) if self.window is None else min(self.window, len(data))
        if taken == 0:
            raise BlockingIOError
        self.sent += data[:taken]
        if self.window is not None:
            self.window -= taken
        return taken

    def sendmsg(self, pieces: list[bytes | memoryview]) -> int:
        return self.send(b"".join(pieces))

    # The transport's interface, as the connection uses it
    def read(self) -> bytes | None:
        if not self.inbox:
            return None
        data = self.inbox.popleft()
        if not data:
            self.peer_eof = True
        return data

    def flush(self, stats: ThreadStats) -> None:
        if self.out.size and not self.broken:
            try:
                stats.bytes_out += self.out.send_to(self)  # type: ignore[arg-type]
            except BlockingIOError:
                pass

    def watch(self, events: int) -> None:
        self.registration.interest = events

    def write_at_round_end(self) -> None:
        self.registration.round_write = True

    def start_lingering(self, until: float) -> bool:
        self.lingering_until = until
        return True

    def close(self) -> None:
        self.registration.active = False
        self.closed = True
        if self._on_close is not None:
            self._on_close()

    def cut(self) -> None:
        self.close()


class FakeReactor:
    """The SelectorThread's part: rounds, timers, calls from other threads,
    all run on the test's thread when it asks."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.stats = ThreadStats()
        self.draining = False
        self.thread_id = threading.get_ident()
        self.timers: list[Timer] = []
        self.calls: list[Callable[[], None]] = []
        self.transport: FakeTransport | None = None

    def timer(self, callback: Callable[[], None], handler: Handler | None = None) -> Timer:
        timer = Timer(callback, handler)
        self.timers.append(timer)
        return timer

    def schedule(self, timer: Timer, when: float) -> None:
        timer.when = when

    def call_soon(self, call: Callable[[], None]) -> None:
        self.calls.append(call)

    def end_round(self) -> None:
        """What the reactor does after a round's reads: the queued calls,
        then the round-end writes."""
        while self.calls:
            self.calls.pop(0)()
        transport = self.transport
        assert transport is not None
        if transport.registration.round_write:
            transport.registration.round_write = False
            transport.handler.on_round_end()

    def run_due_timers(self) -> None:
        for timer in self.timers:
            if timer.when is not None and timer.when <= self.clock.now:
                timer.when = None
                timer.callback()
        self.end_round()


class Echo:
    """Answers at once: 200 with the request's body, or its target."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.full = False

    def execute(self, request: Request, cycle: Responder) -> None:
        self.requests.append(request)
        cycle.respond(Response(200, request.body or request.target))

    def resume(self, cycle: Responder) -> None:
        cycle.continue_stream()

    def run(self, task: Task) -> None:
        task()

    def is_full(self) -> bool:
        return self.full


class Later(Echo):
    """Keeps each request's responder: the answer comes when the test gives it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Responder] = []

    def execute(self, request: Request, cycle: Responder) -> None:
        self.requests.append(request)
        self.waiting.append(cycle)


class Driven:
    """One connection, its fake transport and reactor, and a client's view."""

    def __init__(self, executor: Echo | None = None, limits: Limits = LIMITS) -> None:
        self.clock = Clock()
        self.reactor = FakeReactor(self.clock)
        self.executor = executor or Echo()
        self.released = 0
        self.conn = Connection(
            None,  # type: ignore[arg-type]  (the transport has no socket)
            self.reactor,  # type: ignore[arg-type]
            self._release,
            limits=limits,
            executor=self.executor,
            clock=self.clock,
            make_transport=FakeTransport,  # type: ignore[arg-type]
        )
        transport = self.reactor.transport
        assert transport is not None
        self.transport = transport
        self._client = h11.Connection(h11.CLIENT)
        self._read_upto = 0

    def _release(self) -> None:
        self.released += 1

    def send(self, data: bytes) -> None:
        """The client sends ``data``; the reactor reports the socket readable."""
        self.transport.inbox.append(data)
        self.events(EVENT_READ)

    def events(self, mask: int) -> None:
        if self.transport.registration.active:
            self.conn.on_events(mask)
        self.reactor.end_round()

    def wait(self, seconds: float) -> None:
        self.clock.now += seconds
        self.reactor.run_due_timers()

    @property
    def timer_due(self) -> float | None:
        return self.reactor.timers[0].when

    def responses(self) -> list[tuple[int, bytes]]:
        """The responses the server sent since the last call, parsed."""
        found: list[tuple[int, bytes]] = []
        data = bytes(self.transport.sent[self._read_upto :])
        self._read_upto = len(self.transport.sent)
        if data:  # (no bytes would tell h11 the server closed)
            self._client.receive_data(data)
        status, body = 0, b""
        while True:
            if self._client.our_state is h11.IDLE:
                self._client.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
                self._client.send(h11.EndOfMessage())
            event = self._client.next_event()
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return found
            if isinstance(event, h11.Response):
                status, body = event.status_code, b""
            elif isinstance(event, h11.Data):
                body += bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                found.append((status, body))
                if self._client.their_state is h11.DONE and self._client.our_state is h11.DONE:
                    self._client.start_next_cycle()

    @property
    def phase(self) -> str:
        return repr(self.conn).split()[-1].rstrip(">")


def request(target: str = "/x", body: bytes = b"", close: bool = False) -> bytes:
    method = "PUT" if body else "GET"
    head = f"{method} {target} HTTP/1.1\r\nHost: t\r\n"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    if close:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


def test_a_silent_new_connection_gets_the_header_timeout_then_a_408() -> None:
    driven = Driven()
    assert driven.phase == "head" and driven.timer_due == driven.clock.now + LIMITS.header_timeout
    driven.wait(LIMITS.header_timeout - 0.01)
    assert driven.responses() == [] and not driven.transport.closed
    driven.wait(0.01)
    assert driven.responses() == [(408, b"request timed out\n")]
    assert driven.phase == "lingering"  # the 408 said "close": our side shuts, reads on


def test_keep_alive_serves_request_after_request_then_closes_when_idle() -> None:
    driven = Driven()
    for n in range(3):
        driven.send(request(f"/{n}"))
        assert driven.responses() == [(200, f"/{n}".encode())]
        assert driven.phase == "idle"
        assert driven.timer_due == driven.clock.now + LIMITS.keepalive_timeout
        driven.wait(LIMITS.keepalive_timeout / 2)  # idle, but not for long enough
    assert not driven.transport.closed
    driven.wait(LIMITS.keepalive_timeout / 2)
    assert driven.transport.closed and driven.released == 1
    assert driven.responses() == []  # an idle close says nothing


def test_a_head_that_stalls_halfway_is_answered_408_from_when_it_began() -> None:
    driven = Driven()
    driven.send(request("/first"))
    driven.responses()
    driven.wait(1.0)
    driven.send(b"GET /second HTTP/1.1\r\nHo")
    began = driven.clock.now
    driven.wait(2.0)
    driven.send(b"st: t\r\n")  # more of the head, still not all of it: no new time
    assert driven.phase == "head" and driven.timer_due == began + LIMITS.header_timeout
    driven.wait(LIMITS.header_timeout - 2.0)
    assert driven.responses() == [(408, b"request timed out\n")]


def test_an_answer_that_never_comes_is_a_504_at_the_request_timeout() -> None:
    later = Later()
    driven = Driven(later)
    driven.send(request("/slow"))
    assert driven.phase == "awaiting"
    driven.wait(LIMITS.request_timeout - 0.01)
    assert driven.responses() == []
    driven.wait(0.01)
    assert driven.responses() == [(504, b"no answer within the request timeout\n")]
    assert later.waiting[0].respond(Response(200, b"too late")) is False  # dropped
    assert driven.responses() == []


def test_an_answer_given_later_is_written_and_the_connection_goes_on() -> None:
    later = Later()
    driven = Driven(later)
    driven.send(request("/a") + request("/b"))  # pipelined behind a late answer
    assert [r.target for r in later.requests] == [b"/a"]  # /b waits its turn
    assert later.waiting[0].respond(Response(201))
    driven.reactor.end_round()
    assert driven.responses() == [(201, b"")]
    assert [r.target for r in later.requests] == [b"/a", b"/b"]


def test_pipelined_requests_are_answered_in_order() -> None:
    driven = Driven()
    driven.send(request("/1") + request("/2", b"two") + request("/3"))
    assert driven.responses() == [(200, b"/1"), (200, b"two"), (200, b"/3")]


def test_the_headers_are_handed_up_with_the_request() -> None:
    driven = Driven()
    driven.send(b"GET /h HTTP/1.1\r\nHost: t\r\nX-Selectorkv-Token: secret\r\n\r\n")
    assert driven.executor.requests[0].header(b"x-selectorkv-token") == b"secret"


def test_a_client_that_does_not_read_stops_the_parsing_above_the_high_water() -> None:
    driven = Driven()
    driven.transport.window = 0  # the client reads nothing
    big = b"v" * (HIGH_WATER + 1)
    driven.send(request("/big", big) + request("/next"))
    assert [r.target for r in driven.executor.requests] == [b"/big"]
    assert driven.phase == "backpressured"
    assert driven.transport.registration.interest == EVENT_WRITE  # no more reading
    driven.transport.window = None  # the client reads again
    driven.events(EVENT_WRITE)
    assert [r.target for r in driven.executor.requests] == [b"/big", b"/next"]
    assert driven.responses() == [(200, big), (200, b"/next")]


def test_a_client_that_does_not_read_at_all_is_closed_at_the_keep_alive_timeout() -> None:
    driven = Driven()
    driven.transport.window = 0
    driven.send(request("/big", b"v" * (HIGH_WATER + 1)))
    driven.wait(LIMITS.keepalive_timeout)
    assert driven.transport.closed


def test_lingering_close_ends_at_the_clients_eof_or_after_the_linger() -> None:
    driven = Driven()
    driven.send(request("/bye", close=True))
    assert driven.responses() == [(200, b"/bye")]
    assert driven.phase == "lingering" and driven.transport.lingering_until is not None
    driven.send(b"ignored bytes")  # read and thrown away while lingering
    assert driven.executor.requests[-1].target == b"/bye" and not driven.transport.closed
    driven.send(b"")  # the client's EOF
    assert driven.transport.closed

    stubborn = Driven()
    stubborn.send(request("/bye", close=True))
    stubborn.wait(LINGER_SECONDS)
    assert stubborn.transport.closed


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", 505),
        (b"PUT /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n", 413),
        (b"\x16\x03\x01 not http\r\n\r\n", 400),
    ],
)
def test_a_bad_request_is_answered_and_the_connection_lingers(data: bytes, status: int) -> None:
    driven = Driven()
    driven.send(data)
    assert [found for found, _ in driven.responses()] == [status]
    assert driven.phase == "lingering" and driven.executor.requests == []


def test_a_full_executor_has_the_request_shed_with_a_503() -> None:
    driven = Driven()
    driven.executor.full = True
    driven.send(request("/shed"))
    assert [status for status, _ in driven.responses()] == [503]
    assert driven.executor.requests == []


class Pausing(Echo):
    """Answers with a stream that pauses (``Pause``) until the test gives it
    a piece, or its end, and calls the connection back."""

    def __init__(self) -> None:
        super().__init__()
        self.pieces: deque[bytes] = deque()
        self.ended = False
        self.asked = 0
        self.wake: Callable[[], None] | None = None

    def execute(self, request: Request, cycle: Responder) -> None:
        cycle.respond(Response(200, stream=self._stream()))

    def _stream(self) -> Stream:
        while True:
            self.asked += 1
            if self.pieces:
                yield self.pieces.popleft()
            elif self.ended:
                return
            else:
                yield Pause(self._notify)

    def _notify(self, wake: Callable[[], None]) -> None:
        self.wake = wake

    def give(self, piece: bytes | None) -> None:
        """A piece (None: the end), then the call back, from 'another thread'."""
        if piece is None:
            self.ended = True
        else:
            self.pieces.append(piece)
        wake, self.wake = self.wake, None
        assert wake is not None, "the connection was not waiting"
        wake()


def test_a_paused_stream_is_not_asked_again_until_it_calls_back() -> None:
    stream = Pausing()
    driven = Driven(stream)
    driven.send(request("/range"))
    assert driven.phase == "streaming"
    assert driven.transport.registration.interest == 0  # nothing to send, nothing to ask
    asked = stream.asked
    driven.events(EVENT_WRITE)  # a stray write event asks for nothing
    assert stream.asked == asked
    stream.give(b"one")
    assert driven.transport.registration.interest == 0  # the call back is on the reactor's queue
    driven.reactor.end_round()
    assert driven.transport.registration.interest == EVENT_WRITE
    driven.events(EVENT_WRITE)  # the socket is writable: the next slice
    assert stream.asked > asked and stream.wake is not None  # "one", then paused again
    stream.give(b"two")
    driven.reactor.end_round()
    driven.events(EVENT_WRITE)
    stream.give(None)
    driven.reactor.end_round()
    driven.events(EVENT_WRITE)
    assert driven.responses() == [(200, b"onetwo")]
    assert driven.phase == "idle"


def test_a_call_back_after_the_connection_closed_does_nothing() -> None:
    stream = Pausing()
    driven = Driven(stream)
    driven.send(request("/range"))
    driven.conn.close()
    stream.give(b"late")  # the stream was closed; its call back finds nobody
    driven.reactor.end_round()
    assert driven.phase == "closed"
