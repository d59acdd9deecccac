"""TCIA-like MR collections as real DICOM files, drawn from the phantom heads.

:func:`generate_dicom_collection` writes one collection laid out like a TCIA download::

    out_dir/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/0001.dcm
    out_dir/labels.csv       level,PatientID,SeriesInstanceUID,SOPInstanceUID,label
                             (one identifier per row; the most specific match wins)
    out_dir/catalogue.json   Collection, DateReleased, SeriesDateReleased, license, series list
                             (the keys the local NBIA server reads; dates in ISO form)

Patients are de-identified synthetic heads, half of them with a tumor. Each has one or two
studies of one to three axial series (T1, T2, FLAIR, T1 post-contrast) with full, consistent
headers. Across the collection the series show the variety real archives have: Explicit VR
Little Endian (most), Implicit VR Little Endian, Explicit VR Big Endian (retired, still found in
old archives), RLE Lossless, JPEG 2000 Lossless, JPEG-LS Lossless, a MONOCHROME1 series, an
Enhanced MR multi-frame series, rescaled and windowed series, 12 and 16 stored bits, plus
non-image objects a converter must skip: Basic Text SR reports and a tumor segmentation (SEG).
"""

from __future__ import annotations

import csv
import io
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.pixels import get_encoder, pack_bits
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
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

from braincls import __version__
from braincls.common.atomic import atomic_dir, write_json
from devkit.phantom.anatomy import (
    HeadModel,
    Sequence,
    TumorSpec,
    make_head,
    make_tumor,
    render_slice,
    tumor_mask,
)

logger = logging.getLogger(__name__)

DEFAULT_COLLECTION = "BRAINCLS-PHANTOM"
MANUFACTURER = "braincls-phantom"
#: Namespace of the name-based UUIDs behind every phantom UID (fixed, so UIDs are reproducible).
_UID_NAMESPACE = uuid.UUID("6f0d3a52-3c1e-5b8e-9a47-2b7c1d0e9f10")
LABELS_FILE = "labels.csv"
LICENSE_NAME = "Creative Commons Attribution 4.0 International License"
LICENSE_URI = "https://creativecommons.org/licenses/by/4.0/"
CATALOGUE_FILE = "catalogue.json"
#: Columns of ``labels.csv``, as :func:`braincls.convert.labels.load_labels` reads them: each row
#: fills exactly one identifier column; ``level`` names it (patient, series or instance) for
#: people and is ignored by the reader.
LABEL_COLUMNS = ("level", "PatientID", "SeriesInstanceUID", "SOPInstanceUID", "label")
_LEVEL_COLUMN = {"patient": 1, "series": 2, "instance": 3}
DEIDENTIFICATION_METHOD = "braincls synthetic phantom: no patient data (PS3.15 Annex E)"
#: (0013,1013) of TCIA's CTP private block, the site id; fixed for phantoms.
CTP_SITE_ID = "00000000"

#: A slice is labelled "yes" when it cuts the tumor mass with a radius of at least this (mm);
#: slices of a tumor patient that miss it (or graze it less) are drawn without the tumor.
MIN_LABELLED_SECTION_MM = 2.0

#: Encodings (and layouts) a series can have. ``explicit_le`` is the default; each of the others
#: is given to at least one series of a collection when there are enough series.
SeriesEncoding = Literal[
    "explicit_le",
    "implicit_le",
    "big_endian",
    "rle",
    "jpeg2000",
    "jpegls",
    "monochrome1",
    "multiframe",
]
SPECIAL_ENCODINGS: tuple[SeriesEncoding, ...] = (
    "multiframe",
    "implicit_le",
    "big_endian",
    "rle",
    "jpeg2000",
    "jpegls",
    "monochrome1",
)
_TRANSFER_SYNTAX: dict[SeriesEncoding, UID] = {
    "explicit_le": ExplicitVRLittleEndian,
    "implicit_le": ImplicitVRLittleEndian,
    "big_endian": ExplicitVRBigEndian,
    "rle": RLELossless,
    "jpeg2000": JPEG2000Lossless,
    "jpegls": JPEGLSLossless,
    "monochrome1": ExplicitVRLittleEndian,
    "multiframe": ExplicitVRLittleEndian,
}

_SIZES_PX = (128, 192, 256)
_STUDY_DESCRIPTIONS = ("MRI BRAIN W/WO CONTRAST", "MR HEAD WO CONTRAST", "MRI BRAIN TUMOR PROTOCOL")


@dataclass(frozen=True)
class Protocol:
    """An axial MR protocol: the header values of its series and the weighting it draws."""

    description: str
    sequence: Sequence
    scanning_sequence: tuple[str, ...]
    sequence_variant: tuple[str, ...]
    repetition_time_ms: float
    echo_time_ms: float
    inversion_time_ms: float | None
    flip_angle_deg: float
    echo_train_length: int
    acquisition_contrast: str


PROTOCOLS: tuple[Protocol, ...] = (
    Protocol("AX T1", "T1", ("SE",), ("SK",), 550.0, 11.0, None, 90.0, 1, "T1"),
    Protocol("AX T2 TSE", "T2", ("SE",), ("SK",), 4200.0, 98.0, None, 150.0, 15, "T2"),
    Protocol(
        "AX FLAIR", "FLAIR", ("SE", "IR"), ("SK", "SP"), 9000.0, 85.0, 2500.0, 150.0, 16, "FLAIR"
    ),
    Protocol("AX T1 POST GD", "T1C", ("SE",), ("SK",), 550.0, 11.0, None, 90.0, 1, "T1"),
)


@dataclass
class _SeriesPlan:
    protocol: Protocol
    series_number: int
    size_px: int
    field_of_view_mm: float
    slice_positions_mm: tuple[float, ...]
    slice_thickness_mm: float
    encoding: SeriesEncoding = "explicit_le"
    bits_stored: int = 12
    acquisition_number: int = 1
    rescale: bool = False
    window: bool = False
    uid: str = ""
    release_date: date = date(2000, 1, 1)


