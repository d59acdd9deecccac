"""The registry stage's entry point: register a trained, evaluated model; decide on promotion."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from braincls.common.layout import DataLayout
from braincls.common.tables import SPLIT_COLUMN
from braincls.config import RegistryConfig
from braincls.data.stage import DatasetRecord, read_dataset
from braincls.evaluate.stage import EvaluationRecord
from braincls.model.saved import TRAIN_RECORD_FILE, TRAINING_SAMPLES_FILE, read_training_samples
from braincls.registry.promotion import Comparison
from braincls.registry.store import ModelRegistry, ModelVersion
from braincls.train.stage import ModelRecord

logger = logging.getLogger(__name__)


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
    threshold fixed by evaluation, the data and how it was prepared, the training record, and
    the file listing the samples it was trained and validated on."""
    has_samples = (Path(model.model_dir) / TRAINING_SAMPLES_FILE).is_file()
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
        "training_samples": TRAINING_SAMPLES_FILE if has_samples else None,
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


@dataclass(frozen=True)
class _Compared:
    """A registered model that can be scored on the dataset's test images."""

    version: ModelVersion
    threshold: float
    #: Sample ids it was trained or validated on; None when its folder does not record them.
    trained_on: set[str] | None


def _comparable(version: ModelVersion, dataset: DatasetRecord) -> _Compared | None:
    threshold = version.metadata().get("threshold")
    if threshold is None or not same_preparation(version, dataset):
        return None
    return _Compared(version, float(threshold), read_training_samples(version.path))


def _decision_value(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float, metric: str
) -> float | None:
    from braincls.evaluate.metrics import binary_metrics

    if len(labels) == 0:
        return None
    value = binary_metrics(labels, probabilities, threshold)[metric]
    return None if np.isnan(value) else float(value)


def compare_on_shared_test(
    champion: ModelVersion,
    earlier_champions: Sequence[ModelVersion],
    dataset: DatasetRecord,
    evaluation: EvaluationRecord,
    layout: DataLayout,
    config: RegistryConfig,
) -> Comparison:
    """The candidate (scored by ``evaluation``), the champion and the earlier champions, each
    at its own fixed threshold, on the same images: this dataset's test split less every
    image any of them was trained or validated on.

    The champion must take identically prepared images (the whole preprocessing record and
    the input size); when it does not, or no image is left, its registered metrics (from its
    own test data) are used and the comparison says it is indicative only. Earlier champions
    that take other images are left out, and the comparison says so.
    """
    from braincls.data.stored import load_stored_images
    from braincls.model.saved import load_model, predict_probabilities
    from braincls.registry.promotion import metric_value, registered_by_source

    metric = config.decision_metric
    candidate_metrics = json.loads(Path(evaluation.metrics_path).read_text())

    def registered(note: str) -> Comparison:
        return Comparison(
            champion=champion.version,
            same_test_data=False,
            candidate_value=metric_value(candidate_metrics, metric),
            champion_value=metric_value(champion.metrics, metric),
            notes=[note],
            by_source=registered_by_source(candidate_metrics, champion.metrics, metric),
        )

    compared_champion = _comparable(champion, dataset)
    if compared_champion is None:
        return registered(
            f"The champion {champion.version} takes differently prepared images (another "
            "input size or preprocessing), so it cannot be scored on this test data; its "
            "registered metrics (from its own test data) are used, so the comparison is "
            "indicative only."
        )
    earlier: list[_Compared] = []
    notes: list[str] = []
    for version in earlier_champions:
        found = _comparable(version, dataset)
        if found is None:
            notes.append(
                f"The earlier champion {version.version} takes differently prepared images "
                "and is left out of the comparison."
            )
        else:
            earlier.append(found)
    models = [compared_champion, *earlier]
    for model in models:
        if model.trained_on is None:
            notes.append(
                f"{model.version.version} does not record the samples it was trained on "
                "(registered by an older braincls): it may have seen some of these test images."
            )
    frame = read_dataset(dataset)
    test = frame[frame[SPLIT_COLUMN] == "test"]
    trained_on = set().union(*(m.trained_on or set() for m in models))
    shared = test[~test["sample_id"].astype(str).isin(trained_on)]
    labels = shared["label_index"].to_numpy(np.int64)
    if len(set(labels.tolist())) < 2:
        return registered(
            f"Of {len(test)} test images, {len(test) - len(shared)} were used to train or "
            f"validate a compared model, which leaves too few of both classes to compare on; "
            f"the champion {champion.version}'s registered metrics are used, so the "
            "comparison is indicative only."
        )
    if len(shared) < len(test):
        notes.append(
            f"{len(test) - len(shared)} of {len(test)} test images were left out: a compared "
            "model was trained or validated on them."
        )
    predictions = pd.read_parquet(evaluation.predictions_path, columns=["sample_id", "p_positive"])
    candidate_probability = predictions.set_index(predictions["sample_id"].astype(str))[
        "p_positive"
    ]
    candidate_probabilities = candidate_probability.loc[shared["sample_id"].astype(str)].to_numpy(
        np.float64
    )
    candidate_value = _decision_value(labels, candidate_probabilities, evaluation.threshold, metric)
    paths = [str(layout.root / str(path)) for path in shared["image_path"]]
    images = load_stored_images(paths, dataset.image_size_px)
    values: dict[str, float | None] = {}
    champion_probabilities = np.empty(0)
    for model in models:
        probabilities = predict_probabilities(load_model(model.version.model_path), images)
        if model is compared_champion:
            champion_probabilities = probabilities
        values[model.version.version] = _decision_value(
            labels, probabilities, model.threshold, metric
        )
    sources = shared["source"].astype(str).to_numpy() if "source" in shared else None
    by_source: dict[str, dict[str, float | int | None]] = {}
    if sources is not None and len(set(sources.tolist())) > 1:
        for source in sorted(set(sources.tolist())):
            rows = sources == source
            by_source[source] = {
                "candidate": _decision_value(
                    labels[rows], candidate_probabilities[rows], evaluation.threshold, metric
                ),
                "champion": _decision_value(
                    labels[rows], champion_probabilities[rows], compared_champion.threshold, metric
                ),
                "images": int(rows.sum()),
            }
    return Comparison(
        champion=champion.version,
        same_test_data=True,
        candidate_value=candidate_value,
        champion_value=values.pop(champion.version),
        earlier_champions=values,
        test_images=len(shared),
        excluded_images=len(test) - len(shared),
        notes=notes,
        by_source=by_source,
    )


