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

import http.client
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote_from_bytes

from selectorkv import metrics
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
from selectorkv.metrics import TIMED_OUT
from selectorkv.peer import PeerPool, PeerRequest
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


def coordinated(request: Request) -> bool:
    """Requests for ``/v0/entity`` are; the rest is served as on a single node."""
    return request.target.partition(b"?")[0] == b"/v0/entity"


class Plan(NamedTuple):
    """What a coordinated request asks of whom."""

    ack: int
    replicas: list[str]  # the nodes, best first
    internal: Request  # the internal request each replica gets


def plan(request: Request, topology: Topology, clock: VersionClock) -> Plan | Response:
    """The plan of a request for ``/v0/entity``, or the 4xx that refuses it.
    A write gets its version here, from the coordinator's clock."""
    _, _, query = request.target.partition(b"?")
    if request.method not in (b"GET", b"PUT", b"DELETE"):
        return ENTITY_METHODS
    key = entity_id(query)
    if key is None:
        return BAD_ID
    counts = replica_counts(query, len(topology.nodes))
    if counts is None:
        return BAD_COUNTS
    ack, replicas = counts
    target = INTERNAL_ENTITY + b"?id=" + quote_from_bytes(key, safe="").encode("ascii")
    if request.method == b"GET":
        internal = Request(b"GET", target)
    else:
        value = request.body if request.method == b"PUT" else None
        internal = Request(b"PUT", target, Record(clock.next(), value).encode())
    return Plan(ack, topology.replicas(key, replicas), internal)


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


Repair = Callable[[str, Record], None]


class Quorum:
    """The answers of one coordinated request, counted on the SelectorThread.

    The client is answered by the first ``ack`` successes (for a GET, with
    the freshest record among them) or by 504 once ``ack`` is out of reach.
    A GET goes on listening after that: once every replica has answered or
    failed, those that answered with an older version, or with nothing, are
    sent the newest (``repair``): read repair, which the client does not
    wait for.
    """

    def __init__(
        self, client: Responder, method: bytes, ack: int, replicas: int, repair: Repair
    ) -> None:
        self._client = client
        self._method = method
        self._ack = ack
        self._replicas = replicas
        self._repair = repair
        self._succeeded = 0
        self._failed = 0
        self._freshest: Record | None = None  # among the answers the client gets
        self._newest: Record | None = None  # among all answers
        self._versions: dict[str, int] = {}  # GET: what each node had (-1: nothing)
        self._done = False

    def answer(self, node: str, status: int, body: bytes, error: str) -> None:
        """One replica's answer (status 0: the call failed, ``error`` says why)."""
        ok = status == 201
        if self._method == b"GET" and status in (200, 404):
            ok = self._read(node, status, body)
        if ok:
            self._succeeded += 1
        else:
            self._failed += 1
            log.debug("replica %s failed: status %d %s", node, status, error)
        if not self._done:
            if self._succeeded >= self._ack:
                self._finish(self._success())
            elif self._failed > self._replicas - self._ack:
                self._finish(NOT_ENOUGH_REPLICAS)
        if self._succeeded + self._failed == self._replicas:
            self._repair_stale()

    def _read(self, node: str, status: int, body: bytes) -> bool:
        record = None
        if status == 200:
            try:
                record = decode(body)
            except ValueError:
                return False
        self._versions[node] = -1 if record is None else record.version
        if record is not None:
            if self._newest is None or record.version > self._newest.version:
                self._newest = record
            if not self._done and (
                self._freshest is None or record.version > self._freshest.version
            ):
                self._freshest = record
        return True

    def _repair_stale(self) -> None:
        newest = self._newest
        if newest is None:
            return
        for node, version in self._versions.items():
            if version < newest.version:
                self._repair(node, newest)

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
        if not coordinated(request):
            self._local.execute(request, cycle)
            return
        planned = plan(request, self._topology, self._clock)
        if isinstance(planned, Response):
            cycle.respond(planned)
            return
        reactor = threading.current_thread()
        assert isinstance(reactor, SelectorThread), "coordinated on a SelectorThread"
        target = planned.internal.target

        def repair(node: str, record: Record) -> None:
            log.debug("read repair: %s gets version %d", node, record.version)
            self._ask(reactor, node, Request(b"PUT", target, record.encode()), ignore)

        quorum = Quorum(cycle, request.method, planned.ack, len(planned.replicas), repair)
        for node in planned.replicas:
            self._ask(reactor, node, planned.internal, quorum.answer)

    def _ask(
        self, reactor: SelectorThread, node: str, internal: Request, on_answer: Answer
    ) -> None:
        """Send an internal request to one replica: this node's own through
        its executor (a call into its storage), another through the peer
        pool of this SelectorThread. ``on_answer`` runs on this thread."""
        if node == self._topology.self_url:
            request = internal._replace(token=self._token)
            respond = LocalCall(reactor, lambda r: on_answer(node, r.status, r.body, ""))
            self._local.execute(request, respond)
            return
        pool = self._pools.get(reactor)
        if pool is None:
            pool = self._pools[reactor] = PeerPool(reactor, MAX_IN_FLIGHT, self._peer_timeout)
        headers = ((TOKEN_HEADER, self._token),)
        peer_request = PeerRequest(internal.method, internal.target, headers, internal.body)
        pool.call(
            address_of(node), peer_request, lambda r: on_answer(node, r.status, r.body, r.error)
        )


