"""docs/tutorial's step programs: each serves the API, and does what its
chapter says it does.

Every step runs as its own process on a free port (the way a learner runs
it), except where a test injects a slow storage: those run the step's
reactor in this process, with ``handle`` replaced by one that holds a
request until the test lets it go.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from docs.tutorial import api, step3_reactor
from docs.tutorial.hand_parser import MAX_BODY
from docs.tutorial.measure import ROOT, StepProcess
from docs.tutorial.step3_reactor import Connection, Reactor
from docs.tutorial.step3b_flow import OUTBOX_LIMIT, FlowReactor
from docs.tutorial.step4_h11 import H11Parser
from docs.tutorial.step5_pool import PoolReactor, new_pool
from docs.tutorial.step6_reactors import accept_forever
from selectorkv.lab.harness.servers import free_port
from tests.support import RawClient, request_bytes, wait_until

STEPS = [
    ("step1_blocking",),
    ("step2_threads",),
    ("step3_reactor",),
    ("step3b_flow",),
    ("step4_h11",),
    ("step5_pool", "--workers", "2"),
    ("step6_reactors", "--reactors", "2", "--workers", "2"),
    ("step6_reactors", "--reactors", "2", "--workers", "0"),
]
CONCURRENT = STEPS[1:]
NON_BLOCKING = STEPS[2:]
HAND_PARSED = [("step1_blocking",), ("step3_reactor",), ("step3b_flow",)]
H11_PARSED = STEPS[4:]


def step_id(step: tuple[str, ...]) -> str:
    return " ".join(step)


@contextmanager
def running(step: tuple[str, ...]) -> Iterator[tuple[str, int]]:
    process = StepProcess(*step)
    try:
        yield process.address
    finally:
        process.stop()


@pytest.mark.parametrize("step", STEPS, ids=step_id)
def test_step_serves_the_api(step: tuple[str, ...]) -> None:
    with running(step) as address:
        client = RawClient(address)
        assert client.request("PUT", "/v0/entity?id=k", b"value").status == 201
        reply = client.request("GET", "/v0/entity?id=k")
        assert (reply.status, reply.body) == (200, b"value")
        assert client.request("DELETE", "/v0/entity?id=k").status == 202
        assert client.request("GET", "/v0/entity?id=k").status == 404
        assert client.request("GET", "/v0/entity").status == 400
        assert client.request("GET", "/v0/other?id=k").status == 400
        assert client.request("POST", "/v0/entity?id=k", b"").status == 405
        client.close()


@pytest.mark.parametrize("step", STEPS, ids=step_id)
def test_pipelined_requests_are_answered_in_order(step: tuple[str, ...]) -> None:
    with running(step) as address:
        client = RawClient(address)
        client.send(
            request_bytes("PUT", "/v0/entity?id=p", b"1")
            + request_bytes("GET", "/v0/entity?id=p")
            + request_bytes("DELETE", "/v0/entity?id=p")
            + request_bytes("GET", "/v0/entity?id=p")
        )
        replies = [client.read_reply() for _ in range(4)]
        assert [(r.status, r.body) for r in replies] == [
            (201, b""),
            (200, b"1"),
            (202, b""),
            (404, b""),
        ]
        client.close()


@pytest.mark.timing
def test_blocking_server_answers_a_second_client_only_after_the_first_leaves() -> None:
    with running(("step1_blocking",)) as address:
        first = RawClient(address)
        assert first.request("PUT", "/v0/entity?id=a", b"1").status == 201
        second = RawClient(address)
        second.send(request_bytes("GET", "/v0/entity?id=a"))
        # The first is answered again: the server's one thread is still in its loop...
        assert first.request("GET", "/v0/entity?id=a").status == 200
        # ...so the second's request has not been read, let alone answered.
        second.sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            second.sock.recv(1)
        second.sock.settimeout(10)
        first.close()
        reply = second.read_reply()
        assert (reply.status, reply.body) == (200, b"1")
        second.close()


@pytest.mark.parametrize("step", CONCURRENT, ids=step_id)
def test_second_client_is_answered_while_the_first_stays_connected(step: tuple[str, ...]) -> None:
    with running(step) as address:
        first = RawClient(address)
        assert first.request("PUT", "/v0/entity?id=a", b"1").status == 201
        second = RawClient(address)
        reply = second.request("GET", "/v0/entity?id=a")
        assert (reply.status, reply.body) == (200, b"1")
        assert first.request("GET", "/v0/entity?id=a").status == 200
        first.close()
        second.close()


@pytest.mark.timing
@pytest.mark.parametrize("step", NON_BLOCKING, ids=step_id)
def test_slow_reader_gets_every_byte_and_holds_up_no_one(step: tuple[str, ...]) -> None:
    big = b"b" * (1024 * 1024)
    with running(step) as address:
        assert RawClient(address).request("PUT", "/v0/entity?id=big", big).status == 201
        slow = RawClient(address, rcvbuf=4096)
        slow.send(request_bytes("GET", "/v0/entity?id=big") * 8)  # 8 MiB of answers, none read
        other = RawClient(address)
        assert other.request("GET", "/v0/entity?id=small").status == 404
        for _ in range(8):
            reply = slow.read_reply()
            assert (reply.status, reply.body == big) == (200, True)
        slow.close()
        other.close()


@pytest.mark.parametrize("step", HAND_PARSED + H11_PARSED[:1], ids=step_id)
def test_malformed_content_length_is_refused_and_closed(step: tuple[str, ...]) -> None:
    with running(step) as address:
        client = RawClient(address)
        client.send(b"PUT /v0/entity?id=x HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n")
        assert client.read_reply().status == 400
        assert client.is_closed_by_server()


@pytest.mark.parametrize("step", HAND_PARSED + H11_PARSED[:1], ids=step_id)
def test_body_over_the_limit_is_refused_with_413(step: tuple[str, ...]) -> None:
    with running(step) as address:
        client = RawClient(address)
        client.send(
            request_bytes("PUT", "/v0/entity?id=x", extra=f"Content-Length: {MAX_BODY + 1}\r\n")
        )
        assert client.read_reply().status == 413
        assert client.is_closed_by_server()


def test_h11_refuses_two_different_content_lengths() -> None:
    with running(("step4_h11",)) as address:
        client = RawClient(address)
        client.send(
            b"PUT /v0/entity?id=x HTTP/1.1\r\nHost: t\r\n"
            b"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"
        )
        assert client.read_reply().status == 400
        assert client.is_closed_by_server()


def test_h11_closes_after_the_answer_when_the_client_asks() -> None:
    with running(("step4_h11",)) as address:
        client = RawClient(address)
        client.send(request_bytes("GET", "/v0/entity?id=x", extra="Connection: close\r\n"))
        assert client.read_reply().status == 404
        assert client.is_closed_by_server()


def test_readiness_demo_shows_level_triggered_reports() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "docs.tutorial.readiness"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert "90 left unread:         readable on 3 of 3 selects" in out
    assert "nothing left:           readable on 0 of 3 selects" in out
    assert "writable on 1000 of 1000 selects" in out


# ----------------------------------------------------------------------
# A slow storage injected: the reactor in this process, handle() gated
# ----------------------------------------------------------------------


@dataclass
class SlowStorage:
    entered: threading.Event  # a request for id=slow is in handle()
    release: threading.Event  # let it go on


@pytest.fixture
def slow_storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowStorage]:
    """Requests for id=slow wait in handle() until the test releases them."""
    gate = SlowStorage(threading.Event(), threading.Event())

    def gated(
        method: bytes, path: bytes, query: dict[bytes, bytes], body: bytes
    ) -> tuple[int, bytes]:
        if query.get(b"id") == b"slow":
            gate.entered.set()
            gate.release.wait(30)
        return api.handle(method, path, query, body)

    monkeypatch.setattr(step3_reactor, "handle", gated)
    yield gate
    gate.release.set()


def start_in_process(reactors: list[Reactor]) -> tuple[str, int]:
    """The reactors on daemon threads (they serve until pytest exits), fed
    by an acceptor thread if there is more than one."""
    listener = socket.create_server(("127.0.0.1", 0))
    if len(reactors) == 1:
        reactors[0].listen_on(listener)
    else:
        pools = [r for r in reactors if isinstance(r, PoolReactor)]
        threading.Thread(target=accept_forever, args=(listener, pools), daemon=True).start()
    for reactor in reactors:
        threading.Thread(target=reactor.run, daemon=True).start()
    address: tuple[str, int] = listener.getsockname()
    return address


def slow_then_other(
    address: tuple[str, int], slow_storage: SlowStorage
) -> tuple[RawClient, RawClient]:
    """One client's request is waiting on the storage; then a second client asks."""
    waiting = RawClient(address)
    waiting.send(request_bytes("GET", "/v0/entity?id=slow"))
    assert slow_storage.entered.wait(10)
    other = RawClient(address)
    other.send(request_bytes("GET", "/v0/entity?id=other"))
    return waiting, other


