"""The example reports in docs/examples/ are drawn again from their data,
as docs/lab.md tells a reader to, and come out the same: the report.md in
the archive is what the report code makes of the archive's data today."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from selectorkv.lab.reports import calibration_report, cluster_report, node_report

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def unpack(name: str, into: Path) -> Path:
    with tarfile.open(EXAMPLES / f"{name}.tar.xz") as archive:
        archive.extractall(into, filter="data")
    return into / name


@pytest.mark.parametrize(
    ("name", "report", "write"),
    [
        ("report", "report.md", node_report.write_report),
        ("report-cluster", "report-cluster.md", cluster_report.write_report),
        ("calibration", "calibration.md", calibration_report.write_report),
    ],
)
def test_an_example_report_is_drawn_again_the_same_from_its_data(
    tmp_path: Path, name: str, report: str, write: Callable[[Path], Path]
) -> None:
    folder = unpack(name, tmp_path)
    archived = (folder / report).read_text()
    plots = sorted(folder.glob("*.png"))
    (folder / report).unlink()
    for plot in plots:
        plot.unlink()
    assert write(folder) == folder / report
    assert (folder / report).read_text() == archived
    assert sorted(folder.glob("*.png")) == plots  # every plot drawn again


def test_the_examples_are_one_archive_each() -> None:
    assert sorted(path.name for path in EXAMPLES.iterdir()) == [
        "calibration.tar.xz",
        "report-cluster.tar.xz",
        "report.tar.xz",
    ]
