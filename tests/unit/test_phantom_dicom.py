"""The phantom DICOM collection: real files, consistent headers, every encoding, labels."""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    BasicTextSRStorage,
    EnhancedMRImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
    SegmentationStorage,
)

from devkit.phantom import dicom as phantom_dicom
from devkit.phantom import generate_dicom_collection

COLLECTION = "TEST-PHANTOM"
OPTIONS = {"n_patients": 4, "image_size_px": 48, "slices_per_series": (4, 6)}
ALL_ENCODINGS = {
    "explicit_le",
    "implicit_le",
    "big_endian",
    "rle",
    "jpeg2000",
    "jpegls",
    "monochrome1",
    "multiframe",
}


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("dicom") / COLLECTION
    return generate_dicom_collection(out, COLLECTION, seed=5, **OPTIONS)


@pytest.fixture(scope="module")
def datasets(collection) -> dict[Path, Dataset]:
    return {path: dcmread(path) for path in sorted(collection.out_dir.rglob("*.dcm"))}


def _labels(root: Path) -> list[dict[str, str]]:
    with open(root / "labels.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


_LEVEL_COLUMNS = {
    "patient": "PatientID",
    "series": "SeriesInstanceUID",
    "instance": "SOPInstanceUID",
}


def _identifier(row: dict[str, str]) -> str:
    """The row's one filled identifier, which must sit in the column its level names."""
    filled = [name for name in _LEVEL_COLUMNS.values() if row[name]]
    assert filled == [_LEVEL_COLUMNS[row["level"]]], row
    return row[filled[0]]


def _resolve(rows: list[dict[str, str]], ds: Dataset) -> str | None:
    """The most specific label of an image: instance, then series, then patient."""
    table = {(row["level"], _identifier(row)): row["label"] for row in rows}
    for key in (
        ("instance", ds.SOPInstanceUID),
        ("series", ds.SeriesInstanceUID),
        ("patient", ds.PatientID),
    ):
        if key in table:
            return table[key]
    return None


def test_summary_counts_every_encoding_and_object_kind(collection, datasets) -> None:
    assert (collection.n_patients, collection.n_tumor_patients) == (4, 2)
    assert set(collection.series_by_encoding) == ALL_ENCODINGS
    assert all(collection.series_by_encoding[name] == 1 for name in ALL_ENCODINGS - {"explicit_le"})
    assert collection.series_by_modality == {
        "MR": collection.n_image_series,
        "SEG": 1,
        "SR": 2,
    }
    assert collection.n_instances == len(datasets)
    assert sum(collection.instances_by_transfer_syntax.values()) == len(datasets)
    syntaxes = {ds.file_meta.TransferSyntaxUID for ds in datasets.values()}
    assert syntaxes == {
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        ExplicitVRBigEndian,
        RLELossless,
        JPEG2000Lossless,
        JPEGLSLossless,
    }


def test_files_sit_at_patient_study_series_paths_named_by_their_headers(
    collection, datasets
) -> None:
    root = collection.out_dir
    top = sorted(path.name for path in root.iterdir())
    assert top == [
        "PHANTOM-001",
        "PHANTOM-002",
        "PHANTOM-003",
        "PHANTOM-004",
        "catalogue.json",
        "labels.csv",
    ]
    for path, ds in datasets.items():
        patient, study, series, name = path.relative_to(root).parts
        assert (ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID) == (patient, study, series)
        assert name == f"{int(ds.InstanceNumber):04d}.dcm"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    uids = [ds.SOPInstanceUID for ds in datasets.values()]
    assert len(set(uids)) == len(uids)
    assert all(uid.startswith("2.25.") for uid in uids)


def test_headers_are_de_identified_and_consistent(datasets) -> None:
    by_series: dict[str, list[Dataset]] = defaultdict(list)
    for ds in datasets.values():
        assert ds.PatientName == ""
        assert ds.PatientBirthDate == ""
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethod
        assert ds.Manufacturer == "braincls-phantom"
        assert ds.BodyPartExamined == "BRAIN"
        # TCIA's CTP private block names the collection; Implicit VR reads it back as UN bytes.
        project = ds[0x0013, 0x1010].value
        if isinstance(project, bytes):
            project = project.decode("ascii").rstrip(" \x00")
        assert project == COLLECTION
        by_series[ds.SeriesInstanceUID].append(ds)
    for series in by_series.values():
        first = series[0]
        assert len({ds.StudyInstanceUID for ds in series}) == 1
        assert len({ds.SeriesNumber for ds in series}) == 1
        if first.SOPClassUID != MRImageStorage:
            continue
        series.sort(key=lambda ds: int(ds.InstanceNumber))
        assert [int(ds.InstanceNumber) for ds in series] == list(range(1, len(series) + 1))
        assert {ds.Modality for ds in series} == {"MR"}
        assert len({ds.FrameOfReferenceUID for ds in series}) == 1
        heights = [float(ds.ImagePositionPatient[2]) for ds in series]
        assert heights == sorted(heights) and len(set(heights)) == len(heights)
        assert [float(ds.SliceLocation) for ds in series] == pytest.approx(heights)
        spacing = float(first.SpacingBetweenSlices)
        assert np.diff(heights) == pytest.approx([spacing] * (len(series) - 1), abs=1e-3)
        assert float(first.SliceThickness) <= spacing + 1e-6
        assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        row_mm, col_mm = (float(v) for v in first.PixelSpacing)
        assert row_mm == col_mm
        assert (first.Rows, first.Columns) == (48, 48)
        assert first.BitsAllocated == 16 and first.BitsStored in (12, 16)
        assert first.HighBit == first.BitsStored - 1
        # The first pixel's centre sits half a pixel inside the field of view's corner.
        assert float(first.ImagePositionPatient[0]) == pytest.approx(
            -first.Columns * col_mm / 2 + col_mm / 2, abs=1e-3
        )


def test_every_image_decodes_within_its_stored_bits(datasets) -> None:
    decoded_syntaxes = set()
    for ds in datasets.values():
        if ds.Modality not in ("MR", "SEG"):
            continue
        pixels = ds.pixel_array
        frames = int(ds.get("NumberOfFrames", 1))
        expected = (ds.Rows, ds.Columns) if frames == 1 else (frames, ds.Rows, ds.Columns)
        assert pixels.shape == expected
        assert int(pixels.max()) <= (1 << ds.BitsStored) - 1
        assert int(pixels.max()) > int(pixels.min())
        decoded_syntaxes.add(ds.file_meta.TransferSyntaxUID)
    assert len(decoded_syntaxes) == 6


def test_every_encoding_holds_exactly_the_plain_pixels(collection, datasets, tmp_path) -> None:
    """The same seed without special encodings gives the same series in plain Explicit VR LE."""
    plain = generate_dicom_collection(
        tmp_path / "plain", COLLECTION, seed=5, encodings=(), **OPTIONS
    )
    plain_by_uid = {}
    for path in plain.out_dir.rglob("*.dcm"):
        ds = dcmread(path)
        plain_by_uid[(ds.SeriesInstanceUID, int(ds.InstanceNumber))] = ds
    assert plain.series_by_encoding == {"explicit_le": collection.n_image_series}
    assert plain.n_image_series == collection.n_image_series

    seen = set()
    for ds in datasets.values():
        if ds.Modality != "MR":
            continue
        if ds.SOPClassUID == EnhancedMRImageStorage:
            frames = ds.pixel_array
            for index in range(frames.shape[0]):
                reference = plain_by_uid[(ds.SeriesInstanceUID, index + 1)]
                assert np.array_equal(frames[index], reference.pixel_array)
            seen.add("multiframe")
            continue
        reference = plain_by_uid[(ds.SeriesInstanceUID, int(ds.InstanceNumber))]
        expected = reference.pixel_array.astype(np.int64)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            expected = (1 << ds.BitsStored) - 1 - expected
            seen.add("monochrome1")
        assert np.array_equal(ds.pixel_array.astype(np.int64), expected)
        seen.add(ds.file_meta.TransferSyntaxUID.name)
    assert len(seen) == 8


def test_some_series_carry_rescale_and_window_and_16_bits(datasets) -> None:
    single = [ds for ds in datasets.values() if ds.SOPClassUID == MRImageStorage]

    assert any("RescaleSlope" in ds for ds in single)
    assert any("RescaleSlope" not in ds for ds in single)
    assert any("WindowCenter" in ds for ds in single)
    assert any("WindowCenter" not in ds for ds in single)
    assert {ds.BitsStored for ds in single} == {12, 16}
    assert {int(ds.AcquisitionNumber) for ds in single} == {1, 2}
    for ds in single:
        if "RescaleSlope" in ds:
            assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (2.0, -100.0)


def test_multi_frame_series_describes_each_frame(datasets) -> None:
    enhanced = [ds for ds in datasets.values() if ds.SOPClassUID == EnhancedMRImageStorage]

    assert len(enhanced) == 1
    ds = enhanced[0]
    frames = int(ds.NumberOfFrames)
    assert 4 <= frames <= 6
    assert len(ds.PerFrameFunctionalGroupsSequence) == frames
    heights = [
        float(group.PlanePositionSequence[0].ImagePositionPatient[2])
        for group in ds.PerFrameFunctionalGroupsSequence
    ]
    assert heights == sorted(heights)
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert len(shared.PixelMeasuresSequence[0].PixelSpacing) == 2


def test_non_image_objects_have_no_pixel_data_or_reference_tumor_slices(
    collection, datasets
) -> None:
    reports = [ds for ds in datasets.values() if ds.Modality == "SR"]
    segmentations = [ds for ds in datasets.values() if ds.Modality == "SEG"]
    rows = _labels(collection.out_dir)

    assert len(reports) == 2
    for ds in reports:
        assert ds.SOPClassUID == BasicTextSRStorage
        assert "PixelData" not in ds
        assert ds.ContentSequence[0].TextValue.startswith("Synthetic phantom.")
    assert len(segmentations) == 1
    seg = segmentations[0]
    assert seg.SOPClassUID == SegmentationStorage
    assert set(np.unique(seg.pixel_array)) == {0, 1}
    referenced = seg.ReferencedSeriesSequence[0]
    source = {
        ds.SOPInstanceUID: ds
        for ds in datasets.values()
        if ds.SeriesInstanceUID == referenced.SeriesInstanceUID
    }
    referenced_uids = {
        item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence
    }
    tumor_slices = {uid for uid, ds in source.items() if _resolve(rows, ds) == "yes"}
    assert referenced_uids == tumor_slices
    assert int(seg.NumberOfFrames) == len(tumor_slices)


def test_labels_cover_every_image_and_follow_the_tumor(collection, datasets) -> None:
    rows = _labels(collection.out_dir)
    with open(collection.out_dir / "labels.csv", encoding="utf-8") as handle:
        header = handle.readline().strip()

    assert header == "level,PatientID,SeriesInstanceUID,SOPInstanceUID,label"
    assert {row["level"] for row in rows} <= {"patient", "series", "instance"}
    assert {row["label"] for row in rows} == {"yes", "no"}
    patient_rows = {row["PatientID"]: row["label"] for row in rows if row["level"] == "patient"}
    assert sorted(patient_rows) == ["PHANTOM-001", "PHANTOM-002", "PHANTOM-003", "PHANTOM-004"]
    assert sorted(patient_rows.values()) == ["no", "no", "yes", "yes"]
    images = [ds for ds in datasets.values() if ds.Modality == "MR"]
    labelled = {ds.SOPInstanceUID: _resolve(rows, ds) for ds in images}
    assert None not in labelled.values()
    for ds in images:
        if patient_rows[ds.PatientID] == "no":
            assert labelled[ds.SOPInstanceUID] == "no"
    # Every tumor patient has tumor slices, and also slices that miss the tumor.
    for patient, label in patient_rows.items():
        if label == "yes":
            own = [labelled[ds.SOPInstanceUID] for ds in images if ds.PatientID == patient]
            assert set(own) == {"yes", "no"}
    referenced = {_identifier(row) for row in rows if row["level"] in ("series", "instance")}
    known = {ds.SOPInstanceUID for ds in images} | {ds.SeriesInstanceUID for ds in images}
    assert referenced <= known


def test_catalogue_lists_every_series_with_iso_release_dates(collection, datasets) -> None:
    catalogue = json.loads((collection.out_dir / "catalogue.json").read_text())
    files_per_series: dict[str, int] = defaultdict(int)
    for ds in datasets.values():
        files_per_series[ds.SeriesInstanceUID] += 1
    series_study = {ds.SeriesInstanceUID: (ds.PatientID, ds.StudyDate) for ds in datasets.values()}
    first_study_date = {
        patient: min(day for other, day in series_study.values() if other == patient)
        for patient, _ in series_study.values()
    }

    assert catalogue["Collection"] == COLLECTION
    assert catalogue["DateReleased"] == "2024-01-15"
    assert catalogue["Public"] is True
    assert {
        entry["series_instance_uid"]: entry["image_count"] for entry in catalogue["Series"]
    } == files_per_series
    released = {
        uid: date.fromisoformat(day) for uid, day in catalogue["SeriesDateReleased"].items()
    }
    assert released.keys() == files_per_series.keys()
    # A patient's first study is released with the collection, a follow-up 90 days later.
    for uid, day in released.items():
        patient, study_date = series_study[uid]
        follow_up = study_date != first_study_date[patient]
        assert day == (date(2024, 4, 14) if follow_up else date(2024, 1, 15)), uid
    assert set(released.values()) == {date(2024, 1, 15), date(2024, 4, 14)}


def test_labels_and_catalogue_are_read_by_the_converter_and_the_nbia_server(
    collection, datasets
) -> None:
    from braincls.convert.labels import load_labels
    from devkit.nbia.catalogue import Catalogue

    table = load_labels(collection.out_dir / "labels.csv")
    rows = _labels(collection.out_dir)
    served = Catalogue.scan(collection.out_dir.parent)

    assert table.classes == ("no", "yes")
    for ds in datasets.values():
        if ds.Modality == "MR":
            assert table.lookup(
                sop_instance_uid=ds.SOPInstanceUID,
                series_instance_uid=ds.SeriesInstanceUID,
                patient_id=ds.PatientID,
                collection=COLLECTION,
            ) == _resolve(rows, ds)
    assert list(served.collections) == [COLLECTION]
    assert served.collections[COLLECTION].date_released == date(2024, 1, 15)
    assert len(served.series) == collection.n_series
    assert sum(series.image_count for series in served.series.values()) == len(datasets)


def test_same_seed_gives_identical_files_and_another_seed_new_uids(collection, tmp_path) -> None:
    again = generate_dicom_collection(tmp_path / "again", COLLECTION, seed=5, **OPTIONS)
    other = generate_dicom_collection(tmp_path / "other", COLLECTION, seed=6, **OPTIONS)

    def contents(root: Path) -> dict[str, bytes]:
        return {
            path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }

    first = contents(collection.out_dir)
    assert first == contents(again.out_dir)
    other_names = set(contents(other.out_dir))
    dicom_names = {name for name in first if name.endswith(".dcm")}
    assert not dicom_names & other_names


def test_missing_encoder_falls_back_to_explicit_little_endian(
    tmp_path, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(phantom_dicom, "_encoder_available", lambda encoding: encoding != "jpegls")
    with caplog.at_level(logging.WARNING, logger="devkit.phantom.dicom"):
        summary = generate_dicom_collection(tmp_path / "c", COLLECTION, seed=5, **OPTIONS)

    assert "jpegls" not in summary.series_by_encoding
    assert JPEGLSLossless.name not in summary.instances_by_transfer_syntax
    assert "no encoder installed for jpegls" in caplog.text


def test_bad_arguments_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="n_patients must be at least 2"):
        generate_dicom_collection(tmp_path / "a", n_patients=1)
    with pytest.raises(ValueError, match="unknown encodings"):
        generate_dicom_collection(tmp_path / "b", encodings=("mpeg",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="slices_per_series"):
        generate_dicom_collection(tmp_path / "c", slices_per_series=(5, 3))
    assert list(tmp_path.iterdir()) == []
