"""Pure pixel functions of the grayscale display pipeline, in the order the standard applies them.

DICOM PS3.4 Annex N.2 (grayscale transformations) fixes the order used by
:func:`braincls.convert.series.render_frame`:

1. Modality LUT: (0028,3000) Modality LUT Sequence (:func:`apply_lut`) or (0028,1053) Rescale
   Slope and (0028,1052) Rescale Intercept (:func:`apply_rescale`), PS3.3 C.11.1.
2. VOI LUT: (0028,3010) VOI LUT Sequence (:func:`apply_lut` then :func:`scale_lut_output`) or
   (0028,1050) Window Center / (0028,1051) Window Width (:func:`apply_window`), PS3.3 C.11.2; a
   robust :func:`percentile_window` when the file has neither (MR values have no fixed scale).
3. Presentation: (0028,0004) MONOCHROME1 is inverted (:func:`invert`) so that tissue is bright.

Every function takes an array and returns a new one; nothing here reads files.
"""

from __future__ import annotations

from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Largest value of the 8-bit display range every VOI step maps onto.
DISPLAY_MAX = 255.0

VoiFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]


class WindowError(ValueError):
    """A window centre/width pair that the standard does not allow."""


def apply_rescale(arr: ArrayLike, slope: float, intercept: float) -> NDArray[np.float64]:
    """Apply (0028,1053) Rescale Slope and (0028,1052) Rescale Intercept (PS3.3 C.11.1.1.2).

    ``output = stored * slope + intercept``, in float64.
    """
    return np.asarray(arr, dtype=np.float64) * float(slope) + float(intercept)


def apply_lut(arr: ArrayLike, lut: ArrayLike, first_mapped: int) -> NDArray[np.float64]:
    """Look ``arr`` up in a LUT whose first entry maps input value ``first_mapped``.

    PS3.3 C.11.1.1.1 and C.11.2.1.1: inputs below the first mapped value take the first entry,
    inputs beyond the last mapped value take the last entry. Non-integer inputs (after a
    rescale) are rounded to the nearest entry.
    """
    table = np.asarray(lut, dtype=np.float64)
    if table.ndim != 1 or table.size == 0:
        raise ValueError(
            f"a LUT needs at least one entry in one dimension, got shape {table.shape}"
        )
    values = np.asarray(arr, dtype=np.float64)
    index = np.clip(np.rint(values) - first_mapped, 0, table.size - 1).astype(np.int64)
    return table[index]


def scale_lut_output(arr: ArrayLike, bits_per_entry: int) -> NDArray[np.float64]:
    """Map VOI LUT output (0 .. 2**bits - 1, PS3.3 C.11.2.1.1) onto the 0..255 display range.

    ``bits_per_entry`` is the third value of (0028,3002) LUT Descriptor.
    """
    if bits_per_entry < 1:
        raise ValueError(f"LUT Descriptor bits per entry must be positive, got {bits_per_entry}")
    top = float(2**bits_per_entry - 1)
    return np.clip(np.asarray(arr, dtype=np.float64) / top * DISPLAY_MAX, 0.0, DISPLAY_MAX)


