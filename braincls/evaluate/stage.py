"""The evaluation stage's entry point, and where a model's fixed threshold is found."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from braincls.common.hashing import sha256_file
from braincls.common.layout import DataLayout
from braincls.common.records import (
    RECORD_FILE,
    Outcome,
    require,
    reusable,
    stage_key,
    write_record,
)
from braincls.config import EvaluateConfig
from braincls.data.stage import DatasetRecord, read_dataset
from braincls.train.stage import ModelRecord

logger = logging.getLogger(__name__)

#: Code version of the evaluation stage.
EVALUATE_STAGE_VERSION = "2"


class ThresholdMissing(LookupError):
    """No decision threshold was fixed for this model: it has not been evaluated."""


@dataclass(frozen=True)
class EvaluationRecord:
    """Output of the evaluation stage: the report, the test metrics and the fixed threshold."""

    key: str
    run_id: str
    report_dir: str
    report_html: str
    report_md: str
    metrics_path: str
    predictions_path: str
    metrics: dict[str, Any]
    threshold: float
    threshold_rule: str
    model_sha256: str
    dataset_manifest_sha256: str
    plots: dict[str, str] = field(default_factory=dict)

    def output_paths(self) -> Iterable[Path]:
        """The report files and plots this record names."""
        return [
            Path(p)
            for p in (self.report_html, self.report_md, self.metrics_path, self.predictions_path)
        ] + [Path(p) for p in self.plots.values()]


def evaluate_key(model: ModelRecord, dataset: DatasetRecord, config: EvaluateConfig) -> str:
    """Key of the evaluation stage: model bytes, dataset manifest and evaluation config."""
    return stage_key(
        "evaluate",
        EVALUATE_STAGE_VERSION,
        model.model_sha256,
        dataset.manifest_sha256,
        config.config_hash(),
    )


def run_evaluate(
    model: ModelRecord,
    dataset: DatasetRecord,
    layout: DataLayout,
    config: EvaluateConfig,
    run_id: str,
    *,
    refresh: bool = False,
) -> Outcome[EvaluationRecord]:
    """Evaluate the model on the test split; the report goes to ``reports/<run_id>/``.

    An evaluation with the same key (same model bytes, dataset and config) whose report files
    are all still there is not repeated: its record, naming its earlier report, is returned.
    """
    from braincls.evaluate.evaluation import evaluate_model

    key = evaluate_key(model, dataset, config)
    record_path = layout.manifests / "evaluate" / key / RECORD_FILE
    found = reusable(record_path, EvaluationRecord, refresh=refresh)
    if found is not None:
        return Outcome(found, reused=True)
    result = evaluate_model(
        require(model.model_path),
        read_dataset(dataset),
        layout.root,
        layout.reports / run_id,
        config,
        run_id=run_id,
        model_name=model.model_name,
        class_names=dataset.class_names,
        strategy=dataset.strategy,
        source=dataset.source,
        history=model.history,
        data_hash=dataset.manifest_sha256,
    )
    record = EvaluationRecord(
        key=key,
        run_id=run_id,
        report_dir=str(result.report_dir),
        report_html=str(result.report_html),
        report_md=str(result.report_md),
        metrics_path=str(result.metrics_path),
        predictions_path=str(result.predictions_path),
        metrics=result.summary,
        threshold=result.threshold,
        threshold_rule=result.threshold_rule,
        model_sha256=model.model_sha256,
        dataset_manifest_sha256=dataset.manifest_sha256,
        plots={name: str(path) for name, path in result.plots.items()},
    )
    write_record(record_path, record)
    return Outcome(record, reused=False)


def evaluation_records(data_root: Path) -> list[EvaluationRecord]:
    """Every evaluation record under ``data_root``, oldest first."""
    folder = DataLayout(Path(data_root)).manifests / "evaluate"
    records = []
    for path in sorted(folder.glob(f"*/{RECORD_FILE}"), key=lambda p: p.stat().st_mtime):
        try:
            records.append(EvaluationRecord(**json.loads(path.read_text(encoding="utf-8"))))
        except (ValueError, TypeError):
            logger.warning("%s: unreadable evaluation record, skipped", path)
    return records


def fixed_threshold(model_dir: Path, data_roots: Iterable[Path]) -> float:
    """The decision threshold the evaluation stage fixed for the model in ``model_dir``.

    A registry version carries it in its metadata; a training output is looked up in the
    evaluation records under ``data_roots`` by the model file's hash. A model that was never
    evaluated has no threshold: :class:`ThresholdMissing` (never a default of 0.5).
    """
    from braincls.model.saved import MODEL_FILE, read_saved_model

    saved = read_saved_model(model_dir)
    if saved.threshold is not None:
        return saved.threshold
    digest = sha256_file(Path(model_dir) / MODEL_FILE)
    for root in data_roots:
        for record in reversed(evaluation_records(root)):
            if record.model_sha256 == digest:
                return float(record.threshold)
    raise ThresholdMissing(
        f"{model_dir}: no decision threshold: this model was never evaluated (no evaluation "
        "record names it, and it is not a registry version). Run the pipeline's evaluation, "
        "or use a registered version (models/vNNNN)"
    )
