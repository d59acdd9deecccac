"""The NIfTI volumes-with-masks source on synthetic volumes: labels in mm², orientation from
the affine, every bad input set aside."""

from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from pydantic import ValidationError

from braincls.config import LabelRuleConfig, VolumesConfig
from braincls.data import volumes

#: The synthetic rule: 20 mm² of tumour makes a slice 'yes', 200 mm² of brain a 'no'.
RULE = LabelRuleConfig(min_tumour_area_mm2=20.0, min_brain_area_mm2=200.0)
CONFIG = VolumesConfig(sequences=("flair",), image_size_px=64)

# --------------------------------------------------------------------------------------------
# Synthetic phantom
# --------------------------------------------------------------------------------------------
#
# A RAS-ordered volume over a 20 mm (x) by 24 mm (y) field, 16 slices. Physical layout (mm):
# brain x[2,18) y[2,22) on slices 2..12 (320 mm²), a small brain x[5,15) y[5,15) on slice 13
# (100 mm²: no_brain at 200 mm²), nothing on 0, 1, 14, 15 (no_brain). Tumour x[6,12) y[6,10)
# (24 mm²) on slices 5..8 (label 4 on 5, 6; label 2 on 7, 8); slivers x[6,8) y[6,8) (4 mm²) of
# label 2 on slice 4 and label 4 on slice 9 (ambiguous).
#   yes: 5, 6, 7, 8; ambiguous: 4, 9; no: 2, 3, 10, 11, 12; no_brain: 0, 1, 13, 14, 15.

FIELD_MM = (20.0, 24.0)
SLICES = 16


def _box(spacing_mm: tuple[float, float], x_mm: tuple[float, float], y_mm: tuple[float, float]):
    """Index slices (x, y) of a physical box in mm."""
    return (
        slice(round(x_mm[0] / spacing_mm[0]), round(x_mm[1] / spacing_mm[0])),
        slice(round(y_mm[0] / spacing_mm[1]), round(y_mm[1] / spacing_mm[1])),
    )


def phantom(
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
    background_noise: bool = False,
) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.uint8], npt.NDArray[np.float64]]:
    """The phantom (image, mask, RAS affine) sampled at ``spacing_mm`` (x, y, z)."""
    in_plane = (spacing_mm[0], spacing_mm[1])
    shape = (round(FIELD_MM[0] / spacing_mm[0]), round(FIELD_MM[1] / spacing_mm[1]), SLICES)
    image = np.zeros(shape, dtype=np.int16)
    mask = np.zeros(shape, dtype=np.uint8)
    brain_value = 100
    if background_noise:
        # An unmasked head: the air is noise of 1..12, the head 200..212.
        generator = np.random.default_rng(7)
        image[...] = generator.integers(1, 13, size=shape)
        brain_value = 200
    bx, by = _box(in_plane, (2, 18), (2, 22))
    image[bx, by, 2:13] = brain_value + image[bx, by, 2:13]
    sx, sy = _box(in_plane, (5, 15), (5, 15))
    image[sx, sy, 13] = brain_value + image[sx, sy, 13]
    tx, ty = _box(in_plane, (6, 12), (6, 10))
    mask[tx, ty, 5:7] = 4
    mask[tx, ty, 7:9] = 2
    lx, ly = _box(in_plane, (6, 8), (6, 8))
    mask[lx, ly, 4] = 2
    mask[lx, ly, 9] = 4
    affine = np.diag([spacing_mm[0], spacing_mm[1], spacing_mm[2], 1.0])
    affine[:3, 3] = (-10.0, -12.0, 5.0)
    return image, mask, affine


def save(path: Path, array: npt.NDArray[np.generic], affine: npt.NDArray[np.float64]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), path)


def write_case(
    source: Path,
    case: str,
    image: npt.NDArray[np.generic],
    mask: npt.NDArray[np.generic],
    affine: npt.NDArray[np.float64],
    sequences: tuple[str, ...] = ("flair",),
) -> None:
    for sequence in sequences:
        save(source / case / f"{case}_{sequence}.nii.gz", image, affine)
    save(source / case / f"{case}_seg.nii.gz", mask, affine)


