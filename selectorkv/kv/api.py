"""The HTTP API: a decoded request in, a response out. No sockets here.

This module is the whole HTTP API: ``/v0/entity`` and ``/v0/status`` (the
course's table, in docs/api.md), the range ``/v0/entities`` and, when a server
passes its exposition in, ``/metrics``: routing, the query parameters,
status codes. It knows nothing of threads, h11 or selectors, so it can be tested with plain
function calls, and both modes run exactly the same code: in sync mode a
SelectorThread calls ``Api.handle``, in async mode a PayloadThread does.

Keys are the ``id`` query parameter, percent-decoded, as bytes (``+`` is a
plus sign, not a space: this is a URL query, not a form). A malformed escape
such as ``%zz`` is a client error (400), not a key.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Generator, Mapping
from typing import NamedTuple
from urllib.parse import quote_from_bytes

from selectorkv.http.exchange import Request, Response
from selectorkv.kv import batch
from selectorkv.kv.records import HEADER_BYTES, ReplicaStore, version_of
from selectorkv.kv.storage import Cursor, Storage, StorageError
from selectorkv.reactor.stats import count

log = logging.getLogger("selectorkv.kv.api")


# The internal protocol between cluster nodes (docs/cluster.md): a path of
# its own, the shared token in a header, a versioned record as the body.
INTERNAL_PREFIX = b"/v0/internal/"
INTERNAL_ENTITY = b"/v0/internal/entity"
INTERNAL_BATCH = b"/v0/internal/batch"  # several calls in one request (kv/batch.py)
TOKEN_HEADER = b"x-selectorkv-token"
CLUSTER_HEADER = b"x-selectorkv-cluster"
# An internal request carries what a client sent plus a little: the record's
# kind, version and replicas before the value (RECORD_OVERHEAD), and a head with the
# token, the cluster id and the peer's address. The receiving node allows
# internal requests that much more than its client limits, so that every
# value and key a client may write can be replicated (connection.py).
RECORD_OVERHEAD = HEADER_BYTES
INTERNAL_HEAD_ALLOWANCE = 1024
RECORD_TYPE = ((b"content-type", b"application/octet-stream"),)
# What a client needs to place keys as the nodes do: the node list, its id,
# and which node answered (JSON; selectorkv.client checks it).
CLUSTER_PATH = b"/v0/cluster"
STALLS_PATH = b"/v0/debug/stalls"  # with --record-stalls (reactor/stalls.py)
JSON_TYPE = ((b"content-type", b"application/json"),)


class Write(NamedTuple):
    """A write to store: ``value`` None deletes the key."""

    key: bytes
    value: bytes | None

    @property
    def response(self) -> Response:
        """The response once the write is stored: 201, or 202 for a delete."""
        return ACCEPTED if self.value is None else CREATED


STATUS_OK = Response(200)
CREATED = Response(201)
ACCEPTED = Response(202)
UNKNOWN_PATH = Response(400, b"unknown path: try /v0/entity?id=KEY or /v0/entities?start=KEY\n")
BAD_ID = Response(400, b"id must be given once, non-empty, with valid %XX escapes\n")
BAD_RANGE = Response(
    400, b"start must be given once and non-empty; end is optional, non-empty if given\n"
)
NOT_FOUND = Response(404)
ENTITY_METHODS = Response(405, headers=((b"allow", b"GET, PUT, DELETE"),))
GET_ONLY = Response(405, headers=((b"allow", b"GET"),))
INTERNAL_ERROR = Response(500)
METRICS_TYPE = ((b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),)
SERVICE_UNAVAILABLE = Response(503)
NOT_ENOUGH_REPLICAS = Response(504, b"not enough replicas answered\n")
FORBIDDEN = Response(403, b"internal requests need the cluster's token\n")
BAD_RECORD = Response(400, b"the body is not a versioned record\n")
OTHER_TOPOLOGY = Response(409, b"the sender has another node list (cluster id)\n")

_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")

# The bytes of a key that an internal target carries as they are: all that
# h11 accepts in a request target but the two that the query syntax gives a
# meaning ("%" escapes, "&" separates). A byte a client sent unescaped thus
# stays one byte, and the internal target is never longer than the client's
# own: a key that a client was allowed to send can always be replicated.
_KEPT = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "%&")


def internal_target(key: bytes) -> bytes:
    """The target of the internal request for ``key``'s record."""
    return INTERNAL_ENTITY + b"?id=" + quote_from_bytes(key, safe=_KEPT).encode("ascii")


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


