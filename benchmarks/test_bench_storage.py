"""group=storage: RocksDB through the storage interface (rocksdict, raw mode)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from selectorkv.kv.storage import RocksStorage

KEYS = [b"%03d" % i for i in range(1000)]
VALUE = b"v" * 300


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[RocksStorage]:
    store = RocksStorage(str(tmp_path / "db"))
    for key in KEYS:
        store.put(key, VALUE)
    yield store
    store.close()


def test_get_hit(benchmark: BenchmarkFixture, storage: RocksStorage) -> None:
    benchmark.group = "storage"
    keys = itertools.cycle(KEYS)
    assert benchmark(lambda: storage.get(next(keys))) == VALUE


def test_get_miss(benchmark: BenchmarkFixture, storage: RocksStorage) -> None:
    benchmark.group = "storage"
    assert benchmark(storage.get, b"absent") is None


def test_put(benchmark: BenchmarkFixture, storage: RocksStorage) -> None:
    benchmark.group = "storage"
    keys = itertools.cycle(KEYS)
    benchmark(lambda: storage.put(next(keys), VALUE))
    assert storage.get(KEYS[0]) == VALUE


def test_delete(benchmark: BenchmarkFixture, storage: RocksStorage) -> None:
    benchmark.group = "storage"
    keys = itertools.cycle(KEYS)
    benchmark(lambda: storage.delete(next(keys)))
    assert storage.get(KEYS[0]) is None
