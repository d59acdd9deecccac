"""Generalisation: train on one image source, evaluate on sources the model never saw.

    .venv/bin/python bench/generalisation.py [--images ../shared/data/br35h]
        [--dicom ../shared/data/dicom] [--epochs 8] [--image-size 128] [--parts a,b,c,d]

Sensitivity (tumor images called tumor) and specificity (tumor-free images called tumor-free)
are reported separately for every external source, at the decision threshold fixed on the
training data's validation split (never tuned on the external data):

a. ``braincls_resnet`` trained on Br35H's grouped split (default preprocessing, augmentation),
   evaluated on its own test split: the in-source reference.
b. The same model on the two real DICOM series, converted with
   :func:`braincls.convert.convert_tree` (labels: patient PGBM-001 of Brain-Tumor-Progression is
   ``yes``, the healthy volunteer ``no``: Br35H's class names, so label indices agree) and
   prepared with the preprocessing saved with the model, as ``braincls evaluate`` does. The
   tumor label is the patient's, applied to every slice: not every slice shows the tumor, so
   the sensitivity there is a lower bound. The volunteer's series is sagittal, Br35H axial.
c. A held-out-by-source split inside Br35H: images of a source characteristic (the
   high-resolution files, geometric mean of width and height >= ``--large-px``, and the files
   stored as single-channel JPEG) are held out of training together; the near-duplicates of a
   held-out image that lack the characteristic are dropped, so no copy of a held-out image is
   trained on. A second model trains on the grouped split of the rest; each held-out part is
   reported on its own.
d. Model (a) on a synthetic phantom set (:func:`devkit.phantom.generate_image_set`) through
   :func:`braincls.evaluate.evaluation.evaluate_external`.

``--model-dir`` evaluates a model trained before on the same grouped split (checked by the
dataset manifest's hash) for parts a, b and d instead of training one. Few epochs leave the
model undertrained (the default model reaches validation ROC AUC 0.9 only after about 7 epochs
at 128 px): read external figures next to part (a)'s in-source row.

Prints a markdown table and writes ``bench/results/generalisation.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd

from braincls.common.hashing import sha256_file
from braincls.common.layout import DataLayout
from braincls.common.records import stage_key
from braincls.common.tables import SPLIT_COLUMN
from braincls.config import (
    EvaluateConfig,
    ImportConfig,
    PreprocessConfig,
    SplitConfig,
    TrainConfig,
)
from braincls.data.stage import (
    DatasetRecord,
    SourceRecord,
    SplitRecord,
    read_dataset,
    run_import,
    run_preprocess,
    run_split,
)
from braincls.evaluate.stage import fixed_threshold, run_evaluate
from braincls.model.saved import MODEL_FILE, TRAIN_RECORD_FILE
from braincls.train.stage import ModelRecord, run_train

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "data"

#: Labels of the two real DICOM series, in Br35H's class names ('no' < 'yes': indices agree).
DICOM_LABELS_CSV = """Collection,PatientID,label
Brain-Tumor-Progression,,yes
,PGBM-001,yes
healthy-volunteer-t1-mprage,,no
"""

HELD_OUT_SPLIT = "heldout"
PARTS = ("a", "b", "c", "d")


def wilson_interval(successes: int, n: int, z: float = 1.96) -> list[float] | None:
    """95% Wilson score interval of a proportion (sensible for small n and for 0 or n)."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def subset_metrics(
    labels: np.ndarray, probabilities: np.ndarray, threshold: float
) -> dict[str, Any]:
    """n per class, sensitivity and specificity (with Wilson intervals), ROC AUC when both
    classes are present, mean P(tumor) per class."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    positive = labels == 1
    called = probabilities >= threshold
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    tp, tn = int((called & positive).sum()), int((~called & ~positive).sum())
    out: dict[str, Any] = {
        "n": len(labels),
        "n_tumor": n_pos,
        "n_no_tumor": n_neg,
        "threshold": round(float(threshold), 4),
        "sensitivity": round(tp / n_pos, 4) if n_pos else None,
        "sensitivity_ci": wilson_interval(tp, n_pos),
        "specificity": round(tn / n_neg, 4) if n_neg else None,
        "specificity_ci": wilson_interval(tn, n_neg),
        "roc_auc": None,
        "mean_p_tumor_on_tumor": round(float(probabilities[positive].mean()), 4) if n_pos else None,
        "mean_p_tumor_on_no_tumor": round(float(probabilities[~positive].mean()), 4)
        if n_neg
        else None,
    }
    if n_pos and n_neg:
        from sklearn.metrics import roc_auc_score

        out["roc_auc"] = round(float(roc_auc_score(labels, probabilities)), 4)
    return out


def predict(model_path: Path, image_paths: list[str], image_size_px: int) -> np.ndarray:
    """P(tumor) per stored image, through the library's evaluation helpers."""
    from braincls.data.stored import load_stored_images
    from braincls.model.saved import load_model, predict_probabilities

    model = load_model(model_path)
    return predict_probabilities(model, load_stored_images(image_paths, image_size_px))


