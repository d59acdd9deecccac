"""The Keras callbacks of a training run, each a named class (importing this imports Keras).

The first ``warmup_epochs`` can be neither the kept best epoch nor count for early stopping or
learning-rate reduction: batch-norm statistics and augmentation make early validation AUCs
noisy, and a lucky first epoch should not decide the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

from braincls.common.atomic import write_json

logger = logging.getLogger(__name__)

#: Called after each epoch with (epochs done, epochs planned, that epoch's metrics).
EpochCallback = Callable[[int, int, dict[str, float]], None]


class BestAfterWarmup(keras.callbacks.ModelCheckpoint):
    """Keeps the weights of the best epoch by validation ROC AUC, ignoring the warm-up epochs."""

    def __init__(self, path: Path, warmup_epochs: int, best_so_far: float | None) -> None:
        super().__init__(
            str(path),
            monitor="val_auc",
            mode="max",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best_so_far,
        )
        self.warmup_epochs = warmup_epochs

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch >= self.warmup_epochs:
            super().on_epoch_end(epoch, logs)


class PlateauAfterWarmup(keras.callbacks.ReduceLROnPlateau):
    """Halves the learning rate on a validation-AUC plateau, ignoring the warm-up epochs."""

    def __init__(self, warmup_epochs: int, patience: int) -> None:
        super().__init__(monitor="val_auc", mode="max", factor=0.5, patience=patience)
        self.warmup_epochs = warmup_epochs

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch >= self.warmup_epochs:
            super().on_epoch_end(epoch, logs)


class PersistentHistory(keras.callbacks.Callback):
    """Keeps the metrics of every finished epoch in ``history`` and on disk, across resumed
    calls (an epoch run again after a crash replaces its earlier entry)."""

    def __init__(self, path: Path, history: dict[str, list[float]]) -> None:
        super().__init__()
        self.path = Path(path)
        self.history = history

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        # The rate at the end of the epoch (a schedule's value at the current step).
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        for key, value in logs.items():
            values = self.history.setdefault(key, [])
            del values[epoch:]
            values.append(float(value))
        write_json(self.path, self.history)


class EpochProgress(keras.callbacks.Callback):
    """Logs each epoch and hands its metrics to ``on_epoch_end`` (the dashboard, a terminal)."""

    def __init__(self, total_epochs: int, on_epoch_end: EpochCallback | None) -> None:
        super().__init__()
        self.total_epochs = total_epochs
        self.report = on_epoch_end

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        values = {k: float(v) for k, v in (logs or {}).items()}
        logger.info("epoch %d/%d %s", epoch + 1, self.total_epochs, values)
        if self.report is not None:
            self.report(epoch + 1, self.total_epochs, values)
