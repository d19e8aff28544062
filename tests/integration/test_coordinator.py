"""The coordinator on a real SelectorThread, with the node's executor handed
in (an in-process stand-in that records what it is asked and answers as a
replica's API over a real RocksDB would): the calls that one round of
client requests makes to this node's own replica go as one batch."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import pytest

from selectorkv.cluster.clock import HybridClock
from selectorkv.cluster.placement import Topology
from selectorkv.cluster.replication import Cluster, Coordinator
from selectorkv.http.exchange import Request, Responder, Response
from selectorkv.kv.api import INTERNAL_BATCH, ReplicaApi
from selectorkv.kv.records import ReplicaStore
from selectorkv.kv.storage import RocksStorage
from selectorkv.reactor.selector_thread import SelectorThread
from tests.support import on_reactor

ME = "http://127.0.0.1:1"
TOPOLOGY = Topology((ME,), ME)


class RecordingExecutor:
    """Runs each request at once through a replica's API (the inline
    executor's way) and records it."""

    def __init__(self, api: ReplicaApi) -> None:
        self.api = api
        self.seen: list[Request] = []

    def execute(self, request: Request, cycle: Responder) -> None:
        self.seen.append(request)
        cycle.respond(self.api.handle(request))

    def is_full(self) -> bool:
        return False

    def resume(self, cycle: Responder) -> None:
        raise AssertionError("nothing is parked")


class Answered:
    """A client's responder: the response goes to a queue."""

    def __init__(self, answers: queue.SimpleQueue[tuple[bytes, Response]], key: bytes) -> None:
        self._answers, self._key = answers, key

    def respond(self, response: Response) -> bool:
        self._answers.put((self._key, response))
        return True

    def hand_off(self) -> None:
        """Nothing to give away."""

    def continue_stream(self) -> None:
        raise AssertionError("not streamed")


@pytest.fixture
def executor(tmp_path: Path) -> Iterator[RecordingExecutor]:
    storage = RocksStorage(str(tmp_path / "db"))
    clock = HybridClock(0)
    yield RecordingExecutor(
        ReplicaApi(
            storage, ReplicaStore(storage, clock.observe), b"t", TOPOLOGY.cluster_id.encode()
        )
    )
    storage.close()


def coordinator(executor: RecordingExecutor) -> Coordinator:
    cluster = Cluster(
        TOPOLOGY, {ME: ("127.0.0.1", 1)}, b"t", HybridClock(0), peer_timeout=1.0, max_body=1 << 20
    )
    return Coordinator(executor, cluster)


def test_one_rounds_calls_to_the_own_replica_go_as_one_batch(
    reactor: SelectorThread, executor: RecordingExecutor
) -> None:
    node = coordinator(executor)
    answers: queue.SimpleQueue[tuple[bytes, Response]] = queue.SimpleQueue()
    keys = [b"a", b"b", b"c"]

    def one_round() -> None:
        for key in keys:
            request = Request(b"PUT", b"/v0/entity?id=" + key, b"value-" + key)
            node.execute(request, Answered(answers, key))

    on_reactor(reactor, one_round)
    assert sorted((key, r.status) for key, r in (answers.get(timeout=10) for _ in keys)) == [
        (b"a", 201), (b"b", 201), (b"c", 201),
    ]  # fmt: skip
    assert [request.target for request in executor.seen] == [INTERNAL_BATCH]
    on_reactor(reactor, lambda: node.execute(Request(b"GET", b"/v0/entity?id=b"),
                                             Answered(answers, b"b")))  # fmt: skip
    assert answers.get(timeout=10) == (b"b", Response(200, b"value-b"))
    assert executor.seen[-1].target == b"/v0/internal/entity?id=b"  # a lone call, plain
