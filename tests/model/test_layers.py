"""The custom augmentation layers: exact outputs in training, identity at inference."""

from __future__ import annotations

import numpy as np

from braincls.model.layers import RandomBlur, RandomGamma


def _images() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (3, 7, 5, 1)).astype(np.float32)


def test_blur_is_the_binomial_kernel_with_replicated_edges() -> None:
    images = _images()
    padded = np.pad(images, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="edge").astype(np.float64)
    kernel = np.outer([1, 2, 1], [1, 2, 1]) / 16.0
    expected = np.zeros_like(images, dtype=np.float64)
    for dy in range(3):
        for dx in range(3):
            expected += kernel[dy, dx] * padded[:, dy : dy + 7, dx : dx + 5]
    blurred = np.asarray(RandomBlur(1.0, seed=1)(images, training=True))
    np.testing.assert_allclose(blurred, expected, atol=1e-3)
    assert np.array_equal(np.asarray(RandomBlur(1.0, seed=1)(images, training=False)), images)
    assert np.array_equal(np.asarray(RandomBlur(0.0, seed=1)(images, training=True)), images)


def test_gamma_keeps_the_range_and_black_and_white() -> None:
    images = _images()
    images[:, 0, 0, 0] = 0.0
    images[:, 0, 1, 0] = 255.0
    out = np.asarray(RandomGamma(0.5, seed=3)(images, training=True))
    assert out.min() >= 0.0 and out.max() <= 255.0 + 1e-3
    np.testing.assert_allclose(out[:, 0, 0, 0], 0.0, atol=1e-4)
    np.testing.assert_allclose(out[:, 0, 1, 0], 255.0, rtol=1e-5)
    # Per image, one gamma: the map from input to output is monotonic.
    for source, result in zip(images, out, strict=True):
        order = np.argsort(source.ravel())
        assert np.all(np.diff(result.ravel()[order]) >= -1e-3)
    assert not np.allclose(out, images)
    assert np.array_equal(np.asarray(RandomGamma(0.5, seed=3)(images, training=False)), images)
