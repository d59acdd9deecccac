"""NIfTI volumes with segmentation masks (e.g. BraTS) as a source of labelled 2-D slice images.

A *case* is a patient folder (or any ``{case}`` value of :attr:`VolumesConfig.mask_pattern`)
with one tumour mask (label values) and one co-registered image volume per sequence. Every
volume is oriented from its affine, so slices come out as a radiologist displays them whatever
the file's voxel order; each slice is labelled from the mask by the labelling rule
(:func:`label_slice`, areas in mm²) and written as an 8-bit PNG. Files that cannot be used are
set aside in a quarantine table with a reason, and the run goes on with the rest.

The orientation, foreground, window and rendering steps are pure functions on arrays and an
affine; :func:`read_volumes` is the one entry point that reads and writes files. One case is in
memory at a time (its mask and one sequence).
"""

from __future__ import annotations

import glob
import hashlib
import logging
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import cv2
import nibabel as nib
import numpy as np
import numpy.typing as npt
import pandas as pd
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from braincls.common.atomic import write_bytes
from braincls.config import LabelRuleConfig, VolumesConfig
from braincls.data.fingerprint import perceptual_hash
from braincls.data.labelling import (
    AMBIGUOUS,
    LABEL_CLASSES,
    NO_BRAIN,
    UNSELECTED_ONLY,
    area_mm2,
    label_slice,
    selected_segments,
)
from braincls.data.preprocess import encode_png

logger = logging.getLogger(__name__)

Plane = Literal["axial", "coronal", "sagittal"]

#: Why a file (or a whole case) is set aside.
MISSING_SEQUENCE = "missing_sequence"
UNREADABLE_VOLUME = "unreadable_volume"
MASK_GEOMETRY_MISMATCH = "mask_geometry_mismatch"
NON_ORTHOGONAL_ORIENTATION = "non_orthogonal_orientation"
NOT_3D = "not_3d"
NON_INTEGER_MASK = "non_integer_mask"
FILE_REASONS: tuple[str, ...] = (
    MISSING_SEQUENCE,
    UNREADABLE_VOLUME,
    MASK_GEOMETRY_MISMATCH,
    NON_ORTHOGONAL_ORIENTATION,
    NOT_3D,
    NON_INTEGER_MASK,
)
#: Why a slice gets no label (the labelling rule's reasons).
SLICE_REASONS: tuple[str, ...] = (AMBIGUOUS, NO_BRAIN, UNSELECTED_ONLY)
REASONS: tuple[str, ...] = FILE_REASONS + SLICE_REASONS

#: A mask matches its image when every affine entry agrees within this (mm).
AFFINE_TOLERANCE_MM = 1e-3
#: Largest |cosine| between two of an affine's direction columns that still counts as
#: orthogonal (1e-3 is about 0.06 degrees; float32-stored affines are orthogonal to ~1e-7).
ORTHOGONALITY_TOLERANCE = 1e-3

#: Foreground threshold: this fraction of the way from the low to the high percentile of the
#: volume's non-zero voxels (the robust threshold of FSL BET, t2 + 0.1 * (t98 - t2)).
FOREGROUND_FRACTION = 0.1
FOREGROUND_LOW_PERCENTILE = 1.0
FOREGROUND_HIGH_PERCENTILE = 99.0
#: A volume is *zero-background* (skull-stripped or masked) when at least this share of its
#: dim voxels (zero or below the threshold) are exactly 0; then every non-zero voxel is
#: foreground. BraTS volumes measure 0.986 to 0.996; an unmasked head, whose air is noise,
#: far less.
ZERO_BACKGROUND_MIN_SHARE = 0.9

_PLACEHOLDERS = ("{case}", "{sequence}")
_PLACEHOLDER_SPLIT = re.compile(r"(\{case\}|\{sequence\})")
_NIBABEL_READ_ERRORS: tuple[type[BaseException], ...] = (
    ImageFileError,
    HeaderDataError,
    OSError,
    EOFError,
    ValueError,
    zlib.error,
)

