"""What a cluster node stores under a key: a versioned value or a tombstone.

Every replica keeps the newer of what it has and what it is sent
(``ReplicaStore.apply_all``); a delete is a tombstone with a version, so that an
older value arriving later cannot bring the key back. Records with the same
version are still ordered (``rank``: a tombstone wins, then the greater
value), so that every replica keeps the same one. A record also carries
the number of replicas it was written to (the request's ``from``): with
the node list, that says which nodes should hold its key, so that repair
can restore exactly those copies and never make more. The stored bytes:

    b"V" + version (16 bytes, big-endian) + replicas (1 byte) + value
    b"T" + version (16 bytes, big-endian) + replicas (1 byte)     a tombstone

The first format had no replicas byte and lower-case kinds (b"v", b"t"),
so that the records of either can be told apart one by one: a node refuses
a database of the first format, and ``upgrade`` rewrites one, resuming
where it stopped if it was interrupted.

A data directory says which format it holds (``check_format``): a single
node's plain values or a cluster node's records. docs/cluster.md,
"Versions and tombstones", gives the reasons.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import NamedTuple

from selectorkv.kv.storage import Storage

log = logging.getLogger("selectorkv.kv.records")

VERSION_BYTES = 16
VALUE = b"V"
TOMBSTONE = b"T"
HEADER_BYTES = 1 + VERSION_BYTES + 1  # kind, version, replicas
# The most replicas a record can name: its key's first ``replicas`` nodes,
# every node when there are fewer (a copy made for every node of clusters
# of any size, as the lab's filled databases are, names MAX_REPLICAS).
MAX_REPLICAS = 255


class Record(NamedTuple):
    """A version and its value (None: a tombstone), written to its key's
    first ``replicas`` nodes."""

    version: int
    value: bytes | None
    replicas: int

    def encode(self) -> bytes:
        head = self.version.to_bytes(VERSION_BYTES, "big") + self.replicas.to_bytes(1, "big")
        if self.value is None:
            return TOMBSTONE + head
        return VALUE + head + self.value


def version_of(raw: bytes) -> int:
    """The version of the record stored as ``raw``, without decoding its
    value; ValueError if ``raw`` is not a record."""
    kind = raw[:1]
    if len(raw) < HEADER_BYTES or kind not in (VALUE, TOMBSTONE):
        raise ValueError("not a versioned record")
    if kind == TOMBSTONE and len(raw) != HEADER_BYTES:
        raise ValueError("a tombstone with a value")
    if raw[HEADER_BYTES - 1] == 0:
        raise ValueError("a record written to no replica")
    return int.from_bytes(raw[1 : HEADER_BYTES - 1], "big")


def replicas_of(raw: bytes) -> int:
    """The replica count of a record ``version_of`` has checked, without
    decoding it."""
    return raw[HEADER_BYTES - 1]


def decode(raw: bytes) -> Record:
    """The record stored as ``raw``; ValueError if it is not one."""
    version = version_of(raw)
    value = None if raw[:1] == TOMBSTONE else raw[HEADER_BYTES:]
    return Record(version, value, replicas_of(raw))


def rank(record: Record) -> tuple[int, bool, bytes]:
    """The total order of records: version, then tombstone over value, then
    the value's bytes."""
    return record.version, record.value is None, record.value or b""


def newer(mine: Record | None, theirs: Record) -> bool:
    """Should ``theirs`` replace ``mine``?"""
    return mine is None or rank(theirs) > rank(mine)


