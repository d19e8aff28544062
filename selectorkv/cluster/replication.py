"""Replication: a node coordinates a client's request on the replicas of
its key and answers once enough of them have.

``Coordinator`` is the executor in front of the node's own: a request for
``/v0/entity`` gets its ``ack``/``from`` checked, its replicas placed, a
version from the node's clock for a write, and is sent to every replica
with the SelectorThread's other calls of the round (``RoundCalls``,
batching.py: the node's own through its executor, straight to the
replica's API; the others through the SelectorThread's ``PeerPool``). A
``Quorum`` counts the answers on the SelectorThread: the client is
answered once ``ack`` replicas have succeeded, or 504 once ``ack`` cannot
be reached; no thread waits for a replica. A read returns the freshest
record of the first ``ack`` answers, after a blocking read repair of the
replicas that returned an older one.
``BlockingCoordinator`` does the same with blocking calls, for comparison.

docs/cluster.md, "One replicated request" and "What is guaranteed", is
where this is explained, and why the read repair blocks.
"""

from __future__ import annotations

import functools
import http.client
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from selectorkv.cluster.batching import (
    OnAnswer,
    OnAnswers,
    RoundCalls,
    Send,
    lone_request,
    over_http,
)
from selectorkv.cluster.clock import HybridClock
from selectorkv.cluster.peer import PeerPool
from selectorkv.cluster.placement import Address, Topology
from selectorkv.http.exchange import Executor, Request, Responder, Response, Task
from selectorkv.kv import batch
from selectorkv.kv.api import (
    ACCEPTED,
    BAD_ID,
    CLUSTER_HEADER,
    CREATED,
    ENTITY_METHODS,
    NOT_ENOUGH_REPLICAS,
    NOT_FOUND,
    RECORD_OVERHEAD,
    TOKEN_HEADER,
    BadQuery,
    entity_id,
    query_param,
)
from selectorkv.kv.records import Record, decode, rank
from selectorkv.reactor.selector_thread import SelectorThread
from selectorkv.reactor.stats import TIMED_OUT, count, current

log = logging.getLogger("selectorkv.cluster.replication")

# Calls in flight from one SelectorThread to one peer; beyond it a replica
# counts as failed at once (the overload rule: no unbounded queue).
MAX_IN_FLIGHT = 1024
BAD_COUNTS = Response(
    400, b"ack and from: both or neither, whole numbers, 1 <= ack <= from <= nodes\n"
)


@dataclass
class Cluster:
    """What a coordinator needs to know of its cluster, fixed at start."""

    topology: Topology
    addresses: dict[str, Address]  # every node's URL -> its IP address, resolved at start
    token: bytes
    clock: HybridClock
    peer_timeout: float
    max_body: int  # the client's --max-body: a replica's record is up to RECORD_OVERHEAD more
    source: str | None = None  # the address peer calls are sent from
    # Keeps a hint (target, key, record) for a write a replica missed
    # (hints.HintedHandoff.keep); None: hinted handoff is off.
    hint: Callable[[str, bytes, Record], None] | None = None

    @functools.cached_property
    def headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """What every internal request carries: the token and the cluster id."""
        return (TOKEN_HEADER, self.token), (CLUSTER_HEADER, self.topology.cluster_id.encode())

    def peer_pool(self, reactor: SelectorThread) -> PeerPool:
        """A pool of peer connections for ``reactor``, with this cluster's
        timeout and source address, reading answers as large as a batch's
        (each of its calls may answer with a record of the largest size)."""
        largest = batch.MAX_CALLS * (self.max_body + RECORD_OVERHEAD + batch.ANSWER_LINE)
        return PeerPool(reactor, MAX_IN_FLIGHT, self.peer_timeout, self.source, largest)


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


def cluster_range(request: Request) -> bool:
    """Is this the cluster-wide range (ranges.py): ``/v0/entities`` without
    ``local=true``, which asks for the node's own range?"""
    path, _, query = request.target.partition(b"?")
    if path != b"/v0/entities":
        return False
    try:
        return query_param(query, b"local") not in (b"true", b"1")
    except BadQuery:
        return True  # the range refuses it


