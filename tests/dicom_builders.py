"""Synthetic DICOM for tests: MR series with exact geometry, DICOM SEG (highdicom) and
RTSTRUCT objects over them (``tests/`` is on ``sys.path`` through its conftest)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

PATIENT_ID = "PAT-1"
AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
RTSTRUCT_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.481.3"


def _ds_text(values: Sequence[float]) -> str:
    return "\\".join(f"{value:.6f}".rstrip("0").rstrip(".") if value else "0" for value in values)


def make_series(
    *,
    series_uid: str,
    frame_of_reference_uid: str,
    patient_id: str = PATIENT_ID,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    first_position: tuple[float, float, float] = (-100.0, -80.0, 10.0),
    orientation: tuple[tuple[float, float, float], tuple[float, float, float]] = AXIAL,
    pixel_spacing_mm: tuple[float, float] = (0.8, 0.8),
    rows: int = 32,
    cols: int = 32,
    count: int = 8,
    gap_mm: float = 2.0,
    pixels: Callable[[int], npt.NDArray[np.uint16]] | None = None,
) -> list[Dataset]:
    """``count`` single-frame MR slices ``gap_mm`` apart along the slice normal; ``pixels``
    gives slice ``index``'s pixels (zeros by default)."""
    normal = np.cross(orientation[0], orientation[1])
    slices = []
    for index in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PatientID = patient_id
        ds.PatientName = "Test^Patient"
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyDate = "20200101"
        ds.StudyTime = "000000"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.Modality = "MR"
        ds.Manufacturer = "synthetic"
        ds.SeriesNumber = 1
        ds.InstanceNumber = count - index  # reversed: order must come from positions
        position = np.round(np.asarray(first_position) + index * gap_mm * normal, 6)
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.ImageOrientationPatient = [*orientation[0], *orientation[1]]
        ds.PixelSpacing = list(pixel_spacing_mm)
        ds.SliceThickness = gap_mm
        data = pixels(index) if pixels is not None else np.zeros((rows, cols), np.uint16)
        ds.set_pixel_data(data, "MONOCHROME2", 12)
        slices.append(ds)
    return slices


def make_seg(
    path: Path,
    source_images: Sequence[Dataset],
    pixel_array: npt.NDArray[np.generic],
    *,
    labels: Sequence[str] = ("Enhancing tumor", "Edema"),
    segmentation_type: str = "BINARY",
) -> Path:
    """A SEG written with highdicom (empty frames omitted), one segment per label."""
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type="MANUAL",
        )
        for number, label in enumerate(labels, start=1)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg = hd.seg.Segmentation(
            source_images=list(source_images),
            pixel_array=pixel_array,
            segmentation_type=segmentation_type,
            segment_descriptions=descriptions,
            series_instance_uid=generate_uid(),
            series_number=100,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer="synthetic",
            manufacturer_model_name="tests",
            software_versions="1",
            device_serial_number="1",
        )
    seg.save_as(path)
    return path


@dataclass
class Contour:
    points_mm: npt.NDArray[np.float64]
    image: Dataset | None  # referenced in (3006,0016) Contour Image Sequence, or None
    geometric_type: str = "CLOSED_PLANAR"


def make_rtstruct(
    path: Path,
    series: Sequence[Dataset],
    rois: dict[int, tuple[str, list[Contour]]],
    *,
    frame_of_reference_uid: str | None = None,
) -> Path:
    """An RTSTRUCT written by hand: ROI number -> (ROI name, contours)."""
    first = series[0]
    frame_of_reference = frame_of_reference_uid or str(first.FrameOfReferenceUID)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS_UID
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS_UID
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.PatientID = first.PatientID
    ds.StudyInstanceUID = first.StudyInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.StructureSetLabel = "tumour"
    image_items = []
    for image in series:
        item = Dataset()
        item.ReferencedSOPClassUID = image.SOPClassUID
        item.ReferencedSOPInstanceUID = image.SOPInstanceUID
        image_items.append(item)
    referenced_series = Dataset()
    referenced_series.SeriesInstanceUID = first.SeriesInstanceUID
    referenced_series.ContourImageSequence = DicomSequence(image_items)
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = DicomSequence([referenced_series])
    referenced_frame = Dataset()
    referenced_frame.FrameOfReferenceUID = frame_of_reference
    referenced_frame.RTReferencedStudySequence = DicomSequence([study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([referenced_frame])
    roi_items, contour_items = [], []
    for number, (name, contours) in rois.items():
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = frame_of_reference
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        roi_items.append(roi)
        roi_contour = Dataset()
        roi_contour.ReferencedROINumber = number
        roi_contour.ROIDisplayColor = [255, 0, 0]
        items = []
        for contour in contours:
            item = Dataset()
            if contour.image is not None:
                image_item = Dataset()
                image_item.ReferencedSOPClassUID = contour.image.SOPClassUID
                image_item.ReferencedSOPInstanceUID = contour.image.SOPInstanceUID
                item.ContourImageSequence = DicomSequence([image_item])
            item.ContourGeometricType = contour.geometric_type
            item.NumberOfContourPoints = len(contour.points_mm)
            item.ContourData = [round(float(v), 6) for v in np.asarray(contour.points_mm).ravel()]
            items.append(item)
        roi_contour.ContourSequence = DicomSequence(items)
        contour_items.append(roi_contour)
    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    ds.save_as(path, enforce_file_format=True)
    return path