def model_threshold_and_preprocess(
    model: ModelRecord, layout: DataLayout
) -> tuple[float, PreprocessConfig]:
    """The threshold fixed on val (by the evaluation stage) and the preprocessing saved with
    the model, as external validation reads them."""
    from braincls.model.saved import read_saved_model

    saved = read_saved_model(Path(model.model_dir))
    threshold = fixed_threshold(Path(model.model_dir), [layout.root])
    return threshold, PreprocessConfig.model_validate(saved.preprocess)


def train_and_evaluate(
    dataset: DatasetRecord, layout: DataLayout, train_config: TrainConfig, run_id: str
) -> tuple[ModelRecord, dict[str, Any], pd.DataFrame, float]:
    """Train, evaluate on the test split (threshold from val); return the model record, the test
    metrics, the test predictions and the training wall time."""
    started = time.perf_counter()
    model = run_train(dataset, layout, train_config).record
    train_seconds = time.perf_counter() - started
    evaluation = run_evaluate(
        model,
        dataset,
        layout,
        EvaluateConfig(gradcam_examples_per_category=0, bootstrap_resamples=200),
        run_id,
    ).record
    predictions = pd.read_parquet(Path(evaluation.report_dir) / "predictions.parquet")
    return model, dict(evaluation.metrics), predictions, train_seconds


def adopt_model(model_dir: Path, dataset: DatasetRecord, layout: DataLayout) -> ModelRecord:
    """A model trained before (``--model-dir``), copied under this data root, checked to have
    been trained on exactly this dataset (same dataset manifest hash)."""
    import shutil

    record = json.loads((model_dir / TRAIN_RECORD_FILE).read_text())
    if record["manifest_sha256"] != dataset.manifest_sha256:
        raise SystemExit(
            f"{model_dir}: trained on dataset manifest {record['manifest_sha256'][:12]}, "
            f"not on this split's {dataset.manifest_sha256[:12]}: its test split would not be unseen"
        )
    digest = sha256_file(model_dir / MODEL_FILE)
    copy = layout.runs / f"given-{digest[:16]}" / "model"
    if not copy.is_dir():
        shutil.copytree(model_dir, copy)
    return ModelRecord(
        key=f"given-{digest[:16]}",
        model_dir=str(copy),
        model_path=str(copy / MODEL_FILE),
        model_sha256=digest,
        model_name=str(record["model"]),
        epochs_run=int(record["epochs_run"]),
        history=record["history"],
    )


def evaluate_only(
    model: ModelRecord, dataset: DatasetRecord, layout: DataLayout
) -> tuple[ModelRecord, dict[str, Any], pd.DataFrame, float]:
    """As :func:`train_and_evaluate` for a model trained before (no training time)."""
    evaluation = run_evaluate(
        model,
        dataset,
        layout,
        EvaluateConfig(gradcam_examples_per_category=0, bootstrap_resamples=200),
        f"generalisation-a-{model.key}",
    ).record
    predictions = pd.read_parquet(Path(evaluation.report_dir) / "predictions.parquet")
    return model, dict(evaluation.metrics), predictions, 0.0