def apply_window(
    arr: ArrayLike,
    center: float,
    width: float,
    *,
    function: str = "LINEAR",
    output_max: float = DISPLAY_MAX,
) -> NDArray[np.float64]:
    """Apply (0028,1050) Window Center and (0028,1051) Window Width onto ``0 .. output_max``.

    ``function`` is (0028,1056) VOI LUT Function:

    - ``LINEAR`` (PS3.3 C.11.2.1.2.1): ``x <= c - 0.5 - (w - 1) / 2`` gives 0,
      ``x > c - 0.5 + (w - 1) / 2`` gives ``output_max``, otherwise
      ``((x - (c - 0.5)) / (w - 1) + 0.5) * output_max``; needs ``w >= 1``.
    - ``LINEAR_EXACT`` (C.11.2.1.3.2): ``x <= c - w / 2`` gives 0, ``x > c + w / 2`` gives
      ``output_max``, otherwise ``((x - c) / w + 0.5) * output_max``; needs ``w > 0``.
    - ``SIGMOID`` (C.11.2.1.3.1): ``output_max / (1 + exp(-4 (x - c) / w))``; needs ``w > 0``.

    A LINEAR window of width exactly 1 is a threshold at ``c - 0.5`` (the formula's middle branch
    is empty).
    """
    name = function.strip().upper() or "LINEAR"
    if name == "LINEAR":
        if width < 1:
            raise WindowError(f"LINEAR window width must be >= 1 (PS3.3 C.11.2.1.2.1), got {width}")
        if width == 1:
            return np.where(np.asarray(arr) <= center - 0.5, 0.0, output_max)
        offset, span = center - 0.5, width - 1
    elif name == "LINEAR_EXACT":
        if width <= 0:
            raise WindowError(f"LINEAR_EXACT window width must be > 0, got {width}")
        offset, span = float(center), float(width)
    elif name == "SIGMOID":
        if width <= 0:
            raise WindowError(f"SIGMOID window width must be > 0, got {width}")
        values = np.asarray(arr, dtype=np.float64)
        return output_max / (1.0 + np.exp(-4.0 * (values - center) / width))
    else:
        raise WindowError(
            f"unsupported (0028,1056) VOI LUT Function {function!r}; "
            "expected LINEAR, LINEAR_EXACT or SIGMOID"
        )
    # The middle branch is an increasing line that is 0 at the lower and output_max at the upper
    # bound, so clipping it gives the two outer branches exactly.
    # In place, in the order of the standard's formula: ((x - offset) / span + 0.5) * max.
    values = np.array(arr, dtype=np.float64)
    values -= offset
    values /= span
    values += 0.5
    values *= output_max
    return np.clip(values, 0.0, output_max, out=values)


def percentile_bounds(arr: ArrayLike, low_pct: float, high_pct: float) -> tuple[float, float]:
    """The ``low_pct`` and ``high_pct`` percentiles of the finite values of ``arr``.

    Percentiles use NumPy's default linear interpolation between order statistics.
    """
    if not 0 <= low_pct < high_pct <= 100:
        raise ValueError(f"need 0 <= low_pct < high_pct <= 100, got {low_pct}, {high_pct}")
    values = np.asarray(arr)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        values = values[np.isfinite(values)]
    if values.size == 0:
        return (0.0, 0.0)
    low, high = np.percentile(values, [low_pct, high_pct])
    return (float(low), float(high))


def percentile_window(
    arr: ArrayLike, low_pct: float, high_pct: float, *, output_max: float = DISPLAY_MAX
) -> NDArray[np.float64]:
    """Map the ``low_pct`` percentile to 0 and the ``high_pct`` percentile to ``output_max``.

    Linear in between, clipped outside. A slice whose two percentiles are equal carries no
    contrast and maps to all zeros. Non-finite values map to 0.
    """
    values = np.asarray(arr, dtype=np.float64)
    low, high = percentile_bounds(values, low_pct, high_pct)
    if high <= low:
        return np.zeros(values.shape, dtype=np.float64)
    scaled = values - low
    scaled /= high - low
    scaled *= output_max
    np.clip(scaled, 0.0, output_max, out=scaled)
    non_finite = ~np.isfinite(values)
    if non_finite.any():
        scaled[non_finite] = 0.0
    return scaled


def invert(arr: ArrayLike, output_max: float = DISPLAY_MAX) -> NDArray[np.float64]:
    """Invert display values for (0028,0004) Photometric Interpretation MONOCHROME1.

    MONOCHROME1 shows the minimum value as white (PS3.3 C.7.6.3.1.2); after inversion tissue is
    bright as in MONOCHROME2: ``output = output_max - x``.
    """
    return output_max - np.asarray(arr, dtype=np.float64)


def _round_clip(arr: ArrayLike, top: float) -> NDArray[Any]:
    values: NDArray[Any] = np.asarray(arr)
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    out = np.rint(values)
    if np.isnan(out).any():
        out = np.nan_to_num(out, nan=0.0)
    return np.clip(out, 0, top, out=out)


