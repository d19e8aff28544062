"""The verdict on a history (history.py): is every key a register that
behaved as one, and if not, what went wrong?

Linearizability key by key (keys are independent: P-compositionality, as
Porcupine does): Wing and Gong's search with Lowe's improvements. Walk the
invocations and completions in time order; at an invocation, linearize that
operation now if it can be (a write always, a read only if it returns the
current value) and go on; at the completion of an operation not yet
linearized, undo the last choice and try the next. A cache of (operations
linearized, value) prunes paths already tried; a write of unknown outcome
completes at infinity; failed operations are left out. The checker also
counts, directly, reads of a value nobody wrote, stale reads and, among
the final reads, acknowledged writes lost. docs/cluster.md, "Fault runs".
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from selectorkv.lab.studies.history import FAIL, OK, READ, UNKNOWN, WRITE, History, Op


@dataclass
class Verdict:
    """What the checker found."""

    keys: int = 0
    operations: int = 0
    not_linearizable: list[str] = field(default_factory=list)  # keys
    unwritten: list[Op] = field(default_factory=list)
    stale: list[Op] = field(default_factory=list)
    lost: list[Op] = field(default_factory=list)
    # Keys whose search gave up (too many concurrent unknown writes).
    undecided: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.not_linearizable or self.unwritten or self.stale or self.lost)


# The most paths one key's search may try before it says "undecided".
SEARCH_LIMIT = 2_000_000


def check(history: History, final_after: float = math.inf) -> Verdict:
    """Check every key of ``history``. Reads invoked at or after
    ``final_after`` (the faults healed) are the final reads: a stale one
    among them is an acknowledged write lost."""
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in history:
        by_key[op.key].append(op)
    verdict = Verdict(keys=len(by_key))
    for key, ops in sorted(by_key.items()):
        kept = [
            op for op in ops if op.outcome != FAIL and not (op.kind == READ and op.outcome != OK)
        ]
        verdict.operations += len(kept)
        _direct_checks(kept, final_after, verdict)
        result = linearizable(kept)
        if result is None:
            verdict.undecided.append(key)
        elif not result:
            verdict.not_linearizable.append(key)
    return verdict


def _direct_checks(ops: list[Op], final_after: float, verdict: Verdict) -> None:
    writes = {op.value: op for op in ops if op.kind == WRITE and op.value is not None}
    acknowledged = [op for op in ops if op.kind == WRITE and op.outcome == OK]
    for read in (op for op in ops if op.kind == READ):
        if read.value is not None and read.value not in writes:
            verdict.unwritten.append(read)
            continue
        seen = writes.get(read.value) if read.value is not None else None
        # A delete (value None) cannot be told from the initial absence:
        # a read of nothing is stale only if some acknowledged write came
        # after every delete it could have seen, which the search decides.
        if seen is None:
            continue
        if any(
            later.value != read.value
            and seen.completed < later.invoked
            and later.completed < read.invoked
            for later in acknowledged
        ):
            (verdict.lost if read.invoked >= final_after else verdict.stale).append(read)


class _Entry:
    """One invocation or completion in the time-ordered, doubly linked list
    of the search (Lowe's "lift" and "unlift" take an operation's two
    entries out and put them back)."""

    __slots__ = ("index", "is_call", "match", "next", "op", "prev", "time")

    def __init__(self, op: Op | None, index: int, is_call: bool, time: float) -> None:
        self.op = op
        self.index = index
        self.is_call = is_call
        self.time = time
        self.match: _Entry | None = None  # a call's completion
        self.prev: _Entry | None = None
        self.next: _Entry | None = None


def _timeline(ops: list[Op]) -> _Entry:
    """The invocations and completions of ``ops`` as a doubly linked list
    in time order, behind a head entry; each call linked to its return."""
    entries: list[_Entry] = []
    for index, op in enumerate(ops):
        call = _Entry(op, index, True, op.invoked)
        completed = math.inf if op.outcome == UNKNOWN else op.completed
        ret = _Entry(op, index, False, completed)
        call.match = ret
        entries += (call, ret)
    # Time order; at one instant invocations first, so that operations that
    # touch are taken as concurrent (the lenient reading).
    entries.sort(key=lambda e: (e.time, not e.is_call))
    head = _Entry(None, -1, False, -math.inf)
    previous = head
    for entry in entries:
        previous.next, entry.prev = entry, previous
        previous = entry
    return head


def _lift(entry: _Entry) -> None:
    """Take an operation (its call and its return) out of the list."""
    for e in (entry, entry.match):
        assert e is not None and e.prev is not None
        e.prev.next = e.next
        if e.next is not None:
            e.next.prev = e.prev


def _unlift(entry: _Entry) -> None:
    """Put back an operation taken out by ``_lift``."""
    for e in (entry.match, entry):
        assert e is not None and e.prev is not None
        e.prev.next = e
        if e.next is not None:
            e.next.prev = e


def linearizable(ops: list[Op], limit: int = SEARCH_LIMIT) -> bool | None:
    """Is this one key's history linearizable (the register starts empty)?
    None when the search tried ``limit`` paths without an answer."""
    head = _timeline(ops)
    state: str | None = None
    linearized = 0  # a bit per operation
    cache: set[tuple[int, str | None]] = set()
    stack: list[tuple[_Entry, str | None]] = []
    at: _Entry | None = head.next
    tried = 0
    while head.next is not None:
        tried += 1
        if tried > limit:
            return None
        assert at is not None and at.op is not None
        op = at.op
        if at.is_call:
            if op.kind == WRITE:
                new_state: str | None = op.value
                possible = True
            else:
                new_state = state
                possible = op.value == state
            bits = linearized | 1 << at.index
            if possible and (bits, new_state) not in cache:
                cache.add((bits, new_state))
                stack.append((at, state))
                state, linearized = new_state, bits
                _lift(at)
                at = head.next
            else:
                at = at.next
        else:  # a completion before its operation was linearized: back up
            if not stack:
                return False
            undone, state = stack.pop()
            linearized &= ~(1 << undone.index)
            _unlift(undone)
            at = undone.next
    return True
