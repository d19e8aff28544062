"""The client side of HTTP/1.1 between nodes (http/client_wire.py), on bytes:
what it sends, what answers it reads, and what it refuses."""

from __future__ import annotations

import h11
import pytest

from selectorkv.http.client_wire import BadReply, ReplyReader, header_lines, request_bytes

HEADERS = header_lines(((b"x-selectorkv-token", b"secret"), (b"x-selectorkv-cluster", b"ab")))


def reader() -> ReplyReader:
    return ReplyReader(max_head=1024, max_body=100)


def test_a_request_is_what_an_http_server_reads() -> None:
    data = request_bytes(b"PUT", b"/v0/internal/entity?id=k", b"127.0.0.1:80", HEADERS, b"rec")
    server = h11.Connection(h11.SERVER)
    server.receive_data(data)
    head = server.next_event()
    assert isinstance(head, h11.Request)
    assert head.method == b"PUT" and head.target == b"/v0/internal/entity?id=k"
    headers = dict(head.headers)
    assert headers[b"host"] == b"127.0.0.1:80"
    assert headers[b"x-selectorkv-token"] == b"secret"
    assert headers[b"content-length"] == b"3"
    body = server.next_event()
    assert isinstance(body, h11.Data) and body.data == b"rec"
    assert isinstance(server.next_event(), h11.EndOfMessage)


def test_an_empty_body_is_framed_too() -> None:
    data = request_bytes(b"GET", b"/v0/status", b"h:1", b"", b"")
    assert data.endswith(b"content-length: 0\r\n\r\n")


@pytest.mark.parametrize("target", [b"/a b", b"/a\r\nx: y", b"/a\n"])
def test_a_target_that_would_break_the_head_is_refused(target: bytes) -> None:
    with pytest.raises(ValueError):
        request_bytes(b"GET", target, b"h:1", b"", b"")


@pytest.mark.parametrize("pair", [(b"a b", b"v"), (b"a", b"v\r\nx: y"), (b"", b"v"), (b"a:", b"v")])
def test_a_header_that_would_break_the_head_is_refused(pair: tuple[bytes, bytes]) -> None:
    with pytest.raises(ValueError):
        header_lines((pair,))


def test_answers_are_read_whole_and_in_order_however_the_bytes_arrive() -> None:
    wire = (
        b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: x\r\n\r\nhello"
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    whole = reader()
    whole.feed(wire)
    by_byte = reader()
    got = []
    for byte in wire:  # one byte at a time: the same answers
        by_byte.feed(bytes([byte]))
        while (reply := by_byte.next()) is not None:
            got.append(reply)
    expected = [whole.next(), whole.next(), whole.next()]
    assert whole.next() is None and not whole.started
    assert got == expected
    assert [(r.status, r.body, r.keep_alive) for r in got] == [  # type: ignore[union-attr]
        (201, b"", True),
        (200, b"hello", True),
        (404, b"", False),
    ]
    assert got[1].headers[b"content-type"] == b"x"


def test_an_informational_answer_is_skipped() -> None:
    r = reader()
    r.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")
    reply = r.next()
    assert reply is not None and reply.status == 201


def test_a_partial_answer_is_started_and_not_returned() -> None:
    r = reader()
    assert not r.started
    r.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel")
    assert r.next() is None and r.started
    r.feed(b"lo")
    reply = r.next()
    assert reply is not None and reply.body == b"hello" and not r.started


def test_http_1_0_answers_close_the_connection() -> None:
    r = reader()
    r.feed(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n")
    reply = r.next()
    assert reply is not None and not reply.keep_alive


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (b"HTTP/2 200 OK\r\ncontent-length: 0\r\n\r\n", "status line"),
        (b"HTTP/1.1 2x0 OK\r\ncontent-length: 0\r\n\r\n", "status line"),
        (b"HTTP/1.1 2000 OK\r\ncontent-length: 0\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", "chunked"),
        (b"HTTP/1.1 200 OK\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", "twice"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\ncontent-length: 0\r\n\r\n", "header line"),
        (b"HTTP/1.1 200 OK\r\n folded: x\r\ncontent-length: 0\r\n\r\n", "header line"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 101\r\n\r\n", "over 100 bytes"),
        (b"HTTP/1.1 200 OK\r\nx: " + b"a" * 1100 + b"\r\n\r\n", "over 1024 bytes"),
        (b"HTTP/1.1 200 OK\r\nx: " + b"a" * 1100, "over 1024 bytes"),
    ],
)
def test_what_falls_outside_the_subset_is_refused_not_guessed(wire: bytes, why: str) -> None:
    r = reader()
    r.feed(wire)
    with pytest.raises(BadReply, match=why):
        r.next()
