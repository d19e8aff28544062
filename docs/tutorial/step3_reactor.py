"""Step 3: one reactor. One thread, every connection, no call that waits.

    python -m docs.tutorial.step3_reactor --port 8083

Every socket is non-blocking and registered with a selector (epoll on
Linux). The loop asks the kernel which sockets are ready and calls the
handler registered with each: accept on the listener, read and answer on a
client. A call that would block raises BlockingIOError instead, and the loop
moves on.

Readiness is level-triggered: a socket with unread bytes is reported on
every select() until they are read, and a socket with room in its send
buffer is reported writable on every select() while it stays registered for
EVENT_WRITE. So the loop may read once per report and lose nothing, and it
asks for EVENT_WRITE only while it has something to send.

Two buffers per connection, because neither direction moves in whole
requests:
- the parser's inbox: the bytes read so far; a request is answered only when
  all of it is there (HandParser.next_request returns None until then);
- ``outbox``: the answer bytes the kernel has not taken yet. A slow reader
  fills its socket's send buffer; send() then takes part of an answer, and
  the rest waits here while the loop serves everyone else.

Nothing bounds the outbox here: a client that pipelines requests and reads
nothing makes it grow without end. Step 3b (step3b_flow.py) adds the
limit, through the two hooks ``room_for_answers`` and ``reading_wanted``.
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Callable
from functools import partial

from docs.tutorial.api import handle, listen
from docs.tutorial.hand_parser import BadRequest, HandParser, Parser, Request

# What a selector key's data holds here: the handler to call with its events.
Handler = Callable[[int], None]


class Connection:
    def __init__(self, sock: socket.socket, parser: Parser) -> None:
        self.sock = sock
        self.parser = parser
        self.outbox = bytearray()
        self.closing = False  # close once the outbox is sent


class Reactor:
    def __init__(self, new_parser: Callable[[], Parser] = HandParser) -> None:
        self.selector = selectors.DefaultSelector()
        self.new_parser = new_parser

    def listen_on(self, listener: socket.socket) -> None:
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ, partial(self.accept, listener))

    def run(self) -> None:
        while True:
            for key, events in self.selector.select():  # blocks: the loop's one wait
                handler: Handler = key.data
                handler(events)

    def accept(self, listener: socket.socket, _events: int) -> None:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:  # the client gave up before we got to it
            return
        self.adopt(sock)

    def adopt(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        conn = Connection(sock, self.new_parser())
        self.selector.register(sock, selectors.EVENT_READ, partial(self.on_events, conn))

    def on_events(self, conn: Connection, events: int) -> None:
        if events & selectors.EVENT_READ and not self.receive(conn):
            return
        self.serve(conn)

    def receive(self, conn: Connection) -> bool:
        """Feed the parser what the socket has; False if the client closed."""
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:  # reported ready, then not: it will be reported again
            return True
        except ConnectionError:
            data = b""
        if not data:
            self.close(conn)
            return False
        conn.parser.feed(data)
        return True

    def serve(self, conn: Connection) -> None:
        """Answer what has arrived and send what the kernel takes, until one
        of them has nothing more to give."""
        while True:
            stopped = self.answer_buffered(conn)
            if not self.flush(conn) or not stopped or not self.room_for_answers(conn):
                return

    def answer_buffered(self, conn: Connection) -> bool:
        """Answer the complete requests the parser holds; True if it stopped
        for lack of room (step 3b) with requests perhaps left."""
        while self.room_for_answers(conn):
            request = self.next_request(conn)
            if request is None:
                return False
            self.answer(conn, request)
        return True

    def room_for_answers(self, conn: Connection) -> bool:
        """May more answers be added to the outbox? Here, always."""
        return True

    def reading_wanted(self, conn: Connection) -> bool:
        """Should the loop read this connection? Here, always."""
        return True

    def next_request(self, conn: Connection) -> Request | None:
        if conn.closing:
            return None
        try:
            return conn.parser.next_request()
        except BadRequest as refusal:
            conn.outbox += conn.parser.refuse(refusal.status)
            conn.closing = True
            return None

    def answer(self, conn: Connection, request: Request) -> None:
        status, body = handle(request.method, request.path, request.query, request.body)
        conn.outbox += conn.parser.respond(status, body)
        conn.closing = conn.parser.must_close

    def flush(self, conn: Connection) -> bool:
        """Send what the kernel takes now and say what to wait for next;
        False if the connection is closed."""
        try:
            sent = conn.sock.send(conn.outbox) if conn.outbox else 0
        except BlockingIOError:
            sent = 0
        except ConnectionError:
            self.close(conn)
            return False
        del conn.outbox[:sent]
        if conn.closing and not conn.outbox:
            self.close(conn)
            return False
        wanted = (selectors.EVENT_READ if self.reading_wanted(conn) else 0) | (
            selectors.EVENT_WRITE if conn.outbox else 0
        )
        key = self.selector.get_key(conn.sock)
        if key.events != wanted:
            self.selector.modify(conn.sock, wanted, key.data)
        return True

    def close(self, conn: Connection) -> None:
        self.selector.unregister(conn.sock)
        conn.sock.close()


if __name__ == "__main__":
    reactor = Reactor()
    reactor.listen_on(listen("step 3: one reactor")[0])
    reactor.run()
