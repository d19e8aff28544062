"""The coordinator on a real SelectorThread, with the node's executor handed
in (an in-process stand-in that runs its tasks at once, as the inline
executor does) and a replica's API over a real RocksDB that records the
calls it is given: the calls that one round of client requests makes to
this node's own replica go to it as one group, without HTTP."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import pytest

from selectorkv.cluster.clock import HybridClock
from selectorkv.cluster.placement import Topology
from selectorkv.cluster.replication import Cluster, Coordinator
from selectorkv.http.exchange import Request, Responder, Response, Task
from selectorkv.kv import batch
from selectorkv.kv.api import ReplicaApi
from selectorkv.kv.records import ReplicaStore
from selectorkv.kv.storage import RocksStorage
from selectorkv.reactor.selector_thread import SelectorThread
from tests.support import on_reactor

ME = "http://127.0.0.1:1"
TOPOLOGY = Topology((ME,), ME)


class InlineTasks:
    """Runs each task at once (the inline executor's way); no client
    request of these tests reaches it."""

    def execute(self, request: Request, cycle: Responder) -> None:
        raise AssertionError(f"a request went to the executor: {request!r}")

    def run(self, task: Task) -> None:
        task()

    def is_full(self) -> bool:
        return False

    def resume(self, cycle: Responder) -> None:
        raise AssertionError("nothing is parked")


class RecordingReplica:
    """A replica's API; records each group of calls it answers."""

    def __init__(self, api: ReplicaApi) -> None:
        self.api = api
        self.seen: list[list[batch.Call]] = []

    def answer(self, calls: list[batch.Call]) -> list[batch.Answer]:
        self.seen.append(list(calls))
        return self.api.answer(calls)


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
def replica(tmp_path: Path) -> Iterator[RecordingReplica]:
    storage = RocksStorage(str(tmp_path / "db"))
    clock = HybridClock(0)
    yield RecordingReplica(
        ReplicaApi(
            storage, ReplicaStore(storage, clock.observe), b"t", TOPOLOGY.cluster_id.encode()
        )
    )
    storage.close()


def coordinator(replica: RecordingReplica) -> Coordinator:
    cluster = Cluster(
        TOPOLOGY, {ME: ("127.0.0.1", 1)}, b"t", HybridClock(0), peer_timeout=1.0, max_body=1 << 20
    )
    return Coordinator(InlineTasks(), replica.answer, cluster)


def test_one_rounds_calls_to_the_own_replica_go_as_one_group(
    reactor: SelectorThread, replica: RecordingReplica
) -> None:
    node = coordinator(replica)
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
    assert [[call.key for call in calls] for calls in replica.seen] == [keys]
    on_reactor(reactor, lambda: node.execute(Request(b"GET", b"/v0/entity?id=b"),
                                             Answered(answers, b"b")))  # fmt: skip
    assert answers.get(timeout=10) == (b"b", Response(200, b"value-b"))
    assert replica.seen[-1] == [batch.Call(b"b", None)]
