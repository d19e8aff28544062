"""What the lab derives from a run's raw readings, on made-up inputs: the
first rate a mode did not hold (by the median of its rounds), group
commit's mean batch between two scrapes of /metrics, the CPU a server's
threads used between two readings of /proc, and the latency spectrum's
footer in one unit."""

from __future__ import annotations

from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from selectorkv.lab.load.generator import spectrum_ms
from selectorkv.lab.studies.node import cpu_between, first_unheld, mean_batch


def figures(rate: float, p99: float) -> dict[str, Any]:
    """A constant-rate run of 10 s that served all of ``rate``."""
    return {
        "status_counts": {"201": int(rate * 10)},
        "elapsed_s": 10.0,
        "latency_ms": {"p99": p99},
        "errors": 0,
    }


def test_the_first_unheld_rate_goes_by_the_median_of_its_rounds() -> None:
    by_rate = {
        1000.0: [figures(1000, 2), figures(1000, 50), figures(1000, 3)],  # one bad round: held
        2000.0: [figures(2000, 20), figures(2000, 4), figures(2000, 30)],  # median 20: broken
        3000.0: [figures(3000, 90)] * 3,
    }
    assert first_unheld(by_rate, bound_ms=10) == 2000.0
    assert first_unheld({1000.0: by_rate[1000.0]}, bound_ms=10) is None


def test_the_mean_batch_is_the_writes_over_the_batches_between_two_scrapes() -> None:
    before = {"selectorkv_commit_batches": 100.0, "selectorkv_commit_writes": 400.0}
    after = {"selectorkv_commit_batches": 110.0, "selectorkv_commit_writes": 425.0}
    assert mean_batch(before, after) == 2.5
    assert mean_batch(before, before) is None  # no write in between


def test_cpu_between_counts_only_the_threads_that_lived_through_both_readings() -> None:
    before = {"11": [1.0, 0.5], "12": [0.2, 0.1]}
    after = {"11": [1.5, 0.75], "13": [9.0, 9.0]}  # 12 ended, 13 began
    assert cpu_between(before, after) == {"11": [0.5, 0.25]}


def test_the_spectrum_gives_its_standard_deviation_in_ms_like_its_mean() -> None:
    histogram = HdrHistogram(1, 60_000_000, 3)
    for latency_us in (1000, 2000, 3000):
        histogram.record_value(latency_us)
    footer = next(
        line for line in spectrum_ms(histogram).decode().splitlines() if "StdDeviation" in line
    )
    mean, stddev = (float(part.split("=")[1]) for part in footer.strip("#[]").split(","))
    assert mean == pytest.approx(2.0, abs=0.01)
    assert stddev == pytest.approx(0.816, abs=0.01)  # hdrh itself writes 816.497 here
