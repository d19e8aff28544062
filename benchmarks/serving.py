"""A selectorkv server in a child process, for the benchmark scripts."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from selectorkv.lab.harness.servers import ServerProcess, selectorkv_serve


@contextmanager
def serving(port: int, data: str, *args: str) -> Iterator[str]:
    """Run ``selectorkv serve`` on ``port`` over ``data``; yields its URL once
    it answers /v0/status, and stops it (SIGTERM) afterwards."""
    server = ServerProcess(
        selectorkv_serve("--port", str(port), "--data", data, "--log-level", "warning", *args),
        port=port,
    )
    try:
        server.wait_ready(timeout=10, ready=lambda: answers(server.url))
        yield server.url
    finally:
        server.stop(timeout=30)


def answers(url: str) -> bool:
    """``GET /v0/status`` at ``url`` answers."""
    try:
        urllib.request.urlopen(f"{url}/v0/status", timeout=1)
    except OSError:
        return False
    return True
