"""Slice labels from DICOM SEG and RTSTRUCT: exact areas, conventions and every bad input.

Everything is synthetic: MR slices built with pydicom's ``Dataset`` and ``set_pixel_data``, SEGs
written with highdicom from known masks, RTSTRUCTs written by hand with pydicom.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pandas as pd
import pydicom
import pytest
from dicom_builders import (
    PATIENT_ID,
    Contour,
    _ds_text,
    make_rtstruct,
    make_seg,
    make_series,
)
from pydicom.dataset import Dataset
from pydicom.uid import MRImageStorage, generate_uid

from braincls.config import LabelRuleConfig
from braincls.convert import segmentations as sg

# Rotated 30 degrees about the patient z axis and tilted 20 degrees: no axis is aligned.
_C, _S, _CB, _SB = (
    math.cos(math.pi / 6),
    math.sin(math.pi / 6),
    math.cos(math.pi / 9),
    math.sin(math.pi / 9),
)
OBLIQUE = (
    (round(_C, 6), round(_S, 6), 0.0),
    (round(-_S * _CB, 6), round(_C * _CB, 6), round(_SB, 6)),
)
RULE = LabelRuleConfig(min_tumour_area_mm2=50.0, min_brain_area_mm2=200.0)


# --------------------------------------------------------------------------------------------
# Builders


def manifest(
    datasets: Sequence[Dataset], brain_area_mm2: dict[int, float] | None = None
) -> pd.DataFrame:
    """Images-manifest rows for single-frame slices, listed in reverse slice order."""
    rows = []
    for index, ds in enumerate(datasets):
        rows.append(
            {
                "sample_id": str(ds.SOPInstanceUID),
                "patient_id": str(ds.PatientID),
                "study_instance_uid": str(ds.StudyInstanceUID),
                "series_instance_uid": str(ds.SeriesInstanceUID),
                "sop_instance_uid": str(ds.SOPInstanceUID),
                "frame_index": 0,
                "frame_of_reference_uid": str(ds.FrameOfReferenceUID),
                "image_position_patient": _ds_text(ds.ImagePositionPatient),
                "image_orientation_patient": _ds_text(ds.ImageOrientationPatient),
                "rows": int(ds.Rows),
                "cols": int(ds.Columns),
                "pixel_spacing_row_mm": float(ds.PixelSpacing[0]),
                "pixel_spacing_col_mm": float(ds.PixelSpacing[1]),
                "brain_area_mm2": (brain_area_mm2 or {}).get(index, 1000.0),
            }
        )
    return pd.DataFrame(rows[::-1]).astype(sg.INPUT_COLUMNS | {"study_instance_uid": "string"})


def geometry_of(ds: Dataset) -> sg.ImageGeometry:
    """The geometry the module reads from the manifest row of ``ds``."""
    geometry = sg.geometry_from_row(manifest([ds]).iloc[0].to_dict())
    assert geometry is not None
    return geometry


def rectangle(ds: Dataset, rows: tuple[int, int], cols: tuple[int, int]) -> npt.NDArray[np.float64]:
    """Patient coordinates of a rectangle through the centres of its corner pixels (inclusive)."""
    (r0, r1), (c0, c1) = rows, cols
    return geometry_of(ds).to_patient_coordinates([(c0, r0), (c1, r0), (c1, r1), (c0, r1)])


def labels_by_slice(result: sg.SegmentationLabels, series: Sequence[Dataset]) -> list[object]:
    """Each slice's label in slice order (None when unlabelled, 'set_aside:<reason>' for <NA>)."""
    by_sop = result.labels.set_index("sop_instance_uid")
    out: list[object] = []
    for ds in series:
        if ds.SOPInstanceUID not in by_sop.index:
            out.append(None)
            continue
        row = by_sop.loc[ds.SOPInstanceUID]
        out.append(row["label"] if not pd.isna(row["label"]) else f"set_aside:{row['rule_reason']}")
    return out


def areas_by_slice(result: sg.SegmentationLabels, series: Sequence[Dataset]) -> list[float | None]:
    by_sop = result.labels.set_index("sop_instance_uid")["tumour_area_mm2"]
    return [
        round(float(by_sop[ds.SOPInstanceUID]), 9) if ds.SOPInstanceUID in by_sop.index else None
        for ds in series
    ]


# --------------------------------------------------------------------------------------------
# Fixtures