def has_no_answer_yet(client: RawClient) -> bool:
    client.sock.setblocking(False)
    try:
        client.sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    finally:
        client.sock.settimeout(10)
    return False


@pytest.mark.timing
def test_without_a_pool_a_slow_storage_holds_every_client(slow_storage: SlowStorage) -> None:
    waiting, other = slow_then_other(start_in_process([Reactor(H11Parser)]), slow_storage)
    # The reactor's one thread is inside handle(): nobody can be answered.
    assert has_no_answer_yet(other)
    slow_storage.release.set()
    assert waiting.read_reply().status == 404
    assert other.read_reply().status == 404


@pytest.mark.timing
@pytest.mark.parametrize("reactors", [1, 2])
def test_pool_answers_others_while_a_request_waits_on_a_slow_storage(
    slow_storage: SlowStorage, reactors: int
) -> None:
    pool = new_pool(2)
    address = start_in_process([PoolReactor(pool) for _ in range(reactors)])
    waiting, other = slow_then_other(address, slow_storage)
    assert other.read_reply().status == 404  # answered while the slow request still waits
    assert has_no_answer_yet(waiting)
    slow_storage.release.set()
    assert waiting.read_reply().status == 404
    # The connection came back to its reactor: it serves the next request.
    assert waiting.request("GET", "/v0/entity?id=other").status == 404