class ReplicaStore:
    """A node's storage seen as records: the replica side of replication.

    ``apply_all`` is a read-modify-write (keep the newer record), made atomic
    with a lock: in async mode more than one PayloadThread may apply writes
    to the same key. Every version read or stored here is shown to
    ``observe`` (the node's clock), so that the node's next version is
    higher than any it holds.

    **The ceiling.** The read costs as much as the write it guards (a
    RocksDB get, a record to decode: a quarter of a replica's CPU per
    call, docs/cluster.md, "What a hop costs"), and most writes do not need
    it: a version is a timestamp, and a fresh write's is above every
    version the node holds. So the store keeps its ceiling, a version that
    no stored record exceeds, and a record above it is stored without
    reading what is there: it is newer than anything that can be. Only a
    record at or below it (a late write from another coordinator, a read
    repair, a hint) is compared with the stored one. ``ceiling`` is where
    it starts: the clock's, which reserved every stored version before it
    was stored (cluster/clock.py); None when nothing tells, and then the
    storage is scanned for it once, here.
    """

    def __init__(
        self, storage: Storage, observe: Callable[[int], None], ceiling: int | None = None
    ) -> None:
        self._storage = storage
        self._observe = observe
        self._lock = threading.Lock()
        self._ceiling = highest_version(storage) if ceiling is None else ceiling

    def stored(self, key: bytes) -> bytes | None:
        """The record under ``key`` as stored, for a node that asks for it:
        its version shown to the clock, the rest passed on undecoded."""
        raw = self._storage.get(key)
        if raw is None:
            return None
        self._observe(version_of(raw))
        return raw

    def apply_all(self, writes: Sequence[tuple[bytes, int, bytes]]) -> list[bytes]:
        """Store each record unless a newer one is there, in turn (a key may
        come more than once), with one write to the storage for all that are
        stored (one append to its write-ahead log: an internal batch's group
        commit). A write
        is (key, version, record as stored), ``version_of`` having checked
        the record: records go in and out as the bytes they are stored as,
        decoded only to compare two. The answer, for each write, is the
        record the replica holds afterwards: the very bytes sent when they
        were stored or were held already, else the newer record's."""
        for _, version, _ in writes:
            self._observe(version)
        held: list[bytes] = []
        stored: dict[bytes, bytes] = {}
        with self._lock:
            ceiling = self._ceiling
            for key, version, raw in writes:
                if version > ceiling:
                    ceiling = version  # above all there is: no read
                else:
                    mine = stored.get(key) or self._storage.get(key)
                    if mine == raw:  # held already (a retry, a repair): as good as stored
                        held.append(raw)
                        continue
                    if mine is not None:
                        record = decode(mine)
                        self._observe(record.version)
                        if not newer(record, decode(raw)):
                            held.append(mine)
                            continue
                stored[key] = raw
                held.append(raw)
            # Raised before the write: a write that fails leaves it higher
            # than it need be, which costs reads, never a lost record.
            self._ceiling = ceiling
            if len(stored) == 1:
                ((key, raw),) = stored.items()
                self._storage.put(key, raw)
            elif stored:
                self._storage.apply_batch(list(stored.items()))
        return held

    def purge(self, tombstones: Sequence[tuple[bytes, bytes]]) -> set[bytes]:
        """Delete each key whose record is still the tombstone given (a
        write that came since is kept), in one write to the storage; the
        keys deleted. cluster/tombstones.py says when a tombstone may go."""
        with self._lock:
            gone = {key for key, raw in tombstones if self._storage.get(key) == raw}
            if gone:
                self._storage.apply_batch([(key, None) for key in gone])
        return gone

    def records(
        self, start: bytes, end: bytes | None
    ) -> Generator[tuple[bytes, bytes], None, None]:
        """The node's records in ``[start, end)`` as stored, tombstones
        included; a value that is not a record (a tool's own key, as
        ``selectorkv fill`` keeps its progress under) is passed over."""
        cursor = self._storage.range(start, end)
        try:
            for key, raw in cursor:
                try:
                    version_of(raw)
                except ValueError:
                    continue
                yield key, raw
        finally:
            cursor.close()

    def values(self, start: bytes, end: bytes | None) -> Generator[tuple[bytes, bytes], None, None]:
        """The node's live entries in ``[start, end)`` without their
        versions, tombstones left out (the node-local ``GET /v0/entities``)."""
        for key, raw in self.records(start, end):
            if raw[:1] == VALUE:
                yield key, raw[HEADER_BYTES:]


