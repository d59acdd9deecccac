"""Grad-CAM on a tiny trained CNN: the heatmap must point at the evidence the model learned."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from braincls.evaluate.plots import plot_gradcam_grid
from braincls.model.gradcam import (
    GradcamError,
    explain_examples,
    find_last_conv_layer,
    gradcam_heatmaps,
    select_examples,
)

SIDE_PX = 32
# The positive class carries a bright square here (rows, columns); negatives never do.
SQUARE = (slice(4, 12), slice(20, 28))


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, size=(n, SIDE_PX, SIDE_PX), dtype=np.uint8)
    labels = np.arange(n) % 2
    images[labels == 1, SQUARE[0], SQUARE[1]] = 230
    return images, labels


@pytest.fixture(scope="module")
def trained_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIDE_PX, SIDE_PX, 1), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_1")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="p_tumor")(x)
    model = keras.Model(inputs, outputs, name="tiny_cnn")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    images, labels = _images(256, seed=1)
    model.fit(images[..., None], labels, epochs=8, batch_size=32, verbose=0)
    return model


def test_tiny_model_learned_the_task(trained_model: keras.Model) -> None:
    images, labels = _images(64, seed=2)
    probabilities = trained_model.predict(images[..., None], verbose=0)[:, 0]
    assert ((probabilities >= 0.5) == labels).mean() == 1.0


def test_heatmap_peaks_on_the_square(trained_model: keras.Model) -> None:
    images, labels = _images(16, seed=3)
    positives = images[labels == 1]
    # (N, H, W) uint8 without the channel axis is accepted, as stored on disk.
    heatmaps = gradcam_heatmaps(trained_model, positives)
    assert heatmaps.shape == (8, SIDE_PX, SIDE_PX)
    assert heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0.0 and heatmaps.max() == pytest.approx(1.0)
    inside = np.zeros((SIDE_PX, SIDE_PX), bool)
    inside[SQUARE] = True
    for heatmap in heatmaps:
        row, column = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        # The 16x16 feature map is upsampled: allow the peak one feature-map cell (2 px) off.
        assert 4 - 2 <= row < 12 + 2 and 20 - 2 <= column < 28 + 2, (row, column)
        assert heatmap[inside].mean() > 3 * heatmap[~inside].mean()


def test_last_conv_layer_is_found_and_can_be_overridden(trained_model: keras.Model) -> None:
    assert find_last_conv_layer(trained_model) == "conv_2"
    images, _ = _images(2, seed=4)
    early = gradcam_heatmaps(trained_model, images[..., None], layer_name="conv_1")
    assert early.shape == (2, SIDE_PX, SIDE_PX)
    with pytest.raises(GradcamError, match="model 'tiny_cnn' has no layer named 'conv_9'"):
        gradcam_heatmaps(trained_model, images, layer_name="conv_9")


def test_default_layer_of_seed_like_and_residual_models() -> None:
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv_4")(inputs)
    x = keras.layers.MaxPooling2D(2, name="pool_4")(x)
    x = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(x))
    # The pooled map's input (same channels, finer grid) is explained, not the pooling layer.
    assert find_last_conv_layer(keras.Model(inputs, x)) == "conv_4"

    inputs = keras.Input((16, 16, 1))
    y = keras.layers.Conv2D(4, 3, padding="same", name="block_conv")(inputs)
    shortcut = keras.layers.Conv2D(4, 1, name="block_proj")(inputs)
    y = keras.layers.Activation("relu", name="block_out")(keras.layers.Add()([y, shortcut]))
    y = keras.layers.GlobalAveragePooling2D()(y)
    # The block's output, not whichever convolution happens to come last in the layer list.
    residual = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(y))
    assert find_last_conv_layer(residual) == "block_out"


def test_wrong_image_size_is_explained(trained_model: keras.Model) -> None:
    with pytest.raises(GradcamError) as error:
        gradcam_heatmaps(trained_model, np.zeros((1, 16, 16), np.uint8))
    assert str(error.value) == (
        "image axis 1 has size 16 but the model expects 32 (input shape (None, 32, 32, 1))"
    )


def test_other_backends_are_refused(
    trained_model: keras.Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(GradcamError, match="needs the TensorFlow backend; Keras runs on 'jax'"):
        gradcam_heatmaps(trained_model, np.zeros((1, SIDE_PX, SIDE_PX), np.uint8))


def test_model_without_feature_maps_is_refused() -> None:
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs), name="mlp")
    with pytest.raises(GradcamError, match="model 'mlp' has no convolutional layer"):
        find_last_conv_layer(model)


def test_explained_examples_draw_a_grid(trained_model: keras.Model, tmp_path: Path) -> None:
    images, labels = _images(12, seed=5)
    probabilities = trained_model.predict(images[..., None], verbose=0)[:, 0]
    chosen = select_examples(labels, probabilities, threshold=0.5, per_category=2)
    assert len(chosen["true positive"]) == 2
    assert chosen["false positive"] == [] and chosen["false negative"] == []
    rows = explain_examples(trained_model, images, probabilities, chosen)
    assert [len(rows[c]) for c in ("true positive", "false positive", "false negative")] == [
        2,
        0,
        0,
    ]
    image, heatmap, caption = rows["true positive"][0]
    index = chosen["true positive"][0]
    assert caption == f"#{index}  P(positive) = {probabilities[index]:.2f}"
    assert heatmap.shape == image.shape == (SIDE_PX, SIDE_PX)
    path = plot_gradcam_grid(rows, tmp_path / "gradcam.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flip_averaged_model_is_explained_through_its_unmirrored_view(
    trained_model: keras.Model, tmp_path: Path
) -> None:
    from braincls.model.factory import single_view, with_test_time_flip
    from braincls.model.saved import load_model

    averaged = with_test_time_flip(trained_model)
    averaged.save(tmp_path / "averaged.keras")
    loaded = load_model(tmp_path / "averaged.keras")
    images, _ = _images(8, seed=5)
    batch = images[..., None].astype(np.float32)
    plain = trained_model.predict(batch, verbose=0)
    mirrored = trained_model.predict(batch[:, :, ::-1], verbose=0)
    np.testing.assert_allclose(loaded.predict(batch, verbose=0), (plain + mirrored) / 2, atol=1e-6)
    # Mirror-invariant: the image and its mirror get the same probability.
    np.testing.assert_allclose(
        loaded.predict(batch[:, :, ::-1], verbose=0), loaded.predict(batch, verbose=0), atol=1e-6
    )
    assert single_view(loaded).name == "tiny_cnn"
    assert single_view(trained_model) is trained_model
    assert find_last_conv_layer(loaded) == "conv_2"
    np.testing.assert_allclose(
        gradcam_heatmaps(loaded, images[:3]), gradcam_heatmaps(trained_model, images[:3]), atol=1e-5
    )