def br35h_characteristics(frame: pd.DataFrame, large_px: int) -> dict[str, pd.Series]:
    """Boolean masks of the source characteristics held out in part (c)."""
    side = np.sqrt(frame["width"].astype(float) * frame["height"].astype(float))
    return {
        f"large (>= {large_px} px)": pd.Series(side >= large_px, index=frame.index),
        "single-channel JPEG": frame["channels"] == 1,
    }


def holdout_split(
    imported: SourceRecord, layout: DataLayout, large_px: int, seed: int
) -> tuple[SplitRecord, dict[str, Any]]:
    """Split record of part (c): held-out rows get split ``heldout``; their untagged
    near-duplicates are dropped; the rest is split by group as usual."""
    from braincls.common.atomic import write_parquet
    from braincls.common.tables import read_manifest
    from braincls.data.split import split_manifest

    manifest = read_manifest(Path(imported.manifest_path))
    masks = br35h_characteristics(manifest, large_px)
    held = pd.concat(masks.values(), axis=1).any(axis=1)
    dropped = manifest["group_id"].isin(set(manifest.loc[held, "group_id"])) & ~held
    rest = split_manifest(manifest[~held & ~dropped], SplitConfig(strategy="grouped", seed=seed))
    heldout = manifest[held].copy()
    heldout[SPLIT_COLUMN] = HELD_OUT_SPLIT
    frame = pd.concat([rest, heldout]).astype({SPLIT_COLUMN: "string"}).reset_index(drop=True)
    key = stage_key(
        "split-holdout",
        "1",
        sha256_file(Path(imported.manifest_path)),
        {"holdout": large_px, "seed": seed},
    )
    folder = layout.manifests / "split-holdout" / key
    path = write_parquet(folder / "split.parquet", frame)
    counts = {
        str(split): {str(label): int(n) for label, n in part.groupby("label").size().items()}
        for split, part in frame.groupby(SPLIT_COLUMN)
    }
    record = SplitRecord(
        key=key,
        manifest_path=str(path),
        quarantine_path=imported.quarantine_path,
        class_names=imported.class_names,
        strategy="grouped",
        counts=counts,
        source=f"{imported.name} without held-out sources",
        sources=[imported.describe()],
    )
    info = {
        "held_out_images": int(held.sum()),
        "dropped_near_duplicates": int(dropped.sum()),
        "per_characteristic": {name: int(mask.sum()) for name, mask in masks.items()},
        "counts": counts,
    }
    return record, info


def convert_dicom(dicom_dir: Path, layout: DataLayout, tmp: Path) -> pd.DataFrame:
    """The real DICOM series as an images manifest labelled 'yes' / 'no'."""
    from braincls.config import ConvertConfig
    from braincls.convert import convert_tree, load_labels

    labels_path = tmp / "dicom-labels.csv"
    labels_path.write_text(DICOM_LABELS_CSV)
    # Both series are published, de-identified data (TCIA's PGBM-001 and a public volunteer
    # scan): their Patient IDs stay, and the labels name PGBM-001.
    config = ConvertConfig(pseudonymize_patient_id=False)
    result = convert_tree(dicom_dir, layout.converted, config, load_labels(labels_path), workers=1)
    if result.unlabelled:
        raise SystemExit(f"{dicom_dir}: {result.unlabelled} converted images have no label")
    return pd.read_parquet(result.images_manifest)


