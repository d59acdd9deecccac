"""Manifest tables passed between stages: explicit columns, explicit dtypes, no PHI.

Every data source (an image folder, converted DICOM) produces the same *images manifest*; the
split stage adds ``split``; the preprocess stage adds ``image_path`` and intensity statistics.
Set-aside files go to a *quarantine table* with a reason.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from braincls.common.hashing import sha256_file

#: Columns every images manifest has, with their pandas dtypes.
IMAGE_COLUMNS: dict[str, str] = {
    "sample_id": "string",  # unique per image: content hash (folders) or SOPInstanceUID[/frame] (DICOM)
    "source": "string",  # data-set name: image folder name or TCIA collection
    "source_path": "string",  # absolute path of the file read
    "relative_path": "string",  # path relative to the source root
    "label": "string",  # class name (folder name or labels-table value)
    "label_index": "int64",  # index into the sorted class list; for two classes 1 is the positive class
    "width": "int64",
    "height": "int64",
    "channels": "int64",
    "sha256": "string",  # content hash of the source file
    "fingerprint": "string",  # 64-bit perceptual hash, 16 hex digits
    "group_id": "string",  # near-duplicate group (folders) or patient (DICOM); never split across sets
    "patient_id": "string",  # de-identified PatientID for DICOM data, <NA> for image folders
    "label_source": "string",  # where the label came from: folder, table, SEG, RTSTRUCT, mask
}

#: Values of ``label_source``.
LABEL_SOURCES = ("folder", "table", "SEG", "RTSTRUCT", "mask")

#: Reasons of set-aside rows that are a choice, not a fault of the data: slices the converter or
#: the labelling rule leaves out by design, and segmentation objects (read for labels, not
#: trained on). The validation gate's quarantine share does not count them.
SELECTION_REASONS = frozenset(
    {
        "background_slice",
        "segmentation",
        "ambiguous_tumour_area",
        "no_brain",
        "unselected_segments_only",
    }
)

SPLIT_COLUMN = "split"
SPLITS = ("train", "val", "test")

#: Columns added by preprocessing.
PREPROCESSED_COLUMNS: dict[str, str] = {
    "image_path": "string",  # relative to the data root
    "mean_intensity": "float64",  # of the stored 8-bit image, 0..255
    "std_intensity": "float64",
    "image_size_px": "int64",
}

QUARANTINE_COLUMNS: dict[str, str] = {
    "source_path": "string",
    "relative_path": "string",
    "reason": "string",
}

#: Header fields that must never appear in any table written by braincls.
PHI_COLUMNS = frozenset(
    {
        "PatientName",
        "PatientBirthDate",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "OtherPatientNames",
        "patient_name",
        "patient_birth_date",
    }
)


class ManifestError(ValueError):
    """A manifest is missing columns, has the wrong types or holds forbidden fields."""


def empty_frame(columns: dict[str, str]) -> pd.DataFrame:
    """An empty frame with exactly ``columns`` and their dtypes."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def coerce(frame: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Return ``frame`` with ``columns`` cast to their dtypes; raise if one is missing."""
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise ManifestError(f"manifest lacks required columns: {', '.join(missing)}")
    forbidden = sorted(PHI_COLUMNS.intersection(frame.columns))
    if forbidden:
        raise ManifestError(f"manifest holds patient-identifying columns: {', '.join(forbidden)}")
    return frame.astype(columns)


def read_manifest(path: Path, columns: dict[str, str] | None = None) -> pd.DataFrame:
    """Read a parquet manifest, checking ``columns`` (defaults to the images manifest)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    frame = pd.read_parquet(path)
    return coerce(frame, IMAGE_COLUMNS if columns is None else columns)


def manifest_hash(path: Path) -> str:
    """Content hash of a manifest file, for cache keys."""
    return sha256_file(Path(path))
