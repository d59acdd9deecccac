"""The registry stage's entry point: register a trained, evaluated model; decide on promotion."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from braincls.common.layout import DataLayout
from braincls.config import RegistryConfig
from braincls.data.stage import DatasetRecord, read_dataset
from braincls.evaluate.stage import EvaluationRecord
from braincls.model.saved import TRAIN_RECORD_FILE
from braincls.registry.store import ModelRegistry, ModelVersion
from braincls.train.stage import ModelRecord


@dataclass(frozen=True)
class RegistrationRecord:
    """Outcome of registering a trained model and deciding on its promotion."""

    version: str
    promoted: bool
    champion: str | None
    summary: str
    reasons: list[str]
    decision: dict[str, Any]


def registration_metadata(
    model: ModelRecord, dataset: DatasetRecord, evaluation: EvaluationRecord
) -> dict[str, Any]:
    """What a version's ``metadata.json`` holds besides what the registry adds itself: the
    threshold fixed by evaluation, the data and how it was prepared, the training record."""
    return {
        "model_sha256": model.model_sha256,
        "model_name": model.model_name,
        "dataset_manifest_sha256": dataset.manifest_sha256,
        "image_size_px": dataset.image_size_px,
        "preprocess": dataset.preprocess,
        "sources": dataset.sources,
        "dataset_key": dataset.key,
        "report": evaluation.report_html,
        "threshold": evaluation.threshold,
        "threshold_rule": evaluation.threshold_rule,
        "train_record": json.loads((Path(model.model_dir) / TRAIN_RECORD_FILE).read_text()),
    }


def same_preparation(champion: ModelVersion, dataset: DatasetRecord) -> bool:
    """Whether the champion takes images prepared exactly like ``dataset``'s (the whole
    preprocessing record and the input size), so that it can be scored on them."""
    meta = champion.metadata()
    return (
        meta.get("image_size_px") == dataset.image_size_px
        and meta.get("preprocess") == dataset.preprocess
    )


def champion_on_same_data(
    champion: ModelVersion, dataset: DatasetRecord, layout: DataLayout
) -> dict[str, Any] | None:
    """The champion's test metrics on this dataset's test split at its own fixed threshold, or
    None when it takes differently prepared images (another size or preprocessing)."""
    from braincls.data.stored import load_stored_images, split_images
    from braincls.evaluate.metrics import binary_metrics
    from braincls.model.saved import load_model, predict_probabilities

    if not same_preparation(champion, dataset):
        return None
    threshold = champion.metadata().get("threshold")
    if threshold is None:
        return None
    paths, labels = split_images(read_dataset(dataset), "test", layout.root)
    model = load_model(champion.model_path)
    probabilities = predict_probabilities(model, load_stored_images(paths, dataset.image_size_px))
    return dict(binary_metrics(labels, probabilities, float(threshold)))


def run_register(
    model: ModelRecord,
    dataset: DatasetRecord,
    evaluation: EvaluationRecord,
    layout: DataLayout,
    config: RegistryConfig,
) -> RegistrationRecord:
    """Register the model as a new version and promote it if it beats the champion.

    A model already registered (same bytes) is not registered twice. The champion is scored
    on this run's test split when it takes identically prepared images, so both are judged on
    the same data; otherwise its registered metrics are used and the decision says so.
    """
    from braincls import __version__
    from braincls.registry.card import model_card_markdown

    registry = ModelRegistry(layout.models)
    metrics = json.loads(Path(evaluation.metrics_path).read_text())
    existing = [v for v in registry.list() if v.model_sha256 == model.model_sha256]
    if existing:
        version = existing[-1]
    else:
        card = model_card_markdown(
            model_name=model.model_name,
            training_data=f"{dataset.source} ({sum(sum(c.values()) for c in dataset.counts.values())} images)",
            data_hash=dataset.manifest_sha256,
            split_strategy=str(metrics.get("split")),
            config={"train_key": model.key, "image_size_px": dataset.image_size_px},
            code_version=__version__,
            metrics=metrics,
            intervals=metrics.get("confidence_intervals"),
            threshold=evaluation.threshold,
            threshold_rule=evaluation.threshold_rule,
        )
        version = registry.register(
            Path(model.model_path), metrics, registration_metadata(model, dataset, evaluation), card
        )
    champion = registry.champion()
    champion_metrics = None
    if champion is not None and champion.version != version.version:
        champion_metrics = champion_on_same_data(champion, dataset, layout)
    decision = registry.promote_if_better(
        version.version,
        config,
        champion_metrics,
        compared_champion=None if champion is None else champion.version,
    )
    return RegistrationRecord(
        version=version.version,
        promoted=decision.promoted,
        champion=decision.champion_after,
        summary=decision.summary,
        reasons=list(decision.reasons),
        decision=decision.to_dict(),
    )
