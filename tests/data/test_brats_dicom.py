"""Tests of the BraTS-to-DICOM collection generator on the real BraTS volumes.

Two cases, two sequences, every 10th axial slice, 4 x 4 voxel blocks in plane: 16 slices of
60 x 60 pixels per series, a few seconds in all.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections import Counter
from pathlib import Path

import highdicom as hd
import httpx
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from devkit import brats_dicom as bd
from devkit.nbia import serve

BRATS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "brats"
CASES = ("Brats18_TCIA01_201_1", "Brats18_2013_11_1")
SEQUENCES = ("t1ce", "flair")
SLICE_STEP = 10
IN_PLANE_STEP = 4
COLLECTION = "BRATS-TEST-SEG"
#: k = 0, 10, ..., 150 of the 155 axial slices.
SLICE_INDICES = tuple(range(0, 155, SLICE_STEP))
SIZE_PX = 240 // IN_PLANE_STEP


@pytest.fixture(autouse=True)
def _needs_brats(brats_dir: Path) -> None:
    """Every test here reads the real BraTS cases (their absence fails under CI)."""
    assert brats_dir == BRATS_DIR


def _generate(out_dir: Path, **options: object) -> bd.BratsCollectionSummary:
    arguments: dict[str, object] = {
        "collection": COLLECTION,
        "cases": CASES,
        "sequences": SEQUENCES,
        "slice_step": SLICE_STEP,
        "in_plane_step": IN_PLANE_STEP,
    }
    arguments.update(options)
    return bd.generate_brats_collection(BRATS_DIR, out_dir, **arguments)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bd.BratsCollectionSummary]:
    out_dir = tmp_path_factory.mktemp("nbia-root")
    return out_dir, _generate(out_dir)


@pytest.fixture(scope="module")
def datasets(written: tuple[Path, bd.BratsCollectionSummary]) -> dict[Path, pydicom.Dataset]:
    out_dir, _ = written
    return {path: pydicom.dcmread(path) for path in sorted((out_dir / COLLECTION).rglob("*.dcm"))}


def _nifti(case: str, name: str) -> nib.Nifti1Image:
    image = nib.load(BRATS_DIR / case / f"{case}_{name}.nii.gz")
    assert isinstance(image, nib.Nifti1Image)
    return image


def _series(
    datasets: dict[Path, pydicom.Dataset], case: str, description: str
) -> list[pydicom.Dataset]:
    found = [
        ds
        for ds in datasets.values()
        if ds.PatientID == case and ds.Modality == "MR" and ds.SeriesDescription == description
    ]
    return sorted(found, key=lambda ds: int(ds.InstanceNumber))


def _seg(datasets: dict[Path, pydicom.Dataset], case: str) -> tuple[Path, pydicom.Dataset]:
    (found,) = [
        (path, ds) for path, ds in datasets.items() if ds.PatientID == case and ds.Modality == "SEG"
    ]
    return found


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# --------------------------------------------------------------------------------------------
# Pure functions.
# --------------------------------------------------------------------------------------------


def test_lps_affine_negates_the_first_two_rows() -> None:
    ras = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    np.testing.assert_array_equal(
        bd.lps_affine(ras),
        np.array([[1.0, 0, 0, 0], [0, 1.0, 0, -239.0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]),
    )


def test_slice_geometry_of_the_brats_affine() -> None:
    ras = _nifti(CASES[0], "seg").affine
    full = bd.slice_geometry(ras, 0, 1)
    assert full == bd.SliceGeometry(
        image_position_patient_mm=(0.0, -239.0, 0.0),
        image_orientation_patient=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        pixel_spacing_mm=(1.0, 1.0),
        slice_thickness_mm=1.0,
    )
    coarse = bd.slice_geometry(ras, 70, 4)
    assert coarse == bd.SliceGeometry(
        image_position_patient_mm=(1.5, -237.5, 70.0),
        image_orientation_patient=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
        pixel_spacing_mm=(4.0, 4.0),
        slice_thickness_mm=1.0,
    )


def test_slice_geometry_refuses_sheared_in_plane_axes() -> None:
    sheared = np.array([[1.0, 0.5, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    with pytest.raises(ValueError, match="in-plane voxel axes are not orthogonal"):
        bd.slice_geometry(sheared, 0, 1)


def test_block_mean_rounds_half_to_even_and_crops_partial_blocks() -> None:
    image = np.array(
        [[0, 1, 2, 4, 9], [1, 2, 3, 4, 9], [10, 10, 7, 7, 9], [10, 11, 7, 8, 9], [9, 9, 9, 9, 9]],
        dtype=np.int16,
    )
    # Block means 1.0, 3.25, 10.25, 7.25; the fifth row and column do not fill a block.
    np.testing.assert_array_equal(
        bd.block_mean(image, 2), np.array([[1, 3], [10, 7]], dtype=np.int16)
    )
    np.testing.assert_array_equal(
        bd.block_mean(np.array([[1, 2], [2, 5]], dtype=np.int16), 2), np.array([[2]])
    )  # 2.5 rounds to 2
    np.testing.assert_array_equal(bd.block_mean(image, 1), image)


def test_block_mode_labels_takes_the_majority_and_breaks_ties_upwards() -> None:
    labels = np.array(
        [[0, 0, 2, 2], [0, 1, 4, 1], [4, 4, 0, 0], [2, 2, 1, 1]],
        dtype=np.int16,
    )
    # Blocks: {0,0,0,1} -> 0; {2,2,4,1} -> 2; {4,4,2,2} tie -> 4; {0,0,1,1} tie -> 1.
    np.testing.assert_array_equal(
        bd.block_mode_labels(labels, 2), np.array([[0, 2], [4, 1]], dtype=np.int16)
    )


def test_block_mode_labels_rejects_label_3() -> None:
    with pytest.raises(ValueError, match=r"label values \[3\] are not BraTS 2018 labels"):
        bd.block_mode_labels(np.array([[0, 3]], dtype=np.int16), 1)


def test_segment_numbers_map_brats_labels_1_2_4_to_1_2_3() -> None:
    np.testing.assert_array_equal(
        bd.segment_numbers_from_labels(np.array([[0, 1, 2, 4]])), np.array([[0, 1, 2, 3]])
    )


def test_window_spans_the_brain_percentiles() -> None:
    volume = np.zeros((10, 10, 2), dtype=np.int16)
    volume[:, :, 1] = np.arange(100, dtype=np.int16).reshape(10, 10) + 1  # 1..100
    center, width = bd.window_from_percentiles(volume, (0.0, 100.0))
    assert (center, width) == (50.5, 99.0)


def test_uids_are_deterministic_and_distinct() -> None:
    first = bd.brats_uid("C", "case", "series", "t1ce")
    assert first == bd.brats_uid("C", "case", "series", "t1ce")
    assert first != bd.brats_uid("C", "case", "series", "flair")
    assert first.startswith(bd.UID_ROOT)
    assert len(first) <= 64


def test_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"sequences \['t1c'\]: expected distinct values"):
        bd.generate_brats_collection(BRATS_DIR, tmp_path, cases=CASES[:1], sequences=("t1c",))
    with pytest.raises(ValueError, match="seg_series 't2' is not among the requested sequences"):
        bd.generate_brats_collection(BRATS_DIR, tmp_path, cases=CASES[:1], seg_series="t2")
    with pytest.raises(ValueError, match=r"cases \['Brats18_NOPE'\] not found"):
        bd.generate_brats_collection(BRATS_DIR, tmp_path, cases=["Brats18_NOPE"])
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# The written collection.
# --------------------------------------------------------------------------------------------


def test_summary_and_layout(written: tuple[Path, bd.BratsCollectionSummary]) -> None:
    out_dir, summary = written
    folder = out_dir / COLLECTION
    assert summary.collection_dir == folder
    assert summary.cases == CASES
    assert summary.sequences == SEQUENCES
    assert summary.seg_sequence == "t1ce"
    assert (summary.n_series, summary.n_image_series, summary.n_seg_objects) == (6, 4, 2)
    assert summary.n_instances == 2 * (2 * 16 + 1)
    assert summary.slices_by_case == {CASES[0]: 16, CASES[1]: 16}
    assert summary.tumour_slices_by_case == {CASES[0]: 8, CASES[1]: 7}
    assert summary.seg_frames_by_case == {CASES[0]: 19, CASES[1]: 19}
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert summary.n_bytes == sum(p.stat().st_size for p in files)
    assert sorted(p.name for p in folder.iterdir()) == sorted([*CASES, "catalogue.json"])
    assert not (folder / "labels.csv").exists()
    assert [p.name for p in out_dir.iterdir()] == [COLLECTION]  # no staging folder left
    dicom_files = [p for p in files if p.suffix == ".dcm"]
    assert len(dicom_files) == summary.n_instances
    for path in dicom_files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        case, study, series, name = path.relative_to(folder).parts
        assert (case, study, series) == (ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID)
        assert name == f"{int(ds.InstanceNumber):04d}.dcm"


def test_catalogue_has_what_the_nbia_server_reads(
    written: tuple[Path, bd.BratsCollectionSummary],
) -> None:
    _, summary = written
    catalogue = json.loads(summary.catalogue_path.read_text(encoding="utf-8"))
    assert catalogue["Collection"] == COLLECTION
    assert catalogue["DateReleased"] == "2024-01-15"
    assert catalogue["Public"] is True
    assert catalogue["LicenseURI"] == "https://creativecommons.org/licenses/by/3.0/"
    assert len(catalogue["SeriesDateReleased"]) == 6
    assert set(catalogue["SeriesDateReleased"].values()) == {"2024-01-15"}
    assert Counter(entry["modality"] for entry in catalogue["Series"]) == {"MR": 4, "SEG": 2}
    assert catalogue["Generator"]["slice_step"] == SLICE_STEP


def test_every_instance_reads_back_with_tcia_like_headers(
    datasets: dict[Path, pydicom.Dataset],
) -> None:
    assert len(datasets) == 66
    for ds in datasets.values():
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.PatientID in CASES
        assert ds.PatientName == ds.PatientID
        assert ds.PatientBirthDate == ""
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethod == bd.DEIDENTIFICATION_METHOD
        assert ds.BodyPartExamined == "BRAIN"
        assert ds.private_block(0x0013, "CTP")[0x10].value == COLLECTION
        assert ds[0x0013, 0x0010].value == "CTP"
        assert ds[0x0013, 0x1010].value == COLLECTION
    images = [ds for ds in datasets.values() if ds.Modality == "MR"]
    assert len(images) == 64
    for ds in images:
        assert ds.SOPClassUID == pydicom.uid.MRImageStorage
        assert ds.SeriesDescription in SEQUENCES
        assert (ds.Rows, ds.Columns) == (SIZE_PX, SIZE_PX)
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (
            16,
            16,
            15,
            1,
        )
        assert (ds.RescaleSlope, ds.RescaleIntercept) == (1, 0)
        assert ds.PhotometricInterpretation == "MONOCHROME2"
        assert float(ds.WindowWidth) > 0
        assert ds.pixel_array.dtype == np.int16


def test_pixels_are_the_block_means_of_the_nifti_slices(
    datasets: dict[Path, pydicom.Dataset],
) -> None:
    for case in CASES:
        for sequence in SEQUENCES:
            volume = np.asarray(_nifti(case, sequence).dataobj)
            series = _series(datasets, case, sequence)
            assert len(series) == len(SLICE_INDICES)
            for ds, k in zip(series, SLICE_INDICES, strict=True):
                expected = volume[:, :, k].T.astype(np.float64)
                expected = expected.reshape(SIZE_PX, 4, SIZE_PX, 4).mean(axis=(1, 3))
                np.testing.assert_array_equal(ds.pixel_array, np.rint(expected).astype(np.int16))


def test_geometry_maps_every_pixel_to_the_nifti_world_coordinate(
    datasets: dict[Path, pydicom.Dataset],
) -> None:
    rows, columns = np.meshgrid(np.arange(SIZE_PX), np.arange(SIZE_PX), indexing="ij")
    for case in CASES:
        affine = _nifti(case, "seg").affine
        for sequence in SEQUENCES:
            for ds, k in zip(_series(datasets, case, sequence), SLICE_INDICES, strict=True):
                position = np.array([float(v) for v in ds.ImagePositionPatient])
                orientation = [float(v) for v in ds.ImageOrientationPatient]
                # Anterior at the top (rows run to posterior), patient's left on the right.
                assert orientation == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
                row_spacing, column_spacing = (float(v) for v in ds.PixelSpacing)
                assert (row_spacing, column_spacing) == (4.0, 4.0)
                assert float(ds.SliceThickness) == 1.0
                assert float(ds.SpacingBetweenSlices) == 10.0
                world_dicom = (
                    position
                    + columns[..., None] * column_spacing * np.array(orientation[:3])
                    + rows[..., None] * row_spacing * np.array(orientation[3:])
                )
                # Pixel (r, c) is the centre of the voxel block i = 4c..4c+3, j = 4r..4r+3.
                voxels = np.stack(
                    [columns * 4 + 1.5, rows * 4 + 1.5, np.full(rows.shape, float(k))], axis=-1
                )
                world_ras = nib.affines.apply_affine(affine, voxels)
                world_lps = world_ras * np.array([-1.0, -1.0, 1.0])
                np.testing.assert_array_equal(world_dicom, world_lps)


def test_series_of_a_case_share_study_frame_of_reference_and_geometry(
    datasets: dict[Path, pydicom.Dataset],
) -> None:
    keys = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
    frames_of_reference = set()
    for case in CASES:
        t1ce, flair = (_series(datasets, case, sequence) for sequence in SEQUENCES)
        _, seg = _seg(datasets, case)
        everything = [*t1ce, *flair, seg]
        assert len({ds.StudyInstanceUID for ds in everything}) == 1
        assert len({ds.FrameOfReferenceUID for ds in everything}) == 1
        assert len({ds.SeriesInstanceUID for ds in everything}) == 3
        for first, second in zip(t1ce, flair, strict=True):
            assert [first.get(key) for key in keys] == [second.get(key) for key in keys]
        frames_of_reference.add(seg.FrameOfReferenceUID)
    assert len(frames_of_reference) == 2


def test_seg_reads_back_and_equals_the_resampled_brats_mask(
    datasets: dict[Path, pydicom.Dataset],
) -> None:
    for case in CASES:
        path, _ = _seg(datasets, case)
        seg = hd.seg.segread(path)
        source = _series(datasets, case, "t1ce")
        assert seg.SegmentationType == "BINARY"
        assert seg.SeriesDescription == "BraTS tumor segmentation (t1ce)"
        assert sorted(seg.get_source_image_uids()) == sorted(
            (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in source
        )
        assert [
            (
                int(item.SegmentNumber),
                item.SegmentLabel,
                item.SegmentDescription,
                item.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
                item.SegmentedPropertyTypeCodeSequence[0].CodeValue,
                item.SegmentAlgorithmType,
            )
            for item in seg.SegmentSequence
        ] == [
            (
                1,
                "Necrotic and non-enhancing tumor core",
                "BraTS label 1",
                "49755003",
                "6574001",
                "MANUAL",
            ),
            (2, "Peritumoral edema", "BraTS label 2", "49755003", "79654002", "MANUAL"),
            (3, "Enhancing tumor", "BraTS label 4", "49755003", "108369006", "MANUAL"),
        ]
        labels = np.asarray(_nifti(case, "seg").dataobj)
        expected = np.stack(
            [bd.block_mode_labels(labels[:, :, k].T, IN_PLANE_STEP) for k in SLICE_INDICES]
        )
        pixels = seg.get_pixels_by_source_instance(
            [ds.SOPInstanceUID for ds in source], assert_missing_frames_are_empty=True
        )
        assert pixels.shape == (len(SLICE_INDICES), SIZE_PX, SIZE_PX, 3)
        for index, value in enumerate((1, 2, 4)):
            np.testing.assert_array_equal(pixels[..., index], (expected == value).astype(np.uint8))
        # Empty frames are omitted: one frame per (slice, segment) with pixels.
        non_empty = sum(
            int((expected[i] == value).any())
            for i in range(len(SLICE_INDICES))
            for value in (1, 2, 4)
        )
        assert int(seg.NumberOfFrames) == non_empty
        assert int(seg.NumberOfFrames) < 3 * len(SLICE_INDICES)


def test_nbia_server_lists_and_downloads_the_collection(
    written: tuple[Path, bd.BratsCollectionSummary],
) -> None:
    out_dir, _ = written
    with serve(out_dir) as server, httpx.Client(base_url=server.url, timeout=30.0) as client:
        response = client.get("getSeries", params={"Collection": COLLECTION})
        response.raise_for_status()
        rows = response.json()
        assert len(rows) == 6
        assert Counter(row["Modality"] for row in rows) == {"MR": 4, "SEG": 2}
        assert {row["PatientID"] for row in rows} == set(CASES)
        assert {row["SeriesDescription"] for row in rows if row["Modality"] == "MR"} == set(
            SEQUENCES
        )
        assert {row["BodyPartExamined"] for row in rows} == {"BRAIN"}
        assert {row["DateReleased"] for row in rows} == {"01-15-2024"}
        flair = next(
            row
            for row in rows
            if row["PatientID"] == CASES[0] and row["SeriesDescription"] == "flair"
        )
        assert flair["ImageCount"] == 16
        download = client.get("getImage", params={"SeriesInstanceUID": flair["SeriesInstanceUID"]})
        download.raise_for_status()
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    names = archive.namelist()
    assert names[0] == "LICENSE"
    assert names[1:] == [f"{index:08d}.dcm" for index in range(1, 17)]
    on_disk = sorted((out_dir / COLLECTION / CASES[0]).rglob(f"{flair['SeriesInstanceUID']}/*.dcm"))
    assert len(on_disk) == 16
    assert sorted(hashlib.md5(archive.read(name)).hexdigest() for name in names[1:]) == sorted(
        hashlib.md5(path.read_bytes()).hexdigest() for path in on_disk
    )
    first = pydicom.dcmread(io.BytesIO(archive.read(names[1])))
    assert first.SeriesInstanceUID == flair["SeriesInstanceUID"]
    assert first.private_block(0x0013, "CTP")[0x10].value == COLLECTION


def test_reruns_are_byte_identical_and_replace_atomically(
    written: tuple[Path, bd.BratsCollectionSummary], tmp_path: Path
) -> None:
    out_dir, _ = written
    reference = _tree(out_dir / COLLECTION)
    _generate(tmp_path)
    assert _tree(tmp_path / COLLECTION) == reference
    _generate(tmp_path)  # replaces the existing collection folder
    assert _tree(tmp_path / COLLECTION) == reference
    assert [p.name for p in tmp_path.iterdir()] == [COLLECTION]


def test_only_brain_slices_and_seg_on_another_series(tmp_path: Path) -> None:
    case = CASES[1]
    summary = bd.generate_brats_collection(
        BRATS_DIR,
        tmp_path,
        collection=COLLECTION,
        cases=[case],
        sequences=SEQUENCES,
        slice_step=SLICE_STEP,
        in_plane_step=IN_PLANE_STEP,
        only_brain_slices=True,
        seg_series="flair",
    )
    volumes = [np.asarray(_nifti(case, sequence).dataobj) for sequence in SEQUENCES]
    brain = [k for k in SLICE_INDICES if any(v[:, :, k].any() for v in volumes)]
    assert summary.slices_by_case == {case: len(brain)}
    assert len(brain) == 14
    assert summary.seg_sequence == "flair"
    files = {p: pydicom.dcmread(p, stop_before_pixels=True) for p in tmp_path.rglob("*.dcm")}
    flair = sorted(
        (ds for ds in files.values() if ds.Modality == "MR" and ds.SeriesDescription == "flair"),
        key=lambda ds: int(ds.InstanceNumber),
    )
    positions = [float(ds.ImagePositionPatient[2]) for ds in flair]
    assert positions == [float(k) for k in brain]
    (seg_path,) = [p for p, ds in files.items() if ds.Modality == "SEG"]
    seg = hd.seg.segread(seg_path)
    assert {uids[1] for uids in seg.get_source_image_uids()} == {flair[0].SeriesInstanceUID}