# Starts a cluster-wide range (ranges.py, ``ClusterRange.start``): the
# request, and where its response goes, from any thread.
RangeStarter = Callable[[Request, Callable[[Response], bool]], None]


class Plan(NamedTuple):
    """What a coordinated request asks of whom."""

    ack: int
    replicas: list[str]  # the nodes, best first
    call: batch.Call  # what each replica is asked: a read of the key, or a write
    record: Record | None  # a write's


def plan(request: Request, cluster: Cluster) -> Plan | Response:
    """The plan of a request for ``/v0/entity``, or the 4xx that refuses it.
    A write gets its version here, from the coordinator's clock."""
    _, _, query = request.target.partition(b"?")
    if request.method not in (b"GET", b"PUT", b"DELETE"):
        return ENTITY_METHODS
    key = entity_id(query)
    if key is None:
        return BAD_ID
    topology = cluster.topology
    counts = replica_counts(query, len(topology.nodes))
    if counts is None:
        return BAD_COUNTS
    ack, replicas = counts
    if request.method == b"GET":
        return Plan(ack, topology.replicas(key, replicas), batch.Call(key, None), None)
    value = request.body if request.method == b"PUT" else None
    record = Record(cluster.clock.next(), value, replicas)
    return Plan(ack, topology.replicas(key, replicas), batch.Call(key, record.encode()), record)


def missed_writes(cluster: Cluster, planned: Plan) -> Missed | None:
    """What a write does for a replica that failed it: keep a hint for it
    (another node; this node's own failure is its storage's, and a 500)."""
    keep, record = cluster.hint, planned.record
    if keep is None or record is None:
        return None
    me, key = cluster.topology.self_url, planned.call.key

    def missed(node: str) -> None:
        if node != me:
            keep(node, key, record)

    return missed


# This node's replica answering a group of calls (ReplicaApi.answer).
OwnReplica = Callable[[list[batch.Call]], list[batch.Answer]]
# Send a record to a node as an internal PUT; its answer to the callback.
Repair = Callable[[str, Record, OnAnswer], None]
# A replica failed a write: keep a hint for it (hints.py).
Missed = Callable[[str], None]


def replica_record(read: bool, status: int, body: bytes) -> tuple[bool, Record | None]:
    """Did a replica's answer count, and with which record? Only answers
    that say what the replica holds count: to a read (internal GET), 200
    with a record or 404; to a write (internal PUT), 201 (stored) or 200
    with the newer record it kept. Any other status, or a body that is no
    record, is a failed replica."""
    if status == (404 if read else 201):
        return True, None
    if status == 200:
        try:
            return True, decode(body)
        except ValueError:
            return False, None
    return False, None