@dataclass
class _StudyPlan:
    index: int
    study_date: date
    description: str
    field_strength_t: float
    table_offset_mm: float
    series: list[_SeriesPlan] = field(default_factory=list)
    report: bool = False
    segmentation: bool = False
    uid: str = ""


@dataclass
class _PatientPlan:
    index: int
    patient_id: str
    head: HeadModel
    tumor: TumorSpec | None
    sex: str
    age_years: int
    studies: list[_StudyPlan] = field(default_factory=list)


@dataclass(frozen=True)
class DicomCollectionSummary:
    """What :func:`generate_dicom_collection` wrote."""

    out_dir: Path
    collection: str
    n_patients: int
    n_tumor_patients: int
    n_studies: int
    n_series: int
    n_image_series: int
    n_instances: int
    #: Files per transfer syntax name (all objects, images and non-images).
    instances_by_transfer_syntax: dict[str, int]
    #: Series per modality (MR, SR, SEG).
    series_by_modality: dict[str, int]
    #: Image series per encoding (``explicit_le``, ``rle``, ``monochrome1``, ``multiframe``...).
    series_by_encoding: dict[str, int]
    labels_path: Path
    catalogue_path: Path
    elapsed_seconds: float


def _sub_rng(seed: int, *path: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, 7, *path]))


def _uid(collection: str, seed: int, *parts: object) -> str:
    """A deterministic ``2.25.<n>`` UID from the collection, the seed and a path of parts.

    PS3.5 B.2 allows UIDs under ``2.25`` made from a UUID. A name-based (version 5) UUID of the
    object's place keeps the files byte-identical per seed. (pydicom's ``generate_uid`` ignores
    its entropy sources when ``prefix`` is None and returns a random UUID.)
    """
    name = "/".join([collection, str(seed), *map(str, parts)])
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


def _encoder_available(encoding: SeriesEncoding) -> bool:
    syntax = _TRANSFER_SYNTAX[encoding]
    if not syntax.is_compressed:
        return True
    return bool(get_encoder(syntax).is_available)


# --------------------------------------------------------------------------------------------
# Planning: every random draw happens here, so writing is a pure function of the plan.
# --------------------------------------------------------------------------------------------


def _slice_positions(
    rng: np.random.Generator, head: HeadModel, tumor: TumorSpec | None, count: int
) -> tuple[tuple[float, ...], float]:
    """Axial slice heights (head frame, mm, inferior to superior) and the slice spacing."""
    spacing = round((head.z_max_mm - head.z_min_mm) / (count - 1), 1)
    if tumor is None:
        start = head.z_min_mm + float(rng.uniform(-0.5, 0.5)) * spacing
    else:
        # Put one slice close to the tumor's centre so that every tumor series shows it.
        anchor = tumor.center_z_mm + float(rng.uniform(-0.3, 0.3)) * tumor.half_height_mm
        start = anchor - round((anchor - head.z_min_mm) / spacing) * spacing
    return tuple(round(start + k * spacing, 2) for k in range(count)), spacing


def _plan_collection(
    collection: str,
    n_patients: int,
    seed: int,
    patient_id_prefix: str,
    image_size_px: int | None,
    slices_per_series: tuple[int, int],
    release_date: date,
    encodings: tuple[SeriesEncoding, ...],
) -> list[_PatientPlan]:
    order = _sub_rng(seed, 0).permutation(n_patients)
    n_tumor = (n_patients + 1) // 2
    tumor_patients = {int(index) for index in order[:n_tumor]}
    patients: list[_PatientPlan] = []
    for index in range(n_patients):
        rng = _sub_rng(seed, 1, index)
        head = make_head(rng)
        tumor = (
            make_tumor(rng, head, radius_range_mm=(4.0, 25.0), contrast_magnitude_range=(0.2, 0.6))
            if index in tumor_patients
            else None
        )
        patient = _PatientPlan(
            index=index,
            patient_id=f"{patient_id_prefix}-{index + 1:03d}",
            head=head,
            tumor=tumor,
            sex=str(rng.choice(["F", "M"])),
            age_years=int(rng.integers(24, 82)),
        )
        first_date = date(2003, 1, 1) + timedelta(days=int(rng.integers(0, 4000)))
        n_studies = 1 + int(rng.random() < 0.5)
        for study_index in range(n_studies):
            follow_up_days = int(rng.integers(60, 400)) if study_index else 0
            study = _StudyPlan(
                index=study_index,
                study_date=first_date + timedelta(days=follow_up_days),
                description=_STUDY_DESCRIPTIONS[int(rng.integers(len(_STUDY_DESCRIPTIONS)))],
                field_strength_t=float(rng.choice([1.5, 3.0])),
                table_offset_mm=round(float(rng.uniform(-40.0, 40.0)), 1),
            )
            n_series = int(rng.integers(1, 4))
            for protocol_index in sorted(rng.choice(len(PROTOCOLS), n_series, replace=False)):
                study.series.append(
                    _plan_series(
                        rng, head, tumor, int(protocol_index), image_size_px, slices_per_series
                    )
                )
            patient.studies.append(study)
        patients.append(patient)

    # Enough image series for every special encoding plus a few plain ones: add protocols to
    # studies that have room. The count does not depend on ``encodings``, so the same seed gives
    # the same patients, studies, series and pixels whatever the encodings.
    wanted = len(SPECIAL_ENCODINGS) + 2
    filler = _sub_rng(seed, 2)
    while sum(len(s.series) for p in patients for s in p.studies) < wanted:
        open_studies = [
            (p, s) for p in patients for s in p.studies if len(s.series) < len(PROTOCOLS)
        ]
        if not open_studies:
            break
        patient, study = open_studies[int(filler.integers(len(open_studies)))]
        used = {plan.protocol.description for plan in study.series}
        free = [i for i, protocol in enumerate(PROTOCOLS) if protocol.description not in used]
        study.series.append(
            _plan_series(
                filler, patient.head, patient.tumor, free[0], image_size_px, slices_per_series
            )
        )
        study.series.sort(key=lambda plan: PROTOCOLS.index(plan.protocol))

    # Number series, name UIDs, set release dates; then spread the encodings and the optional
    # header variety (rescale, window, 16 stored bits) over the series.
    all_series: list[tuple[_PatientPlan, _StudyPlan, _SeriesPlan]] = []
    for patient in patients:
        for study in patient.studies:
            study.uid = _uid(collection, seed, "study", patient.index, study.index)
            for number, plan in enumerate(study.series, start=1):
                plan.series_number = number
                plan.uid = _uid(collection, seed, "series", patient.index, study.index, number)
                plan.release_date = release_date + timedelta(days=90 * study.index)
                all_series.append((patient, study, plan))
    _assign_encodings(all_series, encodings, _sub_rng(seed, 3))
    for position, (_, _, plan) in enumerate(all_series):
        plan.rescale = position % 3 == 1
        plan.window = position % 2 == 0
        plan.bits_stored = 16 if position % 4 == 3 else 12
        # TCIA's "NewFileNames" are <AcquisitionNumber>-<InstanceNumber>: vary the former a little.
        plan.acquisition_number = 2 if position % 5 == 4 else 1

    # Non-image objects: a text report in the first study of the first tumor patient and of the
    # first tumor-free patient; a tumor segmentation of one tumor series.
    for has_tumor in (True, False):
        candidates = [p for p in patients if (p.tumor is not None) == has_tumor]
        if candidates:
            candidates[0].studies[0].report = True
    for patient in patients:
        if patient.tumor is None:
            continue
        for study in patient.studies:
            if any(plan.encoding != "multiframe" for plan in study.series):
                study.segmentation = True
                break
        break
    return patients


