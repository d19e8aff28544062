"""group=handoff: what it costs to give a request to a PayloadThread and get
the connection back on the SelectorThread, against executing it inline.

The real executors and the real wakeup channel are measured; a small probe
stands where a request's cycle (its responder, cycle.py) would, so that
neither h11 nor a socket is in the numbers. The handler returns a constant
response: only the hand-off is timed. ``same-cpu`` pins the PayloadThread
and the benchmark's thread (the "SelectorThread") to one CPU, as the server
does by default; ``any-cpu`` leaves them to the operating system.
"""

from __future__ import annotations

import os
import selectors
from collections.abc import Iterator

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from selectorkv.execution.inline import InlineExecutor
from selectorkv.execution.pool import PayloadPool
from selectorkv.http.exchange import Request, Response
from selectorkv.kv.api import STATUS_OK
from selectorkv.reactor.wakeup import Wakeup
from selectorkv.server import choose_cpu, place_threads

REQUEST = Request(b"GET", b"/v0/status")


def constant(request: Request) -> Response:
    return STATUS_OK


class Probe:
    """Stands where a RequestCycle stands for an executor: takes the
    response and, once handed off, hands back through a real wakeup channel
    as a connection does."""

    def __init__(self, wakeup: Wakeup) -> None:
        self.handed_off = False
        self.wakeup = wakeup
        self.response: Response | None = None
        self.back = False

    def hand_off(self) -> None:
        self.handed_off = True

    def respond(self, response: Response) -> bool:
        self.response = response
        if self.handed_off:
            self.wakeup.call_soon(self._on_handed_back)
        return True

    def _on_handed_back(self) -> None:
        self.handed_off = False
        self.back = True


@pytest.fixture
def wakeup() -> Iterator[Wakeup]:
    channel = Wakeup()
    yield channel
    channel.close()


def test_inline(benchmark: BenchmarkFixture, wakeup: Wakeup) -> None:
    benchmark.group = "handoff"
    probe = Probe(wakeup)
    executor = InlineExecutor(constant)

    def run() -> Response | None:
        executor.execute(REQUEST, probe)  # type: ignore[arg-type]
        return probe.response

    assert benchmark(run) is STATUS_OK


@pytest.mark.parametrize("placement", ["same-cpu", "any-cpu"])
def test_payload_thread_and_back(
    benchmark: BenchmarkFixture, wakeup: Wakeup, placement: str
) -> None:
    benchmark.group = "handoff"
    pool = PayloadPool(constant, workers=1, queue_size=16)
    pool.start()
    original_affinity = os.sched_getaffinity(0)
    if placement == "same-cpu":
        cpu = choose_cpu("auto")
        assert cpu is not None
        place_threads(cpu, pool.threads)
        os.sched_setaffinity(0, {cpu})  # this thread plays the SelectorThread
    selector = selectors.DefaultSelector()
    selector.register(wakeup.reader, selectors.EVENT_READ)
    probe = Probe(wakeup)

    def hand_off_and_back() -> Response | None:
        probe.back = False
        pool.execute(REQUEST, probe)  # type: ignore[arg-type]
        while not probe.back:
            selector.select()
            wakeup.run_calls()
        return probe.response

    try:
        assert benchmark(hand_off_and_back) is STATUS_OK
    finally:
        os.sched_setaffinity(0, original_affinity)
        selector.close()
        pool.stop()
