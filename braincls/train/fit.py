"""Training: a tf.data pipeline from the stored PNGs, a seeded Keras fit, an atomic model save.

Training resumes after a crash: Keras' BackupAndRestore keeps the last finished epoch under the
run's working folder, and a retried or restarted training call continues from there.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from braincls import __version__
from braincls.common.atomic import atomic_dir, write_json
from braincls.config import TrainConfig
from braincls.common.tables import SPLIT_COLUMN

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
RECORD_FILE = "train_record.json"
EpochCallback = Callable[[int, int, dict[str, float]], None]


class TrainingError(RuntimeError):
    """Training cannot start or did not produce a model."""


@dataclass(frozen=True)
class TrainResult:
    """Where the trained model and its record are."""

    model_dir: Path
    model_path: Path
    record_path: Path
    history: dict[str, list[float]]
    epochs_run: int
    seconds: float


def set_seeds(seed: int) -> None:
    """Seed Python, NumPy and Keras (which seeds the backend) with one number."""
    import keras

    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def class_weights(labels: list[int]) -> dict[int, float]:
    """Weights inversely proportional to class frequency, mean 1 over samples (sklearn's
    'balanced' rule: ``n_samples / (n_classes * count)``)."""
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    total = counts.sum()
    return {int(v): float(total / (len(values) * c)) for v, c in zip(values, counts, strict=True)}


def accelerators() -> list[str]:
    """Names of the GPUs the Keras backend sees (empty on CPU)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform == "gpu"]
    if backend == "torch":
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return []


def learning_rate(config: TrainConfig, steps_per_epoch: int | None) -> Any:
    """The optimizer's learning rate: a float, or for ``lr_schedule='cosine'`` a per-step
    schedule (linear warm-up from ``learning_rate / 10`` over ``warmup_epochs``, then cosine
    decay to zero at the end of ``epochs``). Without ``steps_per_epoch`` (a model compiled for
    anything but fitting) the constant rate."""
    import keras

    if config.lr_schedule != "cosine" or not steps_per_epoch:
        return config.learning_rate
    total = steps_per_epoch * config.epochs
    warmup = min(steps_per_epoch * config.warmup_epochs, total - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 10,
        decay_steps=total - warmup,
        warmup_target=config.learning_rate,
        warmup_steps=warmup,
    )


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU has AMX-BF16 tiles (Intel Sapphire Rapids and later; Linux only)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(
        line.startswith("flags") and "amx_bf16" in line.split() for line in cpuinfo.splitlines()
    )


def onednn_enabled() -> bool:
    """Whether TensorFlow's oneDNN kernels are on (read by TensorFlow at import from
    ``TF_ENABLE_ONEDNN_OPTS``; on by default on x86 Linux)."""
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").strip().lower() not in ("0", "false")


def precision_policy(setting: str, gpus: list[str]) -> str:
    """The Keras dtype policy for ``TrainConfig.mixed_precision`` on this machine.

    bfloat16 pays only with oneDNN on a CPU with AMX (measured here: about 2x float32 with
    oneDNN); without oneDNN, TensorFlow's bfloat16 convolutions are some 15x slower than float32.
    """
    import keras

    if setting == "off":
        return "float32"
    if setting == "on":
        return "mixed_float16"
    if setting == "bfloat16":
        return "mixed_bfloat16"
    if gpus:
        return "mixed_float16"
    if keras.backend.backend() == "tensorflow" and onednn_enabled() and cpu_has_amx_bf16():
        return "mixed_bfloat16"
    return "float32"


def build_for_training(
    config: TrainConfig, image_size_px: int, steps_per_epoch: int | None = None
) -> Any:
    """The model of ``config``, compiled as training compiles it (AdamW with the configured
    learning-rate schedule, binary cross-entropy, accuracy and ROC AUC)."""
    import keras

    from braincls.model.factory import build_model

    model = build_model(
        config.model,
        image_size_px=image_size_px,
        dropout_rate=config.dropout_rate,
        base_filters=config.base_filters,
        augment=config.augment,
        seed=config.seed,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(
            learning_rate=learning_rate(config, steps_per_epoch), weight_decay=config.weight_decay
        ),
        loss="binary_crossentropy",
        metrics=["accuracy", keras.metrics.AUC(name="auc")],
    )
    return model


def _split_arrays(frame: pd.DataFrame, split: str, data_root: Path) -> tuple[list[str], list[int]]:
    part = frame[frame[SPLIT_COLUMN] == split]
    paths = [str(data_root / str(p)) for p in part["image_path"]]
    return paths, [int(v) for v in part["label_index"]]


