"""Cluster node processes on this machine, for the tests and the fault
runs: ``selectorkv serve --cluster ...`` children on loopback, each on its
own port and, when asked, its own address (127.0.0.2, 127.0.0.3, ...: what
a partition between two of them needs, faults.py), with the ways a node
fails on one machine: a clean stop, SIGSTOP, kill -9, and a restart on the
same data."""

from __future__ import annotations

import http.client
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from prometheus_client.parser import text_string_to_metric_families

from selectorkv.cluster.local import holds_port
from selectorkv.lab.harness.servers import ServerProcess, free_port, selectorkv_serve

# The cluster token of the nodes started here (they run on loopback only).
TOKEN = "test-token"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for ``condition`` to hold, polling: wait for what needs to have
    happened, never for a fixed time (a machine's speed drifts). ``timeout``
    only bounds a hang; it is not part of a verdict."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {timeout:g} s: {what}")
        time.sleep(0.01)


@dataclass
class Node:
    """A cluster node: its address, and the process that runs it when it
    was started here (``start``)."""

    url: str
    port: int
    command: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    log: IO[bytes] | None = None  # where its output goes (None: this process's)
    server: ServerProcess | None = None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self.server is not None, f"{self.url} was not started here"
        return self.server.process

    @property
    def data(self) -> str:
        """The node's data directory."""
        return self.command[self.command.index("--data") + 1]

    def start(self) -> None:
        """Start the node (again) on its port and data, as after a crash."""
        env = {"SELECTORKV_CLUSTER_TOKEN": TOKEN, **self.env}
        self.server = ServerProcess(
            self.command, port=self.port, host=self.host, env=env, log=self.log
        )

    def restart(self) -> None:
        self.stop()
        self.start()
        wait_until(self.answers, f"{self.url} answers again", timeout=30)

    def stored(self, key: str) -> int:
        """The status of this node's own replica of ``key`` (internal GET)."""
        return self.internal("GET", key)[0]

    def internal(self, method: str, key: str, body: bytes | None = None) -> tuple[int, bytes]:
        """An internal request to this node's replica, as an operator sends
        it (with the token, without a cluster id)."""
        return self.request(
            method, f"/v0/internal/entity?id={key}", body, {"X-Selectorkv-Token": TOKEN}
        )

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, target, body=body, headers=headers or {})
            reply = conn.getresponse()
            return reply.status, reply.read()
        finally:
            conn.close()

    def put(self, key: str, value: bytes, counts: str = "") -> int:
        return self.request("PUT", f"/v0/entity?id={key}{counts}", value)[0]

    def get(self, key: str, counts: str = "") -> tuple[int, bytes]:
        return self.request("GET", f"/v0/entity?id={key}{counts}")

    def delete(self, key: str, counts: str = "") -> int:
        return self.request("DELETE", f"/v0/entity?id={key}{counts}")[0]

    def ready(self) -> bool:
        """It answers, or it has exited (``listening`` then says which)."""
        return self.process.poll() is not None or self.answers()

    def listening(self) -> bool:
        """This node's process holds the listening socket of its port (not
        some other server that took the port first)."""
        return self.process.poll() is None and holds_port(self.process.pid, self.port)

    def answers(self) -> bool:
        try:
            return self.request("GET", "/v0/status")[0] == 200
        except (OSError, http.client.HTTPException):
            # Before the node listens, a connect to its port can meet itself
            # (the kernel picked that very port as the source): it reads its
            # own request back, a malformed answer, not an error to raise.
            return False

    def metric(self, name: str, **labels: str) -> float:
        """One sample of this node's /metrics (0 when it is not there)."""
        status, body = self.request("GET", "/metrics")
        assert status == 200
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=15)

    def kill(self) -> None:
        assert self.server is not None
        self.server.kill()

    def pause(self) -> None:
        assert self.server is not None
        self.server.pause()

    def resume(self) -> None:
        assert self.server is not None
        self.server.resume()


class Nodes:
    """Starts clusters of node processes under ``root``; ``stop_all`` at the end."""

    def __init__(self, root: Path, log: IO[bytes] | None = None) -> None:
        self._root = root
        self._log = log
        self.started: list[Node] = []

    def make(
        self,
        count: int,
        mode: str = "sync",
        *flags: str,
        hosts: Sequence[str] | None = None,
        env: Sequence[dict[str, str]] | None = None,
        order: Sequence[Sequence[int]] | None = None,
        strangers: Sequence[str] = (),
        start: bool = True,
        attempts: int = 3,
    ) -> list[Node]:
        """``count`` nodes; ``hosts``: each node's address (default all on
        127.0.0.1); ``env``: each node's extra environment; ``order``: the
        order in which node i lists the nodes in its --cluster (default
        the same for all); ``strangers``: URLs of nodes that are not
        started here (a test's own fake node), listed last."""
        hosts = list(hosts or ["127.0.0.1"] * count)
        ports = [free_port(host) for host in hosts]
        urls = [f"http://{host}:{port}" for host, port in zip(hosts, ports, strict=True)]
        nodes = []
        for i, (host, port, url) in enumerate(zip(hosts, ports, urls, strict=True)):
            listed = [*([urls[j] for j in order[i]] if order else urls), *strangers]
            command = selectorkv_serve(
                "--host", host, "--port", str(port),
                "--data", str(self._root / f"node-{host}-{port}"), "--mode", mode,
                "--cluster", ",".join(listed), "--self", url, "--cpu", "none",
                "--log-level", "warning", *flags,
            )  # fmt: skip
            node = Node(url, port, tuple(command), host)
            node.env = dict(env[i]) if env else {}
            node.log = self._log
            nodes.append(node)
        self.started.extend(nodes)
        if start:
            for node in nodes:
                node.start()
            for node in nodes:
                wait_until(node.ready, f"{node.url} answers", timeout=30)
            if not all(node.listening() for node in nodes):
                # A port probed free was taken before the node bound it (the
                # node exited, and another server answered in its place).
                for node in nodes:
                    node.stop()
                if attempts <= 1:
                    raise RuntimeError("nodes could not bind the ports chosen for them")
                return self.make(
                    count, mode, *flags, hosts=hosts, env=env, order=order,
                    strangers=strangers, attempts=attempts - 1,
                )  # fmt: skip
        return nodes

    def stop_all(self) -> None:
        for node in self.started:
            node.stop()


ClusterFactory = Callable[..., list[Node]]


def serve_once(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``selectorkv serve`` that is expected to refuse to start."""
    return subprocess.run(
        selectorkv_serve("--port", "0", *args),
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "SELECTORKV_CLUSTER_TOKEN": TOKEN},
    )  # fmt: skip