#: Columns of the manifest: the project's images-manifest columns, then the volume ones.
VOLUME_MANIFEST_COLUMNS: dict[str, str] = {
    "sample_id": "string",
    "source": "string",
    "source_path": "string",
    "relative_path": "string",
    "label": "string",
    "label_index": "int64",
    "width": "int64",
    "height": "int64",
    "channels": "int64",
    "sha256": "string",
    "fingerprint": "string",
    "group_id": "string",
    "patient_id": "string",
    "label_source": "string",
    "case": "string",
    "sequence": "string",
    "plane": "string",
    "slice_index": "int64",
    "tumour_area_mm2": "float64",
    "brain_area_mm2": "float64",
    "pixel_spacing_row_mm": "float64",
    "pixel_spacing_col_mm": "float64",
    "volume_path": "string",
}

#: Columns of the quarantine table; paths are relative to the source folder.
VOLUME_QUARANTINE_COLUMNS: dict[str, str] = {
    "source_path": "string",
    "relative_path": "string",
    "reason": "string",
    "detail": "string",
    "case": "string",
    "sequence": "string",
    "slice_index": "Int64",
}


class VolumeSourceError(ValueError):
    """The source as a whole cannot be read (missing folder, unusable file pattern)."""


class SetAside(Exception):
    """Internal: a file is set aside for ``reason``, with a short human-readable ``detail``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class OrientedSlices:
    """A volume as a stack of display-oriented 2-D slices.

    ``slices[index]`` is one slice (rows, columns) as displayed; ``pixel_spacing_mm`` is its
    (row, column) spacing in mm.
    """

    slices: npt.NDArray[Any]
    pixel_spacing_mm: tuple[float, float]


@dataclass(frozen=True)
class VolumeResult:
    """What :func:`read_volumes` produced.

    ``label_counts`` has every class of ``LABEL_CLASSES``; ``reason_counts`` every reason of
    ``REASONS`` (zeros included). ``cases_found`` counts cases with a mask file, ``cases_read``
    those with at least one sequence read and labelled. ``foreground_modes`` maps each image
    volume read (relative path) to how its foreground was found (see :func:`foreground_mask`).
    """

    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    label_counts: Mapping[str, int]
    reason_counts: Mapping[str, int]
    cases_found: int
    cases_read: int
    foreground_modes: Mapping[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Discovering cases
# --------------------------------------------------------------------------------------------


def _check_pattern(pattern: str, name: str) -> None:
    path = PurePosixPath(pattern)
    if path.is_absolute() or ".." in path.parts or "\\" in pattern:
        raise VolumeSourceError(
            f"{name} {pattern!r} must be a relative POSIX path inside the source folder "
            "(no leading '/', no '..', '/' as separator)"
        )


def pattern_glob(pattern: str) -> str:
    """Glob of ``pattern``: each placeholder becomes ``*``, everything else is matched literally."""
    parts = _PLACEHOLDER_SPLIT.split(pattern)
    return "".join("*" if part in _PLACEHOLDERS else glob.escape(part) for part in parts)


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Regex that fully matches ``pattern``'s relative paths, capturing ``case`` (and
    ``sequence``): a placeholder matches one or more characters other than ``/``; a repeated
    placeholder must repeat the same value; everything else is matched literally."""
    seen: set[str] = set()
    pieces: list[str] = []
    for part in _PLACEHOLDER_SPLIT.split(pattern):
        if part in _PLACEHOLDERS:
            name = part[1:-1]
            pieces.append(f"(?P={name})" if name in seen else f"(?P<{name}>[^/]+)")
            seen.add(name)
        else:
            pieces.append(re.escape(part))
    return re.compile("".join(pieces))


def fill_pattern(pattern: str, case: str, sequence: str | None = None) -> str:
    """The relative path ``pattern`` names for ``case`` (and ``sequence``)."""
    path = pattern.replace("{case}", case)
    if sequence is not None:
        path = path.replace("{sequence}", sequence)
    return path


def discover_cases(source_dir: Path, config: VolumesConfig) -> list[str]:
    """Every ``{case}`` value whose mask file exists under ``source_dir``, sorted."""
    _check_pattern(config.mask_pattern, "mask_pattern")
    _check_pattern(config.image_pattern, "image_pattern")
    if "{sequence}" in config.mask_pattern:
        raise VolumeSourceError(
            f"mask_pattern {config.mask_pattern!r} must not contain {{sequence}}: one mask "
            "labels every sequence of a case"
        )
    regex = pattern_regex(config.mask_pattern)
    cases: set[str] = set()
    for path in source_dir.glob(pattern_glob(config.mask_pattern)):
        match = regex.fullmatch(path.relative_to(source_dir).as_posix())
        if match is not None and path.is_file():
            cases.add(match.group("case"))
    return sorted(cases)


