"""``selectorkv fill``: a database ready for the study, as the seed's was.

Every key of the benchmark key space is written first (so GETs in a run
hit), with a random 300-letter value; then filler entries under keys that
sort after the key space (``~fill...``) until the directory reaches the
requested size. Writes go in batches, one write-ahead-log append each.

A cluster node stores versioned records (records.py), not plain values:
``records=True`` writes each value as a record of one fixed version, held
by every node (``MAX_REPLICAS``), and marks the directory as a cluster
node's, so that a copy of it serves as any node of a lab cluster (every
node then holds the whole key space, as the single node does: the same
table size, the same cost per lookup).

Progress is kept in the database itself (two ``~fill-*`` keys), so an
interrupted fill picks up where it stopped when run again, and a finished
one returns at once.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from selectorkv.kv.records import FORMAT_FILE, MAX_REPLICAS, RECORDS_FORMAT, Record
from selectorkv.kv.storage import RocksStorage
from selectorkv.lab.load.keyspace import ALPHABET, BODY_LENGTH, ID_LENGTH, KEY_COUNT, all_keys

BATCH = 4096  # entries per atomic write
FLUSH_EVERY = 16 * 1024 * 1024  # bytes written between size checks
KEY_SPACE_DONE = b"~fill-keyspace-done"
NEXT_FILLER = b"~fill-next"
DONE = "done"  # the progress bar's last stage


@dataclass
class FillReport:
    keys: int  # of the key space, present
    fillers: int
    size: int  # bytes of table files on disk


FILL_VERSION = 1 << 32  # the records' version: older than any write a node makes


class Values:
    """Random 300-letter values, cut from one random pool (fast); as
    records when ``records``."""

    def __init__(self, seed: int | None = None, records: bool = False) -> None:
        self._random = random.Random(seed)
        self._pool = "".join(self._random.choices(ALPHABET, k=1 << 16)).encode()
        self._records = records

    def next(self) -> bytes:
        start = self._random.randrange(len(self._pool) - BODY_LENGTH)
        value = self._pool[start : start + BODY_LENGTH]
        return Record(FILL_VERSION, value, MAX_REPLICAS).encode() if self._records else value


def batches(keys: Iterator[bytes], values: Values) -> Iterator[list[tuple[bytes, bytes]]]:
    batch: list[tuple[bytes, bytes]] = []
    for key in keys:
        batch.append((key, values.next()))
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


# What the key space alone writes: every key with its value. A --size below
# it still gets the whole key space (a run's GETs must hit).
KEY_SPACE_BYTES = KEY_COUNT * (ID_LENGTH + BODY_LENGTH)


class Progress:
    """A one-line progress bar on ``out`` (a terminal or a log), towards
    the larger of the size asked for and the key space's own; it reads 100%
    only once the fill is done."""

    def __init__(self, out: IO[str] | None, size: int) -> None:
        self._out = out
        self._target = max(size, KEY_SPACE_BYTES)

    def show(self, size: int, stage: str) -> None:
        if self._out is None:
            return
        share = 1.0 if stage == DONE else min(0.99, size / self._target)
        bar = "#" * round(share * 30)
        self._out.write(
            f"\rfill: [{bar:<30}] {share:4.0%} {size / 2**20:7.1f} / "
            f"{self._target / 2**20:.1f} MiB  {stage}   "
        )
        self._out.flush()

    def done(self) -> None:
        if self._out is not None:
            self._out.write("\n")


def fill(
    path: str, size: int, progress_out: IO[str] | None = None, records: bool = False
) -> FillReport:
    """Fill ``path`` (created if missing) to at least ``size`` bytes; with
    ``records``, as a cluster node's data."""
    os.makedirs(path, exist_ok=True)
    marker = os.path.join(path, FORMAT_FILE)
    if records != os.path.exists(marker) and os.listdir(path):
        raise ValueError(f"{path} holds data of the other format; give another directory")
    if records:
        with open(marker, "w") as out:
            out.write(RECORDS_FORMAT)
    filler = Filler(RocksStorage(path), Progress(progress_out, size), Values(records=records))
    try:
        filler.key_space()
        while True:
            fillers = filler.fillers(size)
            # Until compaction the table files hold overwritten versions too
            # (a fill that ran again after an interruption wrote part of the
            # key space twice): only the compacted size says the target is met.
            if (final := filler.compact()) >= size:
                break
        filler.progress.show(final, DONE)
        filler.progress.done()
        return FillReport(keys=KEY_COUNT, fillers=fillers, size=final)
    finally:
        filler.storage.close()


class Filler:
    """Writes batches into one database and knows how large it is."""

    def __init__(self, storage: RocksStorage, progress: Progress, values: Values) -> None:
        self.storage = storage
        self.progress = progress
        self.values = values
        self.written_since_flush = 0

    def size_now(self) -> int:
        # Table files plus what has not been flushed into them yet. The
        # directory itself overstates the data while compaction runs (old
        # files wait to be deleted), so it is not what is measured.
        return self.storage.table_files_size() + self.written_since_flush

    def flush(self) -> None:
        self.storage.flush()  # the size on disk catches up with what was written
        self.written_since_flush = 0

    def write(self, batch: list[tuple[bytes, bytes]]) -> None:
        self.storage.apply_batch(batch)
        self.written_since_flush += len(batch) * BODY_LENGTH
        if self.written_since_flush >= FLUSH_EVERY:
            self.flush()

    def key_space(self) -> None:
        """Every key of the key space, once (a run again skips it)."""
        if self.storage.get(KEY_SPACE_DONE) is not None:
            return
        for number, batch in enumerate(batches(all_keys(), self.values), start=1):
            self.write(batch)
            done = min(number * BATCH, KEY_COUNT)
            self.progress.show(self.size_now(), f"key space {done:,}/{KEY_COUNT:,}")
        self.storage.put(KEY_SPACE_DONE, b"1")

    def fillers(self, size: int) -> int:
        """Filler entries after the key space until the data reaches
        ``size``; how many there are in all."""
        next_filler = int(self.storage.get(NEXT_FILLER) or b"0")
        self.flush()
        while (current := self.size_now()) < size:
            self.progress.show(current, f"filler {next_filler:,}")
            keys = (b"~fill%010d" % i for i in range(next_filler, next_filler + BATCH))
            for batch in batches(keys, self.values):
                next_filler += len(batch)
                self.write([*batch, (NEXT_FILLER, b"%d" % next_filler)])  # progress, atomically
        return next_filler

    def compact(self) -> int:
        """Flush and compact (every run the lab starts on a copy begins
        settled); the size after."""
        self.flush()
        self.progress.show(self.size_now(), "compacting")
        self.storage.compact()
        return self.size_now()
