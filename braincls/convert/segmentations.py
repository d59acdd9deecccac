"""Slice labels from DICOM SEG and RTSTRUCT tumour segmentations.

TCIA collections do not label slices: they ship tumour segmentations beside the MR series, as
DICOM Segmentation objects (SEG, SOP Class 1.2.840.10008.5.1.4.1.1.66.4, or Label Map
Segmentation 1.2.840.10008.5.1.4.1.1.66.7) or RT Structure Sets (RTSTRUCT, SOP Class
1.2.840.10008.5.1.4.1.1.481.3). :func:`labels_from_segmentations` measures the tumour area (mm²)
a segmentation covers on every image of the series it references, gives that area to
:func:`braincls.data.labelling.label_slice`, and returns the labels together with a table of
everything it set aside and why. Nothing is resampled or guessed: an image is labelled only
when the segmentation's geometry provably lies on the image's pixel grid.

The images manifest
-------------------
One row per converted image (each frame of a multi-frame object its own row), with the columns
in :data:`INPUT_COLUMNS`. The geometry columns hold the header values as the converter read them:

- ``image_position_patient``: (0020,0032) Image Position (Patient) of the image, or of the frame's
  (0020,9113) Plane Position Sequence item, as DICOM writes a multi-valued DS: three decimals
  joined by a backslash, e.g. ``"-100.0\\\\-80.0\\\\10.0"`` (``"\\\\".join(str(v) for v in
  ds.ImagePositionPatient)``); <NA> when the header has none.
- ``image_orientation_patient``: (0020,0037) Image Orientation (Patient), or the frame's
  (0020,9116) Plane Orientation Sequence item, six backslash-joined decimals.
- ``pixel_spacing_row_mm`` / ``pixel_spacing_col_mm``: the two values of (0028,0030) Pixel
  Spacing (or the frame's (0028,9110) Pixel Measures Sequence), in that order: the first is the
  distance between rows, the second the distance between columns.
- ``rows`` / ``cols``: (0028,0010) Rows and (0028,0011) Columns.
- ``frame_index``: 0-based frame; 0 for single-frame images. A DICOM (0008,1160) Referenced
  Frame Number ``n`` is ``frame_index == n - 1``.

Images the converter set aside (e.g. background slices) are not in the manifest, but their
geometry matters when two series are compared; pass them as ``series_geometry`` (same geometry
columns, no ``sample_id`` or ``brain_area_mm2``) so that a series missing a few background slices
still counts as co-registered.

Geometry conventions
--------------------
(0020,0032) is the centre of the first transmitted pixel. The first three values of (0020,0037)
are the direction in which the *column index* increases (along a row), the last three the
direction in which the *row index* increases. A point ``p`` (mm) lies at continuous pixel
coordinates ``column = (p - position) . row_direction / column_spacing`` and ``row = (p -
position) . column_direction / row_spacing``; integer coordinates are pixel centres.

SEG
---
Read with :func:`highdicom.seg.segread`. Segments count when
:func:`~braincls.data.labelling.selected_segments` selects their (0062,0004) Segment Number or
(0062,0005) Segment Label; the selected segments are combined with a logical OR. BINARY and LABELMAP pixels count when non-zero,
FRACTIONAL pixels when at least half of (0062,000E) Maximum Fractional Value. Every frame's
(0008,9124) Derivation Image Sequence reference is checked against the manifest's geometry of the
image it names before any pixel is read (same rows and columns, (0020,9113) position within
0.01 mm, (0020,9116) orientation within 1e-4, (0028,9110) pixel spacing within 1e-4 mm, and no
(0028,135A) Spatial Locations Preserved of ``NO`` or ``REORIENTED``); only then does highdicom
get ``ignore_spatial_locations=True`` for frames that do not state YES. Images of a referenced
series without a SEG frame have nothing segmented (area 0): SEG writers omit empty frames.
Frames of multi-frame source images are read with ``get_pixels_by_source_frame``.

RTSTRUCT
--------
Read with pydicom. ROIs count when ``selected_segments`` selects their (3006,0022) ROI Number or
(3006,0026) ROI Name. A (3006,0040) Contour Sequence item is placed on the image its (3006,0016)
Contour Image Sequence names; without one, on the image of the referenced series whose plane lies
nearest the contour's mean distance along the slice normal, when that is less than half the slice
spacing. Every point must then lie within ``min(0.5 mm, half the slice spacing)`` of that plane
and at most half of the points may fall outside the image, else the contour is ``contour_off_grid``
and the image it belongs to (for an unplaceable contour: every image within one slice spacing of
it) is withheld, not labelled. Contours are filled with :func:`cv2.fillPoly` (see
:func:`contour_to_mask` for the half-pixel convention). On one image, the CLOSED_PLANAR contours
of one ROI are combined by nesting: a contour lying wholly inside another is a hole, one inside a
hole an island again (even-odd by nesting depth); contours that merely overlap are OR-ed.
CLOSED_PLANAR_XOR contours are XOR-ed as (3006,0042) defines. ROIs are OR-ed. POINT and OPEN_*
contours of a selected ROI cannot be measured; the images they lie on are withheld
(``unsupported_contour_type``).

Partly present references
-------------------------
A segmentation whose referenced images are only partly in the manifest still labels the present
ones (each image's area depends only on the frames or contours drawn on it); a
``references_partly_present`` row and the summary's ``unmatched`` column report how many
referenced images are missing. When none is present the segmentation is set aside
(``references_nothing_present``), even when its series is present under other instance UIDs.

Co-registered series
--------------------
With ``rule.propagate_to_coregistered``, another series of the same (0010,0020) Patient ID with
the same (0020,0052) Frame of Reference UID receives a referenced series' areas when
:func:`geometry_difference` finds nothing: both have the same number of images; every image
position of one is within 0.01 mm (Euclidean) of exactly one of the other and vice versa; and the
paired images have orientations within 1e-4 (each of the six cosines), pixel spacings within
1e-4 mm (each value) and equal rows and columns. Images are paired by that position match, and
each target image is labelled with its own brain area. Any difference: the series is not
labelled and a ``geometry_mismatch`` row says what differs.

Two segmentations on one image
------------------------------
One label per image: the largest tumour area wins, whether measured on the image or propagated
to it (a tumour any annotator drew counts; a false "no" is the costliest label noise here); ties
go to a label measured on the image itself, then SEG over RTSTRUCT, then the smaller segmentation
SOP Instance UID, then the input order. The losers are counted in the summary's ``superseded``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import cv2
import highdicom as hd
import numpy as np
import numpy.typing as npt
import pandas as pd
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from braincls.config import LabelRuleConfig
from braincls.data.labelling import (
    AMBIGUOUS,
    NO_BRAIN,
    NO_TUMOUR,
    TUMOUR,
    label_slice,
    selected_segments,
)

logger = logging.getLogger(__name__)

SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
#: Label Map Segmentation Storage (highdicom writes it for segmentation_type LABELMAP).
LABEL_MAP_SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.7"
RTSTRUCT_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.481.3"

#: Largest difference of a direction cosine of (0020,0037) for two images to share orientation.
ORIENTATION_TOLERANCE = 1e-4
#: Largest distance (mm) between two (0020,0032) positions that are the same position.
POSITION_TOLERANCE_MM = 0.01
#: Largest difference (mm) of a (0028,0030) Pixel Spacing value for two images to share spacing.
PIXEL_SPACING_TOLERANCE_MM = 1e-4
#: Largest distance (mm) of a contour point from its image's plane (capped at half a slice).
CONTOUR_PLANE_TOLERANCE_MM = 0.5
#: Largest share of a contour's points that may lie outside its image before it is off the grid.
MAX_CONTOUR_POINTS_OUTSIDE_FRACTION = 0.5
#: A FRACTIONAL SEG pixel counts when its value is at least this share of the maximum.
FRACTIONAL_THRESHOLD = 0.5
#: Fractional bits of the vertex coordinates handed to cv2.fillPoly (1/256 pixel).
FILL_SHIFT_BITS = 8
#: Source instances whose SEG pixels are read at once (bounds memory on large series).
SEG_INSTANCES_PER_READ = 64

SEG_SOURCE = "SEG"
RTSTRUCT_SOURCE = "RTSTRUCT"

#: Columns of the images manifest this module reads, with the dtype it expects.
INPUT_COLUMNS: dict[str, str] = {
    "sample_id": "string",
    "patient_id": "string",  # (0010,0020)
    "series_instance_uid": "string",  # (0020,000E)
    "sop_instance_uid": "string",  # (0008,0018)
    "frame_index": "int64",  # 0-based; 0 for single-frame images
    "frame_of_reference_uid": "string",  # (0020,0052)
    "image_position_patient": "string",  # (0020,0032) or per-frame Plane Position, "x\\y\\z" mm
    "image_orientation_patient": "string",  # (0020,0037) or per-frame Plane Orientation, 6 values
    "rows": "int64",  # (0028,0010)
    "cols": "int64",  # (0028,0011)
    "pixel_spacing_row_mm": "float64",  # (0028,0030) first value
    "pixel_spacing_col_mm": "float64",  # (0028,0030) second value
    "brain_area_mm2": "float64",  # foreground area of the image
}

#: Columns of ``series_geometry`` (and the geometry part of the images manifest).
GEOMETRY_COLUMNS: tuple[str, ...] = tuple(
    name for name in INPUT_COLUMNS if name not in ("sample_id", "brain_area_mm2")
)

LABEL_COLUMNS: dict[str, str] = {
    "sample_id": "string",
    "sop_instance_uid": "string",
    "frame_index": "int64",
    "series_instance_uid": "string",
    "label": "string",  # "yes" / "no", <NA> when the rule sets the slice aside
    "rule_reason": "string",  # the rule's reason when it sets the slice aside
    "tumour_area_mm2": "float64",
    "label_source": "string",  # "SEG" or "RTSTRUCT"
    "segmentation_sop_instance_uid": "string",
    "propagated_from_series": "string",  # <NA> unless the label came through co-registration
}

SET_ASIDE_COLUMNS: dict[str, str] = {
    "segmentation_path": "string",  # relative to the root (or the file name); never absolute
    "segmentation_sop_instance_uid": "string",
    "reason": "string",  # a Reason value
    "detail": "string",
    "series_instance_uid": "string",  # the series concerned; ";"-joined when several
}

SUMMARY_COLUMNS: dict[str, str] = {
    "segmentation_path": "string",
    "segmentation_sop_instance_uid": "string",
    "label_source": "string",
    "status": "string",  # "used", "superseded" (every label lost to another) or "set_aside"
    "labelled_yes": "int64",
    "labelled_no": "int64",
    "ambiguous": "int64",  # the rule's ambiguous_tumour_area
    "no_brain": "int64",  # the rule's no_brain
    "propagated": "int64",  # of the labels above, those given to a co-registered series
    "superseded": "int64",  # images it measured whose label another segmentation gave
    "withheld": "int64",  # images not labelled because a contour on them could not be measured
    "unmatched": "int64",  # referenced images missing from the manifest
}


class Reason(StrEnum):
    """Why a segmentation, or part of one, gives no labels."""

    UNREADABLE = "unreadable_segmentation"
    NOT_A_SEGMENTATION = "not_a_segmentation"
    UNSUPPORTED = "unsupported_segmentation"
    NO_SELECTED_SEGMENTS = "no_selected_segments"
    REFERENCES_NOTHING_PRESENT = "references_nothing_present"
    REFERENCES_PARTLY_PRESENT = "references_partly_present"
    GEOMETRY_MISMATCH = "geometry_mismatch"
    CONTOUR_OFF_GRID = "contour_off_grid"
    UNSUPPORTED_CONTOUR_TYPE = "unsupported_contour_type"


class ManifestError(ValueError):
    """The images manifest lacks what labelling from segmentations needs."""


#: (SOP Instance UID, 0-based frame index): one image of the manifest.
ImageKey = tuple[str, int]

# Third-party parsers raise almost any exception on malformed files; these are caught per file
# so that one bad segmentation never stops the others.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    InvalidDicomError,
    OSError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    RuntimeError,
    NotImplementedError,
    OverflowError,
    sqlite3.Error,
)

_CLOSED_PLANAR = "CLOSED_PLANAR"
_CLOSED_PLANAR_XOR = "CLOSED_PLANAR_XOR"


# --------------------------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True)
class ImageGeometry:
    """Where one image's pixel grid lies in patient coordinates (mm).

    ``image_position_mm`` is (0020,0032) Image Position (Patient), the centre of the first pixel;
    ``row_direction`` the first three values of (0020,0037) Image Orientation (Patient) (the
    direction of increasing column index), ``column_direction`` the last three (increasing row
    index); the spacings are the two values of (0028,0030) Pixel Spacing (row spacing first).
    """

    rows: int
    cols: int
    image_position_mm: tuple[float, float, float]
    row_direction: tuple[float, float, float]
    column_direction: tuple[float, float, float]
    pixel_spacing_row_mm: float
    pixel_spacing_col_mm: float

    @property
    def orientation(self) -> tuple[float, ...]:
        """The six values of (0020,0037) Image Orientation (Patient)."""
        return (*self.row_direction, *self.column_direction)

    @property
    def normal(self) -> npt.NDArray[np.float64]:
        """Unit slice normal: row direction x column direction."""
        normal = np.cross(np.asarray(self.row_direction), np.asarray(self.column_direction))
        return np.asarray(normal / np.linalg.norm(normal), dtype=np.float64)

    @property
    def position_along_normal_mm(self) -> float:
        """Distance (mm) of the image's plane from the origin along its normal."""
        return float(np.dot(self.normal, np.asarray(self.image_position_mm)))

    def plane_offsets_mm(self, points_mm: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Signed distances (mm) of ``points_mm`` (N x 3, patient coordinates) from the plane."""
        points = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        return np.asarray((points - np.asarray(self.image_position_mm)) @ self.normal)

    def to_pixel_coordinates(self, points_mm: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Continuous (column, row) coordinates of ``points_mm`` (N x 3), pixel centres integer.

        The points are projected onto the plane; their offset along the normal is ignored (check
        it with :meth:`plane_offsets_mm`).
        """
        points = np.asarray(points_mm, dtype=np.float64).reshape(-1, 3)
        offsets = points - np.asarray(self.image_position_mm)
        columns = offsets @ np.asarray(self.row_direction) / self.pixel_spacing_col_mm
        rows = offsets @ np.asarray(self.column_direction) / self.pixel_spacing_row_mm
        return np.stack([columns, rows], axis=1)

    def to_patient_coordinates(self, pixel_coordinates: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Patient coordinates (mm, N x 3) of continuous (column, row) pixel coordinates."""
        coordinates = np.asarray(pixel_coordinates, dtype=np.float64).reshape(-1, 2)
        return np.asarray(
            np.asarray(self.image_position_mm)
            + np.outer(coordinates[:, 0] * self.pixel_spacing_col_mm, self.row_direction)
            + np.outer(coordinates[:, 1] * self.pixel_spacing_row_mm, self.column_direction)
        )


def parse_decimal_values(
    value: object, count: int, *, name: str = "value"
) -> tuple[float, ...] | None:
    """``count`` decimals from a backslash-joined DS string (or a sequence); None when missing.

    Raises :class:`ManifestError` when a value is present but is not ``count`` finite numbers.
    """
    if value is None or value is pd.NA:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        parts: Sequence[object] = value.split("\\")
    elif isinstance(value, Iterable):
        parts = list(value)
    else:
        raise ManifestError(f"{name}: expected {count} backslash-separated decimals, got {value!r}")
    try:
        numbers = tuple(float(str(part).strip()) for part in parts)
    except ValueError as error:
        raise ManifestError(
            f"{name}: expected {count} backslash-separated decimals, got {value!r}"
        ) from error
    if len(numbers) != count or not all(np.isfinite(numbers)):
        raise ManifestError(f"{name}: expected {count} finite decimals, got {value!r}")
    return numbers


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def geometry_from_row(row: Mapping[Any, Any]) -> ImageGeometry | None:
    """The :class:`ImageGeometry` of one manifest row; None when a geometry value is missing.

    Raises :class:`ManifestError` for malformed values and for an (0020,0037) Image Orientation
    (Patient) whose two directions are not orthogonal unit vectors.
    """
    where = f"image {row.get('sop_instance_uid')} frame {row.get('frame_index')}"
    position = parse_decimal_values(
        row.get("image_position_patient"), 3, name=f"{where}: image_position_patient"
    )
    orientation = parse_decimal_values(
        row.get("image_orientation_patient"), 6, name=f"{where}: image_orientation_patient"
    )
    values = [
        row.get(name) for name in ("rows", "cols", "pixel_spacing_row_mm", "pixel_spacing_col_mm")
    ]
    if position is None or orientation is None or any(_is_missing(value) for value in values):
        return None
    row_direction = np.asarray(orientation[:3])
    column_direction = np.asarray(orientation[3:])
    if (
        abs(np.linalg.norm(row_direction) - 1) > ORIENTATION_TOLERANCE
        or abs(np.linalg.norm(column_direction) - 1) > ORIENTATION_TOLERANCE
        or abs(float(np.dot(row_direction, column_direction))) > ORIENTATION_TOLERANCE
    ):
        raise ManifestError(
            f"{where}: image_orientation_patient {orientation} is not two orthogonal unit vectors"
        )
    rows, cols = int(str(values[0])), int(str(values[1]))
    spacing_row, spacing_col = float(str(values[2])), float(str(values[3]))
    if spacing_row <= 0 or spacing_col <= 0 or rows <= 0 or cols <= 0:
        raise ManifestError(
            f"{where}: rows, cols and pixel spacing must be positive, got {rows}, {cols}, "
            f"{spacing_row}, {spacing_col}"
        )
    return ImageGeometry(
        rows=rows,
        cols=cols,
        image_position_mm=(position[0], position[1], position[2]),
        row_direction=(orientation[0], orientation[1], orientation[2]),
        column_direction=(orientation[3], orientation[4], orientation[5]),
        pixel_spacing_row_mm=spacing_row,
        pixel_spacing_col_mm=spacing_col,
    )


def _pair_positions(
    source: Sequence[ImageGeometry], target: Sequence[ImageGeometry]
) -> tuple[list[tuple[int, int]], int, int]:
    """Pairs (source index, target index) of positions within POSITION_TOLERANCE_MM.

    Returns the pairs and the numbers of source and target positions without exactly one
    partner (0 and 0 when every position of each has exactly one partner in the other).
    """
    if not source or not target:
        return [], len(source), len(target)
    source_positions = np.asarray([g.image_position_mm for g in source])
    target_positions = np.asarray([g.image_position_mm for g in target])
    distances = np.linalg.norm(source_positions[:, None, :] - target_positions[None, :, :], axis=2)
    close = distances <= POSITION_TOLERANCE_MM
    per_source = close.sum(axis=1)
    per_target = close.sum(axis=0)
    pairs = [
        (int(i), int(np.argmax(close[i])))
        for i in range(len(source))
        if per_source[i] == 1 and per_target[np.argmax(close[i])] == 1
    ]
    return pairs, int(np.sum(per_source != 1)), int(np.sum(per_target != 1))


def _series_difference(
    source: Sequence[ImageGeometry | None], target: Sequence[ImageGeometry | None]
) -> tuple[str | None, list[tuple[int, int]]]:
    """What differs between two series' slice geometries (None: nothing), and the image pairs."""
    if any(g is None for g in source) or any(g is None for g in target):
        return "an image lacks position, orientation, spacing or size in the manifest", []
    source_geometries = [g for g in source if g is not None]
    target_geometries = [g for g in target if g is not None]
    if len(source_geometries) != len(target_geometries):
        return f"{len(source_geometries)} images against {len(target_geometries)}", []
    pairs, unpaired_source, unpaired_target = _pair_positions(source_geometries, target_geometries)
    if unpaired_source or unpaired_target:
        return (
            f"{unpaired_source} of {len(source_geometries)} image positions have no single partner "
            f"within {POSITION_TOLERANCE_MM} mm ({unpaired_target} of the other series' positions)",
            [],
        )
    for i, j in pairs:
        a, b = source_geometries[i], target_geometries[j]
        orientation_difference = float(np.max(np.abs(np.subtract(a.orientation, b.orientation))))
        if orientation_difference > ORIENTATION_TOLERANCE:
            return (
                f"orientation differs by {orientation_difference:.6g} at position "
                f"{a.image_position_mm} (tolerance {ORIENTATION_TOLERANCE})",
                [],
            )
        spacing_difference = max(
            abs(a.pixel_spacing_row_mm - b.pixel_spacing_row_mm),
            abs(a.pixel_spacing_col_mm - b.pixel_spacing_col_mm),
        )
        if spacing_difference > PIXEL_SPACING_TOLERANCE_MM:
            return (
                f"pixel spacing {a.pixel_spacing_row_mm}x{a.pixel_spacing_col_mm} mm against "
                f"{b.pixel_spacing_row_mm}x{b.pixel_spacing_col_mm} mm",
                [],
            )
        if (a.rows, a.cols) != (b.rows, b.cols):
            return f"{a.rows}x{a.cols} pixels against {b.rows}x{b.cols}", []
    return None, pairs


def _geometries_of(frame: pd.DataFrame) -> list[ImageGeometry | None]:
    return [geometry_from_row(row) for row in frame.to_dict("records")]


def geometry_difference(source: pd.DataFrame, target: pd.DataFrame) -> str | None:
    """What differs between two series' slice geometries, or None when they match exactly.

    ``source`` and ``target`` hold the :data:`GEOMETRY_COLUMNS` of every image of one series
    each. They match when they have the same number of images, every (0020,0032) position of one
    lies within 0.01 mm of exactly one position of the other (and vice versa), and each pair has
    (0020,0037) orientations within 1e-4, (0028,0030) spacings within 1e-4 mm and the same
    (0028,0010) Rows and (0028,0011) Columns. Frame of Reference and patient are not compared here.
    """
    difference, _ = _series_difference(_geometries_of(source), _geometries_of(target))
    return difference


def geometry_matches(source: pd.DataFrame, target: pd.DataFrame) -> bool:
    """True when two series' slice geometries match exactly (see :func:`geometry_difference`)."""
    return geometry_difference(source, target) is None


def _slice_spacing_mm(geometries: Sequence[ImageGeometry]) -> float | None:
    """Smallest distance (mm) between distinct slice positions along the normal; None for one."""
    if len(geometries) < 2:
        return None
    normal = geometries[0].normal
    positions = np.sort([float(np.dot(normal, g.image_position_mm)) for g in geometries])
    gaps = np.diff(positions)
    gaps = gaps[gaps > POSITION_TOLERANCE_MM]
    return float(gaps.min()) if gaps.size else None


# --------------------------------------------------------------------------------------------
# Contours


def contour_to_mask(points_mm: npt.ArrayLike, geometry: ImageGeometry) -> npt.NDArray[np.bool_]:
    """Rasterise one closed planar contour (N x 3 patient coordinates, mm) onto an image's grid.

    The points are projected onto the image plane (offsets along the normal are ignored; check
    them first) and filled with :func:`cv2.fillPoly`, vertices given to 1/256 pixel. Convention:
    integer pixel coordinates are pixel centres ((0020,0032) is the centre of the first pixel),
    and OpenCV's fill is boundary-inclusive: every pixel whose centre lies inside the polygon or
    on an edge, the edges taken through the nearest pixel centres, is filled. A contour through
    the centres of the boundary pixels of a block therefore yields exactly that block (the way
    contours made from masks round-trip); a contour along the block's outer pixel edges (at
    -0.5 and 9.5 for a 10 x 10 block) yields an 11 x 11 block, because OpenCV rounds the .5 edges
    up. Pixels outside the image are clipped.

    Raises ValueError when a point projects more than a million pixels away (OpenCV's fixed-point
    coordinates would overflow; such a contour is not on this image anyway).
    """
    coordinates = geometry.to_pixel_coordinates(points_mm)
    if coordinates.size and float(np.max(np.abs(coordinates))) > 1e6:
        raise ValueError("contour points project more than 1e6 pixels away from the image")
    fixed = np.round(coordinates * (1 << FILL_SHIFT_BITS)).astype(np.int32).reshape(-1, 1, 2)
    mask = np.zeros((geometry.rows, geometry.cols), dtype=np.uint8)
    if len(fixed):
        cv2.fillPoly(mask, [fixed], 1, lineType=cv2.LINE_8, shift=FILL_SHIFT_BITS)
    return mask.astype(bool)


def combine_contour_masks(masks: Sequence[npt.NDArray[np.bool_]]) -> npt.NDArray[np.bool_]:
    """Combine the filled CLOSED_PLANAR contours of one ROI on one image, holes by nesting.

    A contour whose mask lies wholly inside another's (and differs from it) is nested one level
    deeper; even depths add, odd depths (holes) remove, applied from the outside in, so an island
    inside a hole counts again. Identical masks count once; overlapping, non-nested contours are
    OR-ed. Raises ValueError for an empty sequence.
    """
    if not masks:
        raise ValueError("combine_contour_masks needs at least one mask")
    unique: list[npt.NDArray[np.bool_]] = []
    seen: set[bytes] = set()
    for mask in masks:
        signature = np.packbits(mask).tobytes()
        if signature not in seen:
            seen.add(signature)
            unique.append(mask)
    depths = []
    for i, inner in enumerate(unique):
        depth = sum(
            1
            for j, outer in enumerate(unique)
            if i != j and not np.any(inner & ~outer) and np.any(outer & ~inner)
        )
        depths.append(depth)
    result = np.zeros_like(unique[0], dtype=bool)
    for depth in sorted(set(depths)):
        for mask, mask_depth in zip(unique, depths, strict=True):
            if mask_depth == depth:
                result = result | mask if depth % 2 == 0 else result & ~mask
    return result


# --------------------------------------------------------------------------------------------
# The images manifest as the readers see it


@dataclass
class _Catalogue:
    """Geometry of every known image (manifest and ``series_geometry``), and the manifest rows."""

    geometry: dict[ImageKey, ImageGeometry | None]
    series_of: dict[ImageKey, str]
    keys_by_series: dict[str, list[ImageKey]]
    sops: set[str]
    patient_of_series: dict[str, str | None]
    frame_of_reference_of_series: dict[str, set[str]]
    samples: dict[ImageKey, tuple[str, float]]  # (sample_id, brain_area_mm2), manifest rows only
    frames_of_sop: dict[str, set[int]]

    def series_geometries(self, series: str) -> list[ImageGeometry | None]:
        return [self.geometry[key] for key in self.keys_by_series.get(series, [])]


def _text(value: object) -> str | None:
    return None if _is_missing(value) else str(value)


def _catalogue(images: pd.DataFrame, series_geometry: pd.DataFrame | None) -> _Catalogue:
    missing = [name for name in INPUT_COLUMNS if name not in images.columns]
    if missing:
        raise ManifestError(
            f"images manifest lacks the columns {missing} that labelling from segmentations "
            "needs (see segmentations.INPUT_COLUMNS)"
        )
    frames = [images[list(GEOMETRY_COLUMNS)]]
    if series_geometry is not None:
        missing = [name for name in GEOMETRY_COLUMNS if name not in series_geometry.columns]
        if missing:
            raise ManifestError(f"series_geometry lacks the columns {missing}")
        frames.append(series_geometry[list(GEOMETRY_COLUMNS)])
    catalogue = _Catalogue(
        {}, {}, defaultdict(list), set(), {}, defaultdict(set), {}, defaultdict(set)
    )
    for record in pd.concat(frames, ignore_index=True).to_dict("records"):
        sop = _text(record["sop_instance_uid"])
        series = _text(record["series_instance_uid"])
        if sop is None or series is None or _is_missing(record["frame_index"]):
            raise ManifestError(
                "every image needs sop_instance_uid, series_instance_uid and frame_index; "
                f"got {sop!r}, {series!r}, {record['frame_index']!r}"
            )
        key = (sop, int(record["frame_index"]))
        if key in catalogue.geometry:
            continue  # the manifest row comes first and wins over series_geometry
        catalogue.geometry[key] = geometry_from_row(record)
        catalogue.series_of[key] = series
        catalogue.keys_by_series[series].append(key)
        catalogue.sops.add(sop)
        catalogue.frames_of_sop[sop].add(key[1])
        catalogue.patient_of_series.setdefault(series, _text(record["patient_id"]))
        frame_of_reference = _text(record["frame_of_reference_uid"])
        if frame_of_reference is not None:
            catalogue.frame_of_reference_of_series[series].add(frame_of_reference)
    for record in images[
        ["sample_id", "sop_instance_uid", "frame_index", "brain_area_mm2"]
    ].to_dict("records"):
        key = (str(record["sop_instance_uid"]), int(record["frame_index"]))
        if key in catalogue.samples:
            raise ManifestError(
                f"images manifest has two rows for SOP Instance {key[0]} frame {key[1]}"
            )
        brain = record["brain_area_mm2"]
        catalogue.samples[key] = (
            str(record["sample_id"]),
            float("nan") if _is_missing(brain) else float(brain),
        )
    return catalogue


# --------------------------------------------------------------------------------------------
# What one segmentation measured


class _SetAside(Exception):
    """The whole segmentation gives no labels (internal; becomes a set-aside row)."""

    def __init__(self, reason: Reason, detail: str, series: Iterable[str] = ()) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.series = sorted(set(series))


@dataclass
class _Measured:
    """Tumour areas one segmentation gives to the images of its referenced series."""

    index: int
    path: str
    source: str | None = None
    sop_instance_uid: str | None = None
    areas_mm2: dict[ImageKey, float] = field(default_factory=dict)
    withheld: set[ImageKey] = field(default_factory=set)
    series: set[str] = field(default_factory=set)
    unmatched: int = 0
    set_aside: list[dict[str, object]] = field(default_factory=list)

    def add_set_aside(self, reason: Reason, detail: str, series: Iterable[str] = ()) -> None:
        self.set_aside.append(
            {
                "segmentation_path": self.path,
                "segmentation_sop_instance_uid": self.sop_instance_uid,
                "reason": reason.value,
                "detail": detail,
                "series_instance_uid": ";".join(sorted(set(series))) or None,
            }
        )


def _key(sop: str, frame_number: int | None) -> ImageKey:
    """The manifest key of a reference: (0008,1160) Referenced Frame Number n is frame n - 1."""
    return (sop, (frame_number or 1) - 1)


def _frame_numbers(item: Dataset) -> list[int | None]:
    value = item.get("ReferencedFrameNumber")
    if value is None or value == "":
        return [None]
    if isinstance(value, str | int | float) or not isinstance(value, Iterable):
        return [int(value)]
    return [int(v) for v in value]


def _report_missing(measured: _Measured, missing: int, total: int, series: Iterable[str]) -> None:
    measured.unmatched = missing
    if missing:
        measured.add_set_aside(
            Reason.REFERENCES_PARTLY_PRESENT,
            f"{missing} of {total} referenced images are not in the images manifest; "
            "the present ones are labelled",
            series,
        )


# --------------------------------------------------------------------------------------------
# SEG


@dataclass(frozen=True)
class _SegFrame:
    number: int  # 1-based frame of the SEG
    # (referenced image, its (0028,135A) Spatial Locations Preserved) per source reference
    sources: tuple[tuple[ImageKey, str | None], ...]
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    spacing: tuple[float, ...] | None


def _functional_group(item: Dataset, shared: Dataset | None, keyword: str) -> Dataset | None:
    """The first item of a functional group macro, per-frame first, then shared."""
    for group in (item, shared):
        if group is not None and keyword in group and len(group[keyword].value):
            first: Dataset = group[keyword].value[0]
            return first
    return None


def _seg_frames(seg: Dataset) -> list[_SegFrame]:
    """Each SEG frame's source references and plane geometry from the functional groups."""
    shared_sequence = seg.get("SharedFunctionalGroupsSequence")
    shared = shared_sequence[0] if shared_sequence else None
    frames = []
    for number, item in enumerate(seg.get("PerFrameFunctionalGroupsSequence", []), start=1):
        sources: list[tuple[ImageKey, str | None]] = []
        for group in (item, shared):
            if group is None or "DerivationImageSequence" not in group:
                continue
            for derivation in group.DerivationImageSequence:
                for source in derivation.get("SourceImageSequence", []):
                    preserved = source.get("SpatialLocationsPreserved")
                    for frame_number in _frame_numbers(source):
                        sources.append(
                            (
                                _key(str(source.ReferencedSOPInstanceUID), frame_number),
                                None if preserved is None else str(preserved),
                            )
                        )
            break  # per-frame references replace shared ones
        position = _functional_group(item, shared, "PlanePositionSequence")
        orientation = _functional_group(item, shared, "PlaneOrientationSequence")
        measures = _functional_group(item, shared, "PixelMeasuresSequence")
        frames.append(
            _SegFrame(
                number=number,
                sources=tuple(sources),
                position=parse_decimal_values(position.get("ImagePositionPatient"), 3)
                if position is not None
                else None,
                orientation=parse_decimal_values(orientation.get("ImageOrientationPatient"), 6)
                if orientation is not None
                else None,
                spacing=parse_decimal_values(measures.get("PixelSpacing"), 2)
                if measures is not None
                else None,
            )
        )
    return frames


def _seg_frame_mismatch(
    seg: Dataset,
    frame: _SegFrame,
    key: ImageKey,
    preserved: str | None,
    geometry: ImageGeometry | None,
) -> str | None:
    """Why SEG ``frame`` does not lie on the grid of image ``key``, or None when it does."""
    where = f"frame {frame.number} (image {key[0]} frame {key[1]})"
    if preserved is not None and preserved != "YES":
        return f"{where}: (0028,135A) Spatial Locations Preserved is {preserved}"
    if geometry is None:
        return f"{where}: the image has no position, orientation, spacing or size in the manifest"
    if (int(seg.Rows), int(seg.Columns)) != (geometry.rows, geometry.cols):
        return f"{where}: {seg.Rows}x{seg.Columns} pixels against {geometry.rows}x{geometry.cols}"
    if frame.position is not None:
        distance = float(np.linalg.norm(np.subtract(frame.position, geometry.image_position_mm)))
        if distance > POSITION_TOLERANCE_MM:
            return (
                f"{where}: (0020,9113) position is {distance:.4g} mm from the image's (0020,0032)"
            )
    if frame.orientation is not None:
        difference = float(np.max(np.abs(np.subtract(frame.orientation, geometry.orientation))))
        if difference > ORIENTATION_TOLERANCE:
            return f"{where}: (0020,9116) orientation differs by {difference:.4g}"
    if frame.spacing is not None:
        image_spacing = (geometry.pixel_spacing_row_mm, geometry.pixel_spacing_col_mm)
        if (
            max(abs(a - b) for a, b in zip(frame.spacing, image_spacing, strict=True))
            > PIXEL_SPACING_TOLERANCE_MM
        ):
            return (
                f"{where}: (0028,9110) pixel spacing {frame.spacing} mm against {image_spacing} mm"
            )
    return None


def _tumour_masks(pixels: npt.NDArray[Any], fractional: bool) -> npt.NDArray[np.bool_]:
    """OR of the selected segments (last axis) of highdicom's frames x rows x cols x segments."""
    present = pixels >= FRACTIONAL_THRESHOLD if fractional else pixels > 0
    return np.asarray(present.any(axis=-1))


def _measure_seg(
    measured: _Measured, path: Path, catalogue: _Catalogue, rule: LabelRuleConfig
) -> None:
    seg = hd.seg.segread(path)
    measured.sop_instance_uid = str(seg.SOPInstanceUID)
    numbers = set(seg.segment_numbers)
    available = {
        int(item.SegmentNumber): str(item.get("SegmentLabel", ""))
        for item in seg.SegmentSequence
        if int(item.SegmentNumber) in numbers
    }
    selected = selected_segments(available, rule)
    source_uids = seg.get_source_image_uids()
    referenced_series = {str(series) for _, series, _ in source_uids} | {
        str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])
    }
    if not selected:
        raise _SetAside(
            Reason.NO_SELECTED_SEGMENTS,
            f"the rule selects segments {list(rule.segments)}; this SEG has "
            + ", ".join(f"{n} {label!r}" for n, label in sorted(available.items())),
            referenced_series,
        )
    if seg.get("DimensionOrganizationType") == "TILED_FULL":
        raise _SetAside(Reason.UNSUPPORTED, "TILED_FULL SEGs have no per-frame source references")
    frames = _seg_frames(seg)
    if frames and not any(frame.sources for frame in frames):
        raise _SetAside(
            Reason.UNSUPPORTED,
            "no frame has a (0008,9124) Derivation Image Sequence reference to its source image; "
            "matching SEG frames to images by plane position is not supported",
            referenced_series,
        )
    frame_keys = {key for frame in frames for key, _ in frame.sources}
    frame_sops = {sop for sop, _ in frame_keys}
    # Images referenced only at instance level (no frame drawn on them: nothing segmented there).
    instance_sops = {str(sop) for _, _, sop in source_uids} - frame_sops
    referenced_series |= {
        catalogue.series_of[key] for key in frame_keys if key in catalogue.series_of
    }
    missing = len([key for key in frame_keys if key not in catalogue.geometry]) + len(
        [sop for sop in instance_sops if sop not in catalogue.sops]
    )
    total = len(frame_keys) + len(instance_sops)
    if not (frame_sops | instance_sops) & catalogue.sops:
        raise _SetAside(
            Reason.REFERENCES_NOTHING_PRESENT,
            f"none of the {total} referenced images is in the images manifest",
            referenced_series,
        )
    present_series = {s for s in referenced_series if catalogue.keys_by_series.get(s)}
    seg_frame_of_reference = seg.get("FrameOfReferenceUID")
    for series in present_series:
        image_frames_of_reference = catalogue.frame_of_reference_of_series.get(series, set())
        if seg_frame_of_reference and image_frames_of_reference - {str(seg_frame_of_reference)}:
            raise _SetAside(
                Reason.GEOMETRY_MISMATCH,
                f"SEG (0020,0052) Frame of Reference {seg_frame_of_reference} is not the images' "
                f"{sorted(image_frames_of_reference)}",
                present_series,
            )
    mismatches = [
        problem
        for frame in frames
        for key, preserved in frame.sources
        if key in catalogue.geometry
        and (problem := _seg_frame_mismatch(seg, frame, key, preserved, catalogue.geometry[key]))
    ]
    checked = sum(1 for frame in frames for key, _ in frame.sources if key in catalogue.geometry)
    if mismatches:
        raise _SetAside(
            Reason.GEOMETRY_MISMATCH,
            f"{len(mismatches)} of {checked} SEG frame references do not lie on their image's "
            f"grid; first: {mismatches[0]}",
            present_series,
        )
    # The geometry check above replaces highdicom's (0028,135A) check for frames that omit it.
    ignore_spatial_locations = any(
        preserved != "YES"
        for frame in frames
        for key, preserved in frame.sources
        if key in catalogue.geometry
    )
    fractional = seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    drawn = sorted(key for key in frame_keys if key in catalogue.geometry)
    # A source is multi-frame when the manifest or the SEG knows a frame of it beyond the first.
    multi_frame_sops = {
        sop
        for sop, frame_index in drawn
        if frame_index > 0 or max(catalogue.frames_of_sop[sop]) > 0
    }
    counts: dict[ImageKey, int] = {}
    single = [sop for sop in dict.fromkeys(sop for sop, _ in drawn) if sop not in multi_frame_sops]
    for start in range(0, len(single), SEG_INSTANCES_PER_READ):
        chunk = single[start : start + SEG_INSTANCES_PER_READ]
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=chunk,
            segment_numbers=selected,
            ignore_spatial_locations=ignore_spatial_locations,
        )
        for sop, mask in zip(chunk, _tumour_masks(pixels, fractional), strict=True):
            counts[(sop, 0)] = int(np.count_nonzero(mask))
    for sop in sorted(multi_frame_sops):
        frame_numbers = sorted(frame_index + 1 for s, frame_index in drawn if s == sop)
        pixels = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=sop,
            source_frame_numbers=frame_numbers,
            segment_numbers=selected,
            ignore_spatial_locations=ignore_spatial_locations,
        )
        for frame_number, mask in zip(
            frame_numbers, _tumour_masks(pixels, fractional), strict=True
        ):
            counts[(sop, frame_number - 1)] = int(np.count_nonzero(mask))
    for series in present_series:
        for key in catalogue.keys_by_series[series]:
            geometry = catalogue.geometry[key]
            count = counts.get(key, 0)
            # Images with a counted frame passed the frame check, so their geometry is known.
            measured.areas_mm2[key] = (
                count * geometry.pixel_spacing_row_mm * geometry.pixel_spacing_col_mm
                if count and geometry is not None
                else 0.0
            )
    measured.series = present_series
    _report_missing(measured, missing, total, referenced_series)