class Quorum:
    """The answers of one coordinated request, counted on the SelectorThread.

    The client is answered by the first ``ack`` successes or by 504 once
    ``ack`` is out of reach. A GET answers with the freshest record among
    those ``ack`` answers, after the blocking read repair (docs/cluster.md,
    "One replicated request"); replicas that answer later are repaired in the background.
    """

    def __init__(
        self,
        client: Responder,
        method: bytes,
        ack: int,
        replicas: int,
        repair: Repair,
        observe: Callable[[int], None],
        missed: Missed | None = None,
    ) -> None:
        self._client = client
        self._missed = missed
        self._method = method
        self._ack = ack
        self._replicas = replicas
        self._repair = repair
        self._observe = observe
        self._succeeded = 0
        self._failed = 0
        self._read: dict[str, Record | None] = {}  # GET: what each node answered
        # The last record decoded and the bytes it came as: replicas mostly
        # answer the same record, and the same bytes are decoded once, into
        # the same object (``_agreed`` then compares objects, not versions).
        self._last_body: bytes | None = None
        self._last_record: Record | None = None
        self._given: dict[str, Record] = {}  # GET: what each node was repaired with
        self._repairing = 0  # blocking repairs not yet answered
        self._freshest: Record | None = None  # what the client is answered with
        self._decided = False  # the answer is chosen (or given)

    def on_reply(self, node: str, status: int, body: bytes, error: str) -> None:
        """One replica's answer (status 0: the call failed, ``error`` says why)."""
        if status == 200 and body == self._last_body:
            ok, record = True, self._last_record  # seen, and shown to the clock, already
        else:
            ok, record = replica_record(self._method == b"GET", status, body)
            if record is not None:
                self._observe(record.version)
                self._last_body, self._last_record = body, record
        if ok:
            self._succeeded += 1
            if self._method == b"GET":
                self._read[node] = record
        else:
            self._failed += 1
            log.debug("replica %s failed: status %d %s", node, status, error)
            if self._missed is not None and (status == 0 or status >= 500):
                self._missed(node)  # a write it may not have: a hint
        if not self._decided:
            if self._succeeded >= self._ack:
                self._decide()
            elif self._failed > self._replicas - self._ack:
                self._finish(NOT_ENOUGH_REPLICAS)
        if self._succeeded + self._failed == self._replicas:
            self._repair_late()

    def _decide(self) -> None:
        """``ack`` replicas succeeded: answer, after repairing those of them
        that hold an older record (reads with ``ack`` > 1)."""
        self._decided = True
        if self._method == b"PUT":
            self._finish(CREATED)
            return
        if self._method == b"DELETE":
            self._finish(ACCEPTED)
            return
        agreed = _agreed(self._read.values())
        if agreed is not _DISAGREE:  # the common case: nothing to compare, nobody stale
            self._freshest = agreed
            self._finish(self._success())
            return
        freshest = self._freshest = _freshest(self._read.values())
        if freshest is None or self._ack == 1:
            self._finish(self._success())
            return
        stale = [node for node, record in self._read.items() if _older(record, freshest)]
        if not stale:
            self._finish(self._success())
            return
        self._repairing = len(stale)
        for node in stale:
            self._given[node] = freshest
            count("read_repairs")
            self._repair(node, freshest, self._repaired)

    def _repaired(self, node: str, status: int, body: bytes, error: str) -> None:
        """A blocking repair's answer: the client is answered once every
        stale replica it read from holds the record, or 504 if one fails
        (without it, a later quorum read might not see what this one
        returns)."""
        ok, record = replica_record(False, status, body)
        if record is not None:
            self._observe(record.version)
        if self._repairing == 0:
            return  # a failed repair answered the client already
        if not ok:
            log.debug("read repair of %s failed: status %d %s", node, status, error)
            self._repairing = 0
            self._finish(NOT_ENOUGH_REPLICAS)
            return
        self._repairing -= 1
        if self._repairing == 0:
            self._finish(self._success())

    def _repair_late(self) -> None:
        """Every replica has answered: those holding an older record than
        the newest any of them returned get it, in the background."""
        if not self._given and _agreed(self._read.values()) is not _DISAGREE:
            return  # every replica answered the same record, and none was repaired
        newest = _freshest(self._read.values())
        if newest is None:
            return
        for node, record in self._read.items():
            held = self._given.get(node, record)
            if _older(held, newest):
                self._given[node] = newest
                count("read_repairs")
                self._repair(node, newest, ignore)

    def _success(self) -> Response:
        record = self._freshest
        if record is None or record.value is None:
            return NOT_FOUND
        return Response(200, record.value)

    def _finish(self, response: Response) -> None:
        self._decided = True
        self._client.respond(response)


# What ``_agreed`` returns when the replicas answered different records.
_DISAGREE = Record(-1, None, 0)


def _agreed(records: Iterable[Record | None]) -> Record | None:
    """The record every answer holds when they are all the same object
    (``Quorum.on_reply`` decodes equal bytes once), else ``_DISAGREE``."""
    answers = iter(records)
    first = next(answers, None)
    return first if all(record is first for record in answers) else _DISAGREE


def _freshest(records: Iterable[Record | None]) -> Record | None:
    best: Record | None = None
    for record in records:
        if record is not None and (best is None or rank(record) > rank(best)):
            best = record
    return best


