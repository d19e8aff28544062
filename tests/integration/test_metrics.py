"""GET /metrics: Prometheus text that prometheus-client parses, with
counters that move under load, kept per thread."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from selectorkv.server import Server
from tests.support import (
    BlockingServerFactory,
    RawClient,
    queue_depth,
    request_bytes,
    wait_until,
)


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = RawClient(server.address).request("GET", "/metrics")
    assert reply.status == 200
    assert reply.headers[b"content-type"].startswith(b"text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_counters_move_under_load(server: Server, mode: str) -> None:
    before = scrape(server)
    client = RawClient(server.address)
    for i in range(50):
        assert client.request("PUT", f"/v0/entity?id=m{i}", b"v" * 100).status == 201
        assert client.request("GET", f"/v0/entity?id=m{i}").status == 200
    assert client.request("GET", "/nowhere").status == 400
    after = scrape(server)
    put = ("selectorkv_responses_total", (("method", "PUT"), ("status", "201")))
    get = ("selectorkv_responses_total", (("method", "GET"), ("status", "200")))
    assert after[put] - before.get(put, 0) == 50
    assert after[get] - before.get(get, 0) >= 50  # the first scrape's own GET too
    assert after[("selectorkv_responses_total", (("method", "GET"), ("status", "400")))] == 1
    received = ("selectorkv_bytes_received_total", ())
    sent = ("selectorkv_bytes_sent_total", ())
    assert after[received] - before[received] > 50 * 100
    assert after[sent] - before[sent] > 50 * 100
    assert after[("selectorkv_connections", ())] >= 2  # this client and the scraper
    requests = ("selectorkv_thread_requests_total", (("thread", "SelectorThread-1"),))
    assert after[requests] - before[requests] >= 101
    if mode == "async":
        tasks = ("selectorkv_thread_tasks_total", (("thread", "PayloadThread-1"),))
        busy = ("selectorkv_thread_busy_seconds_total", (("thread", "PayloadThread-1"),))
        assert after[tasks] - before[tasks] >= 101
        assert after[busy] > before[busy]


@pytest.mark.timing
def test_shed_requests_and_queue_depth_show(make_blocking_server: BlockingServerFactory) -> None:
    """Injected blocking storage holds the only PayloadThread: the queue
    depth, the requests in flight and the 503s are visible meanwhile."""
    server, storage = make_blocking_server("async", workers=1, queue_size=1)
    running = RawClient(server.address)
    running.send(request_bytes("PUT", "/v0/entity?id=a", b"1"))
    assert storage.entered.acquire(timeout=10)
    queued = RawClient(server.address)
    queued.send(request_bytes("PUT", "/v0/entity?id=b", b"2"))
    # b must be in the queue before c arrives, or c would take its place.
    wait_until(lambda: queue_depth(server) == 1, "b in the queue")
    shed = RawClient(server.address)
    assert shed.request("PUT", "/v0/entity?id=c", b"3").status == 503
    # A scrape over HTTP would itself be shed now (the queue is full), so
    # the text is taken straight from the server.
    text = server.metrics().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("selectorkv_queue_depth", ())] == 1  # b
    assert samples[("selectorkv_in_flight", ())] == 2  # a running, b waiting
    assert samples[("selectorkv_shed_total", ())] == 1  # c
    assert samples[("selectorkv_responses_total", (("method", "PUT"), ("status", "503")))] == 1
    storage.gate.set()
    assert running.read_reply().status == 201
    assert queued.read_reply().status == 201