@dataclass
class Study:
    root: Path
    series_a: list[Dataset]  # referenced by the SEG and the RTSTRUCT
    series_b: list[Dataset]  # co-registered with A: same Frame of Reference and geometry
    series_c: list[Dataset]  # same Frame of Reference, 0.9 mm pixels
    series_d: list[Dataset]  # same geometry and Frame of Reference, another patient
    brain_a: dict[int, float]
    brain_b: dict[int, float]
    seg_mask: npt.NDArray[np.bool_]
    seg_path: Path

    def images(self, *series: list[Dataset]) -> pd.DataFrame:
        brains = {id(self.series_a): self.brain_a, id(self.series_b): self.brain_b}
        return pd.concat([manifest(s, brains.get(id(s))) for s in series], ignore_index=True)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    root = tmp_path_factory.mktemp("segmentations")
    frame_of_reference = generate_uid()
    series_a = make_series(series_uid=generate_uid(), frame_of_reference_uid=frame_of_reference)
    series_b = make_series(series_uid=generate_uid(), frame_of_reference_uid=frame_of_reference)
    series_c = make_series(
        series_uid=generate_uid(),
        frame_of_reference_uid=frame_of_reference,
        pixel_spacing_mm=(0.9, 0.9),
    )
    series_d = make_series(
        series_uid=generate_uid(), frame_of_reference_uid=frame_of_reference, patient_id="PAT-2"
    )
    # Segment 1 'Enhancing tumor': a 10 x 10 block on slices 2-4 (64 mm² at 0.8 mm).
    # Segment 2 'Edema': 5 x 5 on slice 3 (16 mm², apart from segment 1), 10 x 10 on slice 4
    # overlapping segment 1 by 5 x 5 (union 175 pixels = 112 mm²), 3 x 3 on slice 5 (5.76 mm²).
    mask = np.zeros((8, 32, 32, 2), dtype=bool)
    mask[2:5, 5:15, 5:15, 0] = True
    mask[3, 20:25, 20:25, 1] = True
    mask[4, 10:20, 10:20, 1] = True
    mask[5, 10:13, 10:13, 1] = True
    (root / "seg").mkdir()
    seg_path = make_seg(root / "seg" / "tumour.dcm", series_a, mask)
    return Study(
        root=root,
        series_a=series_a,
        series_b=series_b,
        series_c=series_c,
        series_d=series_d,
        brain_a={7: 100.0},  # too little brain on the last slice
        brain_b={0: 100.0},
        seg_mask=mask,
        seg_path=seg_path,
    )


# --------------------------------------------------------------------------------------------
# Pure helpers: geometry and rasterisation


def test_contour_through_pixel_centres_fills_exactly_that_block_axial(study: Study) -> None:
    image = study.series_a[3]
    mask = sg.contour_to_mask(rectangle(image, rows=(4, 13), cols=(6, 9)), geometry_of(image))
    expected = np.zeros((32, 32), dtype=bool)
    expected[4:14, 6:10] = True  # 10 rows, 4 columns: a row/column swap would fail
    assert np.array_equal(mask, expected)


def test_contour_on_an_oblique_anisotropic_grid_keeps_rows_and_columns() -> None:
    series = make_series(
        series_uid=generate_uid(),
        frame_of_reference_uid=generate_uid(),
        first_position=(12.5, -40.25, 33.0),
        orientation=OBLIQUE,
        pixel_spacing_mm=(0.6, 0.9),
        rows=24,
        cols=40,
    )
    image = series[2]
    geometry = geometry_of(image)
    points = geometry.to_patient_coordinates(
        [(30, 2), (35, 2), (35, 5), (33, 5), (33, 20), (30, 20)]
    )
    # The points really are oblique: no coordinate axis is constant along the contour.
    assert np.ptp(points, axis=0).min() > 1.0
    expected = np.zeros((24, 40), dtype=bool)
    expected[2:6, 30:36] = True  # the foot of an L
    expected[2:21, 30:34] = True  # its stem
    assert np.array_equal(sg.contour_to_mask(points, geometry), expected)
    assert float(np.max(np.abs(geometry.plane_offsets_mm(points)))) < 1e-6
    # Column index follows the first orientation vector scaled by the *second* spacing value.
    assert np.allclose(
        geometry.to_pixel_coordinates(
            np.add(image.ImagePositionPatient, np.multiply(OBLIQUE[0], 0.9))
        ),
        [[1.0, 0.0]],
        atol=1e-5,  # the orientation is rounded to 6 decimals, as a DS value would be
    )
    assert np.allclose(
        geometry.to_pixel_coordinates(
            np.add(image.ImagePositionPatient, np.multiply(OBLIQUE[1], 0.6))
        ),
        [[0.0, 1.0]],
        atol=1e-5,
    )


def test_half_pixel_convention_of_the_fill(study: Study) -> None:
    image = study.series_a[0]
    geometry = geometry_of(image)
    on_edges = geometry.to_patient_coordinates([(-0.5, -0.5), (9.5, -0.5), (9.5, 9.5), (-0.5, 9.5)])
    mask = sg.contour_to_mask(on_edges, geometry)
    # OpenCV rounds .5 edges up: a contour along the outer pixel edges of the 10 x 10 block at the
    # origin fills rows and columns 0..10 (11 x 11), documented in contour_to_mask.
    assert int(mask.sum()) == 121
    assert np.array_equal(np.argwhere(mask).min(axis=0), [0, 0])
    assert np.array_equal(np.argwhere(mask).max(axis=0), [10, 10])
    # Just inside the edges: exactly the 10 x 10 block.
    inside = geometry.to_patient_coordinates(
        [(-0.45, -0.45), (9.45, -0.45), (9.45, 9.45), (-0.45, 9.45)]
    )
    assert int(sg.contour_to_mask(inside, geometry)[0:10, 0:10].sum()) == 100
    assert int(sg.contour_to_mask(inside, geometry).sum()) == 100


