"""Step 8: the reactor as a client. Every request goes to three backends,
and is answered once two of them have answered (the course's stage 5:
"threads must not block at all").

    python -m docs.tutorial.step4_h11 --port 8091      # three backends (any step)
    python -m docs.tutorial.step4_h11 --port 8092
    python -m docs.tutorial.step4_h11 --port 8093
    python -m docs.tutorial.step8_fanout --port 8088 --backends 8091,8092,8093
    python -m docs.tutorial.step8_fanout --port 8089 --backends 8091,8092,8093 --blocking

The reactor of step 3b (with step 4's h11) serves the clients. For each
request it opens a non-blocking socket to every backend and registers it
on the same selector as the clients' sockets: connecting, sending the
request and reading the answer are three more kinds of readiness, and the
loop that serves the clients also drives the calls. A ``Gather`` counts the
answers; at ``--need`` of them (2) the client's answer is written (the first
answer's status and body) and the remaining calls are dropped. A deadline
(``--deadline``, 1 s) bounds the wait: the loop's ``select()`` sleeps no
longer than the nearest deadline, and a request whose backends did not
answer in time gets a 504.

``--blocking`` does the same with the plain calls a first version would
write: one backend after the other, each with a socket timeout of
``--deadline``, until two have answered. It serves one request at a time,
and a backend that does not answer costs every request the full timeout.

Both keep the connection to a backend for one call only (``Connection:
close``); selectorkv keeps a pool of open ones per peer
(selectorkv/cluster/peer.py), and its coordinator (replication.py) is this
step's Gather with versions, read repair and hints.
"""

from __future__ import annotations

import argparse
import errno
import selectors
import socket
import time
from urllib.parse import quote

from docs.tutorial.api import listen
from docs.tutorial.hand_parser import Request
from docs.tutorial.step3_reactor import Connection
from docs.tutorial.step3b_flow import FlowReactor
from docs.tutorial.step4_h11 import H11Parser

GATEWAY_TIMEOUT = 504


