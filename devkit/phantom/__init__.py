"""Synthetic brain MR phantoms: the embedded default data of braincls.

- :mod:`devkit.phantom.anatomy`: synthetic heads, tumors and axial slices (numpy, pure).
- :func:`generate_image_set`: a balanced class-per-folder PNG set (``yes/``, ``no/``).
- :func:`generate_dicom_collection`: a TCIA-like MR collection as real DICOM files, with a labels
  table and a catalogue, for the local NBIA server and the DICOM conversion stage.
"""

from devkit.phantom.anatomy import (
    SEQUENCES,
    HeadModel,
    TumorSpec,
    make_head,
    make_tumor,
    render_slice,
    tumor_mask,
)
from devkit.phantom.dicom import DicomCollectionSummary, generate_dicom_collection
from devkit.phantom.images import PhantomSummary, generate_image_set

__all__ = [
    "SEQUENCES",
    "DicomCollectionSummary",
    "HeadModel",
    "PhantomSummary",
    "TumorSpec",
    "generate_dicom_collection",
    "generate_image_set",
    "make_head",
    "make_tumor",
    "render_slice",
    "tumor_mask",
]