def slice_reasons(result: volumes.VolumeResult) -> dict[str, list[int]]:
    """Slice indices per label and per slice-level reason."""
    out: dict[str, list[int]] = {}
    for label, group in result.manifest.groupby("label"):
        out[str(label)] = sorted(int(value) for value in group["slice_index"])
    slices = result.quarantine[result.quarantine["slice_index"].notna()]
    for reason, group in slices.groupby("reason"):
        out[str(reason)] = sorted(int(value) for value in group["slice_index"])
    return out


EXPECTED_SLICES = {
    "yes": [5, 6, 7, 8],
    "ambiguous_tumour_area": [4, 9],
    "no": [2, 3, 10, 11, 12],
    "no_brain": [0, 1, 13, 14, 15],
}

# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spacing_mm",
    [(1.0, 1.0, 1.0), (0.5, 1.0, 2.0)],
    ids=["isotropic", "anisotropic-0.5x1x2"],
)
def test_labels_from_mask_exact_counts_and_areas(tmp_path: Path, spacing_mm) -> None:
    image, mask, affine = phantom(spacing_mm)
    write_case(tmp_path / "src", "c1", image, mask, affine)
    result = volumes.read_volumes(tmp_path / "src", tmp_path / "out", CONFIG, RULE)

    assert slice_reasons(result) == EXPECTED_SLICES
    assert result.label_counts == {"no": 5, "yes": 4}
    assert result.reason_counts["ambiguous_tumour_area"] == 2
    assert result.reason_counts["no_brain"] == 5
    assert (result.cases_found, result.cases_read) == (1, 1)
    manifest = result.manifest.set_index("slice_index")
    assert manifest.loc[[5, 6, 7, 8], "tumour_area_mm2"].tolist() == [24.0] * 4
    assert manifest.loc[[2, 3, 10, 11, 12], "tumour_area_mm2"].tolist() == [0.0] * 5
    assert manifest["brain_area_mm2"].tolist() == [320.0] * 9
    assert manifest["pixel_spacing_row_mm"].tolist() == [spacing_mm[1]] * 9
    assert manifest["pixel_spacing_col_mm"].tolist() == [spacing_mm[0]] * 9
    details = result.quarantine.set_index("slice_index")["detail"]
    assert details.loc[4] == "tumour area 4 mm² below min_tumour_area_mm2 20"
    assert details.loc[13] == "brain area 100 mm² below min_brain_area_mm2 200"
    assert details.loc[0] == "brain area 0 mm² below min_brain_area_mm2 200"


def test_the_threshold_is_in_mm2_not_voxels(tmp_path: Path) -> None:
    # At 0.5 x 1 mm the 24 mm² tumour is 48 voxels; a 30 mm² rule must still set it aside.
    rule = LabelRuleConfig(min_tumour_area_mm2=30.0, min_brain_area_mm2=200.0)
    for name, spacing_mm in (("iso", (1.0, 1.0, 1.0)), ("aniso", (0.5, 1.0, 2.0))):
        image, mask, affine = phantom(spacing_mm)
        write_case(tmp_path / name, "c1", image, mask, affine)
        result = volumes.read_volumes(tmp_path / name, tmp_path / f"out-{name}", CONFIG, rule)
        assert slice_reasons(result) == {
            "ambiguous_tumour_area": [4, 5, 6, 7, 8, 9],
            "no": [2, 3, 10, 11, 12],
            "no_brain": [0, 1, 13, 14, 15],
        }


def test_unmasked_head_uses_the_threshold_and_gives_the_same_labels(tmp_path: Path) -> None:
    image, mask, affine = phantom(background_noise=True)
    write_case(tmp_path / "src", "c1", image, mask, affine)
    result = volumes.read_volumes(tmp_path / "src", tmp_path / "out", CONFIG, RULE)

    assert slice_reasons(result) == EXPECTED_SLICES
    assert result.manifest["brain_area_mm2"].tolist() == [320.0] * 9
    assert dict(result.foreground_modes) == {"c1/c1_flair.nii.gz": "threshold"}