# --------------------------------------------------------------------------------------------
# Checks on headers and arrays
# --------------------------------------------------------------------------------------------


def orientation_problem(affine: npt.ArrayLike) -> str | None:
    """Why ``affine``'s voxel axes are not an orthogonal grid (shear, skew, a degenerate or
    non-finite axis), or ``None`` when they are (within ``ORTHOGONALITY_TOLERANCE``)."""
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        return f"affine is not a finite 4x4 matrix (shape {matrix.shape})"
    directions = matrix[:3, :3]
    norms = np.linalg.norm(directions, axis=0)
    if np.any(norms <= 0):
        return f"voxel axis of zero length (column norms {np.round(norms, 6).tolist()} mm)"
    unit = directions / norms
    cosines = np.abs(unit.T @ unit - np.eye(3))
    largest = float(cosines.max())
    if largest > ORTHOGONALITY_TOLERANCE:
        return (
            f"affine direction columns not orthogonal (largest |cosine| {largest:.4f} > "
            f"{ORTHOGONALITY_TOLERANCE:g}): sheared or skewed grid; reslice it to an orthogonal "
            "grid first"
        )
    return None


def geometry_mismatch(
    image_shape: Sequence[int],
    image_affine: npt.ArrayLike,
    mask_shape: Sequence[int],
    mask_affine: npt.ArrayLike,
) -> str | None:
    """Why a mask does not lie on its image's voxel grid (shape, or affine beyond
    ``AFFINE_TOLERANCE_MM``), or ``None`` when it does."""
    if tuple(image_shape) != tuple(mask_shape):
        return f"mask shape {tuple(mask_shape)} differs from image shape {tuple(image_shape)}"
    difference = np.abs(np.asarray(image_affine, float) - np.asarray(mask_affine, float))
    largest = float(difference.max())
    if largest > AFFINE_TOLERANCE_MM:
        return (
            f"mask affine differs from image affine by up to {largest:.4g} mm "
            f"(tolerance {AFFINE_TOLERANCE_MM:g} mm)"
        )
    return None


def spatial_shape(shape: Sequence[int]) -> tuple[int, int, int] | None:
    """The 3-D shape of a volume, accepting a trailing axis of length 1 (a single-frame
    4-D file); ``None`` for anything else."""
    dims = tuple(int(size) for size in shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims = dims[:-1]
    if len(dims) != 3:
        return None
    return (dims[0], dims[1], dims[2])


def mask_label_values(mask: npt.NDArray[Any]) -> list[int]:
    """The distinct non-zero label values of ``mask``, sorted.

    Raises :class:`SetAside` (``non_integer_mask``) when a floating-point mask holds
    non-integer or non-finite values.
    """
    if np.issubdtype(mask.dtype, np.floating):
        finite = np.isfinite(mask)
        if not finite.all() or np.any(mask != np.round(mask)):
            raise SetAside(
                NON_INTEGER_MASK,
                "mask holds non-integer or non-finite values; a mask must hold label values",
            )
    elif not np.issubdtype(mask.dtype, np.integer) and mask.dtype != np.bool_:
        raise SetAside(NON_INTEGER_MASK, f"mask has data type {mask.dtype}, not integer labels")
    # Tumour covers a few percent of a volume: sorting only the non-zero voxels is far cheaper
    # than np.unique over all of them.
    values = np.unique(mask[mask != 0])
    return [int(value) for value in values]


# --------------------------------------------------------------------------------------------
# Orientation (pure)
# --------------------------------------------------------------------------------------------


def to_canonical(
    volume: npt.NDArray[Any], affine: npt.ArrayLike
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]]:
    """Reorder and flip ``volume``'s axes to the closest canonical RAS+ order.

    Afterwards voxel axis 0 increases toward the patient's right, axis 1 toward anterior,
    axis 2 toward superior (nibabel ``io_orientation`` / ``apply_orientation``, the method of
    ``as_closest_canonical``). Returns a view and the affine of the reordered grid.
    """
    matrix = np.asarray(affine, dtype=np.float64)
    orientation = nib.orientations.io_orientation(matrix)
    canonical = nib.orientations.apply_orientation(volume, orientation)
    canonical_affine = matrix @ nib.orientations.inv_ornt_aff(orientation, volume.shape[:3])
    return canonical, canonical_affine