def call_bytes(request: Request) -> bytes:
    """The client's request, as sent on to a backend (one call per connection)."""
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in request.query.items())
    head = (
        f"{request.method.decode()} {request.path.decode()}?{query} HTTP/1.1\r\n"
        f"Host: backend\r\nContent-Length: {len(request.body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + request.body


def parse_answer(data: bytes) -> tuple[int, bytes] | None:
    """(status, body) once ``data`` holds a whole answer framed by
    Content-Length (every step frames its answers so); None until then."""
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if len(body) < length:
        return None
    return int(head.split(b" ", 2)[1]), body[:length]


class Gather:
    """One client request's calls: answered at ``need`` answers, or 504 at
    the deadline."""

    def __init__(self, reactor: FanoutReactor, conn: Connection, deadline: float) -> None:
        self.reactor = reactor
        self.conn = conn
        self.deadline = deadline
        self.answers: list[tuple[int, bytes]] = []
        self.calls: list[Call] = []
        self.done = False

    def answered(self, status: int, body: bytes) -> None:
        self.answers.append((status, body))
        if len(self.answers) >= self.reactor.need:
            self.finish(*self.answers[0])

    def failed(self) -> None:
        """A call ended without an answer: can the rest still make ``need``?"""
        open_calls = sum(not call.ended for call in self.calls)
        if len(self.answers) + open_calls < self.reactor.need:
            self.finish(GATEWAY_TIMEOUT, b"not enough backends answered")

    def finish(self, status: int, body: bytes) -> None:
        if self.done:
            return
        self.done = True
        for call in self.calls:
            call.end()  # the answers no longer needed are not waited for
        self.reactor.respond(self, status, body)


class Call:
    """One request to one backend on a non-blocking socket: connect, send,
    read, each step done when the selector says the socket is ready."""

    def __init__(self, reactor: FanoutReactor, gather: Gather, port: int, data: bytes) -> None:
        self.reactor = reactor
        self.gather = gather
        self.outbox = bytearray(data)
        self.inbox = bytearray()
        self.ended = False
        self.sock = socket.socket()
        self.sock.setblocking(False)
        code = self.sock.connect_ex(("127.0.0.1", port))
        if code not in (0, errno.EINPROGRESS):
            self.sock.close()
            self.ended = True
            return
        # Writable once connected: the request goes out then.
        reactor.selector.register(self.sock, selectors.EVENT_WRITE, self.on_events)

    def on_events(self, events: int) -> None:
        try:
            if events & selectors.EVENT_WRITE:
                sent = self.sock.send(self.outbox)
                del self.outbox[:sent]
                if not self.outbox:
                    self.reactor.selector.modify(self.sock, selectors.EVENT_READ, self.on_events)
            if events & selectors.EVENT_READ:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError("the backend closed before answering")
                self.inbox += data
                answer = parse_answer(bytes(self.inbox))
                if answer is not None:
                    self.end()
                    self.gather.answered(*answer)
        except BlockingIOError:
            return
        except OSError:  # refused, reset, closed: this backend gives no answer
            self.end()
            self.gather.failed()

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.reactor.selector.unregister(self.sock)
            self.sock.close()


class FanoutReactor(FlowReactor):
    """Step 3b's reactor (with h11) whose answers come from backends. A
    connection whose request is out waits, unread, until its answer is
    written: pipelined requests are answered in order."""

    def __init__(self, backends: list[int], need: int, deadline: float) -> None:
        super().__init__(H11Parser)
        self.backends = backends
        self.need = need
        self.deadline = deadline
        self.gathers: list[Gather] = []
        self.waiting: set[Connection] = set()

    def run(self) -> None:
        while True:
            timeout = None
            if self.gathers:  # wake for the nearest deadline, not later
                timeout = max(0.0, min(g.deadline for g in self.gathers) - time.monotonic())
            for key, events in self.selector.select(timeout):
                key.data(events)
            now = time.monotonic()
            for gather in [g for g in self.gathers if g.deadline <= now]:
                gather.finish(GATEWAY_TIMEOUT, b"no answer in time")

    def next_request(self, conn: Connection) -> Request | None:
        return None if conn in self.waiting else super().next_request(conn)

    def answer(self, conn: Connection, request: Request) -> None:
        gather = Gather(self, conn, time.monotonic() + self.deadline)
        self.gathers.append(gather)
        self.waiting.add(conn)
        data = call_bytes(request)
        gather.calls = [Call(self, gather, port, data) for port in self.backends]
        gather.failed()  # every connect may have failed at once

    def respond(self, gather: Gather, status: int, body: bytes) -> None:
        self.gathers.remove(gather)
        conn = gather.conn
        self.waiting.discard(conn)
        if conn.sock.fileno() < 0:
            return  # the client left meanwhile
        conn.outbox += conn.parser.respond(status, body)
        conn.closing = conn.parser.must_close
        self.serve(conn)  # write it, then go on with the requests that wait

    def close(self, conn: Connection) -> None:
        self.waiting.discard(conn)
        super().close(conn)


class BlockingFanout(FlowReactor):
    """The same answers, with blocking calls made one after another."""

    def __init__(self, backends: list[int], need: int, deadline: float) -> None:
        super().__init__(H11Parser)
        self.backends = backends
        self.need = need
        self.deadline = deadline

    def answer(self, conn: Connection, request: Request) -> None:
        answers = []
        for port in self.backends:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=self.deadline) as sock:
                    sock.sendall(call_bytes(request))
                    answers.append(self.read_answer(sock))
            except OSError:  # refused, or no answer within the timeout: the next one
                continue
            if len(answers) == self.need:
                break
        status, body = (
            answers[0] if len(answers) >= self.need else (GATEWAY_TIMEOUT, b"not enough backends")
        )
        conn.outbox += conn.parser.respond(status, body)
        conn.closing = conn.parser.must_close

    @staticmethod
    def read_answer(sock: socket.socket) -> tuple[int, bytes]:
        data = b""
        while (answer := parse_answer(data)) is None:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the backend closed before answering")
            data += chunk
        return answer


def main() -> None:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--backends", required=True, help="the backends' ports, comma-separated")
    options.add_argument("--need", type=int, default=2, help="answers a request waits for (2)")
    options.add_argument("--deadline", type=float, default=1.0, help="seconds to wait for them")
    options.add_argument(
        "--blocking", action="store_true", help="call the backends one after another"
    )
    listener, args = listen("step 8: the reactor as a client", options)
    backends = [int(port) for port in args.backends.split(",")]
    kind = BlockingFanout if args.blocking else FanoutReactor
    reactor = kind(backends, args.need, args.deadline)
    reactor.listen_on(listener)
    reactor.run()


if __name__ == "__main__":
    main()
