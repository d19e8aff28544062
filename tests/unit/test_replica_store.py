"""A replica's records over a real RocksDB in a temporary directory
(ReplicaStore): the newer record kept, and the read before a write left
out only where it cannot matter, above the store's ceiling. The reads are
counted through a seam of the storage; the clock's wall clock is a fake
one handed in, where the test says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from selectorkv.cluster.clock import NODE_BITS, HybridClock, Reservation
from selectorkv.kv.records import Record, ReplicaStore, decode
from selectorkv.kv.storage import RocksStorage


class ReadCountingStorage(RocksStorage):
    """A real RocksDB, with a seam that counts the reads made of it."""

    reads = 0

    def get(self, key: bytes) -> bytes | None:
        self.reads += 1
        return super().get(key)


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[ReadCountingStorage]:
    storage = ReadCountingStorage(str(tmp_path / "db"))
    yield storage
    storage.close()


def apply(store: ReplicaStore, key: bytes, record: Record) -> Record:
    """Store ``record`` unless a newer one is there; the record held after."""
    raw = record.encode()
    kept = store.apply_all([(key, record.version, raw)])[0]
    return record if kept is raw else decode(kept)


def held(store: ReplicaStore, key: bytes) -> Record | None:
    raw = store.stored(key)
    return None if raw is None else decode(raw)


def ignore(version: int) -> None:
    """No clock to show the versions to."""


def test_writes_above_the_ceiling_are_stored_without_a_read_read_counting_storage(
    storage: ReadCountingStorage,
) -> None:
    store = ReplicaStore(storage, ignore)
    records = [
        (b"a", Record(10, b"ten", 3)),
        (b"b", Record(11, b"x", 3)),
        (b"a", Record(12, None, 3)),
    ]
    writes = [(key, record.version, record.encode()) for key, record in records]
    assert store.apply_all(writes) == [raw for _, _, raw in writes]
    assert apply(store, b"a", Record(20, b"twenty", 3)) == Record(20, b"twenty", 3)
    assert storage.reads == 0
    assert held(store, b"a") == Record(20, b"twenty", 3)
    assert held(store, b"b") == Record(11, b"x", 3)


def test_a_write_below_the_ceiling_is_compared_with_the_stored_record_read_counting_storage(
    storage: ReadCountingStorage,
) -> None:
    store = ReplicaStore(storage, ignore)
    apply(store, b"a", Record(20, b"twenty", 3))
    assert apply(store, b"a", Record(15, b"late", 3)) == Record(20, b"twenty", 3)  # older: kept
    assert apply(store, b"b", Record(15, b"late", 3)) == Record(15, b"late", 3)  # nothing there
    assert storage.reads == 2
    assert held(store, b"a") == Record(20, b"twenty", 3)


def test_a_record_held_already_is_answered_as_stored(storage: ReadCountingStorage) -> None:
    """A retry, or a repair sending what the replica has: the answer is
    the bytes sent (201 on the wire), not the replica's copy sent back."""
    store = ReplicaStore(storage, ignore)
    apply(store, b"a", Record(20, b"twenty", 3))
    again = Record(20, b"twenty", 3).encode()
    assert store.apply_all([(b"a", 20, again)]) == [again]
    assert store.apply_all([(b"a", 20, again)])[0] is again


def test_without_a_ceiling_the_storage_is_scanned_for_it(storage: ReadCountingStorage) -> None:
    """A store opened over records and told no ceiling must not take an
    older write for the newest."""
    first = ReplicaStore(storage, ignore)
    apply(first, b"a", Record(100, b"new", 3))
    apply(first, b"b", Record(7, b"x", 3))
    storage.put(b"~fill-progress", b"12")  # a tool's own key, no record: passed over
    reopened = ReplicaStore(storage, ignore)
    assert apply(reopened, b"a", Record(50, b"old", 3)) == Record(100, b"new", 3)
    assert held(reopened, b"a") == Record(100, b"new", 3)


def test_the_clocks_ceiling_covers_what_was_stored_before_a_restart_fake_clock(
    tmp_path: Path, storage: ReadCountingStorage
) -> None:
    """A record from a node whose clock is far ahead, stored before a
    restart, is still above the restarted clock's ceiling: an older write
    after the restart is compared with it, and loses."""
    clock = HybridClock(0, Reservation(tmp_path), now=lambda: 1_000)
    assert clock.ceiling() is None  # a new node: nothing reserved yet
    store = ReplicaStore(storage, clock.observe, clock.ceiling())
    far_ahead = Record((50_000_000_000 << NODE_BITS) | 1, b"ahead", 3)
    apply(store, b"a", far_ahead)
    restarted = HybridClock(0, Reservation(tmp_path), now=lambda: 2_000, sleep=lambda _: None)
    ceiling = restarted.ceiling()
    assert ceiling is not None and ceiling > far_ahead.version
    store = ReplicaStore(storage, restarted.observe, ceiling)
    older = Record(far_ahead.version - 1, b"older", 3)
    assert apply(store, b"a", older) == far_ahead
    newest = Record(restarted.next(), b"newest", 3)  # passes what the clock saw
    assert apply(store, b"a", newest) == newest
    assert held(store, b"a") == newest


def test_a_record_read_for_a_node_is_passed_on_as_stored_and_its_version_seen(
    storage: ReadCountingStorage,
) -> None:
    seen: list[int] = []
    store = ReplicaStore(storage, seen.append)
    apply(store, b"a", Record(42, b"value", 3))
    seen.clear()
    assert store.stored(b"a") == Record(42, b"value", 3).encode()
    assert seen == [42]
    assert store.stored(b"missing") is None
    storage.put(b"bad", b"x")  # not a record
    with pytest.raises(ValueError):
        store.stored(b"bad")
