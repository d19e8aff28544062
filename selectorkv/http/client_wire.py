"""HTTP/1.1 from the client's side, for calls between nodes: a request as
bytes, and a reader of the answers on one connection.

A node's calls to another node go to a server that is the same program:
answers with a Content-Length, a head of a few short lines. h11 in the
CLIENT role reads them too, but it validates every event it builds and
parses (a proxied request on the coordinator spent about a quarter of its
Python time in h11's client side, docs/cluster.md "What a hop costs").
This is the subset that calls between nodes use, written out: the request
is formatted in one step, and an answer is read from its bytes with a few
``find`` calls. Whatever falls outside the subset (no Content-Length, a
chunked body, a malformed status line or header) is ``BadReply``, a failed
call, never a guess; the answer's head and body are bounded.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

HEAD_END = b"\r\n\r\n"


class BadReply(ValueError):
    """An answer this reader does not accept: why, in words."""


class Reply(NamedTuple):
    """One whole answer. ``keep_alive``: the connection may carry another."""

    status: int
    headers: dict[bytes, bytes]  # names in lower case
    body: bytes
    keep_alive: bool


def request_bytes(method: bytes, target: bytes, host: bytes, headers: bytes, body: bytes) -> bytes:
    """A whole HTTP/1.1 request. ``headers``: header lines already joined,
    each ending in CRLF (``header_lines``); the body is framed by its
    Content-Length, also when it is empty."""
    if b" " in target or b"\r" in target or b"\n" in target:
        raise ValueError(f"a request target has no spaces or line breaks: {target!r}")
    return b"%s %s HTTP/1.1\r\nhost: %s\r\n%scontent-length: %d\r\n\r\n%s" % (
        method, target, host, headers, len(body), body,
    )  # fmt: skip


@functools.lru_cache(maxsize=64)
def header_lines(headers: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """``name: value`` lines, each ending in CRLF; ValueError for a name or
    value that would break the head."""
    for name, value in headers:
        if not name or any(c in name for c in b" :\r\n") or b"\r" in value or b"\n" in value:
            raise ValueError(f"not a header: {name!r}: {value!r}")
    return b"".join(b"%s: %s\r\n" % pair for pair in headers)


class ReplyReader:
    """The answers arriving on one connection, read one after another from
    the bytes ``feed`` is given. At most ``max_head`` bytes of head and
    ``max_body`` of body per answer."""

    def __init__(self, max_head: int, max_body: int) -> None:
        self._buffer = bytearray()
        self._max_head = max_head
        self._max_body = max_body
        self._head: tuple[int, dict[bytes, bytes], int, bool] | None = None  # parsed, body due

    @property
    def started(self) -> bool:
        """Some byte of an answer has arrived (not all of it, or ``next``
        would have returned it)."""
        return bool(self._buffer) or self._head is not None

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next(self) -> Reply | None:
        """The next whole answer, or None until its bytes are all here.
        Raises BadReply. Informational (1xx) answers are skipped."""
        while self._head is None:
            end = self._buffer.find(HEAD_END, 0, self._max_head + len(HEAD_END))
            if end < 0:
                if len(self._buffer) > self._max_head:
                    raise BadReply(f"an answer's head is over {self._max_head} bytes")
                return None
            head = bytes(self._buffer[:end])
            del self._buffer[: end + len(HEAD_END)]
            parsed = self._parse_head(head)
            if parsed is not None:
                self._head = parsed
        status, headers, length, keep_alive = self._head
        if len(self._buffer) < length:
            return None
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        self._head = None
        return Reply(status, headers, body, keep_alive)

    def _parse_head(self, head: bytes) -> tuple[int, dict[bytes, bytes], int, bool] | None:
        """(status, headers, body length, keep-alive); None for a 1xx."""
        status_line, *lines = head.split(b"\r\n")
        version, _, rest = status_line.partition(b" ")
        code = rest[:3]
        if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
            raise BadReply(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        if rest[3:4] not in (b"", b" "):
            raise BadReply(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(code)
        headers: dict[bytes, bytes] = {}
        for line in lines:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip() or b"\n" in line:
                raise BadReply(f"a malformed header line: {line[:80]!r}")
            name = name.lower()
            value = value.strip(b" \t")
            if name in headers and headers[name] != value:
                raise BadReply(f"{name.decode(errors='replace')} given twice")
            headers[name] = value
        if status < 200:
            return None
        if b"transfer-encoding" in headers:
            raise BadReply("a chunked answer (nodes frame theirs by Content-Length)")
        raw_length = headers.get(b"content-length")
        if status in (204, 304):
            length = 0
        elif raw_length is None or not raw_length.isdigit():
            raise BadReply("an answer without a Content-Length")
        else:
            length = int(raw_length)
        if length > self._max_body:
            raise BadReply(f"an answer's body is over {self._max_body} bytes")
        connection = headers.get(b"connection", b"").lower()
        keep_alive = version == b"HTTP/1.1" and b"close" not in connection
        return status, headers, length, keep_alive
