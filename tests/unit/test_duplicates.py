"""Near-duplicate grouping: invariances, edited copies grouped, different slices kept apart."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from braincls.data import duplicates
from braincls.data.images import decode_image, to_gray
from devkit.phantom import generate_image_set


def read_gray(path: Path) -> np.ndarray:
    """A file as the importer sees it: decoded, 8-bit grayscale."""
    image = decode_image(path.read_bytes())
    assert image is not None, f"{path} is not decodable"
    return to_gray(image)


def synthetic_slice(seed: int = 0, side_px: int = 256) -> np.ndarray:
    """A head-like image: an ellipse of smooth random texture with a bright rim, on black."""
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.normal(0, 1, (side_px, side_px)).astype(np.float32), (0, 0), 3)
    texture = 120 + 40 * texture / texture.std()
    yy, xx = np.mgrid[:side_px, :side_px]
    radius = ((yy - side_px / 2) / (0.42 * side_px)) ** 2 + (
        (xx - side_px / 2) / (0.34 * side_px)
    ) ** 2
    image = np.where(radius < 1, texture, 0)
    image = np.where((radius > 0.85) & (radius < 1), 230, image)
    return np.clip(image, 0, 255).astype(np.uint8)


# --- pure functions -------------------------------------------------------------------------


def test_rank_normalise_ignores_any_increasing_intensity_map() -> None:
    image = synthetic_slice() // 2  # values 0..127, so that a strictly increasing map exists
    mask = image > 0
    lut = np.zeros(256, dtype=np.uint8)
    lut[:128] = np.rint(254 * (np.arange(128) / 127) ** 0.7)
    assert np.all(np.diff(lut[:128].astype(int)) > 0)  # strictly increasing: ranks cannot change
    np.testing.assert_array_equal(
        duplicates.rank_normalise(image, mask), duplicates.rank_normalise(lut[image], mask)
    )


def test_orient_and_inverse_orientation_round_trip() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for orientation in duplicates.ORIENTATIONS:
        turned = duplicates.orient(image, orientation)
        back = duplicates.orient(turned, duplicates.inverse_orientation(orientation))
        np.testing.assert_array_equal(back, image)
    np.testing.assert_array_equal(duplicates.orient(image, 2), image[::-1, ::-1])
    np.testing.assert_array_equal(duplicates.orient(image, 4), image[:, ::-1])


def test_describe_rejects_what_it_cannot_describe() -> None:
    with pytest.raises(
        ValueError, match=r"expected a 2-D uint8 grayscale image, got float32 \(8, 8\)"
    ):
        duplicates.describe(np.zeros((8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="image of 7x20 px is too small to describe"):
        duplicates.describe(np.zeros((20, 7), dtype=np.uint8))


def test_descriptor_shapes_and_fingerprint_hex() -> None:
    descriptor = duplicates.describe(synthetic_slice())
    assert descriptor.canonical.shape == (160, 160)
    assert descriptor.canonical.dtype == np.uint8
    assert descriptor.head_mask.shape == (160, 160)
    assert descriptor.thumbnail.shape == (256,)
    assert abs(float(np.linalg.norm(descriptor.thumbnail)) - 1.0) < 1e-5
    assert len(descriptor.fingerprint_hex) == 16
    assert int(descriptor.fingerprint_hex, 16) == descriptor.fingerprint
    # The head's nonzero box is 175 x 215 px; the head mask thresholds the image blurred with
    # sigma 1.3 px, which widens the bright rim by 2 px a side.
    assert descriptor.head_side_px == 179


def test_describe_is_deterministic() -> None:
    first = duplicates.describe(synthetic_slice(3))
    second = duplicates.describe(synthetic_slice(3))
    np.testing.assert_array_equal(first.canonical, second.canonical)
    assert first.fingerprint == second.fingerprint


def test_image_and_edited_copies_form_one_group_and_other_images_stay_apart() -> None:
    original = synthetic_slice(1)
    darker = np.rint(255 * (original / 255.0) ** 1.4).astype(np.uint8)
    cropped_scaled = cv2.resize(original[20:, 10:-15], (180, 190), interpolation=cv2.INTER_AREA)
    mirrored = np.ascontiguousarray(original[:, ::-1])
    others = [synthetic_slice(seed) for seed in (2, 3)]
    images = [original, darker, cropped_scaled, mirrored, *others]
    labels = duplicates.group_near_duplicates([duplicates.describe(i) for i in images])
    np.testing.assert_array_equal(labels, [0, 0, 0, 0, 1, 2])


def test_group_labels_of_no_links_are_one_per_image() -> None:
    labels = duplicates.group_near_duplicates(
        [duplicates.describe(synthetic_slice(seed)) for seed in range(4)]
    )
    np.testing.assert_array_equal(labels, [0, 1, 2, 3])


def test_no_two_slices_of_a_phantom_head_are_grouped(tmp_path: Path) -> None:
    """The phantom's heads give four slices each: alike, never copies."""
    out = tmp_path / "phantom"
    generate_image_set(out, n_images=200, seed=0)
    table = pd.read_csv(out / "groups.csv")
    descriptors = [duplicates.describe(read_gray(out / p)) for p in table["relative_path"]]
    labels = duplicates.group_near_duplicates(descriptors)
    assert table["group"].nunique() == 50  # 50 heads of 4 slices each
    assert np.unique(labels).size == 200