def test_nested_contours_are_holes_and_islands_overlaps_are_united() -> None:
    def block(rows: slice, cols: slice) -> npt.NDArray[np.bool_]:
        mask = np.zeros((20, 20), dtype=bool)
        mask[rows, cols] = True
        return mask

    outer, hole, island = (
        block(slice(0, 10), slice(0, 10)),
        block(slice(2, 8), slice(2, 8)),
        block(slice(4, 6), slice(4, 6)),
    )
    assert int(sg.combine_contour_masks([hole, outer]).sum()) == 100 - 36
    assert int(sg.combine_contour_masks([outer, hole, island]).sum()) == 100 - 36 + 4
    overlapping = block(slice(5, 15), slice(5, 15))
    assert int(sg.combine_contour_masks([outer, overlapping]).sum()) == 100 + 100 - 25
    assert (
        int(sg.combine_contour_masks([outer, outer.copy()]).sum()) == 100
    )  # duplicates count once
    with pytest.raises(ValueError, match="at least one mask"):
        sg.combine_contour_masks([])


def test_geometry_matches_means_same_positions_orientation_spacing_and_size(study: Study) -> None:
    a = manifest(study.series_a)
    assert sg.geometry_matches(a, manifest(study.series_b))
    assert (
        sg.geometry_difference(a, manifest(study.series_c))
        == "pixel spacing 0.8x0.8 mm against 0.9x0.9 mm"
    )
    assert sg.geometry_difference(a, manifest(study.series_b[:7])) == "8 images against 7"
    shifted = manifest(study.series_b)
    shifted.loc[shifted.index[0], "image_position_patient"] = (
        "-100\\-80\\24.02"  # slice 7 + 0.02 mm
    )
    assert sg.geometry_difference(a, shifted) == (
        "1 of 8 image positions have no single partner within 0.01 mm (1 of the other series' positions)"
    )
    within = manifest(study.series_b)
    within.loc[within.index[0], "image_position_patient"] = "-100\\-80\\24.005"
    assert sg.geometry_matches(a, within)
    tilted = manifest(study.series_b)
    tilted["image_orientation_patient"] = "1\\0\\0\\0\\0.99999\\0.004472"
    assert sg.geometry_difference(a, tilted) is not None
    assert sg.geometry_difference(a, tilted).startswith("orientation differs by 0.004472")  # type: ignore[union-attr]
    bigger = manifest(study.series_b)
    bigger["rows"] = 33
    assert sg.geometry_difference(a, bigger) == "32x32 pixels against 33x32"


def test_malformed_manifest_geometry_is_refused_with_the_image_named(study: Study) -> None:
    images = manifest(study.series_a)
    images.loc[images.index[0], "image_position_patient"] = "-100,-80,24"
    with pytest.raises(
        sg.ManifestError,
        match=r"image_position_patient: expected 3 backslash-separated decimals, got '-100,-80,24'",
    ):
        sg.labels_from_segmentations([study.seg_path], images, RULE)
    with pytest.raises(sg.ManifestError, match=r"lacks the columns \['brain_area_mm2'\]"):
        sg.labels_from_segmentations([study.seg_path], images.drop(columns="brain_area_mm2"), RULE)


# --------------------------------------------------------------------------------------------
# SEG


def test_seg_fixture_omits_empty_frames(study: Study) -> None:
    seg = hd.seg.segread(study.seg_path)
    assert int(seg.NumberOfFrames) == 6  # 3 frames of segment 1 and 3 of segment 2, of 16
    assert len(seg.get_source_image_uids()) == 8  # every slice is still referenced


def test_seg_labels_every_slice_of_its_series_with_exact_areas(study: Study) -> None:
    result = sg.labels_from_segmentations(
        [study.seg_path],
        study.images(study.series_a),
        RULE.model_copy(update={"propagate_to_coregistered": False}),
        root=study.root,
    )
    assert areas_by_slice(result, study.series_a) == [0.0, 0.0, 64.0, 80.0, 112.0, 5.76, 0.0, 0.0]
    assert labels_by_slice(result, study.series_a) == [
        "no",
        "no",
        "yes",
        "yes",
        "yes",
        "set_aside:ambiguous_tumour_area",
        "no",
        "set_aside:no_brain",
    ]
    labels = result.labels
    assert dict(labels.dtypes.astype(str)) == {
        "sample_id": "string",
        "sop_instance_uid": "string",
        "frame_index": "int64",
        "series_instance_uid": "string",
        "label": "string",
        "rule_reason": "string",
        "tumour_area_mm2": "float64",
        "label_source": "string",
        "segmentation_sop_instance_uid": "string",
        "propagated_from_series": "string",
    }
    assert set(labels["label_source"]) == {"SEG"}
    assert set(labels["segmentation_sop_instance_uid"]) == {
        hd.seg.segread(study.seg_path).SOPInstanceUID
    }
    assert labels["propagated_from_series"].isna().all()
    assert result.set_aside.empty
    summary = result.summary.iloc[0].to_dict()
    assert summary == {
        "segmentation_path": "seg/tumour.dcm",
        "segmentation_sop_instance_uid": labels["segmentation_sop_instance_uid"].iloc[0],
        "label_source": "SEG",
        "status": "used",
        "labelled_yes": 3,
        "labelled_no": 3,
        "ambiguous": 1,
        "no_brain": 1,
        "propagated": 0,
        "superseded": 0,
        "withheld": 0,
        "unmatched": 0,
    }


