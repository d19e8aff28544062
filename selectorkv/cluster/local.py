"""``selectorkv cluster``: a cluster of N node processes on this machine,
in one command.

# design

Each node is an ordinary ``selectorkv serve`` child process on 127.0.0.1,
port ``base + i``, with its own RocksDB directory (``DIR/node-<i>``), the
same ``--cluster`` list and its own ``--self``. The cluster token is
generated here and handed to the children in their environment (not on
their command lines, where ``ps`` would show it), and printed once, for
whoever wants to start another client of the internal protocol by hand.

This process only launches and waits: SIGINT or SIGTERM is forwarded to
every node, each finishes its requests within its ``--grace``, and the
command exits when all of them have stopped, with status 0 only if every
node stopped cleanly. A node that dies on its own is reported; the others
go on (that is what a node failure looks like to them).

Processes, not threads: the GIL gives one process one core's worth of
Python, so N nodes on one machine are the way a GIL-bound server uses N
cores.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def node_urls(count: int, base_port: int) -> list[str]:
    return [f"http://127.0.0.1:{base_port + i}" for i in range(count)]


def run(count: int, base_port: int, data: str, serve_flags: Sequence[str]) -> int:
    """Start the nodes, wait for them, forward the stop signals."""
    urls = node_urls(count, base_port)
    token = os.environ.get("SELECTORKV_CLUSTER_TOKEN") or secrets.token_hex(16)
    env = {**os.environ, "SELECTORKV_CLUSTER_TOKEN": token}
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    nodes: list[subprocess.Popen[bytes]] = []
    for i, url in enumerate(urls, start=1):
        command = [
            sys.executable, "-m", "selectorkv", "serve",
            "--port", str(base_port + i - 1), "--data", str(Path(data) / f"node-{i}"),
            "--cluster", ",".join(urls), "--self", url, *serve_flags,
        ]  # fmt: skip
        # The children inherit the blocked signals. That is what serve wants:
        # it blocks them itself and takes them with sigwait, so a stop sent
        # before a node is up stays pending until it is.
        nodes.append(subprocess.Popen(command, env=env))
    print(f"selectorkv cluster: {count} nodes: {' '.join(urls)}", flush=True)
    print(f"selectorkv cluster: token {token} (SELECTORKV_CLUSTER_TOKEN)", flush=True)
    running = set(range(count))
    stopping = False
    while running:
        for index in sorted(running):
            code = nodes[index].poll()
            if code is not None:
                running.discard(index)
                if not stopping:
                    print(f"selectorkv cluster: {urls[index]} exited ({code})", flush=True)
        if not running:
            break
        received = signal.sigtimedwait(STOP_SIGNALS, 0.2)
        if received is not None and not stopping:
            stopping = True
            print(
                f"selectorkv cluster: {signal.Signals(received.si_signo).name}: stopping",
                flush=True,
            )
            for index in running:
                nodes[index].send_signal(received.si_signo)
    codes = [node.wait() for node in nodes]
    return 0 if all(code == 0 for code in codes) else 1
