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


def test_bias_field_is_smooth_bounded_and_identity_at_inference() -> None:
    from braincls.model.layers import RandomBiasField

    images = np.full((4, 32, 32, 1), 100.0, np.float32)
    out = np.asarray(RandomBiasField(0.3, seed=2)(images, training=True))
    gain = out / 100.0
    assert gain.min() >= np.exp(-0.3) - 1e-4 and gain.max() <= np.exp(0.3) + 1e-4
    # Smooth: the log gain changes by at most 2 * 0.3 over one grid cell (8 px here), so
    # neighbouring pixels differ by at most 0.6 / 8 * exp(0.3) = 0.10 in gain.
    assert np.abs(np.diff(gain, axis=1)).max() < 0.11
    assert gain.std() > 0.01  # and it does something
    assert not np.allclose(gain[0], gain[1])  # one field per image
    assert np.array_equal(np.asarray(RandomBiasField(0.3, seed=2)(images, training=False)), images)


def test_low_resolution_blurs_the_chosen_images_only() -> None:
    from braincls.model.layers import RandomLowResolution

    checker = (np.indices((32, 32)).sum(axis=0) % 2 * 255.0).astype(np.float32)
    images = np.stack([checker] * 3)[..., None]
    out = np.asarray(RandomLowResolution(1.0, 2.0, seed=0)(images, training=True))
    # A one-pixel checkerboard does not survive halving the resolution.
    assert out.std() < 0.2 * images.std()
    kept = np.asarray(RandomLowResolution(0.0, 2.0, seed=0)(images, training=True))
    assert np.array_equal(kept, images)
    assert np.array_equal(
        np.asarray(RandomLowResolution(1.0, 2.0, seed=0)(images, training=False)), images
    )
