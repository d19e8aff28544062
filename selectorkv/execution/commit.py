"""Group commit: the writes that arrive together are stored together, with
one append to RocksDB's write-ahead log and, with ``--fsync``, one sync of
it, and only then answered.

Sync mode: the writes parsed in one round of a SelectorThread are the group
(``RoundCommit``, at the round's end, before its responses are written).
Async mode: what a PayloadThread takes from the queue when it wakes, up to
the bound (``GroupCommit``). Neither waits for more work, so a lone client
sees no added latency; a batch closes at ``--commit-batch`` writes or
``MAX_BATCH_BYTES``; writes apply in the order they arrived; a failed batch
answers 500 to each of its writes. docs/architecture.md, "Group commit",
explains why a client always reads its own writes and what a sync costs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from selectorkv.http.exchange import Request, Responder
from selectorkv.kv.api import INTERNAL_ERROR, Write
from selectorkv.kv.storage import Storage, StorageError
from selectorkv.reactor.selector_thread import SelectorThread
from selectorkv.reactor.stats import count

log = logging.getLogger("selectorkv.execution.commit")

# A batch closes at this many bytes of values, whatever --commit-batch says:
# it bounds the memory a batch holds and the time one commit takes.
MAX_BATCH_BYTES = 8 * 1024 * 1024


class GroupCommit:
    """Stores a group of writes in one batch and answers each."""

    def __init__(
        self, storage: Storage, write_of: Callable[[Request], Write | None], max_writes: int
    ) -> None:
        self._storage = storage
        self.write_of = write_of  # the write a request makes, or None (Api.write_of)
        self.max_writes = max_writes

    def commit(self, writes: list[tuple[Write, Responder]]) -> None:
        """Store ``writes`` (in order, atomically), then answer each."""
        if not writes:
            return
        try:
            if len(writes) == 1:
                key, value = writes[0][0]
                if value is None:
                    self._storage.delete(key)
                else:
                    self._storage.put(key, value)
            else:
                self._storage.apply_batch([write for write, _ in writes])
        except StorageError as exc:
            log.error("storage error on %d write(s) stored together: %s", len(writes), exc)
            for _, responder in writes:
                responder.respond(INTERNAL_ERROR)
            return
        # The batches' sizes: a constant rate may batch far less than a
        # closed loop that keeps the queue full (docs/lab.md, "What stops a
        # Python reactor").
        count("commit_batches")
        count("commit_writes", len(writes))
        for write, responder in writes:
            responder.respond(write.response)

    def full(self, writes: int, size: int) -> bool:
        """Has a batch of ``writes`` holding ``size`` bytes of values reached the bound?"""
        return writes >= self.max_writes or size >= MAX_BATCH_BYTES


class RoundCommit:
    """Sync mode: each SelectorThread's writes of one round, committed at its end."""

    def __init__(self, group: GroupCommit) -> None:
        self.group = group
        self._open: dict[threading.Thread, list[tuple[Write, Responder]]] = {}
        self._sizes: dict[threading.Thread, int] = {}

    def add(self, write: Write, responder: Responder) -> None:
        """On a SelectorThread, inside ``execute``: hold the write for the
        end of this round (or commit now if the batch is full)."""
        reactor = SelectorThread.current()
        batch = self._open.get(reactor)
        if batch is None:
            batch = self._open[reactor] = []
            self._sizes[reactor] = 0
            reactor.at_round_end(lambda: self._commit(reactor))
        batch.append((write, responder))
        size = self._sizes[reactor] = self._sizes[reactor] + len(write.value or b"")
        if self.group.full(len(batch), size):
            self._commit(reactor)

    def _commit(self, reactor: threading.Thread) -> None:
        batch = self._open.pop(reactor, None)
        self._sizes.pop(reactor, None)
        if batch:
            self.group.commit(batch)
