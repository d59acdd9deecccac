"""``braincls convert`` without labels and ``braincls predict`` as a user runs them (a subprocess
whose output is no terminal): every image converted and kept without a label, then scored, with
live progress as plain lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from dicom_builders import make_series
from fake_models import register_fake_version
from pydicom.uid import generate_uid


def _braincls(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "braincls", *args], capture_output=True, text=True, timeout=600
    )


def _brain(index: int) -> np.ndarray:
    y, x = np.mgrid[:48, :48]
    image = np.where((x - 24) ** 2 + (y - 24) ** 2 < 300, 800 + 10 * index, 20)
    return image.astype(np.uint16)


def test_convert_without_labels_then_predict_with_plain_progress(tmp_path: Path) -> None:
    source = tmp_path / "dicom"
    source.mkdir()
    series = make_series(
        series_uid=generate_uid(),
        frame_of_reference_uid=generate_uid(),
        pixels=_brain,
        rows=48,
        cols=48,
        count=6,
    )
    for index, ds in enumerate(series):
        ds.save_as(source / f"IM{index:04d}", enforce_file_format=True)
    (source / "README").write_text("not DICOM")
    root = tmp_path / "data"

    converted = _braincls("convert", str(source), "--data-root", str(root))
    assert converted.returncode == 0, converted.stderr
    assert "6 images from 2 series" in converted.stdout
    assert "0 labelled (none), 6 without a label; 1 files set aside" in converted.stdout
    manifest = pd.read_parquet(
        converted.stdout.split("images manifest: ")[1].splitlines()[0].strip()
    )
    assert len(manifest) == 6
    assert manifest["label"].isna().all()
    assert manifest["label_index"].tolist() == [-1] * 6
    # Progress, as plain lines: the output is not a terminal.
    assert any(line.startswith("convert: 7/7 files") for line in converted.stderr.splitlines())

    register_fake_version(root, image_size_px=32, seed=1, threshold=0.5)
    out = tmp_path / "out" / "predictions.csv"
    predicted = _braincls("predict", str(source), "--data-root", str(root), "--out", str(out))
    assert predicted.returncode == 0, predicted.stderr
    lines = predicted.stdout.splitlines()
    assert lines[0].startswith("6 of 7 images scored with model v0001 at threshold 0.500")
    assert "set aside: 1 not_dicom" in lines[0]
    assert lines[1].startswith("  series ...")
    assert f"predictions: {out}" in lines
    assert lines[-1].startswith("Research use only.")
    progress = predicted.stderr.splitlines()
    assert "convert: converting DICOM under dicom" in progress
    assert any(line.startswith("score: 7/7 images, done in") for line in progress)
    assert "\x1b[" not in predicted.stderr  # no terminal control codes in a log
    table = pd.read_csv(out)
    assert len(table) == 7
    assert table["p_tumour"].notna().sum() == 6
    assert sorted(table["slice_index"].dropna().astype(int)) == list(range(6))
    summary = pd.read_csv(out.with_name("predictions.summary.csv"))
    assert summary["level"].tolist() == ["series", "patient"]
