"""One request's cycle, from its head to its response: the handle its
answer is given to, once, from any thread.

A connection hands a complete request to its executor with its
``RequestCycle``, the responder. Sync mode answers at once inside
``execute``; async mode hands the connection to a PayloadThread
(``hand_off``), which writes the answer and hands it back; an answer that
comes later from elsewhere (a committed batch, a quorum) is posted to the
SelectorThread. Exactly one answer wins: ``respond`` and the timeout take
the cycle's one token, so a late answer returns False and touches nothing.
As in uvicorn, the cycle carries what belongs to its request only, so a late
answer is never written as the next request's. docs/architecture.md, "A
response that comes later".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from selectorkv.http.exchange import Response


class Answered(Protocol):
    """What a cycle needs of its connection (connection.py): somewhere to
    write the answer, and the connection's hand-over to an executor's thread."""

    def deliver(self, cycle: RequestCycle, response: Response) -> None: ...

    def lend(self) -> None: ...

    def continue_stream(self) -> None: ...


class RequestCycle:
    """One request on one connection, and the handle for its answer."""

    __slots__ = (
        "_expired",
        "_token",
        "body",
        "body_size",
        "conn",
        "headers",
        "method",
        "started",
        "target",
    )

    def __init__(
        self,
        conn: Answered,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        self.conn = conn
        self.method = method
        self.target = target
        self.headers = headers
        self.body: list[bytes] = []
        self.body_size = 0
        self.started = 0.0  # time.monotonic() when it began to wait for a later answer
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
        self.conn.deliver(self, response)
        return True

    def hand_off(self) -> None:
        """On the SelectorThread, from an executor that is about to give the
        connection to one of its threads: that thread owns it from now until
        it answers (or produces a stream's slice) and hands it back."""
        self.conn.lend()

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
