"""HTTP behaviour over real sockets, in both modes: the API table, keep-alive,
HTTP/1.0, pipelining, chunked bodies, 100-continue, limits, timeouts and
partial writes."""

from __future__ import annotations

import http.client
import re
import socket
import struct
import time
from pathlib import Path

import pytest

from selectorkv.server import Server
from tests.support import (
    RawClient,
    ServerFactory,
    peak_growth,
    request_bytes,
    rss_bytes,
    serve_process,
)


def test_api_table(client: RawClient) -> None:
    assert client.request("GET", "/v0/entity?id=k").status == 404
    assert client.request("PUT", "/v0/entity?id=k", b"v1").status == 201
    reply = client.request("GET", "/v0/entity?id=k")
    assert (reply.status, reply.body) == (200, b"v1")
    assert client.request("PUT", "/v0/entity?id=k", b"").status == 201
    reply = client.request("GET", "/v0/entity?id=k")
    assert (reply.status, reply.body) == (200, b"")
    assert client.request("DELETE", "/v0/entity?id=k").status == 202
    assert client.request("GET", "/v0/entity?id=k").status == 404
    assert client.request("DELETE", "/v0/entity?id=never").status == 202
    assert client.request("GET", "/v0/entity").status == 400
    assert client.request("GET", "/v0/entity?id=").status == 400
    assert client.request("GET", "/abracadabra").status == 400
    reply = client.request("POST", "/v0/entity?id=k", b"x")
    assert reply.status == 405
    assert reply.headers[b"allow"] == b"GET, PUT, DELETE"
    assert client.request("GET", "/v0/status").status == 200


def test_keys_are_percent_decoded_bytes(client: RawClient) -> None:
    assert client.request("PUT", "/v0/entity?id=a%20b%00", b"spaced").status == 201
    assert client.request("GET", "/v0/entity?id=a%20b%00").body == b"spaced"
    assert client.request("GET", "/v0/entity?id=a+b%00").status == 404
    assert client.request("GET", "/v0/entity?id=%zz").status == 400


def test_works_with_a_standard_client(server: Server) -> None:
    conn = http.client.HTTPConnection(*server.address, timeout=10)
    conn.request("PUT", "/v0/entity?id=std", body=b"hello")
    assert conn.getresponse().read() == b""
    conn.request("GET", "/v0/entity?id=std")
    response = conn.getresponse()
    assert (response.status, response.reason, response.read()) == (200, "OK", b"hello")
    conn.close()


def test_keep_alive_serves_many_requests_on_one_connection(client: RawClient) -> None:
    for i in range(50):
        assert client.request("PUT", f"/v0/entity?id=k{i}", b"%d" % i).status == 201
    for i in range(50):
        assert client.request("GET", f"/v0/entity?id=k{i}").body == b"%d" % i


def test_http10_closes_after_response(client: RawClient) -> None:
    client.send(request_bytes("GET", "/v0/status", version="1.0"))
    data = client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.count(b"HTTP/1.1") == 1


def test_connection_close_is_honoured(client: RawClient) -> None:
    client.send(request_bytes("PUT", "/v0/entity?id=c", b"v", extra="Connection: close\r\n"))
    data = client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 201 ")
    assert b"connection: close" in data.lower()


def test_pipelined_requests_are_answered_in_order(client: RawClient) -> None:
    batch = b"".join(
        request_bytes("PUT", f"/v0/entity?id=p{i}", b"value-%d" % i) for i in range(20)
    ) + b"".join(request_bytes("GET", f"/v0/entity?id=p{i}") for i in range(20))
    client.send(batch)
    assert [client.read_reply().status for _ in range(20)] == [201] * 20
    assert [client.read_reply().body for _ in range(20)] == [b"value-%d" % i for i in range(20)]


