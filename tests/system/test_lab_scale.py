"""The scale-out study end to end with tiny settings (``selectorkv lab
--scale-out 1,2 --quick``, PUT only, one-second runs): the report's table
and plot, the raw runs, a redraw from them, and no cgroup left behind. The
figures of such short runs mean nothing and are not checked; they are what
``make scale`` is for. The quotas need root (this machine's CI runs as
root); without it the study runs with ``--quota none``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selectorkv.lab.harness.cgroups import ROOT

needs_wrk = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")


def our_cgroups() -> list[Path]:
    return [*ROOT.glob("selectorkv-scale-*"), *ROOT.glob("cpu/selectorkv-scale-*")]


@pytest.mark.study
@needs_wrk
@pytest.mark.timeout(300)
def test_quick_scale_study_writes_its_report_plot_and_runs(tmp_path: Path) -> None:
    out = tmp_path / "scale"
    quota = "auto" if os.geteuid() == 0 else "none"
    command = [
        sys.executable, "-m", "selectorkv", "lab", "--scale-out", "1,2", "--quick",
        "--quota", quota, "--out", str(out), "--workloads", "put,get", "--connections", "8",
        "--capacity-seconds", "1", "--run-seconds", "1",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-3000:]
    assert our_cgroups() == []  # removed at the end

    report = (out / "report-scale.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ") and "nodes" not in line]
    configurations = {tuple(cell.strip() for cell in row.split("|")[1:4]) for row in rows}
    assert len(rows) == 2 * 5  # each configuration under PUT and under GET
    assert configurations == {
        ("1", "-", "1/1"),
        ("2", "placement", "1/1"), ("2", "round-robin", "1/1"),
        ("2", "placement", "2/2"), ("2", "round-robin", "2/2"),
    }  # fmt: skip
    assert "| 1 | - | 1/1 |" in report and "| 1.00x | " in report  # one node against itself
    if quota == "auto":
        assert "limited to 0.333 of one CPU by a cgroup quota" in report
    # The GETs' clusters are new ones, given the same PUTs before them.
    assert "1 node(s) prefilled" in done.stderr and "2 node(s) prefilled" in done.stderr
    assert (out / "scale-put.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "scale-get.png").read_bytes().startswith(b"\x89PNG")
    assert "![put capacity by nodes](scale-put.png)" in report

    runs = json.loads((out / "runs.json").read_text())["runs"]
    assert {run["phase"] for run in runs} == {"capacity", "fixed"}
    assert all(run["answered"] > 0 for run in runs)

    redraw = subprocess.run(
        [sys.executable, "-m", "selectorkv", "lab", "--scale-out", "--report-only",
         "--out", str(out)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert redraw.returncode == 0, redraw.stderr
    assert (out / "report-scale.md").read_text() == report


def test_quota_without_root_is_a_clear_error(tmp_path: Path) -> None:
    """Not root (as root, the study is run as nobody with setpriv): the
    study refuses at once, exit 2, and says how to run without quotas."""
    command = [sys.executable, "-m", "selectorkv", "lab", "--scale-out", "1", "--out",
               str(tmp_path / "scale")]  # fmt: skip
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) runs a command without root")
        as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        probe = subprocess.run([*as_nobody, sys.executable, "-c", "pass"], capture_output=True)
        if probe.returncode != 0:  # a pyenv build under /root: its libpython is root's only
            pytest.skip(f"nobody cannot run {sys.executable}: {probe.stderr.decode()[-200:]}")
        command = [*as_nobody, *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "CPU quotas need root" in done.stderr and "--quota none" in done.stderr
    assert our_cgroups() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="cgroup quotas need root")
def test_a_quota_limits_a_process_and_every_group_goes_also_after_a_failure() -> None:
    from selectorkv.lab.harness.cgroups import Quotas
    from selectorkv.lab.harness.cpus import cpu_seconds

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with (
            pytest.raises(RuntimeError, match="a failure inside"),
            Quotas("selectorkv-scale-t") as q,
        ):
            group = q.limit(spinner.pid, 0.1)
            assert str(spinner.pid) in (group / "cgroup.procs").read_text().split()
            before = cpu_seconds(spinner.pid)
            deadline = before + 0.3
            while cpu_seconds(spinner.pid) < deadline:  # a tenth of a CPU: 3 s for 0.3 s
                pass
            assert q.throttled_seconds() > 0  # the quota held it back
            raise RuntimeError("a failure inside")
        assert our_cgroups() == []
        assert spinner.poll() is None  # moved back out, still running
    finally:
        spinner.kill()
        spinner.wait()
