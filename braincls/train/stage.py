"""The training stage's entry point: a dataset record becomes a model folder."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from braincls.common.hashing import sha256_file
from braincls.common.layout import DataLayout
from braincls.common.locks import file_lock
from braincls.common.records import (
    RECORD_FILE,
    Outcome,
    read_record,
    reusable,
    stage_key,
    write_record,
)
from braincls.config import TrainConfig
from braincls.data.stage import DatasetRecord, read_dataset
from braincls.model.saved import MODEL_FILE, TRAIN_RECORD_FILE, TRAINING_SAMPLES_FILE
from braincls.train.fit import EpochCallback, TrainingError, train_model

#: Code version of the training stage.
TRAIN_STAGE_VERSION = "3"
#: The lock file of a training's folder, ``runs/<key>/.lock``.
LOCK_FILE = ".lock"
#: How long a training waits for another training of the same key (the stage's own limit).
TRAIN_LOCK_TIMEOUT_SECONDS = 10 * 3600.0


@dataclass(frozen=True)
class ModelRecord:
    """Output of the training stage."""

    key: str
    model_dir: str
    model_path: str
    model_sha256: str
    model_name: str
    epochs_run: int
    history: dict[str, list[float]] = field(default_factory=dict)

    def output_paths(self) -> Iterable[Path]:
        """The model file, its training record and its training samples."""
        folder = Path(self.model_dir)
        return [Path(self.model_path), folder / TRAIN_RECORD_FILE, folder / TRAINING_SAMPLES_FILE]


def train_key(record: DatasetRecord, config: TrainConfig) -> str:
    """Key of the training stage: the dataset manifest's hash and the training config."""
    return stage_key("train", TRAIN_STAGE_VERSION, record.manifest_sha256, config.config_hash())


def run_train(
    record: DatasetRecord,
    layout: DataLayout,
    config: TrainConfig,
    on_epoch_end: EpochCallback | None = None,
    *,
    refresh: bool = False,
    lock_timeout_seconds: float = TRAIN_LOCK_TIMEOUT_SECONDS,
) -> Outcome[ModelRecord]:
    """Train on the dataset; the model folder appears whole when training has finished.

    An interrupted training resumes from its last finished epoch; ``refresh`` starts over.
    One training per key at a time: a second one (another deployment's run on the same data
    root) waits for the first under the lock ``runs/<key>/.lock``, at most
    ``lock_timeout_seconds``, and then reuses its model instead of training into the same
    working folder.
    """
    key = train_key(record, config)
    run_dir = layout.runs / key
    found = reusable(run_dir / RECORD_FILE, ModelRecord, refresh=refresh)
    if found is not None:
        return Outcome(found, reused=True)
    with file_lock(
        run_dir / LOCK_FILE,
        timeout_seconds=lock_timeout_seconds,
        what=f"training {key} ({config.model} on {record.source})",
    ):
        found = reusable(run_dir / RECORD_FILE, ModelRecord, refresh=refresh)
        if found is not None:  # finished by the run this one waited for
            return Outcome(found, reused=True)
        return Outcome(_train(record, layout, config, key, on_epoch_end, refresh), reused=False)


def _train(
    record: DatasetRecord,
    layout: DataLayout,
    config: TrainConfig,
    key: str,
    on_epoch_end: EpochCallback | None,
    refresh: bool,
) -> ModelRecord:
    run_dir = layout.runs / key
    model_dir = run_dir / "model"
    if refresh:
        shutil.rmtree(run_dir / "work", ignore_errors=True)
    result = train_model(
        read_dataset(record),
        layout.root,
        model_dir,
        run_dir / "work",
        config,
        image_size_px=record.image_size_px,
        class_names=record.class_names,
        data=record.describe(),
        on_epoch_end=on_epoch_end,
    )
    if not (model_dir / TRAIN_RECORD_FILE).is_file():
        raise TrainingError(f"{model_dir}: training finished without {TRAIN_RECORD_FILE}")
    out = ModelRecord(
        key=key,
        model_dir=str(model_dir),
        model_path=str(model_dir / MODEL_FILE),
        model_sha256=sha256_file(model_dir / MODEL_FILE),
        model_name=config.model,
        epochs_run=result.epochs_run,
        history=result.history,
    )
    write_record(run_dir / RECORD_FILE, out)
    return out


def read_model_record(record: DatasetRecord, data_root: Path, config: TrainConfig) -> ModelRecord:
    """The record a finished training of ``record`` with ``config`` wrote under ``data_root``
    (e.g. on another worker, through the training deployment)."""
    key = train_key(record, config)
    return read_record(DataLayout(Path(data_root)).runs / key / RECORD_FILE, ModelRecord)