def voxel_sizes_mm(affine: npt.ArrayLike) -> tuple[float, float, float]:
    """Voxel size along each voxel axis (mm): the norms of the affine's direction columns."""
    norms = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    return (float(norms[0]), float(norms[1]), float(norms[2]))


def display_slices(
    canonical: npt.NDArray[Any], canonical_affine: npt.ArrayLike, plane: Plane
) -> OrientedSlices:
    """Slices of a canonical (RAS+) volume in ``plane``, as a radiologist displays them.

    - axial: anterior at the top, the patient's left on the image's right; slice index from
      inferior to superior;
    - coronal: superior at the top, the patient's left on the image's right; index from
      posterior to anterior;
    - sagittal: superior at the top, anterior on the image's left; index from the patient's
      left to right.

    Each is the canonical section transposed (rows along the second named axis) and flipped in
    both directions.
    """
    size_x_mm, size_y_mm, size_z_mm = voxel_sizes_mm(canonical_affine)
    if plane == "axial":
        # stack[z, y, x]; rows from anterior (high y), columns from the right (high x).
        stack = canonical.transpose(2, 1, 0)
        spacing = (size_y_mm, size_x_mm)
    elif plane == "coronal":
        # stack[y, z, x]; rows from superior (high z), columns from the right (high x).
        stack = canonical.transpose(1, 2, 0)
        spacing = (size_z_mm, size_x_mm)
    elif plane == "sagittal":
        # stack[x, z, y]; rows from superior (high z), columns from anterior (high y).
        stack = canonical.transpose(0, 2, 1)
        spacing = (size_z_mm, size_y_mm)
    else:
        raise ValueError(f"plane must be 'axial', 'coronal' or 'sagittal', got {plane!r}")
    return OrientedSlices(np.flip(stack, axis=(1, 2)), spacing)


def orient_volume(volume: npt.NDArray[Any], affine: npt.ArrayLike, plane: Plane) -> OrientedSlices:
    """Display-oriented slices of ``volume`` in ``plane``, whatever its voxel order
    (:func:`to_canonical`, then :func:`display_slices`)."""
    canonical, canonical_affine = to_canonical(volume, affine)
    return display_slices(canonical, canonical_affine, plane)


# --------------------------------------------------------------------------------------------
# Foreground, window, rendering (pure)
# --------------------------------------------------------------------------------------------


def foreground_mask(volume: npt.NDArray[Any]) -> tuple[npt.NDArray[np.bool_], str]:
    """Foreground (head or brain) voxels of ``volume`` and how they were chosen.

    The threshold is ``FOREGROUND_FRACTION`` of the way from the ``FOREGROUND_LOW_PERCENTILE``
    to the ``FOREGROUND_HIGH_PERCENTILE`` percentile of the non-zero voxels (BET's robust
    threshold): it drops the noise of the air around an unmasked head. A skull-stripped or
    masked volume, whose background is exactly 0 (at least ``ZERO_BACKGROUND_MIN_SHARE`` of
    the dim voxels), keeps every non-zero voxel instead: there the threshold would only cut
    the dim rim of the brain (on BraTS FLAIR it drops 21 of 966 tumour-free slices below
    2000 mm²). Non-finite voxels count as 0. Returns the mask and ``"nonzero"`` or
    ``"threshold"``.
    """
    values = np.asarray(volume)
    if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
        values = np.where(np.isfinite(values), values, 0)
    nonzero = values != 0
    if not nonzero.any():
        return nonzero, "nonzero"
    low, high = np.percentile(
        values[nonzero], [FOREGROUND_LOW_PERCENTILE, FOREGROUND_HIGH_PERCENTILE]
    )
    threshold = float(low) + FOREGROUND_FRACTION * (float(high) - float(low))
    zero_count = values.size - int(np.count_nonzero(nonzero))
    dim_count = int(np.count_nonzero(~nonzero | (values < threshold)))
    if dim_count == 0 or zero_count / dim_count >= ZERO_BACKGROUND_MIN_SHARE:
        return nonzero, "nonzero"
    return values > threshold, "threshold"


