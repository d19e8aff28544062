"""The PayloadThread pool without a server: requests handed to it with a
responder that records what it is told, a handle the test holds back.
Bounded admission (503 at once), hand-off before queueing, writes of a
batch stored together."""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence

from selectorkv.execution.commit import GroupCommit
from selectorkv.execution.pool import PayloadPool
from selectorkv.http.exchange import Request, Response
from selectorkv.kv.api import Write


class Recorder:
    """A responder: what it was told, in order, and on which thread."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.answered = threading.Event()
        self.responses: list[Response] = []
        self.threads: list[str] = []

    def respond(self, response: Response) -> bool:
        self.events.append("respond")
        self.responses.append(response)
        self.threads.append(threading.current_thread().name)
        self.answered.set()
        return True

    def hand_off(self) -> None:
        self.events.append("hand_off")

    def continue_stream(self) -> None:
        self.events.append("continue_stream")
        self.answered.set()


class Gate:
    """A handle that waits until the test opens the gate."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Semaphore(0)

    def __call__(self, request: Request) -> Response:
        self.entered.release()
        assert self.open.wait(10)
        return Response(200, request.target)


def test_requests_are_handed_off_before_queueing_and_answered_on_a_payload_thread() -> None:
    pool = PayloadPool(lambda r: Response(200, r.target), workers=2, queue_size=8)
    pool.start()
    try:
        cycle = Recorder()
        pool.execute(Request(b"GET", b"/a"), cycle)
        assert cycle.answered.wait(10)
        assert cycle.events == ["hand_off", "respond"]
        assert cycle.responses == [Response(200, b"/a")]
        assert cycle.threads[0].startswith("PayloadThread-")
    finally:
        pool.stop()


def test_a_full_queue_answers_503_at_once_without_running_the_request() -> None:
    gate = Gate()
    pool = PayloadPool(gate, workers=1, queue_size=2)
    pool.start()
    try:
        held = Recorder()
        pool.execute(Request(b"GET", b"/held"), held)
        assert gate.entered.acquire(timeout=10)  # the one thread is busy with it
        queued = [Recorder(), Recorder()]
        for cycle in queued:
            pool.execute(Request(b"GET", b"/queued"), cycle)
        assert pool.is_full() and pool.depth() == 2
        shed = Recorder()
        pool.execute(Request(b"GET", b"/shed"), shed)
        assert shed.events == ["respond"] and shed.responses[0].status == 503  # no hand-off
        gate.open.set()
        for cycle in [held, *queued]:
            assert cycle.answered.wait(10)
            assert cycle.responses[0].status == 200
    finally:
        gate.open.set()
        pool.stop()


class CountingStorage:
    """Counts how writes reach it: one by one, or as batches."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.single = 0

    def put(self, key: bytes, value: bytes) -> None:
        self.single += 1

    def delete(self, key: bytes) -> None:
        self.single += 1

    def apply_batch(self, writes: Sequence[tuple[bytes, bytes | None]]) -> None:
        self.batches.append(len(writes))


def write_of(request: Request) -> Write | None:
    return Write(request.target, request.body) if request.method == b"PUT" else None


def test_writes_queued_together_are_stored_as_one_batch() -> None:
    gate = Gate()
    storage = CountingStorage()
    group = GroupCommit(storage, write_of, max_writes=64)  # type: ignore[arg-type]
    pool = PayloadPool(gate, workers=1, queue_size=64, group=group)
    pool.start()
    try:
        first = Recorder()
        pool.execute(Request(b"GET", b"/hold"), first)  # holds the one thread
        assert gate.entered.acquire(timeout=10)
        writes = [Recorder() for _ in range(10)]
        for n, cycle in enumerate(writes):
            pool.execute(Request(b"PUT", b"k%d" % n, b"v"), cycle)
        gate.open.set()
        for cycle in writes:
            assert cycle.answered.wait(10)
            assert cycle.responses == [Response(201)]
        assert storage.batches == [10] and storage.single == 0
    finally:
        gate.open.set()
        pool.stop()


def test_a_stream_slice_is_produced_on_a_payload_thread() -> None:
    pool = PayloadPool(lambda r: Response(200), workers=1, queue_size=1)
    pool.start()
    try:
        cycle = Recorder()
        pool.resume(cycle)
        assert cycle.answered.wait(10)
        assert cycle.events == ["hand_off", "continue_stream"]
    finally:
        pool.stop()


def test_a_task_runs_on_a_payload_thread() -> None:
    pool = PayloadPool(lambda r: Response(200), workers=1, queue_size=1)
    pool.start()
    try:
        ran: queue.SimpleQueue[str] = queue.SimpleQueue()
        pool.run(lambda: ran.put(threading.current_thread().name))
        assert ran.get(timeout=10) == "PayloadThread-1"
    finally:
        pool.stop()
