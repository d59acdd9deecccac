"""DICOM conversion: synthetic edge cases, pydicom's bundled files, PHI, the per-series cache."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    MPEG2MPML,
    UID,
    BasicTextSRStorage,
    CTImageStorage,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)

from braincls.common.tables import IMAGE_COLUMNS, PHI_COLUMNS, QUARANTINE_COLUMNS
from braincls.config import ConvertConfig
from braincls.convert import (
    CONVERTER_VERSION,
    DICOM_MANIFEST_COLUMNS,
    DICOM_QUARANTINE_COLUMNS,
    LabelTable,
    SeriesUnit,
    convert_series,
    convert_tree,
    tree,
)
from braincls.convert.reading import md5_file, pseudonymize
from braincls.data.fingerprint import perceptual_hash

EVERYTHING_IS_TUMOR = LabelTable(by_collection={"*": "tumor"})
STUDY_UID = "1.2.826.0.1.3680043.8.498.100"
SERIES_UID = "1.2.826.0.1.3680043.8.498.200"


def exact(**changes: object) -> ConvertConfig:
    """Exact-number config: output size equals the synthetic size, full-range percentiles."""
    values: dict[str, object] = {
        "image_size_px": 8,
        "skip_background_slices": False,
        "percentile_low": 0,
        "percentile_high": 100,
    }
    return ConvertConfig.model_validate(values | changes)


EXACT = exact()


def make_mr(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    series_uid: str = SERIES_UID,
    patient_id: str = "PAT-1",
    modality: str = "MR",
    sop_class: str = MRImageStorage,
    **elements: object,
) -> Dataset:
    """A minimal image dataset built with pydicom's set_pixel_data."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.SOPClassUID = UID(sop_class)
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = series_uid
    array = np.asarray(pixels)
    ds.set_pixel_data(array, photometric, array.dtype.itemsize * 8)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def convert_one(
    path: Path, tmp_path: Path, config: ConvertConfig = EXACT
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Convert the folder holding ``path``; return the images manifest and the quarantine."""
    result = convert_tree(path.parent, tmp_path / "out", config, EVERYTHING_IS_TUMOR, workers=1)
    return pd.read_parquet(result.images_manifest), pd.read_parquet(result.quarantine_table)


def png(path: object) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def ramp() -> np.ndarray:
    return np.arange(64, dtype=np.uint16).reshape(8, 8)


# ---------------------------------------------------------------------------------------------
# Pixel pipeline on whole files


def test_monochrome1_is_inverted_so_tissue_is_bright(tmp_path: Path) -> None:
    ds = make_mr(ramp(), photometric="MONOCHROME1")
    images, quarantine = convert_one(save(ds, tmp_path / "src" / "a.dcm"), tmp_path)
    assert quarantine.empty
    out = png(images.source_path[0])
    expected = np.rint(255 - ramp() * 255 / 63).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0] == 255 and out[7, 7] == 0
    assert images.window_source[0] == "percentile"


def test_signed_pixels_with_a_window(tmp_path: Path) -> None:
    stored = (np.arange(64, dtype=np.int16) - 32).reshape(8, 8)
    ds = make_mr(stored, WindowCenter=0, WindowWidth=64)
    assert ds.PixelRepresentation == 1
    images, _ = convert_one(save(ds, tmp_path / "src" / "a.dcm"), tmp_path)
    out = png(images.source_path[0])
    # LINEAR window c=0 w=64: 0 at or below -32, ((x + 0.5) / 63 + 0.5) * 255 up to 31.
    expected = np.clip(np.rint(((stored + 0.5) / 63 + 0.5) * 255), 0, 255)
    expected[stored <= -32] = 0
    np.testing.assert_array_equal(out, expected.astype(np.uint8))
    assert (out[0, 0], out[4, 0], out[7, 7]) == (0, 130, 255)


def test_rescale_slope_intercept_then_window_and_native_16_bit(tmp_path: Path) -> None:
    ds = make_mr(ramp(), RescaleSlope=2, RescaleIntercept=-10, WindowCenter=50, WindowWidth=101)
    config = exact(write_native_16bit=True)
    images, _ = convert_one(save(ds, tmp_path / "src" / "a.dcm"), tmp_path, config)
    rescaled = ramp() * 2.0 - 10
    expected = np.clip(np.rint(((rescaled - 49.5) / 100 + 0.5) * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(png(images.source_path[0]), expected)
    native = png(images.native_path[0])
    assert native.dtype == np.uint16 and native.shape == (8, 8)
    np.testing.assert_array_equal(native, np.clip(rescaled, 0, None).astype(np.uint16))


def test_voi_lut_sequence_is_preferred_over_the_window(tmp_path: Path) -> None:
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [32, 16, 8])
    # 32 entries 0, 8, ..., 248 as OW (bytes in the dataset's byte order).
    item.add_new("LUTData", "OW", np.arange(0, 256, 8, dtype="<u2").tobytes())
    ds = make_mr(ramp(), VOILUTSequence=Sequence([item]), WindowCenter=5, WindowWidth=3)
    images, _ = convert_one(save(ds, tmp_path / "src" / "a.dcm"), tmp_path)
    expected = np.clip(ramp().astype(np.int64) - 16, 0, 31) * 8
    np.testing.assert_array_equal(png(images.source_path[0]), expected.astype(np.uint8))
    assert images.window_source[0] == "voi_lut_sequence"


def test_multi_valued_window_uses_the_first_pair(tmp_path: Path) -> None:
    ds = make_mr(ramp(), WindowCenter=[20, 1000], WindowWidth=[41, 10])
    images, _ = convert_one(save(ds, tmp_path / "src" / "a.dcm"), tmp_path)
    stored = ramp().astype(np.float64)
    expected = np.clip(np.rint(((stored - 19.5) / 40 + 0.5) * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(png(images.source_path[0]), expected)


def test_one_pixel_image(tmp_path: Path) -> None:
    ds = make_mr(np.array([[500]], dtype=np.uint16), WindowCenter=500, WindowWidth=100)
    images, quarantine = convert_one(
        save(ds, tmp_path / "src" / "a.dcm"), tmp_path, ConvertConfig(image_size_px=8)
    )
    assert quarantine.empty
    # ((500 - 499.5) / 99 + 0.5) * 255 = 128.79 everywhere in the 8x8 output.
    np.testing.assert_array_equal(png(images.source_path[0]), np.full((8, 8), 129, np.uint8))
    assert (images.rows[0], images.cols[0], images.width[0], images.height[0]) == (1, 1, 8, 8)


def test_large_image_is_area_averaged_to_the_training_size(tmp_path: Path) -> None:
    stored = np.zeros((2048, 2048), dtype=np.uint16)
    stored[:, 1024:] = 1000
    images, _ = convert_one(
        save(make_mr(stored), tmp_path / "src" / "a.dcm"), tmp_path, ConvertConfig()
    )
    out = png(images.source_path[0])
    assert out.shape == (256, 256)
    np.testing.assert_array_equal(out[:, :128], 0)
    np.testing.assert_array_equal(out[:, 128:], 255)
    assert (images.rows[0], images.cols[0]) == (2048, 2048)


@pytest.mark.parametrize(("spacing", "bright_rows"), [([2.0, 1.0], (0, 16)), ([1.0, 1.0], (4, 12))])
def test_non_square_pixels_keep_the_physical_aspect(
    tmp_path: Path, spacing: list[float], bright_rows: tuple[int, int]
) -> None:
    stored = np.full((64, 128), 1000, dtype=np.uint16)
    ds = make_mr(stored, PixelSpacing=spacing, WindowCenter=500, WindowWidth=100)
    config = ConvertConfig(image_size_px=16)
    images, _ = convert_one(save(ds, tmp_path / "src" / "a.dcm"), tmp_path, config)
    out = png(images.source_path[0])
    expected = np.zeros((16, 16), np.uint8)
    expected[bright_rows[0] : bright_rows[1]] = 255
    np.testing.assert_array_equal(out, expected)
    assert images.pixel_spacing_row_mm[0] == spacing[0]
    assert images.pixel_spacing_col_mm[0] == spacing[1]


def test_multi_frame_gives_one_image_per_frame(tmp_path: Path) -> None:
    frames = np.stack([ramp(), ramp() * 2, ramp() * 3]).astype(np.uint16)
    ds = make_mr(frames)
    images, _ = convert_one(save(ds, tmp_path / "src" / "a.dcm"), tmp_path)
    sop = ds.SOPInstanceUID
    assert list(images.sample_id) == [f"{sop}#0", f"{sop}#1", f"{sop}#2"]
    assert [Path(p).name for p in images.source_path] == [
        f"{sop}_00000.png",
        f"{sop}_00001.png",
        f"{sop}_00002.png",
    ]
    assert list(images.frame_index) == [0, 1, 2]


def test_enhanced_mr_functional_groups_give_per_frame_position_and_window(
    tmp_path: Path,
) -> None:
    frames = np.stack([ramp(), ramp()]).astype(np.uint16)
    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = Sequence([orientation])
    per_frame = []
    for z_mm, (center, width) in zip((-5.0, 7.5), ((31.5, 64.0), (10.5, 2.0)), strict=True):
        group = Dataset()
        position = Dataset()
        position.ImagePositionPatient = [0, 0, z_mm]
        group.PlanePositionSequence = Sequence([position])
        voi = Dataset()
        voi.WindowCenter = center
        voi.WindowWidth = width
        group.FrameVOILUTSequence = Sequence([voi])
        per_frame.append(group)
    ds = make_mr(
        frames,
        sop_class=EnhancedMRImageStorage,
        SharedFunctionalGroupsSequence=Sequence([shared]),
        PerFrameFunctionalGroupsSequence=Sequence(per_frame),
    )
    images, _ = convert_one(save(ds, tmp_path / "src" / "a.dcm"), tmp_path)
    assert list(images.slice_position) == [-5.0, 7.5]
    first, second = (png(path) for path in images.source_path)
    # Frame 0: c=31.5 w=64 spans -0.5..62: ((x - 31) / 63 + 0.5) * 255.
    expected = np.clip(np.rint(((ramp() - 31.0) / 63 + 0.5) * 255), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(first, expected)
    # Frame 1: c=10.5 w=2 spans 9.5..10.5: 0 up to 9, 127.5 (rounded to 128) at 10, 255 above.
    expected = np.select([ramp() <= 9, ramp() == 10], [0, 128], 255).astype(np.uint8)
    np.testing.assert_array_equal(second, expected)


def test_gzip_wrapped_file_converts_like_the_plain_one(tmp_path: Path) -> None:
    ds = make_mr(ramp())
    plain = save(ds, tmp_path / "plain" / "a.dcm")
    wrapped = tmp_path / "wrapped" / "a.dcm.gz"
    wrapped.parent.mkdir()
    wrapped.write_bytes(gzip.compress(plain.read_bytes()))
    plain_images, _ = convert_one(plain, tmp_path / "1")
    wrapped_images, _ = convert_one(wrapped, tmp_path / "2")
    assert len(wrapped_images) == 1
    assert wrapped_images.sha256[0] == plain_images.sha256[0]


# ---------------------------------------------------------------------------------------------
# Files set aside, each with its reason


def _encapsulated_mpeg2(tmp_path: Path) -> Path:
    ds = make_mr(ramp())
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 60])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    return save(ds, tmp_path / "src" / "mpeg2.dcm")


def test_every_kind_of_unusable_file_is_set_aside_with_its_reason(tmp_path: Path) -> None:
    src = tmp_path / "src"
    save(make_mr(ramp(), series_uid=SERIES_UID + ".1"), src / "good.dcm")
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.SOPClassUID = BasicTextSRStorage
    sr.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.300"
    sr.SeriesInstanceUID = SERIES_UID + ".2"
    sr.Modality = "SR"
    save(sr, src / "report.dcm")
    save(
        make_mr(ramp(), modality="CT", sop_class=CTImageStorage, series_uid=SERIES_UID + ".3"),
        src / "ct.dcm",
    )
    no_pixels = make_mr(ramp(), series_uid=SERIES_UID + ".4")
    del no_pixels.PixelData
    save(no_pixels, src / "no_pixels.dcm")
    truncated = make_mr(ramp(), series_uid=SERIES_UID + ".5")
    truncated.PixelData = truncated.PixelData[:100]
    save(truncated, src / "truncated.dcm")
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    save(make_mr(rgb, photometric="RGB", series_uid=SERIES_UID + ".6"), src / "rgb.dcm")
    _encapsulated_mpeg2(tmp_path)
    (src / "empty.dcm").write_bytes(b"")
    (src / "notes.txt").write_text("scanner export notes\n")
    (src / "LICENSE").write_text("CC BY 3.0\n")
    (src / "md5hashes.csv").write_text("md5,file\n")

    result = convert_tree(src, tmp_path / "out", EXACT, EVERYTHING_IS_TUMOR, workers=1)
    quarantine = pd.read_parquet(result.quarantine_table)
    reasons = dict(zip(quarantine.relative_path, quarantine.reason, strict=True))
    assert reasons == {
        "ct.dcm": "other_modality",
        "empty.dcm": "empty_file",
        "mpeg2.dcm": "undecodable_transfer_syntax",
        "no_pixels.dcm": "no_pixel_data",
        "notes.txt": "not_dicom",
        "report.dcm": "non_image_object",
        "rgb.dcm": "unsupported_photometric",
        "truncated.dcm": "truncated_pixel_data",
    }
    details = dict(zip(quarantine.relative_path, quarantine.detail, strict=True))
    assert details["truncated.dcm"] == (
        "(7FE0,0010) Pixel Data holds 100 bytes, 8x8x1 frames x 1 samples at 16 bits need 128"
    )
    assert details["report.dcm"] == (
        "Basic Text SR Storage (1.2.840.10008.5.1.4.1.1.88.11) holds no image to train on"
    )
    assert details["ct.dcm"] == "(0008,0060) Modality is CT; converting MR only"
    assert "MPEG2 Main Profile / Main Level" in details["mpeg2.dcm"]
    assert (result.images, result.set_aside, result.ignored_files) == (1, 8, 2)
    assert result.files == 9
    assert result.reasons["not_dicom"] == 1
    assert all(Path(p).is_absolute() for p in quarantine.source_path)
    assert list(quarantine.columns) == list(DICOM_QUARANTINE_COLUMNS)


def test_empty_modality_setting_accepts_every_image_modality(tmp_path: Path) -> None:
    ds = make_mr(ramp(), modality="CT", sop_class=CTImageStorage)
    images, quarantine = convert_one(
        save(ds, tmp_path / "src" / "ct.dcm"), tmp_path, exact(modality="")
    )
    assert (len(images), len(quarantine)) == (1, 0)
    assert images.modality[0] == "CT"


def test_background_slices_are_set_aside_relative_to_the_series(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    for index in range(5):
        slice_ = rng.integers(0, 20, size=(32, 32)).astype(np.uint16)
        if index < 3:
            slice_[8:24, 8:24] = 1000  # a quarter of the slice is bright tissue
        save(
            make_mr(
                slice_,
                ImagePositionPatient=[0, 0, index],
                ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            ),
            src / f"{index}.dcm",
        )
    result = convert_tree(src, tmp_path / "out", ConvertConfig(), EVERYTHING_IS_TUMOR, workers=1)
    images = pd.read_parquet(result.images_manifest)
    quarantine = pd.read_parquet(result.quarantine_table)
    assert list(images.slice_position) == [0.0, 1.0, 2.0]
    assert list(images.foreground_fraction) == [0.25, 0.25, 0.25]
    assert list(quarantine.relative_path) == ["3.dcm", "4.dcm"]
    assert set(quarantine.reason) == {"background_slice"}
    assert quarantine.detail[0] == "foreground 0.0% of the slice < 5.0%"
    kept = convert_tree(
        src,
        tmp_path / "out",
        ConvertConfig(skip_background_slices=False),
        EVERYTHING_IS_TUMOR,
        workers=1,
    )
    assert (kept.images, kept.set_aside) == (5, 0)


def test_duplicate_sop_instance_in_two_transfer_syntaxes_is_converted_once(
    tmp_path: Path,
) -> None:
    ds = make_mr(ramp())
    save(ds, tmp_path / "src" / "explicit.dcm")
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    save(ds, tmp_path / "src" / "implicit.dcm")
    result = convert_tree(tmp_path / "src", tmp_path / "out", EXACT, EVERYTHING_IS_TUMOR, workers=1)
    quarantine = pd.read_parquet(result.quarantine_table)
    assert (result.series, result.images) == (1, 1)
    assert list(quarantine.reason) == ["duplicate_instance"]
    assert quarantine.detail[0].startswith("(0008,0018) SOP Instance UID already converted from ")


# ---------------------------------------------------------------------------------------------
# pydicom's bundled MR files

_TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
_LOSSLESS_MR_SMALL = [
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_padded.dcm",
    "zipMR.gz",
]
_DICOMDIR_MR = sorted(
    path.relative_to(_TEST_FILES).as_posix()
    for path in (_TEST_FILES / "dicomdirtests" / "98892003").rglob("*")
    if path.is_file()
)
_EXPECTED_OUTCOME = {
    **{name: "converted" for name in _LOSSLESS_MR_SMALL},
    **{name: "converted" for name in _DICOMDIR_MR},
    "examples_overlay.dcm": "converted",
    "MR_truncated.dcm": "truncated_pixel_data",
    "CT_small.dcm": "other_modality",
    "test-SR.dcm": "non_image_object",
    "rtstruct.dcm": "segmentation",  # no DICM prefix: read with force; read for labels
    "no_meta.dcm": "not_dicom",
    "README.txt": "not_dicom",
}


@pytest.mark.parametrize("name", sorted(_EXPECTED_OUTCOME))
def test_bundled_pydicom_file(tmp_path: Path, name: str) -> None:
    path = _TEST_FILES / name
    assert path.is_file(), f"pydicom test file missing: {path}"
    unit = SeriesUnit.build(_TEST_FILES, [(path, md5_file(path))])
    result = convert_series(unit, tmp_path, ConvertConfig())
    images = pd.read_parquet(result.output_dir / "images.parquet")
    quarantine = pd.read_parquet(result.output_dir / "quarantine.parquet")
    if _EXPECTED_OUTCOME[name] == "converted":
        assert (result.images, result.set_aside) == (1, 0), list(quarantine.detail)
        assert (result.output_dir / f"{images.sop_instance_uid[0]}.png").is_file()
    else:
        assert (result.images, result.set_aside) == (0, 1)
        assert quarantine.reason[0] == _EXPECTED_OUTCOME[name]


def test_every_lossless_mr_small_variant_gives_the_same_png(tmp_path: Path) -> None:
    digests: set[str] = set()
    for name in _LOSSLESS_MR_SMALL:
        path = _TEST_FILES / name
        result = convert_series(
            SeriesUnit.build(_TEST_FILES, [(path, md5_file(path))]), tmp_path, ConvertConfig()
        )
        digests.update(pd.read_parquet(result.output_dir / "images.parquet").sha256)
    assert len(digests) == 1


def test_bundled_mr_files_in_one_tree(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for name in [*_LOSSLESS_MR_SMALL, "MR_truncated.dcm", "examples_overlay.dcm", "CT_small.dcm"]:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(_TEST_FILES / name, src / name)
    result = convert_tree(src, tmp_path / "out", ConvertConfig(), EVERYTHING_IS_TUMOR, workers=1)
    # The ten MR_small files share one SOP Instance UID: one is converted, the truncated one is
    # set aside for its pixel data and the other eight as duplicates.
    assert result.images == 2
    assert result.reasons == {
        "duplicate_instance": 8,
        "truncated_pixel_data": 1,
        "other_modality": 1,
    }


# ---------------------------------------------------------------------------------------------
# No PHI


def test_no_phi_reaches_names_manifests_or_pngs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A local export (not ingested from an NBIA archive): pseudonymised by default, with the
    # salt from the environment, never from the config.
    monkeypatch.setenv("BRAINCLS_PSEUDONYM_SALT", "s3cret")
    ds = make_mr(
        ramp(),
        patient_id="MRN-0042",
        PatientName="Doe^Jane",
        PatientBirthDate="19700101",
        PatientAddress="1 Main Street",
        OtherPatientNames="Roe^Janet",
    )
    save(ds, tmp_path / "src" / "series" / "a.dcm")
    config = exact()
    labels = LabelTable(by_patient_id={"MRN-0042": "tumor"})
    result = convert_tree(tmp_path / "src", tmp_path / "out", config, labels, workers=1)
    images = pd.read_parquet(result.images_manifest)
    quarantine = pd.read_parquet(result.quarantine_table)
    assert len(images) == 1 and quarantine.empty
    assert not PHI_COLUMNS.intersection(images.columns)
    assert not PHI_COLUMNS.intersection(quarantine.columns)
    pseudonym = pseudonymize("MRN-0042", "s3cret")
    assert images.patient_id[0] == images.group_id[0] == pseudonym
    assert images.label[0] == "tumor"  # the labels table used the original Patient ID
    secrets = [b"Doe", b"Jane", b"19700101", b"Main Street", b"Roe^", b"MRN-0042", b"s3cret"]
    written = [path for path in (tmp_path / "out").rglob("*") if path.is_file()]
    assert len(written) >= 5
    for path in written:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.decode() not in str(path)
            assert secret not in data, (path, secret)
    # PNG chunks: header, data and end only (no tEXt, iTXt, zTXt, eXIf).
    data = Path(images.source_path[0]).read_bytes()
    chunks, offset = [], 8
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        chunks.append(data[offset + 4 : offset + 8].decode("ascii"))
        offset += 12 + length
    assert set(chunks) == {"IHDR", "IDAT", "IEND"}
    assert Path(images.source_path[0]).name == f"{ds.SOPInstanceUID}.png"


# ---------------------------------------------------------------------------------------------
# The manifest, labels and the per-series cache


def _two_series(src: Path) -> None:
    for series, patient in ((".1", "PAT-A"), (".2", "PAT-B")):
        for index in range(2):
            ds = make_mr(ramp() + index, series_uid=SERIES_UID + series, patient_id=patient)
            save(ds, src / f"export{series}" / f"{index}.dcm")


def test_manifest_columns_and_labels(tmp_path: Path) -> None:
    _two_series(tmp_path / "src")
    labels = LabelTable(by_patient_id={"PAT-A": "tumor", "PAT-C": "no_tumor"})
    result = convert_tree(tmp_path / "src", tmp_path / "out", EXACT, labels, workers=1)
    images = pd.read_parquet(result.images_manifest)
    quarantine = pd.read_parquet(result.quarantine_table)
    assert list(images.columns) == list(DICOM_MANIFEST_COLUMNS)
    assert list(images.columns)[: len(IMAGE_COLUMNS)] == list(IMAGE_COLUMNS)
    assert list(quarantine.columns)[: len(QUARANTINE_COLUMNS)] == list(QUARANTINE_COLUMNS)
    assert (result.images, result.unlabelled, result.set_aside) == (2, 2, 2)
    # A local folder: the Patient ID is pseudonymised; the labels matched the original one.
    salt = os.environ["BRAINCLS_PSEUDONYM_SALT"]
    assert set(images.patient_id) == {pseudonymize("PAT-A", salt)}
    assert list(images.label_index) == [1, 1]  # classes: ("no_tumor", "tumor")
    assert set(images.source) == set(images.collection) == {"export.1"}
    assert set(images.converter_version) == {CONVERTER_VERSION}
    assert set(images.channels) == {1} and set(images.width) == {8}
    # The fingerprint is the image-folder source's perceptual hash of the written PNG.
    for path, fingerprint in zip(images.source_path, images.fingerprint, strict=True):
        assert fingerprint == f"{perceptual_hash(png(path)):016x}"
    for row in images.itertuples():
        assert Path(str(row.source_path)).is_file()
        assert row.relative_path == f"{row.series_key}/{row.sample_id}.png"
    assert set(quarantine.reason) == {"unlabelled"}
    assert set(quarantine.relative_path) == {"export.2/0.dcm", "export.2/1.dcm"}


def test_rerun_converts_nothing_and_a_new_series_converts_alone(tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    _two_series(src)
    first = convert_tree(src, out, EXACT, EVERYTHING_IS_TUMOR, workers=1)
    assert (first.series, first.series_converted, first.series_cached) == (2, 2, 0)
    stamps = {path: path.stat().st_mtime_ns for path in out.glob("*/*.png")}
    assert len(stamps) == 4

    again = convert_tree(src, out, EXACT, EVERYTHING_IS_TUMOR, workers=1)
    assert (again.series_converted, again.series_cached, again.images) == (0, 2, 4)
    assert again.images_manifest == first.images_manifest
    assert {path: path.stat().st_mtime_ns for path in out.glob("*/*.png")} == stamps

    save(make_mr(ramp(), series_uid=SERIES_UID + ".3"), src / "new" / "0.dcm")
    third = convert_tree(src, out, EXACT, EVERYTHING_IS_TUMOR, workers=1)
    assert (third.series, third.series_converted, third.series_cached, third.images) == (
        3,
        1,
        2,
        5,
    )

    # A moved download still hits the cache (keys come from content, paths are resolved anew).
    moved = tmp_path / "moved"
    shutil.copytree(src, moved)
    fourth = convert_tree(moved, out, EXACT, EVERYTHING_IS_TUMOR, workers=1)
    assert (fourth.series_converted, fourth.series_cached) == (0, 3)
    sources = pd.read_parquet(fourth.quarantine_table)
    assert sources.empty
    # A config change that alters outputs converts again; the worker count does not.
    assert convert_tree(src, out, EXACT, None, workers=2).series_converted == 0
    changed = exact(image_size_px=16)
    assert convert_tree(src, out, changed, None, workers=1).series_converted == 3


def test_convert_series_on_a_folder_is_cached(tmp_path: Path) -> None:
    _two_series(tmp_path / "src")
    first = convert_series(tmp_path / "src" / "export.1", tmp_path / "out", EXACT)
    again = convert_series(tmp_path / "src" / "export.1", tmp_path / "out", EXACT)
    assert (first.cached, first.images, first.set_aside) == (False, 2, 0)
    assert (again.cached, again.key, again.images) == (True, first.key, 2)


def test_parallel_conversion_matches_serial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small jobs run in-process; force the process pool for both discovery and conversion.
    monkeypatch.setattr(tree, "MIN_FILES_TO_SCAN_IN_POOL", 0)
    monkeypatch.setattr(tree, "MIN_FILES_TO_CONVERT_IN_POOL", 0)
    _two_series(tmp_path / "src")
    (tmp_path / "src" / "notes.txt").write_text("not an image\n")
    serial = convert_tree(tmp_path / "src", tmp_path / "a", EXACT, EVERYTHING_IS_TUMOR, workers=1)
    parallel = convert_tree(tmp_path / "src", tmp_path / "b", EXACT, EVERYTHING_IS_TUMOR, workers=2)
    columns = ["sample_id", "sha256", "fingerprint", "series_key", "label"]
    pd.testing.assert_frame_equal(
        pd.read_parquet(serial.images_manifest)[columns],
        pd.read_parquet(parallel.images_manifest)[columns],
    )
    assert (parallel.images, parallel.set_aside, parallel.series_converted) == (4, 1, 3)
