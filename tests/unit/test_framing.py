"""framing.py without sockets: the head scanner of the raw-head checks, the
plain-request parser that the fast path and the shed path use, and its
agreement with h11, side by side: on what a plain request says and where it
ends, and on the bytes of a response head."""

from __future__ import annotations

import pytest

from selectorkv.http import framing
from selectorkv.http.parser import h11

MAX_HEAD = 1024

GET = b"GET /v0/entity?id=k HTTP/1.1\r\nHost: x\r\n\r\n"
PUT = b"PUT /v0/entity?id=k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"


def test_scan_finds_the_end_of_a_complete_head() -> None:
    assert framing.scan_head(GET + b"rest", MAX_HEAD) == (len(GET), 0, b"", None)


def test_scan_accepts_a_bare_lf_head_end_as_h11_does() -> None:
    head = b"GET / HTTP/1.1\nHost: x\n\n"
    assert framing.scan_head(head, MAX_HEAD)[0] == len(head)


def test_scan_of_an_incomplete_head_has_no_end_and_no_problem() -> None:
    assert framing.scan_head(GET[:-2], MAX_HEAD) == (-1, 0, b"", None)


def test_scan_returns_the_raw_content_length() -> None:
    assert framing.scan_head(PUT, MAX_HEAD)[3] == b" 5"


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\x7fb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\x00",  # refused before the head is complete
    ],
)
def test_control_bytes_in_a_head_are_refused(head: bytes) -> None:
    assert framing.scan_head(head, MAX_HEAD)[1:3] == (400, framing.CONTROL_BYTES)


def test_control_bytes_in_the_body_are_not_the_heads_business() -> None:
    request = b"PUT / HTTP/1.1\r\nContent-Length: 1\r\n\r\n\x01"
    assert framing.scan_head(request, MAX_HEAD)[1] == 0


@pytest.mark.parametrize(
    "lengths",
    [
        b"Content-Length: 3\r\nContent-Length: 3\r\n",
        b"Content-Length: 3, 3\r\n",
        b"content-length: 3\r\nCONTENT-LENGTH : 3\r\n",
    ],
)
def test_a_repeated_content_length_is_refused(lengths: bytes) -> None:
    scan = framing.scan_head(b"PUT / HTTP/1.1\r\n" + lengths + b"\r\nabc", MAX_HEAD)
    assert scan[1:3] == (400, framing.REPEATED_LENGTH)


def test_a_head_that_does_not_end_within_the_limit_is_431() -> None:
    head = b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n"
    assert framing.scan_head(head, MAX_HEAD)[1:3] == (431, framing.TOO_LARGE_HEAD)


def test_a_short_incomplete_head_is_not_too_large_yet() -> None:
    assert framing.scan_head(b"GET / HTTP/1.1\r\nX: aaa", MAX_HEAD)[1] == 0


def test_plain_requests_are_measured_with_their_bodies() -> None:
    assert framing.plain_request(GET, MAX_HEAD) == (len(GET), b"GET", b"/v0/entity?id=k",
                                                     [(b"host", b"x")], 0)  # fmt: skip
    size, method, _, headers, length = framing.plain_request(PUT + GET, MAX_HEAD) or (0,) * 5
    assert (size, method, length) == (len(PUT), b"PUT", 5)
    assert headers == [(b"host", b"x"), (b"content-length", b"5")]


