"""A response that comes later: the executor gets a responder (the
request's cycle) and may answer from another thread, once, whenever it is
ready. Each test injects an executor that keeps the cycles instead of
answering at once; the server, its sockets and h11 are real."""

from __future__ import annotations

import queue

import pytest

from selectorkv.http.cycle import RequestCycle
from selectorkv.http.exchange import Request, Response, Task
from tests.support import RawClient, ServerFactory, request_bytes, wait_until


class LaterExecutor:
    """Answers nothing itself: each request's cycle waits in ``waiting``
    for the test's thread to answer it (or not)."""

    def __init__(self) -> None:
        self.waiting: queue.SimpleQueue[tuple[Request, RequestCycle]] = queue.SimpleQueue()

    def execute(self, request: Request, cycle: RequestCycle) -> None:
        self.waiting.put((request, cycle))

    def resume(self, cycle: RequestCycle) -> None:
        cycle.continue_stream()

    def run(self, task: Task) -> None:
        task()

    def is_full(self) -> bool:
        return False


@pytest.mark.timing
def test_answer_from_another_thread_is_written_later_injected_executor(
    make_server: ServerFactory,
) -> None:
    executor = LaterExecutor()
    server = make_server("sync", executor=executor)
    client = RawClient(server.address)
    client.send(request_bytes("PUT", "/v0/entity?id=k", b"v") + request_bytes("GET", "/x"))
    request, cycle = executor.waiting.get(timeout=10)
    assert request[:3] == (b"PUT", b"/v0/entity?id=k", b"v")
    assert request.header(b"content-length") == b"1"  # the headers are handed up
    assert executor.waiting.empty()  # the pipelined GET waits for this answer
    assert cycle.respond(Response(201))  # from this thread, not the SelectorThread
    assert client.read_reply().status == 201
    with pytest.raises(RuntimeError, match="answered twice"):
        cycle.respond(Response(200))
    request, cycle = executor.waiting.get(timeout=10)  # parsed after the answer
    assert request.target == b"/x"
    assert cycle.respond(Response(200, b"later"))
    reply = client.read_reply()
    assert (reply.status, reply.body) == (200, b"later")
    client.send(request_bytes("GET", "/y"))  # the connection goes on
    request, cycle = executor.waiting.get(timeout=10)
    assert request.target == b"/y"
    assert cycle.respond(Response(404))
    assert client.read_reply().status == 404


@pytest.mark.timing
def test_answer_that_never_comes_is_504_after_the_request_timeout_injected_executor(
    make_server: ServerFactory,
) -> None:
    """Longer than the keep-alive timeout: a request that waits is not idle."""
    executor = LaterExecutor()
    server = make_server("sync", executor=executor, request_timeout=0.5, keepalive_timeout=0.1)
    client = RawClient(server.address)
    client.send(request_bytes("GET", "/v0/entity?id=k"))
    _, cycle = executor.waiting.get(timeout=10)
    reply = client.read_reply()
    assert reply.status == 504
    assert reply.headers.get(b"connection") == b"close"
    assert client.is_closed_by_server()
    assert not cycle.respond(Response(200))  # too late: dropped, nothing raised
    wait_until(lambda: server.metrics().count(b'status="504"') == 1, "the 504 counted")
