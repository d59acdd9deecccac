"""Custom Keras layers (backend-agnostic, through ``keras.ops``) used by braincls models.

Imported for their registration: load a saved braincls model after ``import braincls.model.layers``.
Importing this module imports Keras (and its backend), so nothing light imports it.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="braincls")
class RandomGamma(layers.Layer):
    """Random gamma on 0..255 images: ``255 * (x / 255) ** gamma``, gamma = 2 ** U(-m, m).

    Models MR contrast differences between scanners and sequences. Identity at inference.
    """

    def __init__(self, max_log2: float = 0.3, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_log2 = float(max_log2)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training or self.max_log2 == 0:
            return inputs
        batch = ops.shape(inputs)[0]
        log2 = keras.random.uniform(
            (batch, 1, 1, 1), -self.max_log2, self.max_log2, seed=self.seed_generator
        )
        scaled = ops.clip(inputs / 255.0, 0.0, 1.0)
        return 255.0 * ops.power(scaled, ops.power(2.0, log2))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_log2": self.max_log2, "seed": self.seed}


@keras.saving.register_keras_serializable(package="braincls")
class RandomBlur(layers.Layer):
    """Blur a random share of the images with a 3x3 binomial kernel (lower-resolution scanners),
    edges replicated.

    Identity at inference.
    """

    def __init__(self, probability: float = 0.2, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.probability = float(probability)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training or self.probability == 0:
            return inputs
        # Separable [1, 2, 1] / 4 along rows, then columns, edges replicated: three shifted
        # sums per axis, several times cheaper on CPU than a one-channel 2-D convolution.
        padded = ops.pad(inputs, [[0, 0], [1, 1], [0, 0], [0, 0]], mode="symmetric")
        rows = (padded[:, :-2] + 2.0 * padded[:, 1:-1] + padded[:, 2:]) / 4.0
        padded = ops.pad(rows, [[0, 0], [0, 0], [1, 1], [0, 0]], mode="symmetric")
        blurred = (padded[:, :, :-2] + 2.0 * padded[:, :, 1:-1] + padded[:, :, 2:]) / 4.0
        batch = ops.shape(inputs)[0]
        chosen = keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator) < self.probability
        return ops.where(chosen, blurred, inputs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "probability": self.probability, "seed": self.seed}


@keras.saving.register_keras_serializable(package="braincls")
class MirrorLeftRight(layers.Layer):
    """The left-right mirror image (always, in training and at inference): the second view of
    test-time flip averaging."""

    def call(self, inputs: Any) -> Any:
        return ops.flip(inputs, axis=2)


@keras.saving.register_keras_serializable(package="braincls")
class RandomBiasField(layers.Layer):
    """A smooth multiplicative intensity field per image (MR coil and bias-field variation):
    ``x * exp(f)``, ``f`` a bilinear upsampling of a ``grid`` x ``grid`` field of U(-m, m).

    Identity at inference.
    """

    def __init__(
        self, max_log_gain: float = 0.3, grid: int = 4, seed: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.max_log_gain = float(max_log_gain)
        self.grid = int(grid)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training or self.max_log_gain == 0:
            return inputs
        batch = ops.shape(inputs)[0]
        coarse = keras.random.uniform(
            (batch, self.grid, self.grid, 1),
            -self.max_log_gain,
            self.max_log_gain,
            seed=self.seed_generator,
        )
        height, width = inputs.shape[1], inputs.shape[2]
        field = ops.image.resize(coarse, (height, width), interpolation="bilinear")
        return ops.clip(inputs * ops.exp(field), 0.0, 255.0)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "max_log_gain": self.max_log_gain,
            "grid": self.grid,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="braincls")
class RandomLowResolution(layers.Layer):
    """For a random share of the images, downsample by ``factor`` and upsample back (a scanner
    with coarser in-plane resolution or thicker slices). Identity at inference."""

    def __init__(
        self, probability: float = 0.2, factor: float = 2.0, seed: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.probability = float(probability)
        self.factor = float(factor)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training or self.probability == 0 or self.factor <= 1:
            return inputs
        height, width = inputs.shape[1], inputs.shape[2]
        small = (max(1, round(height / self.factor)), max(1, round(width / self.factor)))
        coarse = ops.image.resize(inputs, small, interpolation="bilinear", antialias=True)
        restored = ops.image.resize(coarse, (height, width), interpolation="bilinear")
        batch = ops.shape(inputs)[0]
        chosen = keras.random.uniform((batch, 1, 1, 1), seed=self.seed_generator) < self.probability
        return ops.where(chosen, restored, inputs)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "probability": self.probability,
            "factor": self.factor,
            "seed": self.seed,
        }
