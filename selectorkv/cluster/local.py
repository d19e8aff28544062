"""``selectorkv cluster``: a cluster of N node processes on this machine,
in one command.

# design

Each node is an ordinary ``selectorkv serve`` child process on 127.0.0.1,
port ``base + i``, with its own RocksDB directory (``DIR/node-<i>``), the
same ``--cluster`` list and its own ``--self``. The cluster token is
generated here and handed to the children in their environment (not on
their command lines, where ``ps`` would show it), and printed once, for
whoever wants to start another client of the internal protocol by hand.

**A node per core.** The GIL gives one process one core's worth of Python,
so N nodes are how selectorkv uses N cores (docs/cluster.md, "Scaling"), if each has its own:
node i is given ``--cpu`` of the i-th CPU this process may use, counted
from the highest (the one ``--cpu auto`` picks for a single node) and
round-robin when there are more nodes than CPUs. A ``--cpu`` among the
flags for the nodes (or SELECTORKV_CPU) overrides it for all of them.

**All up, or none.** A node is up once it holds its port's listening
socket (read from /proc, whatever the log level). A node that exits before
that (its port taken, its data refused) stops the launcher at once: the
nodes already up are stopped, and the launcher exits 1 with the node's
last log line as the reason, which it has from the node's log (passed on
to its own stderr unchanged). A cluster with a node missing from the
start is not what was asked for; once all are up, a node that dies is
reported and the others go on (that is what a node failure looks like to
them).

This process only launches and waits: SIGINT or SIGTERM is forwarded to
every node, each finishes its requests within its ``--grace``, and the
command exits when all of them have stopped, with status 0 only if every
node stopped cleanly.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
POLL_SECONDS = 0.2  # how often the launcher looks at its nodes between signals


def node_urls(count: int, base_port: int) -> list[str]:
    return [f"http://127.0.0.1:{base_port + i}" for i in range(count)]


def node_cpus(count: int, allowed: set[int]) -> list[int]:
    """The CPU of each node: the allowed CPUs from the highest down, in turn."""
    order = sorted(allowed, reverse=True)
    return [order[i % len(order)] for i in range(count)]


def cpu_override(serve_flags: Sequence[str]) -> str | None:
    """The ``--cpu`` the caller gave every node (a flag for the nodes, or
    SELECTORKV_CPU), as it was given; None when there is none."""
    for i, flag in enumerate(serve_flags):
        if flag == "--cpu" and i + 1 < len(serve_flags):
            return f"{serve_flags[i + 1]} (--cpu)"
        if flag.startswith("--cpu="):
            return f"{flag.removeprefix('--cpu=')} (--cpu)"
    if "SELECTORKV_CPU" in os.environ:
        return f"{os.environ['SELECTORKV_CPU']} (SELECTORKV_CPU)"
    return None


class NodeLog:
    """Passes a node's log on to the launcher's stderr, line by line, and
    keeps its last line (the reason, if it exits)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.last = ""
        self._stream = stream
        self._thread = threading.Thread(target=self._relay, name="node-log", daemon=True)
        self._thread.start()

    def _relay(self) -> None:
        out = sys.stderr.buffer
        for raw in self._stream:
            out.write(raw)
            out.flush()
            line = raw.decode(errors="replace").strip()
            if line:
                self.last = line

    def finished(self, timeout: float = 5.0) -> str:
        """The last line, once the node's log has ended (it exited)."""
        self._thread.join(timeout)
        return self.last


def holds_port(pid: int, port: int) -> bool:
    """Process ``pid`` holds the listening socket of ``port`` (and not some
    other server that took the port first): /proc/net against its descriptors."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{inode}]")
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for descriptor in descriptors:
        try:
            if os.readlink(descriptor) in inodes:
                return True
        except OSError:
            continue  # closed meanwhile
    return False


def say(message: str) -> None:
    print(f"selectorkv cluster: {message}", flush=True)


def run(count: int, base_port: int, data: str, serve_flags: Sequence[str]) -> int:
    """Start the nodes, wait for them, forward the stop signals."""
    urls = node_urls(count, base_port)
    token = os.environ.get("SELECTORKV_CLUSTER_TOKEN") or secrets.token_hex(16)
    env = {**os.environ, "SELECTORKV_CLUSTER_TOKEN": token}
    override = cpu_override(serve_flags)
    cpus: list[str | None]
    if override is not None or not hasattr(os, "sched_getaffinity"):
        cpus = [None] * count
    else:
        cpus = [str(cpu) for cpu in node_cpus(count, os.sched_getaffinity(0))]
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    nodes: list[subprocess.Popen[bytes]] = []
    logs: list[NodeLog] = []
    for i, (url, cpu) in enumerate(zip(urls, cpus, strict=True), start=1):
        command = [
            sys.executable, "-m", "selectorkv", "serve",
            "--port", str(base_port + i - 1), "--data", str(Path(data) / f"node-{i}"),
            "--cluster", ",".join(urls), "--self", url,
            *(["--cpu", cpu] if cpu is not None else []), *serve_flags,
        ]  # fmt: skip
        # The children inherit the blocked signals. That is what serve wants:
        # it blocks them itself and takes them with sigwait, so a stop sent
        # before a node is up stays pending until it is.
        node = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
        assert node.stderr is not None
        nodes.append(node)
        logs.append(NodeLog(node.stderr))
        say(f"node {i} {url} cpu={cpu if cpu is not None else override or 'any'}")
    say(f"{count} nodes: {' '.join(urls)}")
    say(f"token {token} (SELECTORKV_CLUSTER_TOKEN)")
    running = set(range(count))
    starting = set(range(count))
    stopping = False
    failed = False
    while running:
        for index in sorted(running):
            code = nodes[index].poll()
            if code is not None:
                running.discard(index)
                if index in starting and not stopping:
                    reason = logs[index].finished()
                    say(f"{urls[index]} could not start (exit {code}): {reason}")
                    say("stopping the other nodes: a cluster starts whole or not at all")
                    stopping = failed = True
                    for other in running:
                        nodes[other].send_signal(signal.SIGTERM)
                elif not stopping:
                    say(f"{urls[index]} exited ({code})")
            elif index in starting and holds_port(nodes[index].pid, base_port + index):
                starting.discard(index)
                if not starting:
                    say(f"all {count} nodes are up")
        if not running:
            break
        received = signal.sigtimedwait(STOP_SIGNALS, POLL_SECONDS)
        if received is not None and not stopping:
            stopping = True
            say(f"{signal.Signals(received.si_signo).name}: stopping")
            for index in running:
                nodes[index].send_signal(received.si_signo)
    codes = [node.wait() for node in nodes]
    for log in logs:
        log.finished()
    return 0 if all(code == 0 for code in codes) and not failed else 1