def test_foreground_mask_modes() -> None:
    image, _, _ = phantom()
    foreground, mode = volumes.foreground_mask(image)
    assert mode == "nonzero"
    assert int(foreground.sum()) == 320 * 11 + 100
    noisy, _, _ = phantom(background_noise=True)
    foreground, mode = volumes.foreground_mask(noisy)
    assert mode == "threshold"
    assert int(foreground.sum()) == 320 * 11 + 100
    empty, mode = volumes.foreground_mask(np.zeros((4, 4, 4), dtype=np.int16))
    assert (int(empty.sum()), mode) == (0, "nonzero")


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        (
            ("4",),
            {
                "yes": [5, 6],
                "ambiguous_tumour_area": [9],
                "unselected_segments_only": [4, 7, 8],
                "no": [2, 3, 10, 11, 12],
                "no_brain": [0, 1, 13, 14, 15],
            },
        ),
        (
            ("2",),
            {
                "yes": [7, 8],
                "ambiguous_tumour_area": [4],
                "unselected_segments_only": [5, 6, 9],
                "no": [2, 3, 10, 11, 12],
                "no_brain": [0, 1, 13, 14, 15],
            },
        ),
        (
            ("1",),
            {
                "unselected_segments_only": [4, 5, 6, 7, 8, 9],
                "no": [2, 3, 10, 11, 12],
                "no_brain": [0, 1, 13, 14, 15],
            },
        ),
    ],
    ids=["enhancing-4", "edema-2", "absent-1"],
)
def test_rule_segments_select_mask_values(tmp_path: Path, segments, expected) -> None:
    image, mask, affine = phantom()
    write_case(tmp_path / "src", "c1", image, mask, affine)
    rule = RULE.model_copy(update={"segments": segments})
    result = volumes.read_volumes(tmp_path / "src", tmp_path / "out", CONFIG, rule)
    assert slice_reasons(result) == expected


def test_several_sequences_share_the_mask_labels(tmp_path: Path) -> None:
    image, mask, affine = phantom()
    write_case(tmp_path / "src", "c1", image, mask, affine, sequences=("flair", "t2"))
    config = CONFIG.model_copy(update={"sequences": ("t2", "flair")})
    result = volumes.read_volumes(tmp_path / "src", tmp_path / "out", config, RULE)
    manifest = result.manifest
    assert manifest["sequence"].tolist() == ["t2"] * 9 + ["flair"] * 9
    assert (manifest["group_id"] == "p-c1").all()
    by_sequence = {
        sequence: group.set_index("slice_index")["label"].to_dict()
        for sequence, group in manifest.groupby("sequence")
    }
    assert by_sequence["t2"] == by_sequence["flair"]
    assert result.label_counts == {"no": 10, "yes": 8}


# --------------------------------------------------------------------------------------------
# Orientation
# --------------------------------------------------------------------------------------------

# Canonical (RAS) anatomy: x toward the patient's right, y toward anterior, z toward superior.
ANATOMY_SHAPE = (20, 24, 16)
ANATOMY_SPACING_MM = (0.5, 1.0, 2.0)
ANATOMY_TRANSLATION_MM = (-100.0, 20.0, 35.0)


def anatomy() -> npt.NDArray[np.int16]:
    """A head box with a bright marker in the patient's left, anterior, superior corner."""
    volume = np.zeros(ANATOMY_SHAPE, dtype=np.int16)
    volume[2:18, 2:22, 2:14] = 100
    volume[1:4, 19:22, 12:14] = 900  # left: low x; anterior: high y; superior: high z.
    return volume


def ras_affine() -> npt.NDArray[np.float64]:
    affine = np.diag([*ANATOMY_SPACING_MM, 1.0])
    affine[:3, 3] = ANATOMY_TRANSLATION_MM
    return affine