# --------------------------------------------------------------------------------------------
# RTSTRUCT


@dataclass(frozen=True)
class _Contour:
    roi_number: int
    roi_name: str
    index: int  # 1-based within the ROI's (3006,0040) Contour Sequence
    geometric_type: str
    points_mm: npt.NDArray[np.float64]  # N x 3
    image_keys: tuple[ImageKey, ...]  # from (3006,0016) Contour Image Sequence

    @property
    def name(self) -> str:
        return f"ROI {self.roi_number} {self.roi_name!r} contour {self.index}"


#: Per image, per ROI number: the filled CLOSED_PLANAR and the CLOSED_PLANAR_XOR contour masks.
_ContourMasks = dict[
    ImageKey, dict[int, tuple[list[npt.NDArray[np.bool_]], list[npt.NDArray[np.bool_]]]]
]


def _contour_points(item: Dataset, where: str) -> npt.NDArray[np.float64]:
    data = item.get("ContourData")
    if data is None:
        raise _SetAside(Reason.UNREADABLE, f"{where}: no (3006,0050) Contour Data")
    values = np.asarray([float(v) for v in (data if isinstance(data, Iterable) else [data])])
    if values.size == 0 or values.size % 3 or not np.all(np.isfinite(values)):
        raise _SetAside(
            Reason.UNREADABLE,
            f"{where}: (3006,0050) Contour Data holds {values.size} values, not a positive "
            "multiple of 3 finite numbers",
        )
    return values.reshape(-1, 3)


