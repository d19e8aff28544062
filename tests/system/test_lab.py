"""The lab: the study end to end with tiny settings, and reading the load
tools' outputs.

The end-to-end test runs ``selectorkv lab --quick`` for PUT with one-second
runs (about a minute on 2 cores): it checks that the pipeline produces the
report, the plots, and the three kinds of profile for both modes, with the
server's thread names in them. The figures of such short runs mean nothing
and are not checked; the figures are what ``make report`` is for.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from selectorkv.lab.harness.profile import PEER_WAIT, category, thread_profiles
from selectorkv.lab.load.tools import parse_wrk2
from selectorkv.lab.studies.node import held
from tests.support import ptrace_allowed

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.mark.parametrize("name", ["BlockingPeerCalls.call", "call", "_call"])
def test_a_thread_in_a_blocking_peer_call_waits_for_a_peer(name: str) -> None:
    """Innermost frame first: a socket read under the blocking peer call
    (``_call`` is how profiles saved by earlier builds name it)."""
    frames = [
        {"name": "readinto", "file": "/nowhere/socket.py", "line": 1},
        {"name": name, "file": "/src/selectorkv/cluster/replication.py", "line": 1},
    ]
    assert category(frames) == PEER_WAIT
    frames[1]["file"] = "/src/selectorkv/client.py"  # another module's "call": not a peer's wait
    assert category(frames) != PEER_WAIT


def test_wrk2_spectrum_becomes_a_histogram_again() -> None:
    measured = parse_wrk2((DATA / "wrk2-output.txt").read_text(), "wrk2", "get", 2000, 64, 10)
    figures = measured.figures
    assert measured.histogram.get_total_count() == 19940
    assert figures["latency_ms"]["p50"] == pytest.approx(1.371, rel=0.01)
    assert figures["latency_ms"]["p99"] == pytest.approx(3.021, rel=0.01)
    assert figures["latency_ms"]["max"] == pytest.approx(12.927, rel=0.01)
    assert figures["status_counts"] == {"2xx": 19900, "non-2xx": 50}
    assert figures["errors"] == 0
    assert figures["rate"] == pytest.approx(1995.22, rel=0.001)


@pytest.mark.study
@pytest.mark.timeout(300)
@pytest.mark.skipif(not ptrace_allowed(), reason="py-spy needs ptrace (root or ptrace_scope 0)")
def test_quick_study_writes_report_plots_and_profiles(tmp_path: Path) -> None:
    out = tmp_path / "report"
    command = [
        sys.executable,
        "-m",
        "selectorkv",
        "lab",
        "--quick",
        "--out",
        str(out),
        "--data",
        str(tmp_path / "base"),
        "--size",
        "1MiB",
        "--workloads",
        "put",
        "--capacity-seconds",
        "1",
        "--run-seconds",
        "1",
        "--profile-seconds",
        "1",
        "--ladder",
        "1.0",
        "--refine",
        "0",
        "--repeat",
        "2",
        "--tool",
        "selectorkv",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]

    report = (out / "report.md").read_text()
    for heading in (
        "## Machine, versions, tool",
        "## PUT",
        "## Observations",
        "## Compared with the seed",
    ):
        assert heading in report
    assert "selectorkv load" in report  # the tool that produced the figures
    # ... and its bias, from the study's own calibration, beside every latency table
    assert report.count("its bias on the known-latency target") >= 3
    assert (out / "calibration" / "calibration.md").exists()
    for png in ("throughput-p99-put.png", "queue-depth-put.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
        assert f"({png})" in report
    assert list(out.glob("latency-put-*.png"))

    study = json.loads((out / "runs.json").read_text())
    assert set(study["capacity"]["put"]) == {"sync", "async"}
    assert {mode: len(rounds) for mode, rounds in study["capacity_rounds"]["put"].items()} == {
        "sync": 2,
        "async": 2,
    }
    # The ladder in interleaved rounds: sync, async, then async, sync.
    ladder = [(run["round"], run["mode"]) for run in study["runs"] if run["phase"] == "ladder"]
    assert ladder == [(0, "sync"), (0, "async"), (1, "async"), (1, "sync")]
    assert "r2: [json](data/put-sync-ladder-" in report  # every round's data linked
    assert " (" in report.split("### Capacity (closed loop)")[1].split("###")[0]  # min-max
    assert study["machine"][0] in report  # recorded when measured, not when redrawn
    for run in study["runs"]:
        assert (out / f"{run['stem']}.hgrm").exists()
        assert (out / f"{run['stem']}.json").exists()
    # Group commit's batches, closed loop and at the constant rate.
    assert all(batches and min(batches) >= 1 for batches in study["capacity_batch"]["put"].values())
    batches = [run["commit_batch"] for run in study["runs"] if run["phase"] == "ladder"]
    assert any(batches) and all(batch >= 1 for batch in batches if batch is not None)
    # The stall timeline is kept, and drawn, for the mode that broke at the
    # one ladder rate, and for no other.
    for mode in ("sync", "async"):
        runs = [r for r in study["runs"] if r["phase"] == "ladder" and r["mode"] == mode]
        broke = not held([r["figures"] for r in runs], runs[0]["rate"], 10.0)
        kept = [(out / f"{r['stem']}.stalls.json").exists() for r in runs]
        assert kept == [broke] * len(runs), mode
        assert ((out / f"stalls-put-{mode}.png").exists()) == broke, mode
        if broke:
            timeline = json.loads((out / f"{runs[0]['stem']}.stalls.json").read_text())
            assert timeline["latency"] and timeline["bucket_s"] == 0.01
            assert f"(stalls-put-{mode}.png)" in report

    profiles = out / "profiles"
    for mode in ("sync", "async"):
        for kind in ("cpu", "wait", "gil"):
            assert (profiles / f"put-{mode}-{kind}.svg").stat().st_size > 0
        names = {p.name for p in thread_profiles(profiles / f"put-{mode}-wait.speedscope.json")}
        assert "SelectorThread-1" in names
        assert ("PayloadThread-1" in names) == (mode == "async")
        assert "SelectorThread-1" in (profiles / f"put-{mode}-cpu.svg").read_text()
        alloc = (profiles / f"put-{mode}-alloc-offline.html").read_text()
        assert "<html" in alloc.lower() and "cdn" not in alloc.lower()[:2000]
        assert "SelectorThread-1" in alloc  # memray's flame graph is split by thread
        assert study["alloc_sites"]["put"][mode], "memray found no allocation sites"
