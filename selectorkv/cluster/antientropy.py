"""Anti-entropy repair: two nodes compare hash trees of the records they
should both hold and exchange the records of the segments that differ, so
that a key nobody reads, or a whole disk lost, comes back without a client.

A repair is driven by one node (``selectorkv repair --node URL`` asks it,
``POST /v0/internal/repair``), with each of its peers in turn:

1. both build the tree (merkle.py) of their records of the pair: the keys
   whose replicas (the record's own count, records.py) include both nodes;
   the peer builds its own when asked (``POST /v0/internal/repair/tree``);
2. the driver walks the trees from the root, asking the peer for the
   hashes it needs (``GET /v0/internal/repair/tree``), down to the
   segments that differ;
3. each pushes its records of those segments to the other as internal
   batches (the same request a coordinator sends): the receiver keeps the
   newer record and answers with its own when that is newer, which the
   sender stores. The peer pushes first, when asked
   (``POST /v0/internal/repair/push``); then the driver, only the
   segments where it still differs from what the peer had.

A repair that reached a key's every replica then purges its tombstones
older than the grace period (tombstones.py). ``--repair-interval`` runs a
repair in the background, every so often (``run_every``).

The scans (a tree, a push) run on threads of their own, paced: after each
``CHUNK`` records a scan sleeps so that it takes at most ``share`` of a
CPU, and the GIL goes back to the SelectorThreads in between. Memory is the
trees' (merkle.py) and one batch, whatever the data's size. A node that
receives a push stores what it is sent through its replica's usual rules,
so a repair cannot make a copy that a write would not have made.
docs/cluster.md, "Anti-entropy", has the rules and the figures.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from selectorkv.cluster.merkle import (
    DEPTH,
    HASH_BYTES,
    SEGMENTS,
    HashTree,
    differing_segments,
    segment_of,
)
from selectorkv.cluster.placement import Topology
from selectorkv.cluster.replication import BlockingPeerCalls, Cluster
from selectorkv.cluster.tombstones import PURGE, TombstonePurge
from selectorkv.http.exchange import Request, Response
from selectorkv.kv import batch
from selectorkv.kv.api import INTERNAL_BATCH, JSON_TYPE, BadQuery, query_param
from selectorkv.kv.records import ReplicaStore, replicas_of, version_of
from selectorkv.reactor.stats import Family, StatsThread

log = logging.getLogger("selectorkv.cluster.antientropy")

REPAIR = b"/v0/internal/repair"
TREE = b"/v0/internal/repair/tree"
PUSH = b"/v0/internal/repair/push"

GET_OR_POST = Response(405, headers=((b"allow", b"GET, POST"),))
BAD_PEER = Response(400, b"peer: one of the other nodes' URLs\n")

CHUNK = 32  # records a scan handles between two pauses
# Hashes asked for in one request: their indices (up to 4 digits and a
# comma each) keep the request's head under 2 KiB.
HASHES_PER_CALL = 256
POLL = 0.05  # seconds between two looks at a peer's work
PEER_WORK_TIMEOUT = 600.0  # the longest a driver waits for a peer's tree or push
# Background repairs start every interval give or take this share of it, so
# that nodes started together do not all repair at once.
JITTER = 0.1


class Stopping(Exception):
    """The node is stopping: a scan or a wait gives up."""


def pair_of(key: bytes, raw: bytes, topology: Topology, me: str, peer: str) -> bool:
    """Should ``me`` and ``peer`` both hold the record ``raw`` of ``key``?"""
    replicas = min(replicas_of(raw), len(topology.nodes))
    nodes = topology.replicas(key, replicas)
    return me in nodes and peer in nodes


class Pacer:
    """Holds a scan to ``share`` of a CPU: after each CHUNK records it
    sleeps for as long as the chunk took times (1 / share - 1). A node
    that stops (``stopping`` set) ends the scan there: Stopping."""

    def __init__(self, share: float, stopping: threading.Event) -> None:
        self._rest = 1 / share - 1
        self._stopping = stopping
        self._count = 0
        self._started = time.perf_counter()

    def tick(self) -> None:
        self._count += 1
        if self._count == CHUNK:
            worked = time.perf_counter() - self._started
            if self._stopping.wait(worked * self._rest):
                raise Stopping
            self._count = 0
            self._started = time.perf_counter()


@dataclass
class PushState:
    """A push of one node's records of some segments to a peer."""

    state: str = "running"  # running, done, failed
    sent: int = 0  # records sent
    newer: int = 0  # records the peer answered with, newer than ours, stored here
    sent_bytes: int = 0  # the keys and records sent
    newer_bytes: int = 0  # the keys and records answered newer
    error: str = ""


