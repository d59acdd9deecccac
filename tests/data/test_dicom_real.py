"""The two real MR series in ../shared/data/dicom, converted end to end.

PGBM-001 (TCIA Brain-Tumor-Progression, 24 axial post-contrast T1 slices of 320x260) converts
whole. The healthy volunteer's sagittal MPRAGE (176 slices of 256x256, 1 mm) reaches beyond
the head at both ends: measured against the series' own intensity range, the 11 outermost
slices on each side (files 00001-00011 and 00166-00176, 0.0% to 4.0% foreground) are air
with at most a sliver of scalp and are set aside as background; the next slices inwards hold
5.4% foreground and more. 24 + 154 = 178 training images.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pandas as pd
import pytest

from braincls.common.tables import PHI_COLUMNS
from braincls.config import ConvertConfig
from braincls.convert import DICOM_MANIFEST_COLUMNS, ConversionResult, LabelTable, convert_tree

TUMOR_SERIES = "1.3.6.1.4.1.14519.5.2.1.4429.7055.197322826283777183783875680644"
VOLUNTEER_SERIES = "1.3.12.2.1107.5.2.32.35389.2010072308581490237297697.0.0.0"
LABELS = LabelTable(
    by_collection={"Brain-Tumor-Progression": "tumor", "healthy-volunteer-t1-mprage": "no_tumor"}
)
BACKGROUND_FILES = {f"{number:05d}.dcm" for number in (*range(1, 12), *range(166, 177))}


class Converted(NamedTuple):
    result: ConversionResult
    out: Path
    images: pd.DataFrame
    quarantine: pd.DataFrame


#: Both series are published, de-identified data (TCIA's PGBM-001, a public volunteer scan):
#: the user says so, and their Patient IDs stay.
PUBLIC = ConvertConfig(pseudonymize_patient_id=False)


@pytest.fixture(scope="module")
def converted(real_dicom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Converted:
    out = tmp_path_factory.mktemp("converted")
    result = convert_tree(real_dicom_dir, out, PUBLIC, LABELS, workers=2)
    return Converted(
        result,
        out,
        pd.read_parquet(result.images_manifest),
        pd.read_parquet(result.quarantine_table),
    )


def test_both_series_convert_fully_except_background_slices(converted: Converted) -> None:
    result, _, images, quarantine = converted
    assert (result.files, result.series, result.series_converted) == (200, 2, 2)
    assert (result.images, result.set_aside, result.unlabelled) == (178, 22, 0)
    assert images.groupby("series_instance_uid").size().to_dict() == {
        TUMOR_SERIES: 24,
        VOLUNTEER_SERIES: 154,
    }
    assert set(quarantine.reason) == {"background_slice"}
    assert {Path(path).name for path in quarantine.relative_path} == BACKGROUND_FILES
    assert set(quarantine.series_instance_uid) == {VOLUNTEER_SERIES}
    assert list(images.columns) == list(DICOM_MANIFEST_COLUMNS)


def test_manifest_values_from_the_real_headers(converted: Converted) -> None:
    images = converted.images
    tumor = images[images.series_instance_uid == TUMOR_SERIES]
    volunteer = images[images.series_instance_uid == VOLUNTEER_SERIES]
    assert set(tumor.collection) == {"Brain-Tumor-Progression"}  # from the CTP private tag
    assert set(volunteer.collection) == {"healthy-volunteer-t1-mprage"}  # from the folder
    assert set(tumor.patient_id) == set(tumor.group_id) == {"PGBM-001"}
    assert set(tumor.label) == {"tumor"} and set(volunteer.label) == {"no_tumor"}
    assert set(images.label_index) == {0, 1}  # ("no_tumor", "tumor")
    assert (set(tumor.rows), set(tumor.cols)) == ({320}, {260})
    assert (set(volunteer.rows), set(volunteer.cols)) == ({256}, {256})
    assert set(images.window_source) == {"window"}
    assert set(images.width) == set(images.height) == {256}
    # Slices are sorted by position: 6.5 mm apart in PGBM-001, 1 mm in the MPRAGE.
    np.testing.assert_allclose(np.diff(tumor.slice_position), 6.5, atol=1e-3)
    np.testing.assert_allclose(np.diff(volunteer.slice_position), 1.0, atol=1e-3)
    # 260 columns of 0.6875 mm beside 320 rows: 208 of 256 output columns hold the image and
    # 24 black columns pad each side.
    assert set(tumor.pixel_spacing_row_mm) == set(tumor.pixel_spacing_col_mm) == {0.6875}
    first = cv2.imread(str(tumor.source_path.iloc[0]), cv2.IMREAD_UNCHANGED)
    assert first is not None
    assert first.shape == (256, 256) and first.dtype == np.uint8
    assert not first[:, :24].any() and not first[:, 232:].any()
    assert first[:, 24].any() and first[:, 231].any()
    assert images.sample_id.is_unique and images.sha256.is_unique


def test_no_phi_from_the_real_headers(converted: Converted) -> None:
    images, out = converted.images, converted.out
    assert not PHI_COLUMNS.intersection(images.columns)
    text = images.astype(str).to_csv()
    # The volunteer's header holds PatientName 'Upgrade Test^Rorden' and a birth date.
    assert "Upgrade Test" not in text and "19701112" not in text
    for path in out.rglob("*.png"):
        assert b"Upgrade Test" not in path.read_bytes()


def test_rerun_converts_nothing(converted: Converted, real_dicom_dir: Path) -> None:
    again = convert_tree(real_dicom_dir, converted.out, PUBLIC, LABELS, workers=1)
    assert (again.series_converted, again.series_cached, again.images) == (0, 2, 178)
    assert again.images_manifest == converted.result.images_manifest
