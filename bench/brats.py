"""BraTS glioma slices: patient-level cross-validation per sequence, and across sources.

    .venv/bin/python bench/brats.py [--folds 4] [--train-on flair,t1ce,t2,t1ce+flair+t2]
        [--image-size 64] [--epochs 10] [--cross] [--data-root DIR]

The 16 BraTS patients of ``../shared/data/brats`` are split into ``--folds`` folds by patient;
each fold's model trains on the other folds' patients (two of them validate: the threshold is
chosen there, Youden, never on the test fold) in the sequences of one ``--train-on`` option,
and scores the test fold's patients in every sequence. Out-of-fold predictions are pooled, so
every slice is scored once by a model that never saw its patient; per (option, scored sequence):
ROC AUC with a 95% bootstrap interval, sensitivity and specificity, also on slices balanced by
brain area (equal tumour and tumour-free slices in every brain-area band: slice position carries
no signal there), and the ROC AUC of the brain area alone (the position shortcut). Slices are
labelled from the masks by the default labelling rule.

``--cross`` adds, side by side in the same run, the default model trained on Br35H's grouped
split scored on every BraTS slice, and a model trained on all 16 patients (the ``--cross-on``
sequences) scored on Br35H's grouped test split.

Prints markdown tables; writes ``bench/results/brats.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
from loso import area_balanced, measure

from braincls.common.layout import DataLayout
from braincls.common.tables import SPLIT_COLUMN
from braincls.config import (
    EvaluateConfig,
    ImportConfig,
    LabelRuleConfig,
    PreprocessConfig,
    SplitConfig,
    TrainConfig,
    VolumesConfig,
)
from braincls.data.stage import (
    SplitRecord,
    read_dataset,
    run_import,
    run_preprocess,
    run_split,
    run_volumes,
)
from braincls.data.stored import load_stored_images
from braincls.evaluate.stage import run_evaluate
from braincls.model.saved import load_model, predict_probabilities
from braincls.train.stage import run_train

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
SEQUENCES = ("t1ce", "flair", "t2")


def slices(layout: DataLayout, brats: Path, image_px: int) -> pd.DataFrame:
    """Every labelled slice of every patient in every sequence, one source per sequence."""
    frames = []
    for sequence in SEQUENCES:
        record = run_volumes(
            brats,
            layout,
            VolumesConfig(sequences=(sequence,), image_size_px=max(2 * image_px, 192)),
            LabelRuleConfig(),
        ).record
        frame = pd.read_parquet(record.manifest_path)
        frame["source"] = f"brats-{sequence}"
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    frame["label_index"] = frame["label"].map({"no": 0, "yes": 1}).astype("int64")
    return frame


def fold_of(cases: list[str], folds: int, seed: int) -> dict[str, int]:
    order = np.random.default_rng(seed).permutation(sorted(cases))
    return {str(case): index % folds for index, case in enumerate(order)}


def write_split(
    layout: DataLayout, frame: pd.DataFrame, name: str, preprocess: PreprocessConfig
) -> Any:
    from braincls.common.atomic import write_parquet
    from braincls.common.records import stage_key

    key = stage_key("split-bench-brats", "1", name, len(frame))
    folder = layout.manifests / "split-bench-brats" / key
    path = write_parquet(folder / "split.parquet", frame.astype({SPLIT_COLUMN: "string"}))
    quarantine = write_parquet(
        folder / "quarantine.parquet",
        pd.DataFrame({"source_path": [], "relative_path": [], "reason": []}, dtype="string"),
    )
    counts = {
        str(split): {str(k): int(v) for k, v in part.groupby("label").size().items()}
        for split, part in frame.groupby(SPLIT_COLUMN)
    }
    sources = sorted(set(frame["source"].astype(str)))
    record = SplitRecord(
        key=key,
        manifest_path=str(path),
        quarantine_path=str(quarantine),
        class_names=["no", "yes"],
        strategy="grouped",
        counts=counts,
        source="+".join(sources),
        sources=[{"name": s, "kind": "bench", "config": {}} for s in sources],
    )
    return run_preprocess(record, layout, preprocess).record


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig.model_validate(
        {"epochs": args.epochs, "warmup_epochs": 2, "early_stopping_patience": 4, "seed": args.seed}
    )


def score(model_path: str, dataset_record: Any, layout: DataLayout, split: str) -> pd.DataFrame:
    """P(tumour) of every image of one split of a dataset, beside its manifest row."""
    frame = read_dataset(dataset_record)
    part = frame[frame[SPLIT_COLUMN] == split].reset_index(drop=True)
    images = load_stored_images(
        [str(layout.root / str(p)) for p in part["image_path"]], dataset_record.image_size_px
    )
    part["p_positive"] = predict_probabilities(load_model(Path(model_path)), images)
    return part


def cross_validate(
    layout: DataLayout, frame: pd.DataFrame, option: str, args: argparse.Namespace
) -> tuple[pd.DataFrame, list[float]]:
    """Out-of-fold predictions for one training option; the thresholds of the folds."""
    trained = [f"brats-{s}" for s in option.split("+")]
    cases = sorted(set(frame["case"].astype(str)))
    folds = fold_of(cases, args.folds, args.seed)
    preprocess = PreprocessConfig(image_size_px=args.image_size)
    scored, thresholds = [], []
    for fold in range(args.folds):
        test_cases = [c for c in cases if folds[c] == fold]
        rest = [c for c in cases if folds[c] != fold]
        val_cases = set(rest[: max(1, len(rest) // 6)])
        part = frame.copy()
        part[SPLIT_COLUMN] = [
            "test" if c in test_cases else ("val" if c in val_cases else "train")
            for c in part["case"].astype(str)
        ]
        # Train and validate on the option's sequences; test on every sequence.
        part = part[(part[SPLIT_COLUMN] == "test") | part["source"].isin(trained)]
        dataset = write_split(layout, part, f"{option}-{fold}-{args.seed}", preprocess)
        model = run_train(dataset, layout, train_config(args)).record
        evaluation = run_evaluate(
            model,
            dataset,
            layout,
            EvaluateConfig(gradcam_examples_per_category=0, bootstrap_resamples=0),
            f"bench-brats-{option}-{fold}",
        ).record
        predictions = pd.read_parquet(evaluation.predictions_path)
        rows = part[part[SPLIT_COLUMN] == "test"].merge(
            predictions[["sample_id", "p_positive"]], on="sample_id"
        )
        rows["threshold"] = evaluation.threshold
        scored.append(rows)
        thresholds.append(float(evaluation.threshold))
    return pd.concat(scored, ignore_index=True), thresholds


def per_sequence(scored: pd.DataFrame) -> dict[str, Any]:
    """Figures per scored sequence; each slice at its own fold's threshold."""
    out: dict[str, Any] = {}
    for source, part in scored.groupby("source"):
        labels = part["label_index"].to_numpy(np.int64)
        probabilities = part["p_positive"].to_numpy(np.float64)
        predicted = probabilities >= part["threshold"].to_numpy()
        figures = measure(labels, probabilities, 0.5)
        figures["sensitivity"] = round(float(predicted[labels == 1].mean()), 4)
        figures["specificity"] = round(float((~predicted[labels == 0]).mean()), 4)
        balanced = area_balanced(part)
        b_labels = balanced["label_index"].to_numpy(np.int64)
        b_pred = balanced["p_positive"].to_numpy() >= balanced["threshold"].to_numpy()
        balanced_figures = measure(b_labels, balanced["p_positive"].to_numpy(np.float64), 0.5)
        balanced_figures["sensitivity"] = round(float(b_pred[b_labels == 1].mean()), 4)
        balanced_figures["specificity"] = round(float((~b_pred[b_labels == 0]).mean()), 4)
        from sklearn.metrics import roc_auc_score

        out[str(source)] = {
            "all": figures,
            "area_balanced": balanced_figures,
            "brain_area_alone_auc": round(
                float(roc_auc_score(labels, part["brain_area_mm2"].to_numpy())), 4
            ),
        }
    return out