# Step 8: the reactor as a client. Three backends (step 4 servers), and the
# fan-out in front of them, as a reactor and as blocking calls in turn.


@contextmanager
def backends(count: int = 3) -> Iterator[list[StepProcess]]:
    started = [StepProcess("step4_h11") for _ in range(count)]
    try:
        yield started
    finally:
        for backend in started:
            os.kill(backend.server.pid, signal.SIGCONT)  # a stopped one too
            backend.stop()


def fanout(ports: list[int], *flags: str) -> StepProcess:
    return StepProcess("step8_fanout", "--backends", ",".join(map(str, ports)), *flags)


@pytest.mark.parametrize("flags", [(), ("--blocking",)], ids=["reactor", "blocking"])
def test_fanout_serves_the_api_through_two_of_three_backends(flags: tuple[str, ...]) -> None:
    with backends() as started:
        front = fanout([b.address[1] for b in started], *flags)
        try:
            client = RawClient(front.address)
            assert client.request("PUT", "/v0/entity?id=k%20x", b"value").status == 201
            reply = client.request("GET", "/v0/entity?id=k%20x")
            assert (reply.status, reply.body) == (200, b"value")
            held = [
                RawClient(b.address).request("GET", "/v0/entity?id=k%20x").status == 200
                for b in started
            ]
            assert sum(held) >= 2  # the third call may have been dropped at two answers
            assert client.request("DELETE", "/v0/entity?id=k%20x").status == 202
        finally:
            front.stop()


