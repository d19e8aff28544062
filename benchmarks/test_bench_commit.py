"""group=commit: what a write batch saves, the ground work of group commit.
N puts as one WriteBatch (``apply_batch``: one write-ahead-log append, one sync
with ``fsync``) against N single puts (N appends, N syncs), for N = 1, 8
and 64, with and without a sync of the log on every write. Compare the
"batch" and "single" rows of one size: the time is for all N writes."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from selectorkv.kv.storage import RocksStorage

KEYS = [b"%04d" % i for i in range(4096)]
VALUE = b"v" * 300


@pytest.fixture(params=[False, True], ids=["no-sync", "fsync"])
def storage(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RocksStorage]:
    store = RocksStorage(str(tmp_path / "db"), fsync=bool(request.param))
    yield store
    store.close()


@pytest.mark.parametrize("writes", [1, 8, 64])
def test_batch(benchmark: BenchmarkFixture, storage: RocksStorage, writes: int) -> None:
    benchmark.group = f"commit, {writes} writes"
    keys = itertools.cycle(KEYS)
    benchmark(lambda: storage.apply_batch([(next(keys), VALUE) for _ in range(writes)]))
    assert storage.get(KEYS[0]) == VALUE


@pytest.mark.parametrize("writes", [1, 8, 64])
def test_single(benchmark: BenchmarkFixture, storage: RocksStorage, writes: int) -> None:
    benchmark.group = f"commit, {writes} writes"
    keys = itertools.cycle(KEYS)

    def one_by_one() -> None:
        for _ in range(writes):
            storage.put(next(keys), VALUE)

    benchmark(one_by_one)
    assert storage.get(KEYS[0]) == VALUE
