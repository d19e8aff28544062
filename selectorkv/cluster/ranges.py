"""The cluster-wide range: ``GET /v0/entities?start=&end=`` on a cluster
node shows the cluster's data, not the node's.

Placement spreads any range of keys over every node, so the coordinator
merges the ranges of all of them (``ClusterRange``), on a thread of its own:

1. it asks each node, itself included, for its records of the range as
   stored, tombstones and versions included (``GET
   /v0/internal/entities``, a stream of internal-batch calls, kv/batch.py);
   a node that cannot be asked makes the answer 504 before anything is
   sent, since the range could not be shown complete;
2. it merges the streams in key order; of each key's records the freshest
   wins (records.py, ``rank``), a tombstone shows nothing, and each key
   comes once;
3. a replica of the key (by the placement and the record's own replica
   count) that showed an older record, or none, is sent the freshest, in
   batches, as a read repair sends it (the course's RepairingMerger);
4. the entries go to the client's connection through a ``Channel`` of a
   few batches: when it is full the merge waits, stops reading its peers,
   and TCP holds them back in turn; when it is empty the connection's
   stream pauses (http/exchange.py, ``Pause``) until the merge has more.

Memory is the channel, one read buffer per peer and a record per node,
whatever the range's size. A peer that fails once the head has gone out
cuts the client's connection: a chunked body without its last chunk, never
a short success. ``local=true`` asks for the node's own range (the
course's stage 6), which the node's API serves as a single node would.
docs/cluster.md, "The cluster-wide range", has the figures.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from urllib.parse import quote_from_bytes

from selectorkv.cluster.replication import BlockingPeerCalls, Cluster
from selectorkv.http.exchange import Pause, Request, Response, Stream
from selectorkv.kv import batch
from selectorkv.kv.api import BAD_RANGE, INTERNAL_BATCH, range_bounds
from selectorkv.kv.records import (
    HEADER_BYTES,
    VALUE,
    ReplicaStore,
    decode,
    rank,
    replicas_of,
    version_of,
)
from selectorkv.reactor.stats import Family, StatsThread

log = logging.getLogger("selectorkv.cluster.ranges")

INTERNAL_ENTITIES = b"/v0/internal/entities"
PIECE_BYTES = 16 * 1024  # a node's stream of records, and the merge's batches of entries
READ_BYTES = 64 * 1024  # the most read from a peer's stream at once
CHANNEL_BATCHES = 2  # batches of entries waiting for the client's connection
MAX_RANGES = 4  # cluster-wide ranges a node merges at once; over it, 503
NO_HEAD = Response(504, b"the cluster-wide range did not start in time\n")
BUSY = Response(
    503, b"too many cluster-wide ranges at once; try again\n", ((b"retry-after", b"1"),)
)


def record_pieces(records: Iterator[tuple[bytes, bytes]]) -> Generator[bytes, None, None]:
    """A node's records as its internal stream: calls of an internal batch
    (kv/batch.py), about PIECE_BYTES a piece."""
    parts: list[bytes] = []
    size = 0
    for key, raw in records:
        part = batch.encode_call(batch.Call(key, raw))
        parts.append(part)
        size += len(part)
        if size >= PIECE_BYTES:
            yield b"".join(parts)
            parts, size = [], 0
    if parts:
        yield b"".join(parts)


class Channel:
    """Batches of entries from the merge thread to the connection's
    stream: at most ``capacity`` wait; the merge waits when it is full, the
    stream pauses when it is empty. Then the end, or the error that ended
    the merge."""

    def __init__(self, capacity: int = CHANNEL_BATCHES) -> None:
        self._capacity = capacity
        self._batches: deque[list[bytes]] = deque()
        self._cond = threading.Condition()
        self._wake: Callable[[], None] | None = None
        self._end: BaseException | bool = False  # True: done; an exception: failed
        self.left = False  # the client is gone: the merge stops

    def put(self, entries: list[bytes]) -> bool:
        """On the merge thread: False when the client has left."""
        with self._cond:
            while len(self._batches) >= self._capacity and not self.left:
                self._cond.wait()
            if self.left:
                return False
            self._batches.append(entries)
            wake, self._wake = self._wake, None
        if wake is not None:
            wake()
        return True

    def finish(self, error: BaseException | None = None) -> None:
        """On the merge thread: no more batches (``error``: it failed)."""
        with self._cond:
            self._end = error or True
            wake, self._wake = self._wake, None
        if wake is not None:
            wake()

    def stream(self) -> Stream:
        """The connection's side: the entries, a Pause while none waits."""
        try:
            while True:
                with self._cond:
                    entries = self._batches.popleft() if self._batches else None
                    end = self._end
                    self._cond.notify()
                if entries is not None:
                    yield from entries
                elif isinstance(end, BaseException):
                    raise end  # the connection is cut (connection.py)
                elif end:
                    return
                else:
                    yield Pause(self._notify)
        finally:
            with self._cond:
                self.left = True
                self._cond.notify()

    def _notify(self, wake: Callable[[], None]) -> None:
        with self._cond:
            ready = bool(self._batches) or self._end is not False
            if not ready:
                self._wake = wake
        if ready:
            wake()


