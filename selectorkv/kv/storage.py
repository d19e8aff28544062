"""Storage: the small interface the API needs, and its RocksDB implementation.

The API layer sees only ``Storage``: get, put, delete on bytes. Keeping the
interface this small is what lets a test put a slow or failing storage in
front of the server (to provoke a 503 or a 500) without mocking RocksDB.

Durability. RocksDB appends every write to its write-ahead log (WAL) before
it touches the memtable, and ``put`` returns only after that append. A write
the server acknowledged with 201 is therefore in the operating system's page
cache: it survives ``kill -9`` of the process. It survives a power loss only
when the WAL is fsynced on each write (``--fsync``), which costs a disk flush
per request.

The GIL. rocksdict holds the GIL for the whole call: a get or a put is a few
microseconds of C++ (docs/benchmarks.md, group "storage") that no other
Python thread can overlap with. That is
why the PayloadThreads of async mode give no CPU parallelism in CPython
(docs/architecture.md measures it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Protocol

import rocksdict

# RocksDB keeps table files open; by default without a bound. Bounding them
# leaves the rest of the process's descriptors to client connections.
MAX_OPEN_FILES = 1024


class StorageError(Exception):
    """The store could not do what was asked (I/O error, closed, locked...)."""


class Cursor(Protocol):
    """Entries of a key range, in ascending byte order of keys, as of the
    moment the cursor was opened. ``close`` releases what it holds at once."""

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]: ...

    def __next__(self) -> tuple[bytes, bytes]: ...

    def close(self) -> None: ...


class Storage(Protocol):
    """What the API needs from a key-value store. Keys and values are bytes."""

    def get(self, key: bytes) -> bytes | None:
        """The value stored under ``key``, or None when there is none."""
        ...

    def put(self, key: bytes, value: bytes) -> None:
        """Store ``value`` under ``key`` (insert or overwrite); durable on return."""
        ...

    def delete(self, key: bytes) -> None:
        """Remove ``key``; removing an absent key is not an error."""
        ...

    def apply_batch(self, writes: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Apply the writes in order as one atomic write (value None: delete):
        one append to the write-ahead log, and one sync of it with fsync."""
        ...

    def range(self, start: bytes, end: bytes | None) -> Cursor:
        """Entries with ``start <= key < end`` (no ``end``: to the last key),
        as of now: writes made after this call are not seen."""
        ...

    def wal_syncs(self) -> int | None:
        """Syncs of the write-ahead log so far, for /metrics; None when the
        store does not count them."""
        ...

    def close(self) -> None:
        """Flush and release the store; no call may follow."""
        ...


class RocksStorage:
    """``Storage`` on an embedded RocksDB through rocksdict, in raw mode.

    Raw mode stores the bytes as given; rocksdict's default mode would pickle
    them, which costs time and makes the files unreadable to other tools.
    rocksdict raises a bare ``Exception`` for RocksDB's status errors, so each
    call translates whatever it raises into ``StorageError`` at this boundary.
    """

    def __init__(self, path: str, *, fsync: bool = False) -> None:
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_max_open_files(MAX_OPEN_FILES)
        if fsync:
            # RocksDB's counters, among them the write-ahead-log syncs that
            # group commit saves (``wal_syncs``); a few per cent of a write
            # without a sync, nothing beside one with a sync.
            options.enable_statistics()
        self._options = options
        self._statistics = fsync
        try:
            self._db = rocksdict.Rdict(path, options)
        except Exception as exc:
            raise StorageError(f"cannot open RocksDB at {path}: {exc}") from exc
        write_options = rocksdict.WriteOptions()
        write_options.sync = fsync
        self._db.set_write_options(write_options)
        self.path = path

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._db.get(key)
        except Exception as exc:
            raise StorageError(f"get failed: {exc}") from exc
        return value

    def put(self, key: bytes, value: bytes) -> None:
        try:
            self._db.put(key, value)
        except Exception as exc:
            raise StorageError(f"put failed: {exc}") from exc

    def delete(self, key: bytes) -> None:
        try:
            self._db.delete(key)
        except Exception as exc:
            raise StorageError(f"delete failed: {exc}") from exc

    def apply_batch(self, writes: Sequence[tuple[bytes, bytes | None]]) -> None:
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in writes:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        try:
            self._db.write(batch)
        except Exception as exc:
            raise StorageError(f"batch write failed: {exc}") from exc

    def wal_syncs(self) -> int | None:
        """Syncs of the write-ahead log so far (None: not counted, no fsync)."""
        if not self._statistics:
            return None
        text = self._options.get_statistics() or ""
        found = re.search(r"rocksdb\.wal\.synced COUNT : (\d+)", text)
        return int(found.group(1)) if found else 0

    def table_files_size(self) -> int:
        """Bytes in the live table files: the data on disk, without the
        write-ahead log or files that compaction is about to delete."""
        try:
            return int(self._db.property_int_value("rocksdb.live-sst-files-size") or 0)
        except Exception as exc:
            raise StorageError(f"size query failed: {exc}") from exc

    def flush(self) -> None:
        """Write the memtable out to table files (so the directory's size
        reflects the data)."""
        try:
            self._db.flush()
        except Exception as exc:
            raise StorageError(f"flush failed: {exc}") from exc

    def compact(self) -> None:
        """Compact every table file into its final level and wait for it:
        a database that is copied for a benchmark then starts settled, with
        no compaction of its own competing with the load."""
        try:
            self._db.compact_range(None, None)
        except Exception as exc:
            raise StorageError(f"compaction failed: {exc}") from exc

    def range(self, start: bytes, end: bytes | None) -> RocksCursor:
        try:
            return RocksCursor(self._db, start, end)
        except Exception as exc:
            raise StorageError(f"range failed: {exc}") from exc

    def close(self) -> None:
        try:
            self._db.close()
        except Exception as exc:
            raise StorageError(f"close failed: {exc}") from exc


class RocksCursor:
    """A RocksDB iterator over ``[start, end)``.

    A RocksDB iterator reads at the sequence number it was created with: it
    is its own snapshot, pinning the memtables and files it needs, so writes
    and deletes made while a range streams do not change what it yields.
    (rocksdict's ``Snapshot.iter`` was measured to see later writes with
    rocksdict 0.3.29, so the plain iterator is used.) The iterator is created
    here, when the request is executed, not when the first entry is asked for.
    """

    def __init__(self, db: rocksdict.Rdict, start: bytes, end: bytes | None) -> None:
        self._it: rocksdict.RdictIter | None = db.iter()
        self._it.seek(start)
        self._end = end

    def __iter__(self) -> RocksCursor:
        return self

    def __next__(self) -> tuple[bytes, bytes]:
        it = self._it
        if it is None:
            raise StopIteration
        try:
            if it.valid():
                key: bytes = it.key()
                if self._end is None or key < self._end:
                    value: bytes = it.value()
                    it.next()
                    return key, value
        except Exception as exc:
            self.close()
            raise StorageError(f"range read failed: {exc}") from exc
        self.close()
        raise StopIteration

    def close(self) -> None:
        self._it = None  # the last reference: RocksDB unpins at once