def window_bounds(
    volume: npt.NDArray[Any],
    foreground: npt.NDArray[np.bool_],
    percentile_low: float,
    percentile_high: float,
) -> tuple[float, float]:
    """Intensity window of a volume: the ``percentile_low`` and ``percentile_high``
    percentiles of its foreground voxels (``(0, 1)`` without foreground; never empty)."""
    if not foreground.any():
        return (0.0, 1.0)
    low, high = np.percentile(
        np.asarray(volume)[foreground].astype(np.float64), [percentile_low, percentile_high]
    )
    low_value = float(low)
    high_value = float(high)
    if not high_value > low_value:
        high_value = low_value + 1.0
    return (low_value, high_value)


def square_geometry(
    rows: int, cols: int, pixel_spacing_mm: tuple[float, float], image_size_px: int
) -> tuple[int, int]:
    """Height and width (px) of a ``rows x cols`` slice scaled into an ``image_size_px``
    square with square pixels: the longer physical side fills the square, the other keeps its
    physical proportion (at least 1 px)."""
    if rows < 1 or cols < 1:
        raise ValueError(f"a slice needs at least one row and column, got {rows}x{cols}")
    row_mm, col_mm = pixel_spacing_mm
    if not (row_mm > 0 and col_mm > 0):
        raise ValueError(f"pixel spacing must be positive, got {pixel_spacing_mm} mm")
    height_mm = rows * row_mm
    width_mm = cols * col_mm
    scale = image_size_px / max(height_mm, width_mm)
    height = min(image_size_px, max(1, round(height_mm * scale)))
    width = min(image_size_px, max(1, round(width_mm * scale)))
    return (height, width)


def render_slice(
    values: npt.NDArray[Any],
    window: tuple[float, float],
    pixel_spacing_mm: tuple[float, float],
    image_size_px: int,
) -> npt.NDArray[np.uint8]:
    """An 8-bit ``image_size_px`` square image of one display-oriented slice.

    ``window`` (low, high) maps to 0..255 (clipped); the slice is resampled to square pixels
    at the scale of :func:`square_geometry` (``cv2.INTER_AREA`` when shrinking, bilinear when
    enlarging), rounded, and centred on a black (0) square; an odd remainder goes to the
    bottom / right. Never stretched.
    """
    slice_values = np.asarray(values, dtype=np.float64)
    if slice_values.ndim != 2:
        raise ValueError(f"expected a 2-D slice, got shape {slice_values.shape}")
    low, high = window
    scaled = np.clip((slice_values - low) * (255.0 / (high - low)), 0.0, 255.0)
    rows, cols = scaled.shape
    height, width = square_geometry(rows, cols, pixel_spacing_mm, image_size_px)
    if (height, width) != (rows, cols):
        shrinking = height * width < rows * cols
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        scaled = np.asarray(
            cv2.resize(np.ascontiguousarray(scaled), (width, height), interpolation=interpolation),
            dtype=np.float64,
        )
    pixels = np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)
    canvas = np.zeros((image_size_px, image_size_px), dtype=np.uint8)
    top = (image_size_px - height) // 2
    left = (image_size_px - width) // 2
    canvas[top : top + height, left : left + width] = pixels
    return canvas


@dataclass(frozen=True)
class DisplayVolume:
    """A volume ready to be rendered slice by slice: display-oriented slices, its foreground
    and its intensity window (what training, evaluation and prediction all render from)."""

    slices: OrientedSlices
    foreground: OrientedSlices
    window: tuple[float, float]
    foreground_mode: str

    def brain_area_mm2(self, index: int) -> float:
        """The foreground area (mm²) of slice ``index``."""
        return area_mm2(self.foreground.slices[index], self.foreground.pixel_spacing_mm)

    def render(self, index: int, image_size_px: int) -> npt.NDArray[np.uint8]:
        """Slice ``index`` as the 8-bit square image :func:`render_slice` makes."""
        return render_slice(
            self.slices.slices[index], self.window, self.slices.pixel_spacing_mm, image_size_px
        )


