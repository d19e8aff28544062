"""Fixtures: a real selectorkv server on a free port over a real RocksDB in a
temporary directory, a SelectorThread of the test's own, and clusters of
node processes. What they use, and what the tests share besides them, is in
support.py.

Most tests run the server in-process (its threads, real sockets), which is
fast and lets a test put a blocking storage in front of RocksDB. Tests of the
command line, signals and restarts run ``python -m selectorkv`` as a child
process (``support.serve_process``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from selectorkv.config import ServerConfig
from selectorkv.http.exchange import Executor
from selectorkv.kv.storage import RocksStorage, Storage
from selectorkv.lab.harness.nodes import Node, Nodes
from selectorkv.reactor.selector_thread import SelectorThread
from selectorkv.server import Server
from tests.support import (
    MODES,
    BlockingStorage,
    RawClient,
    ServerFactory,
    no_connections,
)

# ----------------------------------------------------------------------
# In-process servers
# ----------------------------------------------------------------------


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers on free ports; all are stopped when the test ends."""
    started: list[Server] = []

    def make(
        mode: str = "async",
        storage_wrapper: Callable[[Storage], Storage] | None = None,
        executor: Executor | None = None,
        **settings: object,
    ) -> Server:
        data = tmp_path / f"db{len(started)}"
        config = replace(ServerConfig(port=0, data=str(data), mode=mode), **settings)  # type: ignore[arg-type]
        storage: Storage = RocksStorage(config.data, fsync=config.fsync)
        if storage_wrapper is not None:
            storage = storage_wrapper(storage)
        server = Server(config, storage, executor)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()  # idempotent: a test may have stopped it already


@pytest.fixture
def make_blocking_server(
    make_server: ServerFactory,
) -> Callable[..., tuple[Server, BlockingStorage]]:
    """Start a server whose storage is an injected BlockingStorage."""

    def make(mode: str, **settings: object) -> tuple[Server, BlockingStorage]:
        wrapped: list[BlockingStorage] = []

        def wrap(inner: Storage) -> Storage:
            wrapped.append(BlockingStorage(inner))
            return wrapped[0]

        server = make_server(mode, storage_wrapper=wrap, **settings)
        return server, wrapped[0]

    return make


@pytest.fixture
def reactor() -> Iterator[SelectorThread]:
    thread = SelectorThread(1, no_connections)
    thread.start()
    yield thread
    thread.shut_down(time.monotonic() + 5)
    thread.join(10)
    assert not thread.is_alive()


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(make_server: ServerFactory, mode: str) -> Server:
    return make_server(mode)


@pytest.fixture
def client(server: Server) -> Iterator[RawClient]:
    c = RawClient(server.address)
    yield c
    c.close()


# ----------------------------------------------------------------------
# Cluster node processes (selectorkv/lab/harness/nodes.py)
# ----------------------------------------------------------------------


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., list[Node]]]:
    """Start clusters of node processes (``Nodes.make``); all are stopped
    when the test ends."""
    nodes = Nodes(tmp_path)
    yield nodes.make
    nodes.stop_all()