def train_model(
    dataset: pd.DataFrame,
    data_root: Path,
    model_dir: Path,
    work_dir: Path,
    config: TrainConfig,
    *,
    image_size_px: int,
    manifest_sha256: str,
    class_names: list[str],
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Train ``config.model`` on the ``train`` split, validate on ``val`` every epoch.

    Early stopping and learning-rate reduction watch the validation ROC AUC; the best epoch's
    weights are kept. ``work_dir`` holds the per-epoch backup that lets an interrupted call
    resume from its last finished epoch, and the best weights so far; the finished model appears
    in ``model_dir`` whole (``model.keras`` + ``train_record.json``) or not at all.
    """
    import keras

    from braincls.train.inputs import PngSequence, make_dataset

    data_root = Path(data_root)
    train_paths, train_labels = _split_arrays(dataset, "train", data_root)
    val_paths, val_labels = _split_arrays(dataset, "val", data_root)
    if not train_paths or not val_paths:
        raise TrainingError(
            f"training needs train and val images; got {len(train_paths)} train, {len(val_paths)} val"
        )
    if len(set(train_labels)) < 2:
        raise TrainingError("the train split holds one class only")
    set_seeds(config.seed)
    gpus = accelerators()
    policy = precision_policy(config.mixed_precision, gpus)
    keras.mixed_precision.set_global_policy(policy)
    weights = class_weights(train_labels) if config.class_weights else None
    backend = keras.backend.backend()

    def inputs(paths: list[str], labels: list[int], shuffle: bool) -> Any:
        """tf.data on the TensorFlow backend; a PyDataset (no TensorFlow) on JAX or PyTorch."""
        common: dict[str, Any] = {
            "image_size_px": image_size_px,
            "batch_size": config.batch_size,
            "shuffle": shuffle,
            "seed": config.seed,
        }
        if backend == "tensorflow":
            return make_dataset(paths, labels, shuffle_buffer=config.shuffle_buffer, **common)
        return PngSequence(paths, labels, **common)

    train_data = inputs(train_paths, train_labels, shuffle=True)
    val_data = inputs(val_paths, val_labels, shuffle=False)

    steps_per_epoch = -(-len(train_paths) // config.batch_size)

    def build_and_compile() -> Any:
        return build_for_training(config, image_size_px, steps_per_epoch)

    if backend == "tensorflow" and len(gpus) > 1:
        import tensorflow as tf

        with tf.distribute.MirroredStrategy().scope():
            model = build_and_compile()
    else:
        model = build_and_compile()

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    history_path = work_dir / "history.json"
    best_path = work_dir / "best.weights.h5"
    previous: dict[str, list[float]] = (
        json.loads(history_path.read_text()) if history_path.is_file() else {}
    )
    warmup = config.warmup_epochs
    best_so_far = max(previous.get("val_auc", [])[warmup:], default=None)

    def after_warmup(callback_class: type[Any]) -> type[Any]:
        """``callback_class`` acting only on epochs after the warm-up."""

        class AfterWarmup(callback_class):
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                if epoch >= warmup:
                    super().on_epoch_end(epoch, logs)

        return AfterWarmup

    class _Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            values = {k: float(v) for k, v in (logs or {}).items()}
            logger.info("epoch %d/%d %s", epoch + 1, config.epochs, values)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, config.epochs, values)

    class _History(keras.callbacks.Callback):
        """Keeps the history of every finished epoch on disk, across resumed calls."""

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            logs = logs if logs is not None else {}
            # The rate at the end of the epoch (a schedule's value at the current step).
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )
            for key, value in logs.items():
                previous.setdefault(key, [])
                del previous[key][epoch:]
                previous[key].append(float(value))
            write_json(history_path, previous)

    callbacks: list[Any] = [
        keras.callbacks.BackupAndRestore(
            backup_dir=str(work_dir / "backup"), save_freq="epoch", delete_checkpoint=False
        ),
        after_warmup(keras.callbacks.ModelCheckpoint)(
            str(best_path),
            monitor="val_auc",
            mode="max",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best_so_far,
        ),
        _History(),
        _Progress(),
    ]
    if config.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_auc",
                mode="max",
                patience=config.early_stopping_patience,
                start_from_epoch=warmup,
            )
        )
    if config.lr_schedule == "plateau" and config.reduce_lr_patience:
        callbacks.append(
            after_warmup(keras.callbacks.ReduceLROnPlateau)(
                monitor="val_auc", mode="max", factor=0.5, patience=config.reduce_lr_patience
            )
        )
    started = time.perf_counter()
    try:
        model.fit(
            train_data,
            validation_data=val_data,
            epochs=config.epochs,
            class_weight=weights,
            callbacks=callbacks,
            shuffle=False,  # the input pipeline shuffles (seeded) itself
            verbose=0,
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")  # models built later are float32
    seconds = time.perf_counter() - started
    if best_path.is_file():
        model.load_weights(best_path)
    history = {k: list(v) for k, v in previous.items()}
    epochs_run = len(history.get("loss", []))
    val_auc = history.get("val_auc", [])
    best_epoch = (
        int(np.argmax(val_auc[warmup:])) + warmup + 1 if len(val_auc) > warmup else epochs_run
    )
    record = {
        "model": config.model,
        "config": config.model_dump(mode="json"),
        "image_size_px": image_size_px,
        "class_names": class_names,
        "positive_class": class_names[-1],
        "class_weights": weights,
        "manifest_sha256": manifest_sha256,
        "n_train": len(train_paths),
        "n_val": len(val_paths),
        "history": history,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "train_seconds_last_call": round(seconds, 3),
        "accelerators": gpus,
        "precision_policy": policy,
        "braincls_version": __version__,
        "keras_version": keras.__version__,
        "keras_backend": backend,
    }
    if policy != "float32":
        # Saved in float32, so that evaluation and prediction on any machine (a CPU without
        # oneDNN runs bfloat16 convolutions very slowly) use full precision; mixed-precision
        # variables are float32 already, so the weights carry over unchanged.
        trained = model
        model = build_for_training(config, image_size_px)
        model.set_weights(trained.get_weights())
        model.optimizer.build(model.trainable_variables)  # so the model loads without warnings
    if config.test_time_flip:
        from braincls.model.factory import with_test_time_flip

        model = with_test_time_flip(model)
    model_dir = Path(model_dir)
    with atomic_dir(model_dir) as tmp:
        model.save(tmp / MODEL_FILE)
        write_json(tmp / RECORD_FILE, record)
    shutil.rmtree(work_dir / "backup", ignore_errors=True)
    return TrainResult(
        model_dir=model_dir,
        model_path=model_dir / MODEL_FILE,
        record_path=model_dir / RECORD_FILE,
        history=history,
        epochs_run=epochs_run,
        seconds=seconds,
    )
