"""DICOM conversion labels slices from the segmentations beside them: DICOM SEG and RTSTRUCT,
co-registered series, the labels table as the override, unlabelled images kept or set aside."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dicom_builders import Contour, make_rtstruct, make_seg, make_series
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from braincls.config import ConvertConfig, LabelRuleConfig
from braincls.convert import convert_tree, load_labels

ROWS = COLS = 32
SPACING_MM = (0.8, 0.8)
#: The tumour: a 10 x 10 pixel square (64 mm²) on slices 3, 4 and 5 of 8; a 3 x 3 sliver
#: (5.76 mm²) on slice 6.
TUMOUR_SLICES = (3, 4, 5)
SLIVER_SLICE = 6
RULE = LabelRuleConfig(min_tumour_area_mm2=20.0, min_brain_area_mm2=200.0)
CONFIG = ConvertConfig(image_size_px=32, workers=1, skip_background_slices=False)


def _brain(index: int) -> np.ndarray:
    """A bright disc (the head) on a dark background, slightly different on every slice."""
    yy, xx = np.mgrid[0:ROWS, 0:COLS]
    disc = (yy - 16) ** 2 + (xx - 16) ** 2 <= 13**2
    return np.where(disc, 800 + 10 * index, 20).astype(np.uint16)


def _mask(series: list[Dataset]) -> np.ndarray:
    mask = np.zeros((len(series), ROWS, COLS, 1), np.uint8)
    for index in TUMOUR_SLICES:
        mask[index, 10:20, 10:20, 0] = 1
    mask[SLIVER_SLICE, 10:13, 10:13, 0] = 1
    return mask


def _write(folder: Path, series: list[Dataset]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index, ds in enumerate(series):
        ds.save_as(folder / f"{index:02d}.dcm", enforce_file_format=True)


@pytest.fixture
def patient(tmp_path: Path) -> tuple[Path, list[Dataset], list[Dataset], list[Dataset]]:
    """A patient with a T1 series (with a SEG over it), a co-registered FLAIR series of the same
    geometry, and a T2 series with another pixel spacing (the same frame of reference)."""
    frame = generate_uid()
    source = tmp_path / "dicom"
    t1 = make_series(
        series_uid=generate_uid(), frame_of_reference_uid=frame, pixels=_brain, rows=ROWS, cols=COLS
    )
    flair = make_series(
        series_uid=generate_uid(), frame_of_reference_uid=frame, pixels=_brain, rows=ROWS, cols=COLS
    )
    t2 = make_series(
        series_uid=generate_uid(),
        frame_of_reference_uid=frame,
        pixels=_brain,
        pixel_spacing_mm=(0.9, 0.9),
        rows=ROWS,
        cols=COLS,
    )
    for name, series in (("t1", t1), ("flair", flair), ("t2", t2)):
        _write(source / name, series)
    make_seg(source / "seg.dcm", t1, _mask(t1), labels=("Tumor",))
    return source, t1, flair, t2


def _by_series(manifest: pd.DataFrame, series: list[Dataset]) -> list[object]:
    """The label of each slice of ``series`` (in slice order), or None when not in the manifest."""
    labels = manifest.set_index("sop_instance_uid")["label"]
    return [
        labels.get(str(ds.SOPInstanceUID)) if str(ds.SOPInstanceUID) in labels.index else None
        for ds in series
    ]


def test_seg_labels_its_series_and_the_coregistered_one_not_another_geometry(
    patient: tuple[Path, list[Dataset], list[Dataset], list[Dataset]], tmp_path: Path
) -> None:
    source, t1, flair, t2 = patient
    result = convert_tree(source, tmp_path / "out", CONFIG, None, rule=RULE)
    manifest = pd.read_parquet(result.images_manifest)
    quarantine = pd.read_parquet(result.quarantine_table)

    expected = ["no", "no", "no", "yes", "yes", "yes", None, "no"]
    assert _by_series(manifest, t1) == expected
    assert _by_series(manifest, flair) == expected  # same frame of reference and geometry
    assert _by_series(manifest, t2) == [None] * 8  # other spacing: never guessed
    assert result.class_names == ("no", "yes")
    assert set(manifest["label_source"]) == {"SEG"}
    assert result.label_sources == {"SEG": 14}
    tumour = manifest[manifest["label"] == "yes"]
    assert tumour["tumour_area_mm2"].round(6).tolist() == [64.0] * 6
    assert manifest["label_index"].tolist() == [
        {"no": 0, "yes": 1}[label] for label in manifest["label"]
    ]

    reasons = quarantine.groupby("reason").size().to_dict()
    assert reasons == {
        "ambiguous_tumour_area": 2,  # the sliver on T1 and on FLAIR
        "geometry_mismatch": 1,  # T2, a row naming the SEG and why
        "segmentation": 1,  # the SEG object itself: read for labels, not an image
        "unlabelled": 8,  # T2's slices
    }
    mismatch = quarantine[quarantine["reason"] == "geometry_mismatch"].iloc[0]
    assert mismatch["relative_path"] == "seg.dcm"
    assert mismatch["series_instance_uid"] == str(t2[0].SeriesInstanceUID)
    [summary] = result.segmentations
    assert {key: summary[key] for key in ("labelled_yes", "labelled_no", "ambiguous")} == {
        "labelled_yes": 6,
        "labelled_no": 8,
        "ambiguous": 2,
    }


def test_the_labels_table_overrides_the_segmentation(
    patient: tuple[Path, list[Dataset], list[Dataset], list[Dataset]], tmp_path: Path
) -> None:
    source, t1, _, t2 = patient
    table = tmp_path / "labels.csv"
    table.write_text(
        "SeriesInstanceUID,SOPInstanceUID,label\n"
        f"{t2[0].SeriesInstanceUID},,yes\n"
        f",{t1[0].SOPInstanceUID},yes\n"
    )
    result = convert_tree(source, tmp_path / "out", CONFIG, load_labels(table), rule=RULE)
    manifest = pd.read_parquet(result.images_manifest)
    assert _by_series(manifest, t1) == ["yes", "no", "no", "yes", "yes", "yes", None, "no"]
    assert _by_series(manifest, t2) == ["yes"] * 8
    sources = manifest.set_index("sop_instance_uid")["label_source"]
    assert sources[str(t1[0].SOPInstanceUID)] == "table"
    assert sources[str(t1[1].SOPInstanceUID)] == "SEG"
    assert result.label_sources == {"SEG": 13, "table": 9}


def test_a_table_with_other_class_names_than_the_segmentations_is_refused(
    patient: tuple[Path, list[Dataset], list[Dataset], list[Dataset]], tmp_path: Path
) -> None:
    from braincls.convert import ConversionError

    source, t1, _, _ = patient
    table = tmp_path / "labels.csv"
    table.write_text(f"SeriesInstanceUID,label\n{t1[0].SeriesInstanceUID},tumor\n")
    with pytest.raises(ConversionError, match=r"classes \['tumor'\] differ from the classes"):
        convert_tree(source, tmp_path / "out", CONFIG, load_labels(table), rule=RULE)


def test_rtstruct_labels_its_slices(tmp_path: Path) -> None:
    source = tmp_path / "dicom"
    series = make_series(
        series_uid=generate_uid(),
        frame_of_reference_uid=generate_uid(),
        pixels=_brain,
        rows=ROWS,
        cols=COLS,
    )
    _write(source / "t1", series)

    def square(ds: Dataset) -> np.ndarray:
        """A 40 mm² square in patient coordinates on the plane of ``ds``."""
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        corners = [(x + 8, y + 8), (x + 16, y + 8), (x + 16, y + 13), (x + 8, y + 13)]
        return np.array([(cx, cy, z) for cx, cy in corners])

    contours = [Contour(square(series[index]), series[index]) for index in (2, 3)]
    make_rtstruct(source / "rtstruct.dcm", series, {1: ("GTV", contours)})
    result = convert_tree(source, tmp_path / "out", CONFIG, None, rule=RULE)
    manifest = pd.read_parquet(result.images_manifest)
    assert _by_series(manifest, series) == ["no", "no", "yes", "yes", "no", "no", "no", "no"]
    assert set(manifest["label_source"]) == {"RTSTRUCT"}


def test_without_labels_or_segmentations_images_are_kept_unlabelled_or_set_aside(
    tmp_path: Path,
) -> None:
    source = tmp_path / "dicom"
    series = make_series(
        series_uid=generate_uid(),
        frame_of_reference_uid=generate_uid(),
        pixels=_brain,
        rows=ROWS,
        cols=COLS,
    )
    _write(source, series)
    kept = convert_tree(source, tmp_path / "out", CONFIG, None, rule=RULE, keep_unlabelled=True)
    manifest = pd.read_parquet(kept.images_manifest)
    assert len(manifest) == kept.images == kept.unlabelled == 8
    assert manifest["label"].isna().all()
    assert manifest["label_index"].tolist() == [-1] * 8
    assert kept.class_names == ()

    dropped = convert_tree(source, tmp_path / "out", CONFIG, None, rule=RULE)
    assert dropped.images == 0
    assert dropped.unlabelled == 8
    assert dropped.series_cached == 1  # no pixel was converted twice
    quarantine = pd.read_parquet(dropped.quarantine_table)
    assert quarantine["reason"].tolist() == ["unlabelled"] * 8
    assert set(quarantine["detail"]) == {"no labels table was given and no segmentation covers it"}