Answer = Callable[[str, int, bytes, str], None]


def ignore(node: str, status: int, body: bytes, error: str) -> None:
    """The answer to a read repair: nobody waits for it."""


def no_repair(node: str, record: Record) -> None:
    """Blocking peer calls do no read repair: the client would wait for it."""


class Captured:
    """A responder that keeps the answer, for ``BlockingCoordinator``."""

    def __init__(self) -> None:
        self.response: Response | None = None

    def respond(self, response: Response) -> bool:
        self.response = response
        return True

    def hand_off(self) -> None:
        """Nothing to give away: the answer is read back on this thread."""

    def continue_stream(self) -> None:
        raise RuntimeError("a coordinated request is never streamed")


# How a request on a connection the peer has closed fails (http.client's
# RemoteDisconnected is a ConnectionResetError).
CLOSED_WHILE_IDLE = (ConnectionResetError, BrokenPipeError)


class BlockingCoordinator:
    """``--peer-calls blocking``: the thread that executes the request (the
    SelectorThread in sync mode, a PayloadThread in async mode) calls the
    replicas one after another over blocking keep-alive connections and
    waits for each, as a first version in the course does. It is the
    baseline the study compares the asynchronous coordinator with. The same
    ``Quorum`` counts the answers; there is no read repair (the client would
    wait for it)."""

    def __init__(
        self,
        handle: Callable[[Request], Response],
        topology: Topology,
        token: bytes,
        peer_timeout: float,
    ) -> None:
        self._handle = handle  # the node's own Api.handle
        self._topology = topology
        self._token = token
        self._peer_timeout = peer_timeout
        self._clock = VersionClock(topology.nodes.index(topology.self_url))
        self._connections = threading.local()  # each thread's keep-alive connections

    def handle(self, request: Request) -> Response:
        if not coordinated(request):
            return self._handle(request)
        planned = plan(request, self._topology, self._clock)
        if isinstance(planned, Response):
            return planned
        answer = Captured()
        quorum = Quorum(answer, request.method, planned.ack, len(planned.replicas), no_repair)
        internal = planned.internal
        for node in planned.replicas:
            if node == self._topology.self_url:
                own = self._handle(internal._replace(token=self._token))
                quorum.answer(node, own.status, own.body, "")
            else:
                quorum.answer(node, *self._call(node, internal))
        assert answer.response is not None  # every replica answered or failed
        return answer.response

    def _call(self, node: str, internal: Request) -> tuple[int, bytes, str]:
        """One blocking request to a peer: (status, body, error)."""
        pool: dict[str, http.client.HTTPConnection] = self._connections.__dict__.setdefault(
            "by_node", {}
        )
        started = time.perf_counter()
        while True:
            conn = pool.get(node)
            reused = conn is not None
            if conn is None:
                host, port = address_of(node)
                conn = pool[node] = http.client.HTTPConnection(
                    host, port, timeout=self._peer_timeout
                )
            try:
                conn.request(
                    internal.method.decode(), internal.target.decode(), body=internal.body,
                    headers={TOKEN_HEADER.decode(): self._token.decode()},
                )  # fmt: skip
                reply = conn.getresponse()
                answer = reply.status, reply.read(), ""
            except (OSError, http.client.HTTPException) as exc:
                conn.close()  # never reused after a failure
                del pool[node]
                if reused and isinstance(exc, CLOSED_WHILE_IDLE):
                    # A kept-alive connection idle past the peer's
                    # --keepalive-timeout was closed by the peer; nothing
                    # this thread noticed, as it watches no socket. Once
                    # more on a new connection: the internal requests are
                    # idempotent (a versioned record, or a read).
                    continue
                why = TIMED_OUT if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
                answer = 0, b"", why
            break
        metrics.current().peer_call(node, time.perf_counter() - started, answer[2])
        return answer


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