def stored_versions() -> dict[str, tuple[npt.NDArray[np.int16], npt.NDArray[np.float64]]]:
    """The same anatomy in several voxel orders, each with the affine that keeps every voxel
    at the same world position (built by hand, not with nibabel's reorientation)."""
    volume = anatomy()
    nx, ny, nz = ANATOMY_SHAPE
    sx, sy, sz = ANATOMY_SPACING_MM
    tx, ty, tz = ANATOMY_TRANSLATION_MM
    versions = {"RAS": (volume, ras_affine())}
    # LPS (BraTS, DICOM): lps[i, j, k] = ras[nx-1-i, ny-1-j, k].
    lps_affine = np.diag([-sx, -sy, sz, 1.0])
    lps_affine[:3, 3] = (sx * (nx - 1) + tx, sy * (ny - 1) + ty, tz)
    versions["LPS"] = (np.ascontiguousarray(volume[::-1, ::-1, :]), lps_affine)
    # PIR: pir[i, j, k] = ras[k, ny-1-i, nz-1-j].
    pir = np.ascontiguousarray(volume.transpose(1, 2, 0)[::-1, ::-1, :])
    pir_affine = np.array(
        [
            [0.0, 0.0, sx, tx],
            [-sy, 0.0, 0.0, sy * (ny - 1) + ty],
            [0.0, -sz, 0.0, sz * (nz - 1) + tz],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    versions["PIR"] = (pir, pir_affine)
    # LAI with no translation at all: lai[i, j, k] = ras[nx-1-i, j, nz-1-k].
    lai_affine = np.diag([-sx, sy, -sz, 1.0])
    versions["LAI-no-translation"] = (np.ascontiguousarray(volume[::-1, :, ::-1]), lai_affine)
    return versions


def test_stored_versions_name_their_voxel_order() -> None:
    codes = {name: nib.aff2axcodes(affine) for name, (_, affine) in stored_versions().items()}
    assert codes == {
        "RAS": ("R", "A", "S"),
        "LPS": ("L", "P", "S"),
        "PIR": ("P", "I", "R"),
        "LAI-no-translation": ("L", "A", "I"),
    }


@pytest.mark.parametrize(
    ("plane", "slice_count", "spacing_mm"),
    [("axial", 16, (1.0, 0.5)), ("coronal", 24, (2.0, 0.5)), ("sagittal", 20, (2.0, 1.0))],
)
def test_every_voxel_order_gives_the_same_slices(plane, slice_count, spacing_mm) -> None:
    reference = volumes.orient_volume(anatomy(), ras_affine(), plane)
    assert reference.slices.shape[0] == slice_count
    assert reference.pixel_spacing_mm == spacing_mm
    for name, (volume, affine) in stored_versions().items():
        oriented = volumes.orient_volume(volume, affine, plane)
        assert np.array_equal(oriented.slices, reference.slices), name
        assert oriented.pixel_spacing_mm == spacing_mm, name


def _bright_box(slice_2d: npt.NDArray[np.generic]) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(slice_2d == 900)
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def test_display_orientation_puts_the_marker_where_a_radiologist_expects() -> None:
    volume, affine = stored_versions()["LPS"]
    axial = volumes.orient_volume(volume, affine, "axial")
    # Axial slice 12 (z from inferior): 24 rows (anterior first) x 20 columns (right first).
    assert axial.slices[12].shape == (24, 20)
    assert _bright_box(axial.slices[12]) == (2, 5, 16, 19)  # top (anterior), right (left)
    coronal = volumes.orient_volume(volume, affine, "coronal")
    # Coronal slice 20 (y from posterior): 16 rows (superior first) x 20 columns (right first).
    assert coronal.slices[20].shape == (16, 20)
    assert _bright_box(coronal.slices[20]) == (2, 4, 16, 19)  # top (superior), right (left)
    sagittal = volumes.orient_volume(volume, affine, "sagittal")
    # Sagittal slice 2 (x from the patient's left): 16 rows (superior first) x 24 columns
    # (anterior first).
    assert sagittal.slices[2].shape == (16, 24)
    assert _bright_box(sagittal.slices[2]) == (2, 4, 2, 5)  # top (superior), left (anterior)


def test_brats_style_lps_axial_slice_is_the_transposed_voxel_plane() -> None:
    volume, affine = stored_versions()["LPS"]
    axial = volumes.orient_volume(volume, affine, "axial")
    for index in range(volume.shape[2]):
        assert np.array_equal(axial.slices[index], volume[:, :, index].T)


def test_voxel_orders_give_byte_identical_pngs(tmp_path: Path) -> None:
    _, mask_ras, _ = phantom()
    digests: dict[str, list[str]] = {}
    for name, (volume, affine) in stored_versions().items():
        mask = np.zeros(volume.shape, dtype=np.uint8)
        write_case(tmp_path / name, "c1", volume, mask, affine)
        result = volumes.read_volumes(
            tmp_path / name,
            tmp_path / f"out-{name}",
            CONFIG,
            LabelRuleConfig(min_brain_area_mm2=50),
        )
        digests[name] = result.manifest["sha256"].tolist()
        assert result.manifest["slice_index"].tolist() == list(range(2, 14))
    assert len(set(map(tuple, digests.values()))) == 1
    del mask_ras


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_every_bad_input_is_set_aside_and_the_rest_is_read(tmp_path: Path) -> None:
    source = tmp_path / "src"
    image, mask, affine = phantom()
    both = ("flair", "t2")
    write_case(source, "a_good", image, mask, affine, both)
    write_case(source, "b_missing", image, mask, affine, ("flair",))
    write_case(source, "c_corrupt", image, mask, affine, ("flair",))
    (source / "c_corrupt" / "c_corrupt_t2.nii.gz").write_bytes(b"not a nifti file " * 20)
    write_case(source, "d_truncated", image, mask, affine, both)
    whole = (source / "d_truncated" / "d_truncated_t2.nii.gz").read_bytes()
    (source / "d_truncated" / "d_truncated_t2.nii.gz").write_bytes(whole[: len(whole) // 2])
    write_case(source, "e_bad_mask", image, mask, affine, both)
    (source / "e_bad_mask" / "e_bad_mask_seg.nii.gz").write_bytes(gzip.compress(b"junk" * 100))
    write_case(source, "f_shape", image, mask, affine, ("flair",))
    save(source / "f_shape" / "f_shape_t2.nii.gz", image[:, :, :15], affine)
    write_case(source, "g_affine", image, mask, affine, ("flair",))
    shifted = affine.copy()
    shifted[0, 3] += 1.0
    save(source / "g_affine" / "g_affine_t2.nii.gz", image, shifted)
    write_case(source, "h_shear", image, mask, affine, ("flair",))
    sheared = affine.copy()
    sheared[0, 1] = 0.3
    save(source / "h_shear" / "h_shear_t2.nii.gz", image, sheared)
    write_case(source, "i_4d", image, mask, affine, ("flair",))
    save(source / "i_4d" / "i_4d_t2.nii.gz", np.stack([image, image], axis=-1), affine)
    write_case(source, "j_float_mask", image, mask, affine, both)
    halves = np.where(mask > 0, mask.astype(np.float32) + 0.5, 0).astype(np.float32)
    save(source / "j_float_mask" / "j_float_mask_seg.nii.gz", halves, affine)

    config = CONFIG.model_copy(update={"sequences": both})
    result = volumes.read_volumes(source, tmp_path / "out", config, RULE)

    files = result.quarantine[result.quarantine["slice_index"].isna()]
    rows = list(files[["source_path", "reason", "case", "sequence"]].itertuples(index=False))
    assert [tuple(None if pd.isna(value) else value for value in row) for row in rows] == [
        ("b_missing/b_missing_t2.nii.gz", "missing_sequence", "b_missing", "t2"),
        ("c_corrupt/c_corrupt_t2.nii.gz", "unreadable_volume", "c_corrupt", "t2"),
        ("d_truncated/d_truncated_t2.nii.gz", "unreadable_volume", "d_truncated", "t2"),
        ("e_bad_mask/e_bad_mask_seg.nii.gz", "unreadable_volume", "e_bad_mask", None),
        ("f_shape/f_shape_t2.nii.gz", "mask_geometry_mismatch", "f_shape", "t2"),
        ("g_affine/g_affine_t2.nii.gz", "mask_geometry_mismatch", "g_affine", "t2"),
        ("h_shear/h_shear_t2.nii.gz", "non_orthogonal_orientation", "h_shear", "t2"),
        ("i_4d/i_4d_t2.nii.gz", "not_3d", "i_4d", "t2"),
        ("j_float_mask/j_float_mask_seg.nii.gz", "non_integer_mask", "j_float_mask", None),
    ]
    assert (files["relative_path"] == files["source_path"]).all()
    details = dict(zip(files["case"], files["detail"], strict=True))
    assert details["b_missing"] == "no t2 volume for case b_missing"
    assert details["c_corrupt"] == (
        "ImageFileError: File c_corrupt/c_corrupt_t2.nii.gz is not a gzip file"
    )
    assert details["d_truncated"] == (
        "EOFError: Compressed file ended before the end-of-stream marker was reached"
    )
    assert details["e_bad_mask"] == (
        'mask: ImageFileError: Cannot work out file type of "e_bad_mask/e_bad_mask_seg.nii.gz"'
        "; case skipped"
    )
    assert details["f_shape"] == (
        "mask shape (20, 24, 16) differs from image shape (20, 24, 15) (f_shape/f_shape_seg.nii.gz)"
    )
    assert details["g_affine"] == (
        "mask affine differs from image affine by up to 1 mm (tolerance 0.001 mm) "
        "(g_affine/g_affine_seg.nii.gz)"
    )
    assert details["h_shear"] == (
        "affine direction columns not orthogonal (largest |cosine| 0.2873 > 0.001): sheared or "
        "skewed grid; reslice it to an orthogonal grid first"
    )
    assert details["i_4d"] == "shape (20, 24, 16, 2): a 3-D volume is needed"
    assert (result.cases_found, result.cases_read) == (10, 8)
    read = result.manifest.groupby(["case", "sequence"]).size().to_dict()
    assert read == {
        **{(case, "flair"): 9 for case in ("a_good", "b_missing", "c_corrupt", "d_truncated")},
        **{(case, "flair"): 9 for case in ("f_shape", "g_affine", "h_shear", "i_4d")},
        ("a_good", "t2"): 9,
    }
    assert {reason: result.reason_counts[reason] for reason in volumes.FILE_REASONS} == {
        "missing_sequence": 1,
        "unreadable_volume": 3,
        "mask_geometry_mismatch": 2,
        "non_orthogonal_orientation": 1,
        "not_3d": 1,
        "non_integer_mask": 1,
    }


def test_single_frame_4d_volume_counts_as_3d(tmp_path: Path) -> None:
    image, mask, affine = phantom()
    write_case(tmp_path / "src", "c1", image[..., np.newaxis], mask, affine)
    result = volumes.read_volumes(tmp_path / "src", tmp_path / "out", CONFIG, RULE)
    assert slice_reasons(result) == EXPECTED_SLICES


def test_missing_source_folder_raises_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(volumes.VolumeSourceError, match="the volumes source folder does not"):
        volumes.read_volumes(tmp_path / "nowhere", tmp_path / "out", CONFIG, RULE)


# --------------------------------------------------------------------------------------------
# Discovery and patterns
# --------------------------------------------------------------------------------------------


def test_patterns_become_escaped_globs_and_regexes() -> None:
    assert volumes.pattern_glob("{case}/{case}_{sequence}.nii.gz") == "*/*_*.nii.gz"
    assert volumes.pattern_glob("[x]/{case}*.nii") == "[[]x]/*[*].nii"
    regex = volumes.pattern_regex("{case}/{case}_seg.nii.gz")
    assert regex.fullmatch("P1/P1_seg.nii.gz").group("case") == "P1"
    assert regex.fullmatch("P1/P2_seg.nii.gz") is None
    assert regex.fullmatch("P1/P1_segXnii.gz") is None
    assert regex.fullmatch("a/P1/P1_seg.nii.gz") is None


def test_discovery_is_sorted_and_needs_the_mask(tmp_path: Path) -> None:
    image, mask, affine = phantom()
    for case in ("z9", "a1", "m5"):
        write_case(tmp_path, case, image, mask, affine)
    save(tmp_path / "no_mask" / "no_mask_flair.nii.gz", image, affine)
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "other_seg.nii.gz").write_bytes(b"")
    assert volumes.discover_cases(tmp_path, VolumesConfig()) == ["a1", "m5", "z9"]
    flat = VolumesConfig(image_pattern="{case}_{sequence}.nii.gz", mask_pattern="{case}_seg.nii.gz")
    for case in ("p2", "p1"):
        save(tmp_path / "flat" / f"{case}_seg.nii.gz", mask, affine)
    assert volumes.discover_cases(tmp_path / "flat", flat) == ["p1", "p2"]
    with pytest.raises(ValidationError, match="mask_pattern must not hold"):
        VolumesConfig(mask_pattern="{case}_{sequence}_seg.nii")
    with pytest.raises(volumes.VolumeSourceError, match="relative POSIX path"):
        volumes.discover_cases(tmp_path, VolumesConfig(mask_pattern="../{case}_seg.nii.gz"))


# --------------------------------------------------------------------------------------------
# Rendering, names, determinism
# --------------------------------------------------------------------------------------------


def test_square_geometry_keeps_physical_proportions() -> None:
    # 24 rows at 1 mm by 40 columns at 0.5 mm is 24 mm by 20 mm.
    assert volumes.square_geometry(24, 40, (1.0, 0.5), 48) == (48, 40)
    assert volumes.square_geometry(240, 240, (1.0, 1.0), 256) == (256, 256)
    assert volumes.square_geometry(155, 240, (1.0, 1.0), 256) == (165, 256)
    with pytest.raises(ValueError, match="pixel spacing must be positive"):
        volumes.square_geometry(4, 4, (0.0, 1.0), 8)


def test_render_pads_never_stretches() -> None:
    white = np.full((24, 40), 10.0)
    image = volumes.render_slice(white, (0.0, 10.0), (1.0, 0.5), 48)
    assert image.shape == (48, 48)
    assert image.dtype == np.uint8
    columns = np.flatnonzero(image.any(axis=0))
    assert (int(columns[0]), int(columns[-1])) == (4, 43)
    assert int(image[:, 4:44].min()) == 255
    assert int(image[:, :4].max()) == 0


def test_window_maps_percentiles_of_the_foreground() -> None:
    volume = np.arange(1, 101, dtype=np.int16).reshape(1, 10, 10)
    foreground = volume > 0
    assert volumes.window_bounds(volume, foreground, 0.0, 100.0) == (1.0, 100.0)
    assert volumes.window_bounds(volume, np.zeros_like(foreground), 0.5, 99.5) == (0.0, 1.0)


def test_names_sizes_hashes_and_byte_identical_reruns(tmp_path: Path) -> None:
    image, mask, affine = phantom((0.5, 1.0, 2.0))
    write_case(tmp_path / "src", "c1", image, mask, affine)
    first = volumes.read_volumes(tmp_path / "src", tmp_path / "out1", CONFIG, RULE)
    second = volumes.read_volumes(tmp_path / "src", tmp_path / "out1", CONFIG, RULE)
    third = volumes.read_volumes(tmp_path / "src", tmp_path / "out2", CONFIG, RULE)
    manifest = first.manifest

    assert list(manifest.columns) == list(volumes.VOLUME_MANIFEST_COLUMNS)
    assert {name: str(dtype) for name, dtype in manifest.dtypes.items()} == (
        volumes.VOLUME_MANIFEST_COLUMNS
    )
    assert {name: str(dtype) for name, dtype in first.quarantine.dtypes.items()} == (
        volumes.VOLUME_QUARANTINE_COLUMNS
    )
    assert manifest["sample_id"].iloc[0] == "c1/flair/axial/002"
    assert manifest["relative_path"].iloc[0] == "c1/flair/axial/002.png"
    assert manifest["source"].iloc[0] == "src"
    assert manifest["volume_path"].iloc[0] == "c1/c1_flair.nii.gz"
    assert manifest["label_index"].tolist() == [
        1 if label == "yes" else 0 for label in manifest["label"]
    ]
    assert (manifest["label_source"] == "mask").all()
    assert manifest["fingerprint"].str.fullmatch(r"[0-9a-f]{16}").all()
    root = str(tmp_path)
    for column in ("sample_id", "relative_path", "volume_path"):
        assert not manifest[column].str.contains(root, regex=False).any()
        assert not manifest[column].str.startswith("/").any()
    for column in ("source_path", "relative_path", "detail"):
        assert not first.quarantine[column].str.contains(root, regex=False).any()
    for path, relative, digest in manifest[["source_path", "relative_path", "sha256"]].itertuples(
        index=False
    ):
        assert path == str(tmp_path / "out1" / relative)
        png = Path(path).read_bytes()
        assert volumes.hashlib.sha256(png).hexdigest() == digest
        decoded = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
        assert (decoded.shape, decoded.dtype) == ((64, 64), np.uint8)
    assert (manifest[["width", "height", "channels"]].drop_duplicates().values.tolist()) == [
        [64, 64, 1]
    ]
    assert second.manifest["sha256"].tolist() == manifest["sha256"].tolist()
    assert third.manifest["sha256"].tolist() == manifest["sha256"].tolist()
    # Exactly the manifest's PNGs, no temporary files left behind.
    written = sorted(
        path.relative_to(tmp_path / "out1").as_posix()
        for path in (tmp_path / "out1").rglob("*")
        if path.is_file()
    )
    assert written == sorted(manifest["relative_path"])