def _plan_series(
    rng: np.random.Generator,
    head: HeadModel,
    tumor: TumorSpec | None,
    protocol_index: int,
    image_size_px: int | None,
    slices_per_series: tuple[int, int],
) -> _SeriesPlan:
    count = int(rng.integers(slices_per_series[0], slices_per_series[1] + 1))
    positions, spacing = _slice_positions(rng, head, tumor, count)
    # Always draw the size, so that fixing it leaves every later draw (and pixel) unchanged.
    drawn_size = int(rng.choice(_SIZES_PX))
    size = image_size_px if image_size_px is not None else drawn_size
    return _SeriesPlan(
        protocol=PROTOCOLS[protocol_index],
        series_number=0,
        size_px=size,
        field_of_view_mm=float(rng.choice([220.0, 230.0, 240.0, 250.0])),
        slice_positions_mm=positions,
        slice_thickness_mm=round(min(spacing, 5.0), 1),
    )


def _assign_encodings(
    all_series: list[tuple[_PatientPlan, _StudyPlan, _SeriesPlan]],
    encodings: tuple[SeriesEncoding, ...],
    rng: np.random.Generator,
) -> None:
    """Give each special encoding to one series; the multi-frame one to a tumor-free patient.

    Slices of one multi-frame object cannot carry different labels in the labels table (it
    labels SOP instances), so the multi-frame series goes to a patient without a tumor.
    """
    free = [int(i) for i in rng.permutation(len(all_series))]
    for encoding in encodings:
        if encoding == "multiframe":
            choices = [i for i in free if all_series[i][0].tumor is None]
        else:
            choices = free
        if not choices:
            logger.warning("no series left for the %s encoding; add patients to get one", encoding)
            continue
        chosen = choices[0]
        free.remove(chosen)
        all_series[chosen][2].encoding = encoding


# --------------------------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------------------------


def _tumor_for_sequence(tumor: TumorSpec, sequence: Sequence) -> TumorSpec:
    """The tumor's appearance in one weighting.

    Masses are dark on T1, enhance after contrast (T1C) and are bright on T2 and FLAIR; edema is
    bright on T2 and FLAIR and a little dark on T1.
    """
    magnitude = abs(tumor.contrast)
    if sequence == "T1":
        return replace(tumor, contrast=-0.8 * magnitude, edema_contrast=-0.5 * tumor.edema_contrast)
    if sequence == "T1C":
        return replace(tumor, contrast=magnitude + 0.2, edema_contrast=-0.5 * tumor.edema_contrast)
    if sequence == "FLAIR":
        return replace(tumor, contrast=0.8 * magnitude, edema_contrast=1.4 * tumor.edema_contrast)
    return replace(tumor, contrast=magnitude)


def _stored_values(
    image: NDArray[np.float32], plan: _SeriesPlan
) -> tuple[NDArray[np.uint16], float, float]:
    """Stored pixel values of one slice plus (0028,1053) Rescale Slope and (0028,1052) Intercept.

    Modality values are the relative intensities times a scale that puts white matter near 1400
    (12 bits) or 11000 (16 bits). MONOCHROME1 series store ``max - value``.
    """
    maximum = (1 << plan.bits_stored) - 1
    scale = 2000.0 if plan.bits_stored == 12 else 16000.0
    modality = image * np.float32(scale)
    slope, intercept = (2.0, -100.0) if plan.rescale else (1.0, 0.0)
    stored = (modality - np.float32(intercept)) * np.float32(1.0 / slope)
    np.clip(np.rint(stored), 0, maximum, out=stored)
    values = stored.astype(np.uint16)
    if plan.encoding == "monochrome1":
        values = (maximum - values).astype(np.uint16)
    return values, slope, intercept


