"""Where the servers and the load run, and how much CPU they used: the CPU
split every side-by-side measurement uses (the servers on the highest CPUs,
the load on the rest), a command prefix that pins a child to CPUs, and the
kernel's own CPU counts from /proc, which no sampling profiler can skew."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

TICK = os.sysconf("SC_CLK_TCK")


def server_cpus(servers: int = 1) -> list[int]:
    """The CPUs the servers are pinned to, one each in turn: the highest
    ``servers`` of them, but never more than half, so that the load keeps
    the rest (on 2 cores: the servers share CPU 1, the load has CPU 0)."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[-max(1, min(servers, len(allowed) // 2)) :]


def load_cpus(servers: int = 1) -> set[int]:
    """The CPUs for everything but the servers."""
    allowed = os.sched_getaffinity(0)
    return allowed - set(server_cpus(servers)) or allowed


def pinned(cpus: Iterable[int]) -> list[str]:
    """A command prefix that runs a program on ``cpus``: util-linux's
    taskset, rather than Python code between fork and exec (unsafe in a
    process with threads)."""
    return ["taskset", "-c", ",".join(map(str, sorted(cpus)))]


def on_load_cpus(work: Callable[[], T], servers: int = 1) -> T:
    """Run ``work`` in a thread pinned to the load CPUs (and so are the
    processes it starts)."""
    results: list[T] = []
    errors: list[BaseException] = []

    def run_pinned() -> None:
        os.sched_setaffinity(0, load_cpus(servers))
        try:
            results.append(work())
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run_pinned, name="lab-load")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def _stat_fields(stat: Path) -> list[str]:
    """The fields of a /proc stat file after "pid (comm) "."""
    text = stat.read_text()
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, descendants: bool = False) -> float:
    """User + system CPU seconds of process ``pid`` so far; with
    ``descendants``, of its children and theirs too (a launcher's nodes)."""
    todo, total = [pid], 0.0
    children = _children() if descendants else {}
    while todo:
        current = todo.pop()
        try:
            fields = _stat_fields(Path(f"/proc/{current}/stat"))
        except OSError:
            continue  # it ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / TICK
        todo += children.get(current, [])
    return total


def _children() -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int(_stat_fields(entry / "stat")[1])
            except OSError:
                continue
            found.setdefault(parent, []).append(int(entry.name))
    return found


def thread_cpu(pid: int) -> dict[str, list[float]]:
    """CPU seconds each thread of ``pid`` has used so far, [user, system].
    User time is Python running (holding the GIL, or RocksDB called with it
    held); system time is the system calls, made with the GIL released."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = _stat_fields(task / "stat")
        except OSError:
            continue  # the thread ended meanwhile
        found[task.name] = [int(fields[11]) / TICK, int(fields[12]) / TICK]
    return found
