"""The internal batch: several internal requests to one node in one HTTP
request, and their answers in one response.

A coordinator that calls the same peer more than once in a round of its
SelectorThread sends the calls together (``POST /v0/internal/batch``):
one request head, one parse, one write to the replica's storage, one
response, instead of one of each per call. docs/cluster.md ("What a hop
costs") has the figures. Each call keeps its own meaning: a GET of a
replica's record or a PUT of one, answered as ``/v0/internal/entity``
would answer it alone.

The body is length-prefixed text lines, readable in a dump:

    request:  GET <key length>\\n<key>
              PUT <key length> <record length>\\n<key><record>
    answer:   <status> <body length>\\n<body>          one per call, in order

No sockets and no storage here: bytes in, bytes out.
"""

from __future__ import annotations

from typing import NamedTuple

# Calls in one batch; a coordinator sends more as several batches.
MAX_CALLS = 64
# The most a call's line adds to its body ("PUT <12 digits> <12 digits>\n"),
# and an answer's ("200 <length>\n").
CALL_LINE = 30
ANSWER_LINE = 24


class Call(NamedTuple):
    """One call of a batch: ``record`` is a PUT's encoded record, None for a GET."""

    key: bytes
    record: bytes | None


class Answer(NamedTuple):
    status: int
    body: bytes


# The answer of a record stored, the common one: a batch of writes answered
# with it alone is recognised whole, without reading line by line.
STORED = Answer(201, b"")
STORED_LINE = b"201 0\n"


def call_size(call: Call) -> int:
    """At most the bytes ``call`` takes in a batch's body: its key and
    record, and the longest line a call has (sizes of up to 12 digits).
    Counted, not formatted: a coordinator asks it of every call."""
    key, record = call
    return len(key) + (len(record) if record is not None else 0) + CALL_LINE


def encode_call(call: Call) -> bytes:
    key, record = call
    if record is None:
        return b"GET %d\n%s" % (len(key), key)
    return b"PUT %d %d\n%s%s" % (len(key), len(record), key, record)


def encode_calls(calls: list[Call]) -> bytes:
    return b"".join(encode_call(call) for call in calls)


def decode_calls(body: bytes) -> list[Call]:
    """The calls of a batch's body; ValueError (why, in words) for anything
    malformed, an empty key, or more than MAX_CALLS calls."""
    calls, rest = split_calls(body, MAX_CALLS)
    if rest:
        _line(rest, 0)  # a line without its end, or:
        raise ValueError("a call runs past the end of the batch")
    return calls


def split_calls(data: bytes, most: int | None = None) -> tuple[list[Call], bytes]:
    """The whole calls at the start of ``data``, and the bytes after the last
    of them (the start of one still arriving: a stream of calls is read in
    pieces, cluster/ranges.py). ValueError for anything malformed, an empty
    key, or more than ``most`` calls."""
    calls: list[Call] = []
    at = 0
    while at < len(data):
        if most is not None and len(calls) == most:
            raise ValueError(f"more than {most} calls in one batch")
        if data.find(b"\n", at, at + 64) < 0 and len(data) - at < 64:
            break  # the line is still arriving
        line, start = _line(data, at)
        kind, *sizes = line.split(b" ")
        if kind == b"GET" and len(sizes) == 1:
            key_size, record_size = _size(sizes[0]), None
        elif kind == b"PUT" and len(sizes) == 2:
            key_size, record_size = _size(sizes[0]), _size(sizes[1])
        else:
            raise ValueError(f"not a call: {line[:40]!r}")
        if key_size == 0:
            raise ValueError("a call with an empty key")
        end = start + key_size + (record_size or 0)
        if end > len(data):
            break  # the key or record is still arriving
        key = data[start : start + key_size]
        record = None if record_size is None else data[start + key_size : end]
        calls.append(Call(key, record))
        at = end
    return calls, data[at:]


def encode_answers(answers: list[Answer]) -> bytes:
    if all(answer is STORED for answer in answers):
        return STORED_LINE * len(answers)
    return b"".join(b"%d %d\n%s" % (status, len(body), body) for status, body in answers)


def decode_answers(body: bytes, expected: int) -> list[Answer]:
    """The ``expected`` answers of a batch's response; ValueError when the
    body holds another number of them or is malformed."""
    if body == STORED_LINE * expected:
        return [STORED] * expected
    answers: list[Answer] = []
    at = 0
    while at < len(body):
        line, at = _line(body, at)
        status, _, size = line.partition(b" ")
        if len(status) != 3 or not status.isdigit():
            raise ValueError(f"not an answer: {line[:40]!r}")
        end = at + _size(size)
        if end > len(body):
            raise ValueError("an answer runs past the end of the batch")
        answers.append(Answer(int(status), body[at:end]))
        at = end
    if len(answers) != expected:
        raise ValueError(f"{len(answers)} answers to {expected} calls")
    return answers


def _line(body: bytes, at: int) -> tuple[bytes, int]:
    """The line at ``at`` (at most 64 bytes: three short fields) and where the next begins."""
    end = body.find(b"\n", at, at + 64)
    if end < 0:
        raise ValueError("a line without its end")
    return body[at:end], end + 1


def _size(text: bytes) -> int:
    if not text.isdigit() or len(text) > 12:
        raise ValueError(f"not a size: {text[:20]!r}")
    return int(text)
