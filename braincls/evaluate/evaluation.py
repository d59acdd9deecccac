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

import cv2
import numpy as np
import pandas as pd

from braincls.common.atomic import write_json
from braincls.config import EvaluateConfig
from braincls.common.tables import SPLIT_COLUMN

logger = logging.getLogger(__name__)

SPLIT_DESCRIPTIONS = {
    "grouped": "grouped by near-duplicate group (image folders) or patient (DICOM): no group on two sides",
    "random": "random by file (as the seed project did): near-duplicates can sit on both sides, scores are optimistic",
}


class EvaluationError(RuntimeError):
    """The model or the data cannot be evaluated."""


@dataclass(frozen=True)
class EvaluationRecord:
    """Output of the evaluation stage."""

    key: str
    run_id: str
    report_dir: str
    report_html: str
    report_md: str
    metrics_path: str
    metrics: dict[str, Any]
    plots: dict[str, str] = field(default_factory=dict)


def load_images(paths: list[str], image_size_px: int) -> np.ndarray:
    """Stored 8-bit PNGs as a (n, size, size, 1) uint8 array (read with OpenCV, no TensorFlow)."""
    batch = np.empty((len(paths), image_size_px, image_size_px, 1), np.uint8)
    for index, path in enumerate(paths):
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise EvaluationError(f"{path}: stored image missing or unreadable")
        if image.shape != (image_size_px, image_size_px):
            raise EvaluationError(
                f"{path}: {image.shape[1]}x{image.shape[0]} px, the model takes {image_size_px} px"
            )
        batch[index, :, :, 0] = image
    return batch


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


