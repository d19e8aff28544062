"""Replication: a node coordinates a client's request on the replicas of
its key and answers once enough of them have.

# design: the coordinator

In a cluster, ``Coordinator`` is the executor in front of the node's own
(inline or PayloadThread pool). A request for ``/v0/entity`` is coordinated;
everything else (the internal endpoint, ranges, status, metrics) goes to the
node's executor as on a single node. Coordinating, on the SelectorThread
that owns the client's connection:

1. ``ack`` and ``from`` are read and checked (``replica_counts``);
2. the replicas are the ``from`` best nodes for the key (placement.py);
3. a write gets a version from this node's clock (records.py);
4. each replica is asked at once: this node's own through its executor, as
   an internal request answered to a ``LocalCall`` (a call into its own
   storage, never an HTTP request to itself), the others through the
   SelectorThread's ``PeerPool`` (peer.py), non-blocking;
5. a ``Quorum`` counts the answers, on the SelectorThread, and answers the
   client as soon as ``ack`` replicas have succeeded, or with 504 as soon as
   so many have failed that ``ack`` cannot be reached. Answers after that
   are dropped.

No thread waits for a replica. Meanwhile the client's connection is in its
``AWAITING`` phase, owned by its SelectorThread (connection.py, "design:
ownership"); in sync mode an ``ack`` that the node's own replica reaches
alone is answered at once, inside ``execute``.

# design: what a read returns

A GET asks the ``from`` replicas for their records and takes the first
``ack`` answers; the freshest version among them wins: its value (200), or
404 when it is a tombstone or none of them has the key.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote_from_bytes

from selectorkv.api import (
    ACCEPTED,
    BAD_ID,
    CREATED,
    ENTITY_METHODS,
    INTERNAL_ENTITY,
    NOT_ENOUGH_REPLICAS,
    NOT_FOUND,
    TOKEN_HEADER,
    BadQuery,
    Request,
    Response,
    entity_id,
    query_param,
)
from selectorkv.cycle import Executor, Responder
from selectorkv.peer import PeerPool, PeerReply, PeerRequest
from selectorkv.placement import Topology
from selectorkv.reactor import SelectorThread
from selectorkv.records import Record, VersionClock, decode
from selectorkv.storage import Storage

log = logging.getLogger("selectorkv.replication")

# Calls in flight from one SelectorThread to one peer; beyond it a replica
# counts as failed at once (the overload rule: no unbounded queue).
MAX_IN_FLIGHT = 1024
BAD_COUNTS = Response(
    400, b"ack and from: both or neither, whole numbers, 1 <= ack <= from <= nodes\n"
)


def replica_counts(query: bytes, nodes: int) -> tuple[int, int] | None:
    """(ack, from) of a query, the defaults when neither is given; None
    when they break the rules (a 400)."""
    try:
        ack_raw = query_param(query, b"ack")
        from_raw = query_param(query, b"from")
    except BadQuery:
        return None
    if ack_raw is None and from_raw is None:
        return nodes // 2 + 1, nodes
    if ack_raw is None or from_raw is None or not (ack_raw.isdigit() and from_raw.isdigit()):
        return None
    ack, replicas = int(ack_raw), int(from_raw)
    if not 1 <= ack <= replicas <= nodes:
        return None
    return ack, replicas


def address_of(url: str) -> tuple[str, int]:
    """("host", port) of a normalised node URL (placement.normalise)."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    return host.strip("[]"), int(port)


class LocalCall:
    """The responder of an internal request that a coordinator runs on its
    own node: the answer goes to a callback on the SelectorThread."""

    def __init__(self, reactor: SelectorThread, on_answer: Callable[[Response], None]) -> None:
        self._reactor = reactor
        self._on_answer = on_answer

    def respond(self, response: Response) -> bool:
        if threading.get_ident() == self._reactor.thread_id:
            self._on_answer(response)
        else:  # a PayloadThread ran it
            self._reactor.call_soon(lambda: self._on_answer(response))
        return True

    def hand_off(self) -> None:
        """No connection to give away: the PayloadThread only answers."""

    def continue_stream(self) -> None:
        raise RuntimeError("an internal request is never streamed")


