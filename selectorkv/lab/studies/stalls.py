"""The stall timeline: what held a server up during a constant-rate run,
on one clock with the latency of the requests due then.

Four sources, each where it can be seen:

- the load generator's timeline: per bucket of due time (10 ms), the
  requests due then, their p99, and how late the generator itself sent
  one while a connection was free (lab/load/generator.py);
- the server's own record (``--record-stalls``, reactor/stalls.py):
  garbage collections and SelectorThread rounds of 1 ms or more;
- the kernel's: the time the server's Python threads waited on a run
  queue while their CPU ran something else, and the time RocksDB's own
  threads ran, from ``/proc/PID/task/TID/schedstat``, and the time a
  virtual machine's CPU was stolen by its hypervisor, from ``/proc/stat``,
  sampled every 10 ms from this process (not the server's, whose GIL it
  would take);
- RocksDB's: flushes and compactions from its LOG (``EVENT_LOG_v1`` lines,
  on the wall clock) and its lines about stalling writes.

Everything is put on ``time.monotonic()`` (the wall clock's events through
the offset between the two clocks, read once), in seconds from the run's
request 0. ``attribute`` then says, for the buckets whose p99 broke the
bound, which kinds of event overlapped the time their slowest requests were
in flight: each cause's share of the tail. docs/lab.md, "The stall
timeline".
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from selectorkv.lab.harness.cpus import load_cpus

SAMPLE_SECONDS = 0.01
# RocksDB's own line prefix, "2026/12/08-00:21:18.611501": the machine's local time.
LOG_TIME = re.compile(rb"^(\d{4}/\d{2}/\d{2}-\d{2}:\d{2}:\d{2}\.\d{6}) ")
STALL_WORDS = (b"Stalling writes", b"Stopping writes")
RUN_QUEUE_EVENT = 0.002  # seconds of a 10 ms sample, from which an event counts
TICKS = os.sysconf("SC_CLK_TCK")  # /proc/stat's unit: a hundredth of a second, usually


class SchedSampler(threading.Thread):
    """Every SAMPLE_SECONDS, from the server's threads' schedstat: the time
    its Python threads waited on a run queue while their CPU ran something
    else, the time RocksDB's own threads (named ``rocksdb:*``: flushes,
    compactions) ran; and from /proc/stat the time the hypervisor gave a CPU
    of this virtual machine to someone else (steal, the most of any CPU, in
    ticks of 10 ms), as (time.monotonic(), seconds the CPU was taken,
    seconds RocksDB ran, seconds stolen) since the last sample.

    "Taken" is the Python threads' wait, but no more than the part of the
    sample in which none of them ran: in async mode the SelectorThread and
    the PayloadThread share one CPU and wait for each other all the time,
    which is the design at work, not a stall."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="schedstat sampler", daemon=True)
        self._pid = pid
        self._done = threading.Event()
        self.samples: list[tuple[float, float, float, float]] = []

    @staticmethod
    def _stolen() -> list[float]:
        """Each CPU's steal so far, seconds (/proc/stat's eighth field)."""
        with open("/proc/stat") as stat:
            return [
                int(line.split()[8]) / TICKS
                for line in stat
                if line.startswith("cpu") and line[3].isdigit()
            ]

    def _totals(self) -> tuple[float, float, float]:
        """Seconds so far: the Python threads' wait and run, RocksDB's run."""
        waited = ran = rocksdb = 0
        for task in Path(f"/proc/{self._pid}/task").iterdir():
            try:
                fields = (task / "schedstat").read_text().split()
                if (task / "comm").read_text().startswith("rocksdb"):
                    rocksdb += int(fields[0])
                else:
                    ran += int(fields[0])
                    waited += int(fields[1])
            except (OSError, IndexError, ValueError):
                continue  # the thread ended meanwhile
        return waited / 1e9, ran / 1e9, rocksdb / 1e9

    def run(self) -> None:
        os.sched_setaffinity(0, load_cpus())  # off the server's CPU
        last, stolen, then = self._totals(), self._stolen(), time.monotonic()
        while not self._done.wait(SAMPLE_SECONDS):
            try:
                now = self._totals()
            except OSError:
                return  # the server is gone
            steal, at = self._stolen(), time.monotonic()
            most = max((b - a for a, b in zip(stolen, steal, strict=True)), default=0.0)
            waited, ran, rocksdb = (b - a for a, b in zip(last, now, strict=True))
            self.samples.append((at, cpu_taken(waited, ran, at - then), rocksdb, most))
            last, stolen, then = now, steal, at

    def stop(self) -> None:
        self._done.set()
        self.join()


def cpu_taken(waited: float, ran: float, seconds: float) -> float:
    """Of ``seconds``, the time the Python threads' CPU ran something else
    while they waited: their wait (``waited``, summed over the threads),
    but no more than the time none of them ran (``ran``, summed too)."""
    return min(waited, max(0.0, seconds - ran))


