"""Does a RocksDB call through rocksdict let other Python threads run?

Runs the same loop of calls once in one thread, then in two threads at once.
If the call releases the GIL, two threads finish twice the work in about the
time of one (on a machine with 2+ cores): a parallel speed-up near 2. If it
holds the GIL, they take twice as long: a speed-up near 1. SHA-256 over
64 KiB blocks, which CPython hashes without the GIL, is the control; a pure
Python loop is the other end.

    python -m benchmarks.gil_check
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from collections.abc import Callable

CALLS = 200_000


def timed(work: Callable[[], None], threads: int) -> float:
    running = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for t in running:
        t.start()
    for t in running:
        t.join()
    return time.perf_counter() - start


def report(name: str, work: Callable[[], None]) -> None:
    one = timed(work, 1)
    two = timed(work, 2)
    print(f"{name:26s} 1 thread {one:.2f}s, 2 threads {two:.2f}s: speed-up {2 * one / two:.2f}")


def main() -> None:
    from selectorkv.kv.storage import RocksStorage

    with tempfile.TemporaryDirectory() as path:
        storage = RocksStorage(path)
        keys = [b"key%d" % i for i in range(1000)]
        for key in keys:
            storage.put(key, b"v" * 300)

        def rocks_gets() -> None:
            for i in range(CALLS):
                storage.get(keys[i % 1000])

        def rocks_puts() -> None:
            for i in range(CALLS // 2):
                storage.put(keys[i % 1000], b"w" * 300)

        block = b"x" * 65536

        def hashing() -> None:
            for _ in range(CALLS // 50):
                hashlib.sha256(block).digest()

        def python_loop() -> None:
            total = 0
            for i in range(CALLS * 20):
                total += i

        report("rocksdict get (300 B)", rocks_gets)
        report("rocksdict put (300 B)", rocks_puts)
        report("sha256 64 KiB (control)", hashing)
        report("pure Python loop", python_loop)
        storage.close()


if __name__ == "__main__":
    main()