def _split_part(dataset: pd.DataFrame, split: str, data_root: Path) -> tuple[list[str], np.ndarray]:
    part = dataset[dataset[SPLIT_COLUMN] == split]
    return [str(data_root / str(p)) for p in part["image_path"]], part["label_index"].to_numpy(
        np.int64
    )


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
) -> EvaluationRecord:
    """Evaluate a saved model on the dataset's test split; write plots and the report.

    The threshold is chosen on the ``val`` split (by ``config.threshold_rule``) before the test
    predictions are looked at. Writes ``report.html`` (self-contained), ``report.md``,
    ``metrics.json``, the plots and ``predictions.parquet`` (sample id, split, label, P(tumor))
    under ``report_dir``.
    """
    from braincls import __version__
    from braincls.common.atomic import write_parquet
    from braincls.evaluate.metrics import metrics_by_group, multiclass_report
    from braincls.evaluate.plots import (
        plot_confusion_matrix,
        plot_gradcam_grid,
        plot_pr_curve,
        plot_reliability_diagram,
        plot_roc_curve,
        plot_training_curves,
    )
    from braincls.evaluate.report import ReportContext, write_report

    data_root = Path(data_root)
    report_dir = Path(report_dir)
    if len(class_names) != 2:
        raise EvaluationError(f"binary evaluation needs two classes, got {class_names}")
    model = load_model(model_path)
    image_size_px = int(model.input_shape[1])
    val_paths, y_val = _split_part(dataset, "val", data_root)
    test_paths, y_test = _split_part(dataset, "test", data_root)
    fixed = config.threshold_rule == "fixed"
    if len(test_paths) == 0 or (len(val_paths) == 0 and not fixed):
        raise EvaluationError(
            f"evaluation needs val and test images; got {len(val_paths)} val, {len(test_paths)} test"
        )
    p_val = (
        predict_probabilities(model, load_images(val_paths, image_size_px))
        if val_paths
        else np.empty(0, np.float64)
    )
    test_images = load_images(test_paths, image_size_px)
    p_test = predict_probabilities(model, test_images)
    result = evaluate_predictions(y_val, p_val, y_test, p_test, config)
    threshold = result["threshold"]
    metrics = result["metrics"]
    predicted = (p_test >= threshold).astype(np.int64)

    report_dir.mkdir(parents=True, exist_ok=True)
    subtitle = f"test split of {source}, threshold {threshold:.3f} (chosen on val, {config.threshold_rule})"
    confusion = np.array(
        [[metrics["tn"], metrics["fp"]], [metrics["fn"], metrics["tp"]]], dtype=np.int64
    )
    plots: dict[str, Path] = {
        "confusion_matrix": plot_confusion_matrix(
            confusion, class_names, report_dir / "confusion_matrix.png", subtitle=subtitle
        ),
        "roc": plot_roc_curve(
            y_test,
            p_test,
            report_dir / "roc.png",
            threshold=threshold,
            roc_auc_interval=tuple(result["intervals"]["roc_auc"])
            if "roc_auc" in result["intervals"]
            else None,
            subtitle=subtitle,
        ),
        "pr": plot_pr_curve(
            y_test, p_test, report_dir / "pr.png", threshold=threshold, subtitle=subtitle
        ),
        "reliability": plot_reliability_diagram(
            y_test,
            p_test,
            report_dir / "reliability.png",
            n_bins=config.calibration_bins,
            ece=metrics.get("ece"),
            subtitle=subtitle,
        ),
    }
    if history and history.get("loss"):
        plots["training_curves"] = plot_training_curves(history, report_dir / "training_curves.png")
    if config.gradcam_examples_per_category > 0:
        try:
            from braincls.model.gradcam import explain_examples, select_examples

            chosen = select_examples(
                y_test, p_test, threshold, config.gradcam_examples_per_category
            )
            rows = explain_examples(model, test_images, p_test, chosen)
            plots["gradcam"] = plot_gradcam_grid(rows, report_dir / "gradcam.png")
        except Exception as error:  # Grad-CAM is an aid; its failure must not lose the report.
            logger.warning("Grad-CAM skipped: %s", error)

    test_part = dataset[dataset[SPLIT_COLUMN] == "test"]
    predictions = pd.DataFrame(
        {
            "sample_id": test_part["sample_id"].to_numpy(),
            "source": test_part["source"].to_numpy(),
            "split": "test",
            "label_index": y_test,
            "p_positive": p_test,
            "predicted_index": predicted,
        }
    )
    write_parquet(report_dir / "predictions.parquet", predictions)
    per_source = None
    if predictions["source"].nunique() > 1:
        per_source = metrics_by_group(
            predictions, "source", threshold=threshold, prob_col="p_positive"
        )
    counts = {
        split: {
            name: int(((dataset[SPLIT_COLUMN] == split) & (dataset["label"] == name)).sum())
            for name in class_names
        }
        for split in ("train", "val", "test")
    }
    ctx = ReportContext(
        run_id=run_id,
        model_name=model_name,
        model_version=model_version,
        data_source=source,
        split_strategy=split_strategy_name(strategy, dataset),  # type: ignore[arg-type]
        split_counts=counts,
        class_names=class_names,
        metrics={k: (float("nan") if v is None else v) for k, v in metrics.items()},
        threshold=threshold,
        threshold_rule=config.threshold_rule,
        intervals={
            k: (float("nan") if lo is None else lo, float("nan") if hi is None else hi)
            for k, (lo, hi) in result["intervals"].items()
        },
        confidence_level=config.confidence_level,
        bootstrap_resamples=config.bootstrap_resamples,
        classification_report=multiclass_report(y_test, predicted, class_names),
        per_source_metrics=per_source,
        history=history,
        plots=plots,
        data_hash=data_hash,
        code_version=__version__,
        notes=tuple(result["notes"]),
    )
    paths = write_report(report_dir, ctx)
    summary = {
        "accuracy": metrics["accuracy"],
        "accuracy_at_0_5": result["accuracy_at_0_5"],
        "roc_auc": metrics["roc_auc"],
        "sensitivity": metrics["sensitivity"],
        "specificity": metrics["specificity"],
        "threshold": threshold,
        "split": ctx.split_strategy,
        "model": model_name,
        "n_train": ctx.count("train"),
        "n_val": ctx.count("val"),
        "n_test": ctx.count("test"),
        "intervals": result["intervals"],
    }
    return EvaluationRecord(
        key="",
        run_id=run_id,
        report_dir=str(report_dir),
        report_html=str(paths.html),
        report_md=str(paths.markdown),
        metrics_path=str(paths.metrics_json),
        metrics=summary,
        plots={k: str(v) for k, v in plots.items()},
    )


def write_evaluation_record(path: Path, record: EvaluationRecord) -> None:
    """Persist an evaluation record next to its report."""
    from dataclasses import asdict

    write_json(path, asdict(record))