def _window(plan: _SeriesPlan) -> tuple[float, float]:
    """(0028,1050) Window Center and (0028,1051) Window Width in rescaled units."""
    scale = 2000.0 if plan.bits_stored == 12 else 16000.0
    center, width = 0.55 * scale, 1.2 * scale
    if plan.encoding == "monochrome1":
        slope, intercept = (2.0, -100.0) if plan.rescale else (1.0, 0.0)
        maximum = (1 << plan.bits_stored) - 1
        # Stored values were inverted, so the same tissue window sits at the mirrored level.
        center = (maximum - (center - intercept) / slope) * slope + intercept
    return round(center, 1), round(width, 1)


def _common_header(
    ds: Dataset,
    collection: str,
    patient: _PatientPlan,
    study: _StudyPlan,
    modality: str,
    series_uid: str,
    series_number: int,
    series_description: str,
) -> None:
    """Patient, study, series, equipment and SOP common modules shared by every object."""
    ds.SpecificCharacterSet = "ISO_IR 100"
    # Patient module: (0010,0010) Patient's Name and (0010,0030) Birth Date are type 2: present
    # and empty, as after TCIA's de-identification.
    ds.PatientName = ""
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = patient.sex
    ds.PatientAge = f"{patient.age_years:03d}Y"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    ds.DeidentificationMethodCodeSequence = DicomSequence(
        [_code("113100", "DCM", "Basic Application Confidentiality Profile")]
    )
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    # TCIA's CTP anonymiser names the collection in a private block: (0013,1010) Project Name.
    block = ds.private_block(0x0013, "CTP", create=True)
    block.add_new(0x10, "LO", collection)
    block.add_new(0x13, "LO", CTP_SITE_ID)
    # General study.
    ds.StudyInstanceUID = study.uid
    ds.StudyDate = study.study_date.strftime("%Y%m%d")
    ds.StudyTime = f"{9 + study.index:02d}0000"
    ds.ReferringPhysicianName = ""
    ds.StudyID = str(study.index + 1)
    ds.AccessionNumber = ""
    ds.StudyDescription = study.description
    # General series.
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = f"{9 + study.index:02d}{series_number:02d}00"
    ds.BodyPartExamined = "BRAIN"
    # General equipment.
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "Synthetic MR"
    ds.SoftwareVersions = f"braincls {__version__}"
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.SeriesTime
    ds.InstanceCreationDate = ds.StudyDate


def _file_meta(ds: Dataset, transfer_syntax: UID) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "BRAINCLS_" + __version__.replace(".", "")[:6]
    ds.file_meta = meta


def _mr_acquisition(ds: Dataset, protocol: Protocol, study: _StudyPlan) -> None:
    """MR image module acquisition attributes (SE/IR, TR, TE, TI, field strength)."""
    ds.ScanningSequence = list(protocol.scanning_sequence)
    ds.SequenceVariant = list(protocol.sequence_variant)
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = protocol.repetition_time_ms
    ds.EchoTime = protocol.echo_time_ms
    if protocol.inversion_time_ms is not None:
        ds.InversionTime = protocol.inversion_time_ms
    ds.EchoTrainLength = protocol.echo_train_length
    ds.FlipAngle = protocol.flip_angle_deg
    ds.MagneticFieldStrength = study.field_strength_t
    ds.ImagingFrequency = round(42.577 * study.field_strength_t, 3)
    ds.ImagedNucleus = "1H"
    ds.NumberOfAverages = 1
    ds.ProtocolName = protocol.description


def _image_position(plan: _SeriesPlan, study: _StudyPlan, z_mm: float) -> list[float]:
    """(0020,0032) Image Position (Patient): centre of the first pixel, isocentre at the middle."""
    pixel_mm = plan.field_of_view_mm / plan.size_px
    corner = -plan.field_of_view_mm / 2 + pixel_mm / 2
    return [round(corner, 4), round(corner, 4), round(study.table_offset_mm + z_mm, 4)]


def _render_series(
    patient: _PatientPlan, plan: _SeriesPlan, seed: int, study_index: int
) -> tuple[list[NDArray[np.float32]], list[bool]]:
    """The series' slices (relative intensities) and whether each shows the tumor."""
    images: list[NDArray[np.float32]] = []
    labels: list[bool] = []
    tumor = (
        _tumor_for_sequence(patient.tumor, plan.protocol.sequence)
        if patient.tumor is not None
        else None
    )
    for slice_index, z_mm in enumerate(plan.slice_positions_mm):
        shows_tumor = tumor is not None and tumor.section_radius_mm(z_mm) >= MIN_LABELLED_SECTION_MM
        rng = _sub_rng(seed, 4, patient.index, study_index, plan.series_number, slice_index)
        images.append(
            render_slice(
                patient.head,
                z_mm,
                tumor if shows_tumor else None,
                plan.size_px,
                rng,
                sequence=plan.protocol.sequence,
                field_of_view_mm=plan.field_of_view_mm,
            )
        )
        labels.append(shows_tumor)
    return images, labels


