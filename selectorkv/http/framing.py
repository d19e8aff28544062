"""HTTP/1.1 framing on raw bytes: where a request head ends, what in it we
refuse before h11 sees it, a request plain enough to serve without h11, and
the response heads built once and reused, as h11 events and as bytes.

A head that h11 reads is checked first by ``scan_head``; a request that
skips h11 (served plain, or shed with a 503) is read by ``plain_request``,
whose grammar is a subset of h11's and which ends a request where h11 and
``scan_head`` do, so that no two readers disagree on where a request ends
(a request smuggled past one of them). h11 events are immutable, so the
common response heads are built once (``response_head``), and once more as
the bytes h11 writes for them (``plain_response_head``). No sockets and
no h11 state here: everything is a function of bytes, unit-tested as such
(tests/unit/test_framing.py). docs/reliability.md and docs/architecture.md
("Plain requests", "Performance") give the reasons and the figures.
"""

from __future__ import annotations

import functools
import re
from http import HTTPStatus

from selectorkv.http.parser import h11

# The end of a head: an empty line, CRLF or (as h11 tolerates) bare LF.
_HEAD_END = re.compile(rb"\n\r?\n")
# Control bytes other than HTAB, CR and LF (which frame the head).
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CONTENT_LENGTH = re.compile(rb"\ncontent-length[ \t]*:([^\r\n]*)", re.IGNORECASE)

# Why a head is refused; the status says how (400, or 431 for its size).
CONTROL_BYTES = b"control bytes in the request head\n"
REPEATED_LENGTH = b"Content-Length given more than once\n"
TOO_LARGE_HEAD = b"request head too large\n"
MALFORMED = b"malformed HTTP request\n"
BOTH_FRAMINGS = b"both Content-Length and Transfer-Encoding\n"

# Bodies for the statuses h11 itself refuses with (RemoteProtocolError).
REJECT_BODIES = {400: MALFORMED, 431: TOO_LARGE_HEAD}


# What ``scan_head`` found, as a plain tuple (it runs on every request, and
# a NamedTuple costs a Python call to build):
#   end             just past the head's empty line; -1 when it is not all here
#   status          0, or the status to refuse the head with (400, 431)
#   problem         why, as the response body
#   content_length  the raw value of its one Content-Length header, or None
HeadScan = tuple[int, int, bytes, bytes | None]


def scan_head(buffered: bytes, max_head: int) -> HeadScan:
    """Scan the request head at the start of ``buffered`` (a body may follow;
    it is not looked at). A head that is not complete is scanned as far as it
    goes, so that control bytes are refused as soon as they arrive."""
    found = _HEAD_END.search(buffered, 0, max_head)
    if found is None:
        if len(buffered) > max_head:
            # h11 bounds a head that is still incomplete; one that arrived
            # whole in a single read is measured here.
            return -1, 431, TOO_LARGE_HEAD, None
        end, limit = -1, len(buffered)
    else:
        end = limit = found.end()
    if _CONTROL_BYTES.search(buffered, 0, limit):
        return end, 400, CONTROL_BYTES, None
    lengths = _CONTENT_LENGTH.findall(buffered, 0, limit)
    if not lengths:
        return end, 0, b"", None
    # h11 quietly merges a repeated (or listed, "3, 3") Content-Length with
    # the same value; a reader in front of us may not, so both are refused.
    if len(lengths) > 1 or b"," in lengths[0]:
        return end, 400, REPEATED_LENGTH, None
    return end, 0, b"", lengths[0]


# A plain request, in the terms of h11's own grammar (RFC 9110/9112): one of
# the methods the server serves, a target of visible ASCII, HTTP/1.1, then
# header fields of a token, a colon and a value of visible bytes, spaces and
# tabs (no control bytes), every line ended by CRLF, and the empty line.
# Each part matches a subset of what h11 accepts, and none can backtrack
# beyond its own line: a long head costs one pass.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_FIELD_VALUE = rb"[^\x00-\x08\x0a-\x1f\x7f]*"
_PLAIN_HEAD = re.compile(
    rb"(GET|PUT|POST|DELETE) ([\x21-\x7e]+) HTTP/1\.1\r\n((?:"
    + _TOKEN + rb":" + _FIELD_VALUE + rb"\r\n)*)\r\n"
)  # fmt: skip
_PLAIN_FIELD = re.compile(rb"(" + _TOKEN + rb"):(" + _FIELD_VALUE + rb")\r\n")
# Headers that give h11's state machine a say in the exchange: a chunked
# body, 100-continue, the end of keep-alive, a protocol switch.
_NOT_PLAIN = frozenset((b"transfer-encoding", b"connection", b"expect", b"upgrade"))