@pytest.mark.parametrize(
    ("segments", "expected_areas", "expected_labels"),
    [
        (
            ("enhancing TUMOR",),
            [0.0, 0.0, 64.0, 64.0, 64.0, 0.0, 0.0, 0.0],
            ["no", "no", "yes", "yes", "yes", "no", "no", "set_aside:no_brain"],
        ),
        (
            ("2",),
            [0.0, 0.0, 0.0, 16.0, 64.0, 5.76, 0.0, 0.0],
            [
                "no",
                "no",
                "no",
                "set_aside:ambiguous_tumour_area",
                "yes",
                "set_aside:ambiguous_tumour_area",
                "no",
                "set_aside:no_brain",
            ],
        ),
    ],
)
def test_seg_segment_selection_by_label_or_number(
    study: Study, segments: tuple[str, ...], expected_areas: list[float], expected_labels: list[str]
) -> None:
    rule = RULE.model_copy(update={"segments": segments, "propagate_to_coregistered": False})
    result = sg.labels_from_segmentations([study.seg_path], study.images(study.series_a), rule)
    assert areas_by_slice(result, study.series_a) == expected_areas
    assert labels_by_slice(result, study.series_a) == expected_labels


def test_seg_selecting_no_segment_is_set_aside_not_labelled_no(study: Study) -> None:
    rule = RULE.model_copy(update={"segments": ("Necrosis",)})
    result = sg.labels_from_segmentations(
        [study.seg_path], study.images(study.series_a), rule, root=study.root
    )
    assert result.labels.empty
    assert result.set_aside[["segmentation_path", "reason", "detail"]].to_dict("records") == [
        {
            "segmentation_path": "seg/tumour.dcm",
            "reason": "no_selected_segments",
            "detail": "the rule selects segments ['Necrosis']; this SEG has 1 'Enhancing tumor', 2 'Edema'",
        }
    ]
    assert result.summary["status"].tolist() == ["set_aside"]


def test_fractional_seg_counts_pixels_at_half_the_maximum(study: Study, tmp_path: Path) -> None:
    probabilities = np.zeros((8, 32, 32, 1), dtype=np.float32)
    probabilities[2, 0:10, 0:10, 0] = 0.6  # counts: 64 mm²
    probabilities[3, 0:10, 0:10, 0] = 0.4  # below half: nothing segmented
    probabilities[3, 20:22, 20:22, 0] = 1.0  # 4 pixels: 2.56 mm²
    path = make_seg(
        tmp_path / "fractional.dcm",
        study.series_a,
        probabilities,
        labels=("Tumor",),
        segmentation_type="FRACTIONAL",
    )
    assert hd.seg.segread(path).SegmentationType == "FRACTIONAL"
    rule = RULE.model_copy(update={"propagate_to_coregistered": False})
    result = sg.labels_from_segmentations([path], study.images(study.series_a), rule)
    assert areas_by_slice(result, study.series_a) == [0.0, 0.0, 64.0, 2.56, 0.0, 0.0, 0.0, 0.0]


def test_labelmap_seg_is_read_per_segment(study: Study, tmp_path: Path) -> None:
    label_map = np.zeros((8, 32, 32), dtype=np.uint8)
    label_map[1, 0:10, 0:10] = 1
    label_map[1, 20:25, 20:25] = 2
    label_map[6, 0:5, 0:5] = 2
    path = make_seg(
        tmp_path / "labelmap.dcm", study.series_a, label_map, segmentation_type="LABELMAP"
    )
    rule = RULE.model_copy(update={"segments": ("Edema",), "propagate_to_coregistered": False})
    result = sg.labels_from_segmentations([path], study.images(study.series_a), rule)
    assert areas_by_slice(result, study.series_a) == [0.0, 16.0, 0.0, 0.0, 0.0, 0.0, 16.0, 0.0]


