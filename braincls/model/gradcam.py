"""Grad-CAM: which part of an image drove a CNN's prediction (Selvaraju et al., ICCV 2017).

For a convolutional layer with feature maps ``A_k``, the class score ``y`` is differentiated with
respect to every ``A_k``; the spatial mean of each gradient weighs its map, and the ReLU of the
weighted sum is the heatmap, upsampled to the input size and scaled to [0, 1] per image.

TensorFlow and Keras are imported inside the functions that need them, so importing this module
(for :func:`overlay_heatmap` or :func:`select_examples`) costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import keras

#: Grad-CAM categories of a binary classifier that :func:`select_examples` fills.
CATEGORIES: tuple[str, ...] = ("true positive", "false positive", "false negative")


class GradcamError(RuntimeError):
    """Grad-CAM cannot be computed for this model or input."""


def find_last_conv_layer(model: keras.Model) -> str:
    """Name of the layer Grad-CAM explains by default: the model's last spatial feature map.

    That is the last of the model's own layers (in graph order) whose output is 4-D
    (N, H, W, C): the last convolution or its activation in a plain CNN, the last block's output
    in a residual network. When that layer is a pooling layer, its input layer is taken instead,
    which has the same channels at a finer resolution. A flip-averaged model
    (:func:`braincls.model.factory.with_test_time_flip`) is searched through its unmirrored view; layers
    of other nested models (a backbone used as one layer) are not searched: pass ``layer_name``
    to :func:`gradcam_heatmaps` then.
    """
    import keras

    from braincls.model.factory import single_view

    model = single_view(model)
    chosen = None
    for layer in model.layers:
        if isinstance(layer, keras.Model | keras.layers.InputLayer):
            continue
        shape = getattr(getattr(layer, "output", None), "shape", None)
        if shape is not None and len(shape) == 4:
            chosen = layer
    if chosen is None:
        raise GradcamError(
            f"model {model.name!r} has no convolutional layer with a 4-D output among its own "
            "layers; pass layer_name= naming the feature-map layer to explain"
        )
    pooling = (
        keras.layers.MaxPooling2D,
        keras.layers.AveragePooling2D,
    )
    if isinstance(chosen, pooling):
        history = getattr(chosen.input, "_keras_history", None)
        source = getattr(history, "operation", None)
        if source is not None and any(layer is source for layer in model.layers):
            chosen = source
    return str(chosen.name)


def _prepare_batch(model: keras.Model, images: npt.ArrayLike) -> npt.NDArray[np.float32]:
    batch = np.asarray(images)
    input_shape = tuple(model.inputs[0].shape)
    if batch.ndim == len(input_shape) - 2:
        batch = batch[None, ...]  # a single image
    if batch.ndim == len(input_shape) - 1 and input_shape[-1] == 1:
        batch = batch[..., None]  # (N, H, W) grayscale for an (H, W, 1) input
    if batch.ndim != len(input_shape):
        raise GradcamError(
            f"images of shape {np.asarray(images).shape} do not fit the model input "
            f"{input_shape}; pass (N, H, W) or (N, H, W, C) arrays"
        )
    for axis, (expected, got) in enumerate(zip(input_shape[1:], batch.shape[1:], strict=True)):
        if expected is not None and expected != got:
            raise GradcamError(
                f"image axis {axis + 1} has size {got} but the model expects {expected} "
                f"(input shape {input_shape})"
            )
    return batch.astype(np.float32)


class GradcamExplainer:
    """Grad-CAM for one model, traced once and reused for every batch (a service explains one
    upload at a time; tracing per call would cost more than the explanation).

    ``target``, ``class_index`` and ``layer_name`` are as in :func:`gradcam_heatmaps`. Requires
    the TensorFlow backend.
    """

    def __init__(
        self,
        model: keras.Model,
        layer_name: str | None = None,
        *,
        target: Literal["positive", "negative"] = "positive",
        class_index: int | None = None,
    ) -> None:
        import keras

        backend = keras.backend.backend()
        if backend != "tensorflow":
            raise GradcamError(
                f"Grad-CAM here uses tf.GradientTape and needs the TensorFlow backend; Keras runs "
                f"on {backend!r} (set KERAS_BACKEND=tensorflow before importing keras)"
            )
        import tensorflow as tf

        from braincls.model.factory import single_view

        # A flip-averaged model is explained through its unmirrored view.
        self.model = single_view(model)
        name = layer_name or find_last_conv_layer(self.model)
        try:
            feature_layer = self.model.get_layer(name)
        except ValueError as error:
            raise GradcamError(f"model {self.model.name!r} has no layer named {name!r}") from error
        self.layer_name = name
        gradient_model = keras.Model(
            self.model.inputs, [feature_layer.output, self.model.outputs[0]]
        )

        # Traced as a graph, not run eagerly: TensorFlow 2.21's eager oneDNN convolution
        # gradient corrupts the heap (measured: 2 of 3 runs of a 48 px model aborted with
        # "free(): invalid size"); the graph kernels, which training uses, do not.
        @tf.function(reduce_retracing=True)
        def maps_and_gradients(chunk: Any) -> tuple[Any, Any]:
            with tf.GradientTape() as tape:
                feature_maps, predictions = gradient_model(chunk, training=False)
                if predictions.shape[-1] == 1:
                    score = predictions[:, 0]
                    if target == "negative":
                        score = 1.0 - score
                else:
                    if class_index is None:
                        index = tf.argmax(predictions, axis=-1)
                    else:
                        index = tf.fill([tf.shape(predictions)[0]], tf.cast(class_index, tf.int64))
                    score = tf.gather(predictions, index, axis=1, batch_dims=1)
            gradients = tape.gradient(score, feature_maps)
            if gradients is None:
                raise GradcamError(
                    f"the output does not depend on layer {name!r}; choose a layer on the path "
                    "from input to output"
                )
            return feature_maps, gradients

        self._maps_and_gradients = maps_and_gradients

    def heatmaps(self, images: npt.ArrayLike, batch_size: int = 32) -> npt.NDArray[np.float32]:
        """Heatmaps of shape (N, H, W), float32 in [0, 1] (see :func:`gradcam_heatmaps`)."""
        import tensorflow as tf

        if batch_size < 1:
            raise GradcamError(f"batch_size must be at least 1, got {batch_size}")
        batch = _prepare_batch(self.model, images)
        height, width = batch.shape[1], batch.shape[2]
        heatmaps: list[npt.NDArray[np.float32]] = []
        for start in range(0, batch.shape[0], batch_size):
            chunk = tf.convert_to_tensor(batch[start : start + batch_size])
            feature_maps, gradients = self._maps_and_gradients(chunk)
            if len(feature_maps.shape) != 4:
                raise GradcamError(
                    f"layer {self.layer_name!r} outputs shape {tuple(feature_maps.shape)}; "
                    "Grad-CAM needs a 4-D feature map (N, H, W, C)"
                )
            weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
            cam = tf.nn.relu(tf.reduce_sum(weights * feature_maps, axis=-1))
            cam = tf.image.resize(cam[..., None], (height, width), method="bilinear")[..., 0]
            peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
            cam = tf.math.divide_no_nan(cam, peak)
            heatmaps.append(np.asarray(cam, dtype=np.float32))
        return np.clip(np.concatenate(heatmaps, axis=0), 0.0, 1.0)


def gradcam_heatmaps(
    model: keras.Model,
    images: npt.ArrayLike,
    layer_name: str | None = None,
    *,
    target: Literal["positive", "negative"] = "positive",
    class_index: int | None = None,
    batch_size: int = 32,
) -> npt.NDArray[np.float32]:
    """Grad-CAM heatmaps of shape (N, H, W), float32 in [0, 1], at the input resolution.

    ``images`` are given exactly as the model takes them (uint8 is cast to float32; no other
    scaling is applied, so a model with a ``Rescaling`` layer gets raw pixel values). For a
    single sigmoid output the score is P(positive) (``target="positive"``) or 1 - P
    (``"negative"``); for a multi-unit output it is unit ``class_index`` (default: the
    predicted class of each image). An image whose score has zero gradient everywhere (e.g. a
    saturated sigmoid) gets an all-zero heatmap. Requires the TensorFlow backend. To explain
    many calls' worth of images with one model, keep a :class:`GradcamExplainer`.
    """
    if batch_size < 1:
        raise GradcamError(f"batch_size must be at least 1, got {batch_size}")
    explainer = GradcamExplainer(model, layer_name, target=target, class_index=class_index)
    return explainer.heatmaps(images, batch_size=batch_size)


def _to_gray_uint8(image: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        array = array[..., :3].mean(axis=-1)
    if array.ndim != 2:
        raise GradcamError(f"cannot show an image of shape {np.asarray(image).shape}")
    if array.dtype == np.uint8:
        return array
    values = array.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) / (high - low) * 255.0).astype(np.uint8)


def overlay_heatmap(
    image: npt.ArrayLike,
    heatmap: npt.ArrayLike,
    *,
    alpha: float = 0.4,
    colormap: str = "jet",
) -> npt.NDArray[np.uint8]:
    """RGB uint8 image: the grayscale ``image`` blended with the coloured ``heatmap``.

    A float image is min-max scaled for display; the heatmap (values in [0, 1], same height and
    width) is coloured with a matplotlib colormap and weighted by ``alpha``.
    """
    from matplotlib import colormaps

    gray = _to_gray_uint8(image)
    heat = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, 1.0)
    if heat.shape != gray.shape:
        raise GradcamError(f"heatmap of shape {heat.shape} does not match the image's {gray.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise GradcamError(f"alpha must lie in [0, 1], got {alpha}")
    coloured = colormaps[colormap](heat)[..., :3] * 255.0
    base = np.repeat(gray[..., None].astype(np.float64), 3, axis=-1)
    blended = (1.0 - alpha) * base + alpha * coloured
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def select_examples(
    y_true: npt.ArrayLike,
    y_prob: npt.ArrayLike,
    threshold: float,
    per_category: int,
) -> dict[str, list[int]]:
    """Indices of the most telling examples per category of :data:`CATEGORIES`.

    True positives and false positives are taken in order of decreasing probability (the most
    confident first), false negatives in order of increasing probability (the most confidently
    missed first). Ties are broken by index, so the choice is deterministic.
    """
    labels = np.asarray(y_true).astype(np.int64).ravel()
    probabilities = np.asarray(y_prob, dtype=np.float64).ravel()
    if labels.size != probabilities.size:
        raise GradcamError(f"{labels.size} labels but {probabilities.size} probabilities")
    predicted = probabilities >= threshold
    masks: dict[str, Any] = {
        "true positive": predicted & (labels == 1),
        "false positive": predicted & (labels == 0),
        "false negative": ~predicted & (labels == 1),
    }
    chosen: dict[str, list[int]] = {}
    for category in CATEGORIES:
        candidates = np.flatnonzero(masks[category])
        keys = probabilities[candidates]
        if category != "false negative":
            keys = -keys
        order = candidates[np.lexsort((candidates, keys))]
        chosen[category] = [int(index) for index in order[: max(per_category, 0)]]
    return chosen


def explain_examples(
    model: keras.Model,
    images: Mapping[int, npt.NDArray[Any]] | Sequence[npt.NDArray[Any]] | npt.NDArray[Any],
    probabilities: npt.ArrayLike,
    chosen: Mapping[str, Sequence[int]],
    layer_name: str | None = None,
) -> dict[str, list[tuple[npt.NDArray[Any], npt.NDArray[np.float32], str]]]:
    """Grad-CAM rows for :func:`braincls.evaluate.plots.plot_gradcam_grid`, one per category.

    ``chosen`` comes from :func:`select_examples`; ``images`` is indexable by those sample
    indices (the whole test array, or a dict holding only the chosen images) and holds images
    as the model takes them. All heatmaps are computed in one batch.
    """
    probability = np.asarray(probabilities, dtype=np.float64).ravel()
    flat = sorted({index for indices in chosen.values() for index in indices})
    by_index: dict[int, npt.NDArray[np.float32]] = {}
    if flat:
        stack = np.stack([np.asarray(images[index]) for index in flat])
        heatmaps = gradcam_heatmaps(model, stack, layer_name)
        by_index = {index: heatmaps[position] for position, index in enumerate(flat)}
    return {
        category: [
            (
                np.asarray(images[index]),
                by_index[index],
                f"#{index}  P(positive) = {probability[index]:.2f}",
            )
            for index in indices
        ]
        for category, indices in chosen.items()
    }