def _write(ds: Dataset, path: Path) -> int:
    """Write ``ds`` as a DICOM file (preamble, 'DICM', file meta) and return its size in bytes."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data)


def _single_frame_series(
    folder: Path,
    collection: str,
    seed: int,
    patient: _PatientPlan,
    study: _StudyPlan,
    plan: _SeriesPlan,
    images: list[NDArray[np.float32]],
) -> list[tuple[str, str]]:
    """Write one MR Image Storage file per slice; return (SOPInstanceUID, file name) pairs."""
    written: list[tuple[str, str]] = []
    transfer_syntax = _TRANSFER_SYNTAX[plan.encoding]
    for slice_index, (image, z_mm) in enumerate(zip(images, plan.slice_positions_mm, strict=True)):
        instance_number = slice_index + 1
        ds = Dataset()
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = _uid(
            collection,
            seed,
            "instance",
            patient.index,
            study.index,
            plan.series_number,
            instance_number,
        )
        _common_header(
            ds,
            collection,
            patient,
            study,
            "MR",
            plan.uid,
            plan.series_number,
            plan.protocol.description,
        )
        _mr_acquisition(ds, plan.protocol, study)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        ds.InstanceNumber = instance_number
        ds.AcquisitionNumber = plan.acquisition_number
        ds.AcquisitionDate = ds.StudyDate
        ds.AcquisitionTime = ds.SeriesTime
        ds.PatientPosition = "HFS"
        ds.FrameOfReferenceUID = _uid(collection, seed, "frame", patient.index, study.index)
        ds.PositionReferenceIndicator = ""
        pixel_mm = round(plan.field_of_view_mm / plan.size_px, 6)
        ds.PixelSpacing = [pixel_mm, pixel_mm]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = _image_position(plan, study, z_mm)
        ds.SliceLocation = round(study.table_offset_mm + z_mm, 4)
        ds.SliceThickness = plan.slice_thickness_mm
        ds.SpacingBetweenSlices = round(plan.slice_positions_mm[1] - plan.slice_positions_mm[0], 4)
        values, slope, intercept = _stored_values(image, plan)
        photometric = "MONOCHROME1" if plan.encoding == "monochrome1" else "MONOCHROME2"
        ds.set_pixel_data(values, photometric, plan.bits_stored, generate_instance_uid=False)
        if plan.rescale:
            ds.RescaleIntercept = intercept
            ds.RescaleSlope = slope
            ds.RescaleType = "US"
        if plan.window:
            center, width = _window(plan)
            ds.WindowCenter = center
            ds.WindowWidth = width
            ds.WindowCenterWidthExplanation = "BRAIN"
        _file_meta(ds, ExplicitVRLittleEndian)
        if plan.encoding == "big_endian":
            # pydicom writes Pixel Data bytes as they are, so they must already be big endian;
            # every other element is byte-swapped by the writer from the transfer syntax.
            ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
            ds.PixelData = values.astype(">u2").tobytes()
        elif transfer_syntax.is_compressed:
            ds.compress(transfer_syntax, values, generate_instance_uid=False)
        else:
            ds.file_meta.TransferSyntaxUID = transfer_syntax
        name = f"{instance_number:04d}.dcm"
        _write(ds, folder / name)
        written.append((str(ds.SOPInstanceUID), name))
    return written


def _functional_group(**sequences: Dataset) -> Dataset:
    group = Dataset()
    for keyword, item in sequences.items():
        setattr(group, keyword, DicomSequence([item]))
    return group


def _item(**values: object) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _dimension_modules(ds: Dataset, organization_uid: str, index_tags: tuple[str, ...]) -> None:
    """Multi-frame Dimension module: one organisation, indices into Frame Content."""
    ds.DimensionOrganizationSequence = DicomSequence(
        [_item(DimensionOrganizationUID=organization_uid)]
    )
    ds.DimensionIndexSequence = DicomSequence(
        [
            _item(
                DimensionOrganizationUID=organization_uid,
                DimensionIndexPointer=Tag(keyword),
                FunctionalGroupPointer=Tag(group),
            )
            for keyword, group in ((tag.split(":")[0], tag.split(":")[1]) for tag in index_tags)
        ]
    )


def _multi_frame_series(
    folder: Path,
    collection: str,
    seed: int,
    patient: _PatientPlan,
    study: _StudyPlan,
    plan: _SeriesPlan,
    images: list[NDArray[np.float32]],
) -> list[tuple[str, str]]:
    """Write the series as one Enhanced MR Image Storage object with one frame per slice."""
    ds = Dataset()
    ds.SOPClassUID = EnhancedMRImageStorage
    ds.SOPInstanceUID = _uid(
        collection, seed, "instance", patient.index, study.index, plan.series_number, 1
    )
    _common_header(
        ds,
        collection,
        patient,
        study,
        "MR",
        plan.uid,
        plan.series_number,
        plan.protocol.description + " 3D-MF",
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.InstanceNumber = 1
    ds.AcquisitionNumber = plan.acquisition_number
    ds.AcquisitionDateTime = ds.StudyDate + ds.SeriesTime
    ds.ContentQualification = "RESEARCH"
    ds.ResonantNucleus = "1H"
    ds.MagneticFieldStrength = study.field_strength_t
    ds.AcquisitionContrast = plan.protocol.acquisition_contrast
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = _uid(collection, seed, "frame", patient.index, study.index)
    ds.PositionReferenceIndicator = ""
    ds.ProtocolName = plan.protocol.description
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.SeriesTime
    pixel_mm = round(plan.field_of_view_mm / plan.size_px, 6)
    spacing = round(plan.slice_positions_mm[1] - plan.slice_positions_mm[0], 4)
    center, width = _window(plan)
    stored = [_stored_values(image, plan) for image in images]
    _, slope, intercept = stored[0]
    ds.SharedFunctionalGroupsSequence = DicomSequence(
        [
            _functional_group(
                PixelMeasuresSequence=_item(
                    PixelSpacing=[pixel_mm, pixel_mm],
                    SliceThickness=plan.slice_thickness_mm,
                    SpacingBetweenSlices=spacing,
                ),
                PlaneOrientationSequence=_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0]),
                PixelValueTransformationSequence=_item(
                    RescaleIntercept=intercept, RescaleSlope=slope, RescaleType="US"
                ),
                FrameVOILUTSequence=_item(WindowCenter=center, WindowWidth=width),
                MRImageFrameTypeSequence=_item(
                    FrameType=["ORIGINAL", "PRIMARY", "M", "NONE"],
                    PixelPresentation="MONOCHROME",
                    VolumetricProperties="VOLUME",
                    VolumeBasedCalculationTechnique="NONE",
                    ComplexImageComponent="MAGNITUDE",
                    AcquisitionContrast=plan.protocol.acquisition_contrast,
                ),
                MRTimingAndRelatedParametersSequence=_item(
                    RepetitionTime=plan.protocol.repetition_time_ms,
                    FlipAngle=plan.protocol.flip_angle_deg,
                    EchoTrainLength=plan.protocol.echo_train_length,
                ),
                MREchoSequence=_item(EffectiveEchoTime=plan.protocol.echo_time_ms),
            )
        ]
    )
    per_frame = []
    for frame_index, z_mm in enumerate(plan.slice_positions_mm, start=1):
        per_frame.append(
            _functional_group(
                FrameContentSequence=_item(
                    StackID="1",
                    InStackPositionNumber=frame_index,
                    DimensionIndexValues=[1, frame_index],
                ),
                PlanePositionSequence=_item(
                    ImagePositionPatient=_image_position(plan, study, z_mm)
                ),
            )
        )
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(per_frame)
    _dimension_modules(
        ds,
        _uid(collection, seed, "dimension", patient.index, study.index, plan.series_number),
        ("StackID:FrameContentSequence", "InStackPositionNumber:FrameContentSequence"),
    )
    frames = np.stack([values for values, _, _ in stored])
    ds.set_pixel_data(frames, "MONOCHROME2", plan.bits_stored, generate_instance_uid=False)
    _file_meta(ds, ExplicitVRLittleEndian)
    name = "0001.dcm"
    _write(ds, folder / name)
    return [(str(ds.SOPInstanceUID), name)]


def _report(
    folder: Path,
    collection: str,
    seed: int,
    patient: _PatientPlan,
    study: _StudyPlan,
    series_number: int,
) -> str:
    """A Basic Text SR radiology report (Modality SR, no Pixel Data); returns the series UID."""
    series_uid = _uid(collection, seed, "report-series", patient.index, study.index)
    ds = Dataset()
    ds.SOPClassUID = BasicTextSRStorage
    ds.SOPInstanceUID = _uid(collection, seed, "report", patient.index, study.index)
    _common_header(
        ds, collection, patient, study, "SR", series_uid, series_number, "Radiology report"
    )
    ds.InstanceNumber = 1
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    ds.PerformedProcedureCodeSequence = DicomSequence()
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = DicomSequence(
        [_code("18748-4", "LN", "Diagnostic Imaging Report")]
    )
    if patient.tumor is None:
        finding = "Synthetic phantom. No intracranial mass."
    else:
        finding = (
            "Synthetic phantom. Intra-axial mass, about "
            f"{2 * patient.tumor.radius_mm:.0f} mm across"
            + (", with central necrosis" if patient.tumor.necrosis_fraction > 0 else "")
            + (" and surrounding edema" if patient.tumor.edema_width_fraction > 0 else "")
            + "."
        )
    ds.ContentSequence = DicomSequence(
        [
            _item(
                RelationshipType="CONTAINS",
                ValueType="TEXT",
                ConceptNameCodeSequence=DicomSequence([_code("121071", "DCM", "Finding")]),
                TextValue=finding,
            )
        ]
    )
    _file_meta(ds, ExplicitVRLittleEndian)
    _write(ds, folder / series_uid / "0001.dcm")
    return series_uid


def _segmentation(
    folder: Path,
    collection: str,
    seed: int,
    patient: _PatientPlan,
    study: _StudyPlan,
    source: _SeriesPlan,
    source_instances: list[tuple[str, str]],
    series_number: int,
) -> str | None:
    """A binary SEG of the tumor on the source series' tumor slices; returns the series UID."""
    tumor = patient.tumor
    if tumor is None:
        return None
    frames: list[NDArray[np.bool_]] = []
    frame_sources: list[tuple[int, str, float]] = []
    for slice_index, z_mm in enumerate(source.slice_positions_mm):
        if tumor.section_radius_mm(z_mm) < MIN_LABELLED_SECTION_MM:
            continue
        mask = tumor_mask(
            patient.head, tumor, z_mm, source.size_px, field_of_view_mm=source.field_of_view_mm
        )
        if mask.any():
            frames.append(mask)
            frame_sources.append((slice_index, source_instances[slice_index][0], z_mm))
    if not frames:
        return None
    series_uid = _uid(collection, seed, "seg-series", patient.index, study.index)
    ds = Dataset()
    ds.SOPClassUID = SegmentationStorage
    ds.SOPInstanceUID = _uid(collection, seed, "seg", patient.index, study.index)
    _common_header(
        ds, collection, patient, study, "SEG", series_uid, series_number, "Tumor segmentation"
    )
    ds.InstanceNumber = 1
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.ContentLabel = "TUMOR"
    ds.ContentDescription = "Phantom tumor mass (ground truth)"
    ds.ContentCreatorName = ""
    ds.SegmentationType = "BINARY"
    ds.LossyImageCompression = "00"
    ds.FrameOfReferenceUID = _uid(collection, seed, "frame", patient.index, study.index)
    ds.PositionReferenceIndicator = ""
    ds.SegmentSequence = DicomSequence(
        [
            _item(
                SegmentNumber=1,
                SegmentLabel="Tumor",
                SegmentAlgorithmType="AUTOMATIC",
                SegmentAlgorithmName="braincls-phantom",
                SegmentedPropertyCategoryCodeSequence=DicomSequence(
                    [_code("49755003", "SCT", "Morphologically Altered Structure")]
                ),
                SegmentedPropertyTypeCodeSequence=DicomSequence(
                    [_code("108369006", "SCT", "Neoplasm")]
                ),
            )
        ]
    )
    ds.ReferencedSeriesSequence = DicomSequence(
        [
            _item(
                SeriesInstanceUID=source.uid,
                ReferencedInstanceSequence=DicomSequence(
                    [
                        _item(ReferencedSOPClassUID=MRImageStorage, ReferencedSOPInstanceUID=uid)
                        for _, uid, _ in frame_sources
                    ]
                ),
            )
        ]
    )
    pixel_mm = round(source.field_of_view_mm / source.size_px, 6)
    ds.SharedFunctionalGroupsSequence = DicomSequence(
        [
            _functional_group(
                PixelMeasuresSequence=_item(
                    PixelSpacing=[pixel_mm, pixel_mm], SliceThickness=source.slice_thickness_mm
                ),
                PlaneOrientationSequence=_item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0]),
            )
        ]
    )
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(
        [
            _functional_group(
                DerivationImageSequence=_item(
                    SourceImageSequence=DicomSequence(
                        [
                            _item(
                                ReferencedSOPClassUID=MRImageStorage,
                                ReferencedSOPInstanceUID=uid,
                                PurposeOfReferenceCodeSequence=DicomSequence(
                                    [
                                        _code(
                                            "121322",
                                            "DCM",
                                            "Source image for image processing operation",
                                        )
                                    ]
                                ),
                            )
                        ]
                    ),
                    DerivationCodeSequence=DicomSequence([_code("113076", "DCM", "Segmentation")]),
                ),
                FrameContentSequence=_item(DimensionIndexValues=[1, position]),
                PlanePositionSequence=_item(
                    ImagePositionPatient=_image_position(source, study, z_mm)
                ),
                SegmentIdentificationSequence=_item(ReferencedSegmentNumber=1),
            )
            for position, (_, uid, z_mm) in enumerate(frame_sources, start=1)
        ]
    )
    _dimension_modules(
        ds,
        _uid(collection, seed, "seg-dimension", patient.index, study.index),
        (
            "ReferencedSegmentNumber:SegmentIdentificationSequence",
            "ImagePositionPatient:PlanePositionSequence",
        ),
    )
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = source.size_px
    ds.Columns = source.size_px
    ds.NumberOfFrames = len(frames)
    ds.BitsAllocated = 1
    ds.BitsStored = 1
    ds.HighBit = 0
    ds.PixelRepresentation = 0
    ds.PixelData = pack_bits(np.stack(frames).astype(np.uint8))
    _file_meta(ds, ExplicitVRLittleEndian)
    _write(ds, folder / series_uid / "0001.dcm")
    return series_uid


