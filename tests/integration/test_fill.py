"""``selectorkv fill``: the whole key space, filler up to the size, and
safe to interrupt and run again."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from selectorkv.kv.storage import RocksStorage
from selectorkv.lab.load.fill import fill
from selectorkv.lab.load.keyspace import KEY_COUNT
from tests.support import serve_process


def directory_size(path: str) -> int:
    return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())


def table_files_size(path: str) -> int:
    storage = RocksStorage(path)
    try:
        return storage.table_files_size()
    finally:
        storage.close()


def key_space_entries(path: str) -> tuple[int, set[int]]:
    """How many keys of the key space are stored, and their value sizes."""
    storage = RocksStorage(path)
    try:
        cursor = storage.range(b"000", b"~")
        count, sizes = 0, set()
        for key, value in cursor:
            assert re.fullmatch(rb"[a-zA-Z0-9]{3}", key), key
            count += 1
            sizes.add(len(value))
        return count, sizes
    finally:
        storage.close()


def test_fills_the_key_space_and_reaches_the_size(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    report = fill(path, 100 * 2**20)
    assert report.keys == KEY_COUNT and report.fillers > 0
    assert report.size == table_files_size(path) >= 100 * 2**20  # the size it reports is real
    assert directory_size(path) >= 100 * 2**20
    assert key_space_entries(path) == (KEY_COUNT, {300})


def test_the_progress_reads_100_percent_only_when_done(tmp_path: Path) -> None:
    """A --size below the key space's own still writes the key space whole:
    the bar measures against that, and reaches 100% at the end only."""
    out = io.StringIO()
    report = fill(str(tmp_path / "db"), 2**20, out)
    lines = [line for line in out.getvalue().split("\r") if line.strip()]
    assert report.size > 2**20 and report.fillers == 0
    assert "100%" in lines[-1] and "done" in lines[-1]
    assert all("100%" not in line for line in lines[:-1])
    assert all(" / 68.9 MiB" in line for line in lines)  # the key space, not the 1 MiB asked


class InterruptAfter(io.StringIO):
    """A progress stream that raises KeyboardInterrupt (as Ctrl-C would)
    after ``writes`` updates: an interruption at a known point."""

    def __init__(self, writes: int) -> None:
        super().__init__()
        self.left = writes

    def write(self, text: str) -> int:
        self.left -= 1
        if self.left < 0:
            raise KeyboardInterrupt
        return super().write(text)


@pytest.mark.parametrize("interrupt_after", [10, 70])  # in the key space; in the filler
def test_interrupted_fill_runs_again_to_completion(tmp_path: Path, interrupt_after: int) -> None:
    path = str(tmp_path / "db")
    with pytest.raises(KeyboardInterrupt):
        fill(path, 100 * 2**20, InterruptAfter(interrupt_after))
    report = fill(path, 100 * 2**20)
    assert report.size == table_files_size(path) >= 100 * 2**20
    assert directory_size(path) >= 100 * 2**20
    assert key_space_entries(path) == (KEY_COUNT, {300})
    again = fill(path, 100 * 2**20)  # a finished fill returns at once, changing nothing
    assert again.fillers == report.fillers


def test_command_line_and_a_directory_held_by_a_server(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    run = [sys.executable, "-m", "selectorkv", "fill", "--data", path, "--size", "1MiB"]
    result = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"{KEY_COUNT:,} keys of the key space" in result.stdout
    assert "the key space alone is larger than --size 1 MiB" in result.stdout
    server = serve_process("--data", path)
    try:
        held = subprocess.run(run, capture_output=True, text=True, timeout=60)
        assert held.returncode == 1 and "lock" in held.stderr.lower()
        assert "Traceback" not in held.stderr
    finally:
        server.stop()
