"""Turn source images into stored training images: grayscale, optional head crop, resize.

Each output PNG is keyed by the source's content hash and the preprocessing config, so a rerun,
or another run with the same settings, finds it and does no work. The same function prepares
images at training, evaluation and prediction time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from braincls.common.atomic import write_bytes
from braincls.common.hashing import stable_hash
from braincls.common.layout import DataLayout
from braincls.common.tables import PREPROCESSED_COLUMNS
from braincls.config import PreprocessConfig
from braincls.data.images import decode_image, to_gray

logger = logging.getLogger(__name__)

#: Bump when the pixel operations change: it is part of every output key.
PREPROCESS_VERSION = "3"


class PreprocessError(ValueError):
    """A source image could not be preprocessed."""


def preprocess_key(config: PreprocessConfig) -> str:
    """Short key naming the folder of images made with ``config``."""
    return stable_hash({"config": config.model_dump(mode="json"), "version": PREPROCESS_VERSION})[
        :16
    ]


def head_mask(gray: np.ndarray, min_component_fraction: float = 0.1) -> np.ndarray:
    """The head: bright pixels (Otsu's threshold after a 5x5 blur) of the connected components
    at least ``min_component_fraction`` of the largest, holes filled.

    Smaller components (text labels, rulers, specks) are left out; a low slice that cuts the
    brain into several pieces keeps them all.
    """
    blurred = cv2.GaussianBlur(gray, (5, 5), 0)
    _, binary = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return np.ones(gray.shape, dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = 1 + np.flatnonzero(areas >= min_component_fraction * areas.max())
    mask = np.isin(labels, keep).astype(np.uint8) * 255
    # Fill holes: what the background, flooded from outside, does not reach is inside.
    flooded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    cv2.floodFill(flooded, None, (0, 0), 255)
    holes = cv2.bitwise_not(flooded)[1:-1, 1:-1]
    return (mask > 0) | (np.asarray(holes) > 0)


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return 0, mask.shape[0], 0, mask.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def head_box(gray: np.ndarray, min_component_fraction: float = 0.1) -> tuple[int, int, int, int]:
    """Bounding box (y0, y1, x0, x1) of :func:`head_mask`."""
    return _box(head_mask(gray, min_component_fraction))


def inner_mask(mask: np.ndarray, margin_fraction: float) -> np.ndarray:
    """``mask`` shrunk by ``margin_fraction`` of its equivalent diameter (an elliptical erosion):
    the head without its outer rim, where the skull and scalp are."""
    area = int(mask.sum())
    if area == 0 or margin_fraction <= 0:
        return mask
    radius = max(1, round(margin_fraction * 2.0 * np.sqrt(area / np.pi)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    shrunk = cv2.erode(mask.astype(np.uint8), kernel) > 0
    return shrunk if shrunk.any() else mask


def pad_to_square(gray: np.ndarray) -> np.ndarray:
    """Pad with zeros (background) on both sides of the short axis to a square."""
    height, width = gray.shape
    side = max(height, width)
    top = (side - height) // 2
    left = (side - width) // 2
    return cv2.copyMakeBorder(
        gray, top, side - height - top, left, side - width - left, cv2.BORDER_CONSTANT, value=0
    )


def standardise_intensity(
    gray: np.ndarray, low_percentile: float, high_percentile: float
) -> np.ndarray:
    """Map the tissue's ``low``..``high`` percentiles linearly to 0..255, clipping outside.

    Percentiles are taken over pixels brighter than the darkest 5% of the range (background is
    excluded, or a large black canvas would decide the scale). A constant image maps to zeros.
    """
    values = gray.astype(np.float32)
    floor = float(values.min()) + 0.05 * float(values.max() - values.min())
    tissue = values[values > floor]
    if tissue.size == 0:
        return np.zeros_like(gray, dtype=np.uint8)
    low, high = np.percentile(tissue, [low_percentile, high_percentile])
    if high <= low:
        return np.zeros_like(gray, dtype=np.uint8)
    scaled = (values - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def preprocess_array(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """The pixel pipeline: grayscale, head crop, intensity standardisation, square pad, resize.

    Every step but the grayscale conversion and the resize is configurable; the same function
    runs at training, evaluation and prediction time.
    """
    gray = to_gray(image)
    if config.brain_mask == "inner":
        mask = inner_mask(
            head_mask(gray, config.min_component_fraction), config.skull_margin_fraction
        )
        gray = np.where(mask, gray, 0).astype(gray.dtype)
        y0, y1, x0, x1 = _box(mask)
        gray = gray[y0:y1, x0:x1]
    elif config.crop_to_head:
        y0, y1, x0, x1 = head_box(gray, config.min_component_fraction)
        gray = gray[y0:y1, x0:x1]
    if config.intensity in ("percentile", "clahe"):
        gray = standardise_intensity(gray, config.low_percentile, config.high_percentile)
    if config.intensity == "clahe":
        gray = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(gray)
    if config.keep_aspect:
        gray = pad_to_square(gray)
    side = config.image_size_px
    interpolation = cv2.INTER_AREA if min(gray.shape) >= side else cv2.INTER_LINEAR
    return cv2.resize(gray, (side, side), interpolation=interpolation)


def preprocess_file(path: Path, config: PreprocessConfig) -> np.ndarray:
    """Read one image file and apply :func:`preprocess_array`."""
    image = decode_image(Path(path).read_bytes())
    if image is None:
        raise PreprocessError(f"{path}: not decodable as an image")
    return preprocess_array(image, config)


def encode_png(gray: np.ndarray) -> bytes:
    """PNG bytes of an 8-bit image (OpenCV writes no text chunks)."""
    ok, buffer = cv2.imencode(".png", gray)
    if not ok:
        raise PreprocessError("PNG encoding failed")
    return buffer.tobytes()


def preprocess_manifest(
    manifest: pd.DataFrame,
    layout: DataLayout,
    config: PreprocessConfig,
    *,
    overwrite: bool = False,
) -> tuple[pd.DataFrame, int]:
    """Store every image of ``manifest`` once; return the manifest with image columns and the
    number of images actually written (0 when all were stored before). ``overwrite`` writes
    every image again (a refresh)."""
    key = preprocess_key(config)
    folder = layout.images / key
    paths: list[str] = []
    means: list[float] = []
    stds: list[float] = []
    written = 0
    for source_path, digest in zip(manifest["source_path"], manifest["sha256"], strict=True):
        target = folder / str(digest)[:2] / f"{digest}.png"
        gray = (
            cv2.imread(str(target), cv2.IMREAD_GRAYSCALE)
            if target.is_file() and not overwrite
            else None
        )
        if gray is None:
            gray = preprocess_file(Path(str(source_path)), config)
            write_bytes(target, encode_png(gray))
            written += 1
        paths.append(layout.relative(target))
        means.append(float(gray.mean()))
        stds.append(float(gray.std()))
    frame = manifest.copy()
    frame["image_path"] = paths
    frame["mean_intensity"] = means
    frame["std_intensity"] = stds
    frame["image_size_px"] = config.image_size_px
    logger.info("preprocessed %d images into %s (%d new)", len(frame), folder, written)
    return frame.astype(PREPROCESSED_COLUMNS), written
