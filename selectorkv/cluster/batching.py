"""A SelectorThread's calls to the replicas, gathered per round and sent
per node at the round's end: one internal request per node for what one
round of client requests asks of it.

Under load a round of a SelectorThread parses many client requests, and
every one of them whose replica is another node makes a call to it. Sent
one by one, each call is a request head to format, a send, a request for
the peer to parse and execute, a write to its storage, an answer to
format, send and parse: the peer's whole per-request cost, paid again for
every call (docs/cluster.md, "What a hop costs"). Gathered, the calls of a
round to one peer go in one ``POST /v0/internal/batch`` (kv/batch.py), and
the peer stores their records with one write. The node's own replica is
called the same way, through its executor instead of a socket, and
without HTTP: the round's calls go to the replica's API as they are (no
request to format and parse), one task for a PayloadThread and one write
for all of them, instead of one of each per call. A lone call goes as the plain
internal request, as it would without batching, so a lightly loaded
cluster looks the same on the wire; a call too large to share a batch
within the peer's body limit goes alone too.

No call waits for a batch to fill: the batch is sent at the end of the
round in which its calls were made, where a lone call would have been
written too. Each call gets its own answer, or the batch's failure.
"""

from __future__ import annotations

from collections.abc import Callable

from selectorkv.cluster.peer import TOO_MANY, PeerPool, PeerReply, PeerRequest
from selectorkv.cluster.placement import Address
from selectorkv.kv import batch
from selectorkv.kv.api import INTERNAL_BATCH, internal_target

# A call's answer: (node, status, body, error); status 0 when the call failed.
OnAnswer = Callable[[str, int, bytes, str], None]
# The answers to a group of calls, one per call in order, and why the
# group failed ("" when it did not; when it did, every answer is the
# failure: status 0, or the status of the request that carried them).
OnAnswers = Callable[[list[batch.Answer], str], None]
# Makes a group of calls to one replica; the answers to the callback, on
# the SelectorThread.
Send = Callable[[list[batch.Call], OnAnswers], None]


def lone_request(call: batch.Call) -> tuple[bytes, bytes, bytes]:
    """A call sent alone: the plain internal request (method, target,
    body), a GET of the key's record or a PUT of one."""
    key, record = call
    if record is None:
        return b"GET", internal_target(key), b""
    return b"PUT", internal_target(key), record


def over_http(pool: PeerPool, address: Address, headers: tuple[tuple[bytes, bytes], ...]) -> Send:
    """How a SelectorThread calls the peer at ``address``, through its pool:
    a lone call as the plain internal request, several as one batch."""

    def send(calls: list[batch.Call], on_answers: OnAnswers) -> None:
        if len(calls) == 1:
            method, target, body = lone_request(calls[0])
            pool.call(
                address,
                PeerRequest(method, target, headers, body),
                lambda reply: on_answers([batch.Answer(reply.status, reply.body)], reply.error),
            )
            return

        def answered(reply: PeerReply) -> None:
            if reply.status != 200:
                failed = batch.Answer(reply.status, reply.body)
                on_answers([failed] * len(calls), reply.error)
                return
            try:
                answers = batch.decode_answers(reply.body, len(calls))
            except ValueError as exc:
                on_answers([batch.Answer(0, b"")] * len(calls), f"a malformed batch answer: {exc}")
                return
            on_answers(answers, "")

        body = batch.encode_calls(calls)
        pool.call(address, PeerRequest(b"POST", INTERNAL_BATCH, headers, body), answered)

    return send


class RoundCalls:
    """The calls one SelectorThread makes to the replicas in the current round.

    ``senders``: how to reach each node (its URL to a ``Send``: another
    node over HTTP, this node's own replica through its executor, without
    HTTP);
    ``max_body``: the largest body a node accepts on an internal request (a
    batch stays within it); ``max_in_flight``: calls to one node not yet
    answered, beyond which a call fails at once (the overload rule: no
    unbounded queue)."""

    def __init__(
        self,
        on_round_end: Callable[[Callable[[], None]], None],
        senders: dict[str, Send],
        max_body: int,
        max_in_flight: int,
    ) -> None:
        self._on_round_end = on_round_end
        self._senders = senders
        self._max_body = max_body
        self._max_in_flight = max_in_flight
        self._round: dict[str, list[tuple[batch.Call, OnAnswer]]] = {}
        self._in_flight: dict[str, int] = {}  # calls made and not yet answered

    def call(self, node: str, call: batch.Call, on_answer: OnAnswer) -> None:
        """On the SelectorThread: ask ``node``; ``on_answer`` runs on this
        thread, once."""
        waiting = self._in_flight.get(node, 0)
        if waiting >= self._max_in_flight:
            on_answer(node, 0, b"", TOO_MANY)
            return
        self._in_flight[node] = waiting + 1
        if not self._round:
            self._on_round_end(self._send_round)
        self._round.setdefault(node, []).append((call, on_answer))

    def _send_round(self) -> None:
        calls, self._round = self._round, {}
        for node, made in calls.items():
            for group in self._groups(made):
                self._send(node, group)

    def _groups(
        self, made: list[tuple[batch.Call, OnAnswer]]
    ) -> list[list[tuple[batch.Call, OnAnswer]]]:
        """The round's calls to one peer, in order, cut into batches of at
        most MAX_CALLS calls and the peer's body limit."""
        groups: list[list[tuple[batch.Call, OnAnswer]]] = []
        group: list[tuple[batch.Call, OnAnswer]] = []
        size = 0
        for entry in made:
            grown = size + batch.call_size(entry[0])
            if group and (len(group) == batch.MAX_CALLS or grown > self._max_body):
                groups.append(group)
                group, grown = [], batch.call_size(entry[0])
            group.append(entry)
            size = grown
        if group:
            groups.append(group)
        return groups

    def _send(self, node: str, group: list[tuple[batch.Call, OnAnswer]]) -> None:
        def answered(answers: list[batch.Answer], error: str) -> None:
            self._in_flight[node] -= len(group)
            for (_, on_answer), answer in zip(group, answers, strict=True):
                on_answer(node, answer.status, answer.body, error)

        self._senders[node]([call for call, _ in group], answered)
