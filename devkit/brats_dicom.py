"""A TCIA-like DICOM collection made from the real BraTS 2018 glioma volumes, with DICOM SEG.

:func:`generate_brats_collection` writes selected BraTS cases (``<case>/<case>_<sequence>.nii.gz``
plus ``<case>/<case>_seg.nii.gz``) as one collection folder that the local NBIA server serves
like any TCIA collection::

    out_dir/<collection>/catalogue.json
    out_dir/<collection>/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/0001.dcm ...

Per case (PatientID = the case name, e.g. ``Brats18_TCIA01_201_1``) there is one study with

- one MR series per requested sequence (``flair``, ``t1``, ``t1ce``, ``t2``; (0008,103E) Series
  Description is the sequence name): one single-frame MR Image Storage instance per axial slice,
  int16 pixels exactly as in the NIfTI file (or their block means), Explicit VR Little Endian;
- one DICOM SEG (``highdicom.seg.Segmentation``, BINARY, empty frames omitted) of the BraTS labels
  1, 2 and 4 as segments 1, 2 and 3, drawn on the series of ``seg_series`` (default: the first
  requested sequence).

All series of a case share (0020,000D) Study Instance UID, (0020,0052) Frame of Reference UID
and exactly the same slice geometry: BraTS volumes are co-registered. No ``labels.csv`` is
written: slice labels must come from the SEG objects.

Geometry. nibabel's affine maps voxel indices (i, j, k) to RAS+ world coordinates; DICOM patient
coordinates are LPS+, so the first two rows of the affine change sign. Volumes are first
reoriented to L, P, S voxel order (BraTS already is), and the axial slice ``k`` is displayed as
``volume[:, :, k].T``: rows follow j (anterior at the top, posterior at the bottom) and columns
follow i (the patient's right on the left of the screen, the patient's left on the right), the
radiological convention. With ``in_plane_step`` s, pixel (r, c) is the mean of the s x s voxel
block whose centre is voxel (c*s + (s-1)/2, r*s + (s-1)/2, k); trailing voxels that do not fill a
block are dropped, so the first pixel's position is unchanged by cropping.

Pixel values. Stored as signed 16-bit integers, (0028,0103) Pixel Representation 1, with
(0028,1053) Rescale Slope 1 and (0028,1052) Rescale Intercept 0: the stored values are the NIfTI
values (no shift), so a reader gets the BraTS intensities back exactly at ``in_plane_step`` 1.

UIDs. Every UID is ``generate_uid(prefix=PYDICOM_ROOT_UID, entropy_srcs=[...])`` of a fixed
namespace, the collection, the case and the object's place (sequence, sampling options, slice
index), so reruns give byte-identical files. highdicom's creation timestamps and random
Dimension Organization UID are replaced by fixed values for the same reason.

Only third-party packages are imported (numpy, nibabel, pydicom, highdicom).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import nibabel as nib
import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    PYDICOM_ROOT_UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

logger = logging.getLogger(__name__)

GENERATOR_NAME = "braincls-brats-dicom"
GENERATOR_VERSION = "1.0"
DEFAULT_COLLECTION = "BRATS-GLIOMA-SEG"
#: The four co-registered MR sequences of every BraTS case (file name suffixes).
BRATS_SEQUENCES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
CATALOGUE_FILE = "catalogue.json"
DEFAULT_RELEASE_DATE = dt.date(2024, 1, 15)
#: BraTS images of TCIA's TCGA-GBM / TCGA-LGG patients and their labels are published by TCIA
#: under CC BY 3.0 (the BraTS-TCGA-GBM / -LGG analysis results).
LICENSE_NAME = "Creative Commons Attribution 3.0 Unported License"
LICENSE_URI = "https://creativecommons.org/licenses/by/3.0/"
DATA_DESCRIPTION_URI = "https://www.med.upenn.edu/sbia/brats2018/data.html"
CITATIONS: tuple[str, ...] = (
    "Menze BH et al. The Multimodal Brain Tumor Image Segmentation Benchmark (BRATS). "
    "IEEE TMI 2015;34(10):1993-2024.",
    "Bakas S et al. Advancing The Cancer Genome Atlas glioma MRI collections with expert "
    "segmentation labels and radiomic features. Scientific Data 2017;4:170117.",
    "Bakas S et al. Identifying the Best Machine Learning Algorithms for Brain Tumor "
    "Segmentation, Progression Assessment, and Overall Survival Prediction in the BRATS "
    "Challenge. arXiv:1811.02629.",
)
STUDY_DESCRIPTION = "BraTS 2018 pre-operative brain MRI"
#: (0012,0063) De-identification Method (LO, at most 64 characters).
DEIDENTIFICATION_METHOD = "BraTS 2018 de-identified, skull-stripped; no dates (braincls)"
DERIVATION_DESCRIPTION = (
    "BraTS 2018 pre-processing: co-registered to the SRI24 atlas, resampled to 1 mm isotropic, "
    "skull-stripped; NIfTI converted to DICOM by braincls"
)
#: Root of every UID written (pydicom's; the suffix is a hash of the object's place).
UID_ROOT = PYDICOM_ROOT_UID
_UID_NAMESPACE = "braincls/brats-dicom/v1"
#: (0013,xx10) of TCIA's CTP private block holds the collection ("Project Name").
CTP_PRIVATE_GROUP = 0x0013
CTP_PRIVATE_CREATOR = "CTP"
CTP_COLLECTION_ELEMENT = 0x10
#: Percentiles (of the volume's non-zero voxels) behind (0028,1050)/(0028,1051) the window.
WINDOW_PERCENTILES = (0.5, 99.5)
#: (0020,0011) Series Number of the SEG; image series are numbered 1..n in the order requested.
SEG_SERIES_NUMBER = 100

_IMPLEMENTATION_VERSION_NAME = "BRAINCLS_BRATS1"
_CONTRAST_SEQUENCES = frozenset({"t1ce"})


@dataclass(frozen=True)
class BratsSegment:
    """One BraTS label value as a DICOM SEG segment (Segment Description macro)."""

    label_value: int
    segment_number: int
    segment_label: str
    property_type: Code
    display_color: str


#: BraTS 2018 labels as segments; category SCT 49755003 "Morphologically Abnormal Structure",
#: anatomic region SCT 12738006 "Brain". Label 3 is unused since BraTS 2017.
BRATS_SEGMENTS: tuple[BratsSegment, ...] = (
    BratsSegment(1, 1, "Necrotic and non-enhancing tumor core", codes.SCT.Necrosis, "red"),
    BratsSegment(2, 2, "Peritumoral edema", codes.SCT.Edema, "green"),
    BratsSegment(4, 3, "Enhancing tumor", codes.SCT.Neoplasm, "yellow"),
)
BRATS_LABEL_VALUES: tuple[int, ...] = (0, *(segment.label_value for segment in BRATS_SEGMENTS))


@dataclass(frozen=True)
class SliceGeometry:
    """Image Plane module values of one axial slice, in DICOM patient coordinates (LPS+, mm)."""

    #: (0020,0032) Image Position (Patient): centre of the first transmitted pixel.
    image_position_patient_mm: tuple[float, float, float]
    #: (0020,0037) Image Orientation (Patient): row direction (increasing column index), then
    #: column direction (increasing row index), as direction cosines.
    image_orientation_patient: tuple[float, float, float, float, float, float]
    #: (0028,0030) Pixel Spacing: [spacing between rows, spacing between columns].
    pixel_spacing_mm: tuple[float, float]
    #: (0018,0050) Slice Thickness: the voxel's extent along the slice normal.
    slice_thickness_mm: float


@dataclass(frozen=True)
class BratsCollectionSummary:
    """What :func:`generate_brats_collection` wrote."""

    collection_dir: Path
    collection: str
    cases: tuple[str, ...]
    sequences: tuple[str, ...]
    #: The sequence whose series the SEG objects reference.
    seg_sequence: str
    n_series: int
    n_image_series: int
    n_seg_objects: int
    #: All DICOM files (MR instances and SEG objects).
    n_instances: int
    #: Bytes of all DICOM files plus ``catalogue.json``.
    n_bytes: int
    #: Axial slices written per case (each image series of a case has this many instances).
    slices_by_case: Mapping[str, int]
    #: Written slices per case on which the (resampled) tumour mask is non-empty.
    tumour_slices_by_case: Mapping[str, int]
    #: SEG frames per case (one per non-empty slice and segment).
    seg_frames_by_case: Mapping[str, int]
    catalogue_path: Path
    elapsed_seconds: float


@dataclass(frozen=True)
class BratsCase:
    """One case's co-registered volumes in L, P, S voxel order."""

    case: str
    #: Intensity volumes by sequence, int16, shape (i, j, k).
    volumes: Mapping[str, NDArray[np.int16]]
    #: BraTS label values 0, 1, 2, 4, shape (i, j, k).
    labels: NDArray[np.int16]
    #: Voxel index to RAS+ world (mm), the NIfTI affine after reorientation to L, P, S.
    ras_affine: NDArray[np.float64]


