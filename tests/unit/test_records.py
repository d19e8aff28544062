"""Versioned records and the hybrid logical clock, without a database or a
server: encoding, the order of records, and versions that never go back
(the wall clock is a fake one handed in, where the test says so)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from selectorkv.cluster.clock import NODE_BITS, RESERVE_NS, HybridClock, Reservation
from selectorkv.kv.records import Record, decode, newer


@pytest.mark.parametrize(
    "record", [Record(1, b"value", 3), Record(2**100, b"", 3), Record(7, None, 3)]
)
def test_records_survive_encoding(record: Record) -> None:
    assert decode(record.encode()) == record


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"V",
        b"x" + bytes(16) + b"\x03",
        b"T" + bytes(16) + b"\x03extra",  # a tombstone with a value
        b"V" + bytes(16) + b"\x00value",  # written to no replica
        b"v" + bytes(16) + b"value",  # the first format: no replicas
    ],
)
def test_bytes_that_are_not_a_record_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode(raw)


def test_a_newer_version_wins_whatever_it_holds() -> None:
    assert newer(None, Record(1, b"a", 3))
    assert newer(Record(1, b"a", 3), Record(2, None, 3))  # a later delete wins
    assert not newer(Record(2, None, 3), Record(1, b"a", 3))  # an older value cannot revive it


def test_equal_versions_are_ordered_the_same_way_on_every_replica() -> None:
    """Two writes with one version: whichever a replica got first, every
    replica keeps the same one (a tombstone, else the greater value)."""
    a, b, gone = Record(2, b"a", 3), Record(2, b"b", 3), Record(2, None, 3)
    assert newer(a, b) and not newer(b, a)
    assert newer(b, gone) and not newer(gone, b)
    assert not newer(a, a)


def test_one_clock_never_repeats_itself_even_across_threads() -> None:
    clock = HybridClock(3)
    seen: list[list[int]] = [[] for _ in range(4)]

    def take(into: list[int]) -> None:
        into.extend(clock.next() for _ in range(5000))

    threads = [threading.Thread(target=take, args=(s,)) for s in seen]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [v for s in seen for v in s]
    assert len(set(every)) == len(every)
    assert all(s == sorted(s) for s in seen)  # increasing within each thread
    assert all(v & 0xFFFFFFFF == 3 for v in every)


def test_two_coordinators_never_make_the_same_version() -> None:
    a, b = HybridClock(0), HybridClock(1)
    assert not {a.next() for _ in range(1000)} & {b.next() for _ in range(1000)}


def test_a_version_seen_is_passed_by_the_next_one_fake_clock() -> None:
    """A node whose wall clock is behind issues, after seeing a version
    from a node ahead of it, a higher one: the hybrid clock's promise."""
    behind = HybridClock(0, now=lambda: 1_000)
    ahead = HybridClock(1, now=lambda: 5_000_000_000)
    seen = ahead.next()
    assert behind.next() < seen  # the bare wall clock would lose
    behind.observe(seen)
    assert behind.next() > seen


def test_a_wall_clock_that_steps_back_gives_no_lower_version_fake_clock() -> None:
    now = [10_000]
    clock = HybridClock(0, now=lambda: now[0])
    first = clock.next()
    now[0] = 5_000
    assert clock.next() > first


def test_versions_keep_increasing_across_a_restart_fake_clock(tmp_path: Path) -> None:
    """The mark reserved before the restart is where the new process starts
    from; it waits out (at most the reserve) what the mark is ahead of the
    wall clock, instead of running ahead of the other nodes. A wall clock
    that stepped back over the restart is jumped, not waited for."""
    before = HybridClock(2, Reservation(tmp_path), now=lambda: 7_000)
    issued = [before.next() for _ in range(3)]
    waited: list[float] = []
    after = HybridClock(2, Reservation(tmp_path), now=lambda: 8_000, sleep=waited.append)
    assert after.next() > max(issued)
    assert waited and 0 < waited[0] <= RESERVE_NS / 1e9
    stepped_back = HybridClock(2, Reservation(tmp_path), now=lambda: 0, sleep=waited.append)
    assert stepped_back.next() > max(issued)


def test_a_version_seen_before_a_restart_is_passed_after_it_fake_clock(tmp_path: Path) -> None:
    far_ahead = (50 * RESERVE_NS) << NODE_BITS
    before = HybridClock(0, Reservation(tmp_path), now=lambda: 1_000)
    before.observe(far_ahead)  # a record stored from a node whose clock is ahead
    after = HybridClock(0, Reservation(tmp_path), now=lambda: 1_000, sleep=lambda _: None)
    assert after.next() > far_ahead


def test_the_reservation_is_written_once_per_reserve_not_per_version(tmp_path: Path) -> None:
    now = [1_000]
    reservation = Reservation(tmp_path)
    clock = HybridClock(0, reservation, now=lambda: now[0])
    clock.next()
    mark = reservation.load()
    for step in range(1000):
        now[0] = 1_000 + step * 1000  # a microsecond a version: 1 ms in all
        clock.next()
    assert reservation.load() == mark
