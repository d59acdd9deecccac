"""A 64-bit perceptual hash of an image's content, kept in every manifest's ``fingerprint``.

It identifies an image cheaply (reports, audits); grouping near-duplicates needs more than a
hash and is :mod:`braincls.data.duplicates`.
"""

from __future__ import annotations

import cv2
import numpy as np

_HASH_SIDE_PX = 32
_HASH_LOW_FREQ = 8
_CONTENT_THRESHOLD = 20


def content_box(gray: np.ndarray, threshold: int = _CONTENT_THRESHOLD) -> tuple[int, int, int, int]:
    """Bounding box (y0, y1, x0, x1) of pixels brighter than ``threshold``; whole image if none."""
    mask = gray > threshold
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return 0, gray.shape[0], 0, gray.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def perceptual_hash(gray: np.ndarray) -> int:
    """64-bit DCT perceptual hash of the image's content box.

    The image is cropped to its non-background box (so added borders and crops of black canvas do
    not matter), resized to 32x32, transformed with a 2-D DCT; the 8x8 lowest frequencies (DC
    excluded from the median) are compared with their median. Brightness and contrast changes and
    rescaling leave the hash (nearly) unchanged.
    """
    y0, y1, x0, x1 = content_box(gray)
    crop = gray[y0:y1, x0:x1]
    small = cv2.resize(crop, (_HASH_SIDE_PX, _HASH_SIDE_PX), interpolation=cv2.INTER_AREA)
    coefficients = cv2.dct(small.astype(np.float32))[:_HASH_LOW_FREQ, :_HASH_LOW_FREQ].flatten()
    median = np.median(coefficients[1:])
    bits = coefficients > median
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value