def display_volume(
    volume: npt.NDArray[Any], affine: npt.ArrayLike, plane: Plane, config: VolumesConfig
) -> DisplayVolume:
    """Orient ``volume`` for display in ``plane`` and find its foreground and window (by
    ``config``'s percentiles); non-finite voxels count as 0."""
    if np.issubdtype(volume.dtype, np.floating) and not np.all(np.isfinite(volume)):
        volume = np.where(np.isfinite(volume), volume, 0)
    foreground, mode = foreground_mask(volume)
    window = window_bounds(volume, foreground, config.percentile_low, config.percentile_high)
    return DisplayVolume(
        slices=orient_volume(volume, affine, plane),
        foreground=orient_volume(foreground, affine, plane),
        window=window,
        foreground_mode=mode,
    )


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def _short(error: BaseException, path: Path, name: str) -> str:
    """One line about ``error`` with ``path`` replaced by its relative ``name`` (tables carry
    no absolute paths)."""
    text = " ".join(str(error).split()) or type(error).__name__
    text = text.replace(str(path), name)
    return f"{type(error).__name__}: {text[:160]}"


def load_header(path: Path, name: str) -> nib.spatialimages.SpatialImage:
    """Open the NIfTI file ``path`` (``name``: its relative path, for messages) lazily, header
    and affine only, and check that it is a 3-D volume on an orthogonal grid; raises
    :class:`SetAside` otherwise."""
    try:
        image = nib.load(path)
    except _NIBABEL_READ_ERRORS as error:
        raise SetAside(UNREADABLE_VOLUME, _short(error, path, name)) from error
    if not isinstance(image, nib.spatialimages.SpatialImage):
        raise SetAside(UNREADABLE_VOLUME, f"{type(image).__name__} is not a spatial image")
    if spatial_shape(image.shape) is None:
        raise SetAside(NOT_3D, f"shape {tuple(image.shape)}: a 3-D volume is needed")
    problem = orientation_problem(image.affine)
    if problem is not None:
        raise SetAside(NON_ORTHOGONAL_ORIENTATION, problem)
    return image


def load_data(image: nib.spatialimages.SpatialImage, path: Path, name: str) -> npt.NDArray[Any]:
    """The voxels of a checked image (read from ``path``, relative ``name``) in their stored
    dtype (``np.asarray(img.dataobj)``; float only when the header sets a scale slope), as a
    3-D array."""
    try:
        data = np.asarray(image.dataobj)
    except _NIBABEL_READ_ERRORS as error:
        raise SetAside(UNREADABLE_VOLUME, _short(error, path, name)) from error
    shape = spatial_shape(data.shape)
    if shape is None:
        raise SetAside(NOT_3D, f"shape {tuple(data.shape)}: a 3-D volume is needed")
    return data.reshape(shape)


# --------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------


def _quarantine_row(
    path: str,
    reason: str,
    detail: str,
    case: str,
    sequence: str | None = None,
    slice_index: int | None = None,
) -> dict[str, Any]:
    return {
        "source_path": path,
        "relative_path": path,
        "reason": reason,
        "detail": detail,
        "case": case,
        "sequence": sequence,
        "slice_index": slice_index,
    }


def _frame(rows: list[dict[str, Any]], columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            name: pd.Series([row[name] for row in rows], dtype=dtype)
            for name, dtype in columns.items()
        }
    )


