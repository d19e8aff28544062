"""A SelectorThread's calls to a peer, gathered per round (cluster/batching.py):
on the wire (a raw listener reads what is sent) and against a real
cluster node (every call answered as if sent alone)."""

from __future__ import annotations

import queue
import socket
from collections.abc import Callable

from selectorkv.cluster.batching import RoundCalls, over_http
from selectorkv.cluster.peer import PeerPool
from selectorkv.kv import batch
from selectorkv.kv.records import Record, decode
from selectorkv.lab.harness.nodes import TOKEN, ClusterFactory
from selectorkv.reactor.selector_thread import SelectorThread
from tests.support import on_reactor

HEADERS = ((b"x-selectorkv-token", TOKEN.encode()),)
Answers = queue.SimpleQueue[tuple[int, int, bytes, str]]


def collect(answers: Answers, number: int) -> Callable[[str, int, bytes, str], None]:
    return lambda node, status, body, error: answers.put((number, status, body, error))


def make_calls(reactor: SelectorThread, batches: RoundCalls, calls: list[batch.Call]) -> Answers:
    """Make ``calls`` to the peer in one round of the reactor."""
    answers: Answers = queue.SimpleQueue()

    def in_one_round() -> None:
        for number, call in enumerate(calls):
            batches.call("peer", call, collect(answers, number))

    on_reactor(reactor, in_one_round)
    return answers


def read_request(conn: socket.socket) -> tuple[bytes, bytes]:
    """(request line, body) of one request with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += conn.recv(65536)
    return head.split(b"\r\n")[0], body


def batches_for(
    reactor: SelectorThread,
    address: tuple[str, int],
    max_body: int = 1 << 20,
    max_in_flight: int = 100,
) -> RoundCalls:
    """Calls to one peer, "peer", at ``address``."""
    pool = PeerPool(reactor, max_in_flight=16, timeout=10, max_reply_body=1 << 24)
    send = over_http(pool, address, HEADERS)
    return RoundCalls(reactor.at_round_end, {"peer": send}, max_body, max_in_flight)


def test_the_calls_of_one_round_go_in_one_request(reactor: SelectorThread) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        address = listener.getsockname()[:2]
        batches = batches_for(reactor, address)
        calls = [batch.Call(b"a", None), batch.Call(b"b", b"record"), batch.Call(b"c", None)]
        answers = make_calls(reactor, batches, calls)
        conn, _ = listener.accept()
        with conn:
            line, body = read_request(conn)
            assert line == b"POST /v0/internal/batch HTTP/1.1"
            assert batch.decode_calls(body) == calls
            reply = batch.encode_answers([batch.Answer(200, b"x"), batch.Answer(201, b""),
                                          batch.Answer(404, b"")])  # fmt: skip
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(reply), reply))
            got = sorted(answers.get(timeout=10) for _ in calls)
    assert got == [(0, 200, b"x", ""), (1, 201, b"", ""), (2, 404, b"", "")]


def test_a_lone_call_is_the_plain_internal_request(reactor: SelectorThread) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        batches = batches_for(reactor, listener.getsockname()[:2])
        answers = make_calls(reactor, batches, [batch.Call(b"a key", b"rec")])
        conn, _ = listener.accept()
        with conn:
            line, body = read_request(conn)
            assert (line, body) == (b"PUT /v0/internal/entity?id=a%20key HTTP/1.1", b"rec")
            conn.sendall(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n")
            assert answers.get(timeout=10) == (0, 201, b"", "")


def test_a_failed_batch_fails_each_of_its_calls(reactor: SelectorThread) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        batches = batches_for(reactor, listener.getsockname()[:2])
        calls = [batch.Call(b"a", None), batch.Call(b"b", None)]
        answers = make_calls(reactor, batches, calls)
        conn, _ = listener.accept()
        with conn:
            read_request(conn)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n201 0\n")  # one answer
            got = sorted(answers.get(timeout=10) for _ in calls)
    assert [(status, "1 answers to 2 calls" in error) for _, status, _, error in got] == [
        (0, True), (0, True),
    ]  # fmt: skip


def test_calls_over_the_bound_fail_at_once(reactor: SelectorThread) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        batches = batches_for(reactor, listener.getsockname()[:2], max_in_flight=2)
        calls = [batch.Call(b"%d" % i, None) for i in range(3)]
        answers = make_calls(reactor, batches, calls)
        assert answers.get(timeout=10) == (2, 0, b"", "too many calls in flight to this peer")


def test_against_a_real_node_every_call_is_answered_as_if_alone(
    reactor: SelectorThread, make_cluster: ClusterFactory
) -> None:
    """Seventy calls in one round (more than one batch holds), one of them
    too large to share a batch within the body limit: each answered, and
    the records stored."""
    node = make_cluster(1, "async")[0]
    batches = batches_for(reactor, ("127.0.0.1", node.port), max_body=1000)
    big = Record(7, b"B" * 900, 3).encode()
    calls = [batch.Call(b"key-%d" % i, Record(5, b"value-%d" % i, 3).encode()) for i in range(68)]
    calls += [batch.Call(b"big", big), batch.Call(b"key-3", None)]
    answers = make_calls(reactor, batches, calls)
    got = dict((number, (status, body, error)) for number, status, body, error in
               (answers.get(timeout=30) for _ in calls))  # fmt: skip
    assert [got[i][0] for i in range(69)] == [201] * 69, got
    status, body, _ = got[69]
    assert status == 200 and decode(body) == Record(5, b"value-3", 3)
    assert node.internal("GET", "big")[1] == big
