"""Evaluation of a trained model on the held-out test split, and on any labelled data set.

The decision threshold is chosen on the validation split and then fixed; every number written
says which data and which split produced it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from braincls.common.tables import SPLIT_COLUMN
from braincls.config import EvaluateConfig

logger = logging.getLogger(__name__)

SPLIT_DESCRIPTIONS = {
    "grouped": "grouped by near-duplicate group (image folders) or patient (DICOM): no group on two sides",
    "random": "random by file (as the seed project did): near-duplicates can sit on both sides, scores are optimistic",
}


class EvaluationError(RuntimeError):
    """The model or the data cannot be evaluated."""


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def evaluate_predictions(
    y_true_val: np.ndarray,
    y_prob_val: np.ndarray,
    y_true_test: np.ndarray,
    y_prob_test: np.ndarray,
    config: EvaluateConfig,
) -> dict[str, Any]:
    """Threshold from validation, then test metrics with bootstrap intervals."""
    from braincls.evaluate.metrics import (
        binary_metrics,
        bootstrap_ci,
        choose_threshold,
        undefined_metric_notes,
    )

    threshold = (
        config.threshold
        if config.threshold_rule == "fixed"
        else choose_threshold(
            y_true_val,
            y_prob_val,
            config.threshold_rule,
            config.min_sensitivity,
            fixed_threshold=config.threshold,
        )
    )
    metrics = binary_metrics(
        y_true_test, y_prob_test, threshold, calibration_bins=config.calibration_bins
    )
    intervals = (
        bootstrap_ci(
            y_true_test,
            y_prob_test,
            threshold,
            n_resamples=config.bootstrap_resamples,
            seed=config.bootstrap_seed,
            confidence=config.confidence_level,
            calibration_bins=config.calibration_bins,
        )
        if config.bootstrap_resamples > 0
        else {}
    )
    # Accuracy at 0.5 too: the seed reported it that way.
    at_half = binary_metrics(
        y_true_test, y_prob_test, 0.5, calibration_bins=config.calibration_bins
    )
    return {
        "threshold": float(threshold),
        "threshold_rule": config.threshold_rule,
        "metrics": {k: _finite(float(v)) for k, v in metrics.items()},
        "intervals": {
            k: [_finite(float(lo)), _finite(float(hi))] for k, (lo, hi) in intervals.items()
        },
        "accuracy_at_0_5": float(at_half["accuracy"]),
        "notes": undefined_metric_notes(metrics),
    }


def split_strategy_name(strategy: str, dataset: pd.DataFrame) -> str:
    """The report's name for how the split was made."""
    if strategy == "random":
        return "random_by_file"
    if "patient_id" in dataset and dataset["patient_id"].notna().all():
        return "grouped_by_patient"
    return "grouped_by_near_duplicate"


@dataclass(frozen=True)
class EvaluationResult:
    """What :func:`evaluate_model` wrote and measured."""

    report_dir: Path
    report_html: Path
    report_md: Path
    metrics_path: Path
    predictions_path: Path
    threshold: float
    threshold_rule: str
    #: Headline test metrics with their intervals and the data they come from.
    summary: dict[str, Any]
    plots: dict[str, Path] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoredSplit:
    """One split of a dataset scored by a model: its rows, labels, probabilities, images."""

    rows: pd.DataFrame
    labels: np.ndarray
    probabilities: np.ndarray
    images: np.ndarray


def score_split(
    model: Any, dataset: pd.DataFrame, split: str, data_root: Path, image_size_px: int
) -> ScoredSplit:
    """P(positive) of every stored image of ``split`` (the same code path prediction uses)."""
    from braincls.data.stored import load_stored_images, split_images
    from braincls.model.saved import predict_probabilities

    paths, labels = split_images(dataset, split, data_root)
    images = (
        load_stored_images(paths, image_size_px)
        if paths
        else np.empty((0, image_size_px, image_size_px, 1), np.uint8)
    )
    return ScoredSplit(
        rows=dataset[dataset[SPLIT_COLUMN] == split],
        labels=labels,
        probabilities=predict_probabilities(model, images),
        images=images,
    )


def _classes_present(labels: np.ndarray) -> set[int]:
    return {int(v) for v in np.unique(labels)}