def highest_version(storage: Storage) -> int:
    """The highest version stored (0 for none): a scan of every record,
    logged when there are any. A value that is not a record (a tool's own
    key, as ``selectorkv fill`` keeps its progress under) holds no
    version: it is counted in the log line and passed over."""
    started = time.monotonic()
    highest = records = others = 0
    cursor = storage.range(b"", None)
    try:
        for _, raw in cursor:
            try:
                highest = max(highest, version_of(raw))
                records += 1
            except ValueError:
                others += 1
    finally:
        cursor.close()
    if records or others:
        log.info(
            "read the versions of %d records for the highest (%.1f s, %d other values passed "
            "over): no clock file told it",
            records,
            time.monotonic() - started,
            others,
        )
    return highest


# The storage format of a cluster node: a file in the data directory.
FORMAT_FILE = "SELECTORKV-FORMAT"
RECORDS_FORMAT = "versioned-records 2\n"
FIRST_FORMAT = "versioned-records 1\n"  # records without their replicas
_FIRST_KINDS = {b"v": VALUE, b"t": TOMBSTONE}
UPGRADE_BATCH = 4096  # records rewritten per atomic write


def upgraded(raw: bytes, replicas: int) -> bytes | None:
    """A record of the first format rewritten in this one, as written to
    ``replicas`` nodes; None for anything else (a record of this format
    already, a tool's own value)."""
    kind = _FIRST_KINDS.get(raw[:1])
    if kind is None or len(raw) < 1 + VERSION_BYTES:
        return None
    if kind == TOMBSTONE and len(raw) != 1 + VERSION_BYTES:
        return None
    return kind + raw[1 : 1 + VERSION_BYTES] + bytes((replicas,)) + raw[1 + VERSION_BYTES :]


def upgrade(data: str, storage: Storage, replicas: int) -> int:
    """Rewrite the records of a database of the first format in this one,
    each as written to ``replicas`` nodes, and mark the directory; the
    number of records rewritten. Each batch is one atomic write and a
    record already rewritten is left alone, so an interrupted upgrade is
    finished by running it again."""
    if not 1 <= replicas <= MAX_REPLICAS:
        raise ValueError(f"replicas must be 1..{MAX_REPLICAS}, not {replicas}")
    marker = Path(data) / FORMAT_FILE
    if not marker.exists():
        raise ValueError(f"{data} holds no cluster node's records ({FORMAT_FILE} is missing)")
    if marker.read_text() == RECORDS_FORMAT:
        return 0
    if marker.read_text() != FIRST_FORMAT:
        raise ValueError(f"{data}: {FORMAT_FILE} names a format this version does not know")
    rewritten = 0
    pending: list[tuple[bytes, bytes]] = []
    cursor = storage.range(b"", None)
    try:
        for key, raw in cursor:
            new = upgraded(raw, replicas)
            if new is not None:
                pending.append((key, new))
            if len(pending) == UPGRADE_BATCH:
                storage.apply_batch(pending)
                rewritten += len(pending)
                pending = []
    finally:
        cursor.close()
    if pending:
        storage.apply_batch(pending)
        rewritten += len(pending)
    marker.write_text(RECORDS_FORMAT)
    return rewritten


def check_format(data: str, storage: Storage, cluster: bool) -> None:
    """Refuse a database written in the other format, so that nothing is
    misread: a single node stores plain values, a cluster node versioned
    records. An empty database takes the format it is opened
    with. Raises ValueError with what to do."""
    marker = Path(data) / FORMAT_FILE
    has_records = marker.exists()
    if cluster and has_records and marker.read_text() != RECORDS_FORMAT:
        raise ValueError(
            f"{data} holds records of an earlier format, which do not say how many replicas "
            f"they were written to. Stop every node, run `selectorkv upgrade-records --data "
            f"{data} --replicas N` on each node's directory (N: the `from` its writes used, "
            "the number of nodes when they used the default), then start them again"
        )
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
