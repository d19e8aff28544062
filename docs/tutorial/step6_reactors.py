"""Step 6: an acceptor and several reactors; then what the GIL does to them.

    python -m docs.tutorial.step6_reactors --port 8086 --reactors 2 --workers 0

One reactor is one thread, so it can use at most one core. The textbook
next step (Doug Lea's "multiple reactors") runs N of them, each in its own
thread with its own selector and connections, and one acceptor thread that
accepts and deals the new connections out round-robin. The acceptor reaches
a reactor the one way step 5 allows: it posts the adoption of the socket.
The worker pool, if any, is shared.

In CPython this buys no parallelism for Python code: only the thread that
holds the GIL runs bytecode, and parsing, answering and the loop itself are
all bytecode. docs/tutorial/06-reactors.md measures requests/s and the cores
the process used with 1, 2 and 4 reactors. (The way a CPython server uses
more cores is more processes: the real server's cluster, docs/cluster.md.)
"""

from __future__ import annotations

import argparse
import itertools
import socket
import threading
from functools import partial

from docs.tutorial.api import listen
from docs.tutorial.step5_pool import PoolReactor, new_pool, workers_option


def accept_forever(listener: socket.socket, reactors: list[PoolReactor]) -> None:
    # The listener stays blocking: accepting is all this thread does.
    for reactor in itertools.cycle(reactors):
        sock, _ = listener.accept()
        reactor.post(partial(reactor.adopt, sock))


def options() -> argparse.ArgumentParser:
    parser = workers_option()
    parser.add_argument("--reactors", type=int, default=2, help="reactor threads")
    return parser


if __name__ == "__main__":
    listener, args = listen("step 6: an acceptor and several reactors", options())
    pool = new_pool(args.workers)
    reactors = [PoolReactor(pool) for _ in range(args.reactors)]
    for i, reactor in enumerate(reactors):
        threading.Thread(target=reactor.run, name=f"reactor-{i}", daemon=True).start()
    accept_forever(listener, reactors)
