"""A figure measured several times: its median and its min-max.

# design

This machine's speed drifts 10-40 % from minute to minute, so a single run
of A beside a single run of B says nothing about A against B. The lab and
the peer comparison measure each figure in several rounds and keep all of
them; what they report is the median with the range it came from, and a
difference between two figures is claimed only when their ranges do not
overlap. Ratios are taken within a round (both measured minutes apart at
most, under the same drift) and then summarised the same way.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        found = sorted(values)
        if not found:
            raise ValueError("a spread of no values")
        return cls(statistics.median(found), found[0], found[-1], len(found))

    def overlaps(self, other: Spread) -> bool:
        """The two ranges share a value: the difference of the medians is
        within the noise the rounds showed."""
        return self.low <= other.high and other.low <= self.high

    def format(self, spec: str = ",.0f", unit: str = "") -> str:
        """``median (low-high)``; one value alone when there was one round."""
        text = f"{self.median:{spec}}{unit}"
        if self.count > 1:
            text += f" ({self.low:{spec}}-{self.high:{spec}})"
        return text


@dataclass(frozen=True)
class Comparison:
    """Which of two figures measured in rounds is ahead: ``ahead`` names it,
    or is None when the rounds' ranges overlap (within noise). With a single
    round of either there is no range: the medians decide, and
    ``single_run`` says so."""

    ahead: str | None
    single_run: bool = False

    @classmethod
    def of(
        cls, name_a: str, a: Spread, name_b: str, b: Spread, lower_is_better: bool
    ) -> Comparison:
        better = a.median < b.median if lower_is_better else a.median > b.median
        winner = name_a if better else name_b
        if a.count < 2 or b.count < 2:
            return cls(winner, single_run=True)
        return cls(None) if a.overlaps(b) else cls(winner)

    @property
    def within_noise(self) -> bool:
        return self.ahead is None

    def text(self) -> str:
        """A sentence fragment such as "sync ahead (...)" or "within noise (...)"."""
        if self.ahead is None:
            return "within noise (the rounds' ranges overlap)"
        if self.single_run:
            return f"{self.ahead} ahead in a single run (no spread measured)"
        return f"{self.ahead} ahead (the ranges do not overlap)"


@dataclass(frozen=True)
class Agreement:
    """A claim that one side is ahead (the seed's finding, a prediction),
    against what was measured: ``agrees`` is None when the rounds cannot
    tell. Each report words it its own way."""

    agrees: bool | None
    single_run: bool = False

    @classmethod
    def of(cls, measured: Comparison, claimed: str) -> Agreement:
        if measured.within_noise:
            return cls(None)
        return cls(measured.ahead == claimed, measured.single_run)
