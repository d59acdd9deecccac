"""Preprocessing: exact geometry of crop, pad and resize; stored once per content and config."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from braincls.common.layout import DataLayout
from braincls.config import PreprocessConfig
from braincls.data.preprocess import (
    head_box,
    pad_to_square,
    preprocess_array,
    preprocess_key,
    preprocess_manifest,
    standardise_intensity,
)


def test_pad_to_square_centres_the_image() -> None:
    image = np.full((2, 4), 9, np.uint8)
    padded = pad_to_square(image)
    assert padded.shape == (4, 4)
    assert padded[0].tolist() == [0, 0, 0, 0]
    assert padded[1].tolist() == [9, 9, 9, 9]
    assert padded[3].tolist() == [0, 0, 0, 0]


def test_head_box_ignores_small_specks() -> None:
    image = np.zeros((100, 100), np.uint8)
    cv2.circle(image, (60, 50), 20, 200, -1)
    image[2:4, 2:4] = 255  # a speck (e.g. a burnt-in label) in the corner
    y0, y1, x0, x1 = head_box(image)
    # The 5x5 blur before Otsu trims the one-pixel anti-aliased rim of the disc.
    assert (y0, y1, x0, x1) == (31, 70, 41, 80)


def test_preprocess_array_sizes_and_grayscale() -> None:
    colour = np.zeros((60, 90, 3), np.uint8)
    colour[10:50, 20:70] = (10, 200, 60)
    seed_way = {"crop_to_head": False, "keep_aspect": False, "intensity": "none"}
    out = preprocess_array(colour, PreprocessConfig(image_size_px=32, **seed_way))
    assert out.shape == (32, 32) and out.dtype == np.uint8
    padded = preprocess_array(
        colour, PreprocessConfig(image_size_px=30, crop_to_head=False, intensity="none")
    )
    # 60x90 padded to 90x90 puts 15 background rows above: 5 of 30 output rows.
    assert padded.shape == (30, 30)
    assert padded[:4].max() == 0
    cropped = preprocess_array(
        colour, PreprocessConfig(image_size_px=20, keep_aspect=False, intensity="none")
    )
    assert cropped.min() > 0  # the crop removed every background pixel


def test_preprocess_manifest_stores_each_image_once(tmp_path: Path) -> None:
    sources = []
    for i in range(3):
        path = tmp_path / f"src{i}.png"
        cv2.imwrite(str(path), np.full((40, 40), 50 * (i + 1), np.uint8))
        sources.append(path)
    manifest = pd.DataFrame(
        {"source_path": [str(p) for p in sources], "sha256": ["aa11", "bb22", "cc33"]}
    )
    layout = DataLayout(tmp_path / "root")
    config = PreprocessConfig(image_size_px=16, crop_to_head=False, intensity="none")
    frame, written = preprocess_manifest(manifest, layout, config)
    assert written == 3
    key = preprocess_key(config)
    assert frame["image_path"].tolist() == [
        f"images/{key}/aa/aa11.png",
        f"images/{key}/bb/bb22.png",
        f"images/{key}/cc/cc33.png",
    ]
    assert frame["mean_intensity"].tolist() == [50.0, 100.0, 150.0]
    assert frame["std_intensity"].tolist() == [0.0, 0.0, 0.0]
    again, written_again = preprocess_manifest(manifest, layout, config)
    assert written_again == 0
    assert again.equals(frame)
    _, written_other = preprocess_manifest(
        manifest, layout, PreprocessConfig(image_size_px=24, crop_to_head=False, intensity="none")
    )
    assert written_other == 3


def test_standardise_intensity_maps_tissue_percentiles() -> None:
    # Background 0 is excluded; tissue values 10..110 map linearly so that p0 -> 0, p100 -> 255.
    image = np.zeros((4, 30), np.uint8)
    image[1:3, 5:] = np.linspace(10, 110, 25).astype(np.uint8)
    out = standardise_intensity(image, 0.0, 100.0)
    assert out[0].tolist() == [0] * 30
    assert out[1, 5] == 0 and out[1, 29] == 255
    assert int(image[1, 16]) == 55 and out[1, 16] == 115  # (55 - 10) * 255 / 100 = 114.75
    assert standardise_intensity(np.full((3, 3), 7, np.uint8), 1, 99).tolist() == [[0] * 3] * 3


def test_default_preprocessing_removes_canvas_and_brightness_signal() -> None:
    """The same head on a bigger, brighter canvas gives (nearly) the same stored image."""
    head = np.zeros((100, 80), np.uint8)
    cv2.ellipse(head, (40, 50), (30, 42), 0, 0, 360, 120, -1)
    cv2.circle(head, (45, 40), 8, 200, -1)
    canvas = cv2.copyMakeBorder(head, 60, 60, 20, 90, cv2.BORDER_CONSTANT, value=0)
    brighter = cv2.convertScaleAbs(canvas, alpha=1.2, beta=0)
    config = PreprocessConfig(image_size_px=32)
    a = preprocess_array(head, config).astype(int)
    b = preprocess_array(brighter, config).astype(int)
    assert np.abs(a - b).mean() < 2.0


def test_head_mask_keeps_every_large_piece_and_fills_holes() -> None:
    from braincls.data.preprocess import head_mask

    image = np.zeros((100, 100), np.uint8)
    cv2.circle(image, (30, 50), 15, 200, -1)  # two lobes of a low slice
    cv2.circle(image, (72, 50), 12, 200, -1)
    cv2.circle(image, (30, 50), 5, 0, -1)  # a dark hole (a ventricle) inside a lobe
    image[2:4, 2:4] = 255  # a speck
    mask = head_mask(image)
    assert mask[50, 30] and mask[50, 72]  # both lobes, hole filled
    assert not mask[3, 3]  # the speck is not head
    assert head_box(image) == (36, 65, 16, 84)  # rows 36..64, columns 16..83


def test_inner_mask_shrinks_the_head_by_its_margin() -> None:
    from braincls.data.preprocess import head_mask, inner_mask

    image = np.zeros((200, 200), np.uint8)
    cv2.circle(image, (100, 100), 80, 180, -1)
    mask = head_mask(image)
    inner = inner_mask(mask, 0.1)  # 10% of a 160 px diameter: 16 px
    rows = np.flatnonzero(inner[:, 100])
    assert rows[0] - np.flatnonzero(mask[:, 100])[0] == 16
    skull_free = preprocess_array(
        image, PreprocessConfig(image_size_px=64, brain_mask="inner", intensity="none")
    )
    assert skull_free.shape == (64, 64)
