"""Reading DICOM: the fast Series Instance UID peek, LUTs, frame attributes, read errors."""

from __future__ import annotations

import gzip
import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)

from braincls.convert.reading import (
    Reason,
    SetAside,
    frame_attributes,
    peek_series_instance_uid,
    pseudonymize,
    read_dataset,
    read_lut,
    safe_uid,
)

TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _header_uid(data: bytes) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    return safe_uid(dataset.get("SeriesInstanceUID"))


def test_peek_agrees_with_pydicom_on_every_bundled_file() -> None:
    peeked = 0
    for path in sorted(p for p in TEST_FILES.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        fast = peek_series_instance_uid(data)
        if fast is None:
            continue  # unsure: the caller reads the header with pydicom
        peeked += 1
        assert fast == _header_uid(data), path
    assert peeked >= 140  # 144 of the 176 files in pydicom 3.0.2; the rest hold no UID or are odd


@pytest.mark.parametrize("name", ["MR_small_implicit.dcm", "MR_small_bigendian.dcm", "zipMR.gz"])
def test_peek_reads_implicit_big_endian_and_unzipped_files(name: str) -> None:
    data = (TEST_FILES / name).read_bytes()
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    assert peek_series_instance_uid(data) == "1.3.6.1.4.1.5962.1.3.4.1.20040826185059.5457"


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian]
)
def test_peek_skips_nested_sequences_of_undefined_length(syntax: str) -> None:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = "1.2.3.4"
    inner = Dataset()
    inner.CodeValue = "T1"
    outer = Dataset()
    outer.ReferencedSOPInstanceUID = "1.2.3.5"
    outer.PurposeOfReferenceCodeSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([outer, outer])  # (0008,1140), before (0020,000E)
    ds.SeriesInstanceUID = "1.2.3.6"
    buffer = io.BytesIO()
    ds.save_as(
        buffer,
        enforce_file_format=True,
        little_endian=syntax != ExplicitVRBigEndian,
        implicit_vr=syntax == ImplicitVRLittleEndian,
    )
    assert peek_series_instance_uid(buffer.getvalue()) == "1.2.3.6"


def test_peek_is_unsure_rather_than_wrong() -> None:
    assert peek_series_instance_uid(b"") is None
    assert peek_series_instance_uid(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI") is None
    assert peek_series_instance_uid((TEST_FILES / "no_meta.dcm").read_bytes()) is None
    assert peek_series_instance_uid((TEST_FILES / "MR_small.dcm").read_bytes()[:300]) is None


def test_read_dataset_reasons(tmp_path: Path) -> None:
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    broken_gzip = tmp_path / "broken.gz"
    broken_gzip.write_bytes(b"\x1f\x8b\x08\x00garbage")
    cases = {empty: Reason.EMPTY_FILE, text: Reason.NOT_DICOM, broken_gzip: Reason.NOT_DICOM}
    for path, reason in cases.items():
        with pytest.raises(SetAside) as caught:
            read_dataset(path)
        assert caught.value.reason is reason
    with pytest.raises(SetAside, match="unreadable_file: cannot read file"):
        read_dataset(tmp_path / "missing.dcm")


def test_read_dataset_without_preamble_gets_a_transfer_syntax() -> None:
    ds = read_dataset(TEST_FILES / "rtstruct.dcm")  # no DICM prefix: read with force
    assert ds.Modality == "RTSTRUCT"
    assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian


def test_read_lut_us_and_ow_signed_first_mapped() -> None:
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [3, 65535, 8])  # first mapped -1, two's complement
    item.add_new("LUTData", "US", [10, 20, 30])
    lut = read_lut(item, signed_input=True)
    assert (lut.first_mapped, lut.bits_per_entry) == (-1, 8)
    np.testing.assert_array_equal(lut.table, [10.0, 20.0, 30.0])
    ow = Dataset()
    ow.add_new("LUTDescriptor", "US", [2, 0, 16])
    ow.add_new("LUTData", "OW", np.array([1, 4095], dtype=">u2").tobytes())
    lut = read_lut(ow, signed_input=False, little_endian=False)
    np.testing.assert_array_equal(lut.table, [1.0, 4095.0])
    # A descriptor declaring fewer bits than the data uses is corrected from the data.
    short = Dataset()
    short.add_new("LUTDescriptor", "US", [2, 0, 8])
    short.add_new("LUTData", "US", [0, 4095])
    assert read_lut(short, signed_input=False).bits_per_entry == 12


def test_frame_attributes_per_frame_overrides_shared_overrides_top_level() -> None:
    ds = Dataset()
    ds.RescaleSlope = 1
    ds.RescaleIntercept = 0
    ds.PixelSpacing = [0.5, 0.5]
    shared = Dataset()
    transform = Dataset()
    transform.RescaleSlope = 2
    transform.RescaleIntercept = -5
    shared.PixelValueTransformationSequence = Sequence([transform])
    measures = Dataset()
    measures.PixelSpacing = [1.0, 2.0]
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frame = Dataset()
    voi = Dataset()
    voi.WindowCenter = [40, 80]
    voi.WindowWidth = [400, 800]
    voi.VOILUTFunction = "SIGMOID"
    frame.FrameVOILUTSequence = Sequence([voi])
    ds.PerFrameFunctionalGroupsSequence = Sequence([Dataset(), frame])
    first, second = frame_attributes(ds, 0), frame_attributes(ds, 1)
    assert (first.rescale_slope, first.rescale_intercept) == (2.0, -5.0)
    assert first.pixel_spacing_mm == (1.0, 2.0)
    assert first.window_centers == ()
    assert (second.window_centers, second.window_widths) == ((40.0, 80.0), (400.0, 800.0))
    assert second.voi_function == "SIGMOID"
    assert np.isnan(first.slice_position)


def test_slice_position_projects_on_the_normal() -> None:
    ds = Dataset()
    ds.ImagePositionPatient = [10, 20, 30]
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # sagittal: normal (-1, 0, 0)
    assert frame_attributes(ds, 0).slice_position == -10.0
    ds = Dataset()
    ds.SliceLocation = "12.5"
    assert frame_attributes(ds, 0).slice_position == 12.5


def test_pseudonymize_and_safe_uid() -> None:
    assert pseudonymize("P1", "salt") == pseudonymize("P1", "salt")
    assert pseudonymize("P1", "salt") != pseudonymize("P1", "pepper")
    assert safe_uid("1.2.840.10008.1.2\x00") == "1.2.840.10008.1.2"
    assert safe_uid("../etc/passwd") is None
    assert safe_uid("1." * 40) is None
