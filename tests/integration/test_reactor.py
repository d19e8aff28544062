"""The SelectorThread on its own, with real sockets: timers (call_later,
cancel, move), and a shutdown that waits only for what holds it."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from selectorkv.reactor.selector_thread import SelectorThread, Timer
from tests.support import no_connections, on_reactor


def test_call_later_runs_on_the_reactors_thread(reactor: SelectorThread) -> None:
    ran = threading.Event()
    threads: list[int] = []

    def callback() -> None:
        threads.append(threading.get_ident())
        ran.set()

    on_reactor(reactor, lambda: reactor.call_later(0.01, callback))
    assert ran.wait(10)
    assert threads == [reactor.thread_id]


@pytest.mark.timing
def test_a_cancelled_timer_does_not_run(reactor: SelectorThread) -> None:
    events: list[str] = []
    last = threading.Event()

    def schedule() -> None:
        reactor.call_later(0.02, lambda: events.append("cancelled")).cancel()
        reactor.call_later(0.05, lambda: (events.append("later"), last.set()))

    on_reactor(reactor, schedule)
    assert last.wait(10)
    assert events == ["later"]  # the cancelled one was due first and did not run


@pytest.mark.timing
def test_a_timer_moved_later_runs_at_its_new_time(reactor: SelectorThread) -> None:
    events: list[str] = []
    moved_ran = threading.Event()

    def schedule() -> None:
        timer = reactor.call_later(0.02, lambda: (events.append("moved"), moved_ran.set()))
        reactor.call_later(0.05, lambda: events.append("marker"))
        reactor.schedule(timer, time.monotonic() + 0.1)

    on_reactor(reactor, schedule)
    assert moved_ran.wait(10)
    assert events == ["marker", "moved"]


def test_moving_a_timer_later_pushes_nothing(reactor: SelectorThread) -> None:
    def move_many() -> int:
        timer: Timer = reactor.call_later(60, lambda: None)
        before = len(reactor._timers)
        for step in range(1000):
            reactor.schedule(timer, time.monotonic() + 61 + step)
        timer.cancel()
        return len(reactor._timers) - before

    assert on_reactor(reactor, move_many) == 0


class OutboundStandIn:
    """A registered socket that does not hold the shutdown, as an idle
    connection to a peer will be."""

    holds_shutdown = False

    def __init__(self, reactor: SelectorThread, sock: socket.socket) -> None:
        self.aborted = threading.Event()
        self.registration = reactor.register(sock, self)
        reactor.set_interest(self.registration, 1)  # EVENT_READ

    def on_events(self, mask: int) -> None:
        pass

    def on_round_end(self) -> None:
        pass

    def drain(self) -> None:
        pass

    def abort(self) -> None:
        self.aborted.set()


def test_shutdown_does_not_wait_for_handlers_that_do_not_hold_it() -> None:
    reactor = SelectorThread(1, no_connections)
    reactor.start()
    ours, theirs = socket.socketpair()
    try:
        handler = on_reactor(reactor, lambda: OutboundStandIn(reactor, ours))
        assert isinstance(handler, OutboundStandIn)
        assert reactor.connection_count == 0  # not a client connection
        reactor.shut_down(time.monotonic() + 60)  # a long grace it must not wait out
        reactor.join(10)
        assert not reactor.is_alive()
        assert handler.aborted.is_set()  # cut on the way out
    finally:
        ours.close()
        theirs.close()
