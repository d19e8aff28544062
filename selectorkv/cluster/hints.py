"""Hinted handoff: the writes a replica missed, kept by their coordinator
and handed to it when it answers again.

``HintStore`` keeps each hint (target, key, record) in a RocksDB of its own
(``DATA/hints``) under ``target \0 sequence``, so that a target's hints sort
by age; within bounds per target (``--hint-ttl``, ``--hints-max``,
``--hints-max-bytes``), the oldest going first, each counted in /metrics.
A hint never counts toward ``ack`` and never goes to a node other than its
target. ``HintedHandoff`` delivers them from the first SelectorThread,
oldest first, a few at a time and at most ``--hint-rate`` a second, with a
backoff that doubles while the target fails.

docs/cluster.md, "Hinted handoff", explains the rules and their reasons.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, NamedTuple

from selectorkv.cluster.peer import PeerPool, PeerReply, PeerRequest
from selectorkv.cluster.placement import Address
from selectorkv.kv.records import Record, decode, upgraded
from selectorkv.kv.storage import Storage, StorageError
from selectorkv.reactor.stats import Family

if TYPE_CHECKING:
    from selectorkv.reactor.selector_thread import SelectorThread

log = logging.getLogger("selectorkv.cluster.hints")

# The backoff between failed rounds of delivery to one target, in seconds.
FIRST_RETRY = 0.25
MAX_RETRY = 4.0
# Hints sent to one target at once; the rate bounds the rest.
IN_FLIGHT = 4
# How often a target with hints is looked at while it takes them.
TICK = 0.05

_HEAD = struct.Struct(">QI")  # made at (ns), key length


class Hint(NamedTuple):
    """One write a target missed."""

    sequence: int
    made_ns: int
    key: bytes
    record: Record

    def size(self) -> int:
        return _HEAD.size + len(self.key) + len(self.record.encode())


@dataclass
class TargetCounts:
    """What happened to one target's hints (/metrics)."""

    pending: int = 0
    pending_bytes: int = 0
    stored: int = 0
    delivered: int = 0
    expired: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class HintLimits:
    ttl: float  # seconds a hint is kept
    max_hints: int  # per target
    max_bytes: int  # per target
    rate: int  # hints a second delivered to one target