def _older(record: Record | None, than: Record) -> bool:
    return record is None or rank(record) < rank(than)


def ignore(node: str, status: int, body: bytes, error: str) -> None:
    """The answer to a background read repair: nobody waits for it."""


class Coordinator:
    """The executor of a cluster node (the module's docstring)."""

    def __init__(
        self,
        local: Executor,
        own: OwnReplica,
        cluster: Cluster,
        cluster_range: RangeStarter | None = None,
    ) -> None:
        """``cluster_range`` None: ``/v0/entities`` is the node's own range."""
        self._local = local
        self._own = own
        self._cluster = cluster
        self._cluster_range = cluster_range
        self._self_url = cluster.topology.self_url
        self._calls: dict[SelectorThread, RoundCalls] = {}

    def is_full(self) -> bool:
        return self._local.is_full()

    def resume(self, cycle: Responder) -> None:
        self._local.resume(cycle)

    def run(self, task: Task) -> None:
        self._local.run(task)

    def execute(self, request: Request, cycle: Responder) -> None:
        if not coordinated(request):
            if self._cluster_range is not None and cluster_range(request):
                self._cluster_range(request, cycle.respond)
                return
            self._local.execute(request, cycle)
            return
        planned = plan(request, self._cluster)
        if isinstance(planned, Response):
            cycle.respond(planned)
            return
        reactor = SelectorThread.current()
        key = planned.call.key

        def repair(node: str, record: Record, on_reply: OnAnswer) -> None:
            log.debug("read repair: %s gets version %d", node, record.version)
            self._ask(reactor, node, batch.Call(key, record.encode()), on_reply)

        quorum = Quorum(
            cycle,
            request.method,
            planned.ack,
            len(planned.replicas),
            repair,
            self._cluster.clock.observe,
            missed_writes(self._cluster, planned),
        )
        for node in planned.replicas:
            self._ask(reactor, node, planned.call, quorum.on_reply)

    def _ask(
        self, reactor: SelectorThread, node: str, call: batch.Call, on_reply: OnAnswer
    ) -> None:
        """Make ``call`` to one replica, with this SelectorThread's other
        calls of the round (batching.py): this node's own through its
        executor (a call into its storage), another over HTTP. ``on_reply``
        runs on this thread."""
        calls = self._calls.get(reactor)
        if calls is None:
            calls = self._calls[reactor] = self._round_calls(reactor)
        calls.call(node, call, on_reply)

    def _round_calls(self, reactor: SelectorThread) -> RoundCalls:
        """The calls of ``reactor`` to every replica, gathered per round."""
        cluster = self._cluster
        pool = cluster.peer_pool(reactor)
        senders = {
            node: over_http(pool, address, cluster.headers)
            for node, address in cluster.addresses.items()
            if node != self._self_url
        }
        senders[self._self_url] = self._own_replica(reactor)
        return RoundCalls(
            reactor.at_round_end, senders, cluster.max_body + RECORD_OVERHEAD, MAX_IN_FLIGHT
        )

    def _own_replica(self, reactor: SelectorThread) -> Send:
        """How ``reactor`` calls this node's own replica: the calls, as they
        are, to the replica's API where the executor runs requests (this
        thread in sync mode, a PayloadThread in async); the answers back on
        ``reactor``."""
        own = self._own

        def send(calls: list[batch.Call], on_answers: OnAnswers) -> None:
            def task() -> None:
                answers = own(calls)
                if threading.get_ident() == reactor.thread_id:
                    on_answers(answers, "")
                else:  # a PayloadThread ran it
                    reactor.call_soon(lambda: on_answers(answers, ""))

            self._local.run(task)

        return send


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
    ``Quorum`` counts the answers and repairs what a read found stale, with
    calls of the same kind: the client waits for them too."""

    def __init__(
        self,
        handle: Callable[[Request], Response],
        cluster: Cluster,
        cluster_range: Callable[[Request], Response],
    ) -> None:
        self._handle = handle  # the node's own Api.handle
        self._cluster = cluster
        self._cluster_range = cluster_range  # waits for the range's head (ranges.py)
        self._peers = BlockingPeerCalls(cluster)

    def handle(self, request: Request) -> Response:
        if not coordinated(request):
            if cluster_range(request):
                return self._cluster_range(request)
            return self._handle(request)
        cluster = self._cluster
        planned = plan(request, cluster)
        if isinstance(planned, Response):
            return planned
        key = planned.call.key

        def repair(node: str, record: Record, on_reply: OnAnswer) -> None:
            on_reply(node, *self._ask(node, batch.Call(key, record.encode())))

        answer = Captured()
        quorum = Quorum(
            answer, request.method, planned.ack, len(planned.replicas), repair,
            cluster.clock.observe, missed_writes(cluster, planned),
        )  # fmt: skip
        for node in planned.replicas:
            quorum.on_reply(node, *self._ask(node, planned.call))
        assert answer.response is not None  # every replica answered or failed
        return answer.response

    def _ask(self, node: str, call: batch.Call) -> tuple[int, bytes, str]:
        """A call to one replica as its internal request: this node's own
        through its API, another's over HTTP. (status, body, error)."""
        cluster = self._cluster
        internal = Request(*lone_request(call), cluster.headers)
        if node == cluster.topology.self_url:
            own = self._handle(internal)
            return own.status, own.body, ""
        return self._peers.call(node, internal)


