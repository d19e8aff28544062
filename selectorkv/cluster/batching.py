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
called the same way, through its executor instead of a socket: one task
for a PayloadThread and one write for the round's local calls, instead of
one of each per call. A lone call goes as the plain
internal request, as it would without batching, so a lightly loaded
cluster looks the same on the wire; a call too large to share a batch
within the peer's body limit goes alone too.

No call waits for a batch to fill: the batch is sent at the end of the
round in which its calls were made, where a lone call would have been
written too. Each call gets its own answer, or the batch's failure.
"""

from __future__ import annotations

from collections.abc import Callable

from selectorkv.cluster.peer import TOO_MANY, PeerPool, PeerRequest
from selectorkv.cluster.placement import Address
from selectorkv.kv import batch
from selectorkv.kv.api import INTERNAL_BATCH, internal_target

# A call's answer: (status, body, error); status 0 when the call failed.
OnAnswer = Callable[[int, bytes, str], None]
# Sends an internal request (method, target, body) to one replica; its
# answer to the callback, on the SelectorThread.
Send = Callable[[bytes, bytes, bytes, OnAnswer], None]


def over_http(pool: PeerPool, address: Address, headers: tuple[tuple[bytes, bytes], ...]) -> Send:
    """How a SelectorThread sends to the peer at ``address``: through its pool."""

    def send(method: bytes, target: bytes, body: bytes, on_answer: OnAnswer) -> None:
        request = PeerRequest(method, target, headers, body)
        pool.call(address, request, lambda reply: on_answer(reply.status, reply.body, reply.error))

    return send


class RoundCalls:
    """The calls one SelectorThread makes to the replicas in the current round.

    ``senders``: how to reach each node (its URL to a ``Send``: another
    node over HTTP, this node's own replica through its executor);
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
            on_answer(0, b"", TOO_MANY)
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
        def answered(status: int, body: bytes, error: str) -> None:
            self._answered(node, group, status, body, error)

        if len(group) == 1:
            key, record = group[0][0]
            method, body = (b"GET", b"") if record is None else (b"PUT", record)
            self._senders[node](method, internal_target(key), body, answered)
        else:
            body = batch.encode_calls([call for call, _ in group])
            self._senders[node](b"POST", INTERNAL_BATCH, body, answered)

    def _answered(
        self,
        node: str,
        group: list[tuple[batch.Call, OnAnswer]],
        status: int,
        body: bytes,
        error: str,
    ) -> None:
        self._in_flight[node] -= len(group)
        if len(group) == 1 or status != 200:
            # A lone call's own answer, or the batch's failure for each call.
            for _, on_answer in group:
                on_answer(status, body, error)
            return
        try:
            answers = batch.decode_answers(body, len(group))
        except ValueError as exc:
            for _, on_answer in group:
                on_answer(0, b"", f"a malformed batch answer: {exc}")
            return
        for (_, on_answer), answer in zip(group, answers, strict=True):
            on_answer(answer.status, answer.body, "")