class HintStore:
    """The hints of one node, durable; thread-safe (coordinators store hints
    on SelectorThreads, or on PayloadThreads with blocking peer calls)."""

    def __init__(self, storage: Storage, limits: HintLimits) -> None:
        self._storage = storage
        self.limits = limits
        self._lock = threading.Lock()
        self._last_sequence = 0
        self.counts: dict[str, TargetCounts] = {}
        # target -> (sequence, size) of each hint, oldest first
        self._sizes: dict[str, deque[tuple[int, int]]] = {}
        self._recover()

    def _recover(self) -> None:
        """Count the hints a run before this one left."""
        cursor = self._storage.range(b"", None)
        try:
            for raw_key, raw in cursor:
                try:
                    target, sequence = split_hint_key(raw_key)
                except UnicodeDecodeError:
                    # Not a hint this code wrote: skipped, not fatal (a node
                    # must start whatever its hints hold).
                    log.warning("skipped an unreadable hint key %r", raw_key)
                    continue
                size = len(raw)
                self._track(target, sequence, size)
                self._last_sequence = max(self._last_sequence, sequence)
        finally:
            cursor.close()
        for target, counts in self.counts.items():
            log.info("%d hints for %s left from the last run", counts.pending, target)

    def _track(self, target: str, sequence: int, size: int) -> None:
        counts = self.counts.setdefault(target, TargetCounts())
        counts.pending += 1
        counts.pending_bytes += size
        self._sizes.setdefault(target, deque()).append((sequence, size))

    def add(self, target: str, key: bytes, record: Record) -> None:
        """Keep a hint for ``target``; over a bound, its oldest are dropped."""
        encoded = record.encode()
        value = _HEAD.pack(time.time_ns(), len(key)) + key + encoded
        with self._lock:
            sequence = self._last_sequence = max(time.time_ns(), self._last_sequence + 1)
            try:
                self._storage.put(hint_key(target, sequence), value)
            except StorageError as exc:
                log.error("could not keep a hint for %s: %s", target, exc)
                return
            self._track(target, sequence, len(value))
            counts = self.counts[target]
            counts.stored += 1
            sizes = self._sizes[target]
            limits = self.limits
            while counts.pending > limits.max_hints or counts.pending_bytes > limits.max_bytes:
                oldest, size = sizes[0]
                self._forget(target, oldest, size)
                counts.dropped += 1

    def _forget(self, target: str, sequence: int, size: int) -> bool:
        """Delete a hint (under the lock); False if it was gone already
        (dropped over a bound while it was being delivered)."""
        sizes = self._sizes[target]
        if sizes and sizes[0][0] == sequence:
            sizes.popleft()
        elif (sequence, size) in sizes:
            sizes.remove((sequence, size))
        else:
            return False
        self._storage.delete(hint_key(target, sequence))
        counts = self.counts[target]
        counts.pending -= 1
        counts.pending_bytes -= size
        return True

    def oldest(self, target: str, count: int, skip: set[int]) -> list[Hint]:
        """Up to ``count`` of the target's oldest hints not in ``skip``;
        those past the age bound are deleted and counted instead."""
        with self._lock:
            first = list(islice(self._sizes.get(target, ()), count + len(skip)))
        wanted = [entry for entry in first if entry[0] not in skip]
        hints: list[Hint] = []
        expire_before = time.time_ns() - int(self.limits.ttl * 1e9)
        for sequence, size in wanted:
            if len(hints) == count:
                break
            raw = self._storage.get(hint_key(target, sequence))
            if raw is None:
                continue  # delivered or dropped meanwhile
            made_ns, key_length = _HEAD.unpack_from(raw)
            if made_ns < expire_before:
                with self._lock:
                    if self._forget(target, sequence, size):
                        self.counts[target].expired += 1
                continue
            key = raw[_HEAD.size : _HEAD.size + key_length]
            record = decode(raw[_HEAD.size + key_length :])
            hints.append(Hint(sequence, made_ns, key, record))
        return hints

    def delivered(self, target: str, hint: Hint) -> None:
        with self._lock:
            if self._forget(target, hint.sequence, hint.size()):
                self.counts[target].delivered += 1

    def pending(self, target: str) -> int:
        counts = self.counts.get(target)
        return 0 if counts is None else counts.pending

    def metrics(self) -> list[Family]:
        """For /metrics: per target, hints pending and what became of them."""
        with self._lock:
            counts = {target: TargetCounts(**vars(c)) for target, c in self.counts.items()}
        families: list[Family] = []
        for name, kind, text in (
            ("hints_pending", "gauge", "Hints kept for a node, not yet delivered."),
            ("hints_stored_total", "counter", "Hints kept: writes a node missed."),
            ("hints_delivered_total", "counter", "Hints the node has stored since."),
            ("hints_expired_total", "counter", "Hints deleted undelivered: older than --hint-ttl."),
            ("hints_dropped_total", "counter", "Hints deleted undelivered: over the bounds."),
        ):
            field = name.removesuffix("_total").removeprefix("hints_")
            samples = [
                (f'{{peer="{target}"}}', float(getattr(c, field)))
                for target, c in sorted(counts.items())
            ]
            families.append(Family(name, kind, text, samples))
        return families

    def close(self) -> None:
        self._storage.close()


def upgrade_hints(storage: Storage, replicas: int) -> int:
    """Rewrite the records of the hints a node of the first record format
    kept (records.py, ``upgrade``), each as written to ``replicas`` nodes;
    how many. Hints are bounded per target: one write for all of them."""
    rewritten: list[tuple[bytes, bytes]] = []
    cursor = storage.range(b"", None)
    try:
        for hint, raw in cursor:
            if len(raw) < _HEAD.size:
                continue  # not a hint this code wrote: left as it is
            _, key_length = _HEAD.unpack_from(raw)
            start = _HEAD.size + key_length
            record = upgraded(raw[start:], replicas)
            if record is not None:
                rewritten.append((hint, raw[:start] + record))
    finally:
        cursor.close()
    if rewritten:
        storage.apply_batch(rewritten)
    return len(rewritten)


def hint_key(target: str, sequence: int) -> bytes:
    """Where a hint is stored: the target's URL, a zero byte, and the
    sequence as 8 bytes (which may hold zero bytes of their own)."""
    return target.encode() + b"\0" + sequence.to_bytes(8, "big")