@pytest.mark.parametrize(
    "request_bytes",
    [
        PUT[:-1],  # the body is not all here
        GET[:-1],  # nor the head
        GET.replace(b"HTTP/1.1", b"HTTP/1.0"),
        GET.replace(b"GET", b"HEAD"),  # h11 frames its response without a body
        GET.replace(b"Host: x\r\n", b"Host: x\r\nTransfer-Encoding: chunked\r\n"),
        GET.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n"),
        GET.replace(b"Host: x\r\n", b"Host: x\r\nExpect: 100-continue\r\n"),
        GET.replace(b"Host: x\r\n", b"Host: x\r\nUpgrade: h2c\r\n"),
        GET.replace(b"Host: x\r\n", b"Host: x\r\nHOST: y\r\n"),  # two Hosts: h11 answers 400
        GET.replace(b"Host: x\r\n", b"Host: x\r\n folded\r\n"),  # obs-fold: 400
        GET.replace(b"Host: x\r\n", b"Host: x\r\nBad Name: 1\r\n"),  # not a token: 400
        PUT.replace(b"Content-Length:", b"Content-Length :"),
        PUT.replace(b"Content-Length: 5", b"Content-Length: +5"),
        PUT.replace(b"Content-Length: 5", b"Content-Length: 5, 5"),
        PUT.replace(b"Content-Length: 5\r\n", b"Content-Length: 5\r\nContent-Length: 5\r\n"),
        GET.replace(b"Host: x\r\n", b"Host: x\n"),  # a bare LF inside: h11's to judge
        GET.replace(b"Host: x", b"Host: \x01"),
        GET.replace(b"id=k", "id=é".encode()),  # not ASCII in the target: 400
        b"\r\n" + GET,  # an empty line first
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",  # no Host: h11 answers 400
    ],
)
def test_anything_less_than_plain_is_left_to_h11(request_bytes: bytes) -> None:
    assert framing.plain_request(request_bytes, MAX_HEAD) is None


def test_a_head_longer_than_the_limit_is_left_to_h11() -> None:
    assert framing.plain_request(GET, len(GET) - 1) is None
    assert framing.plain_request(GET, len(GET)) is not None


DELETE = b"DELETE /v0/entity?id=%41 HTTP/1.1\r\nhost: x\r\n\r\n"
ODD = (
    b"POST http://x/v0/entity?id=a&ack=1 HTTP/1.1\r\nX-Empty:\r\nhOsT:\t x:80 \t\r\n"
    b"X-Inner:  a  b\t\r\nX-High: \xe9t\xe9\r\ncontent-length: 0003\r\n\r\nabc"
)  # fmt: skip


@pytest.mark.parametrize("first", [GET, PUT, DELETE, ODD])
def test_h11_reads_a_plain_request_as_plain_request_does(first: bytes) -> None:
    """Side by side: the same method, target, headers and body, and h11
    consumes exactly the bytes plain_request says the request has."""
    plain = framing.plain_request(first + GET, MAX_HEAD)
    assert plain is not None
    size, method, target, headers, length = plain
    assert size == len(first)
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(first + GET)
    head = conn.next_event()
    assert isinstance(head, h11.Request)
    assert (head.method, head.target, list(head.headers)) == (method, target, headers)
    body = b""
    while type(event := conn.next_event()) is h11.Data:
        body += event.data  # type: ignore[union-attr]
    assert type(event) is h11.EndOfMessage
    assert body == first[size - length : size]
    assert conn.trailing_data[0] == GET  # h11 consumed exactly ``size`` bytes


@pytest.mark.parametrize(
    ("status", "headers", "content_length", "close"),
    [(201, (), 0, False), (200, ((b"x-a", b"1"),), 3, True), (200, (), None, False),
     (200, ((b"x-a", b"1"),), None, True), (504, (), 20, False)],
)  # fmt: skip
def test_a_plain_response_head_is_what_h11_writes(
    status: int, headers: tuple[tuple[bytes, bytes], ...], content_length: int | None,
    close: bool,
) -> None:  # fmt: skip
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(GET)
    conn.next_event(), conn.next_event()
    written = conn.send(framing.response_head(status, headers, content_length, close))
    assert framing.plain_response_head(status, headers, content_length, close) == written
    if content_length is None:
        assert conn.send(h11.Data(data=b"abc")) == b"3\r\nabc\r\n"  # as _send_data frames it
        assert conn.send(h11.EndOfMessage()) == framing.LAST_CHUNK


def test_body_length_refuses_both_framings() -> None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(
        b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    head = conn.next_event()
    assert isinstance(head, h11.Request)
    assert framing.body_length(head) == (None, framing.BOTH_FRAMINGS)


def test_response_heads_are_built_once_per_kind() -> None:
    first = framing.response_head(200, (), 5, False)
    assert framing.response_head(200, (), 5, False) is first
    closing = framing.response_head(200, (), 5, True)
    assert (b"connection", b"close") in closing.headers.raw_items()
    chunked = framing.response_head(200, (), None, False)
    assert all(name.lower() != b"content-length" for name, _ in chunked.headers.raw_items())