@dataclass
class PeerReport:
    """What a repair with one peer compared and exchanged."""

    peer: str
    state: str = "waiting"  # waiting, trees, comparing, exchanging, done, failed
    records: int = 0  # in this node's tree of the pair
    hashes_compared: int = 0
    segments_differing: int = 0
    sent: int = 0  # records this node sent the peer
    received: int = 0  # records the peer sent, plus newer ones it answered with
    sent_bytes: int = 0  # their keys and records, as sent
    received_bytes: int = 0
    error: str = ""


@dataclass
class RepairReport:
    """The state of this node's last repair (``GET /v0/internal/repair``)."""

    state: str = "never"  # never, running, done, failed
    started: float = 0.0  # time.time()
    seconds: float = 0.0
    peers: list[PeerReport] = field(default_factory=list)
    tombstones_purged: int = 0
    purge_error: str = ""


class AntiEntropy:
    """A node's part in anti-entropy repair: the peer side (trees and pushes
    built when a driver asks) and the driver (``repair``)."""

    def __init__(
        self,
        replica: ReplicaStore,
        cluster: Cluster,
        share: float,
        tombstone_grace: float,
    ) -> None:
        self._replica = replica
        self._cluster = cluster
        self._share = share
        self._peers = BlockingPeerCalls(cluster)
        self._purge = TombstonePurge(replica, cluster, self._peers, tombstone_grace)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[StatsThread] = []
        self._trees: dict[str, HashTree | None] = {}  # peer -> its pair's tree (None: building)
        self._pushes: dict[str, PushState] = {}  # peer -> this node's push to it
        self.report = RepairReport()
        self._runs = {"done": 0, "failed": 0}

    # -- the internal endpoints (any executor thread; each returns at once) --

    def routes(self) -> dict[bytes, Callable[[Request, bytes], Response]]:
        return {
            REPAIR: self._repair_request,
            TREE: self._with_peer(self._tree_request),
            PUSH: self._with_peer(self._push_request),
            PURGE: self._purge.route,
        }

    def metrics(self) -> list[Family]:
        """For /metrics: repairs this node drove, and tombstones it purged."""
        return [
            Family(
                "repairs_total",
                "counter",
                "Anti-entropy repairs this node drove, by result (failed: a peer not reached).",
                [(f'{{result="{result}"}}', float(n)) for result, n in sorted(self._runs.items())],
            ),
            Family(
                "tombstones_purged_total",
                "counter",
                "Tombstones deleted here: older than --tombstone-grace and held by every replica.",
                [("", float(self._purge.purged))],
            ),
        ]

    def run_every(self, interval: float) -> None:
        """Repair in the background, every ``interval`` seconds (give or
        take JITTER of it), until ``stop``; a repair asked for meanwhile
        (``selectorkv repair``) counts as the round's."""

        def loop() -> None:
            while not self._stopping.wait(interval * random.uniform(1 - JITTER, 1 + JITTER)):
                if self._begin():
                    self._repair_all()

        log.info("anti-entropy: a background repair every %g s", interval)
        self._thread("background", loop)

    def stop(self) -> None:
        """End the scans and the background repair, before the storage
        closes: each gives up at its next chunk or wait."""
        self._stopping.set()
        for thread in list(self._threads):
            thread.join(timeout=self._cluster.peer_timeout + 1.0)

    def _with_peer(
        self, handler: Callable[[Request, bytes, str], Response]
    ) -> Callable[[Request, bytes], Response]:
        """A peer's endpoint: GET or POST, with ``peer`` one of the other nodes."""

        def route(request: Request, query: bytes) -> Response:
            if request.method not in (b"GET", b"POST"):
                return GET_OR_POST
            peer = self._peer_of(query)
            return BAD_PEER if peer is None else handler(request, query, peer)

        return route

    def _repair_request(self, request: Request, query: bytes) -> Response:
        if request.method == b"GET":
            with self._lock:
                return Response(200, json.dumps(asdict(self.report)).encode(), JSON_TYPE)
        if request.method != b"POST":
            return GET_OR_POST
        if not self.start_repair():
            return Response(409, b"a repair is running already\n")
        return Response(202, b"repair started\n")

    def _tree_request(self, request: Request, query: bytes, peer: str) -> Response:
        if request.method == b"POST":
            with self._lock:
                building = peer in self._trees and self._trees[peer] is None
                if not building:
                    self._trees[peer] = None
            if not building:
                self._thread(f"tree for {peer}", lambda: self._build_tree_for(peer))
            return Response(202, b"building\n")
        with self._lock:
            if peer not in self._trees:
                return Response(404, b"no tree for that peer: POST first\n")
            tree = self._trees[peer]
        if tree is None:
            return Response(409, b"building\n")
        try:
            level = int(query_param(query, b"level") or b"")
            nodes = [int(index) for index in (query_param(query, b"nodes") or b"").split(b",")]
            return Response(200, b"".join(tree.hashes(level, nodes)))
        except (ValueError, BadQuery):
            return Response(400, b"level: 0..3, nodes: indices of that level, comma-separated\n")

    def _push_request(self, request: Request, query: bytes, peer: str) -> Response:
        if request.method == b"GET":
            with self._lock:
                state = self._pushes.get(peer)
            if state is None:
                return Response(404, b"no push to that peer\n")
            return Response(200, json.dumps(asdict(state)).encode(), JSON_TYPE)
        try:
            segments = parse_segments(request.body)
        except ValueError as exc:
            return Response(400, f"segments: {exc}\n".encode())
        with self._lock:
            if peer in self._pushes and self._pushes[peer].state == "running":
                return Response(409, b"a push to that peer is running already\n")
            state = self._pushes[peer] = PushState()
        self._thread(f"push to {peer}", lambda: self._push(peer, segments, state))
        return Response(202, b"pushing\n")

    def _peer_of(self, query: bytes) -> str | None:
        try:
            raw = query_param(query, b"peer")
        except BadQuery:
            return None
        peer = raw.decode(errors="replace") if raw else ""
        topology = self._cluster.topology
        return peer if peer in topology.nodes and peer != topology.self_url else None

    def _thread(self, what: str, work: Callable[[], object]) -> None:
        def run() -> None:
            try:
                work()
            except Stopping:
                log.info("anti-entropy: %s stopped: the node is stopping", what)
            except Exception:
                log.exception("anti-entropy: %s failed", what)

        thread = StatsThread(target=run, name=f"Repair: {what}", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    # -- the scans --

    def _scan(self) -> Iterator[tuple[bytes, bytes]]:
        """This node's records, paced."""
        pacer = Pacer(self._share, self._stopping)
        records = self._replica.records(b"", None)
        try:
            for key, raw in records:
                pacer.tick()
                yield key, raw
        finally:
            records.close()  # the storage cursor, now

    def _records(self, peer: str) -> Iterator[tuple[bytes, bytes]]:
        """This node's records that ``peer`` should hold too, paced."""
        topology = self._cluster.topology
        me = topology.self_url
        for key, raw in self._scan():
            if pair_of(key, raw, topology, me, peer):
                yield key, raw

    def _build_tree_for(self, peer: str) -> None:
        """A tree a peer asked for; if it cannot be built (the storage
        failed), none is kept, and the peer's next look gets 404, not a
        tree forever being built."""
        try:
            self._build_tree(peer)
        except Exception:
            with self._lock:
                self._trees.pop(peer, None)
            raise

    def _build_tree(self, peer: str) -> HashTree:
        started = time.monotonic()
        tree = HashTree()
        for key, raw in self._records(peer):
            tree.add(key, raw)
        with self._lock:
            self._trees[peer] = tree
        log.info(
            "anti-entropy: tree of %d records shared with %s built in %.1f s",
            tree.entries, peer, time.monotonic() - started,
        )  # fmt: skip
        return tree

    def _push(self, peer: str, segments: set[int], state: PushState) -> None:
        """Send the records of ``segments`` that ``peer`` should hold, in
        batches; store those it answers with a newer record of its own."""
        calls: list[batch.Call] = []
        size = 0
        limit = self._cluster.max_body
        try:
            for key, raw in self._records(peer):
                if segment_of(key) not in segments:
                    continue
                call = batch.Call(key, raw)
                if calls and (
                    len(calls) == batch.MAX_CALLS or size + batch.call_size(call) > limit
                ):
                    self._send(peer, calls, state)
                    calls, size = [], 0
                calls.append(call)
                size += batch.call_size(call)
            if calls:
                self._send(peer, calls, state)
        except (OSError, ValueError) as exc:
            state.error, state.state = str(exc), "failed"
            log.warning("anti-entropy: push to %s failed: %s", peer, exc)
            return
        state.state = "done"

    def _send(self, peer: str, calls: list[batch.Call], state: PushState) -> None:
        body = batch.encode_calls(calls)
        status, answer, error = self._peers.call(
            peer, Request(b"POST", INTERNAL_BATCH, body, self._cluster.headers)
        )
        if status != 200:
            raise OSError(f"{peer} answered a batch with {status} {error or answer[:80]!r}")
        newer = []
        for call, (code, record) in zip(
            calls, batch.decode_answers(answer, len(calls)), strict=True
        ):
            if code == 200:  # the peer holds a newer record: ours is stale
                newer.append((call.key, version_of(record), record))
                state.newer_bytes += len(call.key) + len(record)
            elif code != 201:
                raise OSError(f"{peer} refused a record with {code}")
        if newer:
            self._replica.apply_all(newer)
        state.sent += len(calls)
        state.sent_bytes += sum(len(key) + len(raw or b"") for key, raw in calls)
        state.newer += len(newer)

    # -- the driver --

    def start_repair(self) -> bool:
        """Repair with every peer in turn, on a thread of its own; False if
        a repair is running already."""
        if not self._begin():
            return False
        self._thread("driver", self._repair_all)
        return True

    def _begin(self) -> bool:
        """A new report, running; False if a repair is running already."""
        with self._lock:
            if self.report.state == "running":
                return False
            peers = [
                node
                for node in self._cluster.topology.nodes
                if node != self._cluster.topology.self_url
            ]
            self.report = RepairReport("running", time.time(), 0.0, [PeerReport(p) for p in peers])
        return True

    def _repair_all(self) -> None:
        report = self.report
        started = time.monotonic()
        try:
            for peer in report.peers:
                try:
                    self._repair_with(peer)
                    peer.state = "done"
                except (OSError, ValueError, TimeoutError) as exc:
                    peer.state, peer.error = "failed", str(exc)
                    log.warning("anti-entropy: repair with %s failed: %s", peer.peer, exc)
            # Every replica of a key this repair reached holds what this
            # node holds of it: its old tombstones may go (tombstones.py).
            reached = {peer.peer for peer in report.peers if peer.state == "done"}
            try:
                report.tombstones_purged = self._purge.purge(
                    self._purge.candidates(self._scan(), reached)
                )
            except (OSError, ValueError) as exc:
                report.purge_error = str(exc)
                log.warning("anti-entropy: purging tombstones failed: %s", exc)
        finally:
            report.seconds = time.monotonic() - started
            failed = [peer.peer for peer in report.peers if peer.state != "done"]
            report.state = "failed" if failed or report.purge_error else "done"
            self._runs[report.state] += 1
        log.info(
            "anti-entropy: repair %s in %.1f s: %s; %d tombstones purged",
            report.state, report.seconds,
            "; ".join(
                f"{p.peer} {p.segments_differing} segments differed, {p.sent} records sent, "
                f"{p.received} received" + (f" ({p.error})" if p.error else "")
                for p in report.peers
            ),
            report.tombstones_purged,
        )  # fmt: skip

    def _repair_with(self, report: PeerReport) -> None:
        peer = report.peer
        me = self._cluster.topology.self_url.encode()
        target = TREE + b"?peer=" + me
        report.state = "trees"
        self._ask(peer, b"POST", target, expect=202)
        mine = self._build_tree(peer)
        report.records = mine.entries

        def theirs(level: int, nodes: list[int]) -> list[bytes]:
            hashes = []
            for at in range(0, len(nodes), HASHES_PER_CALL):  # a request head stays small
                listed = b",".join(b"%d" % n for n in nodes[at : at + HASHES_PER_CALL])
                body = self._await(peer, b"GET", target + b"&level=%d&nodes=%s" % (level, listed))
                hashes += [body[i : i + HASH_BYTES] for i in range(0, len(body), HASH_BYTES)]
            return hashes

        report.state = "comparing"
        differing, report.hashes_compared = differing_segments(mine, theirs)
        report.segments_differing = len(differing)
        if not differing:
            return
        report.state = "exchanging"
        # The peer's records first, then this node's: by then this node
        # holds what the peer had newer, and its own push carries back
        # only what the peer lacks (a record the receiver holds already is
        # answered 201, not sent back).
        listed = b",".join(b"%d" % s for s in differing)
        self._ask(peer, b"POST", PUSH + b"?peer=" + me, body=listed, expect=202)
        their = json.loads(self._await(peer, b"GET", PUSH + b"?peer=" + me, running="running"))
        if their["state"] != "done":
            raise OSError(f"the peer's push failed: {their['error']}")
        # A segment this node now holds as the peer held it needs nothing
        # from here: the peer has all of it (the common case of a node that
        # was behind). The rest, where this node has records the peer
        # lacked, goes.
        mine = self._build_tree(peer)
        ours = {s for s, hash in differing.items() if mine.hashes(DEPTH, [s])[0] != hash}
        own = PushState()
        if ours:
            self._push(peer, ours, own)
        if own.state == "failed":
            raise OSError(own.error)
        # Each side also sends back, as answers, the records it holds newer.
        report.sent = own.sent + their["newer"]
        report.received = their["sent"] + own.newer
        report.sent_bytes = own.sent_bytes + their["newer_bytes"]
        report.received_bytes = their["sent_bytes"] + own.newer_bytes

    def _ask(
        self, peer: str, method: bytes, target: bytes, body: bytes = b"", expect: int = 200
    ) -> bytes:
        status, answer, error = self._peers.call(
            peer, Request(method, target, body, self._cluster.headers)
        )
        if status != expect:
            raise OSError(
                f"{method.decode()} {target.decode()[:100]}: {status} {error or answer[:80]!r}"
            )
        return answer

    def _await(self, peer: str, method: bytes, target: bytes, running: str = "") -> bytes:
        """Ask until the peer's work is done: a 409 (a tree still being
        built), or a JSON state ``running``, means ask again."""
        deadline = time.monotonic() + PEER_WORK_TIMEOUT
        while True:
            status, answer, error = self._peers.call(
                peer, Request(method, target, b"", self._cluster.headers)
            )
            waiting = status == 409 or (
                status == 200 and running and json.loads(answer).get("state") == running
            )
            if status == 200 and not waiting:
                return answer
            if not waiting:
                raise OSError(f"{target.decode()[:100]}: {status} {error or answer[:80]!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{peer} took over {PEER_WORK_TIMEOUT:.0f} s")
            if self._stopping.wait(POLL):
                raise Stopping


def parse_segments(body: bytes) -> set[int]:
    """Segment numbers, comma-separated; ValueError for anything else."""
    try:
        segments = {int(part) for part in body.split(b",")}
    except ValueError:
        raise ValueError("comma-separated segment numbers") from None
    if not segments or not all(0 <= s < SEGMENTS for s in segments):
        raise ValueError(f"each of 0..{SEGMENTS - 1}")
    return segments
