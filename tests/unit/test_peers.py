"""The peer comparison's bookkeeping (benchmarks/peers.py): rotated turns
and ratios taken within each round. The comparison itself is a benchmark
(make peers), not a test: it needs minutes and the peers extra."""

from __future__ import annotations

from benchmarks.peers import BASELINE, table
from selectorkv.lab.harness.rounds import rotated


def test_every_server_takes_every_place_in_turn() -> None:
    names = ["a", "b", "c"]
    orders = [rotated(names, n) for n in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    for place in range(3):
        assert {order[place] for order in orders} == set(names)


def test_ratios_are_taken_within_each_round() -> None:
    # The machine ran twice as fast in round 2: the rates double, the ratio
    # does not, and the table says 2.00x with no spread.
    results = {"put": {BASELINE: [100.0, 200.0], "fast": [200.0, 400.0]}}
    text = table(results)
    assert "| fast | 300 (200-400) | 2.00x (2.00-2.00) |" in text
    assert f"| {BASELINE} | 150 (100-200) | 1.00x (1.00-1.00) |" in text