# What ``plain_request`` found, as a plain tuple (it runs on every request):
#   size     the request's bytes, head and body
#   method, target
#   headers  (lower-case name, value without surrounding blanks), as h11 gives them
#   length   the body's, the last ``length`` of ``size`` bytes
PlainRequest = tuple[int, bytes, bytes, list[tuple[bytes, bytes]], int]


def plain_request(data: bytes, max_head: int) -> PlainRequest | None:
    """The request at the start of ``data`` if it is complete and plainly
    framed; None for anything else, which h11 is left to judge.

    Plain: ``_PLAIN_HEAD`` within ``max_head`` bytes; exactly one Host header
    (h11 refuses none or two for HTTP/1.1); none of ``_NOT_PLAIN``; at most
    one Content-Length, of digits only; and its body all here. h11 would
    read such a request the same way, to the byte (tests/unit/test_framing.py
    holds the two side by side), and would have nothing to add to the
    exchange: the connection serves it without h11 (``Connection._read``),
    and the shed path answers it 503 from its bytes alone.
    """
    head = _PLAIN_HEAD.match(data, 0, max_head)
    if head is None:
        return None
    headers = []
    hosts = 0
    length = -1
    for raw_name, raw_value in _PLAIN_FIELD.findall(head.group(3)):
        name = raw_name.lower()
        value = raw_value.strip(b" \t")
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            if length >= 0 or not value.isdigit():
                return None  # a repeated or odd length: scan_head and h11 refuse it
            length = int(value)
        elif name in _NOT_PLAIN:
            return None
        headers.append((name, value))
    if hosts != 1:
        return None
    length = max(length, 0)
    size = head.end() + length
    if len(data) < size:
        return None
    return size, head.group(1), head.group(2), headers, length


def body_length(head: h11.Request) -> tuple[int | None, bytes]:
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
        return None, BOTH_FRAMINGS
    return declared, b""


def header(head: h11.Request, name: bytes) -> bytes:
    """The value of header ``name`` (lower-case), b"" if absent."""
    for raw_name, value in head.headers.raw_items():
        if raw_name.lower() == name:
            return bytes(value)
    return b""


def too_large(limit: int) -> bytes:
    return b"request body larger than %d bytes\n" % limit


END_OF_MESSAGE = h11.EndOfMessage()
LAST_CHUNK = b"0\r\n\r\n"  # a chunked body's end, as h11 writes it
CONTINUE = h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
# The shed path's answer, already bytes: h11 never sees a shed request.
SHED_RESPONSE = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"


@functools.lru_cache(maxsize=1024)
def response_head(
    status: int,
    headers: tuple[tuple[bytes, bytes], ...],
    content_length: int | None,
    close: bool,
) -> h11.Response:
    """The h11 event for a response head; None for ``content_length`` lets
    h11 frame the body as chunked (HTTP/1.1) or by closing (HTTP/1.0)."""
    framing: tuple[tuple[bytes, bytes], ...] = ()
    if content_length is not None:
        framing = ((b"content-length", b"%d" % content_length),)
    if close:
        framing += ((b"connection", b"close"),)
    return h11.Response(
        status_code=status,
        headers=[*framing, *headers],
        reason=reason_phrase(status).encode("ascii"),
    )


# RFC 9110's names where Python's table is older: Python 3.11 and 3.12 call
# 413 "Request Entity Too Large", 3.13 "Content Too Large". The server says
# the same on every Python.
RFC9110_PHRASES = {413: "Content Too Large", 414: "URI Too Long", 416: "Range Not Satisfiable"}


def reason_phrase(status: int) -> str:
    return RFC9110_PHRASES.get(status) or HTTPStatus(status).phrase


@functools.lru_cache(maxsize=1024)
def plain_response_head(
    status: int,
    headers: tuple[tuple[bytes, bytes], ...],
    content_length: int | None,
    close: bool,
) -> bytes:
    """The bytes h11 writes for ``response_head`` in answer to an HTTP/1.1
    request, for a request served without h11 (``plain_request``). Built
    from h11's own event, so its fields are checked as h11 checks them."""
    event = response_head(status, headers, content_length, close)
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, event.reason)]
    lines += [name + b": " + value + b"\r\n" for name, value in event.headers.raw_items()]
    if content_length is None:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)
