"""Peer calls on a SelectorThread of the test's own, against real servers
on loopback: a selectorkv node, a port nobody listens on, a listener that
never answers, one that closes mid-answer."""

from __future__ import annotations

import queue
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from selectorkv.cluster.peer import PeerPool, PeerReply, PeerRequest
from selectorkv.reactor.selector_thread import SelectorThread
from tests.support import ServerFactory, on_reactor

STATUS = PeerRequest(b"GET", b"/v0/status", (), b"")


def put(key: str, value: bytes) -> PeerRequest:
    return PeerRequest(b"PUT", f"/v0/entity?id={key}".encode(), (), value)


class Replies:
    """Collects the replies, which arrive on the reactor's thread."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[tuple[PeerReply, int]] = queue.SimpleQueue()

    def __call__(self, reply: PeerReply) -> None:
        self.queue.put((reply, threading.get_ident()))

    def next(self) -> PeerReply:
        reply, _ = self.queue.get(timeout=10)
        return reply


def call(
    reactor: SelectorThread, pool: PeerPool, address: tuple[str, int], request: PeerRequest
) -> PeerReply:
    replies = Replies()
    on_reactor(reactor, lambda: pool.call(address, request, replies))
    reply, thread = replies.queue.get(timeout=10)
    assert thread == reactor.thread_id  # the callback runs on the reactor
    return reply


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """Accepts connections (the kernel does, from the backlog) and never answers."""
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


def test_a_call_gets_the_peers_answer_and_the_connection_is_kept(
    make_server: ServerFactory, reactor: SelectorThread
) -> None:
    server = make_server("sync")
    pool = PeerPool(reactor, max_in_flight=4, timeout=5)
    reply = call(reactor, pool, server.address, put("k", b"value"))
    assert (reply.status, reply.error) == (201, "")
    assert on_reactor(reactor, lambda: pool.idle_count(server.address)) == 1
    reply = call(reactor, pool, server.address, PeerRequest(b"GET", b"/v0/entity?id=k", (), b""))
    assert (reply.status, reply.body) == (200, b"value")
    assert on_reactor(reactor, lambda: pool.idle_count(server.address)) == 1  # reused, not a second


def test_a_refused_connect_fails_the_call(reactor: SelectorThread) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        address = placeholder.getsockname()[:2]
    pool = PeerPool(reactor, max_in_flight=4, timeout=5)
    reply = call(reactor, pool, address, STATUS)
    assert reply.status == 0
    assert "ECONNREFUSED" in reply.error
    assert on_reactor(reactor, lambda: pool.idle_count(address)) == 0


@pytest.mark.timing
def test_a_peer_that_does_not_answer_times_out_and_is_not_reused(
    reactor: SelectorThread, listener: socket.socket
) -> None:
    address = listener.getsockname()[:2]
    pool = PeerPool(reactor, max_in_flight=4, timeout=0.2)
    reply = call(reactor, pool, address, STATUS)
    assert (reply.status, reply.error) == (0, "timed out")
    assert on_reactor(reactor, lambda: pool.idle_count(address)) == 0


def test_calls_over_the_bound_fail_at_once(
    reactor: SelectorThread, listener: socket.socket
) -> None:
    address = listener.getsockname()[:2]
    pool = PeerPool(reactor, max_in_flight=1, timeout=30)
    first, second = Replies(), Replies()

    def both() -> None:
        pool.call(address, STATUS, first)
        pool.call(address, STATUS, second)

    on_reactor(reactor, both)
    assert second.next().error == "too many calls in flight to this peer"
    assert first.queue.empty()  # still waiting for the silent peer


def test_a_peer_that_closes_mid_answer_fails_the_call(
    reactor: SelectorThread, listener: socket.socket
) -> None:
    address = listener.getsockname()[:2]
    pool = PeerPool(reactor, max_in_flight=4, timeout=10)
    replies = Replies()
    on_reactor(reactor, lambda: pool.call(address, STATUS, replies))
    peer, _ = listener.accept()
    peer.recv(65536)
    peer.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort")
    peer.close()
    reply = replies.next()
    assert reply.status == 0
    assert reply.error


def test_a_kept_alive_connection_closed_by_the_peer_is_retried_once_on_a_new_one(
    reactor: SelectorThread,
) -> None:
    """A peer that closes a kept-alive connection just as a call is sent on
    it (its keep-alive timeout, racing our request): the call is made again
    on a new connection and succeeds. The raw peer answers the first request
    of every connection and closes at the second without answering."""
    peer = socket.create_server(("127.0.0.1", 0))
    served: list[int] = []

    def serve() -> None:
        for number in range(2):
            conn, _ = peer.accept()
            with conn:
                conn.recv(65536)
                served.append(number)  # before the answer: the caller may read it at once
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                conn.recv(65536)  # the second request: closed unanswered

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        pool = PeerPool(reactor, max_in_flight=4, timeout=5)
        address = peer.getsockname()
        assert call(reactor, pool, address, STATUS).status == 200
        assert on_reactor(reactor, lambda: pool.idle_count(address)) == 1
        reply = call(reactor, pool, address, STATUS)  # the peer closes the kept one
        assert (reply.status, reply.error) == (200, "")
        assert served == [0, 1]
    finally:
        peer.close()


@contextmanager
def answered(
    reactor: SelectorThread, listener: socket.socket, pool: PeerPool, answer: bytes
) -> Iterator[tuple[PeerReply, socket.socket]]:
    """A call to the raw peer behind ``listener``, which answers with
    ``answer``: the reply, and the peer's side of the connection."""
    replies = Replies()
    on_reactor(reactor, lambda: pool.call(listener.getsockname()[:2], STATUS, replies))
    peer, _ = listener.accept()
    with peer:
        peer.recv(65536)
        peer.sendall(answer)
        yield replies.next(), peer


def test_an_answer_outside_the_nodes_subset_fails_the_call_and_the_connection(
    reactor: SelectorThread, listener: socket.socket
) -> None:
    """A chunked answer (nodes frame theirs by Content-Length): a failed
    call, a closed connection, never a guess at the body."""
    address = listener.getsockname()[:2]
    pool = PeerPool(reactor, max_in_flight=4, timeout=10)
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    with answered(reactor, listener, pool, chunked) as (reply, peer):
        assert reply.status == 0
        assert "malformed answer" in reply.error and "chunked" in reply.error
        assert on_reactor(reactor, lambda: pool.idle_count(address)) == 0
        assert peer.recv(65536) == b""  # closed by the pool


def test_bytes_on_an_idle_connection_close_it(
    reactor: SelectorThread, listener: socket.socket
) -> None:
    """An answer to no request (two answers to one call, say) is not kept
    for the next call: the connection is closed, not reused."""
    address = listener.getsockname()[:2]
    pool = PeerPool(reactor, max_in_flight=4, timeout=10)
    empty = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    with answered(reactor, listener, pool, empty) as (reply, peer):
        assert reply.status == 200
        assert on_reactor(reactor, lambda: pool.idle_count(address)) == 1
        peer.sendall(empty)  # unasked
        assert peer.recv(65536) == b""  # closed by the pool
    assert on_reactor(reactor, lambda: pool.idle_count(address)) == 0