class BadQuery(Exception):
    """A query parameter is repeated, bare (no "=") or badly escaped."""


def query_param(query: bytes, name: bytes) -> bytes | None:
    """The decoded value of the single parameter ``name``; None if absent.
    Raises BadQuery when the parameter is ambiguous or malformed."""
    found: bytes | None = None
    for pair in query.split(b"&"):
        key, sep, value = pair.partition(b"=")
        if key != name:
            continue
        if found is not None or not sep:
            raise BadQuery(name)  # given twice, or bare without "="
        found = percent_decode(value)
        if found is None:
            raise BadQuery(name)
    return found


def entity_id(query: bytes) -> bytes | None:
    """The decoded, non-empty, single ``id`` parameter, or None (a 400)."""
    if query.startswith(b"id=") and b"&" not in query:
        return percent_decode(query[3:]) or None  # the usual query, on the fast path
    try:
        return query_param(query, b"id") or None
    except BadQuery:
        return None


def posted_calls(request: Request) -> list[batch.Call] | Response:
    """The calls of an internal batch POSTed as ``request`` (kv/batch.py),
    or the 405 or 400 that refuses it."""
    if request.method != b"POST":
        return Response(405, headers=((b"allow", b"POST"),))
    try:
        return batch.decode_calls(request.body)
    except ValueError as exc:
        return Response(400, f"a malformed batch: {exc}\n".encode())


def range_bounds(query: bytes) -> tuple[bytes, bytes | None] | None:
    """``start`` (required, not empty) and ``end`` (None: to the last key)
    of a range's query; None when they are malformed (a 400)."""
    try:
        start = query_param(query, b"start")
        end = query_param(query, b"end")
    except BadQuery:
        return None
    if not start or end == b"":
        return None
    return start, end


def entry_chunks(cursor: Cursor) -> Generator[bytes, None, None]:
    """``<key>\n<value>`` for each entry: one chunk of the streamed body.
    Closing the generator (the client left) closes the cursor at once."""
    try:
        for key, value in cursor:
            yield key + b"\n" + value
    finally:
        cursor.close()


