"""CPU quotas for server processes, with Linux cgroups: a node limited to a
share of one CPU, so that N nodes on a machine of two cores behave like N
equal small cores.

The quota is CFS bandwidth: in every period the processes of a group may
run ``share`` of it, then wait for the next period. The period is 10 ms,
not the kernel's default 100 ms: a node that spent its share early in a
period waits out the rest, and with 100 ms periods that wait (up to 80 ms
at a fifth of a CPU) was the p99 of every run at half capacity. With the
cgroup v1 ``cpu`` controller (``/sys/fs/cgroup/cpu``) that is
``cpu.cfs_quota_us`` over ``cpu.cfs_period_us``; with cgroup v2 (one
hierarchy at ``/sys/fs/cgroup``) it is ``cpu.max``. Both need root.

``Quotas`` is a context manager: every group it made is removed when it
ends, also after a failure (a group can only be removed once it holds no
process, so the processes still in it are moved back to the root first).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 10_000


class QuotaError(RuntimeError):
    """CPU quotas cannot be set here (no cgroup cpu controller, not root)."""


def hierarchy() -> tuple[Path, int]:
    """Where the cpu controller is mounted, and its cgroup version."""
    if (ROOT / "cpu" / "cpu.cfs_quota_us").exists():
        return ROOT / "cpu", 1
    if (ROOT / "cgroup.controllers").exists() and "cpu" in (
        ROOT / "cgroup.controllers"
    ).read_text():
        return ROOT, 2
    raise QuotaError("no cgroup cpu controller at /sys/fs/cgroup (v1 cpu/ or v2 cpu.max)")


class Quotas:
    """Groups under one parent of this run's own (``name``), one per limited
    process."""

    def __init__(self, name: str) -> None:
        self.root, self.version = hierarchy()
        self.parent = self.root / f"{name}-{os.getpid()}"
        self._groups: list[Path] = []

    def __enter__(self) -> Quotas:
        try:
            self.parent.mkdir()
        except OSError as exc:
            raise QuotaError(f"cannot make {self.parent} ({exc}): CPU quotas need root") from None
        if self.version == 2:  # children of the parent may then have cpu.max
            (self.parent / "cgroup.subtree_control").write_text("+cpu")
        return self

    def limit(self, pid: int, share: float) -> Path:
        """Put process ``pid`` (all its threads, and those it starts later)
        in a group of its own that may use ``share`` of one CPU."""
        if not 0 < share <= 64:
            raise ValueError(f"a CPU share is above 0, not {share}")
        group = self.parent / f"p{pid}"
        group.mkdir()
        self._groups.append(group)
        quota = max(1000, round(share * PERIOD_US))  # the kernel's least: 1 ms
        if self.version == 1:
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
        (group / "cgroup.procs").write_text(str(pid))
        return group

    def throttled_seconds(self) -> float:
        """How long the groups' processes waited for their next period, in
        all (the quota at work)."""
        total = 0.0
        for group in self._groups:
            for line in (group / "cpu.stat").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "throttled_time":  # v1: nanoseconds
                    total += int(value) / 1e9
                elif name == "throttled_usec":  # v2
                    total += int(value) / 1e6
        return total

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        for group in reversed(self._groups):
            _empty(group, self.root)
            group.rmdir()
        _empty(self.parent, self.root)
        self.parent.rmdir()


def _empty(group: Path, root: Path) -> None:
    """Move the processes still in ``group`` back to the root group."""
    for pid in (group / "cgroup.procs").read_text().split():
        try:
            (root / "cgroup.procs").write_text(pid)
        except ProcessLookupError:
            continue  # it exited meanwhile
