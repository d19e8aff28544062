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

The GIL. rocksdict holds the GIL for the whole call: a get or put is about
1-3 microseconds of C++ that no other Python thread can overlap with. That is
why the PayloadThreads of async mode give no CPU parallelism in CPython
(docs/architecture.md measures it).
"""

from __future__ import annotations

from typing import Protocol

import rocksdict


class StorageError(Exception):
    """The store could not do what was asked (I/O error, closed, locked...)."""


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

    def close(self) -> None:
        self._db.close()
