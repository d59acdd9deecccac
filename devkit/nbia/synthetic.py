"""Tiny synthetic MR collections for tests and benchmarks of the NBIA server and client.

Not the demo data (that is :mod:`devkit.phantom`): random 12-bit pixels in valid, complete
DICOM files, as small and as many as a test needs. Layout written::

    <root>/<collection>/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/IM0001.dcm ...
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from devkit.nbia.catalogue import CATALOGUE_FILE

_DESCRIPTIONS = ("AX T1", "AX FLAIR", "AX T2", "SAG T1")


def synthetic_uid(*parts: object) -> str:
    """A deterministic UID under pydicom's root, hashed from ``parts``."""
    return str(generate_uid(entropy_srcs=[str(part) for part in parts]))


def write_synthetic_series(
    folder: Path,
    *,
    patient_id: str,
    study_instance_uid: str,
    series_instance_uid: str,
    n_instances: int = 4,
    rows: int = 32,
    columns: int = 32,
    series_number: int = 1,
    series_description: str = "AX T1",
    modality: str = "MR",
    body_part_examined: str | None = "BRAIN",
    manufacturer: str = "BRAINCLS",
    study_date: str = "20240102",
    seed: int = 0,
) -> list[Path]:
    """Write ``n_instances`` MR slices of one series into ``folder``; return their paths.

    Sets (0020,0013) InstanceNumber 1..n, (0020,0012) AcquisitionNumber 1,
    (0020,0032) ImagePositionPatient one slice thickness apart, and 12-bit pixel data."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(1, n_instances + 1):
        sop_uid = UID(synthetic_uid(series_instance_uid, index))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset = Dataset()
        dataset.file_meta = meta
        dataset.SOPClassUID = MRImageStorage
        dataset.SOPInstanceUID = sop_uid
        dataset.PatientID = patient_id
        dataset.PatientName = patient_id
        dataset.PatientSex = "O"
        dataset.PatientAge = "050Y"
        dataset.StudyInstanceUID = study_instance_uid
        dataset.SeriesInstanceUID = series_instance_uid
        dataset.StudyDate = study_date
        dataset.SeriesDate = study_date
        dataset.StudyDescription = "MRI BRAIN"
        dataset.StudyID = "1"
        dataset.Modality = modality
        if body_part_examined is not None:
            dataset.BodyPartExamined = body_part_examined
        dataset.Manufacturer = manufacturer
        dataset.ManufacturerModelName = "SYNTH"
        dataset.SeriesNumber = series_number
        dataset.SeriesDescription = series_description
        dataset.ProtocolName = series_description
        dataset.InstanceNumber = index
        dataset.AcquisitionNumber = 1
        dataset.ImagePositionPatient = [0.0, 0.0, float(index) * 5.0]
        dataset.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        dataset.PixelSpacing = [1.0, 1.0]
        dataset.SliceThickness = 5.0
        pixels = rng.integers(0, 4096, size=(rows, columns), dtype=np.uint16)
        dataset.set_pixel_data(pixels, photometric_interpretation="MONOCHROME2", bits_stored=12)
        path = folder / f"IM{index:04d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_synthetic_collection(
    root: Path,
    collection: str,
    *,
    n_patients: int = 2,
    series_per_patient: int = 2,
    instances_per_series: int = 4,
    rows: int = 32,
    columns: int = 32,
    seed: int = 0,
    first_patient: int = 1,
    catalogue: Mapping[str, object] | None = None,
) -> list[str]:
    """Write a collection folder ``root/collection`` (one study per patient) and, when given,
    its ``catalogue.json``; return the SeriesInstanceUIDs written, in order. Patients are
    numbered from ``first_patient`` so that a later call can add new patients."""
    folder = root / collection
    series_uids = []
    for patient_number in range(first_patient, first_patient + n_patients):
        patient_id = f"{collection}-{patient_number:03d}"
        study_uid = synthetic_uid(collection, patient_id, "study")
        for series_number in range(1, series_per_patient + 1):
            series_uid = synthetic_uid(collection, patient_id, "series", series_number)
            write_synthetic_series(
                folder / patient_id / study_uid / series_uid,
                patient_id=patient_id,
                study_instance_uid=study_uid,
                series_instance_uid=series_uid,
                n_instances=instances_per_series,
                rows=rows,
                columns=columns,
                series_number=series_number,
                series_description=_DESCRIPTIONS[(series_number - 1) % len(_DESCRIPTIONS)],
                seed=seed * 100_003 + patient_number * 101 + series_number,
            )
            series_uids.append(series_uid)
    if catalogue is not None:
        (folder / CATALOGUE_FILE).write_text(json.dumps(dict(catalogue), indent=2) + "\n")
    return series_uids