class PeerStream:
    """A peer's records of the range, read as they arrive over a blocking
    connection of the merge thread's own."""

    def __init__(self, cluster: Cluster, node: str, target: bytes) -> None:
        host, port = cluster.addresses[node]
        source = (cluster.source, 0) if cluster.source is not None else None
        self.node = node
        self._conn = http.client.HTTPConnection(
            host, port, timeout=cluster.peer_timeout, source_address=source
        )
        self._target = target
        self._headers = {name.decode(): value.decode() for name, value in cluster.headers}
        self._reply: http.client.HTTPResponse | None = None

    def open(self) -> None:
        """Send the request and read the head; OSError unless it is a 200."""
        try:
            self._conn.request("GET", self._target.decode(), headers=self._headers)
            reply = self._conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise OSError(f"{self.node}: {type(exc).__name__}: {exc}") from exc
        if reply.status != 200:
            raise OSError(f"{self.node} answered {reply.status} {reply.read(200)!r}")
        self._reply = reply

    def records(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, record) in key order; OSError if the stream breaks."""
        assert self._reply is not None
        rest = b""
        try:
            while data := self._reply.read1(READ_BYTES):
                calls, rest = batch.split_calls(rest + data)
                for key, raw in calls:
                    if raw is None:
                        raise ValueError("a call without a record")
                    version_of(raw)
                    yield key, raw
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise OSError(f"{self.node}: the stream broke: {exc}") from exc
        if rest:
            raise OSError(f"{self.node}: the stream ended inside a record")

    def close(self) -> None:
        self._conn.close()


class ClusterRange:
    """A node's cluster-wide ranges: the coordinator's side (``start``,
    ``answer``) and the internal stream every node serves (``routes``)."""

    def __init__(self, replica: ReplicaStore, cluster: Cluster) -> None:
        self._replica = replica
        self._cluster = cluster
        self._repairs = BlockingPeerCalls(cluster)
        self._lock = threading.Lock()
        self._threads: list[StatsThread] = []  # the merges running
        self.repaired = 0  # records sent to replicas that showed an older one, for /metrics

    def routes(self) -> dict[bytes, Callable[[Request, bytes], Response]]:
        return {INTERNAL_ENTITIES: self._internal_entities}

    def metrics(self) -> list[Family]:
        return [
            Family(
                "range_repairs_total",
                "counter",
                "Records a cluster-wide range sent to replicas that showed an older one, or none.",
                [("", float(self.repaired))],
            )
        ]

    def _internal_entities(self, request: Request, query: bytes) -> Response:
        """This node's records of the range, tombstones included."""
        if request.method != b"GET":
            return Response(405, headers=((b"allow", b"GET"),))
        bounds = range_bounds(query)
        if bounds is None:
            return BAD_RANGE
        return Response(200, stream=record_pieces(self._replica.records(*bounds)))

    # -- the coordinator's side --

    def start(self, request: Request, respond: Callable[[Response], bool]) -> None:
        """Merge the range of ``request`` on a thread of its own; its
        response goes to ``respond``, from that thread (or from here, for a
        refusal)."""
        bounds = range_bounds(request.target.partition(b"?")[2])
        if request.method != b"GET":
            respond(Response(405, headers=((b"allow", b"GET"),)))
            return
        if bounds is None:
            respond(BAD_RANGE)
            return
        thread = StatsThread(
            target=self._merge, args=(bounds, respond), name="Range merge", daemon=True
        )
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            if len(self._threads) >= MAX_RANGES:
                respond(BUSY)
                return
            self._threads.append(thread)
            thread.start()  # under the lock: a thread not yet started is not alive

    def stop(self) -> None:
        """Wait for the merges to end, before the storage closes: the
        server has closed their connections, so each ends at its next
        batch, or its peer's next read (``--peer-timeout``)."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=2 * self._cluster.peer_timeout + 1.0)

    def answer(self, request: Request) -> Response:
        """The same, waited for: the blocking coordinator's way. Each peer
        answers its head within ``--peer-timeout`` or fails; a merge that
        says nothing for longer than all of them (a bug) is a 504."""
        answered: list[Response] = []
        lock = threading.Lock()
        done = threading.Event()

        def respond(response: Response) -> bool:
            with lock:
                if done.is_set():
                    return False  # given up on
                answered.append(response)
                done.set()
                return True

        self.start(request, respond)
        done.wait(2 * self._cluster.peer_timeout * len(self._cluster.topology.nodes) + 1)
        with lock:
            done.set()
            return answered[0] if answered else NO_HEAD

    def _merge(
        self, bounds: tuple[bytes, bytes | None], respond: Callable[[Response], bool]
    ) -> None:
        start, end = bounds
        target = INTERNAL_ENTITIES + b"?start=" + _quoted(start)
        if end is not None:
            target += b"&end=" + _quoted(end)
        topology = self._cluster.topology
        peers = [
            PeerStream(self._cluster, node, target)
            for node in topology.nodes
            if node != topology.self_url
        ]
        channel = Channel()
        own = self._replica.records(start, end)
        try:
            try:
                for peer in peers:
                    peer.open()
            except OSError as exc:
                log.warning("cluster-wide range: %s", exc)
                respond(Response(504, f"a node could not be asked for its range: {exc}\n".encode()))
                return
            if not respond(Response(200, stream=channel.stream())):
                return  # the client is gone, or timed out
            sources: list[tuple[str, Iterator[tuple[bytes, bytes]]]] = [
                (topology.self_url, own),
                *((peer.node, peer.records()) for peer in peers),
            ]
            self._stream_merged(sources, channel)
        except Exception as exc:
            log.warning("cluster-wide range cut: %s", exc)
            channel.finish(exc)
        else:
            channel.finish()
        finally:
            own.close()  # the storage cursor, now
            for peer in peers:
                peer.close()
            self._repairs.close()  # this thread's connections

    def _stream_merged(
        self, sources: list[tuple[str, Iterator[tuple[bytes, bytes]]]], channel: Channel
    ) -> None:
        """Merge the sources into ``channel``, repairing on the way."""
        tagged = [_tagged(index, records) for index, (_, records) in enumerate(sources)]
        names = [node for node, _ in sources]
        repairs: dict[str, list[batch.Call]] = {}
        entries: list[bytes] = []
        size = 0
        for key, group in itertools.groupby(heapq.merge(*tagged), key=lambda item: item[0]):
            held = {names[index]: raw for _, index, raw in group}
            records = set(held.values())
            if len(records) > 1:
                freshest = max(records, key=lambda raw: rank(decode(raw)))
                self._repair(key, freshest, held, repairs)
            else:  # all agree: nothing to rank, and a replica can only lack it
                freshest = records.pop()
                if len(held) < len(names):
                    self._repair(key, freshest, held, repairs)
            if freshest[:1] != VALUE:
                continue  # a tombstone: the key is deleted
            entry = key + b"\n" + freshest[HEADER_BYTES:]
            entries.append(entry)
            size += len(entry)
            if size >= PIECE_BYTES:
                if not channel.put(entries):
                    return
                entries, size = [], 0
        for node in list(repairs):
            self._send_repairs(node, repairs.pop(node))
        if entries:
            channel.put(entries)

    def _repair(
        self,
        key: bytes,
        freshest: bytes,
        held: dict[str, bytes],
        repairs: dict[str, list[batch.Call]],
    ) -> None:
        topology = self._cluster.topology
        best = rank(decode(freshest))
        for node in topology.replicas(key, min(replicas_of(freshest), len(topology.nodes))):
            mine = held.get(node)
            if mine == freshest or (mine is not None and rank(decode(mine)) >= best):
                continue
            calls = repairs.setdefault(node, [])
            calls.append(batch.Call(key, freshest))
            if len(calls) == batch.MAX_CALLS:
                self._send_repairs(node, repairs.pop(node))

    def _send_repairs(self, node: str, calls: list[batch.Call]) -> None:
        """Send a replica the freshest records it lacked; a failure is
        logged, not the range's (a later read or repair catches up)."""
        with self._lock:
            self.repaired += len(calls)
        if node == self._cluster.topology.self_url:
            writes = [(key, version_of(raw), raw) for key, raw in calls if raw is not None]
            self._replica.apply_all(writes)
            return
        status, _, error = self._repairs.call(
            node, Request(b"POST", INTERNAL_BATCH, batch.encode_calls(calls), self._cluster.headers)
        )
        if status != 200:
            log.warning("cluster-wide range: repairing %d records on %s failed: %s %s",
                        len(calls), node, status, error)  # fmt: skip


def _tagged(
    index: int, records: Iterator[tuple[bytes, bytes]]
) -> Iterator[tuple[bytes, int, bytes]]:
    """A source's records with its index, for the merge (a function, not a
    generator expression in a loop, so that each keeps its own index)."""
    for key, raw in records:
        yield key, index, raw


def _quoted(key: bytes) -> bytes:
    return quote_from_bytes(key, safe="").encode()