def generate_dicom_collection(
    out_dir: Path,
    collection: str = DEFAULT_COLLECTION,
    n_patients: int = 6,
    seed: int = 0,
    *,
    patient_id_prefix: str = "PHANTOM",
    image_size_px: int | None = None,
    slices_per_series: tuple[int, int] = (10, 20),
    release_date: date = date(2024, 1, 15),
    encodings: tuple[SeriesEncoding, ...] = SPECIAL_ENCODINGS,
) -> DicomCollectionSummary:
    """Write a TCIA-like MR collection of phantom patients as real DICOM under ``out_dir``.

    Layout: ``out_dir/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/NNNN.dcm`` plus
    ``labels.csv`` and ``catalogue.json`` at the root; ``out_dir`` appears whole or not at all.

    - ``n_patients`` (at least 2) patients ``<patient_id_prefix>-001``..., half of them (rounded
      up) with a tumor; 1-2 studies each, 1-3 axial series per study (more if needed so every
      special encoding gets a series), ``slices_per_series`` slices per series (inclusive range)
      at ``image_size_px`` (default: 128, 192 or 256 per series).
    - ``encodings``: the special encodings to spread over the series, one series each (the rest
      are Explicit VR Little Endian). A compressed one whose encoder is not installed (JPEG-LS
      needs ``pyjpegls``, JPEG 2000 ``pylibjpeg-openjpeg``) is skipped with a warning.
    - Labels: a ``patient`` row per patient; for tumor patients a ``series`` row when all slices
      agree, else an ``instance`` row per SOP instance (a slice is ``yes`` when it cuts the mass
      with a radius of at least ``MIN_LABELLED_SECTION_MM``). Non-image objects (SR, SEG) carry
      no labels.
    - ``release_date``: the collection's release date (ISO in ``catalogue.json``); series of
      follow-up studies are released 90 days later per study, so "new since" queries have
      series before and after a cutoff.

    UIDs are ``2.25.<n>`` values derived from ``collection``, ``seed`` and the object's place, so
    the same arguments give byte-identical files.
    """
    if n_patients < 2:
        raise ValueError(
            f"n_patients must be at least 2 (one with a tumor, one without), got {n_patients}"
        )
    low, high = slices_per_series
    if low < 2 or high < low:
        raise ValueError(
            f"slices_per_series must be (low, high) with 2 <= low <= high, got {slices_per_series}"
        )
    if image_size_px is not None and image_size_px < 16:
        raise ValueError(f"image_size_px must be at least 16, got {image_size_px}")
    unknown = [encoding for encoding in encodings if encoding not in _TRANSFER_SYNTAX]
    if unknown:
        raise ValueError(f"unknown encodings {unknown}; expected some of {list(_TRANSFER_SYNTAX)}")
    usable: list[SeriesEncoding] = []
    for encoding in encodings:
        if _encoder_available(encoding):
            usable.append(encoding)
        else:
            logger.warning(
                "no encoder installed for %s (%s): its series is written as Explicit VR Little "
                "Endian instead; install pyjpegls / pylibjpeg-openjpeg to get it",
                encoding,
                _TRANSFER_SYNTAX[encoding].name,
            )
    started = time.perf_counter()
    patients = _plan_collection(
        collection,
        n_patients,
        seed,
        patient_id_prefix,
        image_size_px,
        (low, high),
        release_date,
        tuple(usable),
    )

    label_rows: list[tuple[str, str, str]] = []
    catalogue_series: list[dict[str, object]] = []
    syntax_counts: Counter[str] = Counter()
    modality_counts: Counter[str] = Counter()
    encoding_counts: Counter[str] = Counter()
    n_studies = 0
    n_instances = 0
    with atomic_dir(Path(out_dir)) as staging:
        for patient in patients:
            label_rows.append(("patient", patient.patient_id, _label(patient.tumor is not None)))
            for study in patient.studies:
                n_studies += 1
                study_folder = staging / patient.patient_id / study.uid
                written_by_series: dict[str, list[tuple[str, str]]] = {}
                for plan in study.series:
                    images, shows_tumor = _render_series(patient, plan, seed, study.index)
                    writer = (
                        _multi_frame_series
                        if plan.encoding == "multiframe"
                        else _single_frame_series
                    )
                    written = writer(
                        study_folder / plan.uid, collection, seed, patient, study, plan, images
                    )
                    written_by_series[plan.uid] = written
                    n_instances += len(written)
                    syntax_counts[_TRANSFER_SYNTAX[plan.encoding].name] += len(written)
                    modality_counts["MR"] += 1
                    encoding_counts[plan.encoding] += 1
                    if patient.tumor is not None:
                        label_rows.extend(_series_labels(plan, written, shows_tumor))
                    catalogue_series.append(
                        _catalogue_entry(
                            patient,
                            study,
                            plan.uid,
                            "MR",
                            plan.protocol.description,
                            len(written),
                            plan.release_date,
                            _TRANSFER_SYNTAX[plan.encoding],
                        )
                    )
                next_number = len(study.series) + 1
                extra: list[tuple[str | None, str, str]] = []
                if study.segmentation:
                    source = next(p for p in study.series if p.encoding != "multiframe")
                    seg_uid = _segmentation(
                        study_folder,
                        collection,
                        seed,
                        patient,
                        study,
                        source,
                        written_by_series[source.uid],
                        next_number,
                    )
                    extra.append((seg_uid, "SEG", "Tumor segmentation"))
                    next_number += 1
                if study.report:
                    report_uid = _report(
                        study_folder, collection, seed, patient, study, next_number
                    )
                    extra.append((report_uid, "SR", "Radiology report"))
                for uid, modality, description in extra:
                    if uid is None:
                        continue
                    n_instances += 1
                    syntax_counts[ExplicitVRLittleEndian.name] += 1
                    modality_counts[modality] += 1
                    catalogue_series.append(
                        _catalogue_entry(
                            patient,
                            study,
                            uid,
                            modality,
                            description,
                            1,
                            release_date + timedelta(days=90 * study.index),
                            ExplicitVRLittleEndian,
                        )
                    )
        _write_labels(staging / LABELS_FILE, label_rows)
        write_json(
            staging / CATALOGUE_FILE,
            {
                # Keys read by the local NBIA server (devkit.nbia.catalogue).
                "Collection": collection,
                "DateReleased": release_date.isoformat(),
                "SeriesDateReleased": {
                    str(entry["series_instance_uid"]): entry["release_date"]
                    for entry in catalogue_series
                },
                "Public": True,
                "LicenseName": LICENSE_NAME,
                "LicenseURI": LICENSE_URI,
                # Descriptive keys, for people and tests.
                "Description": (
                    "Synthetic brain MR phantom collection generated by braincls (no patient "
                    "data): axial T1, T2, FLAIR and post-contrast T1 series of phantom heads, "
                    "half with an irregular tumor; labels in labels.csv."
                ),
                "LabelsFile": LABELS_FILE,
                "Seed": seed,
                "Series": catalogue_series,
            },
        )
    elapsed = time.perf_counter() - started
    n_series = len(catalogue_series)
    summary = DicomCollectionSummary(
        out_dir=Path(out_dir),
        collection=collection,
        n_patients=len(patients),
        n_tumor_patients=sum(p.tumor is not None for p in patients),
        n_studies=n_studies,
        n_series=n_series,
        n_image_series=modality_counts["MR"],
        n_instances=n_instances,
        instances_by_transfer_syntax=dict(sorted(syntax_counts.items())),
        series_by_modality=dict(sorted(modality_counts.items())),
        series_by_encoding=dict(sorted(encoding_counts.items())),
        labels_path=Path(out_dir) / LABELS_FILE,
        catalogue_path=Path(out_dir) / CATALOGUE_FILE,
        elapsed_seconds=elapsed,
    )
    logger.info(
        "wrote collection %s: %d patients, %d series, %d files in %.1f s",
        collection,
        summary.n_patients,
        n_series,
        n_instances,
        elapsed,
    )
    return summary


