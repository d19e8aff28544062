"""A cluster node's database of the first record format (no replicas byte)
over a real RocksDB in a temporary directory: refused by a node with what
to do, and rewritten by ``upgrade``, which finishes an interrupted run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from selectorkv.cluster.hints import upgrade_hints
from selectorkv.kv.records import (
    FIRST_FORMAT,
    FORMAT_FILE,
    RECORDS_FORMAT,
    Record,
    check_format,
    decode,
    upgrade,
    upgraded,
)
from selectorkv.kv.storage import RocksStorage

OLD_VALUE = b"v" + (7).to_bytes(16, "big") + b"seven"
OLD_TOMBSTONE = b"t" + (8).to_bytes(16, "big")


@pytest.fixture
def old_node(tmp_path: Path) -> Iterator[tuple[Path, RocksStorage]]:
    """A node directory of the first format: two records and a tool's value."""
    data = tmp_path / "node"
    storage = RocksStorage(str(data))
    storage.apply_batch([(b"a", OLD_VALUE), (b"b", OLD_TOMBSTONE), (b"~fill-next", b"42")])
    (data / FORMAT_FILE).write_text(FIRST_FORMAT)
    yield data, storage
    storage.close()


def test_a_first_format_record_gets_its_replicas() -> None:
    assert decode(upgraded(OLD_VALUE, 3) or b"") == Record(7, b"seven", 3)
    assert decode(upgraded(OLD_TOMBSTONE, 2) or b"") == Record(8, None, 2)
    assert upgraded(Record(7, b"seven", 3).encode(), 3) is None  # this format already
    assert upgraded(b"42", 3) is None  # not a record


def test_a_node_refuses_the_first_format_and_says_how_to_upgrade(
    old_node: tuple[Path, RocksStorage],
) -> None:
    data, storage = old_node
    with pytest.raises(ValueError, match="selectorkv upgrade-records --data"):
        check_format(str(data), storage, cluster=True)


def test_upgrade_rewrites_every_record_and_marks_the_directory(
    old_node: tuple[Path, RocksStorage],
) -> None:
    data, storage = old_node
    assert upgrade(str(data), storage, 3) == 2
    assert decode(storage.get(b"a") or b"") == Record(7, b"seven", 3)
    assert decode(storage.get(b"b") or b"") == Record(8, None, 3)
    assert storage.get(b"~fill-next") == b"42"  # not a record: left alone
    assert (data / FORMAT_FILE).read_text() == RECORDS_FORMAT
    check_format(str(data), storage, cluster=True)  # served now
    assert upgrade(str(data), storage, 3) == 0  # a second run changes nothing


def test_an_interrupted_upgrade_is_finished_by_running_it_again(
    old_node: tuple[Path, RocksStorage],
) -> None:
    data, storage = old_node
    storage.put(b"a", upgraded(OLD_VALUE, 2) or b"")  # rewritten before the interruption
    assert upgrade(str(data), storage, 2) == 1
    assert decode(storage.get(b"a") or b"") == Record(7, b"seven", 2)  # not rewritten twice
    assert decode(storage.get(b"b") or b"") == Record(8, None, 2)


def test_upgrade_refuses_what_is_no_cluster_node_and_a_count_out_of_range(
    old_node: tuple[Path, RocksStorage], tmp_path: Path
) -> None:
    data, storage = old_node
    with pytest.raises(ValueError, match=r"replicas must be 1\.\.255"):
        upgrade(str(data), storage, 256)
    (data / FORMAT_FILE).unlink()
    with pytest.raises(ValueError, match="no cluster node's records"):
        upgrade(str(data), storage, 3)
    assert storage.get(b"a") == OLD_VALUE  # nothing changed


def test_hints_of_the_first_format_are_rewritten(tmp_path: Path) -> None:
    storage = RocksStorage(str(tmp_path / "hints"))
    try:
        head = (123).to_bytes(8, "big") + (1).to_bytes(4, "big")  # made at, key length
        storage.put(b"http://b:1\0" + bytes(8), head + b"k" + OLD_VALUE)
        assert upgrade_hints(storage, 3) == 1
        raw = storage.get(b"http://b:1\0" + bytes(8)) or b""
        assert raw[:13] == head + b"k"
        assert decode(raw[13:]) == Record(7, b"seven", 3)
        assert upgrade_hints(storage, 3) == 0
    finally:
        storage.close()