# Which node of which cluster a data directory belongs to: a file beside
# the format marker, written the first time a node serves it.
NODE_FILE = "SELECTORKV-NODE"


def claim_directory(data: str, topology: Topology) -> None:
    """Refuse to serve a cluster node's data as another node: its records
    are the replicas of the keys placed on the node it was (ValueError,
    with what to do). A changed node list is allowed, and logged: keys that
    move stay where they were until written again (there is no
    rebalancing, docs/cluster.md)."""
    marker = Path(data) / NODE_FILE
    mine = f"{topology.self_url}\n{topology.cluster_id}\n"
    if not marker.exists():
        marker.write_text(mine)
        return
    was_self, _, rest = marker.read_text().partition("\n")
    was_cluster = rest.strip()
    if was_self != topology.self_url:
        raise ValueError(
            f"{data} holds the data of node {was_self}, not of --self {topology.self_url}: "
            "start that node on it, or give this one its own --data"
        )
    if was_cluster != topology.cluster_id:
        log.warning(
            "the node list changed since %s was last served (cluster id %s, now %s): keys "
            "placed elsewhere now stay where they are until they are written again",
            data, was_cluster, topology.cluster_id,
        )  # fmt: skip
        marker.write_text(mine)


class BlockingPeerCalls:
    """Internal requests to peers over blocking keep-alive connections, one
    set per thread: the calls of a ``BlockingCoordinator``, and of the
    threads of anti-entropy repair (antientropy.py)."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._connections = threading.local()  # each thread's keep-alive connections

    def close(self) -> None:
        """Close the calling thread's connections (a thread that ends)."""
        pool: dict[str, http.client.HTTPConnection] = self._connections.__dict__.pop("by_node", {})
        for conn in pool.values():
            conn.close()

    def call(self, node: str, internal: Request) -> tuple[int, bytes, str]:
        """One blocking request to a peer: (status, body, error)."""
        cluster = self._cluster
        pool: dict[str, http.client.HTTPConnection] = self._connections.__dict__.setdefault(
            "by_node", {}
        )
        started = time.perf_counter()
        while True:
            conn = pool.get(node)
            reused = conn is not None
            if conn is None:
                host, port = cluster.addresses[node]
                source = (cluster.source, 0) if cluster.source is not None else None
                conn = pool[node] = http.client.HTTPConnection(
                    host, port, timeout=cluster.peer_timeout, source_address=source
                )
            try:
                conn.request(
                    internal.method.decode(), internal.target.decode(), body=internal.body,
                    headers={name.decode(): value.decode() for name, value in cluster.headers},
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
        current().peer_call(node, time.perf_counter() - started, answer[2])
        return answer
