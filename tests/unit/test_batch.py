"""The internal batch (kv/batch.py) as bytes, and a replica's answer to one
(ReplicaApi over a real RocksDB in a temporary directory): every call
answered as it would be alone, the stored records written at once."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from selectorkv.http.exchange import Request
from selectorkv.kv import batch
from selectorkv.kv.api import (
    CLUSTER_HEADER,
    INTERNAL_BATCH,
    TOKEN_HEADER,
    ReplicaApi,
    internal_target,
)
from selectorkv.kv.records import Record, ReplicaStore, decode
from selectorkv.kv.storage import RocksStorage

TOKEN = b"secret"
CLUSTER = b"0123456789abcdef"
HEADERS = ((TOKEN_HEADER, TOKEN), (CLUSTER_HEADER, CLUSTER))


def test_calls_and_answers_round_trip() -> None:
    calls = [
        batch.Call(b"k", None),
        batch.Call(b"with space\nand newline", b"v" + bytes(16) + b"value"),
        batch.Call(b"\x00\xff", b""),
    ]
    body = batch.encode_calls(calls)
    assert batch.decode_calls(body) == calls
    assert all(batch.call_size(call) >= len(batch.encode_calls([call])) for call in calls)
    largest = 10**12 - 1  # a size has at most 12 digits (decode_calls)
    assert len(b"PUT %d %d\n" % (largest, largest)) <= batch.CALL_LINE
    answers = [batch.Answer(200, b"rec\nord"), batch.Answer(404, b""), batch.Answer(201, b"")]
    assert batch.decode_answers(batch.encode_answers(answers), 3) == answers
    stored = [batch.Answer(201, b"")] * 3
    assert batch.decode_answers(batch.encode_answers(stored), 3) == stored


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"GET 1\n", "past the end"),
        (b"PUT 1 5\nkab", "past the end"),
        (b"GET 0\n", "empty key"),
        (b"DEL 1\nk", "not a call"),
        (b"GET 1 2\nk", "not a call"),
        (b"GET x\nk", "not a size"),
        (b"GET -1\nk", "not a size"),
        (b"GET 1", "without its end"),
        (b"GET 1\nk" * (batch.MAX_CALLS + 1), f"more than {batch.MAX_CALLS}"),
    ],
)
def test_a_malformed_batch_is_refused(body: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        batch.decode_calls(body)


@pytest.mark.parametrize(
    ("body", "expected", "why"),
    [
        (b"201 0\n", 2, "1 answers to 2 calls"),
        (b"201 0\n201 0\n", 1, "2 answers to 1 calls"),
        (b"2010 0\n", 1, "not an answer"),
        (b"200 9\nshort", 1, "past the end"),
    ],
)
def test_a_malformed_answer_is_refused(body: bytes, expected: int, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        batch.decode_answers(body, expected)


class WriteCountingStorage(RocksStorage):
    """A real RocksDB, with a seam that counts the writes made to it."""

    writes = 0

    def put(self, key: bytes, value: bytes) -> None:
        self.writes += 1
        super().put(key, value)

    def apply_batch(self, writes: Sequence[tuple[bytes, bytes | None]]) -> None:
        self.writes += 1
        super().apply_batch(writes)


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[WriteCountingStorage]:
    storage = WriteCountingStorage(str(tmp_path / "db"))
    yield storage
    storage.close()


def replica_api(storage: RocksStorage) -> ReplicaApi:
    return ReplicaApi(storage, ReplicaStore(storage, lambda version: None), TOKEN, CLUSTER)


def record(version: int, value: bytes | None) -> bytes:
    return Record(version, value, 3).encode()


def post(
    api: ReplicaApi, calls: list[batch.Call], headers: tuple[tuple[bytes, bytes], ...] = HEADERS
) -> tuple[int, bytes]:
    response = api.handle(Request(b"POST", INTERNAL_BATCH, batch.encode_calls(calls), headers))
    return response.status, response.body


def test_a_batch_is_answered_call_by_call_as_each_alone(storage: WriteCountingStorage) -> None:
    api = replica_api(storage)
    alone = api.handle(Request(b"PUT", internal_target(b"old"), record(5, b"five"), HEADERS))
    assert alone.status == 201
    writes_before = storage.writes
    calls = [
        batch.Call(b"new", record(10, b"ten")),  # stored: 201
        batch.Call(b"old", record(3, b"three")),  # older than what is kept: 200 + the newer
        batch.Call(b"new", record(11, b"eleven")),  # the same key again, newer: 201
        batch.Call(b"new", None),  # a read sees the batch's writes before it
        batch.Call(b"none", None),  # 404
        batch.Call(b"bad", b"not a record"),  # 400, the rest still answered
    ]
    status, body = post(api, calls)
    assert status == 200
    answers = batch.decode_answers(body, len(calls))
    assert [a.status for a in answers] == [201, 200, 201, 200, 404, 400]
    assert decode(answers[1].body) == Record(5, b"five", 3)
    assert decode(answers[3].body) == Record(11, b"eleven", 3)
    assert storage.writes == writes_before + 1  # the batch's records in one write
    reread = api.handle(Request(b"GET", internal_target(b"new"), b"", HEADERS))
    assert decode(reread.body) == Record(11, b"eleven", 3)


def test_a_batch_needs_the_token_and_the_cluster_id(storage: WriteCountingStorage) -> None:
    api = replica_api(storage)
    calls = [batch.Call(b"k", record(1, b"v"))] * 2
    assert post(api, calls, headers=())[0] == 403
    assert post(api, calls, headers=((TOKEN_HEADER, TOKEN), (CLUSTER_HEADER, b"other")))[0] == 409
    assert storage.writes == 0


def test_a_malformed_batch_or_method_is_a_client_error(storage: WriteCountingStorage) -> None:
    api = replica_api(storage)
    bad = api.handle(Request(b"POST", INTERNAL_BATCH, b"GET 9\nk", HEADERS))
    assert bad.status == 400 and b"malformed batch" in bad.body
    assert api.handle(Request(b"GET", INTERNAL_BATCH, b"", HEADERS)).status == 405
