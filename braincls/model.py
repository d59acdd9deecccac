"""Model factory: every architecture built with the Keras Functional API by one function.

Models take uint8-range grayscale images of shape (size, size, 1) and rescale inside the graph,
so the same stored PNGs feed training, evaluation and prediction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

MODEL_NAMES = ("seed_cnn",)


class UnknownModelError(ValueError):
    """The requested architecture does not exist."""


def build_model(
    name: str = "seed_cnn",
    *,
    image_size_px: int = 128,
    dropout_rate: float = 0.5,
    **_: Any,
) -> keras.Model:
    """Build an uncompiled binary classifier (sigmoid output = P(tumor)).

    ``seed_cnn`` is the seed project's network: three Conv2D(3x3, ReLU) + MaxPool blocks with 32,
    64 and 128 filters, Flatten, Dense(128, ReLU), Dropout, Dense(1, sigmoid).
    """
    if name not in MODEL_NAMES:
        raise UnknownModelError(f"unknown model '{name}'; choose one of: {', '.join(MODEL_NAMES)}")
    import keras
    from keras import layers

    inputs = keras.Input(shape=(image_size_px, image_size_px, 1), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, activation="relu", name=f"conv_{filters}")(x)
        x = layers.MaxPooling2D(2, name=f"pool_{filters}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout_rate, name="dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", dtype="float32", name="p_tumor")(x)
    return keras.Model(inputs, outputs, name=name)
