"""Many clients at once, and the bounded PayloadThread queue."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import (
    BlockingServerFactory,
    RawClient,
    ServerFactory,
    queue_depth,
    request_bytes,
    wait_until,
)

CLIENTS = 200
ROUNDS = 5


def test_200_concurrent_connections_put_and_get(make_server: ServerFactory, mode: str) -> None:
    server = make_server(mode, selectors=2, queue_size=CLIENTS)
    barrier = threading.Barrier(CLIENTS)

    def one_client(n: int) -> list[str]:
        problems = []
        client = RawClient(server.address)
        barrier.wait()  # every connection is open before anyone writes
        try:
            for r in range(ROUNDS):
                key, value = f"c{n}-{r}", b"v%d-%d" % (n, r) * 10
                if (status := client.request("PUT", f"/v0/entity?id={key}", value).status) != 201:
                    problems.append(f"PUT {key}: {status}")
                reply = client.request("GET", f"/v0/entity?id={key}")
                if (reply.status, reply.body) != (200, value):
                    problems.append(f"GET {key}: {reply.status} {reply.body[:20]!r}")
        finally:
            client.close()
        return problems

    with ThreadPoolExecutor(CLIENTS) as pool:
        problems = [p for result in pool.map(one_client, range(CLIENTS)) for p in result]
    assert problems == []


@pytest.mark.timing
def test_503_when_queue_full_with_blocked_storage(
    make_blocking_server: BlockingServerFactory,
) -> None:
    """Injected blocking storage holds the only PayloadThread; the queue (1)
    fills; the next request is answered 503 by the SelectorThread at once."""
    server, storage = make_blocking_server("async", workers=1, queue_size=1)
    running, queued, rejected = (RawClient(server.address) for _ in range(3))
    running.send(request_bytes("PUT", "/v0/entity?id=a", b"1"))
    assert storage.entered.acquire(timeout=10)  # the PayloadThread is now stuck in put
    queued.send(request_bytes("PUT", "/v0/entity?id=b", b"2"))
    wait_until(lambda: queue_depth(server) == 1, "b in the queue")
    # The third request finds the queue full. Its 503 comes while storage is
    # still blocked: proof that the SelectorThread answered it.
    reply = rejected.request("PUT", "/v0/entity?id=c", b"3")
    assert reply.status == 503
    storage.gate.set()
    assert running.read_reply().status == 201
    assert queued.read_reply().status == 201
    # The rejected connection stays usable, and the rejected write was not stored.
    assert rejected.request("GET", "/v0/entity?id=c").status == 404
    assert rejected.request("GET", "/v0/entity?id=b").status == 200


def test_pipelined_requests_while_in_flight_are_parked_then_served(
    make_blocking_server: BlockingServerFactory,
) -> None:
    """Bytes that arrive while a PayloadThread owns the connection wait
    unread; after the hand-back they are parsed and answered in order."""
    server, storage = make_blocking_server("async", workers=1)
    client = RawClient(server.address)
    client.send(request_bytes("PUT", "/v0/entity?id=p", b"first"))
    assert storage.entered.acquire(timeout=10)
    client.send(request_bytes("GET", "/v0/entity?id=p") + request_bytes("GET", "/v0/status"))
    storage.gate.set()
    assert client.read_reply().status == 201
    assert client.read_reply().body == b"first"
    assert client.read_reply().status == 200


@pytest.mark.timing
def test_request_in_flight_outlives_the_keepalive_timeout(
    make_blocking_server: BlockingServerFactory, mode: str
) -> None:
    """Injected blocking storage holds a request for longer than the idle
    timeout: a connection with a request in flight is not idle."""
    server, storage = make_blocking_server(mode, keepalive_timeout=0.2, header_timeout=0.2)
    client = RawClient(server.address)
    client.send(request_bytes("PUT", "/v0/entity?id=slow", b"v"))
    assert storage.entered.acquire(timeout=10)
    threading.Timer(1.0, storage.gate.set).start()  # five idle timeouts later
    assert client.read_reply().status == 201
    assert client.request("GET", "/v0/entity?id=slow").body == b"v"


def test_connection_cap_leaves_new_clients_in_the_backlog(make_server: ServerFactory) -> None:
    server = make_server("sync", max_connections=3)
    held = [RawClient(server.address) for _ in range(3)]
    for client in held:
        assert client.request("GET", "/v0/status").status == 200
    waiting = RawClient(server.address)  # the handshake completes in the backlog
    waiting.send(request_bytes("GET", "/v0/status"))
    waiting.sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        waiting.sock.recv(1)  # not accepted: nobody reads its request
    held.pop().close()
    waiting.sock.settimeout(10)
    assert waiting.read_reply().status == 200  # accepted once a slot was free
    for client in held:
        assert client.request("GET", "/v0/status").status == 200


@pytest.mark.timing
def test_full_queue_sheds_plain_requests_and_keeps_the_connection(
    make_blocking_server: BlockingServerFactory,
) -> None:
    """Injected blocking storage fills the queue; pipelined plain requests
    (a GET and a PUT with a body) get 503 straight from their bytes, the
    PUT is not stored, and the same connection works once the queue drains."""
    server, storage = make_blocking_server("async", workers=1, queue_size=1)
    running, queued = RawClient(server.address), RawClient(server.address)
    running.send(request_bytes("PUT", "/v0/entity?id=a", b"1"))
    assert storage.entered.acquire(timeout=10)
    queued.send(request_bytes("PUT", "/v0/entity?id=b", b"2"))
    wait_until(lambda: queue_depth(server) == 1, "b in the queue")
    shed = RawClient(server.address)
    shed.send(
        request_bytes("GET", "/v0/entity?id=a")
        + request_bytes("PUT", "/v0/entity?id=c", b"body")
        + request_bytes("GET", "/v0/status", extra="Transfer-Encoding: chunked\r\n")
        + b"0\r\n\r\n"
    )
    assert [shed.read_reply().status for _ in range(3)] == [503, 503, 503]
    storage.gate.set()
    assert running.read_reply().status == 201
    assert queued.read_reply().status == 201
    assert shed.request("GET", "/v0/entity?id=c").status == 404  # the shed PUT stored nothing
    assert shed.request("GET", "/v0/entity?id=b").body == b"2"
