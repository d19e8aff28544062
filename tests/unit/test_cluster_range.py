"""The cluster-wide range's parts without sockets: a node's records as an
internal stream read back in pieces of any size, and the channel between
the merge thread and the client's connection (its bound, its pause, its
end). The range on real nodes: tests/system/test_cluster_range.py."""

from __future__ import annotations

import threading

import pytest

from selectorkv.cluster.ranges import Channel, record_pieces
from selectorkv.http.exchange import Pause
from selectorkv.kv import batch
from selectorkv.kv.records import Record


def test_a_stream_of_records_is_read_back_whatever_its_pieces() -> None:
    records = [(b"k%05d" % i, Record(i + 1, b"v" * (i % 700), 3).encode()) for i in range(2000)]
    stream = b"".join(record_pieces(iter(records)))
    for size in (1, 7, 100, 4096, len(stream)):
        found = []
        rest = b""
        for at in range(0, len(stream), size):
            calls, rest = batch.split_calls(rest + stream[at : at + size])
            found += [(call.key, call.record) for call in calls]
        assert rest == b""
        assert found == records


def test_a_malformed_stream_is_refused() -> None:
    with pytest.raises(ValueError):
        batch.split_calls(b"DEL 3\nkey")


def test_the_channel_pauses_when_empty_and_calls_back_once_it_has_more() -> None:
    channel = Channel(capacity=2)
    stream = channel.stream()
    piece = next(stream)
    assert type(piece) is Pause
    woken = threading.Event()
    piece.notify(woken.set)
    assert not woken.is_set()
    assert channel.put([b"a", b"b"])
    assert woken.is_set()
    assert [next(stream), next(stream)] == [b"a", b"b"]
    channel.finish()
    assert list(stream) == []


def test_the_merge_waits_while_the_channel_is_full() -> None:
    channel = Channel(capacity=1)
    stream = channel.stream()
    assert channel.put([b"first"])
    waiting = threading.Thread(target=lambda: channel.put([b"second"]))
    waiting.start()
    waiting.join(0.2)
    assert waiting.is_alive()  # held back: the channel is full
    assert next(stream) == b"first"  # taking one lets the waiting put in
    waiting.join(10)
    assert not waiting.is_alive()
    assert next(stream) == b"second"


def test_a_client_that_leaves_stops_the_merge() -> None:
    channel = Channel(capacity=1)
    stream = channel.stream()
    assert channel.put([b"x"])
    next(stream)
    stream.close()  # the connection closed
    assert not channel.put([b"y"])


def test_a_merge_that_failed_ends_the_stream_with_its_error() -> None:
    channel = Channel()
    stream = channel.stream()
    channel.finish(OSError("a peer went away"))
    with pytest.raises(OSError, match="went away"):
        next(stream)
