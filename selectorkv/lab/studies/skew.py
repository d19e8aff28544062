"""What clock skew costs: writes acknowledged and then lost to an earlier
write, measured on real nodes whose clocks are set off through the
experiment's seam ($SELECTORKV_CLOCK_SKEW, server.py).

# design

Three nodes; node B's clock runs ``skew`` seconds behind the others'. For
each of ``pairs`` keys whose one replica (``ack=1&from=1``) is node C, a
client writes "first" through node A, waits ``gap`` seconds, and writes
"second" through node B; both are acknowledged. B never saw the first
write (it is no replica of the key), so only its clock and what its hybrid
clock learned from earlier answers decide whether "second" gets a higher
version. A read through C then says which write survived. This is the case
the hybrid clock cannot repair (clock.py); with ``from`` covering the
coordinator, or a read of the key before the write, B would have seen the
first version and passed it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from selectorkv.cluster.placement import Topology
from selectorkv.lab.harness.nodes import Nodes


@dataclass(frozen=True)
class SkewResult:
    skew: float  # seconds node B is behind
    gap: float  # seconds between the two writes
    pairs: int
    lost: int  # second writes acknowledged and not kept
    superseded: float  # selectorkv_writes_superseded_total on node C


def measure(
    root: Path, skew: float, gap: float, pairs: int, log: IO[bytes] | None = None
) -> SkewResult:
    nodes_of = Nodes(root, log)
    try:
        a, b, c = nodes_of.make(3, "sync", env=[{}, {"SELECTORKV_CLOCK_SKEW": str(-skew)}, {}])
        topology = Topology.parse(",".join(node.url for node in (a, b, c)), c.url)
        lost = 0
        for key in keys_on(topology, c.url, pairs):
            assert a.put(key, b"first", "&ack=1&from=1") == 201
            time.sleep(gap)  # the experiment's variable, not a wait for an event
            assert b.put(key, b"second", "&ack=1&from=1") == 201
            lost += c.get(key, "&ack=1&from=1") != (200, b"second")
        superseded = c.metric("selectorkv_writes_superseded_total")
    finally:
        nodes_of.stop_all()
    return SkewResult(skew, gap, pairs, lost, superseded)


def keys_on(topology: Topology, node: str, count: int) -> list[str]:
    """``count`` keys whose one replica (``from=1``) is ``node``."""
    found: list[str] = []
    number = 0
    while len(found) < count:
        key = f"skew{number}"
        number += 1
        if topology.replicas(key.encode(), 1) == [node]:
            found.append(key)
    return found


def table(results: list[SkewResult]) -> str:
    lines = [
        "| node B behind by | gap between the writes | pairs | second write lost "
        "| superseded (node C's metric) |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.skew * 1000:g} ms | {r.gap * 1000:g} ms | {r.pairs} | {r.lost} "
            f"| {r.superseded:.0f} |"
        )
    return "\n".join(lines)
