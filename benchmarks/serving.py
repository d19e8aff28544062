"""A selectorkv server in a child process, for the benchmark scripts."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def serving(port: int, data: str, *args: str) -> Iterator[str]:
    """Run ``selectorkv serve`` on ``port`` over ``data``; yields its URL once
    it answers /v0/status, and stops it (SIGTERM) afterwards."""
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "selectorkv", "serve", "--port", str(port), "--data", data,
         "--log-level", "warning", *args],
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/v0/status", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"selectorkv did not start on {url}")
        yield url
    finally:
        server.terminate()
        server.wait(30)
