"""group=http: what h11 costs per step of a request, without sockets.

Each round gets a fresh ``h11.Connection`` in the right state from an
untimed setup, so only the step named by the benchmark is measured.
"""

from __future__ import annotations

from pytest_benchmark.fixture import BenchmarkFixture

from selectorkv.http.parser import h11

GET = b"GET /v0/entity?id=abc HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
PUT = (
    b"PUT /v0/entity?id=abc HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 300\r\n\r\n"
    + b"v" * 300
)
PIPELINED = 16
ROUNDS = 2000
OK = h11.Response(status_code=200, headers=[(b"content-length", b"0")], reason=b"OK")
END = h11.EndOfMessage()


def fresh() -> tuple[tuple[h11.Connection], dict[str, object]]:
    return (h11.Connection(h11.SERVER),), {}


def parse_one(conn: h11.Connection, data: bytes) -> list[object]:
    """Feed ``data`` and collect events up to the request's end."""
    conn.receive_data(data)
    events: list[object] = []
    while type(event := conn.next_event()) is not h11.EndOfMessage:
        events.append(event)
    return events


def test_parse_get(benchmark: BenchmarkFixture) -> None:
    benchmark.group = "http"
    events = benchmark.pedantic(lambda c: parse_one(c, GET), setup=fresh, rounds=ROUNDS)
    assert type(events[0]) is h11.Request and events[0].method == b"GET"


def test_parse_put_with_300_byte_body(benchmark: BenchmarkFixture) -> None:
    benchmark.group = "http"
    events = benchmark.pedantic(lambda c: parse_one(c, PUT), setup=fresh, rounds=ROUNDS)
    assert sum(len(e.data) for e in events if type(e) is h11.Data) == 300


def test_parse_and_answer_16_pipelined_requests(benchmark: BenchmarkFixture) -> None:
    """A batch of pipelined requests, each answered so that h11 releases the
    next one: the per-request h11 work of a keep-alive connection."""
    benchmark.group = "http"
    batch = (GET + PUT) * (PIPELINED // 2)

    def serve_batch(conn: h11.Connection) -> int:
        conn.receive_data(batch)
        answered = 0
        while answered < PIPELINED:
            if type(conn.next_event()) is h11.EndOfMessage:
                conn.send(OK)
                conn.send(END)
                conn.start_next_cycle()
                answered += 1
        return answered

    assert benchmark.pedantic(serve_batch, setup=fresh, rounds=ROUNDS // 10) == PIPELINED


def test_serialise_response_with_300_byte_body(benchmark: BenchmarkFixture) -> None:
    benchmark.group = "http"
    body = b"v" * 300
    head = h11.Response(status_code=200, headers=[(b"content-length", b"300")], reason=b"OK")

    def parsed_get() -> tuple[tuple[h11.Connection], dict[str, object]]:
        conn = h11.Connection(h11.SERVER)
        parse_one(conn, GET)
        return (conn,), {}

    def respond(conn: h11.Connection) -> bytes:
        return conn.send(head) + conn.send(h11.Data(data=body)) + conn.send(END)

    wire = benchmark.pedantic(respond, setup=parsed_get, rounds=ROUNDS)
    assert wire.startswith(b"HTTP/1.1 200 OK\r\n") and wire.endswith(body)