def evaluate_frame(
    frame: pd.DataFrame,
    model: ModelRecord,
    layout: DataLayout,
    by: str,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Prepare ``frame``'s source images with the model's preprocessing, predict, and report
    per value of column ``by`` and over all rows."""
    from braincls.data.preprocess import preprocess_manifest

    threshold, preprocess = model_threshold_and_preprocess(model, layout)
    frame = frame.copy()
    frame[SPLIT_COLUMN] = "test"
    prepared, _ = preprocess_manifest(frame, layout, preprocess)
    paths = [str(layout.root / str(p)) for p in prepared["image_path"]]
    probabilities = predict(Path(model.model_path), paths, preprocess.image_size_px)
    labels = prepared["label_index"].to_numpy(np.int64)
    per_value = {
        str(value): subset_metrics(labels[mask], probabilities[mask], threshold)
        for value in sorted(prepared[by].astype(str).unique())
        for mask in [prepared[by].astype(str).to_numpy() == value]
    }
    return per_value, subset_metrics(labels, probabilities, threshold)


def row(part: str, trained_on: str, evaluated_on: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {"part": part, "trained_on": trained_on, "evaluated_on": evaluated_on, **metrics}


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return f"{value[0]:.2f}-{value[1]:.2f}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    columns = [
        "part",
        "trained_on",
        "evaluated_on",
        "n_tumor",
        "n_no_tumor",
        "sensitivity",
        "sensitivity_ci",
        "specificity",
        "specificity_ci",
        "roc_auc",
        "mean_p_tumor_on_tumor",
        "mean_p_tumor_on_no_tumor",
        "threshold",
    ]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for item in rows:
        lines.append("| " + " | ".join(fmt(item.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, default=SHARED / "br35h")
    parser.add_argument("--dicom", type=Path, default=SHARED / "dicom")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="Data root of the stages (default: a temporary folder; give one to reuse its cache).",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--large-px", type=int, default=400)
    parser.add_argument("--phantom-images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help=(
            "Use this trained model folder (model.keras + train_record.json, e.g. "
            "<data root>/runs/<key>/model of bench/train_eval.py) for parts a, b and d instead "
            "of training one; it must have been trained on this grouped split."
        ),
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="Comma-separated parts to run (a, b, c, d; b and d need a).",
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if parts - set(PARTS) or ((parts & {"b", "d"}) and "a" not in parts):
        parser.error(f"--parts: choose from {', '.join(PARTS)}; b and d need a")
    with tempfile.TemporaryDirectory(prefix="braincls-generalisation-") as tmp:
        result = run(args, parts, Path(tmp))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generalisation.json").write_text(json.dumps(result, indent=2))
    print(table(result["rows"]))


def run(args: argparse.Namespace, parts: set[str], tmp: Path) -> dict[str, Any]:
    started = time.perf_counter()
    layout = DataLayout((args.data_root or tmp / "data").resolve())
    train_config = TrainConfig(epochs=args.epochs, seed=args.seed)
    preprocess = PreprocessConfig(image_size_px=args.image_size)
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {
        "epochs": args.epochs,
        "image_size_px": args.image_size,
        "train_config": train_config.model_dump(mode="json"),
        "preprocess": preprocess.model_dump(mode="json"),
    }

    imported = run_import(args.images, layout, ImportConfig()).record
    source = imported.name
    if imported.class_names != ["no", "yes"]:
        raise SystemExit(f"{args.images}: classes {imported.class_names}, expected ['no', 'yes']")

    if "a" in parts:
        split = run_split(
            [imported], layout, SplitConfig(strategy="grouped", seed=args.seed)
        ).record
        dataset = run_preprocess(split, layout, preprocess).record
        if args.model_dir:
            given = adopt_model(args.model_dir, dataset, layout)
            model_a, metrics, predictions, seconds = evaluate_only(given, dataset, layout)
        else:
            model_a, metrics, predictions, seconds = train_and_evaluate(
                dataset, layout, train_config, "generalisation-a"
            )
        threshold = float(metrics["threshold"])
        info["a"] = {
            "epochs_run": model_a.epochs_run,
            "train_seconds": round(seconds, 1),
            "test_metrics": metrics,
            "model_path": model_a.model_path,
            "given_model_dir": None if args.model_dir is None else str(args.model_dir),
        }
        rows.append(
            row(
                "a",
                f"{source} grouped train",
                f"{source} grouped test (in source)",
                subset_metrics(
                    predictions["label_index"].to_numpy(),
                    predictions["p_positive"].to_numpy(),
                    threshold,
                ),
            )
        )
        # The in-source reference for part (c): model (a)'s test split by characteristic.
        frame = read_dataset(dataset)
        test = frame[frame[SPLIT_COLUMN] == "test"].set_index("sample_id")
        joined = predictions.set_index("sample_id").join(test[["width", "height", "channels"]])
        for name, mask in br35h_characteristics(joined, args.large_px).items():
            part = joined[mask.to_numpy()]
            rows.append(
                row(
                    "a",
                    f"{source} grouped train",
                    f"{source} grouped test, {name} only (in source)",
                    subset_metrics(
                        part["label_index"].to_numpy(), part["p_positive"].to_numpy(), threshold
                    ),
                )
            )

    if "b" in parts:
        converted = convert_dicom(args.dicom, layout, tmp)
        per_source, overall = evaluate_frame(converted, model_a, layout, by="collection")
        for name, metrics in per_source.items():
            rows.append(row("b", f"{source} grouped train", f"DICOM {name} (external)", metrics))
        rows.append(row("b", f"{source} grouped train", "DICOM both series (external)", overall))
        info["b"] = {
            "n_converted": len(converted),
            "series": converted.groupby("collection").size().to_dict(),
            "note": (
                "tumor label is the patient's, applied to every slice (lower bound of "
                "sensitivity); the volunteer's series is sagittal, Br35H is axial"
            ),
        }

    if "c" in parts:
        split_c, split_info = holdout_split(imported, layout, args.large_px, args.seed)
        dataset_c = run_preprocess(split_c, layout, preprocess).record
        model_c, metrics_c, predictions_c, seconds_c = train_and_evaluate(
            dataset_c, layout, train_config, "generalisation-c"
        )
        threshold_c = float(metrics_c["threshold"])
        trained_on = f"{source} minus held-out sources"
        rows.append(
            row(
                "c",
                trained_on,
                f"{source} rest, grouped test (in source)",
                subset_metrics(
                    predictions_c["label_index"].to_numpy(),
                    predictions_c["p_positive"].to_numpy(),
                    threshold_c,
                ),
            )
        )
        frame_c = read_dataset(dataset_c)
        heldout = frame_c[frame_c[SPLIT_COLUMN] == HELD_OUT_SPLIT].reset_index(drop=True)
        paths = [str(layout.root / str(p)) for p in heldout["image_path"]]
        probabilities = predict(Path(model_c.model_path), paths, args.image_size)
        labels = heldout["label_index"].to_numpy(np.int64)
        for name, mask in br35h_characteristics(heldout, args.large_px).items():
            selected = mask.to_numpy()
            rows.append(
                row(
                    "c",
                    trained_on,
                    f"held out: {name}",
                    subset_metrics(labels[selected], probabilities[selected], threshold_c),
                )
            )
        rows.append(
            row(
                "c", trained_on, "held out: all", subset_metrics(labels, probabilities, threshold_c)
            )
        )
        info["c"] = {
            **split_info,
            "epochs_run": model_c.epochs_run,
            "train_seconds": round(seconds_c, 1),
            "test_metrics": metrics_c,
        }

    if "d" in parts:
        from braincls.evaluate.external import evaluate_external
        from devkit.phantom import generate_image_set

        phantom_dir = tmp / "phantom"
        generate_image_set(phantom_dir, n_images=args.phantom_images, seed=args.seed)
        evaluation = evaluate_external(
            Path(model_a.model_dir),
            phantom_dir,
            layout.root,
            EvaluateConfig(gradcam_examples_per_category=0, bootstrap_resamples=0),
            run_id="generalisation-d",
        )
        predictions = pd.read_parquet(Path(evaluation.report_dir) / "predictions.parquet")
        rows.append(
            row(
                "d",
                f"{source} grouped train",
                "phantom set (synthetic, external)",
                subset_metrics(
                    predictions["label_index"].to_numpy(),
                    predictions["p_positive"].to_numpy(),
                    float(evaluation.threshold),
                ),
            )
        )

    info["seconds"] = round(time.perf_counter() - started, 1)
    info["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return {**info, "rows": rows}


if __name__ == "__main__":
    main()