def _rtstruct_references(ds: Dataset) -> tuple[set[str], set[ImageKey]]:
    """Series and images listed in (3006,0010) Referenced Frame of Reference Sequence."""
    series: set[str] = set()
    images: set[ImageKey] = set()
    for frame_of_reference in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame_of_reference.get("RTReferencedStudySequence", []):
            for item in study.get("RTReferencedSeriesSequence", []):
                series.add(str(item.SeriesInstanceUID))
                for image in item.get("ContourImageSequence", []):
                    for frame_number in _frame_numbers(image):
                        images.add(_key(str(image.ReferencedSOPInstanceUID), frame_number))
    return series, images


def _measure_rtstruct(
    measured: _Measured, path: Path, catalogue: _Catalogue, rule: LabelRuleConfig
) -> None:
    ds = pydicom.dcmread(path)
    measured.sop_instance_uid = str(ds.SOPInstanceUID)
    rois = {
        int(item.ROINumber): (
            str(item.get("ROIName", "")),
            _text(item.get("ReferencedFrameOfReferenceUID")),
        )
        for item in ds.get("StructureSetROISequence", [])
    }
    referenced_series, referenced_images = _rtstruct_references(ds)
    selected = set(selected_segments({number: name for number, (name, _) in rois.items()}, rule))
    if not selected:
        raise _SetAside(
            Reason.NO_SELECTED_SEGMENTS,
            f"the rule selects ROIs {list(rule.segments)}; this RTSTRUCT has "
            + ", ".join(f"{n} {name!r}" for n, (name, _) in sorted(rois.items())),
            referenced_series,
        )
    contours: list[_Contour] = []
    for roi_contour in ds.get("ROIContourSequence", []):
        number = int(roi_contour.ReferencedROINumber)
        if number not in selected:
            continue
        for index, item in enumerate(roi_contour.get("ContourSequence", []), start=1):
            name = rois[number][0]
            where = f"ROI {number} {name!r} contour {index}"
            keys = tuple(
                _key(str(image.ReferencedSOPInstanceUID), frame_number)
                for image in item.get("ContourImageSequence", [])
                for frame_number in _frame_numbers(image)
            )
            contours.append(
                _Contour(
                    number,
                    name,
                    index,
                    str(item.get("ContourGeometricType", "")),
                    _contour_points(item, where),
                    keys,
                )
            )
    contour_images = {key for contour in contours for key in contour.image_keys}
    all_referenced = referenced_images | contour_images
    # Series named only through the images the contours reference count as referenced too.
    referenced_series |= {
        catalogue.series_of[key] for key in all_referenced if key in catalogue.series_of
    }
    present_series = {s for s in referenced_series if catalogue.keys_by_series.get(s)}
    present_images = {key for key in all_referenced if key in catalogue.geometry}
    if not present_series or (all_referenced and not present_images):
        raise _SetAside(
            Reason.REFERENCES_NOTHING_PRESENT,
            f"none of the {len(all_referenced)} referenced images (series "
            f"{sorted(referenced_series) or 'not named'}) is in the images manifest",
            referenced_series,
        )
    roi_frames_of_reference = {uid for n in selected if (uid := rois[n][1]) is not None}
    usable_series: set[str] = set()
    for series in sorted(present_series):
        image_frames_of_reference = catalogue.frame_of_reference_of_series.get(series, set())
        if (
            roi_frames_of_reference
            and image_frames_of_reference
            and (image_frames_of_reference != roi_frames_of_reference)
        ):
            measured.add_set_aside(
                Reason.GEOMETRY_MISMATCH,
                f"ROI (3006,0024) Frame of Reference {sorted(roi_frames_of_reference)} is not the "
                f"images' {sorted(image_frames_of_reference)}",
                [series],
            )
        elif any(g is None for g in catalogue.series_geometries(series)):
            measured.add_set_aside(
                Reason.GEOMETRY_MISMATCH,
                "an image of the series has no position, orientation, spacing or size in the "
                "manifest, so contours cannot be placed on it",
                [series],
            )
        else:
            usable_series.add(series)
    # masks[key][roi] -> (CLOSED_PLANAR masks, CLOSED_PLANAR_XOR masks)
    masks: _ContourMasks = defaultdict(lambda: defaultdict(lambda: ([], [])))
    for series in sorted(usable_series):
        geometries = {
            key: g
            for key in catalogue.keys_by_series[series]
            if (g := catalogue.geometry[key]) is not None
        }
        spacing = _slice_spacing_mm(list(geometries.values()))
        half_slice = spacing / 2 if spacing else CONTOUR_PLANE_TOLERANCE_MM
        plane_tolerance = min(CONTOUR_PLANE_TOLERANCE_MM, half_slice)
        for contour in contours:
            _place_contour(
                measured,
                contour,
                series,
                geometries,
                half_slice,
                plane_tolerance,
                spacing or 2 * CONTOUR_PLANE_TOLERANCE_MM,
                masks,
            )
    for series in usable_series:
        for key in catalogue.keys_by_series[series]:
            if key in measured.withheld:
                continue
            geometry = catalogue.geometry[key]
            if key not in masks or geometry is None:  # usable series have geometry everywhere
                measured.areas_mm2[key] = 0.0
                continue
            image_mask = np.zeros((geometry.rows, geometry.cols), dtype=bool)
            for closed, xor in masks[key].values():
                roi_mask = combine_contour_masks(closed) if closed else np.zeros_like(image_mask)
                for xor_mask in xor:
                    roi_mask = roi_mask ^ xor_mask
                image_mask |= roi_mask
            measured.areas_mm2[key] = (
                int(np.count_nonzero(image_mask))
                * geometry.pixel_spacing_row_mm
                * geometry.pixel_spacing_col_mm
            )
    measured.series = usable_series
    missing = {key for key in all_referenced if key not in catalogue.geometry}
    _report_missing(measured, len(missing), len(all_referenced), referenced_series)


