"""What async mode buys, exactly: does the SelectorThread answer while a
PayloadThread is inside a slow storage call?

    python -m benchmarks.slow_storage

An async server (one PayloadThread, a queue of one) runs in a child process
with a storage whose PUT of the key ``slow`` makes one long call, of one of
two kinds:

- ``sleep``: ``time.sleep``, a call that releases the GIL while it waits
  (as a storage that waits for a disk or a network in C code would);
- ``rocksdict``: one rocksdict call of about the same length (a WriteBatch
  of many entries written at once), which holds the GIL throughout, as
  every rocksdict call does.

While that call runs, client B sends a PUT (it fills the queue) and client C
a GET, which the SelectorThread should answer 503 at once (queue full). The
figure is how long C waits for its answer. The client is this process, so
its own timing never waits for the server's GIL.
"""

from __future__ import annotations

import argparse
import signal
import socket
import statistics
import sys
import tempfile
import time

import rocksdict

from benchmarks.peers import ROOT
from selectorkv.kv.storage import RocksStorage
from selectorkv.lab.harness.servers import ServerProcess, free_port
from tests.support import ForwardingStorage

ROUNDS = 5
BATCH_ENTRIES = 400_000  # one WriteBatch: a few hundred ms of rocksdict on this machine


class SlowStorage(ForwardingStorage):
    """RocksStorage whose PUT of b"slow" first makes one long call."""

    def __init__(self, inner: RocksStorage, kind: str, scratch: str) -> None:
        super().__init__(inner)
        self.kind = kind
        self._batches: list[rocksdict.WriteBatch] = []
        if kind == "rocksdict":
            # Built before the server starts: a batch is used up by its write,
            # and building one is Python work that would hold the GIL too.
            self._db = rocksdict.Rdict(scratch)
            for _ in range(ROUNDS):
                batch = rocksdict.WriteBatch()
                for i in range(BATCH_ENTRIES):
                    batch.put(b"%08d" % i, b"v" * 100)
                self._batches.append(batch)

    def slow_call(self) -> None:
        started = time.perf_counter()
        if self.kind == "sleep":
            time.sleep(0.3)
        else:
            self._db.write(self._batches.pop())  # one call, the GIL held throughout
        seconds = time.perf_counter() - started
        print(
            f"{self.kind}: the slow call took {seconds * 1000:.0f} ms", file=sys.stderr, flush=True
        )

    def put(self, key: bytes, value: bytes) -> None:
        if key == b"slow":
            self.slow_call()
        self.inner.put(key, value)


def serve(kind: str, port: int, data: str) -> None:
    """The child: an async server over SlowStorage until SIGTERM (blocked
    before any thread starts, and taken with sigwait, as selectorkv serve does)."""
    from selectorkv.config import ServerConfig
    from selectorkv.server import Server

    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    config = ServerConfig(port=port, data=data + "/db", mode="async", workers=1, queue_size=1)
    server = Server(config, SlowStorage(RocksStorage(config.data), kind, data + "/scratch"))
    server.start()
    signal.sigwait(stop_signals)
    server.stop()


def request(port: int, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(head)
    return sock


def status_of(sock: socket.socket) -> int:
    reply = b""
    while b"\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            break
        reply += chunk
    return int(reply.split(b" ", 2)[1])


def measure(kind: str) -> list[float]:
    """Seconds C waited for its 503, one per round."""
    waits = []
    with tempfile.TemporaryDirectory(prefix="selectorkv-slow-") as data:
        port = free_port()
        child = ServerProcess(
            [sys.executable, "-m", "benchmarks.slow_storage", "--serve", kind,
             "--port", str(port), "--data", data],
            port=port, cwd=ROOT,
        )  # fmt: skip
        try:
            child.wait_ready()
            for _ in range(ROUNDS):
                a = request(port, b"PUT /v0/entity?id=slow HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 1\r\n\r\nx")  # fmt: skip
                time.sleep(0.05)  # the slow call has begun
                b = request(port, b"PUT /v0/entity?id=b HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 1\r\n\r\nx")  # fmt: skip
                time.sleep(0.01)
                sent = time.perf_counter()
                c = request(port, b"GET /v0/entity?id=b HTTP/1.1\r\nHost: x\r\n\r\n")
                status = status_of(c)
                waits.append(time.perf_counter() - sent)
                print(f"{kind}: C got {status} after {waits[-1] * 1000:.1f} ms",
                      file=sys.stderr, flush=True)  # fmt: skip
                for sock in (a, b):
                    status_of(sock)
                for sock in (a, b, c):
                    sock.close()
        finally:
            child.stop(timeout=30)
    return waits


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.slow_storage", description=__doc__)
    parser.add_argument("--serve", choices=("sleep", "rocksdict"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.data)
        return 0
    for kind in ("sleep", "rocksdict"):
        waits = sorted(wait * 1000 for wait in measure(kind))
        median = statistics.median(waits)
        print(f"{kind:9s}: C answered after {median:.1f} ms "
              f"(min {waits[0]:.1f}, max {waits[-1]:.1f}) over {len(waits)} rounds")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