def split_hint_key(raw: bytes) -> tuple[str, int]:
    """(target, sequence) of a ``hint_key``: the sequence is the last 8
    bytes, whatever they hold."""
    return raw[:-9].decode(), int.from_bytes(raw[-8:], "big")


class HintedHandoff:
    """Delivers the hints of a ``HintStore`` from one SelectorThread
    (docs/cluster.md, "Hinted handoff"). Only ``keep`` may be called from another thread."""

    def __init__(
        self,
        store: HintStore,
        make_pool: Callable[[SelectorThread], PeerPool],
        addresses: dict[str, Address],
        headers: tuple[tuple[bytes, bytes], ...],
        target_of: Callable[[bytes], bytes],
    ) -> None:
        self._store = store
        self._make_pool = make_pool
        self._pool: PeerPool | None = None
        self._reactor: SelectorThread | None = None
        self._addresses = addresses
        self._headers = headers
        self._target_of = target_of  # key -> the internal request's target
        self._active: set[str] = set()  # targets whose rounds are scheduled
        self._backoff: dict[str, float] = {}  # target -> the next failure's wait
        self._resume_at: dict[str, float] = {}  # target -> no sends before (monotonic)
        self._sending: dict[str, set[int]] = {}  # target -> sequences in flight
        self._sent_at: dict[str, deque[float]] = {}  # target -> send times in the last second

    def start(self, reactor: SelectorThread) -> None:
        """From any thread, once: deliver from ``reactor``, beginning with
        what an earlier run left."""

        def begin() -> None:
            self._pool = self._make_pool(reactor)
            for target, counts in list(self._store.counts.items()):
                if counts.pending:
                    self._activate(target)

        self._reactor = reactor
        reactor.call_soon(begin)

    def keep(self, target: str, key: bytes, record: Record) -> None:
        """From any thread: keep a hint for ``target`` and deliver it."""
        self._store.add(target, key, record)
        reactor = self._reactor
        if reactor is not None:
            reactor.call_soon(lambda: self._activate(target))

    def _activate(self, target: str) -> None:
        """On the SelectorThread: start the round loop of ``target``."""
        reactor = self._reactor
        if target in self._active or target not in self._addresses or reactor is None:
            return
        self._active.add(target)
        # The target just failed a write: the first try waits a little.
        reactor.call_later(FIRST_RETRY, lambda: self._round(target))

    def _round(self, target: str) -> None:
        """Send what the rate and the in-flight bound allow, and come back
        in a tick while hints are left (one round loop per target)."""
        reactor, pool = self._reactor, self._pool
        assert reactor is not None and pool is not None, "rounds run once started"
        if reactor.draining:
            return
        now = time.monotonic()
        sending = self._sending.setdefault(target, set())
        sent_at = self._sent_at.setdefault(target, deque())
        while sent_at and sent_at[0] < now - 1.0:
            sent_at.popleft()
        room = min(IN_FLIGHT - len(sending), self._store.limits.rate - len(sent_at))
        if room > 0 and now >= self._resume_at.get(target, 0.0):
            for hint in self._store.oldest(target, room, sending):
                sending.add(hint.sequence)
                sent_at.append(now)
                self._send(pool, target, hint)
        if not sending and not self._store.pending(target):
            self._active.discard(target)
            return
        delay = max(TICK, self._resume_at.get(target, 0.0) - now)
        reactor.call_later(delay, lambda: self._round(target))

    def _send(self, pool: PeerPool, target: str, hint: Hint) -> None:
        request = PeerRequest(
            b"PUT", self._target_of(hint.key), self._headers, hint.record.encode()
        )
        pool.call(
            self._addresses[target], request, lambda reply: self._answered(target, hint, reply)
        )

    def _answered(self, target: str, hint: Hint, reply: PeerReply) -> None:
        self._sending[target].discard(hint.sequence)
        if reply.status in (200, 201):  # stored, or a newer record was there
            self._store.delivered(target, hint)
            self._backoff.pop(target, None)
            return
        delay = self._backoff.get(target, FIRST_RETRY)
        self._backoff[target] = min(delay * 2, MAX_RETRY)
        self._resume_at[target] = time.monotonic() + delay
        log.debug("a hint for %s not delivered (%s); next in %.2fs", target, reply.error, delay)
