"""What clients did, as a checker needs it: a history of operations, each
with when it was invoked, when it completed and how.

An operation is a write (PUT: a value; DELETE: None) or a read of one key.
Its outcome is one of three, as in Jepsen's histories:

- ``ok``: the cluster answered and confirmed it (201/202; a read's 200 or
  404, with what it read);
- ``fail``: it certainly did not take effect (a 400; a read's 504, which
  changes nothing);
- ``unknown``: nobody can tell. A write answered 504 "was not confirmed",
  not "was not written" (some replicas may have it, and a hint may hand it
  to the others later); a request that timed out or lost its connection
  may have been applied. The checker lets such a write take effect at any
  moment after its invocation, or never.

Times are ``time.monotonic()`` seconds of the process that records them; a
history is comparable only within that process. Every write's value is
unique (the client that made it, and a counter), so a read says exactly
which write it saw.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"
WRITE, READ = "write", "read"


@dataclass(frozen=True)
class Op:
    """One client operation on one key. ``value``: what a write wrote, or
    what a read returned (None: a delete, or a read of no value)."""

    client: int
    kind: str  # WRITE or READ
    key: str
    value: str | None
    invoked: float
    completed: float
    outcome: str  # OK, FAIL or UNKNOWN


class History:
    """Operations recorded by many client threads at once."""

    def __init__(self) -> None:
        self._ops: list[Op] = []
        self._lock = threading.Lock()

    def add(self, op: Op) -> None:
        with self._lock:
            self._ops.append(op)

    def ops(self) -> list[Op]:
        with self._lock:
            return list(self._ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops())

    def save(self, path: Path) -> None:
        """One JSON object a line."""
        with open(path, "w") as out:
            for op in self.ops():
                out.write(json.dumps(asdict(op)) + "\n")

    @classmethod
    def load(cls, path: Path) -> History:
        history = cls()
        with open(path) as lines:
            for line in lines:
                history.add(Op(**json.loads(line)))
        return history

    @classmethod
    def of(cls, ops: Iterable[Op]) -> History:
        history = cls()
        for op in ops:
            history.add(op)
        return history