class Api:
    """The node API: routes a ``Request`` to the storage and returns a
    ``Response``. A cluster node runs a ``ReplicaApi`` instead."""

    def __init__(
        self,
        storage: Storage,
        metrics: Callable[[], bytes] | None = None,
        stalls: Callable[[float], bytes] | None = None,
    ) -> None:
        self._storage = storage
        self._metrics = metrics  # the server's /metrics text, when there is a server
        self._stalls = stalls  # --record-stalls: the record since a time, as JSON

    def handle(self, request: Request) -> Response:
        """Never raises: a storage failure is a 500, logged with its cause.

        Catching everything here, in the one function both modes call, is
        what keeps a PayloadThread (or a SelectorThread) alive through a bug:
        the client gets a 500, the log gets the traceback.
        """
        path, _, query = request.target.partition(b"?")
        try:
            return self._route(path, query, request)
        except StorageError as exc:
            log.error("storage error on %r %r: %s", request.method, request.target, exc)
            return INTERNAL_ERROR
        except Exception:
            log.exception("bug while handling %r %r", request.method, request.target)
            return INTERNAL_ERROR

    def _route(self, path: bytes, query: bytes, request: Request) -> Response:
        if path == b"/v0/entity":
            return self._entity(request.method, query, request.body)
        return self._shared(path, query, request.method)

    def _shared(self, path: bytes, query: bytes, method: bytes) -> Response:
        """The paths every node serves the same way."""
        if path == b"/v0/status":
            return STATUS_OK if method == b"GET" else GET_ONLY
        if path == b"/v0/entities":
            return self._entities(method, query)
        if path == b"/metrics" and self._metrics is not None:
            return Response(200, self._metrics(), METRICS_TYPE) if method == b"GET" else GET_ONLY
        if path == STALLS_PATH and self._stalls is not None:
            return self._stall_record(method, query)
        return UNKNOWN_PATH

    def _stall_record(self, method: bytes, query: bytes) -> Response:
        """The server's record of what held it up since ``since`` (a
        time.monotonic() reading; none: all of it), reactor/stalls.py."""
        assert self._stalls is not None
        if method != b"GET":
            return GET_ONLY
        try:
            since = float(query_param(query, b"since") or b"0")
        except (BadQuery, ValueError):
            return Response(400, b"since: a time.monotonic() reading, in seconds\n")
        return Response(200, self._stalls(since), JSON_TYPE)

    def _entities(self, method: bytes, query: bytes) -> Response:
        if method != b"GET":
            return GET_ONLY
        bounds = range_bounds(query)
        if bounds is None:
            return BAD_RANGE
        return Response(200, stream=entry_chunks(self._values(*bounds)))

    def _values(self, start: bytes, end: bytes | None) -> Cursor:
        """The entries ``/v0/entities`` shows."""
        return self._storage.range(start, end)

    def _entity(self, method: bytes, query: bytes, body: bytes) -> Response:
        if method not in (b"GET", b"PUT", b"DELETE"):
            return ENTITY_METHODS
        key = entity_id(query)
        if key is None:
            return BAD_ID
        if method == b"GET":
            value = self._storage.get(key)
            return NOT_FOUND if value is None else Response(200, value)
        if method == b"PUT":
            self._storage.put(key, body)
            return CREATED
        self._storage.delete(key)
        return ACCEPTED

    def write_of(self, request: Request) -> Write | None:
        """The write a request makes, if it is a plain one that group commit
        may batch (a valid PUT or DELETE of ``/v0/entity``); None for
        everything else, which ``handle`` answers as usual."""
        method = request.method
        if method != b"PUT" and method != b"DELETE":
            return None
        path, _, query = request.target.partition(b"?")
        if path != b"/v0/entity":
            return None
        key = entity_id(query)
        if key is None:
            return None
        return Write(key, request.body if method == b"PUT" else None)


# An internal endpoint a cluster part serves through the replica's API
# (anti-entropy's, cluster/antientropy.py): the request and its query, after
# the token was checked.
InternalRoute = Callable[[Request, bytes], Response]