class Quorum:
    """The answers of one coordinated request, counted on the SelectorThread."""

    def __init__(self, client: Responder, method: bytes, ack: int, replicas: int) -> None:
        self._client = client
        self._method = method
        self._ack = ack
        self._replicas = replicas
        self._succeeded = 0
        self._failed = 0
        self._freshest: Record | None = None
        self._done = False

    def local(self, response: Response) -> None:
        self._count(response.status, response.body, "this node")

    def peer(self, reply: PeerReply) -> None:
        self._count(reply.status, reply.body, reply.error)

    def _count(self, status: int, body: bytes, error: str) -> None:
        if self._done:
            return  # answered already: later replicas do not matter
        if self._method == b"GET" and status in (200, 404):
            if status == 200:
                try:
                    record = decode(body)
                except ValueError:
                    status = 0
                else:
                    if self._freshest is None or record.version > self._freshest.version:
                        self._freshest = record
            ok = status != 0
        else:
            ok = status == 201
        if ok:
            self._succeeded += 1
        else:
            self._failed += 1
            log.debug("a replica failed: status %d %s", status, error)
        if self._succeeded >= self._ack:
            self._finish(self._success())
        elif self._failed > self._replicas - self._ack:
            self._finish(NOT_ENOUGH_REPLICAS)

    def _success(self) -> Response:
        if self._method == b"PUT":
            return CREATED
        if self._method == b"DELETE":
            return ACCEPTED
        record = self._freshest
        if record is None or record.value is None:
            return NOT_FOUND
        return Response(200, record.value)

    def _finish(self, response: Response) -> None:
        self._done = True
        self._client.respond(response)


class Coordinator:
    """The executor of a cluster node (see "design: the coordinator")."""

    def __init__(
        self, local: Executor, topology: Topology, token: bytes, peer_timeout: float
    ) -> None:
        self._local = local
        self._topology = topology
        self._token = token
        self._peer_timeout = peer_timeout
        self._clock = VersionClock(topology.nodes.index(topology.self_url))
        self._pools: dict[SelectorThread, PeerPool] = {}

    def is_full(self) -> bool:
        return self._local.is_full()

    def resume(self, cycle: Responder) -> None:
        self._local.resume(cycle)

    def execute(self, request: Request, cycle: Responder) -> None:
        path, _, query = request.target.partition(b"?")
        if path != b"/v0/entity":
            self._local.execute(request, cycle)
            return
        if request.method not in (b"GET", b"PUT", b"DELETE"):
            cycle.respond(ENTITY_METHODS)
            return
        key = entity_id(query)
        if key is None:
            cycle.respond(BAD_ID)
            return
        counts = replica_counts(query, len(self._topology.nodes))
        if counts is None:
            cycle.respond(BAD_COUNTS)
            return
        ack, replicas = counts
        self._coordinate(request, key, ack, replicas, cycle)

    def _coordinate(
        self, request: Request, key: bytes, ack: int, replicas: int, cycle: Responder
    ) -> None:
        reactor = threading.current_thread()
        assert isinstance(reactor, SelectorThread), "coordinated on a SelectorThread"
        pool = self._pools.get(reactor)
        if pool is None:
            pool = self._pools[reactor] = PeerPool(reactor, MAX_IN_FLIGHT, self._peer_timeout)
        target = INTERNAL_ENTITY + b"?id=" + quote_from_bytes(key, safe="").encode("ascii")
        if request.method == b"GET":
            method, body = b"GET", b""
        else:
            value = request.body if request.method == b"PUT" else None
            method, body = b"PUT", Record(self._clock.next(), value).encode()
        quorum = Quorum(cycle, request.method, ack, replicas)
        internal = PeerRequest(method, target, ((TOKEN_HEADER, self._token),), body)
        for node in self._topology.replicas(key, replicas):
            if node == self._topology.self_url:
                local = Request(method, target, body, self._token)
                self._local.execute(local, LocalCall(reactor, quorum.local))
            else:
                pool.call(address_of(node), internal, quorum.peer)


# The storage format of a cluster node: a file in the data directory.
FORMAT_FILE = "SELECTORKV-FORMAT"
RECORDS_FORMAT = "versioned-records 1\n"


def check_format(data: str, storage: Storage, cluster: bool) -> None:
    """Refuse a database written in the other format, so that nothing is
    misread: a single node stores plain values, a cluster node versioned
    records (records.py). An empty database takes the format it is opened
    with. Raises ValueError with what to do."""
    marker = Path(data) / FORMAT_FILE
    has_records = marker.exists()
    if cluster == has_records:
        return
    cursor = storage.range(b"", None)
    try:
        empty = next(iter(cursor), None) is None
    finally:
        cursor.close()
    if cluster and empty:
        marker.write_text(RECORDS_FORMAT)
        return
    if not empty and cluster:
        raise ValueError(
            f"{data} holds a single node's data (plain values); a cluster node stores "
            "versioned records. Serve it without --cluster, or give this node an empty --data"
        )
    if has_records and not cluster:
        raise ValueError(
            f"{data} holds a cluster node's data (versioned records, {FORMAT_FILE}); "
            "serve it with the same --cluster, --self and --cluster-token"
        )