def cross_source(
    layout: DataLayout, frame: pd.DataFrame, args: argparse.Namespace
) -> dict[str, Any]:
    """Br35H's model on BraTS, a BraTS model on Br35H's test split, side by side."""
    preprocess = PreprocessConfig(image_size_px=args.image_size)
    imported = run_import(args.br35h, layout, ImportConfig()).record
    split = run_split([imported], layout, SplitConfig(seed=args.seed)).record
    br35h = run_preprocess(split, layout, preprocess).record
    br35h_model = run_train(br35h, layout, train_config(args)).record
    br35h_eval = run_evaluate(
        br35h_model,
        br35h,
        layout,
        EvaluateConfig(gradcam_examples_per_category=0, bootstrap_resamples=0),
        "bench-brats-br35h",
    ).record
    # Every BraTS slice as a test image of the Br35H model.
    everything = frame.copy()
    everything[SPLIT_COLUMN] = "test"
    brats_all = write_split(layout, everything, f"all-test-{args.seed}", preprocess)
    on_brats = score(br35h_model.model_path, brats_all, layout, "test")
    on_brats["threshold"] = br35h_eval.threshold
    # A model on all 16 patients (the --cross-on sequences), threshold on two patients.
    trained = [f"brats-{s}" for s in args.cross_on.split("+")]
    cases = sorted(set(frame["case"].astype(str)))
    val_cases = set(cases[:2])
    part = frame[frame["source"].isin(trained)].copy()
    part[SPLIT_COLUMN] = ["val" if c in val_cases else "train" for c in part["case"].astype(str)]
    test_rows = read_dataset(br35h)
    test_rows = test_rows[test_rows[SPLIT_COLUMN] == "test"].drop(
        columns=["image_path", "mean_intensity", "std_intensity", "image_size_px"]
    )
    combined = pd.concat([part, test_rows], ignore_index=True)
    dataset = write_split(layout, combined, f"cross-{args.cross_on}-{args.seed}", preprocess)
    brats_model = run_train(dataset, layout, train_config(args)).record
    brats_eval = run_evaluate(
        brats_model,
        dataset,
        layout,
        EvaluateConfig(gradcam_examples_per_category=0, bootstrap_resamples=0),
        "bench-brats-on-br35h",
    ).record
    predictions = pd.read_parquet(brats_eval.predictions_path)
    return {
        "br35h_model_on_br35h_test": brats_like(br35h_eval.metrics),
        "br35h_model_on_brats": per_sequence(on_brats),
        "brats_model_on_br35h_test": measure(
            predictions["label_index"].to_numpy(np.int64),
            predictions["p_positive"].to_numpy(np.float64),
            float(brats_eval.threshold),
        ),
        "brats_model_trained_on": args.cross_on,
    }


