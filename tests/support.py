"""What the tests share besides fixtures: a raw-socket HTTP client built on
h11, the storages a test injects in front of RocksDB (named in the tests
that use them), a server in a child process, and small probes. The fixtures
that use these are in conftest.py.
"""

from __future__ import annotations

import os
import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11

from selectorkv.kv.storage import Cursor, RocksStorage, Storage, StorageError
from selectorkv.lab.harness.nodes import wait_until as wait_until  # the tests take it from here
from selectorkv.lab.harness.servers import ServerProcess, selectorkv_serve
from selectorkv.reactor.selector_thread import SelectorThread
from selectorkv.server import Server

MODES = ("sync", "async")

# Start in-process servers (the make_server fixture) and blocking ones.
ServerFactory = Callable[..., Server]


# ----------------------------------------------------------------------
# A raw HTTP client: exact bytes out, h11 to parse what comes back
# ----------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


class RawClient:
    """One TCP connection; sends bytes as given, reads responses with h11."""

    def __init__(self, address: tuple[str, int], *, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(address)
        self._h11 = h11.Connection(h11.CLIENT)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, target: str, body: bytes | None = None) -> Reply:
        self.send(request_bytes(method, target, body))
        return self.read_reply()

    def read_reply(self, read_size: int = 65536) -> Reply:
        """Read one final response (skipping 1xx) and get ready for the next."""
        # The client side of h11 wants to have "sent" a request to parse a
        # response; tell it about a generic one, since we wrote raw bytes.
        if self._h11.our_state is h11.IDLE:
            self._h11.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
            self._h11.send(h11.EndOfMessage())
        status, headers, body = 0, {}, bytearray()
        while True:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                self._h11.receive_data(self.sock.recv(read_size))
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, dict(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed before a complete response")
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
        return Reply(status, headers, bytes(body))

    def read_until_closed(self) -> bytes:
        """Everything the server sends until it closes the connection."""
        chunks = []
        while chunk := self.sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)

    def is_closed_by_server(self) -> bool:
        """True when the server has closed (EOF or reset), waiting up to 10 s."""
        try:
            return self.sock.recv(65536) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def request_bytes(
    method: str, target: str, body: bytes | None = None, extra: str = "", version: str = "1.1"
) -> bytes:
    head = f"{method} {target} HTTP/{version}\r\nHost: test\r\n{extra}"
    if body is not None:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + (body or b"")


def queue_depth(server: Server) -> int:
    """Requests waiting for a PayloadThread, as GET /metrics reports it."""
    match = re.search(rb"^selectorkv_queue_depth (\S+)$", server.metrics(), re.MULTILINE)
    assert match, "no selectorkv_queue_depth in the metrics"
    return int(float(match.group(1)))


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def peak_growth(pid: int, before: int, seconds: float) -> int:
    """The most that process ``pid`` grew past ``before`` bytes, sampled
    every 50 ms for ``seconds``."""
    peak = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, rss_bytes(pid) - before)
        time.sleep(0.05)
    return peak


# ----------------------------------------------------------------------
# Storages a test may put in front of RocksDB
# ----------------------------------------------------------------------


class ForwardingStorage:
    """A storage that passes every call to ``inner``: the base of the
    storages a test (or a benchmark) injects, which override what they change."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner

    def get(self, key: bytes) -> bytes | None:
        return self.inner.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.inner.put(key, value)

    def delete(self, key: bytes) -> None:
        self.inner.delete(key)

    def apply_batch(self, writes: Sequence[tuple[bytes, bytes | None]]) -> None:
        self.inner.apply_batch(writes)

    def range(self, start: bytes, end: bytes | None) -> Cursor:
        return self.inner.range(start, end)

    def wal_syncs(self) -> int | None:
        return self.inner.wal_syncs()

    def close(self) -> None:
        self.inner.close()


class BlockingStorage(ForwardingStorage):
    """Storage whose calls wait until the test opens the gate: injected to
    hold a request in flight (503s, graceful shutdown)."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def _wait(self) -> None:
        self.entered.release()
        assert self.gate.wait(30), "test never opened the storage gate"

    def get(self, key: bytes) -> bytes | None:
        self._wait()
        return self.inner.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._wait()
        self.inner.put(key, value)

    def delete(self, key: bytes) -> None:
        self._wait()
        self.inner.delete(key)

    def apply_batch(self, writes: Sequence[tuple[bytes, bytes | None]]) -> None:
        self._wait()
        self.inner.apply_batch(writes)