def _place_contour(
    measured: _Measured,
    contour: _Contour,
    series: str,
    geometries: Mapping[ImageKey, ImageGeometry],
    half_slice_mm: float,
    plane_tolerance_mm: float,
    slice_spacing_mm: float,
    masks: _ContourMasks,
) -> None:
    """Rasterise one contour onto its image of ``series``, or withhold what it may lie on."""
    if contour.image_keys:
        targets = [key for key in contour.image_keys if key in geometries]
        if not targets:
            return  # its image is in another series or missing from the manifest (counted)
    else:
        offsets = {
            key: float(np.mean(g.plane_offsets_mm(contour.points_mm)))
            for key, g in geometries.items()
        }
        nearest = min(abs(offset) for offset in offsets.values())
        if nearest >= half_slice_mm:
            near = {key for key, offset in offsets.items() if abs(offset) < slice_spacing_mm}
            measured.withheld |= near
            measured.add_set_aside(
                Reason.CONTOUR_OFF_GRID,
                f"{contour.name}: no image plane within half a slice ({half_slice_mm:.4g} mm); "
                f"nearest {nearest:.4g} mm; {len(near)} neighbouring images withheld",
                [series],
            )
            return
        targets = [
            key for key, offset in offsets.items() if abs(offset) - nearest <= POSITION_TOLERANCE_MM
        ]
    for key in targets:
        geometry = geometries[key]
        if contour.geometric_type not in (_CLOSED_PLANAR, _CLOSED_PLANAR_XOR):
            measured.withheld.add(key)
            measured.add_set_aside(
                Reason.UNSUPPORTED_CONTOUR_TYPE,
                f"{contour.name}: (3006,0042) Contour Geometric Type {contour.geometric_type!r} "
                f"has no area; image {key[0]} frame {key[1]} withheld",
                [series],
            )
            continue
        off_plane = float(np.max(np.abs(geometry.plane_offsets_mm(contour.points_mm))))
        coordinates = geometry.to_pixel_coordinates(contour.points_mm)
        outside = (
            (coordinates[:, 0] < -0.5)
            | (coordinates[:, 0] > geometry.cols - 0.5)
            | (coordinates[:, 1] < -0.5)
            | (coordinates[:, 1] > geometry.rows - 0.5)
        )
        problem = None
        if off_plane > plane_tolerance_mm:
            problem = f"points lie up to {off_plane:.4g} mm off the plane (tolerance {plane_tolerance_mm:.4g} mm)"
        elif float(np.mean(outside)) > MAX_CONTOUR_POINTS_OUTSIDE_FRACTION:
            problem = f"{int(outside.sum())} of {len(outside)} points lie outside the image"
        if problem is not None:
            measured.withheld.add(key)
            measured.add_set_aside(
                Reason.CONTOUR_OFF_GRID,
                f"{contour.name} on image {key[0]} frame {key[1]}: {problem}; image withheld",
                [series],
            )
            continue
        closed, xor = masks[key][contour.roi_number]
        (xor if contour.geometric_type == _CLOSED_PLANAR_XOR else closed).append(
            contour_to_mask(contour.points_mm, geometry)
        )