class ReplicaApi(Api):
    """A cluster node's API over its versioned records: the internal
    endpoint reads and applies records for the coordinators, and
    ``/v0/entities`` shows the node's live values without their versions.
    ``/v0/entity`` is the coordinator's (selectorkv/cluster/replication.py)
    and never reaches this class."""

    def __init__(
        self,
        storage: Storage,
        replica: ReplicaStore,
        token: bytes,
        cluster_id: bytes,
        metrics: Callable[[], bytes] | None = None,
        topology: bytes = b"{}",
        routes: Mapping[bytes, InternalRoute] | None = None,
        stalls: Callable[[float], bytes] | None = None,
    ) -> None:
        super().__init__(storage, metrics, stalls)
        self._replica = replica
        self._routes = dict(routes or {})  # more internal endpoints, by path
        self._token = token
        self._cluster_id = cluster_id
        self._topology = Response(200, topology, JSON_TYPE)  # GET /v0/cluster
        self._strangers: set[bytes] = set()  # cluster ids already logged

    def _route(self, path: bytes, query: bytes, request: Request) -> Response:
        if path == INTERNAL_ENTITY:
            return self._refused(request) or self._internal(request, query)
        if path == INTERNAL_BATCH:
            return self._refused(request) or self._batch(request)
        if path == CLUSTER_PATH:
            return self._topology if request.method == b"GET" else GET_ONLY
        route = self._routes.get(path)
        if route is not None:
            return self._refused(request) or route(request, query)
        return self._shared(path, query, request.method)

    def _values(self, start: bytes, end: bytes | None) -> Cursor:
        return self._replica.values(start, end)

    def write_of(self, request: Request) -> Write | None:
        return None  # a node stores records, applied one by one (ReplicaStore.apply_all)

    def _refused(self, request: Request) -> Response | None:
        """Why an internal request is refused (no token, another node
        list), or None when it is served."""
        if not self._token or not hmac.compare_digest(request.header(TOKEN_HEADER), self._token):
            return FORBIDDEN
        cluster = request.header(CLUSTER_HEADER)
        if cluster and cluster != self._cluster_id:
            # Nodes always send their id; a request without one is an
            # operator's (curl with the token), who asks for no placement.
            self._stranger(cluster)
            return OTHER_TOPOLOGY
        return None

    def _internal(self, request: Request, query: bytes) -> Response:
        """A node's request for this node's replica of a key: GET answers
        the stored record (404: none); PUT applies one and answers 201 when
        it is stored, or 200 with the newer record the replica kept."""
        key = entity_id(query)
        if key is None:
            return BAD_ID
        if request.method == b"GET":
            return self._record_of(key)
        if request.method != b"PUT":
            return Response(405, headers=((b"allow", b"GET, PUT"),))
        raw = request.body
        try:
            version = version_of(raw)
        except ValueError:
            return BAD_RECORD
        return self._stored(raw, self._replica.apply_all(((key, version, raw),))[0])

    def _batch(self, request: Request) -> Response:
        """Several internal calls in one request (kv/batch.py), answered by
        ``_answers``."""
        calls = posted_calls(request)
        if isinstance(calls, Response):
            return calls
        return Response(200, batch.encode_answers(self._answers(calls)), RECORD_TYPE)

    def answer(self, calls: list[batch.Call]) -> list[batch.Answer]:
        """The coordinator's way in for this node's own replica: the calls of
        a batch, without the HTTP around them. Never raises, as ``handle``:
        a storage failure answers every call 500."""
        try:
            return self._answers(calls)
        except StorageError as exc:
            log.error("storage error on %d calls of this node's coordinator: %s", len(calls), exc)
        except Exception:
            log.exception("bug while answering %d calls of this node's coordinator", len(calls))
        return [batch.Answer(INTERNAL_ERROR.status, INTERNAL_ERROR.body)] * len(calls)

    def _answers(self, calls: list[batch.Call]) -> list[batch.Answer]:
        """Each call answered as ``_internal`` would answer it alone; the
        records the calls store are written to the storage together."""
        writes: dict[int, tuple[bytes, int, bytes]] = {}
        for index, (key, raw) in enumerate(calls):
            if raw is not None:
                try:
                    writes[index] = (key, version_of(raw), raw)
                except ValueError:
                    continue  # answered BAD_RECORD below
        held = iter(self._replica.apply_all(list(writes.values())))
        answers = []
        for index, (key, raw) in enumerate(calls):
            if raw is None:
                response = self._record_of(key)
            elif index in writes:
                response = self._stored(raw, next(held))
            else:
                response = BAD_RECORD
            stored = response is CREATED
            answers.append(batch.STORED if stored else batch.Answer(response.status, response.body))
        return answers

    def _record_of(self, key: bytes) -> Response:
        raw = self._replica.stored(key)
        return NOT_FOUND if raw is None else Response(200, raw, RECORD_TYPE)

    def _stored(self, sent: bytes, held: bytes) -> Response:
        """The answer to a record sent: 201 when it was stored, else 200
        with the newer record the replica kept."""
        if held is sent:
            return CREATED
        count("writes_superseded")
        return Response(200, held, RECORD_TYPE)

    def _stranger(self, cluster: bytes) -> None:
        """Count a request from a node with another node list; log each
        such list once (a misconfigured node sends many)."""
        count("topology_mismatches")
        if cluster not in self._strangers and len(self._strangers) < 64:
            self._strangers.add(cluster)
            log.error(
                "refused an internal request from a node with cluster id %r; this node's is %r: "
                "the nodes were started with different --cluster lists",
                cluster.decode("ascii", "replace"),
                self._cluster_id.decode(),
            )
