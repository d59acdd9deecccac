"""A saved model folder: ``model.keras`` and what is needed to use it exactly as it was trained.

Two kinds of folder hold a model:

- a training output, ``runs/<train key>/model/``: ``model.keras`` and ``train_record.json``
  (the training config, the class names, the input size, and the data it was trained on with
  the conversion and preprocessing settings that prepared it);
- a registry version, ``models/vNNNN/``: ``model.keras`` and ``metadata.json``, which holds the
  same training record plus the decision threshold fixed by the evaluation stage.

:func:`read_saved_model` reads either. Loading Keras happens only in :func:`load_model`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: The Keras model file of every model folder.
MODEL_FILE = "model.keras"
#: The training record written beside the model by the training stage.
TRAIN_RECORD_FILE = "train_record.json"
#: The registry's metadata file of a version folder (holds the training record and threshold).
METADATA_FILE = "metadata.json"
#: The sample ids a model was trained and validated on (``sample_id``, ``split``), beside the
#: model in both kinds of folder: a model is never scored on them.
TRAINING_SAMPLES_FILE = "training_samples.parquet"


class SavedModelError(ValueError):
    """The folder is not a braincls model folder, or lacks what using the model needs."""


@dataclass(frozen=True)
class SavedModel:
    """What a model folder says about its model (nothing is loaded)."""

    folder: Path
    model_path: Path
    model_name: str
    class_names: list[str]
    image_size_px: int
    preprocess: dict[str, Any]
    train_record: dict[str, Any]
    #: The decision threshold fixed at evaluation, when the folder is a registry version.
    threshold: float | None = None
    #: The registry version (``v0003``), when the folder is one.
    version: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def positive_class(self) -> str:
        """The class the sigmoid output is the probability of."""
        return self.class_names[-1]

    @property
    def sources(self) -> list[dict[str, Any]]:
        """The data sources the model was trained on (name, kind, their conversion settings)."""
        return list(self.train_record.get("dataset", {}).get("sources", []))

    def source_config(self, kind: str) -> dict[str, Any] | None:
        """The conversion settings of the first training source of ``kind`` (``dicom``,
        ``volumes``, ``images``), or None when the model saw no such source."""
        for source in self.sources:
            if source.get("kind") == kind:
                return dict(source.get("config") or {})
        return None


def read_saved_model(folder: Path) -> SavedModel:
    """Read a training output or registry version folder; :class:`SavedModelError` otherwise."""
    folder = Path(folder)
    model_path = folder / MODEL_FILE
    record_path = folder / TRAIN_RECORD_FILE
    metadata_path = folder / METADATA_FILE
    metadata: dict[str, Any] = {}
    if metadata_path.is_file():
        metadata = dict(json.loads(metadata_path.read_text(encoding="utf-8")))
    if record_path.is_file():
        record = dict(json.loads(record_path.read_text(encoding="utf-8")))
    elif "train_record" in metadata:
        record = dict(metadata["train_record"])
    else:
        raise SavedModelError(
            f"{folder}: not a braincls model folder (no {TRAIN_RECORD_FILE}, no registry "
            f"{METADATA_FILE} with a training record)"
        )
    if not model_path.is_file():
        raise SavedModelError(f"{folder}: {MODEL_FILE} is missing")
    preprocess = dict(record.get("dataset", {}).get("preprocess") or record.get("preprocess") or {})
    if not preprocess:
        raise SavedModelError(
            f"{folder}: the training record holds no preprocessing settings; this model was "
            "trained by an older braincls: retrain it to use it here"
        )
    threshold = metadata.get("threshold")
    return SavedModel(
        folder=folder,
        model_path=model_path,
        model_name=str(record["model"]),
        class_names=[str(name) for name in record["class_names"]],
        image_size_px=int(record["image_size_px"]),
        preprocess=preprocess,
        train_record=record,
        threshold=None if threshold is None else float(threshold),
        version=metadata.get("version"),
        metadata=metadata,
    )


def read_training_samples(folder: Path) -> set[str] | None:
    """The sample ids the model in ``folder`` was trained or validated on (both steer a model:
    the weights, the kept epoch, the threshold); None when the folder does not record them (a
    model trained by an older braincls)."""
    import pandas as pd

    path = Path(folder) / TRAINING_SAMPLES_FILE
    if not path.is_file():
        return None
    return set(pd.read_parquet(path, columns=["sample_id"])["sample_id"].astype(str))


def load_model(model_path: Path) -> Any:
    """Load a saved braincls model (custom layers registered first), uncompiled."""
    import keras

    import braincls.model.layers  # noqa: F401  (registers the custom layers for deserialisation)

    return keras.saving.load_model(model_path, compile=False)


def predict_probabilities(model: Any, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """P(positive class) per image, float64, from a sigmoid model."""
    if len(images) == 0:
        return np.empty(0, np.float64)
    output = model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)
    return np.asarray(output, dtype=np.float64).reshape(-1)