def draw_plots(
    test: ScoredSplit,
    result: dict[str, Any],
    config: EvaluateConfig,
    class_names: list[str],
    report_dir: Path,
    *,
    subtitle: str,
    history: dict[str, list[float]] | None,
    model: Any,
) -> dict[str, Path]:
    """The report's plots. ROC and PR curves need both classes: data of one class (healthy
    volunteers only, say) gets the confusion matrix and calibration only, and a note."""
    from braincls.evaluate.plots import (
        plot_confusion_matrix,
        plot_gradcam_grid,
        plot_pr_curve,
        plot_reliability_diagram,
        plot_roc_curve,
        plot_training_curves,
    )

    metrics = result["metrics"]
    threshold = result["threshold"]
    confusion = np.array(
        [[metrics["tn"], metrics["fp"]], [metrics["fn"], metrics["tp"]]], dtype=np.int64
    )
    plots: dict[str, Path] = {
        "confusion_matrix": plot_confusion_matrix(
            confusion, class_names, report_dir / "confusion_matrix.png", subtitle=subtitle
        ),
        "reliability": plot_reliability_diagram(
            test.labels,
            test.probabilities,
            report_dir / "reliability.png",
            n_bins=config.calibration_bins,
            ece=metrics.get("ece"),
            subtitle=subtitle,
        ),
    }
    if len(_classes_present(test.labels)) == 2:
        interval = result["intervals"].get("roc_auc")
        plots["roc"] = plot_roc_curve(
            test.labels,
            test.probabilities,
            report_dir / "roc.png",
            threshold=threshold,
            roc_auc_interval=tuple(interval) if interval and None not in interval else None,
            subtitle=subtitle,
        )
        plots["pr"] = plot_pr_curve(
            test.labels,
            test.probabilities,
            report_dir / "pr.png",
            threshold=threshold,
            subtitle=subtitle,
        )
    if history and history.get("loss"):
        plots["training_curves"] = plot_training_curves(history, report_dir / "training_curves.png")
    if config.gradcam_examples_per_category > 0 and len(test.labels):
        try:
            from braincls.model.gradcam import explain_examples, select_examples

            chosen = select_examples(
                test.labels, test.probabilities, threshold, config.gradcam_examples_per_category
            )
            rows = explain_examples(model, test.images, test.probabilities, chosen)
            plots["gradcam"] = plot_gradcam_grid(rows, report_dir / "gradcam.png")
        except Exception as error:  # Grad-CAM is an aid; its failure must not lose the report.
            logger.warning("Grad-CAM skipped: %s", error)
    return plots


def predictions_table(test: ScoredSplit, threshold: float) -> pd.DataFrame:
    """One row per test image: sample id, source, label, P(positive), predicted class."""
    return pd.DataFrame(
        {
            "sample_id": test.rows["sample_id"].to_numpy(),
            "source": test.rows["source"].to_numpy(),
            "split": "test",
            "label_index": test.labels,
            "p_positive": test.probabilities,
            "predicted_index": (test.probabilities >= threshold).astype(np.int64),
        }
    )


def split_counts(dataset: pd.DataFrame, class_names: list[str]) -> dict[str, dict[str, int]]:
    """Images per split and class."""
    return {
        split: {
            name: int(((dataset[SPLIT_COLUMN] == split) & (dataset["label"] == name)).sum())
            for name in class_names
        }
        for split in ("train", "val", "test")
    }


def headline(
    result: dict[str, Any], ctx: Any, model_name: str, by_source: pd.DataFrame
) -> dict[str, Any]:
    """The evaluation record's summary of the test metrics, with where they come from."""
    metrics = result["metrics"]
    return {
        "accuracy": metrics["accuracy"],
        "accuracy_at_0_5": result["accuracy_at_0_5"],
        "roc_auc": metrics["roc_auc"],
        "sensitivity": metrics["sensitivity"],
        "specificity": metrics["specificity"],
        "threshold": result["threshold"],
        "split": ctx.split_strategy,
        "model": model_name,
        "n_train": ctx.count("train"),
        "n_val": ctx.count("val"),
        "n_test": ctx.count("test"),
        "intervals": result["intervals"],
        "notes": list(result["notes"]),
        "by_source": [
            {
                key: _finite(value) if isinstance(value, float) else value
                for key, value in row.items()
            }
            for row in by_source.to_dict("records")
        ],
    }


