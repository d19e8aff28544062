"""What a connection hands up and what it gets back: the ``Request``, the
``Response``, and the contract with whoever executes requests (the
``Executor``, answering through a ``Responder``).

The contract is defined here, in the layer that calls it, so that the HTTP
layer depends on nothing above it: the executors (selectorkv/execution/)
and the cluster's coordinators implement it. docs/architecture.md, "The
responder", tells who answers on which thread.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import NamedTuple, Protocol


class Request(NamedTuple):
    """A complete request as the SelectorThread decoded it from h11 events.

    Requests and responses are NamedTuples rather than frozen dataclasses:
    one of each is built per request, and a tuple is built in a fraction of
    the time.
    """

    method: bytes
    target: bytes
    body: bytes = b""
    headers: Sequence[tuple[bytes, bytes]] = ()  # names lower-case, as h11 gives them

    def header(self, name: bytes) -> bytes:
        """The value of header ``name`` (lower-case), b"" if absent."""
        for raw_name, value in self.headers:
            if raw_name == name:
                return bytes(value)
        return b""


class Pause(NamedTuple):
    """What a stream yields when it has nothing to give yet, and more is
    coming from another thread (a cluster-wide range waits for its peers):
    the connection stops asking it for pieces and calls ``notify`` with a
    function that any thread calls, once, when there is more."""

    notify: Callable[[Callable[[], None]], None]


# The body of a streamed response: its pieces, and a Pause where it waits.
Stream = Generator[bytes | Pause, None, None]


class Response(NamedTuple):
    """What to answer. The connection adds the framing: Content-Length for
    ``body``, chunked for a ``stream`` (one chunk per piece it yields)."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    stream: Stream | None = None


# What executes a request in the end: the API's handle (selectorkv/kv/api.py).
Application = Callable[[Request], Response]
# Work an executor runs where it runs requests, for no client's request.
Task = Callable[[], None]


class Responder(Protocol):
    """What an executor answers through: a client's ``RequestCycle``
    (cycle.py), or a request a coordinator runs on its own node
    (selectorkv/cluster/replication.py)."""

    def respond(self, response: Response) -> bool: ...

    def hand_off(self) -> None: ...

    def continue_stream(self) -> None: ...


class Executor(Protocol):
    """Runs complete requests: inline (sync mode) or on the PayloadThread
    pool (async), selectorkv/execution/; in a cluster, a coordinator in front
    of either (selectorkv/cluster/). Called on the SelectorThread that owns
    the connection."""

    def execute(self, request: Request, cycle: Responder) -> None:
        """Run ``request``; give the response to ``cycle.respond``, now or later."""

    def resume(self, cycle: Responder) -> None:
        """Have ``cycle.continue_stream`` called by a thread that may write."""

    def run(self, task: Task) -> None:
        """Run ``task`` where requests run: now on this thread (sync), or on
        a PayloadThread (async). A coordinator's calls to its own node's
        replica go this way, without an HTTP request."""

    def is_full(self) -> bool:
        """True when a new request would be answered 503 (async, queue full)."""