def read_volumes(
    source_dir: Path, out_dir: Path, config: VolumesConfig, rule: LabelRuleConfig
) -> VolumeResult:
    """Read every case under ``source_dir``, write its labelled slices as PNGs under
    ``out_dir`` (``<case>/<sequence>/<plane>/<slice:03d>.png``) and return the manifest.

    Cases are the ``{case}`` values of ``config.mask_pattern`` whose mask exists, in sorted
    order; for each, the mask and then each of ``config.sequences`` is read, checked, oriented
    (``config.plane``), labelled slice by slice with ``rule`` and rendered. Bad files and
    unlabelled slices go to the quarantine table; nothing about the input is raised, except a
    missing source folder or an unusable pattern (:class:`VolumeSourceError`).

    Each PNG is written atomically and an existing file of the same name is replaced; PNGs of an
    earlier run that this run does not produce are left alone, so give a fresh ``out_dir`` (for
    example one from ``atomic_dir``) when the config or rule changed. The manifest's
    ``source_path`` is the PNG's absolute path; every other path in both tables is relative
    (quarantine ``source_path`` and ``relative_path`` both name the volume or mask file
    relative to ``source_dir``; slice rows add ``slice_index``).
    """
    source_dir = Path(source_dir).resolve()
    out_dir = Path(out_dir).resolve()
    if not source_dir.is_dir():
        raise VolumeSourceError(f"{source_dir}: the volumes source folder does not exist")
    cases = discover_cases(source_dir, config)
    if not cases:
        logger.warning("%s: no mask matches %r", source_dir, config.mask_pattern)
    sequences = list(dict.fromkeys(config.sequences))
    plane: Plane = config.plane
    manifest_rows: list[dict[str, Any]] = []
    quarantine_rows: list[dict[str, Any]] = []
    foreground_modes: dict[str, str] = {}
    cases_read = 0
    for case in cases:
        read_any = _read_case(
            source_dir,
            out_dir,
            case,
            sequences,
            plane,
            config,
            rule,
            manifest_rows,
            quarantine_rows,
            foreground_modes,
        )
        cases_read += int(read_any)
    manifest = _frame(manifest_rows, VOLUME_MANIFEST_COLUMNS)
    quarantine = _frame(quarantine_rows, VOLUME_QUARANTINE_COLUMNS)
    label_counts = {label: int((manifest["label"] == label).sum()) for label in LABEL_CLASSES}
    reason_counts = {reason: int((quarantine["reason"] == reason).sum()) for reason in REASONS}
    logger.info(
        "%s: %d of %d cases read, %s, set aside %s",
        source_dir.name,
        cases_read,
        len(cases),
        label_counts,
        {reason: count for reason, count in reason_counts.items() if count},
    )
    return VolumeResult(
        manifest=manifest,
        quarantine=quarantine,
        label_counts=label_counts,
        reason_counts=reason_counts,
        cases_found=len(cases),
        cases_read=cases_read,
        foreground_modes=foreground_modes,
    )


def _read_case(
    source_dir: Path,
    out_dir: Path,
    case: str,
    sequences: list[str],
    plane: Plane,
    config: VolumesConfig,
    rule: LabelRuleConfig,
    manifest_rows: list[dict[str, Any]],
    quarantine_rows: list[dict[str, Any]],
    foreground_modes: dict[str, str],
) -> bool:
    """Read one case into the row lists; ``True`` when at least one sequence was labelled."""
    mask_path = fill_pattern(config.mask_pattern, case)
    try:
        mask_image = load_header(source_dir / mask_path, mask_path)
        mask = load_data(mask_image, source_dir / mask_path, mask_path)
        present = mask_label_values(mask)
    except SetAside as problem:
        quarantine_rows.append(
            _quarantine_row(
                mask_path, problem.reason, f"mask: {problem.detail}; case skipped", case
            )
        )
        logger.warning("%s: mask set aside: %s", mask_path, problem)
        return False
    mask_affine = np.asarray(mask_image.affine, dtype=np.float64)
    mask_shape = mask.shape
    selected = selected_segments({value: "" for value in present}, rule)
    counted = np.isin(mask, selected)
    tumour = orient_volume(counted, mask_affine, plane)
    others = orient_volume((mask != 0) & ~counted, mask_affine, plane)
    del mask, counted
    tumour_areas_mm2 = [
        area_mm2(tumour.slices[index], tumour.pixel_spacing_mm)
        for index in range(tumour.slices.shape[0])
    ]
    other_areas_mm2 = [
        area_mm2(others.slices[index], others.pixel_spacing_mm)
        for index in range(others.slices.shape[0])
    ]
    del tumour, others
    read_any = False
    for sequence in sequences:
        image_path = fill_pattern(config.image_pattern, case, sequence)
        if not (source_dir / image_path).is_file():
            quarantine_rows.append(
                _quarantine_row(
                    image_path,
                    MISSING_SEQUENCE,
                    f"no {sequence} volume for case {case}",
                    case,
                    sequence,
                )
            )
            continue
        try:
            image = load_header(source_dir / image_path, image_path)
            mismatch = geometry_mismatch(
                spatial_shape(image.shape) or (), image.affine, mask_shape, mask_affine
            )
            if mismatch is not None:
                raise SetAside(MASK_GEOMETRY_MISMATCH, f"{mismatch} ({mask_path})")
            volume = load_data(image, source_dir / image_path, image_path)
        except SetAside as problem:
            quarantine_rows.append(
                _quarantine_row(image_path, problem.reason, problem.detail, case, sequence)
            )
            logger.warning("%s: set aside: %s", image_path, problem)
            continue
        _label_sequence(
            volume,
            mask_affine,
            case,
            sequence,
            image_path,
            plane,
            tumour_areas_mm2,
            other_areas_mm2,
            source_dir,
            out_dir,
            config,
            rule,
            manifest_rows,
            quarantine_rows,
            foreground_modes,
        )
        read_any = True
    return read_any