def test_seg_on_a_multi_frame_source_reads_source_frames(study: Study, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enhanced = hd.legacy.LegacyConvertedEnhancedMRImage(
            legacy_datasets=study.series_a,
            series_instance_uid=generate_uid(),
            series_number=2,
            sop_instance_uid=generate_uid(),
            instance_number=1,
        )
    path = make_seg(tmp_path / "multiframe.dcm", [enhanced], study.seg_mask)
    rows = []
    for index, frame in enumerate(enhanced.PerFrameFunctionalGroupsSequence):
        rows.append(
            {
                "sample_id": f"{enhanced.SOPInstanceUID}#{index}",
                "patient_id": PATIENT_ID,
                "series_instance_uid": str(enhanced.SeriesInstanceUID),
                "sop_instance_uid": str(enhanced.SOPInstanceUID),
                "frame_index": index,
                "frame_of_reference_uid": str(enhanced.FrameOfReferenceUID),
                "image_position_patient": _ds_text(
                    frame.PlanePositionSequence[0].ImagePositionPatient
                ),
                "image_orientation_patient": "1\\0\\0\\0\\1\\0",
                "rows": 32,
                "cols": 32,
                "pixel_spacing_row_mm": 0.8,
                "pixel_spacing_col_mm": 0.8,
                "brain_area_mm2": 1000.0,
            }
        )
    images = pd.DataFrame(rows).astype(sg.INPUT_COLUMNS)
    result = sg.labels_from_segmentations([path], images, RULE)
    by_frame = result.labels.set_index("frame_index")
    assert by_frame["tumour_area_mm2"].round(9).tolist() == [
        0.0,
        0.0,
        64.0,
        80.0,
        112.0,
        5.76,
        0.0,
        0.0,
    ]
    assert by_frame["sample_id"].tolist() == [f"{enhanced.SOPInstanceUID}#{i}" for i in range(8)]


def test_seg_labels_propagate_only_to_series_with_identical_geometry(study: Study) -> None:
    images = study.images(study.series_a, study.series_b, study.series_c, study.series_d)
    result = sg.labels_from_segmentations([study.seg_path], images, RULE, root=study.root)
    a_uid = str(study.series_a[0].SeriesInstanceUID)
    assert labels_by_slice(result, study.series_b) == [
        "set_aside:no_brain",
        "no",
        "yes",
        "yes",
        "yes",
        "set_aside:ambiguous_tumour_area",
        "no",
        "no",
    ]  # series B's own brain areas: slice 0 has too little brain, slice 7 enough
    assert areas_by_slice(result, study.series_b) == [0.0, 0.0, 64.0, 80.0, 112.0, 5.76, 0.0, 0.0]
    b_rows = result.labels[
        result.labels["series_instance_uid"] == str(study.series_b[0].SeriesInstanceUID)
    ]
    assert set(b_rows["propagated_from_series"]) == {a_uid}
    assert labels_by_slice(result, study.series_c) == [None] * 8
    assert labels_by_slice(result, study.series_d) == [None] * 8  # another patient
    assert result.set_aside[["reason", "detail", "series_instance_uid"]].to_dict("records") == [
        {
            "reason": "geometry_mismatch",
            "detail": f"same patient and Frame of Reference as series {a_uid}, not labelled from it: "
            "pixel spacing 0.8x0.8 mm against 0.9x0.9 mm",
            "series_instance_uid": str(study.series_c[0].SeriesInstanceUID),
        }
    ]
    assert result.summary[
        ["labelled_yes", "labelled_no", "ambiguous", "no_brain", "propagated"]
    ].to_dict("records") == [
        {"labelled_yes": 6, "labelled_no": 6, "ambiguous": 2, "no_brain": 2, "propagated": 8}
    ]


def test_series_missing_a_background_slice_matches_with_series_geometry(study: Study) -> None:
    images = study.images(study.series_a, study.series_b)
    b_last = str(study.series_b[7].SOPInstanceUID)
    converted = images[images["sop_instance_uid"] != b_last]  # the converter set it aside
    without = sg.labels_from_segmentations([study.seg_path], converted, RULE)
    assert labels_by_slice(without, study.series_b) == [None] * 8
    assert without.set_aside["detail"].str.endswith("8 images against 7").tolist() == [True]
    geometry = images[images["sop_instance_uid"] == b_last][list(sg.GEOMETRY_COLUMNS)]
    with_geometry = sg.labels_from_segmentations(
        [study.seg_path], converted, RULE, series_geometry=geometry
    )
    assert labels_by_slice(with_geometry, study.series_b)[:7] == [
        "set_aside:no_brain",
        "no",
        "yes",
        "yes",
        "yes",
        "set_aside:ambiguous_tumour_area",
        "no",
    ]
    assert labels_by_slice(with_geometry, study.series_b)[7] is None
    assert with_geometry.set_aside.empty


# --------------------------------------------------------------------------------------------
# RTSTRUCT


def test_rtstruct_contours_land_on_the_right_slices_with_and_without_image_references(
    study: Study, tmp_path: Path
) -> None:
    series = study.series_a
    path = make_rtstruct(
        tmp_path / "rt.dcm",
        series,
        {
            1: (
                "GTV",
                [
                    Contour(rectangle(series[3], rows=(4, 13), cols=(6, 9)), series[3]),  # 40 px
                    Contour(
                        rectangle(series[5], rows=(20, 29), cols=(0, 9)), None
                    ),  # located by plane
                ],
            ),
            2: ("Brain", [Contour(rectangle(series[0], rows=(0, 31), cols=(0, 31)), series[0])]),
        },
    )
    rule = RULE.model_copy(
        update={
            "segments": ("gtv",),
            "min_tumour_area_mm2": 20.0,
            "propagate_to_coregistered": False,
        }
    )
    result = sg.labels_from_segmentations([path], study.images(series), rule)
    assert areas_by_slice(result, series) == [0.0, 0.0, 0.0, 25.6, 0.0, 64.0, 0.0, 0.0]
    assert labels_by_slice(result, series) == [
        "no",
        "no",
        "no",
        "yes",
        "no",
        "yes",
        "no",
        "set_aside:no_brain",
    ]
    assert set(result.labels["label_source"]) == {"RTSTRUCT"}
    assert result.set_aside.empty
    every = sg.labels_from_segmentations(
        [path], study.images(series), rule.model_copy(update={"segments": ()})
    )
    assert areas_by_slice(every, series)[0] == round(
        32 * 32 * 0.64, 9
    )  # the 'Brain' ROI counts too


def test_rtstruct_on_an_oblique_series_finds_its_slice_by_plane(tmp_path: Path) -> None:
    series = make_series(
        series_uid=generate_uid(),
        frame_of_reference_uid=generate_uid(),
        first_position=(12.5, -40.25, 33.0),
        orientation=OBLIQUE,
        pixel_spacing_mm=(0.6, 0.9),
        rows=24,
        cols=40,
        gap_mm=3.0,
    )
    geometry = geometry_of(series[4])
    points = geometry.to_patient_coordinates(
        [(30, 2), (35, 2), (35, 5), (33, 5), (33, 20), (30, 20)]
    )
    path = make_rtstruct(tmp_path / "oblique.dcm", series, {7: ("tumour", [Contour(points, None)])})
    result = sg.labels_from_segmentations(
        [path], manifest(series), LabelRuleConfig(min_tumour_area_mm2=10.0, min_brain_area_mm2=0.0)
    )
    area = (6 * 4 + 4 * 15) * 0.6 * 0.9  # the L of 84 pixels
    assert areas_by_slice(result, series) == [0.0, 0.0, 0.0, 0.0, round(area, 9), 0.0, 0.0, 0.0]


def test_rtstruct_holes_and_several_rois_on_one_slice(study: Study, tmp_path: Path) -> None:
    series = study.series_a
    path = make_rtstruct(
        tmp_path / "holes.dcm",
        series,
        {
            1: (
                "GTV",
                [
                    Contour(rectangle(series[2], rows=(0, 9), cols=(0, 9)), series[2]),
                    Contour(
                        rectangle(series[2], rows=(3, 6), cols=(3, 6)), series[2]
                    ),  # hole: 16 px
                ],
            ),
            2: ("GTV-2", [Contour(rectangle(series[2], rows=(5, 14), cols=(5, 14)), series[2])]),
        },
    )
    result = sg.labels_from_segmentations(
        [path], study.images(series), RULE.model_copy(update={"propagate_to_coregistered": False})
    )
    # (100 - 16) + 100 - overlap of ROI 2 with the ring of ROI 1 (rows/cols 5..9 minus hole 5..6: 25 - 4)
    assert areas_by_slice(result, series)[2] == round((84 + 100 - 21) * 0.64, 9)


def test_rtstruct_contours_off_the_grid_withhold_their_slices(study: Study, tmp_path: Path) -> None:
    series = study.series_a
    up_1_mm = np.array([0.0, 0.0, 1.0])
    off_plane = rectangle(series[2], rows=(0, 9), cols=(0, 9)) + up_1_mm  # 1 mm above slice 2
    outside = rectangle(series[4], rows=(0, 9), cols=(25, 45))  # 2 of 4 corners beyond column 31
    outside[0] += [30.0, 0.0, 0.0]  # and a third: 3 of 4 points outside
    between = rectangle(series[5], rows=(0, 9), cols=(0, 9)) + up_1_mm  # halfway to slice 6
    path = make_rtstruct(
        tmp_path / "off.dcm",
        series,
        {
            1: (
                "GTV",
                [
                    Contour(off_plane, series[2]),
                    Contour(outside, series[4]),
                    Contour(between, None),
                    Contour(rectangle(series[1], rows=(0, 9), cols=(0, 9)), series[1]),
                ],
            )
        },
    )
    result = sg.labels_from_segmentations(
        [path],
        study.images(series),
        RULE.model_copy(update={"propagate_to_coregistered": False}),
        root=tmp_path,
    )
    assert labels_by_slice(result, series) == [
        "no",
        "yes",
        None,
        "no",
        None,
        None,
        None,
        "set_aside:no_brain",
    ]
    details = result.set_aside["detail"].tolist()
    assert result.set_aside["reason"].tolist() == ["contour_off_grid"] * 3
    assert details[0] == (
        f"ROI 1 'GTV' contour 1 on image {series[2].SOPInstanceUID} frame 0: points lie up to 1 mm "
        "off the plane (tolerance 0.5 mm); image withheld"
    )
    assert details[1] == (
        f"ROI 1 'GTV' contour 2 on image {series[4].SOPInstanceUID} frame 0: 3 of 4 points lie "
        "outside the image; image withheld"
    )
    assert details[2] == (
        "ROI 1 'GTV' contour 3: no image plane within half a slice (1 mm); nearest 1 mm; "
        "2 neighbouring images withheld"
    )
    assert result.set_aside["segmentation_path"].unique().tolist() == ["off.dcm"]
    assert result.summary["withheld"].tolist() == [4]


def test_rtstruct_unsupported_contour_type_and_frame_of_reference_mismatch(
    study: Study, tmp_path: Path
) -> None:
    series = study.series_a
    point = make_rtstruct(
        tmp_path / "point.dcm",
        series,
        {
            1: (
                "GTV",
                [Contour(rectangle(series[3], rows=(4, 4), cols=(4, 4))[:1], series[3], "POINT")],
            )
        },
    )
    wrong_frame = make_rtstruct(
        tmp_path / "frame.dcm",
        series,
        {1: ("GTV", [Contour(rectangle(series[3], rows=(0, 9), cols=(0, 9)), series[3])])},
        frame_of_reference_uid="1.2.3.4",
    )
    rule = RULE.model_copy(update={"propagate_to_coregistered": False})
    result = sg.labels_from_segmentations(
        [point, wrong_frame], study.images(series), rule, root=tmp_path
    )
    assert labels_by_slice(result, series)[3] is None
    assert labels_by_slice(result, series)[2] == "no"
    assert result.set_aside[["segmentation_path", "reason"]].to_dict("records") == [
        {"segmentation_path": "point.dcm", "reason": "unsupported_contour_type"},
        {"segmentation_path": "frame.dcm", "reason": "geometry_mismatch"},
    ]
    assert result.set_aside["detail"].iloc[1] == (
        f"ROI (3006,0024) Frame of Reference ['1.2.3.4'] is not the images' ['{series[0].FrameOfReferenceUID}']"
    )
    assert result.summary["status"].tolist() == ["used", "set_aside"]


# --------------------------------------------------------------------------------------------
# Two segmentations on one image


def test_conflicts_the_larger_area_wins_and_ties_go_to_the_label_drawn_on_the_image(
    study: Study, tmp_path: Path
) -> None:
    a, b = study.series_a, study.series_b
    rt_a = make_rtstruct(
        tmp_path / "rt_a.dcm",
        a,
        {
            1: (
                "GTV",
                [
                    Contour(rectangle(a[3], rows=(4, 13), cols=(6, 9)), a[3]),  # 25.6 < SEG's 80
                    Contour(rectangle(a[5], rows=(20, 29), cols=(0, 9)), a[5]),  # 64 > SEG's 5.76
                ],
            )
        },
    )
    rt_b = make_rtstruct(  # one pixel on B's slice 2, nothing elsewhere on B
        tmp_path / "rt_b.dcm",
        b,
        {1: ("GTV", [Contour(rectangle(b[2], rows=(0, 0), cols=(0, 0)), b[2])])},
    )
    result = sg.labels_from_segmentations(
        [study.seg_path, rt_a, rt_b], study.images(a, b), RULE, root=tmp_path
    )
    seg_uid = str(hd.seg.segread(study.seg_path).SOPInstanceUID)
    rt_a_uid, rt_b_uid = (str(pydicom.dcmread(p).SOPInstanceUID) for p in (rt_a, rt_b))
    by_sop = result.labels.set_index("sop_instance_uid")
    winners = [by_sop.loc[ds.SOPInstanceUID, "segmentation_sop_instance_uid"] for ds in (*a, *b)]
    assert winners == [seg_uid] * 5 + [rt_a_uid] + [seg_uid] * 2 + (
        [rt_b_uid] * 2 + [seg_uid] * 3 + [rt_a_uid] + [rt_b_uid] * 2
    )
    assert areas_by_slice(result, a) == [0.0, 0.0, 64.0, 80.0, 112.0, 64.0, 0.0, 0.0]
    assert areas_by_slice(result, b) == [0.0, 0.0, 64.0, 80.0, 112.0, 64.0, 0.0, 0.0]
    # B2: the SEG's 64 mm² propagated from A beats RT_B's 0.64 mm² drawn on B itself.
    assert by_sop.loc[b[2].SOPInstanceUID, "propagated_from_series"] == a[0].SeriesInstanceUID
    # B0: every candidate says 0 mm²; the label drawn on B wins the tie (B0 has too little brain).
    b0 = by_sop.loc[b[0].SOPInstanceUID]
    assert (b0["label_source"], b0["rule_reason"]) == ("RTSTRUCT", "no_brain")
    assert pd.isna(b0["propagated_from_series"])
    assert len(result.labels) == 16
    summary = result.summary.set_index("segmentation_path")
    # The SEG lies outside the root: only its file name is shown.
    assert summary["superseded"].to_dict() == {"tumour.dcm": 6, "rt_a.dcm": 14, "rt_b.dcm": 12}
    assert summary["status"].tolist() == ["used", "used", "used"]


# --------------------------------------------------------------------------------------------
# Bad input: set aside, never guessed, never a crash


def test_bad_segmentations_are_set_aside_and_the_good_one_still_labels(
    study: Study, tmp_path: Path
) -> None:
    root = tmp_path
    (root / "garbage.dcm").write_bytes(b"this is not DICOM at all" * 10)
    elsewhere = make_series(series_uid=generate_uid(), frame_of_reference_uid=generate_uid())
    not_present = make_seg(root / "elsewhere.dcm", elsewhere, study.seg_mask)
    shifted = pydicom.dcmread(study.seg_path)
    shifted.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0].ImagePositionPatient[
        2
    ] += 1.0
    shifted.SOPInstanceUID = generate_uid()
    shifted.save_as(root / "shifted.dcm")
    not_preserved = pydicom.dcmread(study.seg_path)
    not_preserved.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[
        0
    ].SourceImageSequence[0].SpatialLocationsPreserved = "NO"
    not_preserved.SOPInstanceUID = generate_uid()
    not_preserved.save_as(root / "not_preserved.dcm")
    broken = pydicom.dcmread(study.seg_path)
    del broken.SegmentSequence
    broken.save_as(root / "broken.dcm")
    image_file = root / "image.dcm"
    study.series_a[0].save_as(image_file, enforce_file_format=True)
    good = root / "good.dcm"
    good.write_bytes(study.seg_path.read_bytes())
    files = [
        root / "garbage.dcm",
        not_present,
        root / "shifted.dcm",
        root / "not_preserved.dcm",
        root / "broken.dcm",
        image_file,
        good,
    ]

    rule = RULE.model_copy(update={"propagate_to_coregistered": False})
    result = sg.labels_from_segmentations(files, study.images(study.series_a), rule, root=root)

    assert labels_by_slice(result, study.series_a) == [
        "no",
        "no",
        "yes",
        "yes",
        "yes",
        "set_aside:ambiguous_tumour_area",
        "no",
        "set_aside:no_brain",
    ]
    assert set(result.labels["segmentation_sop_instance_uid"]) == {
        hd.seg.segread(good).SOPInstanceUID
    }
    rows = result.set_aside[["segmentation_path", "reason"]].to_dict("records")
    assert rows == [
        {"segmentation_path": "garbage.dcm", "reason": "unreadable_segmentation"},
        {"segmentation_path": "elsewhere.dcm", "reason": "references_nothing_present"},
        {"segmentation_path": "shifted.dcm", "reason": "geometry_mismatch"},
        {"segmentation_path": "not_preserved.dcm", "reason": "geometry_mismatch"},
        {"segmentation_path": "broken.dcm", "reason": "unreadable_segmentation"},
        {"segmentation_path": "image.dcm", "reason": "not_a_segmentation"},
    ]
    details = result.set_aside.set_index("segmentation_path")["detail"]
    assert details["elsewhere.dcm"] == "none of the 8 referenced images is in the images manifest"
    assert details["shifted.dcm"].startswith(
        "1 of 6 SEG frame references do not lie on their image's grid; first: frame 2 (image "
    )
    assert details["shifted.dcm"].endswith(
        "frame 0): (0020,9113) position is 1 mm from the image's (0020,0032)"
    )
    assert details["not_preserved.dcm"].endswith(
        "frame 0): (0028,135A) Spatial Locations Preserved is NO"
    )
    assert details["image.dcm"] == (
        f"(0008,0016) SOP Class UID {MRImageStorage} is neither SEG (1.2.840.10008.5.1.4.1.1.66.4 or "
        "1.2.840.10008.5.1.4.1.1.66.7) nor RTSTRUCT (1.2.840.10008.5.1.4.1.1.481.3)"
    )
    assert details["garbage.dcm"].startswith("InvalidDicomError: ")
    # Nothing returned holds an absolute path.
    for table in (result.labels, result.set_aside, result.summary):
        for column in table.select_dtypes("string"):
            assert not table[column].dropna().str.contains(str(tmp_path), regex=False).any(), column
    assert result.summary["status"].tolist() == ["set_aside"] * 6 + ["used"]


