"""The HTTP API: a decoded request in, a response out. No sockets here.

This module is the whole contract of ``/v0/entity`` and ``/v0/status`` (see
docs and the course's table): routing, the ``id`` parameter, status codes.
It knows nothing of threads, h11 or selectors, so it can be tested with plain
function calls, and both modes run exactly the same code: in sync mode a
SelectorThread calls ``Api.handle``, in async mode a PayloadThread does.

Keys are the ``id`` query parameter, percent-decoded, as bytes (``+`` is a
plus sign, not a space: this is a URL query, not a form). A malformed escape
such as ``%zz`` is a client error (400), not a key.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from selectorkv.storage import Storage, StorageError

log = logging.getLogger("selectorkv.api")


class Request(NamedTuple):
    """A complete request as the SelectorThread decoded it from h11 events.

    Requests and responses are NamedTuples rather than frozen dataclasses:
    one of each is built per request, and a tuple is built in a fraction of
    the time.
    """

    method: bytes
    target: bytes
    body: bytes = b""


class Response(NamedTuple):
    """What to answer. The connection adds the framing (Content-Length)."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = ()


STATUS_OK = Response(200)
CREATED = Response(201)
ACCEPTED = Response(202)
BAD_REQUEST = Response(400)
NOT_FOUND = Response(404)
ENTITY_METHODS = Response(405, headers=((b"allow", b"GET, PUT, DELETE"),))
STATUS_METHODS = Response(405, headers=((b"allow", b"GET"),))
INTERNAL_ERROR = Response(500)
SERVICE_UNAVAILABLE = Response(503)

_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def percent_decode(raw: bytes) -> bytes | None:
    """Decode %XX escapes; None when an escape is malformed."""
    if b"%" not in raw:
        return raw
    first, *rest = raw.split(b"%")
    decoded = bytearray(first)
    for piece in rest:
        if len(piece) < 2 or piece[0] not in _HEX_DIGITS or piece[1] not in _HEX_DIGITS:
            return None
        decoded.append(int(piece[:2], 16))
        decoded += piece[2:]
    return bytes(decoded)


def entity_id(query: bytes) -> bytes | None:
    """The decoded, non-empty, single ``id`` parameter, or None (a 400)."""
    if query.startswith(b"id=") and b"&" not in query:
        return percent_decode(query[3:]) or None  # the usual query, on the fast path
    found: bytes | None = None
    for pair in query.split(b"&"):
        name, sep, value = pair.partition(b"=")
        if name != b"id":
            continue
        if found is not None or not sep:
            return None  # two ids, or a bare "id" without "=": ambiguous
        found = percent_decode(value)
        if found is None:
            return None
    return found or None


class Api:
    """Routes a ``Request`` to the storage and returns a ``Response``."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    def handle(self, request: Request) -> Response:
        """Never raises: a storage failure is a 500, logged with its cause.

        Catching everything here, in the one function both modes call, is
        what keeps a PayloadThread (or a SelectorThread) alive through a bug:
        the client gets a 500, the log gets the traceback.
        """
        path, _, query = request.target.partition(b"?")
        try:
            if path == b"/v0/entity":
                return self._entity(request.method, query, request.body)
            if path == b"/v0/status":
                return STATUS_OK if request.method == b"GET" else STATUS_METHODS
            return BAD_REQUEST
        except StorageError as exc:
            log.error("storage error on %r %r: %s", request.method, request.target, exc)
            return INTERNAL_ERROR
        except Exception:
            log.exception("bug while handling %r %r", request.method, request.target)
            return INTERNAL_ERROR

    def _entity(self, method: bytes, query: bytes, body: bytes) -> Response:
        if method not in (b"GET", b"PUT", b"DELETE"):
            return ENTITY_METHODS
        key = entity_id(query)
        if key is None:
            return BAD_REQUEST
        if method == b"GET":
            value = self._storage.get(key)
            return NOT_FOUND if value is None else Response(200, value)
        if method == b"PUT":
            self._storage.put(key, body)
            return CREATED
        self._storage.delete(key)
        return ACCEPTED
