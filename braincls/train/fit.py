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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from braincls import __version__
from braincls.common.atomic import atomic_dir, write_json, write_parquet
from braincls.common.tables import SPLIT_COLUMN
from braincls.config import TrainConfig
from braincls.data.stored import split_images
from braincls.model.saved import MODEL_FILE, TRAIN_RECORD_FILE, TRAINING_SAMPLES_FILE
from braincls.train.precision import accelerators, precision_policy

logger = logging.getLogger(__name__)

#: Called after each epoch with (epochs done, epochs planned, that epoch's metrics).
EpochCallback = Any


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


def brain_area_bands(sources: list[str], brain_area_mm2: list[float], bands: int) -> list[int]:
    """The brain-area band of each image: quantile bands per source; images of a source
    without brain areas (NaN) are all band 0."""
    areas = np.asarray(brain_area_mm2, dtype=np.float64)
    source_array = np.asarray(sources, dtype=object)
    out = np.zeros(len(areas), dtype=np.int64)
    for source in set(sources):
        rows = np.flatnonzero(source_array == source)
        values = areas[rows]
        if bands <= 1 or np.isnan(values).all():
            continue
        edges = np.nanquantile(values, np.linspace(0, 1, bands + 1)[1:-1])
        raw = np.searchsorted(edges, np.nan_to_num(values, nan=0.0), side="right")
        out[rows] = np.unique(raw, return_inverse=True)[1]  # bands numbered 0, 1, ... per source
    return [int(v) for v in out]


def sample_weights(
    sources: list[str],
    labels: list[int],
    *,
    balance_classes: bool,
    balance_sources: bool,
    bands: list[int] | None = None,
) -> np.ndarray | None:
    """Per-image loss weights, mean 1, or None for no weighting.

    With ``balance_sources``, each of the S sources gets the same total weight (else each its
    share of the images). Within a source, each stratum keeps its share of the source's weight:
    the strata are the brain-area ``bands`` (one stratum without them), and with
    ``balance_classes`` the classes present in a stratum share its weight equally. Without
    bands, several sources or class balancing this is no weighting; with classes only, it is
    sklearn's 'balanced' rule ``N / (C * n(c))``.
    """
    if not labels:
        return None
    total = len(labels)
    several = balance_sources and len(set(sources)) > 1
    source_keys = list(sources) if several else ["" for _ in labels]
    band_keys = list(bands) if bands is not None else [0] * total
    if not several and not balance_classes and len(set(band_keys)) <= 1:
        return None
    n_sources = len(set(source_keys))
    count_source: dict[object, int] = {}
    count_stratum: dict[tuple[object, int], int] = {}
    count_cell: dict[tuple[object, int, int], int] = {}
    classes_in_stratum: dict[tuple[object, int], set[int]] = {}
    for source, band, label in zip(source_keys, band_keys, labels, strict=True):
        count_source[source] = count_source.get(source, 0) + 1
        count_stratum[(source, band)] = count_stratum.get((source, band), 0) + 1
        count_cell[(source, band, label)] = count_cell.get((source, band, label), 0) + 1
        classes_in_stratum.setdefault((source, band), set()).add(label)
    weights = []
    for source, band, label in zip(source_keys, band_keys, labels, strict=True):
        source_mass = total / n_sources if several else float(count_source[source])
        stratum_mass = source_mass * count_stratum[(source, band)] / count_source[source]
        if balance_classes:
            weight = stratum_mass / (
                len(classes_in_stratum[(source, band)]) * count_cell[(source, band, label)]
            )
        else:
            weight = stratum_mass / count_stratum[(source, band)]
        weights.append(weight)
    return np.asarray(weights, dtype=np.float64)


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


def input_pipeline(
    paths: list[str],
    labels: list[int],
    config: TrainConfig,
    image_size_px: int,
    shuffle: bool,
    weights: np.ndarray | None = None,
) -> Any:
    """tf.data on the TensorFlow backend; a PyDataset (no TensorFlow) on JAX or PyTorch."""
    import keras

    from braincls.train.inputs import PngSequence, make_dataset

    common: dict[str, Any] = {
        "image_size_px": image_size_px,
        "batch_size": config.batch_size,
        "shuffle": shuffle,
        "seed": config.seed,
        "weights": weights,
    }
    if keras.backend.backend() == "tensorflow":
        return make_dataset(paths, labels, shuffle_buffer=config.shuffle_buffer, **common)
    return PngSequence(paths, labels, **common)


