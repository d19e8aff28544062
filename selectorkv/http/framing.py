"""HTTP/1.1 framing on raw bytes: where a request head ends, what in it we
refuse before h11 sees it, a request plain enough to answer without h11,
and the response heads built once and reused.

The connection's checks of a new head and the shed path's 503s read the
same bytes through one scanner (``scan_head``), so that they cannot
disagree on where a head ends (a request smuggled past one of them). h11
events are immutable, so the common response heads are built once
(``response_head``). No sockets and no h11 state here: everything is a
function of bytes, unit-tested as such (tests/unit/test_framing.py).
docs/reliability.md and docs/architecture.md ("Performance") give the
reasons and the figures.
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


def plain_request_size(data: bytes, max_head: int) -> int | None:
    """The size of the request at the start of ``data`` if it is complete and
    plainly framed; None for anything else.

    Plain: an HTTP/1.1 head with CRLF line ends that ``scan_head`` accepts,
    with a Host header, no Transfer-Encoding, Connection or Expect header, no space
    before a Content-Length colon (h11 refuses that), and its Content-Length
    body (if any) all present. Such a request can be answered 503 from its
    bytes alone: h11 would frame it the same way.
    """
    end, status, _, content_length = scan_head(data, max_head)
    if end < 4 or status or not data.startswith(b"\r\n\r\n", end - 4):
        return None
    lowered = data[:end].lower()
    first_line_end = lowered.find(b"\r\n")
    if (
        first_line_end < 9
        or not data.startswith(b" HTTP/1.1", first_line_end - 9)
        or lowered.count(b"\n") != lowered.count(b"\r\n")  # a bare LF: leave it to h11
        or b"\nhost:" not in lowered  # h11 refuses an HTTP/1.1 request without Host
        or b"\ntransfer-encoding" in lowered
        or b"\nconnection:" in lowered
        or b"\nexpect:" in lowered
        or b"\ncontent-length " in lowered
        or b"\ncontent-length\t" in lowered
    ):
        return None
    length = 0
    if content_length is not None:
        value = content_length.strip()
        if not value.isdigit():
            return None
        length = int(value)
    size = end + length
    return size if len(data) >= size else None


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
        reason=HTTPStatus(status).phrase.encode("ascii"),
    )
