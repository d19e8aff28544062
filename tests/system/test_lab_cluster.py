"""The cluster study end to end with tiny settings, and the share of the
key space a stopped node takes with it.

The end-to-end test runs ``selectorkv lab --cluster 3 --quick`` for GET with
one-second runs and a 0.2 s peer timeout (about two minutes on 2 cores): it
checks that the pipeline produces the report, its plots, the raw data, the
hang's timeline and the profiles of the coordinating node, and that those
profiles show what the study is about: PayloadThreads blocked on a stopped
replica under blocking peer calls, and no thread waiting for one under
asynchronous calls. The figures of such short runs mean nothing and are not
checked; they are what ``make report-cluster`` is for.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from selectorkv.lab.harness.profile import PEER_WAIT, thread_profiles
from selectorkv.lab.studies.cluster import reachable_share
from tests.support import ptrace_allowed


def test_a_stopped_node_takes_its_third_of_the_keys_only_without_replicas() -> None:
    """Rendezvous placement spreads the keys evenly: with one of 3 nodes
    stopped, about a third of the key space has no replica at 1/1, and at
    2 of 3 every key still has two."""
    assert reachable_share(3, 1, 1, 2) == pytest.approx(2 / 3, abs=0.01)
    assert reachable_share(3, 3, 2, 2) == 1.0
    assert reachable_share(3, 3, 3, 2) == 0.0  # ack=3 needs every node
    assert reachable_share(3, 1, 1, None) == 1.0


@pytest.mark.study
@pytest.mark.timeout(420)
@pytest.mark.skipif(not ptrace_allowed(), reason="py-spy needs ptrace (root or ptrace_scope 0)")
def test_quick_cluster_study_writes_report_plots_data_and_profiles(tmp_path: Path) -> None:
    out = tmp_path / "report"
    command = [
        sys.executable, "-m", "selectorkv", "lab", "--cluster", "3", "--quick",
        "--out", str(out), "--data", str(tmp_path / "base"), "--size", "1MiB",
        "--workloads", "get", "--capacity-seconds", "1", "--run-seconds", "1",
        "--profile-seconds", "1", "--hang-seconds", "3", "--ladder", "1.0", "--refine", "0",
        "--repeat", "1", "--drain-seconds", "2", "--peer-timeout", "0.2",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]

    report = (out / "report-cluster.md").read_text()
    assert "its bias on the known-latency target" in report  # the tool's, measured first
    for heading in (
        "## Machine, versions, tool",
        "## Method",
        "## GET",
        "### The server setup for each style",
        "### GET, ack/from 2/3, healthy",
        "### GET, ack/from 1/1, last node stopped (SIGSTOP) for the whole run",
        "## A replica hangs in the middle of a run",
        "## Where the coordinating node's threads wait",
        "## Scale-out: one node against clusters asked ack=1&from=1",
        "## The course's claim, point by point",
        "## Observations",
    ):
        assert heading in report
    assert "round-robin" in report  # how the load was spread, stated
    pngs = [
        f"{kind}-get-{replication}-{scenario}.png"
        for kind in ("throughput-p99", "latency")
        for replication in ("2of3", "1of1")
        for scenario in ("healthy", "stopped")
    ] + ["latency-over-time-get.png"]
    for png in pngs:
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png
        assert f"({png})" in report

    study = json.loads((out / "runs.json").read_text())
    assert study["machine"][0] in report
    assert set(study["chosen_mode"]["get"]) == {"blocking", "async"}
    tried = {(run["calls"], run["mode"]) for run in study["runs"] if run["phase"] == "mode"}
    assert tried == {(c, m) for c in ("blocking", "async") for m in ("sync", "async", "async-w64")}
    assert study["reachable"]["1/1"] == pytest.approx(2 / 3, abs=0.01)
    for run in study["runs"]:
        if not run["skipped"]:
            assert (out / f"{run['stem']}.hgrm").exists()
            assert (out / f"{run['stem']}.json").exists()
    hangs = [run for run in study["runs"] if run["phase"] == "hang"]
    assert {run["calls"] for run in hangs} == {"blocking", "async"}
    for run in hangs:
        timeline = run["figures"]["timeline"]  # by 100 ms of due time, within the 3 s
        assert sum(bucket["answers"] for bucket in timeline) == run["figures"]["requests"] > 0
        assert all(0 <= bucket["t"] < 3 and round(bucket["t"] * 10, 6) % 1 == 0
                   for bucket in timeline)  # fmt: skip
    assert {run["calls"] for run in study["runs"] if run["phase"] == "scale"} == {
        "single",
        "cluster-3",
    }

    # Redrawn from the saved data alone, the report comes out the same.
    (out / "report-cluster.md").unlink()
    redraw = [*command[:3], "lab", "--cluster", "3", "--out", str(out), "--report-only"]
    assert subprocess.run(redraw, capture_output=True, timeout=120).returncode == 0
    assert (out / "report-cluster.md").read_text() == report

    profiles = out / "profiles"
    for calls in ("blocking", "async"):
        for kind in ("cpu", "wait"):
            assert (profiles / f"get-stopped-{calls}-{kind}.svg").stat().st_size > 0
        threads = thread_profiles(profiles / f"get-stopped-{calls}-wait.speedscope.json")
        assert "SelectorThread-1" in {p.name for p in threads}
        waiting = sum(p.categories[PEER_WAIT] for p in threads)
        if calls == "blocking":
            # The blocked threads, where the setup chosen puts the calls.
            assert waiting > 0, "no thread seen waiting for the stopped replica"
        else:
            assert waiting == 0
