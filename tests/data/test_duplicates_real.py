"""Near-duplicate grouping on real MRI: Br35H's known copy pairs, BraTS copies and neighbours."""

from __future__ import annotations

from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest

from braincls.data import duplicates
from braincls.data.images import decode_image, to_gray

#: Copy pairs (one slice re-saved) that an independent leak check found on two sides of the
#: previous grouped split of Br35H.
EXAMPLE_PAIRS = (
    ("yes/y1001.jpg", "yes/y710.jpg"),
    ("yes/y1080.jpg", "yes/y807.jpg"),
    ("yes/y882.jpg", "yes/y547.jpg"),
    ("yes/y887.jpg", "yes/y1165.jpg"),
)
BRATS_CASES = ("Brats18_2013_11_1", "Brats18_TCIA01_201_1", "Brats18_TCIA03_265_1")
LEVEL_STEP = 15
MIN_BRAIN_PX = 2000


def _read(path: Path) -> np.ndarray:
    image = decode_image(path.read_bytes())
    assert image is not None, path
    return to_gray(image)


def test_br35h_example_copy_pairs_are_one_group_each(br35h_dir: Path) -> None:
    paths = [path for pair in EXAMPLE_PAIRS for path in pair]
    labels = duplicates.group_near_duplicates(
        [duplicates.describe(_read(br35h_dir / p)) for p in paths]
    )
    # Each pair is one group; the four slices differ, so four groups.
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2, 3, 3])


def _brats_slices(volume: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Levels with brain on them and 3 mm above, and the volume as 8-bit axial slices."""
    white = float(np.percentile(volume[volume > 0], 99.5))
    slices = np.clip(np.moveaxis(volume, 2, 0).transpose(0, 2, 1) / white * 255.0, 0, 255)
    brain_px = (volume > 0).sum(axis=(0, 1))
    levels = [
        k
        for k in range(20, volume.shape[2] - 4, LEVEL_STEP)
        if brain_px[k] > MIN_BRAIN_PX and brain_px[k + 3] > MIN_BRAIN_PX
    ]
    return levels, np.rint(slices).astype(np.uint8)


def _resaved(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy as an editor re-saves it: cropped, rescaled, gamma/contrast/brightness, JPEG."""
    height_px, width_px = gray.shape
    top, bottom, left, right = (
        rng.uniform(0, 0.15, 4) * [height_px, height_px, width_px, width_px]
    ).astype(int)
    cropped = gray[top : height_px - bottom, left : width_px - right]
    scale = float(rng.uniform(0.6, 1.5))
    size = (max(8, round(cropped.shape[1] * scale)), max(8, round(cropped.shape[0] * scale)))
    resized = cv2.resize(
        cropped, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    )
    values = resized.astype(np.float32) / 255.0
    head = values > 0.02
    while True:
        gamma, contrast, brightness = (
            rng.uniform(0.6, 1.6),
            rng.uniform(0.7, 1.4),
            rng.uniform(-0.1, 0.1),
        )
        edited = values**gamma * contrast + brightness
        if float(((edited >= 1) | (edited <= 0))[head].mean()) <= 0.15:
            break
    image = np.rint(np.clip(edited, 0, 1) * 255).astype(np.uint8)
    _, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 96))])
    return np.asarray(cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE))


@pytest.mark.parametrize("case", BRATS_CASES)
def test_brats_copies_are_grouped_and_slices_1_to_3_mm_apart_are_not(
    brats_dir: Path, case: str
) -> None:
    rng = np.random.default_rng(7)
    volume = np.asarray(nib.load(brats_dir / case / f"{case}_t2.nii.gz").dataobj, dtype=np.float32)
    levels, slices = _brats_slices(volume)
    assert len(levels) >= 5
    for level in levels[1:-1]:
        copy = _resaved(slices[level], rng)
        turned = np.ascontiguousarray(np.rot90(_resaved(slices[level], rng), 2))
        images = [slices[level], copy, turned, *(slices[level + d] for d in (1, 2, 3))]
        labels = duplicates.group_near_duplicates([duplicates.describe(i) for i in images])
        np.testing.assert_array_equal(labels, [0, 0, 0, 1, 2, 3], err_msg=f"{case} level {level}")