# --------------------------------------------------------------------------------------------
# The entry point


@dataclass(frozen=True)
class SegmentationLabels:
    """Slice labels from segmentations, what was set aside, and a summary per segmentation."""

    labels: pd.DataFrame  # LABEL_COLUMNS, one row per labelled image
    set_aside: pd.DataFrame  # SET_ASIDE_COLUMNS
    summary: pd.DataFrame  # SUMMARY_COLUMNS, one row per input file


def _display_path(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root``; else as given when relative; else only its file name."""
    if root is not None:
        try:
            return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
        except ValueError:
            pass
    return path.as_posix() if not path.is_absolute() else path.name


def _scrub(text: str, path: Path, shown: str) -> str:
    """Remove absolute paths of the file from an error message."""
    for variant in {str(path), os.path.abspath(path), str(Path(os.path.abspath(path)).resolve())}:
        text = text.replace(variant, shown)
    return text


def _measure(
    index: int, path: Path, root: Path | None, catalogue: _Catalogue, rule: LabelRuleConfig
) -> _Measured:
    measured = _Measured(index=index, path=_display_path(path, root))
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        sop_class = str(header.get("SOPClassUID", ""))
        measured.sop_instance_uid = _text(header.get("SOPInstanceUID"))
        if sop_class in (SEG_SOP_CLASS_UID, LABEL_MAP_SEG_SOP_CLASS_UID):
            measured.source = SEG_SOURCE
            _measure_seg(measured, path, catalogue, rule)
        elif sop_class == RTSTRUCT_SOP_CLASS_UID:
            measured.source = RTSTRUCT_SOURCE
            _measure_rtstruct(measured, path, catalogue, rule)
        else:
            raise _SetAside(
                Reason.NOT_A_SEGMENTATION,
                f"(0008,0016) SOP Class UID {sop_class or 'missing'} is neither SEG "
                f"({SEG_SOP_CLASS_UID} or {LABEL_MAP_SEG_SOP_CLASS_UID}) nor RTSTRUCT "
                f"({RTSTRUCT_SOP_CLASS_UID})",
            )
    except _SetAside as set_aside:
        measured.areas_mm2.clear()
        measured.series.clear()
        measured.add_set_aside(
            set_aside.reason, _scrub(set_aside.detail, path, measured.path), set_aside.series
        )
    except _READ_ERRORS as error:
        measured.areas_mm2.clear()
        measured.series.clear()
        measured.add_set_aside(
            Reason.UNREADABLE, _scrub(f"{type(error).__name__}: {error}", path, measured.path)
        )
    for row in measured.set_aside:
        logger.warning("%s: %s: %s", measured.path, row["reason"], row["detail"])
    return measured


def _propagate(
    measured: _Measured, catalogue: _Catalogue
) -> list[tuple[ImageKey, float | None, str]]:
    """(target image, area or None when withheld, source series) for co-registered series."""
    given: list[tuple[ImageKey, float | None, str]] = []
    for series in sorted(measured.series):
        patient = catalogue.patient_of_series.get(series)
        frames_of_reference = catalogue.frame_of_reference_of_series.get(series, set())
        if patient is None or len(frames_of_reference) != 1:
            continue
        source_keys = catalogue.keys_by_series[series]
        for target in sorted(catalogue.keys_by_series):
            if (
                target in measured.series
                or catalogue.patient_of_series.get(target) != patient
                or catalogue.frame_of_reference_of_series.get(target) != frames_of_reference
            ):
                continue
            target_keys = catalogue.keys_by_series[target]
            difference, pairs = _series_difference(
                catalogue.series_geometries(series), catalogue.series_geometries(target)
            )
            if difference is not None:
                measured.add_set_aside(
                    Reason.GEOMETRY_MISMATCH,
                    f"same patient and Frame of Reference as series {series}, not labelled from "
                    f"it: {difference}",
                    [target],
                )
                continue
            for i, j in pairs:
                source_key = source_keys[i]
                area = (
                    None if source_key in measured.withheld else measured.areas_mm2.get(source_key)
                )
                given.append((target_keys[j], area, series))
    return given


def _frame(rows: Sequence[Mapping[Any, Any]], columns: Mapping[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(columns))
    return frame.astype(dict(columns)).reset_index(drop=True)


def labels_from_segmentations(
    segmentation_files: Sequence[Path],
    images: pd.DataFrame,
    rule: LabelRuleConfig,
    root: Path | None = None,
    *,
    series_geometry: pd.DataFrame | None = None,
) -> SegmentationLabels:
    """Slice labels for the images a DICOM SEG or RTSTRUCT segments (and co-registered series).

    ``segmentation_files`` are candidate files, told apart by (0008,0016) SOP Class UID;
    ``images`` is the images manifest (:data:`INPUT_COLUMNS`); ``series_geometry`` optionally adds
    the geometry of images the converter set aside. Paths in the result are relative to ``root``
    (or file names). A bad segmentation becomes rows of ``set_aside`` and never stops the others.

    Raises :class:`ManifestError` when ``images`` lacks a column or holds malformed geometry.
    """
    catalogue = _catalogue(images, series_geometry)
    results = [
        _measure(index, Path(path), root, catalogue, rule)
        for index, path in enumerate(segmentation_files)
    ]
    candidates: list[dict[str, object]] = []
    for measured in results:
        direct = [(key, area, None) for key, area in measured.areas_mm2.items()]
        propagated = _propagate(measured, catalogue) if rule.propagate_to_coregistered else []
        for key, area, from_series in [*direct, *propagated]:
            if key not in catalogue.samples or area is None:
                continue
            sample_id, brain_area_mm2 = catalogue.samples[key]
            verdict = label_slice(area, brain_area_mm2, rule)
            candidates.append(
                {
                    "sample_id": sample_id,
                    "sop_instance_uid": key[0],
                    "frame_index": key[1],
                    "series_instance_uid": catalogue.series_of[key],
                    "label": verdict.label,
                    "rule_reason": verdict.reason,
                    "tumour_area_mm2": area,
                    "label_source": measured.source,
                    "segmentation_sop_instance_uid": measured.sop_instance_uid,
                    "propagated_from_series": from_series,
                    "_index": measured.index,
                    "_propagated": from_series is not None,
                    "_source_rank": 0 if measured.source == SEG_SOURCE else 1,
                }
            )
    ranked = pd.DataFrame(candidates)
    if len(ranked):
        ranked = ranked.sort_values(
            [
                "sop_instance_uid",
                "frame_index",
                "tumour_area_mm2",
                "_propagated",
                "_source_rank",
                "segmentation_sop_instance_uid",
                "_index",
            ],
            ascending=[True, True, False, True, True, True, True],
            kind="stable",
        )
        winners = ranked.drop_duplicates(["sop_instance_uid", "frame_index"], keep="first")
        losers = ranked.drop(winners.index)
    else:
        winners = losers = ranked
    labels = _frame(
        winners[list(LABEL_COLUMNS)].to_dict("records") if len(winners) else [], LABEL_COLUMNS
    )
    set_aside = _frame(
        [row for measured in results for row in measured.set_aside], SET_ASIDE_COLUMNS
    )
    summary_rows = []
    for measured in results:
        own = winners[winners["_index"] == measured.index] if len(winners) else winners
        lost = int((losers["_index"] == measured.index).sum()) if len(losers) else 0
        status = "used" if len(own) else ("superseded" if lost else "set_aside")
        summary_rows.append(
            {
                "segmentation_path": measured.path,
                "segmentation_sop_instance_uid": measured.sop_instance_uid,
                "label_source": measured.source,
                "status": status,
                "labelled_yes": int((own["label"] == TUMOUR).sum()) if len(own) else 0,
                "labelled_no": int((own["label"] == NO_TUMOUR).sum()) if len(own) else 0,
                "ambiguous": int((own["rule_reason"] == AMBIGUOUS).sum()) if len(own) else 0,
                "no_brain": int((own["rule_reason"] == NO_BRAIN).sum()) if len(own) else 0,
                "propagated": int(own["_propagated"].sum()) if len(own) else 0,
                "superseded": lost,
                "withheld": len(measured.withheld),
                "unmatched": measured.unmatched,
            }
        )
        logger.info("%s: %s", measured.path, summary_rows[-1])
    return SegmentationLabels(
        labels=labels.sort_values(
            ["series_instance_uid", "sop_instance_uid", "frame_index"]
        ).reset_index(drop=True),
        set_aside=set_aside,
        summary=_frame(summary_rows, SUMMARY_COLUMNS),
    )