class RunWatch:
    """Around one constant-rate run against a server started with
    ``--record-stalls``: samples its threads while the run goes, then
    gathers the server's record and its RocksDB LOG into the run's
    timeline (``timeline``, below).

        with RunWatch(server.url, server.pid, data) as watch:
            figures = ...  # the run, with its timeline
        data = watch.timeline(figures, bucket)
    """

    def __init__(self, url: str, pid: int, data: Path) -> None:
        self._url = url
        self._data = data
        self._sampler = SchedSampler(pid)
        self._offset = 0.0

    def __enter__(self) -> RunWatch:
        self._offset = wall_to_monotonic()
        self._sampler.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sampler.stop()

    def timeline(self, load: dict[str, Any], bucket: float) -> dict[str, Any]:
        """``load``: the run's figures, with its ``timeline`` and ``start_monotonic``."""
        since = load["start_monotonic"] - 1
        query = f"{self._url}/v0/debug/stalls?since={since}"
        with urllib.request.urlopen(query, timeout=10) as page:
            record = json.loads(page.read())
        flushes = rocksdb_events(self._data / "LOG", self._offset, since)
        return timeline(load, record["events"], self._sampler.samples, flushes, bucket)


def wall_to_monotonic() -> float:
    """What to subtract from a time.time() reading to put it on time.monotonic()."""
    return time.time() - time.monotonic()


def rocksdb_events(log: Path, offset: float, since: float) -> list[dict[str, Any]]:
    """Flushes and compactions (start to finish) and write stalls from a
    RocksDB LOG, on time.monotonic() (``offset``: ``wall_to_monotonic``),
    those that ended at ``since`` or later."""
    started: dict[tuple[str, int], float] = {}
    events: list[dict[str, Any]] = []
    for line in log.read_bytes().splitlines():
        if b"EVENT_LOG_v1 " in line:
            try:
                record = json.loads(line.split(b"EVENT_LOG_v1 ", 1)[1])
            except ValueError:
                continue
            kind, _, phase = str(record.get("event", "")).rpartition("_")
            if kind not in ("flush", "compaction"):
                continue
            at = record["time_micros"] / 1e6 - offset
            job = (kind, record.get("job", 0))
            if phase == "started":
                started[job] = at
            elif phase == "finished" and job in started:
                begin = started.pop(job)
                if at >= since:
                    events.append(event(kind, begin, at - begin))
        elif any(words in line for words in STALL_WORDS):
            stamp = LOG_TIME.match(line)
            if stamp is None:
                continue
            wall = datetime.strptime(stamp.group(1).decode(), "%Y/%m/%d-%H:%M:%S.%f").timestamp()
            if wall - offset >= since:
                detail = line[stamp.end() :].decode(errors="replace")[-120:]
                events.append(event("write stall", wall - offset, 0.0, detail))
    return events


def event(kind: str, start: float, seconds: float, detail: str = "") -> dict[str, Any]:
    return {"kind": kind, "start": start, "seconds": seconds, "detail": detail}


def sched_events(samples: list[tuple[float, float, float, float]]) -> list[dict[str, Any]]:
    """The samples in which the Python threads' CPU was taken from them
    RUN_QUEUE_EVENT or more while they waited to run ("run queue"), those
    in which RocksDB's threads ran that long ("rocksdb threads"), and those
    in which a CPU was stolen that long ("steal")."""
    found = []
    for at, taken, ran, stolen in samples:
        for kind, seconds in (("run queue", taken), ("rocksdb threads", ran), ("steal", stolen)):
            if seconds >= RUN_QUEUE_EVENT:
                found.append(event(kind, at - SAMPLE_SECONDS, seconds))
    return found


def generator_events(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The buckets in which the generator itself was over a millisecond late."""
    return [
        event("generator late", row["t"], row["generator_lag_ms"] / 1000)
        for row in timeline
        if row.get("generator_lag_ms", 0.0) > 1.0
    ]


def timeline(
    load: dict[str, Any],
    server_events: list[dict[str, Any]],
    samples: list[tuple[float, float, float, float]],
    rocksdb: list[dict[str, Any]],
    bucket: float,
) -> dict[str, Any]:
    """Every source on one axis: seconds from the run's request 0."""
    zero = load["start_monotonic"]
    shifted = [
        {**event, "start": event["start"] - zero}
        for event in [*server_events, *sched_events(samples), *rocksdb]
    ]
    shifted += generator_events(load["timeline"])
    return {
        "bucket_s": bucket,
        "latency": load["timeline"],
        "events": sorted(shifted, key=lambda event: event["start"]),
    }


def attribute(data: dict[str, Any], bound_ms: float) -> dict[str, Any]:
    """For each bucket whose p99 is over ``bound_ms``, the kinds of event
    that overlap the time its slowest requests were in flight (from the
    bucket's start to its end plus that p99); each kind's share of those
    buckets, and the share that no event explains."""
    bucket = data["bucket_s"]
    slow = [row for row in data["latency"] if row["p99_ms"] > bound_ms]
    counts: dict[str, int] = {}
    unexplained = 0
    for row in slow:
        begin, end = row["t"], row["t"] + bucket + row["p99_ms"] / 1000
        kinds = {
            event["kind"]
            for event in data["events"]
            if event["start"] < end and event["start"] + max(event["seconds"], bucket) > begin
        }
        for kind in kinds:
            counts[kind] = counts.get(kind, 0) + 1
        unexplained += not kinds
    total = max(1, len(slow))
    return {
        "buckets": len(data["latency"]),
        "slow_buckets": len(slow),
        "bound_ms": bound_ms,
        "share_by_kind": {kind: n / total for kind, n in sorted(counts.items())},
        "unexplained": unexplained / total,
    }
