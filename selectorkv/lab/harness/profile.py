"""Profiles of a running server, and what the lab reads out of them: py-spy
for CPU (``--threads``), waits (``--idle``: the lock profile) and the GIL
(``--gil``), each as a flame graph and as speedscope JSON; memray for
allocations (``--trace-python-allocators``). Each sample stops the server
(``--nonblocking`` tore the samples of running threads and hid the work).

``thread_profiles`` turns a speedscope profile into each thread's sampled
seconds by category (a wait, RocksDB, h11, socket I/O, other Python), from
the innermost frame outwards, and keeps them beside the profile.
docs/lab.md, "Profiles, and what they can show in CPython".
"""

from __future__ import annotations

import json
import linecache
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PEER_WAIT = "wait: peer (blocking call)"
# The methods of replication.py that wait for a peer's answer.
BLOCKING_PEER_CALLS = ("call", "_call")
PYSPY_RATE = 100  # samples per second, within run-to-run noise (lab.md)

# What a py-spy recording keeps, and the flags that say so.
KINDS: dict[str, list[str]] = {
    "cpu": [],  # threads on CPU
    "wait": ["--idle"],  # every thread, waiting or not: the lock profile
    "gil": ["--gil"],  # only the thread holding the GIL
}


def pyspy_binary() -> str:
    """py-spy is a native program; pip puts it beside this interpreter."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise RuntimeError("py-spy is not installed: pip install 'selectorkv[lab]'")
    return found


def pyspy_command(pid: int, seconds: float, out: Path, kind: str, fmt: str) -> list[str]:
    return [
        pyspy_binary(),
        "record",
        "--pid",
        str(pid),
        "--threads",
        "-d",
        str(max(1, round(seconds))),
        "-r",
        str(PYSPY_RATE),
        "-f",
        fmt,
        "-o",
        str(out),
        *KINDS[kind],
    ]


# A recording's two files, each made by its own py-spy run: the flame graph
# to look at, and speedscope's JSON that the report computes shares from.
FORMATS = (("flamegraph", ".svg"), ("speedscope", ".speedscope.json"))


def start_pyspy(pid: int, seconds: float, out: Path, kind: str, fmt: str) -> Any:
    """Start one recording; returns the process to wait for. One at a time
    per server: two py-spy processes suspend the same threads with ptrace,
    and one whose start-up collides with the other's sample fails with
    EPERM ("Failed to suspend process"), more often the busier the machine."""
    return subprocess.Popen(
        pyspy_command(pid, seconds, out, kind, fmt),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finish(process: Any) -> None:
    _, err = process.communicate(timeout=120)
    if process.returncode != 0:
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-1000:]}")


def category(frames: list[dict[str, Any]]) -> str:
    """Where a sample was, innermost frame first: a wait (for a replica
    too, in a blocking peer call), RocksDB, h11, a socket call, or other
    Python."""
    leaf = frames[0]
    name = leaf.get("name", "")
    line = linecache.getline(leaf.get("file", ""), leaf.get("line", 0)).strip()
    if name.endswith(".select") or name == "select":
        return "wait: select"
    if "_queue.get(" in line:
        return "wait: queue"
    if "acquire(" in line or ("with self._" in line and "lock" in line.lower()):
        return "wait: lock"
    if name == "sigwait":
        return "wait: signal"
    # Modules are known by their file's name under a selectorkv directory,
    # so that profiles saved before the package took its layers read the same.
    files = [frame.get("file", "") for frame in frames]
    if any(
        # py-spy may prefix the class; "_call" is the method's name in
        # profiles saved before BlockingPeerCalls took it over.
        frame.get("name", "").split(".")[-1] in BLOCKING_PEER_CALLS
        and _is_module(frame.get("file", ""), "replication.py")
        for frame in frames
    ):
        return PEER_WAIT  # a blocking peer call: a thread waits for a replica's answer
    if any(_is_module(path, "storage.py") for path in files):
        return "RocksDB"
    if any("/h11/" in path or "/h11_mypyc/" in path for path in files):
        return "h11"
    if any(call in line for call in (".send(", ".recv(", ".sendmsg(", ".recv_into(")):
        return "socket I/O"
    return "other Python"


def _is_module(path: str, name: str) -> bool:
    return path.endswith("/" + name) and "/selectorkv/" in path


@dataclass
class ThreadProfile:
    name: str  # SelectorThread-1, PayloadThread-1, Acceptor, MainThread
    tid: str  # the kernel's thread id
    seconds: float  # sampled time
    categories: Counter[str]  # category -> seconds

    @property
    def kind(self) -> str:
        return self.name.split("-")[0]


def thread_profiles(speedscope: Path) -> list[ThreadProfile]:
    """Per thread, the sampled seconds by category. Computed once and kept
    beside the profile (``.threads.json``): a category reads the source line
    of a sample, which only the checkout that ran the study has, so a report
    drawn again elsewhere, or after the code has moved, reads the saved ones."""
    saved = speedscope.with_name(speedscope.name.removesuffix(".speedscope.json") + ".threads.json")
    if saved.exists():
        return [
            ThreadProfile(item["name"], item["tid"], item["seconds"], Counter(item["categories"]))
            for item in json.loads(saved.read_text())
        ]
    profiles = _categorised(speedscope)
    saved.write_text(json.dumps([vars(profile) for profile in profiles], indent=1) + "\n")
    return profiles


def _categorised(speedscope: Path) -> list[ThreadProfile]:
    data = json.loads(speedscope.read_text())
    frames = data["shared"]["frames"]
    profiles = []
    for profile in data["profiles"]:
        # py-spy names a profile 'Thread 1234 "SelectorThread-1"' (1234: the kernel's id).
        label: str = profile["name"]
        name = label.split('"')[1] if '"' in label else label
        tid = label.split()[1] if label.startswith("Thread ") else ""
        seconds: Counter[str] = Counter()
        for sample, weight in zip(profile["samples"], profile["weights"], strict=True):
            stack = [frames[i] for i in reversed(sample)]  # speedscope: outermost first
            if stack:
                seconds[category(stack)] += weight
        profiles.append(ThreadProfile(name, tid, sum(seconds.values()), seconds))
    return profiles


def memray_command(command: list[str], capture: Path) -> list[str]:
    """The server command, run under memray."""
    return [
        sys.executable,
        "-m",
        "memray",
        "run",
        "--trace-python-allocators",
        "-q",
        "-f",
        "-o",
        str(capture),
        *command,
    ]


def memray_outputs(capture: Path, out_dir: Path, stem: str, top: int = 10) -> list[dict[str, Any]]:
    """Flame graphs (one that opens offline, one that loads its scripts from
    a CDN and is small enough to keep in git), and the top allocation sites
    by total bytes."""
    memray = [sys.executable, "-m", "memray"]
    for name, extra in ((f"{stem}-offline.html", ["--no-web"]), (f"{stem}.html", [])):
        subprocess.run(
            [
                *memray,
                "flamegraph",
                "--split-threads",
                "-f",
                *extra,
                "-o",
                str(out_dir / name),
                str(capture),
            ],
            check=True,
            capture_output=True,
        )
    stats = out_dir / f"{stem}-stats.json"
    subprocess.run(
        [*memray, "stats", "--json", "-f", "-n", str(top), "-o", str(stats), str(capture)],
        check=True,
        capture_output=True,
    )
    data = json.loads(stats.read_text())
    sites: list[dict[str, Any]] = data["top_allocations_by_size"]
    return [
        {
            "site": site["location"],
            "bytes": site["size"],
            "share": site["size"] / max(1, data["total_bytes_allocated"]),
        }
        for site in sites
    ]