def _build_for_devices(
    config: TrainConfig, image_size_px: int, steps_per_epoch: int, gpus: list[str]
) -> Any:
    """The compiled model; on several GPUs inside a MirroredStrategy scope."""
    import keras

    if keras.backend.backend() == "tensorflow" and len(gpus) > 1:
        import tensorflow as tf

        with tf.distribute.MirroredStrategy().scope():
            return build_for_training(config, image_size_px, steps_per_epoch)
    return build_for_training(config, image_size_px, steps_per_epoch)


def _callbacks(
    config: TrainConfig,
    work_dir: Path,
    history: dict[str, list[float]],
    on_epoch_end: EpochCallback | None,
) -> list[Any]:
    """Resume backup, best-epoch checkpoint, history, progress, early stopping, LR plateau."""
    import keras

    from braincls.train.callbacks import (
        BestAfterWarmup,
        EpochProgress,
        PersistentHistory,
        PlateauAfterWarmup,
    )

    warmup = config.warmup_epochs
    best_so_far = max(history.get("val_auc", [])[warmup:], default=None)
    callbacks: list[Any] = [
        keras.callbacks.BackupAndRestore(
            backup_dir=str(work_dir / "backup"), save_freq="epoch", delete_checkpoint=False
        ),
        BestAfterWarmup(work_dir / "best.weights.h5", warmup, best_so_far),
        PersistentHistory(work_dir / "history.json", history),
        EpochProgress(config.epochs, on_epoch_end),
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
        callbacks.append(PlateauAfterWarmup(warmup, config.reduce_lr_patience))
    return callbacks


def _model_to_save(trained: Any, config: TrainConfig, image_size_px: int, policy: str) -> Any:
    """The model as saved: float32 whatever the training precision, flip-averaged if asked.

    Saved in float32, so that evaluation and prediction on any machine (a CPU without oneDNN
    runs bfloat16 convolutions very slowly) use full precision; mixed-precision variables are
    float32 already, so the weights carry over unchanged.
    """
    model = trained
    if policy != "float32":
        model = build_for_training(config, image_size_px)
        model.set_weights(trained.get_weights())
        model.optimizer.build(model.trainable_variables)  # so the model loads without warnings
    if config.test_time_flip:
        from braincls.model.factory import with_test_time_flip

        model = with_test_time_flip(model)
    return model


def _weights_table(
    sources: list[str], labels: list[int], weights: np.ndarray | None
) -> list[dict[str, Any]]:
    """One row per (source, class) of the training split: images and the weight of each."""
    if weights is None:
        return []
    table: dict[tuple[str, int], dict[str, Any]] = {}
    for source, label, weight in zip(sources, labels, weights, strict=True):
        row = table.setdefault(
            (source, label), {"source": source, "label_index": label, "n": 0, "weight": weight}
        )
        row["n"] += 1
    return [{**row, "weight": round(float(row["weight"]), 6)} for row in table.values()]


def training_samples(dataset: pd.DataFrame) -> pd.DataFrame:
    """The rows that steered training (``train``, and ``val``, which chose the kept epoch and
    later the threshold): sample id and split, saved beside the model so that no later
    comparison scores the model on them."""
    part = dataset[dataset[SPLIT_COLUMN].isin(["train", "val"])]
    return pd.DataFrame(
        {
            "sample_id": part["sample_id"].astype("string").to_numpy(),
            "split": part[SPLIT_COLUMN].astype("string").to_numpy(),
        }
    ).astype({"sample_id": "string", "split": "string"})


def best_epoch(history: dict[str, list[float]], warmup_epochs: int) -> int:
    """The 1-based epoch whose weights are kept: the best validation AUC after the warm-up."""
    val_auc = history.get("val_auc", [])
    epochs_run = len(history.get("loss", []))
    if len(val_auc) <= warmup_epochs:
        return epochs_run
    return int(np.argmax(val_auc[warmup_epochs:])) + warmup_epochs + 1


def train_model(
    dataset: pd.DataFrame,
    data_root: Path,
    model_dir: Path,
    work_dir: Path,
    config: TrainConfig,
    *,
    image_size_px: int,
    class_names: list[str],
    data: dict[str, Any] | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Train ``config.model`` on the ``train`` split, validate on ``val`` every epoch.

    Early stopping and learning-rate reduction watch the validation ROC AUC; the best epoch's
    weights are kept. ``work_dir`` holds the per-epoch backup that lets an interrupted call
    resume from its last finished epoch, and the best weights so far; the finished model appears
    in ``model_dir`` whole (``model.keras`` + ``train_record.json``) or not at all. ``data``
    describes the dataset (sources, their conversion settings, the preprocessing) and is
    recorded with the model, so that it can later prepare images exactly as training did.
    """
    import keras

    data_root = Path(data_root)
    train_paths, train_labels_array = split_images(dataset, "train", data_root)
    val_paths, val_labels_array = split_images(dataset, "val", data_root)
    train_rows = dataset[dataset[SPLIT_COLUMN] == "train"]
    train_sources = [str(s) for s in train_rows["source"]]
    bands = (
        brain_area_bands(
            train_sources,
            train_rows["brain_area_mm2"].astype("float64").tolist(),
            config.brain_area_bands,
        )
        if config.balance_brain_area and "brain_area_mm2" in train_rows.columns
        else None
    )
    train_labels = [int(v) for v in train_labels_array]
    val_labels = [int(v) for v in val_labels_array]
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
    weights = sample_weights(
        train_sources,
        train_labels,
        balance_classes=config.class_weights,
        balance_sources=config.balance_sources,
        bands=bands,
    )
    steps_per_epoch = -(-len(train_paths) // config.batch_size)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    history_path = work_dir / "history.json"
    history: dict[str, list[float]] = (
        json.loads(history_path.read_text()) if history_path.is_file() else {}
    )
    started = time.perf_counter()
    try:
        model = _build_for_devices(config, image_size_px, steps_per_epoch, gpus)
        model.fit(
            input_pipeline(
                train_paths, train_labels, config, image_size_px, shuffle=True, weights=weights
            ),
            validation_data=input_pipeline(
                val_paths, val_labels, config, image_size_px, shuffle=False
            ),
            epochs=config.epochs,
            callbacks=_callbacks(config, work_dir, history, on_epoch_end),
            shuffle=False,  # the input pipeline shuffles (seeded) itself
            verbose=0,
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")  # models built later are float32
    seconds = time.perf_counter() - started
    best_path = work_dir / "best.weights.h5"
    if best_path.is_file():
        model.load_weights(best_path)
    epochs_run = len(history.get("loss", []))
    record = {
        "model": config.model,
        "config": config.model_dump(mode="json"),
        "image_size_px": image_size_px,
        "class_names": class_names,
        "positive_class": class_names[-1],
        "class_weights": class_weights(train_labels) if config.class_weights else None,
        "sample_weights_by_source_and_class": _weights_table(train_sources, train_labels, weights),
        "dataset": dict(data or {}),
        "manifest_sha256": (data or {}).get("manifest_sha256"),
        "n_train": len(train_paths),
        "n_val": len(val_paths),
        "training_samples": TRAINING_SAMPLES_FILE,
        "history": history,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch(history, config.warmup_epochs),
        "train_seconds_last_call": round(seconds, 3),
        "accelerators": gpus,
        "precision_policy": policy,
        "braincls_version": __version__,
        "keras_version": keras.__version__,
        "keras_backend": keras.backend.backend(),
    }
    final = _model_to_save(model, config, image_size_px, policy)
    model_dir = Path(model_dir)
    with atomic_dir(model_dir, durable=True) as tmp:
        final.save(tmp / MODEL_FILE)
        write_parquet(tmp / TRAINING_SAMPLES_FILE, training_samples(dataset))
        write_json(tmp / TRAIN_RECORD_FILE, record)
    shutil.rmtree(work_dir / "backup", ignore_errors=True)
    return TrainResult(
        model_dir=model_dir,
        model_path=model_dir / MODEL_FILE,
        record_path=model_dir / TRAIN_RECORD_FILE,
        history=history,
        epochs_run=epochs_run,
        seconds=seconds,
    )
