"""The smallest HTTP/1.1 the first steps need, parsed by hand.

Steps 1-3 parse requests themselves so that nothing is hidden; step 4 puts
h11 behind the same four calls and shows what it refuses that this accepts.
Only what the /v0/entity API uses: a request line, headers, a body of
Content-Length bytes, one request after another on a kept-alive connection.

The parser does no I/O ("sans-I/O", as h11 calls it): the server feeds it
the bytes it read, asks it for complete requests, and asks it for the bytes
of each answer. So the same parser serves a blocking loop (steps 1-2) and a
reactor that must never wait (step 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

# Limits on what a client controls: without them one client could make the
# server buffer without end.
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024

REASONS = {
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Content Too Large",
}


@dataclass
class Request:
    method: bytes
    path: bytes
    query: dict[bytes, bytes]
    body: bytes


class BadRequest(Exception):
    """The client sent what the parser will not read; answer ``status`` and close."""

    def __init__(self, status: int = 400) -> None:
        super().__init__(status)
        self.status = status


class Parser(Protocol):
    """What a server needs of a parser; HandParser and step 4's H11Parser are both one."""

    def feed(self, data: bytes) -> None: ...

    def next_request(self) -> Request | None: ...

    def respond(self, status: int, body: bytes) -> bytes: ...

    def refuse(self, status: int) -> bytes: ...

    @property
    def must_close(self) -> bool: ...


class HandParser:
    def __init__(self) -> None:
        self.inbox = bytearray()  # bytes read and not yet parsed

    def feed(self, data: bytes) -> None:
        self.inbox += data

    def next_request(self) -> Request | None:
        """The next complete request, taken off the inbox; None while some of it
        has not arrived (a reactor must not wait for the rest: it keeps what
        came and asks again when more does)."""
        end = self.inbox.find(b"\r\n\r\n")
        if end < 0:
            if len(self.inbox) > MAX_HEAD:
                raise BadRequest()
            return None
        try:
            method, path, query, length = parse_head(bytes(self.inbox[:end]))
        except ValueError:  # a malformed request line or Content-Length
            raise BadRequest() from None
        if length > MAX_BODY:
            raise BadRequest(413)
        if len(self.inbox) < end + 4 + length:
            return None
        body = bytes(self.inbox[end + 4 : end + 4 + length])
        del self.inbox[: end + 4 + length]
        return Request(method, path, query, body)

    def respond(self, status: int, body: bytes) -> bytes:
        return b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n\r\n%s" % (
            status,
            REASONS[status],
            len(body),
            body,
        )

    def refuse(self, status: int) -> bytes:
        return b"HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % (
            status,
            REASONS[status],
        )

    @property
    def must_close(self) -> bool:
        return False  # keeps every connection open; h11 (step 4) honours "Connection: close"


def parse_head(head: bytes) -> tuple[bytes, bytes, dict[bytes, bytes], int]:
    """Method, path, query and Content-Length of a request head (without its
    blank line). Raises ValueError on what it cannot split; everything else
    it takes on trust, which step 4 shows is too much."""
    line, *fields = head.split(b"\r\n")
    method, target, _version = line.split(b" ")
    parts = urlsplit(target)
    length = 0
    for field in fields:
        name, _, value = field.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
            if length < 0:
                raise ValueError("negative Content-Length")
    return method, parts.path, dict(parse_qsl(parts.query)), length
