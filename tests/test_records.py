"""Versioned records without a database: encoding, ordering, the clock."""

from __future__ import annotations

import threading

import pytest

from selectorkv.records import Record, VersionClock, decode, newer


@pytest.mark.parametrize("record", [Record(1, b"value"), Record(2**100, b""), Record(7, None)])
def test_records_survive_encoding(record: Record) -> None:
    assert decode(record.encode()) == record


@pytest.mark.parametrize("raw", [b"", b"v", b"x" + bytes(16), b"t" + bytes(16) + b"extra"])
def test_bytes_that_are_not_a_record_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode(raw)


def test_a_newer_version_wins_whatever_it_holds() -> None:
    assert newer(None, Record(1, b"a"))
    assert newer(Record(1, b"a"), Record(2, None))  # a later delete wins
    assert not newer(Record(2, None), Record(1, b"a"))  # an older value cannot revive it
    assert not newer(Record(2, b"a"), Record(2, b"b"))


def test_one_clock_never_repeats_itself_even_across_threads() -> None:
    clock = VersionClock(3)
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
    a, b = VersionClock(0), VersionClock(1)
    assert not {a.next() for _ in range(1000)} & {b.next() for _ in range(1000)}