def brats_like(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics.get(k) for k in ("roc_auc", "sensitivity", "specificity", "n_test")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--train-on", default="flair,t1ce,t2,t1ce+flair+t2")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cross", action="store_true")
    parser.add_argument("--cross-on", default="t1ce+flair+t2")
    parser.add_argument("--brats", type=Path, default=SHARED / "brats")
    parser.add_argument("--br35h", type=Path, default=SHARED / "br35h")
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "brats.json")
    args = parser.parse_args(argv)
    options = [o for o in args.train_on.split(",") if o]
    for option in [*options, args.cross_on]:
        unknown = set(option.split("+")) - set(SEQUENCES)
        if unknown:
            parser.error(f"unknown sequence(s) {sorted(unknown)} in {option!r}")
    root = args.data_root or Path(tempfile.mkdtemp(prefix="braincls-brats-"))
    layout = DataLayout(root.resolve())
    started = time.perf_counter()
    frame = slices(layout, args.brats, args.image_size)
    result: dict[str, Any] = {
        "folds": args.folds,
        "image_size_px": args.image_size,
        "epochs": args.epochs,
        "seed": args.seed,
        "slices": frame.groupby(["source", "label"]).size().astype(int).to_dict(),
        "cross_validation": {},
    }
    result["slices"] = {f"{k[0]}/{k[1]}": v for k, v in result["slices"].items()}
    for option in options:
        scored, thresholds = cross_validate(layout, frame, option, args)
        result["cross_validation"][option] = {
            "thresholds": [round(t, 4) for t in thresholds],
            "by_sequence": per_sequence(scored),
        }
        print(json.dumps({option: result["cross_validation"][option]}), flush=True)
    if args.cross:
        result["cross_source"] = cross_source(layout, frame, args)
        print(json.dumps(result["cross_source"]), flush=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(
        "| trained on | scored on | ROC AUC (95% CI) | sens / spec | area-balanced AUC | sens / spec | brain area alone |"
    )
    print("|---|---|---|---|---|---|---|")
    for option, block in result["cross_validation"].items():
        for source, figures in block["by_sequence"].items():
            a, b = figures["all"], figures["area_balanced"]
            print(
                f"| {option} | {source} | {a['roc_auc']} ({a['roc_auc_ci'][0]}-{a['roc_auc_ci'][1]}) "
                f"| {a['sensitivity']} / {a['specificity']} | {b['roc_auc']} "
                f"({b['roc_auc_ci'][0]}-{b['roc_auc_ci'][1]}) | {b['sensitivity']} / "
                f"{b['specificity']} | {figures['brain_area_alone_auc']} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