def test_seg_without_spatial_locations_preserved_is_checked_by_geometry_and_read(
    study: Study, tmp_path: Path
) -> None:
    seg = pydicom.dcmread(study.seg_path)
    for frame in seg.PerFrameFunctionalGroupsSequence:
        del frame.DerivationImageSequence[0].SourceImageSequence[0].SpatialLocationsPreserved
    seg.save_as(tmp_path / "silent.dcm")
    rule = RULE.model_copy(update={"propagate_to_coregistered": False})
    result = sg.labels_from_segmentations(
        [tmp_path / "silent.dcm"], study.images(study.series_a), rule
    )
    assert areas_by_slice(result, study.series_a) == [0.0, 0.0, 64.0, 80.0, 112.0, 5.76, 0.0, 0.0]


def test_partly_present_references_label_what_is_present_and_report_the_rest(study: Study) -> None:
    images = study.images(study.series_a)
    present = images[
        ~images["sop_instance_uid"].isin(
            [study.series_a[0].SOPInstanceUID, study.series_a[3].SOPInstanceUID]
        )
    ]
    rule = RULE.model_copy(update={"propagate_to_coregistered": False})
    result = sg.labels_from_segmentations([study.seg_path], present, rule, root=study.root)
    assert labels_by_slice(result, study.series_a) == [
        None,
        "no",
        "yes",
        None,
        "yes",
        "set_aside:ambiguous_tumour_area",
        "no",
        "set_aside:no_brain",
    ]
    assert result.set_aside[["reason", "detail"]].to_dict("records") == [
        {
            "reason": "references_partly_present",
            "detail": "2 of 8 referenced images are not in the images manifest; the present ones are labelled",
        }
    ]
    assert result.summary[["status", "unmatched"]].to_dict("records") == [
        {"status": "used", "unmatched": 2}
    ]


