"""The tutorial's figures, measured: ``python -m docs.tutorial.measure``
(or ``make tutorial``).

Each step runs as its own process on a free port, all of them up at once,
and this script is their client. It prints, as Markdown, what each chapter
quotes:

1. the second client: how long a client waits for its answer while another
   keeps its connection open (steps 1-3);
2. idle clients: threads, memory and file descriptors of a server holding
   ``--idle`` connections that send nothing (steps 2 and 3);
3. the slow reader: a client that pipelines requests for large values and
   reads nothing, beside a client that reads; what the second waits, what
   the server's memory grows by, and whether the first gets every byte in
   the end (steps 2, 3 and 3b);
4. the parsers: bad and unusual requests sent to the hand parser (step 3)
   and to h11 (step 4), and what each answers;
5. throughput: ``wrk -t1 -c64`` GETs against every step, in interleaved
   rounds (every step once per round, the ratios taken within a round),
   with the cores the server process used, from its CPU time.

wrk runs on CPU 0 (taskset) when there is one to pin to; the servers are not
pinned, so that step 6's threads could use a second core if the GIL let them.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from selectorkv.lab.harness.servers import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
VALUE = b"v" * 100
HOLD_S = 1.0  # how long the first client keeps its connection in "the second client"
SLOW_READER_STEPS = (
    ("2 threads", "step2_threads"),
    ("3 reactor", "step3_reactor"),
    ("3b flow control", "step3b_flow"),
)


class StepProcess:
    """``python -m docs.tutorial.<module> --port 0 ...`` as a child process
    (the lab harness's ServerProcess); ``selectorkv`` (the real server,
    chapter 7) runs as itself."""

    def __init__(self, module: str, *args: str) -> None:
        name = module if module == "selectorkv" else f"docs.tutorial.{module}"
        self.server = ServerProcess([sys.executable, "-m", name, *args, "--port", "0"], cwd=ROOT)
        self.address = self.server.address

    def status(self, field: str) -> int:
        """A number from /proc/<pid>/status (Threads, VmRSS, VmSize)."""
        text = Path(f"/proc/{self.server.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+)", text, re.MULTILINE)
        assert match, field
        return int(match.group(1))

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.server.pid}/fd"))

    def cpu_seconds(self) -> float:
        """User + system time of every thread of the process so far."""
        return self.server.cpu_seconds()

    def stop(self) -> None:
        self.server.kill()


def request(method: str, key: str, body: bytes = b"", extra: str = "") -> bytes:
    head = f"{method} /v0/entity?id={key} HTTP/1.1\r\nHost: tutorial\r\n{extra}"
    head += f"Content-Length: {len(body)}\r\n" if body or method == "PUT" else ""
    return head.encode() + b"\r\n" + body


class Answers:
    """The answers on one blocking socket, in order: the tutorial's servers
    always frame them with Content-Length. Bytes past one answer (pipelined
    answers arrive together) are kept for the next."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def next(self) -> tuple[int, bytes]:
        """(status, body) of the next answer."""
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self.receive()
        head = bytes(self.buffer[:end])
        found = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        length = int(found.group(1)) if found else 0
        while len(self.buffer) < end + 4 + length:
            self.receive()
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        return int(head.split(b" ")[1]), body

    def receive(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a complete answer")
        self.buffer += chunk


def read_answer(sock: socket.socket) -> tuple[int, bytes]:
    """One answer on a socket that has no other answer in flight."""
    return Answers(sock).next()


def ask(address: tuple[str, int], raw: bytes) -> tuple[int, bytes]:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(raw)
        return read_answer(sock)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


# 1. The second client ------------------------------------------------------


def second_client_wait(step: StepProcess) -> float:
    """Seconds the second client waits for its answer while the first keeps
    its connection open for HOLD_S after its own answer."""
    first = socket.create_connection(step.address, timeout=10)
    first.sendall(request("PUT", "first", VALUE))
    read_answer(first)
    second = socket.create_connection(step.address, timeout=10)
    sent = time.perf_counter()
    second.sendall(request("GET", "first"))
    selector = selectors.DefaultSelector()
    selector.register(second, selectors.EVENT_READ)
    if not selector.select(HOLD_S):  # not answered while the first stays connected
        first.close()
    read_answer(second)
    waited = time.perf_counter() - sent
    first.close()
    second.close()
    selector.close()
    return waited


# 2. Idle clients -----------------------------------------------------------


@dataclass
class Footprint:
    threads: int
    rss_kib: int
    vm_kib: int
    files: int

    @classmethod
    def of(cls, step: StepProcess) -> Footprint:
        return cls(
            step.status("Threads"), step.status("VmRSS"), step.status("VmSize"), step.open_files()
        )


def idle_footprint(step: StepProcess, count: int) -> tuple[Footprint, Footprint, float, float]:
    """The server's footprint before and while ``count`` idle clients are
    connected, the seconds it took to accept them all, and the median time
    of a request from one more client then."""
    before = Footprint.of(step)
    start = time.perf_counter()
    clients = [socket.create_connection(step.address, timeout=10) for _ in range(count)]
    deadline = time.monotonic() + 60
    while step.open_files() < before.files + count and time.monotonic() < deadline:
        time.sleep(0.01)  # until the server has accepted them all
    accepted = time.perf_counter() - start
    during = Footprint.of(step)
    with socket.create_connection(step.address, timeout=10) as probe:
        times = []
        for _ in range(50):
            start = time.perf_counter()
            probe.sendall(request("GET", "idle"))
            read_answer(probe)
            times.append(time.perf_counter() - start)
    for client in clients:
        client.close()
    return before, during, accepted, statistics.median(times)


# 3. The slow reader --------------------------------------------------------


@dataclass
class SlowReader:
    other_median: float  # seconds
    other_worst: float
    server_growth_kib: int  # the server's RSS while the slow reader stalls, over before
    got: int  # bytes of value the slow reader read in the end
    expected: int


def slow_reader(step: StepProcess, big: int, count: int) -> SlowReader:
    """A client pipelines ``count`` GETs of a ``big``-byte value and reads
    nothing while another makes 200 GETs; then the first reads everything."""
    ask(step.address, request("PUT", "big", b"b" * big))
    before = step.status("VmRSS")
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(30)
    slow.connect(step.address)
    slow.sendall(request("GET", "big") * count)
    times = []
    with socket.create_connection(step.address, timeout=10) as other:
        for _ in range(200):
            start = time.perf_counter()
            other.sendall(request("GET", "small"))
            read_answer(other)
            times.append(time.perf_counter() - start)
    growth = step.status("VmRSS") - before
    answers = Answers(slow)
    got = sum(len(body) for body in (answers.next()[1] for _ in range(count)) if body == b"b" * big)
    slow.close()
    return SlowReader(statistics.median(times), max(times), growth, got, big * count)


# 4. The parsers ------------------------------------------------------------

ODD_REQUESTS: list[tuple[str, bytes]] = [
    (
        "two different Content-Lengths",
        b"PUT /v0/entity?id=p HTTP/1.1\r\nHost: t\r\n"
        b"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    ),
    (
        "a header line without a colon",
        b"GET /v0/entity?id=p HTTP/1.1\r\nHost: t\r\nno colon\r\n\r\n",
    ),
    (
        "a Content-Length that is not a number",
        b"PUT /v0/entity?id=p HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n",
    ),
    (
        "a chunked body (valid HTTP/1.1)",
        b"PUT /v0/entity?id=p HTTP/1.1\r\nHost: t\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ),
    ("lines ended by a bare LF", b"GET /v0/entity?id=p HTTP/1.1\nHost: t\n\n"),
    ("a space inside the target", b"GET /v0/entity?id=a b HTTP/1.1\r\nHost: t\r\n\r\n"),
    ("HTTP/1.0, no keep-alive", b"GET /v0/entity?id=p HTTP/1.0\r\n\r\n"),
    ("Connection: close", b"GET /v0/entity?id=p HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    (
        "three requests in one write (pipelining)",
        request("PUT", "p", b"abc") + request("GET", "p") + request("DELETE", "p"),
    ),
]


def what_it_answers(step: StepProcess, raw: bytes, wait: float = 1.0) -> str:
    """The status lines the server sent within ``wait`` s, and whether it closed."""
    with socket.create_connection(step.address, timeout=wait) as sock:
        sock.sendall(raw)
        data, closed = b"", False
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
    statuses = re.findall(rb"HTTP/1\.[01] (\d{3})", data)
    said = ", ".join(s.decode() for s in statuses) or "no answer"
    return f"{said}; {'closed' if closed else 'kept open'}"


# 5. Throughput -------------------------------------------------------------


@dataclass
class WrkRun:
    rps: float
    cores: float
    accepted: int
    errors: int


def wrk(step: StepProcess, seconds: float, connections: int) -> WrkRun:
    pin = ["taskset", "-c", "0"] if len(os.sched_getaffinity(0)) > 1 else []
    url = "http://{}:{}/v0/entity?id=k".format(*step.address)
    files, cpu, start = step.open_files(), step.cpu_seconds(), time.perf_counter()
    command = [*pin, "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", url]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as load:
        time.sleep(seconds / 2)
        accepted = step.open_files() - files  # the clients the server is serving now
        out, _ = load.communicate()
    cores = (step.cpu_seconds() - cpu) / (time.perf_counter() - start)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = sum(int(errors.group(i)) for i in (1, 2, 3, 4)) if errors else 0
    return WrkRun(rps, cores, accepted, failed + (int(non2xx.group(1)) if non2xx else 0))


THROUGHPUT: list[tuple[str, str, tuple[str, ...]]] = [
    ("1 blocking", "step1_blocking", ()),
    ("2 threads", "step2_threads", ()),
    ("3 reactor", "step3_reactor", ()),
    ("4 h11", "step4_h11", ()),
    ("5 pool, 8 workers", "step5_pool", ("--workers", "8")),
    ("4 h11, 2 ms storage", "step4_h11", ("--delay-ms", "2")),
    ("5 pool, 8 workers, 2 ms storage", "step5_pool", ("--workers", "8", "--delay-ms", "2")),
    ("6 reactors x1, no pool", "step6_reactors", ("--reactors", "1", "--workers", "0")),
    ("6 reactors x2, no pool", "step6_reactors", ("--reactors", "2", "--workers", "0")),
    ("6 reactors x4, no pool", "step6_reactors", ("--reactors", "4", "--workers", "0")),
    # Chapter 7: the real server, sync mode, one SelectorThread, on RocksDB.
    ("selectorkv, sync, 1 reactor", "selectorkv", ("serve", "--mode", "sync", "--selectors", "1")),
]
RATIOS = [
    ("2 threads", "3 reactor"),
    ("4 h11", "3 reactor"),
    ("5 pool, 8 workers", "4 h11"),
    ("5 pool, 8 workers, 2 ms storage", "4 h11, 2 ms storage"),
    ("6 reactors x1, no pool", "4 h11"),
    ("6 reactors x2, no pool", "6 reactors x1, no pool"),
    ("6 reactors x4, no pool", "6 reactors x1, no pool"),
    ("selectorkv, sync, 1 reactor", "4 h11"),
]


def spread(values: Sequence[float], fmt: str) -> str:
    if len(values) == 1:
        return format(values[0], fmt)
    low, middle, high = (
        format(x, fmt) for x in (min(values), statistics.median(values), max(values))
    )
    return f"{middle} ({low}-{high})"


@contextmanager
def running(*steps: tuple[str, tuple[str, ...]]) -> Iterator[list[StepProcess]]:
    started: list[StepProcess] = []
    try:
        for module, args in steps:
            started.append(StepProcess(module, *args))
        yield started
    finally:
        for step in started:
            step.stop()


def throughput(rounds: int, seconds: float) -> None:
    print(f"\n## 5. Throughput: `wrk -t1 -c64 -d{seconds:g}s`, GET of a 100-byte value\n")
    print(f"{rounds} rounds, every configuration once per round in this order; median (min-max).")
    print("Connections accepted: the server's sockets halfway through the run, of wrk's 64.\n")
    runs: dict[str, list[WrkRun]] = {name: [] for name, _, _ in THROUGHPUT}
    with tempfile.TemporaryDirectory(prefix="tutorial-selectorkv-") as data:
        commands = [(m, (*a, "--data", data) if m == "selectorkv" else a) for _, m, a in THROUGHPUT]
        with running(*commands) as steps:
            for step in steps:
                ask(step.address, request("PUT", "k", VALUE))
            for _ in range(rounds):
                for (name, _, _), step in zip(THROUGHPUT, steps, strict=True):
                    runs[name].append(wrk(step, seconds, 64))
    print("| step | requests/s | cores used by the server | connections accepted | errors |")
    print("|---|---|---|---|---|")
    for name, _, _ in THROUGHPUT:
        r = runs[name]
        print(
            f"| {name} | {spread([x.rps for x in r], ',.0f')} "
            f"| {spread([x.cores for x in r], '.2f')} "
            f"| {spread([x.accepted for x in r], 'd')} | {spread([x.errors for x in r], 'd')} |"
        )
    print("\n| ratio, within each round | median (min-max) |\n|---|---|")
    for a, b in RATIOS:
        ratios = [x.rps / y.rps for x, y in zip(runs[a], runs[b], strict=True)]
        print(f"| {a} / {b} | {spread(ratios, '.2f')} |")


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (
        f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=10_000, help="idle clients in measurement 2")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of wrk")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each wrk run")
    args = parser.parse_args()
    # Both this process and the servers hold one descriptor per idle client.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.idle + 100 > hard:
        parser.error(f"--idle {args.idle} needs more open files than this shell's limit ({hard})")

    print(f"# The tutorial's figures\n\nMeasured on {machine()}.\n")

    print(f"## 1. The second client: its wait while the first keeps its connection {HOLD_S:g} s\n")
    print("| step | second client's wait |\n|---|---|")
    with running(("step1_blocking", ()), ("step2_threads", ()), ("step3_reactor", ())) as steps:
        for name, step in zip(("1 blocking", "2 threads", "3 reactor"), steps, strict=True):
            print(f"| {name} | {ms(second_client_wait(step))} |")

    print(f"\n## 2. {args.idle:,} idle clients\n")
    print(
        "| step | threads | RSS | virtual memory | open files | connected and accepted in "
        "| one more client's GET (median of 50) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, module in (("2 threads", "step2_threads"), ("3 reactor", "step3_reactor")):
        with running((module, ())) as (step,):
            before, during, accepted, probe = idle_footprint(step, args.idle)
        print(
            f"| {name}, none | {before.threads} | {before.rss_kib / 1024:.1f} MiB "
            f"| {before.vm_kib / 1024:,.0f} MiB | {before.files} | | |"
        )
        print(
            f"| {name}, {args.idle:,} | {during.threads:,} | {during.rss_kib / 1024:.1f} MiB "
            f"| {during.vm_kib / 1024:,.0f} MiB | {during.files:,} | {accepted:.2f} s "
            f"| {ms(probe)} |"
        )

    big, count = 1024 * 1024, 32
    print(
        f"\n## 3. A slow reader: {count} pipelined GETs of a {big // 1024} KiB value, "
        "nothing read\n"
    )
    print(
        "| step | other client's GET, median | slowest of 200 "
        "| server's RSS growth, stalled | value bytes the slow reader got |"
    )
    print("|---|---|---|---|---|")
    for name, module in SLOW_READER_STEPS:
        with running((module, ())) as (step,):
            r = slow_reader(step, big, count)
        print(
            f"| {name} | {ms(r.other_median)} | {ms(r.other_worst)} "
            f"| {r.server_growth_kib / 1024:.1f} MiB | {r.got:,} of {r.expected:,} |"
        )

    print("\n## 4. What each parser answers (status lines within 1 s; then the connection)\n")
    print("| request | 3: hand parser | 4: h11 |\n|---|---|---|")
    with running(("step3_reactor", ()), ("step4_h11", ())) as (hand, h11):
        for what, raw in ODD_REQUESTS:
            print(f"| {what} | {what_it_answers(hand, raw)} | {what_it_answers(h11, raw)} |")

    throughput(args.rounds, args.seconds)


if __name__ == "__main__":
    main()
