"""The lab's instruments: the known-latency target, the generator's timer,
the calibration end to end, and wrk2 live where this machine has it.

The figures of a calibration are what ``selectorkv lab --calibrate`` is for;
these tests check what must hold whatever the machine's speed: the target
never answers before its service time and counts every answer it holds,
the timer never rings early, the calibration's pipeline writes its tables,
and wrk2's parsed spectrum agrees with the requests it says it made.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from selectorkv.lab.load import tools
from selectorkv.lab.load.due_timer import DueTimer
from selectorkv.lab.load.generator import generate
from selectorkv.lab.studies.calibration import KnownLatencyTargets
from tests.support import RawClient

SERVICE_MS = 5.0


@pytest.fixture
def target(tmp_path: Path) -> Iterator[KnownLatencyTargets]:
    with open(tmp_path / "target.log", "wb") as log:
        up = KnownLatencyTargets((SERVICE_MS,), log)
        yield up
        up.close()


def address(up: KnownLatencyTargets) -> tuple[str, int]:
    return ("127.0.0.1", up.ports[SERVICE_MS])


def test_the_target_answers_the_api_never_before_its_service_time(
    target: KnownLatencyTargets,
) -> None:
    client = RawClient(address(target))
    answers = [
        client.request("PUT", "/v0/entity?id=k", b"value"),
        client.request("GET", "/v0/entity?id=k"),
        client.request("DELETE", "/v0/entity?id=k"),
    ]
    assert [a.status for a in answers] == [201, 200, 202]
    for answer in answers:
        assert int(answer.headers[b"x-hold-us"]) >= SERVICE_MS * 1000
    holds = target.holds(SERVICE_MS)
    assert holds.get_total_count() == 3
    assert holds.get_min_value() >= SERVICE_MS * 1000
    assert target.holds(SERVICE_MS).get_total_count() == 0  # each read starts afresh


@pytest.mark.timing
def test_the_target_holds_concurrent_requests_side_by_side(
    target: KnownLatencyTargets,
) -> None:
    """A service time is a wait, not work: two clients' requests are held at
    once, so the second does not queue behind the first."""
    first, second = RawClient(address(target)), RawClient(address(target))
    first.send(b"GET /v0/entity?id=a HTTP/1.1\r\nHost: t\r\n\r\n")
    second.send(b"GET /v0/entity?id=b HTTP/1.1\r\nHost: t\r\n\r\n")
    holds = [int(c.read_reply().headers[b"x-hold-us"]) for c in (first, second)]
    assert all(hold >= SERVICE_MS * 1000 for hold in holds)
    # Queued behind the first, the second would have been held two service times.
    assert min(holds) < 2 * SERVICE_MS * 1000


def test_the_due_timer_rings_and_never_early() -> None:
    timer = DueTimer()
    selector = selectors.DefaultSelector()
    selector.register(timer, selectors.EVENT_READ)
    try:
        for delay in (0.0005, 0.002, 0.01):
            due = time.monotonic() + delay
            timer.arm(due)
            assert selector.select(timeout=10), "the timer did not ring"
            assert time.monotonic() >= due
            timer.clear()
        assert selector.select(timeout=0) == []  # cleared: quiet until armed again
    finally:
        selector.close()
        timer.close()


def test_a_separate_load_process_keeps_the_whole_schedule(target: KnownLatencyTargets) -> None:
    """``separate``: one process's share in a child, started once it has connected."""
    report = generate(target.url(SERVICE_MS), "put", 200, 4, 1, separate=True)
    assert report.status_counts == {201: 200}
    assert report.errors == 0
    assert report.histogram.get_min_value() >= SERVICE_MS * 1000


def test_a_run_shorter_than_wrk2s_warm_up_is_lengthened() -> None:
    wrk2 = tools.Wrk2("wrk2")
    command = wrk2._command("http://127.0.0.1:1/v0/entity", "put", 100, 8, 3)
    assert f"-d{3 + round(tools.WRK2_WARMUP)}s" in command
    assert "lengthened to 14 s" in wrk2.warmup_note(3)


def test_a_missing_tool_is_named_with_where_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.setenv("WRK2", "/nonexistent/wrk2")
    with pytest.raises(RuntimeError, match=r"wrk2 is not on this machine.*\$WRK2"):
        tools.choose("wrk2")
    assert isinstance(tools.choose("selectorkv"), tools.SelectorkvLoad)


@pytest.mark.timeout(120)
def test_quick_calibration_writes_the_bias_of_each_tool(tmp_path: Path) -> None:
    out = tmp_path / "calibration"
    command = [
        sys.executable, "-m", "selectorkv", "lab", "--calibrate", "--quick",
        "--tool", "selectorkv", "--run-seconds", "1", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    calibration = json.loads((out / "calibration.json").read_text())
    assert {run["tool"] for run in calibration["runs"]} == {"selectorkv"}
    assert {run["service_ms"] for run in calibration["runs"]} == {0.0, 1.0}
    for run in calibration["runs"]:
        for p in ("p50", "p99", "p99.9"):
            assert run["bias_ms"][p] == pytest.approx(run["measured_ms"][p] - run["truth_ms"][p])
        assert run["truth_ms"]["p50"] >= run["service_ms"]  # a hold is never shorter
        assert (out / f"{run['stem']}.hgrm").exists()
    report = (out / "calibration.md").read_text()
    for heading in ("## Method", "## The floor", "## Each tool's bias", "## Every point"):
        assert heading in report
    assert "**Least biased here: selectorkv.**" in report
    assert (out / "calibration-bias.png").read_bytes()[:4] == b"\x89PNG"


WRK2 = tools.find("wrk2")


@pytest.mark.timeout(60)
@pytest.mark.skipif(
    WRK2 is None, reason="wrk2 is not on PATH and $WRK2 names none (docs/lab.md: getting wrk2)"
)
def test_wrk2_live_its_spectrum_agrees_with_its_requests(target: KnownLatencyTargets) -> None:
    """The lab's wrk2 path against a live wrk2 (12 s: its warm-up is 11):
    the parsed spectrum, the served rate and the target's own count agree."""
    rate, connections, seconds = 400, 8, 1
    measured = tools.Wrk2().constant_rate(target.url(SERVICE_MS), "put", rate, connections, seconds)
    figures = measured.figures
    answered = target.holds(SERVICE_MS).get_total_count()
    # wrk2 counts the answers it read; the target, every answer it sent: at
    # the end, at most one per connection was still on its way.
    assert 0 <= answered - figures["requests"] <= connections
    assert figures["status_counts"] == {"2xx": figures["requests"]}  # 201 is a 2xx
    # The histogram holds the measured part only (after the warm-up): on
    # schedule, one request per 1/rate, and never more than all of them.
    counted = measured.histogram.get_total_count()
    assert 0 < counted <= figures["requests"]
    lat = figures["latency_ms"]
    assert SERVICE_MS <= lat["p50"] <= lat["p99"] <= lat["max"]
    assert measured.served_rate <= 1.01 * rate  # never ahead of its schedule