def test_absolute_paths_without_a_root_become_file_names(study: Study, tmp_path: Path) -> None:
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 200)
    result = sg.labels_from_segmentations(
        [tmp_path / "junk.dcm"], study.images(study.series_a), RULE
    )
    assert result.set_aside["segmentation_path"].tolist() == ["junk.dcm"]
    assert str(tmp_path) not in result.set_aside["detail"].iloc[0]
    assert dict(result.set_aside.dtypes.astype(str)) == dict.fromkeys(
        sg.SET_ASIDE_COLUMNS, "string"
    )
    assert result.labels.empty and list(result.labels.columns) == list(sg.LABEL_COLUMNS)


def test_malformed_rtstruct_contour_data_sets_the_rtstruct_aside(
    study: Study, tmp_path: Path
) -> None:
    series = study.series_a
    path = make_rtstruct(
        tmp_path / "malformed.dcm",
        series,
        {1: ("GTV", [Contour(rectangle(series[3], rows=(0, 9), cols=(0, 9)), series[3])])},
    )
    ds = pydicom.dcmread(path)
    ds.ROIContourSequence[0].ContourSequence[0].ContourData = [1.0] * 7
    ds.save_as(path)
    result = sg.labels_from_segmentations([path], study.images(series), RULE, root=tmp_path)
    assert result.labels.empty
    assert result.set_aside[["segmentation_path", "reason", "detail"]].to_dict("records") == [
        {
            "segmentation_path": "malformed.dcm",
            "reason": "unreadable_segmentation",
            "detail": "ROI 1 'GTV' contour 1: (3006,0050) Contour Data holds 7 values, not a "
            "positive multiple of 3 finite numbers",
        }
    ]