def _label_sequence(
    volume: npt.NDArray[Any],
    affine: npt.NDArray[np.float64],
    case: str,
    sequence: str,
    image_path: str,
    plane: Plane,
    tumour_areas_mm2: list[float],
    other_areas_mm2: list[float],
    source_dir: Path,
    out_dir: Path,
    config: VolumesConfig,
    rule: LabelRuleConfig,
    manifest_rows: list[dict[str, Any]],
    quarantine_rows: list[dict[str, Any]],
    foreground_modes: dict[str, str],
) -> None:
    """Label, render and write the slices of one checked volume (the mask's geometry)."""
    shown = display_volume(volume, affine, plane, config)
    foreground_modes[image_path] = shown.foreground_mode
    spacing = shown.slices.pixel_spacing_mm
    for slice_index in range(shown.slices.slices.shape[0]):
        tumour_area = tumour_areas_mm2[slice_index]
        brain_area = shown.brain_area_mm2(slice_index)
        verdict = label_slice(tumour_area, brain_area, rule, other_areas_mm2[slice_index])
        if verdict.label is None:
            if verdict.reason == UNSELECTED_ONLY:
                detail = (
                    f"only segments the rule does not count ({other_areas_mm2[slice_index]:g} "
                    "mm²): not tumour-free"
                )
            elif verdict.reason == AMBIGUOUS:
                detail = (
                    f"tumour area {tumour_area:g} mm² below min_tumour_area_mm2 "
                    f"{rule.min_tumour_area_mm2:g}"
                )
            else:
                detail = (
                    f"brain area {brain_area:g} mm² below min_brain_area_mm2 "
                    f"{rule.min_brain_area_mm2:g}"
                )
            quarantine_rows.append(
                _quarantine_row(
                    image_path, str(verdict.reason), detail, case, sequence, slice_index
                )
            )
            continue
        image = shown.render(slice_index, config.image_size_px)
        png = encode_png(image)
        sample_id = f"{case}/{sequence}/{plane}/{slice_index:03d}"
        relative_path = f"{sample_id}.png"
        target = out_dir / relative_path
        write_bytes(target, png)
        manifest_rows.append(
            {
                "sample_id": sample_id,
                "source": source_dir.name,
                "source_path": str(target),
                "relative_path": relative_path,
                "label": verdict.label,
                "label_index": LABEL_CLASSES.index(verdict.label),
                "width": int(image.shape[1]),
                "height": int(image.shape[0]),
                "channels": 1,
                "sha256": hashlib.sha256(png).hexdigest(),
                "fingerprint": f"{perceptual_hash(image):016x}",
                "group_id": f"p-{case}",
                "patient_id": case,
                "label_source": "mask",
                "case": case,
                "sequence": sequence,
                "plane": plane,
                "slice_index": slice_index,
                "tumour_area_mm2": float(tumour_area),
                "brain_area_mm2": float(brain_area),
                "pixel_spacing_row_mm": float(spacing[0]),
                "pixel_spacing_col_mm": float(spacing[1]),
                "volume_path": image_path,
            }
        )
