"""Figures with their spread: medians, ranges, and when a difference is
noise (selectorkv/lab/harness/spread.py), and the order the lab measures in."""

from __future__ import annotations

import pytest

from selectorkv.lab.harness.spread import Agreement, Comparison, Spread
from selectorkv.lab.studies.node import held, turns


def test_a_spread_is_the_median_and_the_range() -> None:
    spread = Spread.of([3.0, 1.0, 2.0, 10.0])
    assert (spread.median, spread.low, spread.high, spread.count) == (2.5, 1.0, 10.0, 4)
    assert spread.format(".1f", " ms") == "2.5 ms (1.0-10.0)"
    assert Spread.of([7.0]).format(".1f") == "7.0"  # one round: no range to show


def test_a_spread_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        Spread.of([])


def test_overlapping_ranges_are_within_noise() -> None:
    a, b, c = Spread.of([1, 2, 3]), Spread.of([3, 4, 5]), Spread.of([4, 5, 6])
    assert a.overlaps(b) and b.overlaps(a)
    assert not a.overlaps(c)
    assert Comparison.of("a", a, "b", b, lower_is_better=True) == Comparison(None)
    assert Comparison.of("a", a, "c", c, lower_is_better=True) == Comparison("a")
    assert Comparison.of("a", a, "c", c, lower_is_better=False) == Comparison("c")
    assert Comparison("a").text() == "a ahead (the ranges do not overlap)"
    assert Comparison(None).text() == "within noise (the rounds' ranges overlap)"


def test_a_single_run_is_never_called_a_clear_difference() -> None:
    single = Comparison.of("a", Spread.of([1]), "b", Spread.of([9]), lower_is_better=True)
    assert single == Comparison("a", single_run=True)
    assert single.text() == "a ahead in a single run (no spread measured)"


def test_a_claim_agrees_differs_or_cannot_be_told_from_the_rounds() -> None:
    assert Agreement.of(Comparison("sync"), "sync") == Agreement(True)
    assert Agreement.of(Comparison("async"), "sync") == Agreement(False)
    assert Agreement.of(Comparison(None), "sync") == Agreement(None)
    assert Agreement.of(Comparison("sync", single_run=True), "sync") == Agreement(True, True)


def figures(served: float, p99: float, errors: int = 0) -> dict[str, object]:
    return {
        "target_rate": 1000.0,
        "requests": served,
        "elapsed_s": 1.0,
        "duration_s": 1.0,
        "status_counts": {"201": served},
        "errors": errors,
        "latency_ms": {"p99": p99},
    }


def test_a_rate_is_held_by_the_median_of_its_rounds() -> None:
    # One bad round of three does not break a rate; two do.
    assert held([figures(1000, 2), figures(1000, 50), figures(1000, 3)], 1000, 10)
    assert not held([figures(1000, 2), figures(1000, 50), figures(1000, 30)], 1000, 10)
    assert not held([figures(900, 2)], 1000, 10)  # under 97 % served
    assert not held([figures(1000, 2, errors=1)], 1000, 10)


def test_the_modes_take_turns_going_first() -> None:
    assert [turns(n) for n in range(3)] == [
        ("sync", "async"),
        ("async", "sync"),
        ("sync", "async"),
    ]
