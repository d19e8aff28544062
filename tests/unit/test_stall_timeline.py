"""The stall timeline's parts (lab/studies/stalls.py) on made-up inputs:
RocksDB's LOG read into flushes, compactions and write stalls on the
monotonic clock; the run-queue samples turned into events; every source
put on the run's axis; and each kind's share of the slow buckets. A real
run: python -m benchmarks.stall_timeline."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from selectorkv.lab.studies.stalls import (
    RUN_QUEUE_EVENT,
    attribute,
    cpu_taken,
    rocksdb_events,
    sched_events,
    timeline,
)

OFFSET = 1_000_000.0  # wall clock minus monotonic, made up


def log_line(wall: float, record: dict[str, object]) -> str:
    stamp = datetime.fromtimestamp(wall).strftime("%Y/%m/%d-%H:%M:%S.%f")
    return f"{stamp} 1401 EVENT_LOG_v1 {json.dumps(record)}\n"


def test_flushes_compactions_and_write_stalls_are_read_from_the_log(tmp_path: Path) -> None:
    wall = OFFSET + 500.0  # monotonic 500
    log = tmp_path / "LOG"
    stall = datetime.fromtimestamp(wall + 2).strftime("%Y/%m/%d-%H:%M:%S.%f")
    records = [
        (wall, {"job": 2, "event": "flush_started"}),
        (wall, {"job": 3, "event": "table_file_creation"}),
        (wall + 0.25, {"job": 2, "event": "flush_finished"}),
        (wall + 1, {"job": 4, "event": "compaction_started"}),
        (wall + 1.5, {"job": 4, "event": "compaction_finished"}),
    ]
    log.write_text(
        "".join(log_line(at, {"time_micros": int(at * 1e6), **record}) for at, record in records)
        + f"{stall} 1401 [WARN] Stalling writes because we have 4 immutable memtables\n"
        + "a line of another kind\n"
    )
    events = rocksdb_events(log, OFFSET, since=0.0)
    assert [(e["kind"], round(e["start"], 3), round(e["seconds"], 3)) for e in events] == [
        ("flush", 500.0, 0.25),
        ("compaction", 501.0, 0.5),
        ("write stall", 502.0, 0.0),
    ]
    assert rocksdb_events(log, OFFSET, since=501.6) == [events[2]]  # ended before: left out


def test_run_queue_waits_rocksdb_threads_and_steal_become_events_from_a_threshold() -> None:
    samples = [(10.0, RUN_QUEUE_EVENT / 2, 0.0, 0.0), (10.01, RUN_QUEUE_EVENT, 0.009, 0.01)]
    events = sched_events(samples)
    assert [(e["kind"], round(e["start"], 3)) for e in events] == [
        ("run queue", 10.0),
        ("rocksdb threads", 10.0),
        ("steal", 10.0),
    ]


def test_the_slow_buckets_are_attributed_to_the_events_that_overlap_them() -> None:
    load = {
        "start_monotonic": 100.0,
        "timeline": [
            {"t": 0.0, "p99_ms": 1.0, "generator_lag_ms": 0.0},
            {"t": 0.01, "p99_ms": 50.0, "generator_lag_ms": 0.0},  # during the collection
            {"t": 0.20, "p99_ms": 30.0, "generator_lag_ms": 4.0},  # the generator was late
            {"t": 0.50, "p99_ms": 20.0, "generator_lag_ms": 0.0},  # nothing seen
        ],
    }
    server = [{"kind": "gc", "start": 100.015, "seconds": 0.03, "detail": "2"}]
    data = timeline(load, server, [], [], 0.01)
    assert [(e["kind"], round(e["start"], 3)) for e in data["events"]] == [
        ("gc", 0.015),
        ("generator late", 0.2),
    ]
    shares = attribute(data, bound_ms=10.0)
    assert shares["slow_buckets"] == 3
    assert shares["share_by_kind"] == {"gc": 1 / 3, "generator late": 1 / 3}
    assert shares["unexplained"] == 1 / 3


def test_the_cpu_is_taken_only_for_waits_while_no_python_thread_ran() -> None:
    """Async mode: the SelectorThread and the PayloadThread wait for each
    other while one of them runs, and the CPU is never given away; sync
    mode with a flush on the CPU: the wait is the flush's time."""
    assert cpu_taken(waited=0.008, ran=0.010, seconds=0.010) == 0.0  # each waited for the other
    assert cpu_taken(waited=0.006, ran=0.004, seconds=0.010) == 0.006  # something else ran
    assert cpu_taken(waited=0.009, ran=0.004, seconds=0.010) == 0.006  # no more than was free
