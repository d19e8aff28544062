"""The versions a cluster node gives its writes: a hybrid logical clock
(Kulkarni et al., 2014).

A version is ``max(wall clock, last + 1)`` nanoseconds, and every version
the node sees moves ``last`` up to it, so a write that follows another
through any node that saw the first gets a higher version, whatever the
clocks say; the low 32 bits are the node's index in the sorted node list,
so two nodes never make the same version. ``Reservation`` keeps the clock
monotonic across restarts with one file write per second of versions: a
mark reserved ahead, which a restarted node waits for the wall clock to
pass (at most ``RESERVE_NS``).

docs/cluster.md, "Clocks", explains what the clock repairs, what it cannot,
and what clock skew then costs (measured).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("selectorkv.cluster.clock")

NODE_BITS = 32
RESERVE_NS = 1_000_000_000
CLOCK_FILE = "SELECTORKV-CLOCK"


class Reservation:
    """The highest timestamp the clock may have used, in a file that is
    replaced whole (written beside, then renamed): a crash leaves the old
    mark or the new one, never half of one."""

    def __init__(self, directory: str | Path, sync: bool = False) -> None:
        self._path = Path(directory) / CLOCK_FILE
        self._sync = sync  # with --fsync, as the data: survive a power loss too

    def load(self) -> int:
        try:
            return int(self._path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    def store(self, mark: int) -> None:
        temporary = self._path.with_suffix(".tmp")
        with open(temporary, "w") as out:
            out.write(f"{mark}\n")
            if self._sync:
                out.flush()
                os.fsync(out.fileno())
        os.replace(temporary, self._path)
        if self._sync:
            directory = os.open(self._path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)


class HybridClock:
    """Versions for one node; thread-safe (SelectorThreads issue them,
    PayloadThreads see them in the records they store).

    ``now`` is the wall clock in nanoseconds: a seam for tests and for the
    fault experiments' skewed clocks. ``reservation`` None keeps nothing
    across restarts (unit tests)."""

    def __init__(
        self,
        node_index: int,
        reservation: Reservation | None = None,
        now: Callable[[], int] = time.time_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 0 <= node_index < 1 << NODE_BITS:
            raise ValueError(f"node index must fit in {NODE_BITS} bits")
        self._node = node_index
        self._now = now
        self._reservation = reservation
        self._lock = threading.Lock()
        self._last = 0
        self._reserved = 0
        if reservation is not None:
            self._resume(reservation.load(), sleep)

    def _resume(self, mark: int, sleep: Callable[[float], None]) -> None:
        ahead = mark - self._now()
        if 0 < ahead <= RESERVE_NS:
            log.info("clock: waiting %.3f s for the wall clock to pass the last run's", ahead / 1e9)
            sleep(ahead / 1e9)
        elif ahead > RESERVE_NS:
            log.warning(
                "clock: versions seen before the restart are %.3f s ahead of the wall clock; "
                "new versions continue from them (is this clock or a peer's off?)",
                ahead / 1e9,
            )
        self._last = self._reserved = mark

    def next(self) -> int:
        """A version higher than every one this node has issued or seen."""
        with self._lock:
            stamp = max(self._now(), self._last + 1)
            if stamp > self._reserved:
                self._reserve(stamp)
            self._last = stamp
            return stamp << NODE_BITS | self._node

    def ceiling(self) -> int | None:
        """A version above every one this node has issued or seen, in this
        run or (through the reservation) before it; None when it knows of
        none (no reservation was found). Every version a replica stores is
        seen first, so none of them exceeds it (kv/records.py, "The ceiling")."""
        with self._lock:
            return None if self._last == 0 else (self._last + 1) << NODE_BITS

    def observe(self, version: int) -> None:
        """A version this node has seen: later ones will be higher."""
        stamp = version >> NODE_BITS
        if stamp <= self._last:  # the common case, without the lock
            return
        with self._lock:
            if stamp > self._last:
                if stamp > self._reserved:
                    self._reserve(stamp)
                self._last = stamp

    def _reserve(self, stamp: int) -> None:
        self._reserved = stamp + RESERVE_NS
        if self._reservation is not None:
            self._reservation.store(self._reserved)