def to_uint8(arr: ArrayLike) -> NDArray[np.uint8]:
    """Round display values to the nearest integer (ties to even) and clip them to 0..255.

    NaN becomes 0.
    """
    return _round_clip(arr, 255).astype(np.uint8)


def to_uint16(arr: ArrayLike) -> NDArray[np.uint16]:
    """Round values to the nearest integer (ties to even) and clip them to 0..65535.

    NaN becomes 0.
    """
    return _round_clip(arr, 65535).astype(np.uint16)


def square_geometry(
    rows: int,
    cols: int,
    size_px: int,
    *,
    pixel_spacing_mm: tuple[float, float] | None = None,
    keep_aspect: bool = True,
) -> tuple[int, int]:
    """Height and width, in pixels, of a ``rows x cols`` slice scaled into a ``size_px`` square.

    With ``keep_aspect`` the longer *physical* side, ``rows * row_spacing`` or
    ``cols * column_spacing`` from (0028,0030) Pixel Spacing (row spacing first), becomes
    ``size_px`` and the other side keeps its proportion (at least 1 pixel); without spacing the
    pixels count as square. Without ``keep_aspect`` the result is ``(size_px, size_px)``.
    """
    if rows < 1 or cols < 1:
        raise ValueError(f"a slice needs at least one row and column, got {rows}x{cols}")
    if not keep_aspect:
        return (size_px, size_px)
    row_mm, col_mm = pixel_spacing_mm if pixel_spacing_mm else (1.0, 1.0)
    if not (row_mm > 0 and col_mm > 0):
        row_mm, col_mm = 1.0, 1.0
    height_mm = rows * row_mm
    width_mm = cols * col_mm
    scale = size_px / max(height_mm, width_mm)
    height = min(size_px, max(1, round(height_mm * scale)))
    width = min(size_px, max(1, round(width_mm * scale)))
    return (height, width)


def resize_to_square(
    image: ArrayLike,
    size_px: int,
    *,
    pixel_spacing_mm: tuple[float, float] | None = None,
    keep_aspect: bool = True,
) -> NDArray[np.float64]:
    """Scale a 2-D slice into a ``size_px`` square (see :func:`square_geometry`), in float64.

    Shrinking uses area averaging (``cv2.INTER_AREA``), enlarging bilinear interpolation. With
    ``keep_aspect`` the scaled slice is centred and padded with 0 (black); an odd remainder
    goes to the bottom / right.
    """
    values: NDArray[np.float64] = np.asarray(image, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D slice, got shape {values.shape}")
    rows, cols = values.shape
    height, width = square_geometry(
        rows, cols, size_px, pixel_spacing_mm=pixel_spacing_mm, keep_aspect=keep_aspect
    )
    if (height, width) != (rows, cols):
        shrinking = height * width < rows * cols
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        values = np.asarray(
            cv2.resize(values, (width, height), interpolation=interpolation), dtype=np.float64
        )
    if (height, width) == (size_px, size_px):
        return values
    out = np.zeros((size_px, size_px), dtype=np.float64)
    top = (size_px - height) // 2
    left = (size_px - width) // 2
    out[top : top + height, left : left + width] = values
    return out


def thumbnail(image: ArrayLike, side_px: int = 32) -> NDArray[np.float32]:
    """Area-averaged ``side_px`` square of a 2-D slice (stretched), in float32.

    Averaging blocks suppresses noise, so air around the head stays dark even where single
    pixels of noise are bright; used for background-slice selection.
    """
    values = np.asarray(image)
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float32)
    if values.shape == (side_px, side_px):
        return values.astype(np.float32)
    rows, cols = values.shape
    interpolation = cv2.INTER_AREA if rows * cols >= side_px * side_px else cv2.INTER_LINEAR
    return cv2.resize(values, (side_px, side_px), interpolation=interpolation).astype(np.float32)


def foreground_fraction(image: ArrayLike, threshold: float) -> float:
    """Share of pixels strictly above ``threshold``."""
    values = np.asarray(image)
    if values.size == 0:
        return 0.0
    return float(np.count_nonzero(values > threshold)) / float(values.size)