@pytest.mark.timing
def test_the_reactor_answers_while_a_backend_is_stopped_and_the_blocking_calls_wait() -> None:
    """Backend 1 is stopped (SIGSTOP): it accepts connections and never
    answers. With a deadline far away, the reactor answers from the other
    two at once; the blocking version waits on backend 1 until it runs again."""
    with backends() as started:
        ports = [b.address[1] for b in started]
        reactor = fanout(ports, "--deadline", "120")
        blocking = fanout(ports, "--deadline", "120", "--blocking")
        try:
            os.kill(started[0].server.pid, signal.SIGSTOP)
            waiting = RawClient(blocking.address)
            waiting.send(request_bytes("PUT", "/v0/entity?id=b", b"1"))
            assert RawClient(reactor.address).request("PUT", "/v0/entity?id=r", b"1").status == 201
            assert has_no_answer_yet(waiting)
            os.kill(started[0].server.pid, signal.SIGCONT)
            assert waiting.read_reply().status == 201
        finally:
            reactor.stop()
            blocking.stop()


@pytest.mark.parametrize("flags", [(), ("--blocking",)], ids=["reactor", "blocking"])
def test_fewer_answers_than_needed_is_a_504(flags: tuple[str, ...]) -> None:
    """Two stopped backends: the deadline passes with one answer."""
    with backends() as started:
        ports = [b.address[1] for b in started]
        for backend in started[:2]:
            os.kill(backend.server.pid, signal.SIGSTOP)
        front = fanout(ports, "--deadline", "0.2", *flags)
        try:
            assert RawClient(front.address).request("GET", "/v0/entity?id=k").status == 504
        finally:
            front.stop()


def test_backends_that_refuse_are_given_up_at_once_not_at_the_deadline() -> None:
    """Two ports with nothing behind them: the reactor knows as soon as the
    connections are refused that two answers cannot come (the deadline, two
    minutes away, is not what ends the wait)."""
    with backends(1) as started:
        ports = [started[0].address[1], free_port(), free_port()]
        front = fanout(ports, "--deadline", "120")
        try:
            assert RawClient(front.address).request("GET", "/v0/entity?id=k").status == 504
        finally:
            front.stop()


class Recorded:
    """A reactor that keeps the connections it adopted, for the test to look at."""

    conns: list[Connection]

    def adopt(self, sock: socket.socket) -> None:
        super().adopt(sock)  # type: ignore[misc]
        self.conns.append(self.selector.get_key(sock).data.args[0])  # type: ignore[attr-defined]


class RecordedReactor(Recorded, Reactor):
    conns: list[Connection] = []


class RecordedFlowReactor(Recorded, FlowReactor):
    conns: list[Connection] = []


@pytest.mark.timing
@pytest.mark.parametrize("kind", [RecordedReactor, RecordedFlowReactor], ids=["3", "3b"])
def test_a_client_that_reads_nothing_costs_step_3_without_bound_and_step_3b_a_megabyte(
    kind: type[RecordedReactor] | type[RecordedFlowReactor],
) -> None:
    """Sixteen pipelined GETs of a 1 MiB value, nothing read: step 3 keeps
    answering into the outbox; step 3b stops reading the client at
    OUTBOX_LIMIT, and serves the others meanwhile."""
    reactor = kind()
    reactor.conns = []
    address = start_in_process([reactor])
    big = b"b" * 2**20
    assert RawClient(address).request("PUT", "/v0/entity?id=big", big).status == 201
    slow = RawClient(address, rcvbuf=4096)
    slow.send(request_bytes("GET", "/v0/entity?id=big") * 16)
    wait_until(lambda: len(reactor.conns) == 2, "the slow client adopted")
    conn = reactor.conns[1]
    if kind is RecordedReactor:
        wait_until(lambda: len(conn.outbox) >= 8 * 2**20, "the outbox past 8 MiB")
    else:
        wait_until(
            lambda: not reactor.selector.get_key(conn.sock).events & selectors.EVENT_READ,
            "reading the slow client stopped",
        )
        assert len(conn.outbox) < OUTBOX_LIMIT + len(big) + 1024  # at most one answer over
        assert RawClient(address).request("GET", "/v0/entity?id=other").status == 404
