"""group=roundtrip: one request over loopback to an in-process server, on a
keep-alive connection, in each mode.

The client runs in the same process as the server, so it shares the GIL with
the server's threads; the figure is a latency for one request at a time,
not a throughput (wrk and the lab measure that).
"""

from __future__ import annotations

import socket

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from tests.support import RawClient, ServerFactory

GET = b"GET /v0/entity?id=abc HTTP/1.1\r\nHost: bench\r\n\r\n"
VALUE = b"v" * 300


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_get_300_byte_value(
    benchmark: BenchmarkFixture, make_server: ServerFactory, mode: str
) -> None:
    benchmark.group = "roundtrip"
    server = make_server(mode)
    assert RawClient(server.address).request("PUT", "/v0/entity?id=abc", VALUE).status == 201
    sock = socket.create_connection(server.address)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(GET)
    expected = len(sock.recv(65536))  # head and body arrive in one write

    def roundtrip() -> bytes:
        sock.sendall(GET)
        reply = sock.recv(65536)
        while len(reply) < expected:
            reply += sock.recv(65536)
        return reply

    reply = benchmark(roundtrip)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(VALUE)
    sock.close()
