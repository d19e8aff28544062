"""What a cluster node stores under a key: a versioned value or a tombstone.

# design: versions

Replicas of a key receive writes from different coordinators, in different
orders, and some miss writes while they are down. Each write therefore
carries a version, and every replica keeps the newer of what it has and
what it is sent; a read returns the freshest version among the replicas
that answered. A delete is a write too: a tombstone with a version, so that
an older value arriving later cannot bring the key back.

A version is made by the coordinator from its wall clock in nanoseconds,
shifted left 32 bits, with the coordinator's index in the cluster in the
low bits: two coordinators never make the same version, and one
coordinator's versions strictly increase even when the clock stands still
or steps back (``VersionClock`` takes the larger of now and its last time
plus one). Clocks of different nodes are only as close as NTP keeps them; a
write that loses to a concurrent one on another node within that skew is
the usual price of last-writer-wins.

# design: the stored bytes

    b"v" + version (16 bytes, big-endian) + value
    b"t" + version (16 bytes, big-endian)              a tombstone

Big-endian, so that comparing versions needs no decoding beyond int.from_bytes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator
from typing import NamedTuple

from selectorkv.storage import Storage

VERSION_BYTES = 16
VALUE = b"v"
TOMBSTONE = b"t"
_HEADER = 1 + VERSION_BYTES


class Record(NamedTuple):
    """A version and its value; ``value`` None is a tombstone."""

    version: int
    value: bytes | None

    def encode(self) -> bytes:
        version = self.version.to_bytes(VERSION_BYTES, "big")
        if self.value is None:
            return TOMBSTONE + version
        return VALUE + version + self.value


def decode(raw: bytes) -> Record:
    """The record stored as ``raw``; ValueError if it is not one."""
    kind = raw[:1]
    if len(raw) < _HEADER or kind not in (VALUE, TOMBSTONE):
        raise ValueError("not a versioned record")
    version = int.from_bytes(raw[1:_HEADER], "big")
    if kind == TOMBSTONE:
        if len(raw) != _HEADER:
            raise ValueError("a tombstone with a value")
        return Record(version, None)
    return Record(version, raw[_HEADER:])


def newer(mine: Record | None, theirs: Record) -> bool:
    """Should ``theirs`` replace ``mine``?"""
    return mine is None or theirs.version > mine.version


class VersionClock:
    """Strictly increasing versions for one coordinator; thread-safe."""

    def __init__(self, node_index: int) -> None:
        if not 0 <= node_index < 1 << 32:
            raise ValueError("node index must fit in 32 bits")
        self._node = node_index
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            return self._last << 32 | self._node


class ReplicaStore:
    """A node's storage seen as records: the replica side of replication.

    ``apply`` is a read-modify-write (keep the newer version), made atomic
    with a lock: in async mode more than one PayloadThread may apply writes
    to the same key.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._lock = threading.Lock()

    def get(self, key: bytes) -> Record | None:
        raw = self._storage.get(key)
        return None if raw is None else decode(raw)

    def apply(self, key: bytes, record: Record) -> bool:
        """Store ``record`` unless a newer one is there; True if stored."""
        with self._lock:
            if not newer(self.get(key), record):
                return False
            self._storage.put(key, record.encode())
            return True

    def values(self, start: bytes, end: bytes | None) -> Generator[tuple[bytes, bytes], None, None]:
        """The node's live entries in ``[start, end)`` without their
        versions, tombstones left out (``GET /v0/entities`` is node-local)."""
        cursor = self._storage.range(start, end)
        try:
            for key, raw in cursor:
                record = decode(raw)
                if record.value is not None:
                    yield key, record.value
        finally:
            cursor.close()
