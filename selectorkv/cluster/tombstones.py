"""Tombstone purge: a delete's tombstone goes away once it can no longer
matter, so that the disk, and every range scan, stops carrying it.

A tombstone is what stops an older value of its key from coming back
(records.py): a replica that missed the delete, a hint, a read repair or an
anti-entropy push may still offer the old value, and the tombstone is what
outranks it. So it can go only once no replica holds anything older, and
nothing older can still arrive. The rules:

1. **The grace period** (``--tombstone-grace``, days by default): only a
   tombstone whose version is older than it is a candidate. Writes in
   flight end within seconds; a hint for an older record expires within
   ``--hint-ttl``, which must be shorter (config.py refuses otherwise).
2. **Seen on every replica**: after a repair, the driver asks each other
   replica of each candidate's key for its record (an internal batch of
   GETs). A candidate is purged only if every replica holds that very
   tombstone; a replica that is down, or holds anything else, keeps it
   for a later repair.
3. **Everywhere at once**: the driver then asks each replica to purge it
   (``POST /v0/internal/repair/purge``, the tombstones in an internal
   batch's body), and purges its own. A replica deletes a key only if the
   record there is still that tombstone (``ReplicaStore.purge``), so a
   write that came meanwhile is kept. A replica that misses the purge keeps
   its tombstone; a later repair may copy it back to the others, and a
   later purge takes it again: a tombstone more, never a value back.

docs/cluster.md, "Anti-entropy", has the argument and the test.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

from selectorkv.cluster.clock import NODE_BITS
from selectorkv.cluster.replication import BlockingPeerCalls, Cluster
from selectorkv.http.exchange import Request, Response
from selectorkv.kv import batch
from selectorkv.kv.api import INTERNAL_BATCH, RECORD_TYPE, posted_calls
from selectorkv.kv.records import TOMBSTONE, ReplicaStore, replicas_of, version_of

log = logging.getLogger("selectorkv.cluster.tombstones")

PURGE = b"/v0/internal/repair/purge"
# An answer to a tombstone sent to be purged: purged, or kept because the
# record there is another (a newer write) or none.
PURGED = batch.Answer(200, b"")
KEPT = batch.Answer(409, b"")


def age_of(version: int, now_ns: int) -> float:
    """Seconds since the write of ``version`` (the clock's time part)."""
    return (now_ns - (version >> NODE_BITS)) / 1e9


class TombstonePurge:
    """A node's part in purging tombstones: the driver's rounds (``purge``)
    and the replica's endpoint (``route``)."""

    def __init__(
        self,
        replica: ReplicaStore,
        cluster: Cluster,
        peers: BlockingPeerCalls,
        grace: float,
        now_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._replica = replica
        self._cluster = cluster
        self._peers = peers
        self._grace = grace
        self._now_ns = now_ns  # a seam: the unit tests' fake clock
        self.purged = 0  # tombstones this node has purged, for /metrics

    def route(self, request: Request, query: bytes) -> Response:
        """``POST /v0/internal/repair/purge``: purge each tombstone of the
        batch that is still the record held; answer 200 (purged) or 409
        (kept) for each, in order."""
        calls = posted_calls(request)
        if isinstance(calls, Response):
            return calls
        tombstones = [(key, raw) for key, raw in calls if raw is not None and is_tombstone(raw)]
        if len(tombstones) != len(calls):
            return Response(400, b"only tombstones are purged\n")
        done = self._purge_own(tombstones)
        answers = [PURGED if key in done else KEPT for key, _ in tombstones]
        return Response(200, batch.encode_answers(answers), RECORD_TYPE)

    def _purge_own(self, tombstones: list[tuple[bytes, bytes]]) -> set[bytes]:
        done = self._replica.purge(tombstones)
        self.purged += len(done)
        return done

    def candidates(
        self, records: Iterable[tuple[bytes, bytes]], confirmed: set[str]
    ) -> Iterator[tuple[bytes, bytes, list[str]]]:
        """The tombstones among ``records`` older than the grace period whose
        other replicas are all among ``confirmed`` (the peers a repair has
        just reached), with those replicas."""
        topology = self._cluster.topology
        me = topology.self_url
        now = self._now_ns()
        for key, raw in records:
            if not is_tombstone(raw) or age_of(version_of(raw), now) <= self._grace:
                continue
            count = min(replicas_of(raw), len(topology.nodes))
            others = [node for node in topology.replicas(key, count) if node != me]
            if all(node in confirmed for node in others):
                yield key, raw, others

    def purge(self, candidates: Iterable[tuple[bytes, bytes, list[str]]]) -> int:
        """Purge the candidates that every replica holds (the module's rules
        2 and 3), ``batch.MAX_CALLS`` at a time; the number purged here.
        OSError when a peer cannot be asked: what was purged stays purged."""
        total = 0
        group: list[tuple[bytes, bytes, list[str]]] = []
        for candidate in candidates:
            group.append(candidate)
            if len(group) == batch.MAX_CALLS:
                total += self._purge_group(group)
                group = []
        if group:
            total += self._purge_group(group)
        return total

    def _purge_group(self, group: list[tuple[bytes, bytes, list[str]]]) -> int:
        by_peer: dict[str, list[tuple[bytes, bytes]]] = {}
        for key, raw, others in group:
            for node in others:
                by_peer.setdefault(node, []).append((key, raw))
        held_everywhere = {key for key, _, _ in group}
        for node, tombstones in by_peer.items():
            answers = self._call(node, INTERNAL_BATCH, [batch.Call(k, None) for k, _ in tombstones])
            for (key, raw), (status, body) in zip(tombstones, answers, strict=True):
                if status != 200 or body != raw:
                    held_everywhere.discard(key)
        if not held_everywhere:
            return 0
        for node, tombstones in by_peer.items():
            chosen = [batch.Call(k, raw) for k, raw in tombstones if k in held_everywhere]
            if chosen:
                self._call(node, PURGE, chosen)
        done = self._purge_own([(key, raw) for key, raw, _ in group if key in held_everywhere])
        return len(done)

    def _call(self, node: str, target: bytes, calls: list[batch.Call]) -> list[batch.Answer]:
        status, body, error = self._peers.call(
            node, Request(b"POST", target, batch.encode_calls(calls), self._cluster.headers)
        )
        if status != 200:
            raise OSError(f"{node} answered {target.decode()} with {status} {error or body[:80]!r}")
        return batch.decode_answers(body, len(calls))


def is_tombstone(raw: bytes) -> bool:
    """Is ``raw`` a well-formed tombstone?"""
    if raw[:1] != TOMBSTONE:
        return False
    try:
        version_of(raw)
    except ValueError:
        return False
    return True
