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
PREPROCESS_VERSION = "2"


class PreprocessError(ValueError):
    """A source image could not be preprocessed."""


def preprocess_key(config: PreprocessConfig) -> str:
    """Short key naming the folder of images made with ``config``."""
    return stable_hash({"config": config.model_dump(mode="json"), "version": PREPROCESS_VERSION})[
        :16
    ]


def head_box(gray: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (y0, y1, x0, x1) of the largest bright connected component (the head).

    Otsu's threshold separates head from background; the largest 8-connected component is kept
    so that text labels, rulers and specks around the head do not widen the box.
    """
    blurred = cv2.GaussianBlur(gray, (5, 5), 0)
    _, mask = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return 0, gray.shape[0], 0, gray.shape[1]
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, width, height = (int(v) for v in stats[largest, :4])
    return y, y + height, x, x + width


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
    if config.crop_to_head:
        y0, y1, x0, x1 = head_box(gray)
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
