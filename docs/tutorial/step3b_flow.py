"""Step 3b: flow control. Step 3's reactor, with a bound on what it holds
for a client that does not read.

    python -m docs.tutorial.step3b_flow --port 8083

A client may pipeline requests (send many before reading any answer), and
step 3 answers each one as it is parsed, adding the answer to the
connection's outbox. A client that sends requests for large values and
reads nothing therefore makes the outbox grow without end: the kernel's
buffers fill, and then the server's memory does.

Here, while a connection's outbox holds OUTBOX_LIMIT bytes, the reactor
neither answers its next request nor reads from it: the connection is
registered for EVENT_WRITE only. Its unread requests wait in the kernel's
receive buffer, and once that is full in the client's send buffer: the
client is slowed down by TCP itself, at no cost to the server. When the
client reads and the outbox drains below the limit, reading and answering
resume. The same rule (a high-water mark on the outbound buffer) is
selectorkv's ``HIGH_WATER`` (selectorkv/reactor/transport.py).
"""

from __future__ import annotations

from docs.tutorial.api import listen
from docs.tutorial.step3_reactor import Connection, Reactor

OUTBOX_LIMIT = 1024 * 1024


class FlowReactor(Reactor):
    """Step 3's reactor with a high-water mark on each outbox."""

    def room_for_answers(self, conn: Connection) -> bool:
        return len(conn.outbox) < OUTBOX_LIMIT

    def reading_wanted(self, conn: Connection) -> bool:
        return len(conn.outbox) < OUTBOX_LIMIT


if __name__ == "__main__":
    reactor = FlowReactor()
    reactor.listen_on(listen("step 3b: flow control")[0])
    reactor.run()