def _converted_dicom(
    dicom_dir: Path, labels_path: Path, layout: Any, model_classes: list[str]
) -> pd.DataFrame:
    """Convert a labelled DICOM folder (per-series cache under the data root) to a manifest
    whose label indices follow the model's class order."""
    from braincls.config import ConvertConfig
    from braincls.convert import ConversionError, LabelsError, convert_tree, load_labels
    from braincls.common.tables import read_manifest

    try:
        table = load_labels(labels_path)
        result = convert_tree(dicom_dir, layout.converted, ConvertConfig(), table)
    except (ConversionError, LabelsError) as error:
        raise EvaluationError(str(error)) from error
    unknown = sorted(set(table.classes) - set(model_classes))
    if unknown:
        raise EvaluationError(
            f"{labels_path}: labels {unknown} are not classes of the model ({model_classes})"
        )
    frame = read_manifest(result.images_manifest)
    if frame.empty:
        raise EvaluationError(
            f"{dicom_dir}: no labelled image ({result.set_aside} files set aside, "
            f"{result.unlabelled} unlabelled); see {result.quarantine_table}"
        )
    frame["label_index"] = frame["label"].map(model_classes.index).astype("int64")
    return frame


def evaluate_external(
    model_dir: Path,
    images_dir: Path,
    data_root: Path,
    config: EvaluateConfig | None = None,
    *,
    run_id: str,
    dicom_labels: Path | None = None,
) -> EvaluationRecord:
    """External validation: evaluate a saved model on every image of a labelled data set.

    ``images_dir`` is a class-per-folder image set or, with ``dicom_labels`` (a labels table),
    a folder of DICOM (e.g. a TCIA collection), converted like the pipeline converts it; its
    classes may be a subset of the model's (e.g. healthy volunteers only). The images are
    prepared exactly as the model's training images were (the preprocessing config saved with
    the model); the decision threshold is the one fixed at training time (saved with the
    model), never tuned on the external data. Every image is test data.
    """
    import json

    from braincls.config import ImportConfig, PreprocessConfig
    from braincls.data.images import import_image_folder
    from braincls.common.layout import DataLayout
    from braincls.data.preprocess import preprocess_manifest

    model_dir = Path(model_dir)
    record_path = model_dir / "train_record.json"
    metadata_path = model_dir / "metadata.json"  # a registry version folder
    if record_path.is_file():
        record = json.loads(record_path.read_text())
    elif metadata_path.is_file() and "train_record" in json.loads(metadata_path.read_text()):
        record = json.loads(metadata_path.read_text())["train_record"]
    else:
        raise EvaluationError(
            f"{model_dir}: not a braincls model folder (no train_record.json, no registry metadata.json)"
        )
    threshold = float(record.get("threshold") or 0.5)
    preprocess = PreprocessConfig.model_validate(
        record.get("preprocess") or {"image_size_px": record["image_size_px"]}
    )
    layout = DataLayout(Path(data_root))
    model_classes = [str(name) for name in record["class_names"]]
    if dicom_labels is not None:
        frame = _converted_dicom(Path(images_dir), Path(dicom_labels), layout, model_classes)
    else:
        imported = import_image_folder(images_dir, ImportConfig())
        if list(imported.class_names) != model_classes:
            raise EvaluationError(
                f"{images_dir}: classes {list(imported.class_names)} differ from the model's {model_classes}"
            )
        frame = imported.manifest.copy()
    frame[SPLIT_COLUMN] = "test"
    source_name = (
        ", ".join(sorted(frame["source"].astype(str).unique()))
        if dicom_labels is not None
        else Path(images_dir).name
    )
    frame, _ = preprocess_manifest(frame, layout, preprocess)
    external = (config or EvaluateConfig()).model_copy(
        update={"threshold_rule": "fixed", "threshold": threshold}
    )
    return evaluate_model(
        model_dir / "model.keras",
        frame,
        layout.root,
        layout.reports / run_id,
        external,
        run_id=run_id,
        model_name=str(record["model"]),
        class_names=list(record["class_names"]),
        strategy="grouped",
        source=f"{source_name} (external: not seen in training)",
        history=None,
    )
