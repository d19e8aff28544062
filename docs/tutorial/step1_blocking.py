"""Step 1: a blocking server. One thread, one connection at a time.

    python -m docs.tutorial.step1_blocking --port 8081

The thread blocks in accept() until a client connects, then in recv() until
that client sends, then in sendall() until the kernel has taken the answer.
While one client keeps its keep-alive connection open, nobody else is
served: a second client's connection is completed by the kernel and waits
in the listener's backlog, its request unread, until the first client goes
away (docs/tutorial/01-blocking.md measures that wait).
"""

from __future__ import annotations

import socket

from docs.tutorial.api import handle, listen
from docs.tutorial.hand_parser import BadRequest, HandParser


def serve_connection(conn: socket.socket) -> None:
    """Answer one client's requests until it closes; every call here blocks."""
    with conn:
        try:
            answer_until_closed(conn, HandParser())
        except ConnectionError:  # the client went away mid-answer
            pass


def answer_until_closed(conn: socket.socket, parser: HandParser) -> None:
    while True:
        try:
            request = parser.next_request()
        except BadRequest as refusal:
            conn.sendall(parser.refuse(refusal.status))
            return
        if request is None:  # not all of it has arrived: wait for more
            data = conn.recv(65536)  # blocks until the client sends or closes
            if not data:
                return
            parser.feed(data)
            continue
        status, body = handle(request.method, request.path, request.query, request.body)
        conn.sendall(parser.respond(status, body))  # blocks until the kernel has it all


def serve(listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()  # blocks until a client connects
        serve_connection(conn)


if __name__ == "__main__":
    serve(listen("step 1: a blocking server, one connection at a time")[0])