def fill_database(path: str, count: int, value_size: int = 10) -> None:
    """Write ``count`` entries ``b"%07d" % i -> value`` straight into RocksDB
    at ``path`` (before a server opens it): bulk data for range tests."""
    storage = RocksStorage(path)
    try:
        for i in range(count):
            storage.put(b"%07d" % i, (b"%07d" % i).ljust(value_size, b"v"))
    finally:
        storage.close()


# ----------------------------------------------------------------------
# A SelectorThread of the test's own (reactor tests, peer calls)
# ----------------------------------------------------------------------


def no_connections(
    sock: socket.socket, reactor: SelectorThread, release: Callable[[], None]
) -> None:
    raise AssertionError("nothing is adopted in these tests")


def on_reactor(reactor: SelectorThread, call: Callable[[], object]) -> object:
    """Run ``call`` on the reactor's thread (timers are used there only)."""
    done = threading.Event()
    result: list[object] = []

    def run() -> None:
        result.append(call())
        done.set()

    reactor.call_soon(run)
    assert done.wait(10)
    return result[0]


# ----------------------------------------------------------------------
# Child-process servers (CLI, signals, restarts)
# ----------------------------------------------------------------------


def serve_process(
    *args: str, env: dict[str, str] | None = None, launcher: tuple[str, ...] = ()
) -> ServerProcess:
    """``selectorkv serve --port 0 ARGS`` in a child process, ready once it
    says where it listens (the lab harness's ServerProcess). ``launcher`` is
    a command that runs it (``prlimit ...``)."""
    return ServerProcess([*launcher, *selectorkv_serve("--port", "0", *args)], env=env)


BlockingServerFactory = Callable[..., tuple[Server, BlockingStorage]]


# ----------------------------------------------------------------------
# Injected failing storage, and the load tools' test servers
# ----------------------------------------------------------------------


class FailingStorage:
    """Injected failing storage: every call raises StorageError."""

    def get(self, key: bytes) -> bytes | None:
        raise StorageError("disk on fire")

    def put(self, key: bytes, value: bytes) -> None:
        raise StorageError("disk on fire")

    def delete(self, key: bytes) -> None:
        raise StorageError("disk on fire")

    def close(self) -> None:
        pass


class FreezingServer(socketserver.ThreadingTCPServer):
    """A test server that answers every request at once with 200, except
    during one second (from 1 s after its first request) when it answers
    nothing: a stalled server."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FreezingHandler)
        self.frozen_from: float | None = None

    def wait_if_frozen(self) -> None:
        now = time.monotonic()
        if self.frozen_from is None:
            self.frozen_from = now + 1.0
        if self.frozen_from <= now < self.frozen_from + 1.0:
            time.sleep(self.frozen_from + 1.0 - now)


class AnsweringHandler(socketserver.BaseRequestHandler):
    """Reads bodiless requests on a keep-alive connection and answers each
    with an empty 200, after ``seen`` has had a look at its head."""

    def handle(self) -> None:
        buffered = b""
        while True:
            while b"\r\n\r\n" not in buffered:
                data = self.request.recv(65536)
                if not data:
                    return
                buffered += data
            head, _, buffered = buffered.partition(b"\r\n\r\n")
            self.seen(head)
            self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def seen(self, head: bytes) -> None:
        raise NotImplementedError


class FreezingHandler(AnsweringHandler):
    server: FreezingServer

    def seen(self, head: bytes) -> None:
        self.server.wait_if_frozen()


def assert_counts_the_stall(latency: dict[str, float]) -> None:
    """The freezing server's one-second stall, as a tool that counts from
    the due time must show it. A quarter of the requests were due during
    the stall and waited for its end: p90 is at least a few hundred ms,
    however fast the machine (a slow one only adds to it). The median
    request was due well outside the stall: its latency is the server's
    instant answer, far below the stall, on any machine that is not itself
    stalled for half the run."""
    assert latency["p90"] > 300, latency
    assert latency["max"] > 900, latency
    assert latency["p50"] < 250, latency


def assert_on_schedule(figures: dict[str, Any], rate: float) -> None:
    """What a constant-rate run must show whatever the machine's speed:
    never ahead of its schedule (no request goes out before its due time, so
    the rate cannot pass the target by more than the last interval's share
    and paced.lua's 1 ms rounding: 0.1 % here); and when it fell more than
    3 % short, the run says it was behind schedule instead of passing the
    shortfall off as the server's. How close it came is printed."""
    print(f"target {rate:g} req/s, measured {figures['rate']:,.1f} req/s")
    assert figures["rate"] <= 1.001 * rate, figures
    assert figures["rate"] >= 0.97 * rate or figures["behind_schedule"], figures


def ptrace_allowed() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        return Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip() == "0"
    except OSError:
        return True
