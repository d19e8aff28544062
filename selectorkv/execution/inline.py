"""Sync mode's executor: the SelectorThread runs the request itself.

A SelectorThread calls ``executor.execute(request, cycle)`` with a complete,
decoded request on a connection it owns; ``cycle`` is the responder the
answer is given to (selectorkv/http/cycle.py). ``InlineExecutor`` calls the
API and writes the response right there. The SelectorThread is blocked for
the storage call, but nothing crosses a thread: no queue, no wake-up, no GIL
hand-over. Async mode's executor is the PayloadThread pool (pool.py).
"""

from __future__ import annotations

from selectorkv.execution.commit import RoundCommit
from selectorkv.http.exchange import Application, Request, Responder, Task


class InlineExecutor:
    """Sync mode: the SelectorThread executes the request itself; writes
    wait for the end of the round, to be committed together (commit.py)."""

    def __init__(self, handle: Application, commit: RoundCommit | None = None) -> None:
        self._handle = handle
        self._commit = commit

    def execute(self, request: Request, cycle: Responder) -> None:
        commit = self._commit
        # A GET, the common request, is not even asked (write_of is a call).
        write = None
        if commit is not None and request.method != b"GET":
            write = commit.group.write_of(request)
        if write is None:
            cycle.respond(self._handle(request))
        else:
            commit.add(write, cycle)  # type: ignore[union-attr]

    def resume(self, cycle: Responder) -> None:
        cycle.continue_stream()

    def run(self, task: Task) -> None:
        task()

    def is_full(self) -> bool:
        return False
