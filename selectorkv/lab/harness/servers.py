"""Servers in child processes, one way for every caller: the tests, the
studies, the benchmarks and the tutorial's measurements. A server is
started (pinned to CPUs when asked), known to be ready when it accepts a
connection or says where it listens, and stopped with a signal.

A child is started with no Python code between fork and exec (no
``preexec_fn``: unsafe in a process with threads); pinning is a ``taskset``
prefix (cpus.py)."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from selectorkv.lab.harness.cpus import cpu_seconds, pinned

# selectorkv serve's start line, which says where it listens.
LISTENING = re.compile(r"listening on (?:http://)?([\d.]+):(\d+)")


def selectorkv_serve(*args: str) -> list[str]:
    """The command that runs ``selectorkv serve`` with this interpreter."""
    return [sys.executable, "-m", "selectorkv", "serve", *args]


# Where the kernel takes the source ports of outgoing connections (Linux).
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# The lowest port handed out below that range.
LOWEST_PORT = 10_000


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now (probed), below the kernel's range of source ports.

    A port the kernel picks (a bind to port 0) comes from that range, the
    one it also takes the source ports of outgoing connections from: a node
    killed and restarted on such a port found it taken meanwhile, by a
    connection's source port (a peer's call to the dead node itself can
    connect to itself there, a TCP self-connect). Below the range, only a
    server can take it. Another process may still bind it before the server
    does: ``holds_port`` tells whether the server got it."""
    below = _ephemeral_low()
    for _ in range(100):
        if below <= LOWEST_PORT:
            break  # no room below the range: let the kernel pick
        port = random.randrange(LOWEST_PORT, below)
        if _free(port, host):
            return port
    with socket.socket() as probe:
        probe.bind((host, 0))
        picked: int = probe.getsockname()[1]
        return picked


def free_ports(count: int) -> int:
    """A base port whose next ``count - 1`` ports are free too (probed, below
    the kernel's range of source ports; another server may still take one
    between the probe and the bind)."""
    while True:
        base = free_port()
        if base + count < 65536 and all(_free(base + i) for i in range(1, count)):
            return base


def _ephemeral_low() -> int:
    """The first port of the kernel's source-port range (32768 if unknown)."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class ServerProcess:
    """A server in a child process.

    With ``port`` given, the server is told its port in ``command`` and is
    ready when that port accepts a connection (``wait_ready``); its output
    goes to ``log`` (None: this process's). With ``port`` None the server
    binds a port the kernel picks (``selectorkv serve --port 0``, a tutorial
    step): it is ready when its start line says where it listens, and its
    output is kept (``text``). ``pass_fds``: descriptors it inherits (a
    listening socket bound here, so that no other process can take its port).
    ``ready``, given to ``wait_ready``, replaces the connect probe."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        log: IO[bytes] | None = None,
        cpus: Sequence[int] = (),
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.command = [*(pinned(cpus) if cpus else []), *command]
        self.host = host
        self.lines: list[str] = []
        told = port is not None
        self.process = subprocess.Popen(
            self.command,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=log if told else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=tuple(pass_fds),
        )
        self.port = port if port is not None else self._read_start_line()

    def _read_start_line(self) -> int:
        stdout = self.process.stdout
        assert stdout is not None
        for raw in stdout:
            line = raw.decode(errors="replace")
            self.lines.append(line)
            if match := LISTENING.search(line):
                self.host = match.group(1)
                threading.Thread(target=self._collect, daemon=True).start()
                return int(match.group(2))
        self.process.wait()
        raise RuntimeError("the server did not start:\n" + self.text())

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace"))

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        """What the server printed (when its output is kept)."""
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 60.0, ready: Callable[[], bool] | None = None) -> None:
        """Return once the port accepts a connection (or ``ready`` says
        so); RuntimeError if the server exits first or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{' '.join(self.command)} exited with {self.process.returncode}"
                )
            if (ready or self.accepts)():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{' '.join(self.command)} did not listen within {timeout:g} s")

    def accepts(self) -> bool:
        try:
            with socket.create_connection(self.address, timeout=1):
                return True
        except OSError:
            return False

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Signal the server (continued first: a stopped one must see it)
        and wait for it; its exit status. Killed if ``timeout`` passes."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise RuntimeError(
                    f"{' '.join(self.command)} did not stop within {timeout:g} s"
                ) from None
        return self.process.returncode

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)
