"""``braincls evaluate`` on data of one class (the README's external-validation cases): the real
healthy-volunteer series labelled all "no", the real tumour patient labelled all "yes". The
command reports the metrics that exist, names those that do not, draws the plots that make
sense and exits 0."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from fake_models import register_fake_version


def _series_labels(series_dir: Path, label: str, out: Path) -> Path:
    first = pydicom.dcmread(sorted(series_dir.iterdir())[0], stop_before_pixels=True)
    out.write_text(f"SeriesInstanceUID,label\n{first.SeriesInstanceUID},{label}\n")
    return out


@pytest.mark.parametrize(
    ("series", "label", "defined", "undefined"),
    [
        # 176 slices: the heavy tier; the 24-slice tumour series runs in the default one.
        pytest.param(
            "healthy-volunteer-t1-mprage",
            "no",
            "specificity",
            "sensitivity",
            marks=pytest.mark.slow,
        ),
        ("tcia-brain-tumor-progression-pgbm-001", "yes", "sensitivity", "specificity"),
    ],
)
def test_evaluate_on_one_class_reports_what_exists_and_exits_0(
    real_dicom_dir: Path,
    tmp_path: Path,
    series: str,
    label: str,
    defined: str,
    undefined: str,
) -> None:
    root = tmp_path / "data"
    version = register_fake_version(root, image_size_px=32)
    labels = _series_labels(real_dicom_dir / series, label, tmp_path / "labels.csv")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "braincls",
            "evaluate",
            "--model",
            str(version.path),
            "--dicom",
            str(real_dicom_dir / series),
            "--labels",
            str(labels),
            "--data-root",
            str(root),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert f"{undefined} n/a" in done.stdout
    assert f"{defined} n/a" not in done.stdout
    assert "note: ROC AUC is undefined: the data hold a single class" in done.stdout
    report_dir = Path(done.stdout.strip().splitlines()[-1].removeprefix("report: ")).parent
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert metrics[undefined] is None
    assert metrics["roc_auc"] is None
    assert 0.0 <= metrics[defined] <= 1.0
    assert metrics["confidence_intervals"][undefined] == [None, None]
    lower, upper = metrics["confidence_intervals"][defined]
    assert 0.0 <= lower <= metrics[defined] <= upper <= 1.0
    # The plots that make sense for one class, and none of the curves that need two.
    drawn = {path.name for path in report_dir.glob("*.png")}
    assert {"confusion_matrix.png", "reliability.png"} <= drawn
    assert not {"roc.png", "pr.png"} & drawn
    markdown = (report_dir / "report.md").read_text()
    assert "holds one class only" in markdown
    assert "ROC and precision-recall curves need both" in markdown
    # Counts are whole numbers in the threshold section.
    assert ".000 true positives" not in markdown