def earlier_champions(registry: ModelRegistry, champion: str, candidate: str) -> list[ModelVersion]:
    """Every version that was champion before ``champion`` (most recent first), but not the
    candidate itself."""
    history = registry.champion_history()
    seen = {champion, candidate}
    out = []
    for version in reversed(history):
        if version not in seen:
            seen.add(version)
            out.append(registry.get(version))
    return out


def run_register(
    model: ModelRecord,
    dataset: DatasetRecord,
    evaluation: EvaluationRecord,
    layout: DataLayout,
    config: RegistryConfig,
) -> RegistrationRecord:
    """Register the model as a new version and promote it if it beats the champion.

    A model already registered (same bytes) is not registered twice. The candidate and the
    champions are scored on the same test images, none of which any of them trained on
    (:func:`compare_on_shared_test`); the candidate must not be worse than the best of them by
    more than the margin.
    """
    from braincls import __version__
    from braincls.registry.card import model_card_markdown

    registry = ModelRegistry(layout.models)
    metrics = json.loads(Path(evaluation.metrics_path).read_text())
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
    samples = Path(model.model_dir) / TRAINING_SAMPLES_FILE
    # Returns the version already holding these bytes, if any (checked under the lock).
    version = registry.register(
        Path(model.model_path),
        metrics,
        registration_metadata(model, dataset, evaluation),
        card,
        extra_files=[samples] if samples.is_file() else [],
    )
    champion = registry.champion()
    comparison = None
    if champion is not None and champion.version != version.version:
        comparison = compare_on_shared_test(
            champion,
            earlier_champions(registry, champion.version, version.version),
            dataset,
            evaluation,
            layout,
            config,
        )
    decision = registry.promote_if_better(version.version, config, comparison=comparison)
    return RegistrationRecord(
        version=version.version,
        promoted=decision.promoted,
        champion=decision.champion_after,
        summary=decision.summary,
        reasons=list(decision.reasons),
        decision=decision.to_dict(),
    )
