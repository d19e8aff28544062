"""The reactor's small parts without a network: the outbound buffer against
a socket stand-in that takes what the test allows, and the wakeup channel
(its own socketpair, the self-pipe) driven from other threads."""

from __future__ import annotations

import threading

from selectorkv.reactor.outbound import JOIN_BELOW, MAX_PIECES, OutboundBuffer
from selectorkv.reactor.wakeup import Wakeup


class Taker:
    """Takes at most ``room`` bytes per call; records each call."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.calls: list[tuple[str, int]] = []
        self.data = bytearray()

    def send(self, data: bytes | memoryview) -> int:
        return self._take("send", [data])

    def sendmsg(self, pieces: list[bytes | memoryview]) -> int:
        assert len(pieces) <= MAX_PIECES
        return self._take("sendmsg", pieces)

    def _take(self, call: str, pieces: list[bytes | memoryview]) -> int:
        joined = b"".join(pieces)
        taken = min(self.room, len(joined))
        if taken == 0:
            raise BlockingIOError
        self.calls.append((call, len(pieces)))
        self.data += joined[:taken]
        return taken


def test_a_small_response_leaves_in_one_send() -> None:
    buffer = OutboundBuffer()
    buffer.append(b"HTTP/1.1 200 OK\r\n\r\n")
    buffer.append(b"value")
    buffer.append(b"")  # nothing: not a piece
    taker = Taker(room=1 << 20)
    assert buffer.send_to(taker) == 24  # type: ignore[arg-type]
    assert taker.calls == [("send", 1)] and buffer.size == 0


def test_what_the_socket_does_not_take_stays_in_order() -> None:
    buffer = OutboundBuffer()
    buffer.append(b"a" * 10)
    buffer.append(b"b" * 10)
    taker = Taker(room=15)
    assert buffer.send_to(taker) == 15  # type: ignore[arg-type]
    assert buffer.size == 5
    taker.room = 100
    assert buffer.send_to(taker) == 5  # type: ignore[arg-type]
    assert bytes(taker.data) == b"a" * 10 + b"b" * 10


def test_large_pieces_go_out_in_gather_writes_until_the_socket_is_full() -> None:
    buffer = OutboundBuffer()
    pieces = [bytes([65 + i % 26]) * 1000 for i in range(MAX_PIECES + 10)]
    for piece in pieces:
        buffer.append(piece)
    assert buffer.size > JOIN_BELOW
    taker = Taker(room=1 << 30)
    assert buffer.send_to(taker) == sum(map(len, pieces))  # type: ignore[arg-type]
    assert taker.calls == [("sendmsg", MAX_PIECES), ("sendmsg", 10)]
    assert bytes(taker.data) == b"".join(pieces)

    buffer.append(b"x" * JOIN_BELOW)
    buffer.append(b"y" * JOIN_BELOW)
    full = Taker(room=JOIN_BELOW + 100)
    assert buffer.send_to(full) == JOIN_BELOW + 100  # type: ignore[arg-type]
    assert buffer.size == JOIN_BELOW - 100  # the rest waits for EVENT_WRITE


def test_a_burst_of_calls_from_other_threads_costs_one_wakeup_byte() -> None:
    wakeup = Wakeup()
    ran: list[int] = []
    try:
        threads = [
            threading.Thread(target=lambda n=n: wakeup.call_soon(lambda: ran.append(n)))
            for n in range(100)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert wakeup.reader.recv(4096, 0x40) == b"\0"  # MSG_DONTWAIT: one byte, not 100
        wakeup.run_calls()
        assert sorted(ran) == list(range(100))
        wakeup.call_soon(lambda: ran.append(100))  # after a run: a new byte
        assert wakeup.reader.recv(4096, 0x40) == b"\0"
        wakeup.run_calls()
        assert ran[-1] == 100
    finally:
        wakeup.close()


def test_a_failing_call_does_not_lose_the_others() -> None:
    wakeup = Wakeup()
    ran: list[str] = []
    try:
        wakeup.call_soon(lambda: ran.append("first"))
        wakeup.call_soon(lambda: 1 / 0)  # type: ignore[func-returns-value]
        wakeup.call_soon(lambda: ran.append("last"))
        wakeup.run_calls()
        assert ran == ["first", "last"]
    finally:
        wakeup.close()
    wakeup.call_soon(lambda: ran.append("after close"))  # ignored, no error
    assert ran == ["first", "last"]
