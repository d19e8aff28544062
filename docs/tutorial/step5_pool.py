"""Step 5: a worker pool, and the wakeup channel that brings the answer back.

    python -m docs.tutorial.step5_pool --port 8085 --workers 8 --delay-ms 2

In step 4 every request runs on the reactor's thread: while one waits on a
slow storage (``--delay-ms``), every other connection waits too. Here the
reactor hands each complete request to a pool of worker threads and goes
back to select(); a worker answers it and hands the connection back.

The ownership rule: a connection has one owner at a time.
- The reactor owns it while it reads, parses and sends.
- A worker owns it from the hand-off to the hand-back: it alone touches the
  parser and the outbox. The reactor unregisters the socket before the
  hand-off, so it gets no events for it and cannot touch it by mistake.
- The hand-back is a call the worker *posts* to the reactor, which runs it
  on the reactor's thread: only that thread ever touches the selector.

Posting needs a way to interrupt select(), which may be sleeping with no
socket ready: the wakeup channel, a socketpair whose read end is registered
with the selector. post() appends the call to a list under a lock and writes
one byte; the reactor wakes, drains the bytes, and runs the calls. The lock
orders the worker's writes to the connection before the reactor's reads of
it.

One request per connection is in flight at a time: pipelined requests wait
in the parser until the answer before them is sent, which keeps them in
order.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from docs.tutorial.api import listen
from docs.tutorial.hand_parser import Parser, Request
from docs.tutorial.step3_reactor import Connection
from docs.tutorial.step3b_flow import FlowReactor
from docs.tutorial.step4_h11 import H11Parser


class PoolReactor(FlowReactor):
    def __init__(
        self, pool: ThreadPoolExecutor | None, new_parser: Callable[[], Parser] = H11Parser
    ) -> None:
        super().__init__(new_parser)
        self.pool = pool  # None: answer on the reactor's thread, as step 4 does
        self.posted: list[Callable[[], None]] = []
        self.lock = threading.Lock()
        self.wake_reader, self.wake_writer = socket.socketpair()
        self.wake_reader.setblocking(False)
        self.wake_writer.setblocking(False)
        self.selector.register(self.wake_reader, selectors.EVENT_READ, self.on_wakeup)

    def post(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the reactor's thread; the one thing other threads may do to it."""
        with self.lock:
            self.posted.append(call)
        try:
            self.wake_writer.send(b"\0")
        except BlockingIOError:  # the channel is full of wake-ups not yet read: one is enough
            pass

    def on_wakeup(self, _events: int) -> None:
        try:
            while self.wake_reader.recv(4096):
                pass
        except BlockingIOError:
            pass
        with self.lock:
            calls, self.posted = self.posted, []
        for call in calls:
            call()

    def serve(self, conn: Connection) -> None:
        if self.pool is None:
            return super().serve(conn)
        # Send what is ready first: an answer should not wait behind the next request.
        if not self.flush(conn) or not self.room_for_answers(conn):
            return
        request = self.next_request(conn)
        if request is None:
            self.flush(conn)  # a refusal, if next_request made one
            return
        self.selector.unregister(conn.sock)  # the hand-off: from here the worker owns conn
        self.pool.submit(self.work, conn, request)

    def work(self, conn: Connection, request: Request) -> None:
        """On a worker thread: answer, then hand the connection back."""
        self.answer(conn, request)
        self.post(partial(self.take_back, conn))

    def take_back(self, conn: Connection) -> None:
        """On the reactor's thread: own conn again, send its answer, read on."""
        self.selector.register(conn.sock, selectors.EVENT_READ, partial(self.on_events, conn))
        self.serve(conn)


def workers_option() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--workers", type=int, default=8, help="worker threads (0: answer on the reactor)"
    )
    return options


def new_pool(workers: int) -> ThreadPoolExecutor | None:
    return ThreadPoolExecutor(workers, thread_name_prefix="worker") if workers else None


if __name__ == "__main__":
    listener, args = listen("step 5: a reactor and a worker pool", workers_option())
    reactor = PoolReactor(new_pool(args.workers))
    reactor.listen_on(listener)
    reactor.run()