def test_pipelined_requests_in_one_segment_then_close(client: RawClient) -> None:
    """The last request says Connection: close; all three are answered."""
    client.send(
        request_bytes("PUT", "/v0/entity?id=x", b"1")
        + request_bytes("GET", "/v0/entity?id=x")
        + request_bytes("GET", "/v0/status", extra="Connection: close\r\n")
    )
    data = client.read_until_closed()
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", data) == [b"201", b"200", b"200"]
    assert b"content-length: 1\r\n\r\n1HTTP/1.1 200" in data.lower().replace(b"http", b"HTTP")


def test_chunked_request_body(client: RawClient) -> None:
    client.send(
        b"PUT /v0/entity?id=chunked HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
    )
    assert client.read_reply().status == 201
    assert client.request("GET", "/v0/entity?id=chunked").body == b"hello world"


def test_expect_100_continue_is_answered_before_the_body(client: RawClient) -> None:
    client.send(
        b"PUT /v0/entity?id=cont HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    interim = client.sock.recv(1024)
    assert interim.startswith(b"HTTP/1.1 100 ")
    client.send(b"body")
    assert client.read_reply().status == 201
    assert client.request("GET", "/v0/entity?id=cont").body == b"body"


def test_expect_100_continue_with_a_too_large_body_gets_413(make_server: ServerFactory) -> None:
    server = make_server("sync", max_body=10)
    client = RawClient(server.address)
    client.send(
        b"PUT /v0/entity?id=big HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    assert client.read_reply().status == 413
    assert client.is_closed_by_server()


def test_head_larger_than_limit_gets_431(make_server: ServerFactory, mode: str) -> None:
    server = make_server(mode, max_header_size=1024)
    client = RawClient(server.address)
    client.send(b"GET /v0/status HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n")
    reply = client.read_reply()
    assert reply.status == 431
    assert client.is_closed_by_server()


def test_body_larger_than_limit_gets_413_before_it_is_sent(
    make_server: ServerFactory, mode: str
) -> None:
    server = make_server(mode, max_body=1000)
    client = RawClient(server.address)
    # Only the head is sent: the 413 is decided from Content-Length alone.
    client.send(b"PUT /v0/entity?id=big HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n")
    reply = client.read_reply()
    assert reply.status == 413
    assert b"1000" in reply.body
    assert client.is_closed_by_server()
    assert RawClient(server.address).request("GET", "/v0/entity?id=big").status == 404


def test_the_413_says_content_too_large_on_every_python(make_server: ServerFactory) -> None:
    """RFC 9110's reason phrase, which Python's own table has only from 3.13
    (3.11 and 3.12 say "Request Entity Too Large")."""
    server = make_server("sync", max_body=10)
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"PUT /v0/entity?id=big HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\n")
        head = b""
        while b"\r\n" not in head:
            head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413 Content Too Large\r\n")


def test_body_of_exactly_the_limit_is_accepted(make_server: ServerFactory, mode: str) -> None:
    server = make_server(mode, max_body=1000)
    client = RawClient(server.address)
    assert client.request("PUT", "/v0/entity?id=edge", b"e" * 1000).status == 201


def test_chunked_body_growing_past_limit_gets_413(make_server: ServerFactory, mode: str) -> None:
    server = make_server(mode, max_body=1000)
    client = RawClient(server.address)
    client.send(b"PUT /v0/entity?id=big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        client.send(b"190\r\n" + b"x" * 400 + b"\r\n")
    assert client.read_reply().status == 413
    assert RawClient(server.address).request("GET", "/v0/entity?id=big").status == 404


@pytest.mark.parametrize(
    "garbage",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET /v0/status HTTP/1.1\r\nBad Header\r\n\r\n",
        b"PUT /v0/entity?id=a HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n",
        b"PUT /v0/entity?id=a HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\n\r\nab",
        b"PUT /v0/entity?id=a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_malformed_request_gets_400_and_close(client: RawClient, garbage: bytes) -> None:
    client.send(garbage)
    data = client.read_until_closed()
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in data.lower()


def test_unsupported_http_version_gets_505(client: RawClient) -> None:
    client.send(b"GET /v0/status HTTP/9.9\r\nHost: t\r\n\r\n")
    assert client.read_until_closed().startswith(b"HTTP/1.1 505 ")


def test_head_just_under_the_limit_is_served(make_server: ServerFactory) -> None:
    server = make_server("sync", max_header_size=1024)
    client = RawClient(server.address)
    head = b"GET /v0/status HTTP/1.1\r\nHost: t\r\nX-Pad: "
    head += b"a" * (1020 - len(head)) + b"\r\n\r\n"
    assert len(head) == 1024
    client.send(head)
    assert client.read_reply().status == 200


def test_malformed_request_disturbs_no_other_connection(server: Server) -> None:
    good = RawClient(server.address)
    assert good.request("PUT", "/v0/entity?id=g", b"1").status == 201
    bad = RawClient(server.address)
    bad.send(b"\x00\x01\x02 garbage\r\n\r\n")
    assert bad.read_until_closed().startswith(b"HTTP/1.1 400 ")
    assert good.request("GET", "/v0/entity?id=g").body == b"1"


@pytest.mark.timing
def test_incomplete_head_times_out_with_408(make_server: ServerFactory, mode: str) -> None:
    server = make_server(mode, header_timeout=0.3)
    client = RawClient(server.address)
    client.send(b"GET /v0/status HTTP/1.1\r\nHost: t\r\n")  # no blank line: never complete
    # The wait is for the event; the client's 10 s socket timeout bounds a hang.
    assert client.read_until_closed().startswith(b"HTTP/1.1 408 ")


@pytest.mark.timing
def test_silent_new_connection_is_cut_after_header_timeout(make_server: ServerFactory) -> None:
    server = make_server("sync", header_timeout=0.3)
    client = RawClient(server.address)
    assert client.read_until_closed().startswith(b"HTTP/1.1 408 ")


@pytest.mark.timing
def test_stalled_body_times_out(make_server: ServerFactory, mode: str) -> None:
    server = make_server(mode, header_timeout=0.3)
    client = RawClient(server.address)
    client.send(b"PUT /v0/entity?id=s HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
    assert client.read_until_closed().startswith(b"HTTP/1.1 408 ")
    assert RawClient(server.address).request("GET", "/v0/entity?id=s").status == 404


@pytest.mark.timing
def test_idle_keep_alive_connection_is_closed(make_server: ServerFactory, mode: str) -> None:
    server = make_server(mode, keepalive_timeout=0.3)
    client = RawClient(server.address)
    asked = time.monotonic()  # the server's idle timer starts after this
    assert client.request("GET", "/v0/status").status == 200
    assert client.read_until_closed() == b""  # closed quietly, no 408 for an idle client
    # Never before the timeout (a timer cannot fire early); how much later is
    # the machine's business, bounded only by the client's socket timeout.
    assert time.monotonic() - asked >= 0.3


def test_disconnect_mid_body_stores_nothing(server: Server) -> None:
    quitter = RawClient(server.address)
    quitter.send(b"PUT /v0/entity?id=half HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
    quitter.sock.shutdown(socket.SHUT_WR)
    quitter.read_until_closed()
    quitter.close()
    other = RawClient(server.address)
    assert other.request("GET", "/v0/entity?id=half").status == 404
    assert other.request("PUT", "/v0/entity?id=after", b"ok").status == 201


def test_reset_mid_body_stores_nothing(server: Server) -> None:
    quitter = RawClient(server.address)
    quitter.send(b"PUT /v0/entity?id=rst HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc")
    linger_zero = struct.pack("ii", 1, 0)
    quitter.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_zero)
    quitter.close()  # linger on, timeout 0: the kernel sends RST instead of FIN
    other = RawClient(server.address)
    assert other.request("GET", "/v0/entity?id=rst").status == 404


def test_four_mib_value_to_a_client_with_a_tiny_receive_buffer(server: Server) -> None:
    value = bytes(range(256)) * (4 * 1024 * 1024 // 256)
    writer = RawClient(server.address)
    assert writer.request("PUT", "/v0/entity?id=huge", value).status == 201
    reader = RawClient(server.address, rcvbuf=4096)
    reader.send(request_bytes("GET", "/v0/entity?id=huge"))
    # Reading only once the response has started leaves the server facing a
    # full tiny window, to wait for EVENT_WRITE; the verdict is the same
    # whenever the reading starts.
    reader.sock.recv(1, socket.MSG_PEEK)
    reply = reader.read_reply(read_size=4096)
    assert reply.status == 200
    assert len(reply.body) == len(value)
    assert reply.body == value
    # The connection is still usable after the partial writes.
    assert reader.request("GET", "/v0/status").status == 200


@pytest.mark.timing
def test_client_that_pipelines_without_reading_holds_bounded_memory(
    tmp_path: Path, mode: str
) -> None:
    """64 pipelined GETs of a 1 MiB value, none read: the server stops
    parsing above its high-water mark instead of buffering 64 MiB."""
    proc = serve_process("--data", str(tmp_path / "db"), "--mode", mode)
    try:
        value = b"m" * (1024 * 1024)
        assert RawClient(proc.address).request("PUT", "/v0/entity?id=m", value).status == 201
        before = rss_bytes(proc.pid)
        greedy = RawClient(proc.address, rcvbuf=4096)
        greedy.send(request_bytes("GET", "/v0/entity?id=m") * 64)
        greedy.sock.recv(1, socket.MSG_PEEK)  # the server has read and answered
        # A server that buffered every response would hold 64 MiB within
        # milliseconds of this. The highest of a second's samples is taken:
        # a slow machine could make a faulty server pass, never fail a sound one.
        growth = peak_growth(proc.pid, before, seconds=1.0)
        assert growth < 16 * 1024 * 1024, f"server grew by {growth} bytes"
        # Other clients are served meanwhile, and the greedy one gets all 64
        # responses once it reads.
        assert RawClient(proc.address).request("GET", "/v0/status").status == 200
        replies = [greedy.read_reply() for _ in range(64)]
        assert all(r.status == 200 and r.body == value for r in replies)
    finally:
        assert proc.stop() == 0


CLOSING_STATUS = b"GET /v0/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def raw_exchange(server: Server, request: bytes) -> bytes:
    """Send ``request`` and a status request that asks to close, in one
    write; everything the server sends until it closes."""
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(request + CLOSING_STATUS)
        received = b""
        while piece := sock.recv(65536):
            received += piece
        return received


@pytest.mark.parametrize(
    "request_line",
    [
        b"PUT /v0/entity?id=p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nvalue",
        b"GET /v0/entity?id=p HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v0/entity?id=absent HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /v0/entities?start=a HTTP/1.1\r\nHost: x\r\n\r\n",  # chunked
        b"POST /v0/entity?id=p HTTP/1.1\r\nHost: x\r\n\r\n",  # 405
        b"DELETE /v0/entity?id=p HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_a_plain_request_is_answered_with_the_bytes_h11_writes(
    server: Server, request_line: bytes
) -> None:
    """The same request served without h11 (plain) and through h11 (made
    not plain by a Connection: keep-alive header, which changes nothing
    else), on real sockets: the same response, byte for byte."""
    for key in ("a", "b"):
        assert raw_exchange(server, request_bytes("PUT", f"/v0/entity?id={key}", b"v")).startswith(
            b"HTTP/1.1 201"
        )
    plain = raw_exchange(server, request_line)
    through_h11 = raw_exchange(
        server, request_line.replace(b"Host: x\r\n", b"Host: x\r\nConnection: keep-alive\r\n")
    )
    assert plain.count(b"HTTP/1.1 ") == 2  # the request's answer, then the status
    assert plain == through_h11
