"""The quorum of one coordinated request, driven without sockets: the
replicas' answers handed in as the coordinator's SelectorThread would get
them, a repair callback that records whom it repairs, and a clock that
records what it was shown."""

from __future__ import annotations

from selectorkv.cluster.replication import Quorum
from selectorkv.http.exchange import Response
from selectorkv.kv.records import Record

VALUE = Record(5 << 16 | 1, b"fresh", 3)
OLDER = Record(3 << 16 | 2, b"old", 3)


class Client:
    def __init__(self) -> None:
        self.answers: list[Response] = []

    def respond(self, response: Response) -> bool:
        self.answers.append(response)
        return True

    def hand_off(self) -> None:
        pass

    def continue_stream(self) -> None:
        raise AssertionError("not streamed")


class Replicas:
    """What the quorum asked of the replicas beyond the read: repairs."""

    def __init__(self) -> None:
        self.repaired: list[tuple[str, Record]] = []
        self.seen: list[int] = []

    def repair(self, node: str, record: Record, on_reply: object) -> None:
        self.repaired.append((node, record))

    def observe(self, version: int) -> None:
        self.seen.append(version)


def read(ack: int, replicas: int) -> tuple[Quorum, Client, Replicas]:
    client, around = Client(), Replicas()
    return Quorum(client, b"GET", ack, replicas, around.repair, around.observe), client, around


def test_replicas_that_agree_answer_at_once_and_repair_nothing() -> None:
    quorum, client, around = read(2, 3)
    for node in "abc":  # equal bytes, as three replicas send them: separate objects
        quorum.on_reply(node, 200, bytes(VALUE.encode()), "")
    assert client.answers == [Response(200, b"fresh")]
    assert around.repaired == []
    assert VALUE.version in around.seen


def test_a_stale_replica_is_repaired_before_the_answer() -> None:
    quorum, client, around = read(2, 3)
    quorum.on_reply("a", 200, OLDER.encode(), "")
    quorum.on_reply("b", 200, VALUE.encode(), "")
    assert around.repaired == [("a", VALUE)]
    assert client.answers == []  # waits for the blocking repair
    quorum.on_reply("c", 200, VALUE.encode(), "")
    assert around.repaired == [("a", VALUE)]  # c is current, a already given it


def test_a_late_stale_replica_is_repaired_in_the_background() -> None:
    quorum, client, around = read(2, 3)
    quorum.on_reply("a", 200, VALUE.encode(), "")
    quorum.on_reply("b", 200, VALUE.encode(), "")
    assert client.answers == [Response(200, b"fresh")]
    quorum.on_reply("c", 404, b"", "")
    assert around.repaired == [("c", VALUE)]


def test_replicas_that_hold_nothing_answer_404() -> None:
    quorum, client, around = read(2, 3)
    quorum.on_reply("a", 404, b"", "")
    quorum.on_reply("b", 404, b"", "")
    quorum.on_reply("c", 404, b"", "")
    assert client.answers == [Response(404)]
    assert around.repaired == []


def test_a_200_without_a_record_is_a_failed_replica() -> None:
    quorum, client, _ = read(2, 2)
    quorum.on_reply("a", 200, b"", "")
    assert client.answers[0].status == 504


def test_the_same_record_after_another_is_still_compared() -> None:
    quorum, client, around = read(3, 3)
    quorum.on_reply("a", 200, VALUE.encode(), "")
    quorum.on_reply("b", 200, OLDER.encode(), "")
    quorum.on_reply("c", 200, VALUE.encode(), "")
    assert around.repaired == [("b", VALUE)]
    assert client.answers == []  # waits for b's repair