def _label(has_tumor: bool) -> str:
    return "yes" if has_tumor else "no"


def _series_labels(
    plan: _SeriesPlan, written: list[tuple[str, str]], shows_tumor: list[bool]
) -> list[tuple[str, str, str]]:
    """A series row when every slice agrees, else one instance row per SOP instance."""
    if plan.encoding == "multiframe" or len(set(shows_tumor)) == 1:
        return [("series", plan.uid, _label(any(shows_tumor)))]
    return [
        ("instance", uid, _label(flag)) for (uid, _), flag in zip(written, shows_tumor, strict=True)
    ]


def _write_labels(path: Path, rows: list[tuple[str, str, str]]) -> None:
    """Write (level, identifier, label) rows, the identifier in its level's column."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LABEL_COLUMNS)
    for level, identifier, label in rows:
        row = [level, "", "", "", label]
        row[_LEVEL_COLUMN[level]] = identifier
        writer.writerow(row)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def _catalogue_entry(
    patient: _PatientPlan,
    study: _StudyPlan,
    series_uid: str,
    modality: str,
    description: str,
    n_instances: int,
    released: date,
    transfer_syntax: UID,
) -> dict[str, object]:
    return {
        "patient_id": patient.patient_id,
        "study_instance_uid": study.uid,
        "series_instance_uid": series_uid,
        "modality": modality,
        "series_description": description,
        "image_count": n_instances,
        "release_date": released.isoformat(),
        "transfer_syntax_uid": str(transfer_syntax),
    }