# --------------------------------------------------------------------------------------------
# Pure functions: geometry, resampling, windowing, UIDs.
# --------------------------------------------------------------------------------------------


def lps_affine(ras_affine: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """Voxel index to DICOM patient LPS+ coordinates (mm): the RAS+ affine's x and y negated."""
    affine = np.asarray(ras_affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"expected a 4x4 affine, got shape {affine.shape}")
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def _clean(value: float) -> float:
    """``value`` rounded to 1e-6 mm (DICOM DS holds 16 characters), without a negative zero."""
    return round(float(value), 6) + 0.0


def slice_geometry(
    ras_affine: NDArray[np.floating[Any]], slice_index: int, in_plane_step: int = 1
) -> SliceGeometry:
    """Image Plane attributes of axial slice ``slice_index`` shown as ``volume[:, :, k].T``.

    Pixel (r, c) of the (block-averaged) slice is the centre of voxels
    ``i = c*s + (s-1)/2``, ``j = r*s + (s-1)/2`` (s = ``in_plane_step``), so
    (0020,0032) Image Position (Patient) is the LPS position of voxel ((s-1)/2, (s-1)/2, k),
    (0020,0037) Image Orientation (Patient) is the unit i axis (row direction) then the unit j
    axis (column direction), and (0028,0030) Pixel Spacing is [s*|j axis|, s*|i axis|].
    Raises ``ValueError`` when the in-plane axes are not orthogonal (DICOM cannot store shear
    within a plane).
    """
    if in_plane_step < 1:
        raise ValueError(f"in_plane_step must be at least 1, got {in_plane_step}")
    affine = lps_affine(ras_affine)
    axis_i, axis_j, axis_k = affine[:3, 0], affine[:3, 1], affine[:3, 2]
    spacing_i, spacing_j = float(np.linalg.norm(axis_i)), float(np.linalg.norm(axis_j))
    if spacing_i == 0.0 or spacing_j == 0.0:
        raise ValueError(f"affine has a zero in-plane axis: {affine.tolist()}")
    row_direction, column_direction = axis_i / spacing_i, axis_j / spacing_j
    if abs(float(row_direction @ column_direction)) > 1e-6:
        raise ValueError(
            f"in-plane voxel axes are not orthogonal (cosine {row_direction @ column_direction:.3g})"
            "; DICOM Image Orientation (Patient) cannot describe them"
        )
    normal = np.cross(row_direction, column_direction)
    centre = (in_plane_step - 1) / 2.0
    position = affine @ np.array([centre, centre, float(slice_index), 1.0])
    return SliceGeometry(
        image_position_patient_mm=(_clean(position[0]), _clean(position[1]), _clean(position[2])),
        image_orientation_patient=(
            _clean(row_direction[0]),
            _clean(row_direction[1]),
            _clean(row_direction[2]),
            _clean(column_direction[0]),
            _clean(column_direction[1]),
            _clean(column_direction[2]),
        ),
        pixel_spacing_mm=(_clean(spacing_j * in_plane_step), _clean(spacing_i * in_plane_step)),
        slice_thickness_mm=_clean(abs(float(axis_k @ normal))),
    )


def axial_slice(volume: NDArray[Any], slice_index: int) -> NDArray[Any]:
    """Axial slice ``k`` of an L, P, S volume as displayed: ``volume[:, :, k].T`` (rows j,
    columns i: anterior at the top, the patient's left on the right)."""
    return np.ascontiguousarray(volume[:, :, slice_index].T)


def _crop_to_blocks(image: NDArray[Any], step: int) -> NDArray[Any]:
    rows, columns = image.shape
    if rows < step or columns < step:
        raise ValueError(f"in_plane_step {step} exceeds the slice size {rows}x{columns}")
    return image[: rows - rows % step, : columns - columns % step]


def block_mean(image: NDArray[np.integer[Any]], step: int) -> NDArray[np.int16]:
    """Downsample a 2D image by the mean of ``step`` x ``step`` blocks, rounded half to even.

    Trailing rows and columns that do not fill a block are dropped. ``step`` 1 returns the
    image unchanged (as int16).
    """
    if step < 1:
        raise ValueError(f"in_plane_step must be at least 1, got {step}")
    if step == 1:
        return np.asarray(image, dtype=np.int16).copy()
    cropped = _crop_to_blocks(np.asarray(image), step)
    rows, columns = cropped.shape
    blocks = cropped.astype(np.float64).reshape(rows // step, step, columns // step, step)
    means: NDArray[np.int16] = np.rint(blocks.mean(axis=(1, 3))).astype(np.int16)
    return means


def block_mode_labels(labels: NDArray[np.integer[Any]], step: int) -> NDArray[np.int16]:
    """Downsample a 2D BraTS label image: each block takes its most frequent label value.

    Ties go to the higher label value (4 enhancing > 2 edema > 1 core > 0 background), so a
    block half tumour, half background is tumour. Labels stay mutually exclusive. Raises
    ``ValueError`` for values other than 0, 1, 2, 4.
    """
    if step < 1:
        raise ValueError(f"in_plane_step must be at least 1, got {step}")
    image = np.asarray(labels)
    unknown = sorted(set(np.unique(image).tolist()) - set(BRATS_LABEL_VALUES))
    if unknown:
        raise ValueError(
            f"label values {unknown} are not BraTS 2018 labels {list(BRATS_LABEL_VALUES)}"
        )
    if step == 1:
        return image.astype(np.int16)
    cropped = _crop_to_blocks(image, step)
    rows, columns = cropped.shape
    blocks = cropped.reshape(rows // step, step, columns // step, step)
    descending = sorted(BRATS_LABEL_VALUES, reverse=True)
    counts = np.stack([(blocks == value).sum(axis=(1, 3)) for value in descending])
    # argmax returns the first maximum: the highest label value among tied counts.
    modes: NDArray[np.int16] = np.asarray(descending, dtype=np.int16)[np.argmax(counts, axis=0)]
    return modes


def segment_numbers_from_labels(labels: NDArray[np.integer[Any]]) -> NDArray[np.uint8]:
    """BraTS label values (0, 1, 2, 4) to SEG segment numbers (0, 1, 2, 3)."""
    numbers = np.zeros(np.shape(labels), dtype=np.uint8)
    for segment in BRATS_SEGMENTS:
        numbers[np.asarray(labels) == segment.label_value] = segment.segment_number
    return numbers


def window_from_percentiles(
    volume: NDArray[np.integer[Any]], percentiles: tuple[float, float] = WINDOW_PERCENTILES
) -> tuple[float, float]:
    """(0028,1050) Window Center and (0028,1051) Window Width spanning the given percentiles of
    the volume's non-zero voxels (the brain; BraTS volumes are skull-stripped, background 0)."""
    values = np.asarray(volume)
    brain = values[values != 0]
    if brain.size == 0:
        brain = values.ravel()
    low, high = (float(v) for v in np.percentile(brain, percentiles))
    width = max(high - low, 1.0)
    return round((low + high) / 2.0, 1), round(width, 1)


def select_slices(
    depth: int,
    slice_step: int,
    brain_volumes: Sequence[NDArray[Any]] = (),
) -> tuple[int, ...]:
    """Axial slice indices ``0, slice_step, 2*slice_step, ...`` below ``depth``; when
    ``brain_volumes`` are given, only those where at least one volume has a non-zero voxel."""
    if slice_step < 1:
        raise ValueError(f"slice_step must be at least 1, got {slice_step}")
    indices = range(0, depth, slice_step)
    if not brain_volumes:
        return tuple(indices)
    return tuple(k for k in indices if any(bool(np.any(v[:, :, k])) for v in brain_volumes))


def brats_uid(*parts: object) -> str:
    """A deterministic UID under :data:`UID_ROOT`: the SHA-512 of the namespace and ``parts``."""
    return str(
        generate_uid(prefix=UID_ROOT, entropy_srcs=[_UID_NAMESPACE, *(str(p) for p in parts)])
    )


# --------------------------------------------------------------------------------------------
# Reading BraTS.
# --------------------------------------------------------------------------------------------


def list_brats_cases(brats_dir: Path) -> tuple[str, ...]:
    """Case folders under ``brats_dir`` that hold ``<case>_seg.nii.gz``, sorted."""
    root = Path(brats_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"BraTS folder {root} does not exist")
    return tuple(sorted(p.name for p in root.iterdir() if (p / f"{p.name}_seg.nii.gz").is_file()))


def _load_lps(path: Path) -> tuple[NDArray[Any], NDArray[np.float64]]:
    """Stored voxel values (no scaling) and affine of a NIfTI file, reoriented to L, P, S."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    image = nib.load(path)
    if not isinstance(image, nib.Nifti1Image):
        raise ValueError(f"{path}: expected a NIfTI image, got {type(image).__name__}")
    slope = getattr(image.dataobj, "slope", 1.0)
    intercept = getattr(image.dataobj, "inter", 0.0)
    if slope not in (1.0, None) or intercept not in (0.0, None):
        raise ValueError(
            f"{path}: NIfTI scl_slope {slope} / scl_inter {intercept}: expected unscaled integers"
        )
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(image.affine),
        nib.orientations.axcodes2ornt(("L", "P", "S")),
    )
    image = image.as_reoriented(transform)
    data = np.asarray(image.dataobj)
    if data.ndim != 3 or not np.issubdtype(data.dtype, np.integer):
        raise ValueError(f"{path}: expected a 3D integer volume, got {data.ndim}D {data.dtype}")
    return data, np.asarray(image.affine, dtype=np.float64)


def load_case(brats_dir: Path, case: str, sequences: Sequence[str]) -> BratsCase:
    """Read ``<case>_<sequence>.nii.gz`` for each sequence and ``<case>_seg.nii.gz``.

    Raises ``ValueError`` when the volumes are not co-registered (shape or affine differ) or an
    intensity volume does not fit int16.
    """
    folder = Path(brats_dir) / case
    labels, affine = _load_lps(folder / f"{case}_seg.nii.gz")
    volumes: dict[str, NDArray[np.int16]] = {}
    for sequence in sequences:
        path = folder / f"{case}_{sequence}.nii.gz"
        data, sequence_affine = _load_lps(path)
        if data.shape != labels.shape or not np.allclose(sequence_affine, affine, atol=1e-4):
            raise ValueError(
                f"{path}: shape {data.shape} / affine differ from {case}_seg.nii.gz "
                f"{labels.shape}: the case's volumes are not co-registered"
            )
        info = np.iinfo(np.int16)
        if int(data.min()) < info.min or int(data.max()) > info.max:
            raise ValueError(f"{path}: values {data.min()}..{data.max()} do not fit int16")
        volumes[sequence] = data.astype(np.int16, copy=False)
    return BratsCase(
        case=case, volumes=volumes, labels=labels.astype(np.int16, copy=False), ras_affine=affine
    )


# --------------------------------------------------------------------------------------------
# Writing DICOM.
# --------------------------------------------------------------------------------------------


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _add_ctp_block(ds: Dataset, collection: str) -> None:
    """TCIA's CTP anonymiser names the collection in (0013,xx10) of private creator 'CTP'."""
    block = ds.private_block(CTP_PRIVATE_GROUP, CTP_PRIVATE_CREATOR, create=True)
    block.add_new(CTP_COLLECTION_ELEMENT, "LO", collection)


def _add_deidentification(ds: Dataset) -> None:
    """(0012,0062) Patient Identity Removed, (0012,0063) De-identification Method and its code."""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    ds.DeidentificationMethodCodeSequence = DicomSequence(
        [_code_item("113100", "DCM", "Basic Application Confidentiality Profile")]
    )


@dataclass(frozen=True)
class _CaseUids:
    study: str
    frame_of_reference: str


def _series_key(sequence: str, slice_step: int, in_plane_step: int, only_brain: bool) -> str:
    # Series whose pixels or membership differ must not share UIDs, even across collections
    # served side by side; the options are part of every series' UID.
    return f"{sequence}/slice_step={slice_step}/in_plane_step={in_plane_step}/brain={only_brain}"


def _mr_dataset(
    *,
    collection: str,
    case: str,
    uids: _CaseUids,
    series_uid: str,
    series_number: int,
    sequence: str,
    instance_number: int,
    sop_instance_uid: str,
    geometry: SliceGeometry,
    spacing_between_slices_mm: float,
    pixels: NDArray[np.int16],
    window: tuple[float, float],
) -> Dataset:
    """One single-frame MR Image Storage instance of an axial slice (headers like TCIA's)."""
    ds = Dataset()
    # SOP common.
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    # Patient: (0010,0010) Patient's Name, (0010,0030) Birth Date and (0010,0040) Sex are type
    # 2; BraTS keeps no birth date or sex, so they are present and empty.
    ds.PatientName = case
    ds.PatientID = case
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    _add_deidentification(ds)
    # General study: BraTS has no dates, so (0008,0020) Study Date / (0008,0030) Time are empty.
    ds.StudyInstanceUID = uids.study
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.StudyDescription = STUDY_DESCRIPTION
    # General series.
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = sequence
    ds.ProtocolName = sequence
    ds.BodyPartExamined = "BRAIN"
    ds.PatientPosition = "HFS"
    # Frame of reference: shared by all series of the case (co-registered volumes).
    ds.FrameOfReferenceUID = uids.frame_of_reference
    ds.PositionReferenceIndicator = ""
    # General equipment: unknown (multi-institution data); type 2.
    ds.Manufacturer = ""
    # General image.
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.InstanceNumber = instance_number
    ds.AcquisitionNumber = 1
    ds.DerivationDescription = DERIVATION_DESCRIPTION
    ds.BurnedInAnnotation = "NO"
    # Image plane.
    ds.PixelSpacing = list(geometry.pixel_spacing_mm)
    ds.ImageOrientationPatient = list(geometry.image_orientation_patient)
    ds.ImagePositionPatient = list(geometry.image_position_patient_mm)
    ds.SliceThickness = geometry.slice_thickness_mm
    row_direction = np.array(geometry.image_orientation_patient[:3])
    column_direction = np.array(geometry.image_orientation_patient[3:])
    ds.SliceLocation = _clean(
        float(
            np.cross(row_direction, column_direction) @ np.array(geometry.image_position_patient_mm)
        )
    )
    # MR image: acquisition parameters are unknown for BraTS; type 1 values say so (RM =
    # research mode), type 2 values are empty.
    ds.ScanningSequence = "RM"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = ""
    ds.RepetitionTime = ""
    ds.EchoTime = ""
    ds.EchoTrainLength = ""
    ds.SpacingBetweenSlices = spacing_between_slices_mm
    if sequence in _CONTRAST_SEQUENCES:
        # Contrast/Bolus module: post-contrast T1.
        ds.ContrastBolusAgent = "GADOLINIUM"
    # Image pixel: signed 16 bit, the NIfTI values themselves.
    ds.set_pixel_data(pixels, "MONOCHROME2", 16, generate_instance_uid=False)
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.WindowCenter = window[0]
    ds.WindowWidth = window[1]
    ds.WindowCenterWidthExplanation = f"BRAIN P{WINDOW_PERCENTILES[0]:g}-P{WINDOW_PERCENTILES[1]:g}"
    _add_ctp_block(ds, collection)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    return ds


def _write(ds: Dataset, path: Path) -> int:
    """Write ``ds`` as a DICOM file (preamble, 'DICM', file meta); return its size in bytes."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data)


def segment_descriptions() -> list[hd.seg.SegmentDescription]:
    """The Segment Sequence items of the BraTS labels (see :data:`BRATS_SEGMENTS`).

    Each carries (0062,0006) Segment Description ``BraTS label <value>`` so a reader can map
    segment numbers 1, 2, 3 back to the BraTS label values 1, 2, 4.
    """
    descriptions = []
    for segment in BRATS_SEGMENTS:
        description = hd.seg.SegmentDescription(
            segment_number=segment.segment_number,
            segment_label=segment.segment_label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=segment.property_type,
            # BraTS labels were drawn by raters and approved by neuroradiologists.
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            anatomic_regions=[codes.SCT.Brain],
            display_color=hd.color.CIELabColor.from_string(segment.display_color),
        )
        description.SegmentDescription = f"BraTS label {segment.label_value}"
        descriptions.append(description)
    return descriptions


def _segmentation(
    *,
    collection: str,
    case: str,
    source_images: Sequence[Dataset],
    segment_map: NDArray[np.uint8],
    seg_sequence: str,
    series_uid: str,
    sop_instance_uid: str,
    release_date: dt.date,
) -> hd.seg.Segmentation:
    """A BINARY DICOM SEG of ``segment_map`` (one frame per source image, values 0..3) drawn on
    ``source_images``; empty frames are omitted (highdicom's ``omit_empty_frames``)."""
    has_any = bool(segment_map.any())
    with warnings.catch_warnings():
        # TCIA's (0010,0010) Patient's Name is the PatientID: one component, no caret.
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person")
        seg = hd.seg.Segmentation(
            source_images=list(source_images),
            pixel_array=segment_map,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segment_descriptions(),
            series_instance_uid=series_uid,
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=sop_instance_uid,
            instance_number=1,
            manufacturer="braincls",
            manufacturer_model_name=GENERATOR_NAME,
            software_versions=GENERATOR_VERSION,
            device_serial_number="0",
            content_description="BraTS 2018 expert tumor segmentation (labels 1, 2, 4)",
            content_label="BRATS_TUMOR",
            # A SEG cannot have zero frames: for a case with no tumour on any written slice
            # highdicom would revert to all frames itself (with a logged warning); say so here.
            omit_empty_frames=has_any,
            series_description=f"BraTS tumor segmentation ({seg_sequence})",
            content_date=release_date,
            content_time=dt.time(0, 0, 0),
        )
    # Determinism: highdicom stamps (0008,0012)/(0008,0013) Instance Creation Date/Time and its
    # own Contributing Equipment's (0018,A002) Contribution DateTime with the current time, and
    # draws a random (0020,9164) Dimension Organization UID.
    for keyword in ("InstanceCreationDate", "InstanceCreationTime"):
        if keyword in seg:
            delattr(seg, keyword)
    for equipment in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in equipment:
            equipment.ContributionDateTime = release_date.strftime("%Y%m%d") + "000000"
    organization_uid = brats_uid(collection, case, "seg-dimension-organization", series_uid)
    for item in seg.get("DimensionOrganizationSequence", []):
        item.DimensionOrganizationUID = organization_uid
    for item in seg.get("DimensionIndexSequence", []):
        item.DimensionOrganizationUID = organization_uid
    seg.BodyPartExamined = "BRAIN"
    _add_deidentification(seg)
    _add_ctp_block(seg, collection)
    return seg


# --------------------------------------------------------------------------------------------
# The collection.
# --------------------------------------------------------------------------------------------


@contextmanager
def _atomic_dir(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target``, renamed onto it on success (replacing it)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield staging
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _check_options(
    brats_dir: Path,
    collection: str,
    cases: Sequence[str] | None,
    sequences: Sequence[str],
    slice_step: int,
    in_plane_step: int,
    seg_series: str | None,
) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    if not collection or "/" in collection or collection.startswith("."):
        raise ValueError(f"collection {collection!r} cannot be a folder name")
    if len(collection) > 64:
        raise ValueError(f"collection {collection!r} is longer than 64 characters (LO)")
    if slice_step < 1:
        raise ValueError(f"slice_step must be at least 1, got {slice_step}")
    if in_plane_step < 1:
        raise ValueError(f"in_plane_step must be at least 1, got {in_plane_step}")
    wanted_sequences = tuple(sequences)
    if not wanted_sequences:
        raise ValueError("sequences is empty; give at least one of " + ", ".join(BRATS_SEQUENCES))
    unknown = [s for s in wanted_sequences if s not in BRATS_SEQUENCES]
    if unknown or len(set(wanted_sequences)) != len(wanted_sequences):
        raise ValueError(
            f"sequences {list(wanted_sequences)}: expected distinct values among "
            f"{list(BRATS_SEQUENCES)}"
        )
    seg_sequence = wanted_sequences[0] if seg_series is None else seg_series
    if seg_sequence not in wanted_sequences:
        raise ValueError(
            f"seg_series {seg_sequence!r} is not among the requested sequences "
            f"{list(wanted_sequences)}"
        )
    available = list_brats_cases(brats_dir)
    wanted_cases = available if cases is None else tuple(cases)
    missing = [c for c in wanted_cases if c not in available]
    if missing:
        raise ValueError(
            f"cases {missing} not found under {brats_dir} (need <case>/<case>_seg.nii.gz); "
            f"available: {list(available)}"
        )
    if not wanted_cases or len(set(wanted_cases)) != len(wanted_cases):
        raise ValueError(f"cases must be distinct and not empty, got {list(wanted_cases)}")
    return wanted_cases, wanted_sequences, seg_sequence


def generate_brats_collection(
    brats_dir: Path,
    out_dir: Path,
    *,
    collection: str = DEFAULT_COLLECTION,
    cases: Sequence[str] | None = None,
    sequences: Sequence[str] = ("t1ce",),
    slice_step: int = 1,
    in_plane_step: int = 1,
    only_brain_slices: bool = False,
    seg_series: str | None = None,
    release_date: dt.date = DEFAULT_RELEASE_DATE,
) -> BratsCollectionSummary:
    """Write BraTS cases as the TCIA-like collection ``out_dir/<collection>`` with DICOM SEG.

    - ``cases``: case folder names under ``brats_dir`` (default: every folder with a
      ``<case>_seg.nii.gz``), written in the order given; PatientID is the case name.
    - ``sequences``: image series per case, any of ``flair``, ``t1``, ``t1ce``, ``t2``; series
      numbers 1.. in this order; (0008,103E) Series Description is the sequence.
    - ``slice_step``: every n-th axial slice (k = 0, n, 2n, ...); positions stay exact and
      (0018,0088) Spacing Between Slices is n times the voxel size.
    - ``in_plane_step``: block-average s x s voxels in plane (mask: most frequent label per
      block); (0028,0030) Pixel Spacing and (0020,0032) Image Position follow.
    - ``only_brain_slices``: skip slices on which every requested sequence is zero.
    - ``seg_series``: the sequence whose series the SEG references (default: the first).
    - ``release_date``: ``DateReleased`` of every series in ``catalogue.json``.

    The collection folder appears whole or not at all (replacing an earlier one); the same
    arguments give byte-identical files. No ``labels.csv``: labels live in the SEG objects.
    """
    started = time.perf_counter()
    brats_dir, out_dir = Path(brats_dir), Path(out_dir)
    wanted_cases, wanted_sequences, seg_sequence = _check_options(
        brats_dir, collection, cases, sequences, slice_step, in_plane_step, seg_series
    )
    collection_dir = out_dir / collection
    slices_by_case: dict[str, int] = {}
    tumour_slices_by_case: dict[str, int] = {}
    seg_frames_by_case: dict[str, int] = {}
    catalogue_series: list[dict[str, object]] = []
    n_instances = 0
    n_bytes = 0
    with _atomic_dir(collection_dir) as staging:
        for case in wanted_cases:
            data = load_case(brats_dir, case, wanted_sequences)
            depth = data.labels.shape[2]
            indices = select_slices(
                depth,
                slice_step,
                tuple(data.volumes.values()) if only_brain_slices else (),
            )
            if not indices:
                raise ValueError(
                    f"{case}: no slice left to write (only_brain_slices on an empty case)"
                )
            uids = _CaseUids(
                study=brats_uid(collection, case, "study"),
                frame_of_reference=brats_uid(collection, case, "frame-of-reference"),
            )
            study_folder = staging / case / uids.study
            geometries = {k: slice_geometry(data.ras_affine, k, in_plane_step) for k in indices}
            spacing_between_slices_mm = _clean(
                float(np.linalg.norm(lps_affine(data.ras_affine)[:3, 2])) * slice_step
            )
            seg_sources: list[Dataset] = []
            for series_number, sequence in enumerate(wanted_sequences, start=1):
                key = _series_key(sequence, slice_step, in_plane_step, only_brain_slices)
                series_uid = brats_uid(collection, case, "series", key)
                volume = data.volumes[sequence]
                window = window_from_percentiles(volume)
                for instance_number, k in enumerate(indices, start=1):
                    ds = _mr_dataset(
                        collection=collection,
                        case=case,
                        uids=uids,
                        series_uid=series_uid,
                        series_number=series_number,
                        sequence=sequence,
                        instance_number=instance_number,
                        sop_instance_uid=brats_uid(collection, case, "instance", key, k),
                        geometry=geometries[k],
                        spacing_between_slices_mm=spacing_between_slices_mm,
                        pixels=block_mean(axial_slice(volume, k), in_plane_step),
                        window=window,
                    )
                    n_bytes += _write(ds, study_folder / series_uid / f"{instance_number:04d}.dcm")
                    if sequence == seg_sequence:
                        # highdicom needs the source headers only.
                        del ds.PixelData
                        seg_sources.append(ds)
                n_instances += len(indices)
                catalogue_series.append(
                    _catalogue_entry(
                        case, uids.study, series_uid, "MR", sequence, len(indices), release_date
                    )
                )
            segment_map = np.stack(
                [
                    segment_numbers_from_labels(
                        block_mode_labels(axial_slice(data.labels, k), in_plane_step)
                    )
                    for k in indices
                ]
            )
            seg_key = _series_key(seg_sequence, slice_step, in_plane_step, only_brain_slices)
            seg_series_uid = brats_uid(collection, case, "seg-series", seg_key)
            seg = _segmentation(
                collection=collection,
                case=case,
                source_images=seg_sources,
                segment_map=segment_map,
                seg_sequence=seg_sequence,
                series_uid=seg_series_uid,
                sop_instance_uid=brats_uid(collection, case, "seg", seg_key),
                release_date=release_date,
            )
            n_bytes += _write(seg, study_folder / seg_series_uid / "0001.dcm")
            n_instances += 1
            entry = _catalogue_entry(
                case,
                uids.study,
                seg_series_uid,
                "SEG",
                str(seg.SeriesDescription),
                1,
                release_date,
            )
            entry["referenced_series_instance_uid"] = str(seg_sources[0].SeriesInstanceUID)
            catalogue_series.append(entry)
            slices_by_case[case] = len(indices)
            tumour_slices_by_case[case] = int(np.count_nonzero(segment_map.any(axis=(1, 2))))
            seg_frames_by_case[case] = int(seg.NumberOfFrames)
            logger.info(
                "%s: %d slices x %d series, %d tumour slices, SEG of %d frames",
                case,
                len(indices),
                len(wanted_sequences),
                tumour_slices_by_case[case],
                seg_frames_by_case[case],
            )
        catalogue = _catalogue(
            collection,
            release_date,
            catalogue_series,
            {
                "cases": list(wanted_cases),
                "sequences": list(wanted_sequences),
                "seg_series": seg_sequence,
                "slice_step": slice_step,
                "in_plane_step": in_plane_step,
                "only_brain_slices": only_brain_slices,
                "generator": f"{GENERATOR_NAME} {GENERATOR_VERSION}",
            },
        )
        text = json.dumps(catalogue, indent=2, sort_keys=True) + "\n"
        (staging / CATALOGUE_FILE).write_text(text, encoding="utf-8")
        n_bytes += len(text.encode("utf-8"))
    elapsed = time.perf_counter() - started
    summary = BratsCollectionSummary(
        collection_dir=collection_dir,
        collection=collection,
        cases=wanted_cases,
        sequences=wanted_sequences,
        seg_sequence=seg_sequence,
        n_series=len(catalogue_series),
        n_image_series=len(wanted_cases) * len(wanted_sequences),
        n_seg_objects=len(wanted_cases),
        n_instances=n_instances,
        n_bytes=n_bytes,
        slices_by_case=slices_by_case,
        tumour_slices_by_case=tumour_slices_by_case,
        seg_frames_by_case=seg_frames_by_case,
        catalogue_path=collection_dir / CATALOGUE_FILE,
        elapsed_seconds=elapsed,
    )
    logger.info(
        "wrote collection %s: %d cases, %d series, %d files, %d bytes in %.1f s",
        collection,
        len(wanted_cases),
        summary.n_series,
        n_instances,
        n_bytes,
        elapsed,
    )
    return summary


def _catalogue_entry(
    case: str,
    study_uid: str,
    series_uid: str,
    modality: str,
    description: str,
    image_count: int,
    released: dt.date,
) -> dict[str, object]:
    return {
        "patient_id": case,
        "study_instance_uid": study_uid,
        "series_instance_uid": series_uid,
        "modality": modality,
        "series_description": description,
        "image_count": image_count,
        "release_date": released.isoformat(),
        "transfer_syntax_uid": str(ExplicitVRLittleEndian),
    }


def _catalogue(
    collection: str,
    release_date: dt.date,
    series: list[dict[str, object]],
    options: dict[str, object],
) -> dict[str, object]:
    """``catalogue.json``: the keys the local NBIA server reads plus descriptive ones."""
    return {
        # Keys read by the local NBIA server's catalogue.
        "Collection": collection,
        "DateReleased": release_date.isoformat(),
        "SeriesDateReleased": {
            str(entry["series_instance_uid"]): entry["release_date"] for entry in series
        },
        "Public": True,
        "LicenseName": LICENSE_NAME,
        "LicenseURI": LICENSE_URI,
        "DataDescriptionURI": DATA_DESCRIPTION_URI,
        # Descriptive keys, for people and tests.
        "Description": (
            "Real BraTS 2018 glioma MRI (co-registered, skull-stripped, 1 mm) as DICOM: one MR "
            "series per sequence and one DICOM SEG per patient with the expert tumour labels "
            "(segments 1 necrotic/non-enhancing core, 2 peritumoral edema, 3 enhancing tumour = "
            "BraTS labels 1, 2, 4). No labels file: slice labels come from the SEG objects."
        ),
        "Citations": list(CITATIONS),
        "Generator": options,
        "Series": series,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python brats_dicom.py BRATS_DIR OUT_DIR [--cases ...] [--sequences t1ce flair] ...``"""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("brats_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--collection", default=DEFAULT_COLLECTION)
    parser.add_argument("--cases", nargs="+", default=None)
    parser.add_argument("--sequences", nargs="+", default=["t1ce"], choices=BRATS_SEQUENCES)
    parser.add_argument("--slice-step", type=int, default=1)
    parser.add_argument("--in-plane-step", type=int, default=1)
    parser.add_argument("--only-brain-slices", action="store_true")
    parser.add_argument("--seg-series", default=None, choices=BRATS_SEQUENCES)
    args = parser.parse_args(argv)
    # This module's progress only; highdicom logs every attribute copy at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)
    summary = generate_brats_collection(
        args.brats_dir,
        args.out_dir,
        collection=args.collection,
        cases=args.cases,
        sequences=args.sequences,
        slice_step=args.slice_step,
        in_plane_step=args.in_plane_step,
        only_brain_slices=args.only_brain_slices,
        seg_series=args.seg_series,
    )
    print(
        f"{summary.collection_dir}: {len(summary.cases)} cases, {summary.n_series} series, "
        f"{summary.n_instances} files, {summary.n_bytes} bytes, "
        f"{sum(summary.tumour_slices_by_case.values())} tumour slices of "
        f"{sum(summary.slices_by_case.values())}, {summary.elapsed_seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
