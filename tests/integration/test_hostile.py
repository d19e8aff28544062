"""Hostile input: malformed requests, request smuggling, control bytes and
random bytes each get a 4xx or a closed connection; the server never dies,
never logs a traceback for a client's mistake, and serves everyone else."""

from __future__ import annotations

import logging
import re
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from selectorkv.server import Server
from tests.support import RawClient, ServerFactory

STATUS = re.compile(rb"^HTTP/1\.1 (\d{3}) ")
PUT = b"PUT /v0/entity?id=s HTTP/1.1\r\nHost: t\r\n"


def answer(server: Server, data: bytes) -> int | None:
    """Send ``data``, close our side, and return the status of the first
    response (None when the server just closed)."""
    with socket.create_connection(server.address, timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close before it has read everything
        received = b""
        try:
            while piece := sock.recv(65536):
                received += piece
        except ConnectionResetError:
            pass
    match = STATUS.match(received)
    return int(match.group(1)) if match else None


@pytest.mark.parametrize(
    ("data", "status"),
    [
        # Request smuggling: two framings a proxy and the server may read apart.
        (
            PUT + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        (
            PUT + b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            400,
        ),
        (
            PUT + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            400,
        ),
        (
            PUT + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            501,
        ),
        # Lengths and chunk sizes.
        (PUT + b"Content-Length: -1\r\n\r\n", 400),
        (
            PUT + b"Content-Length: 99999999999999999999\r\n\r\n",
            413,
        ),
        (PUT + b"Content-Length: 999999999\r\n\r\n", 413),
        (
            PUT + b"Transfer-Encoding: chunked\r\n\r\n-1\r\nabc\r\n",
            400,
        ),
        (
            PUT + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        (
            PUT + b"Transfer-Encoding: chunked\r\n\r\nfffffffffff\r\nab",
            400,
        ),
        # Control bytes in the head.
        (b"GET /v0/status HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n", 400),
        (b"GET /v0/status HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n", 400),
        (b"GET /v0/status HTTP/1.1\r\nHost: t\r\nX\x02A: a\r\n\r\n", 400),
        (b"GET /v0/st\x00atus HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        # Bad escapes in the key.
        (b"GET /v0/entity?id=%zz HTTP/1.1\r\nHost: t\r\n\r\n", 400),
        (b"GET /v0/entity?id=%4 HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    ],
)
def test_hostile_request_is_refused(server: Server, data: bytes, status: int) -> None:
    assert answer(server, data) == status
    assert RawClient(server.address).request("GET", "/v0/entity?id=s").status == 404


TOKEN = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8).map(str.encode)
CONTROL = set(range(0x20)) - {0x09, 0x0A, 0x0D} | {0x7F}
# Bytes that hold at least one control byte (never CR or LF, which would
# only move the line breaks and could spell a valid request).
NASTY = (
    st.binary(min_size=1, max_size=40)
    .map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
    .filter(lambda b: any(c in CONTROL for c in b))
)


@st.composite
def hostile_requests(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["random", "line", "header", "framing", "chunk", "escape"]))
    line = b"PUT /v0/entity?id=f HTTP/1.1\r\nHost: t\r\n"
    if kind == "random":
        return draw(st.binary(min_size=1, max_size=300))
    if kind == "line":
        method = draw(st.one_of(TOKEN, NASTY))
        target = draw(st.one_of(st.just(b"/v0/status"), NASTY, st.binary(max_size=20)))
        version = draw(st.one_of(st.just(b"HTTP/1.1"), NASTY, st.just(b"HTTP/1"), st.just(b"")))
        return b"%s %s %s\r\n\r\n" % (method, target, version) if b"\r\n" not in target else target
    if kind == "header":
        name = draw(st.one_of(TOKEN, NASTY))
        value = draw(NASTY)
        return line + name + b": " + value + b"\r\n\r\n"
    if kind == "framing":
        lengths = draw(st.lists(st.integers(-(10**12), 10**25), min_size=1, max_size=3))
        head = line + b"".join(b"Content-Length: %d\r\n" % n for n in lengths)
        if len(lengths) == 1 and lengths[0] >= 0:
            head += b"Transfer-Encoding: chunked\r\n"  # one length alone would be legal
        return head + b"\r\n" + draw(st.binary(max_size=50))
    if kind == "chunk":
        size = draw(st.one_of(NASTY, st.text("-+xyzXYZ ;", min_size=1, max_size=6).map(str.encode)))
        return line + b"Transfer-Encoding: chunked\r\n\r\n" + size + b"\r\nabc\r\n0\r\n\r\n"
    bad = draw(st.sampled_from([b"%", b"%4", b"%zz", b"%g1", b"a%%b"]))
    return b"GET /v0/entity?id=" + bad + b" HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture(scope="module")
def fuzz_servers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Server]:
    from selectorkv.config import ServerConfig
    from selectorkv.kv.storage import RocksStorage

    servers = {}
    for mode in ("sync", "async"):
        data = str(tmp_path_factory.mktemp(f"fuzz-{mode}"))
        servers[mode] = Server(
            ServerConfig(port=0, data=data, mode=mode, header_timeout=2), RocksStorage(data)
        )
        servers[mode].start()
    yield servers  # type: ignore[misc]
    for server in servers.values():
        server.stop()


@pytest.mark.parametrize("mode", ["sync", "async"])
@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=hostile_requests())
def test_fuzz_gets_a_4xx_or_a_close_and_disturbs_nobody(
    fuzz_servers: dict[str, Server], mode: str, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    server = fuzz_servers[mode]
    bystander = RawClient(server.address)
    assert bystander.request("GET", "/v0/status").status == 200
    with caplog.at_level(logging.DEBUG):
        status = answer(server, data)
    assert status is None or 400 <= status < 600, f"{data!r} got {status}"
    assert bystander.request("GET", "/v0/status").status == 200  # nobody else disturbed
    bystander.close()
    tracebacks = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert tracebacks == [], f"{data!r} made the server log {tracebacks[0].getMessage()}"


def test_requests_are_never_echoed_unescaped_into_logs(
    make_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A storage failure logs the request target, escaped (repr), so a
    client cannot write raw bytes such as newlines into the log."""
    from tests.support import FailingStorage

    server = make_server("sync", storage_wrapper=lambda inner: FailingStorage())
    with caplog.at_level(logging.ERROR):
        reply = RawClient(server.address).request("GET", "/v0/entity?id=a%0Afake%20log%20line")
    assert reply.status == 500
    assert caplog.records, "the 500 was not logged"
    assert all("\n" not in record.getMessage() for record in caplog.records)
    assert "a%0Afake" in caplog.text  # the bytes as they came, escaped
