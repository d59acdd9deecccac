"""The model a prediction uses: which folder (the champion by default), loaded once, with
everything that prepares images for it exactly as its training data was prepared."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from braincls.common.hashing import sha256_file
from braincls.common.layout import DataLayout
from braincls.common.notices import INTENDED_USE
from braincls.config import (
    ConvertConfig,
    ImportConfig,
    LabelRuleConfig,
    PreprocessConfig,
    VolumesConfig,
)
from braincls.model.saved import SavedModel, SavedModelError, read_saved_model

logger = logging.getLogger(__name__)

#: Headline test metrics a model description carries (when its evaluation recorded them).
HEADLINE_METRICS: tuple[str, ...] = (
    "accuracy",
    "roc_auc",
    "sensitivity",
    "specificity",
    "balanced_accuracy",
    "pr_auc",
)


class PredictError(RuntimeError):
    """Prediction cannot run (no model, no threshold, nothing to score); the message says what
    to do."""


class NoChampion(PredictError):
    """The registry has no champion to predict with."""


def resolve_model_dir(
    data_root: Path, model_dir: Path | None = None, version: str | None = None
) -> Path:
    """The model folder to predict with: ``model_dir`` as given, registry ``version`` of the
    data root, or (neither given) the registry's champion."""
    from braincls.registry.store import ModelRegistry, RegistryError

    if model_dir is not None and version is not None:
        raise PredictError("give a model folder or a registry version, not both")
    if model_dir is not None:
        if not Path(model_dir).is_dir():
            raise PredictError(f"{model_dir}: model folder not found")
        return Path(model_dir)
    registry = ModelRegistry(DataLayout(Path(data_root)).models)
    try:
        if version is not None:
            return registry.get(version).path
        champion = registry.champion()
    except RegistryError as error:
        raise PredictError(str(error)) from error
    if champion is None:
        raise NoChampion(
            f"no champion model under {registry.root}: train one (`braincls run ...`), "
            "promote a version (`braincls models promote vNNNN`), or pass a model folder"
        )
    return champion.path


def _version_label(saved: SavedModel) -> str:
    """``v0003`` for a registry version; ``unregistered (runs/<key>)`` for a training output."""
    if saved.version:
        return str(saved.version)
    folder = saved.folder.resolve()
    where = (
        f"{folder.parent.parent.name}/{folder.parent.name}"
        if folder.name == "model"
        else folder.name
    )
    return f"unregistered ({where})"


@dataclass(frozen=True)
class ScoringModel:
    """A loaded model and how to prepare images for it (conversion, volume and preprocessing
    settings recorded with its training data) and call them (its fixed threshold)."""

    saved: SavedModel
    keras_model: Any
    threshold: float
    version: str
    model_sha256: str
    metrics: dict[str, Any]

    @property
    def image_size_px(self) -> int:
        """The side of the model's square input."""
        return self.saved.image_size_px

    @property
    def positive_class(self) -> str:
        """The class P(positive) is the probability of (``yes``: tumour)."""
        return self.saved.positive_class

    @property
    def negative_class(self) -> str:
        """The other class."""
        return self.saved.class_names[0]

    @property
    def preprocess(self) -> PreprocessConfig:
        """The preprocessing the model's training images went through."""
        return PreprocessConfig.model_validate(self.saved.preprocess)

    @property
    def import_config(self) -> ImportConfig:
        """The image-folder import rules of its training data (minimum size), or the defaults."""
        recorded = self.saved.source_config("images")
        return ImportConfig.model_validate(recorded) if recorded else ImportConfig()

    @property
    def convert_config(self) -> ConvertConfig:
        """The DICOM conversion of its training data (the defaults when it saw no DICOM)."""
        from braincls.evaluate.external import convert_config_of

        # One worker: a prediction converts a few series, and the service runs in threads.
        return convert_config_of(self.saved).model_copy(update={"workers": 1})

    @property
    def volumes(self) -> tuple[VolumesConfig, LabelRuleConfig]:
        """The volume slicing of its training data and its labelling rule (brain area)."""
        from braincls.evaluate.external import volumes_settings_of

        return volumes_settings_of(self.saved)

    def describe(self) -> dict[str, Any]:
        """What a user should know about this model: version, threshold, training data, test
        metrics with their intervals, and the intended use."""
        record = self.saved.train_record
        intervals = self.metrics.get("confidence_intervals") or self.metrics.get("intervals") or {}
        return {
            "model_version": self.version,
            "model_name": self.saved.model_name,
            "model_sha256": self.model_sha256,
            "registered_at": self.saved.metadata.get("registered_at"),
            "threshold": self.threshold,
            "threshold_rule": self.saved.metadata.get("threshold_rule"),
            "positive_class": self.positive_class,
            "class_names": list(self.saved.class_names),
            "image_size_px": self.image_size_px,
            "training_data": {
                "sources": [
                    {"name": source.get("name"), "kind": source.get("kind")}
                    for source in self.saved.sources
                ],
                "split": self.metrics.get("split"),
                "n_train": self.metrics.get("n_train", record.get("n_train")),
                "n_val": self.metrics.get("n_val", record.get("n_val")),
                "n_test": self.metrics.get("n_test"),
            },
            "test_metrics": {
                name: {
                    "value": self.metrics.get(name),
                    "interval_95": intervals.get(name),
                }
                for name in HEADLINE_METRICS
                if name in self.metrics
            },
            "intended_use": INTENDED_USE,
        }


def _recorded_metrics(saved: SavedModel, digest: str, data_roots: list[Path]) -> dict[str, Any]:
    """The model's test metrics: a registry version's, else its evaluation record's."""
    if saved.metadata.get("metrics"):
        return dict(saved.metadata["metrics"])
    from braincls.evaluate.stage import evaluation_records

    for root in data_roots:
        for record in reversed(evaluation_records(root)):
            if record.model_sha256 == digest:
                return dict(record.metrics)
    return {}


def open_model(model_dir: Path, data_root: Path) -> ScoringModel:
    """Load the model in ``model_dir`` with its fixed threshold; :class:`PredictError` when the
    folder is not a model or the model was never evaluated (no threshold, never 0.5)."""
    from braincls.evaluate.external import model_data_root
    from braincls.evaluate.stage import ThresholdMissing, fixed_threshold
    from braincls.model.saved import load_model

    model_dir = Path(model_dir)
    own_root = model_data_root(model_dir)
    roots = [Path(data_root), *([own_root] if own_root is not None else [])]
    try:
        saved = read_saved_model(model_dir)
        threshold = fixed_threshold(model_dir, roots)
    except (SavedModelError, ThresholdMissing) as error:
        raise PredictError(f"cannot predict with this model: {error}") from error
    if len(saved.class_names) != 2:
        raise PredictError(f"{model_dir}: a binary model is needed, got {saved.class_names}")
    digest = sha256_file(saved.model_path)
    keras_model = load_model(saved.model_path)
    logger.info("loaded model %s (threshold %.4f)", _version_label(saved), threshold)
    return ScoringModel(
        saved=saved,
        keras_model=keras_model,
        threshold=float(threshold),
        version=_version_label(saved),
        model_sha256=digest,
        metrics=_recorded_metrics(saved, digest, roots),
    )
