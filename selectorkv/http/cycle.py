"""One request's cycle, from its head to its response, and the contract
between a connection and whoever executes its requests.

# design: the responder

A connection hands a complete request to an ``Executor`` together with its
``RequestCycle``, which is the responder: the handle that the answer is
given to, once, from any thread, whenever it is ready.

- Sync mode answers at once, on the SelectorThread, inside ``execute``.
- Async mode hands the connection to a PayloadThread (``hand_off``); its
  answer, given on that thread, writes the response there and hands the
  connection back.
- An answer that comes later from elsewhere (a batch of writes committed, a
  quorum of peers heard from) is posted to the SelectorThread, which writes
  it. Until then the connection waits in its own phase: it is not idle (no
  keep-alive close) and not stuck (``ServerConfig.request_timeout`` ends the
  wait with a 504; the late answer is then dropped).

Exactly one answer wins. ``respond`` and the timeout both take the cycle's
one token (``list.pop`` on a one-item list: atomic whatever the threads),
so an answer after the timeout returns False and touches nothing, and an
answer given twice is a bug that raises.

Like uvicorn's ``RequestResponseCycle``, the cycle also carries what
belongs to this request only (its method, target and body so far), so that
a late answer can never be written as the answer to the next request: the
connection compares cycles, not flags.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol

from selectorkv.api import Request, Response

if TYPE_CHECKING:
    from selectorkv.connection import Connection


class Owner(enum.Enum):
    """Which thread may touch a connection's h11 state and socket writes
    (connection.py, "design: ownership"). Handing the connection to an
    executor's thread is part of the contract, so it is defined here."""

    SELECTOR = "selector"
    PAYLOAD = "payload"


class RequestCycle:
    """One request on one connection, and the handle for its answer."""

    __slots__ = (
        "_expired",
        "_token",
        "body",
        "body_size",
        "conn",
        "method",
        "peer_cluster",
        "peer_token",
        "started",
        "target",
    )

    def __init__(self, conn: Connection, method: bytes, target: bytes) -> None:
        self.conn = conn
        self.method = method
        self.target = target
        self.body: list[bytes] = []
        self.body_size = 0
        self.started = 0.0  # time.monotonic() when it began to wait for a later answer
        self.peer_token = b""  # an internal request's cluster token (replication.py)
        self.peer_cluster = b""  # and the sender's cluster id (placement.py)
        self._token = [True]
        self._expired = False

    def __repr__(self) -> str:
        return f"<RequestCycle {self.method.decode('ascii', 'replace')} on {self.conn!r}>"

    def respond(self, response: Response) -> bool:
        """From any thread, once: the answer. False if the request no longer
        waits for one (it timed out, or the connection is gone)."""
        try:
            self._token.pop()
        except IndexError:
            if self._expired:
                return False
            raise RuntimeError(f"{self!r} answered twice") from None
        self.conn.answer(self, response)
        return True

    def hand_off(self) -> None:
        """On the SelectorThread, from an executor that is about to give the
        connection to one of its threads: that thread owns it from now until
        it answers (or produces a stream's slice) and hands it back."""
        self.conn.owner = Owner.PAYLOAD

    def continue_stream(self) -> None:
        """On the connection's owner: produce the next slice of the streamed
        response (and hand the connection back if that owner is a PayloadThread)."""
        self.conn.continue_stream()

    def expire(self) -> bool:
        """On the SelectorThread: stop waiting. False if an answer took the
        token first (it is on its way through the wakeup channel)."""
        self._expired = True
        try:
            self._token.pop()
        except IndexError:
            return False
        return True


class Responder(Protocol):
    """What an executor answers through: a client's ``RequestCycle``, or
    (replication.py) a request a coordinator runs on its own node."""

    def respond(self, response: Response) -> bool: ...

    def hand_off(self) -> None: ...

    def continue_stream(self) -> None: ...


class Executor(Protocol):
    """Runs complete requests: ``InlineExecutor`` (sync) or ``PayloadPool``
    (async), payload.py; in a cluster, a ``Coordinator`` in front of either
    (replication.py). Called on the SelectorThread that owns the connection."""

    def execute(self, request: Request, cycle: Responder) -> None:
        """Run ``request``; give the response to ``cycle.respond``, now or later."""

    def resume(self, cycle: Responder) -> None:
        """Have ``cycle.continue_stream`` called by a thread that may write."""

    def is_full(self) -> bool:
        """True when a new request would be answered 503 (async, queue full)."""