def evaluate_model(
    model_path: Path,
    dataset: pd.DataFrame,
    data_root: Path,
    report_dir: Path,
    config: EvaluateConfig,
    *,
    run_id: str,
    model_name: str,
    class_names: list[str],
    strategy: str,
    source: str,
    history: dict[str, list[float]] | None = None,
    data_hash: str | None = None,
    model_version: str | None = None,
) -> EvaluationResult:
    """Evaluate a saved model on the dataset's test split; write plots and the report.

    The threshold is chosen on the ``val`` split (by ``config.threshold_rule``) before the test
    predictions are looked at. Writes ``report.html`` (self-contained), ``report.md``,
    ``metrics.json``, the plots and ``predictions.parquet`` (sample id, split, label, P(tumor))
    under ``report_dir``. Every metric is also given per source (``by_source``).
    """
    from braincls import __version__
    from braincls.common.atomic import write_parquet
    from braincls.evaluate.metrics import metrics_by_group, multiclass_report
    from braincls.evaluate.report import ReportContext, write_report
    from braincls.model.saved import load_model

    data_root = Path(data_root)
    report_dir = Path(report_dir)
    if len(class_names) != 2:
        raise EvaluationError(f"binary evaluation needs two classes, got {class_names}")
    model = load_model(model_path)
    image_size_px = int(model.input_shape[1])
    fixed = config.threshold_rule == "fixed"
    val = score_split(model, dataset, "val", data_root, image_size_px) if not fixed else None
    test = score_split(model, dataset, "test", data_root, image_size_px)
    if len(test.labels) == 0 or (val is not None and len(val.labels) == 0):
        raise EvaluationError(
            f"evaluation needs val and test images; got "
            f"{0 if val is None else len(val.labels)} val, {len(test.labels)} test"
        )
    empty = np.empty(0)
    result = evaluate_predictions(
        val.labels if val is not None else empty.astype(np.int64),
        val.probabilities if val is not None else empty,
        test.labels,
        test.probabilities,
        config,
    )
    threshold = result["threshold"]
    report_dir.mkdir(parents=True, exist_ok=True)
    chosen = "fixed at training" if fixed else f"chosen on val, {config.threshold_rule}"
    subtitle = f"test split of {source}, threshold {threshold:.3f} ({chosen})"
    plots = draw_plots(
        test,
        result,
        config,
        class_names,
        report_dir,
        subtitle=subtitle,
        history=history,
        model=model,
    )
    predictions = predictions_table(test, threshold)
    predictions_path = write_parquet(report_dir / "predictions.parquet", predictions)
    by_source = metrics_by_group(
        predictions,
        "source",
        threshold=threshold,
        prob_col="p_positive",
        calibration_bins=config.calibration_bins,
    )
    metrics = result["metrics"]
    ctx = ReportContext(
        run_id=run_id,
        model_name=model_name,
        model_version=model_version,
        data_source=source,
        split_strategy=split_strategy_name(strategy, dataset),  # type: ignore[arg-type]
        split_counts=split_counts(dataset, class_names),
        class_names=class_names,
        metrics={k: (float("nan") if v is None else v) for k, v in metrics.items()},
        threshold=threshold,
        threshold_rule=config.threshold_rule,
        threshold_split="training (fixed)" if fixed else "val",
        intervals={
            k: (float("nan") if lo is None else lo, float("nan") if hi is None else hi)
            for k, (lo, hi) in result["intervals"].items()
        },
        confidence_level=config.confidence_level,
        bootstrap_resamples=config.bootstrap_resamples,
        classification_report=multiclass_report(
            test.labels, predictions["predicted_index"].to_numpy(), class_names
        ),
        per_source_metrics=by_source,
        history=history,
        plots=plots,
        data_hash=data_hash,
        code_version=__version__,
        notes=tuple(result["notes"]),
    )
    paths = write_report(report_dir, ctx)
    return EvaluationResult(
        report_dir=report_dir,
        report_html=paths.html,
        report_md=paths.markdown,
        metrics_path=paths.metrics_json,
        predictions_path=predictions_path,
        threshold=threshold,
        threshold_rule=config.threshold_rule,
        summary=headline(result, ctx, model_name, by_source),
        plots=plots,
    )
