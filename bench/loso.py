"""Leave one source out: train on every source but one, score the one it never saw.

    .venv/bin/python bench/loso.py [--holdout br35h,brats-t1ce,brats-flair,brats-t2,phantom]
        [--recipes today,new] [--image-size 96] [--epochs 12] [--data-root DIR]

Sources (``../shared/data`` by default): Br35H (2-D slices with the skull, near-duplicate
groups), BraTS by sequence (skull-stripped glioma volumes; a slice is labelled from the expert
mask by the default labelling rule) and the synthetic phantom image set. BraTS patients are
divided once into a training pool and a test pool (by a stable hash of the case name): training
sees the pool's patients in the sequences that are not held out; a held-out BraTS sequence is
scored on the *test pool's* patients only, so no patient is on both sides. A held-out Br35H or
phantom is scored on all of its images.

Every model chooses its decision threshold on the validation split of its own training sources
(Youden), never on the held-out data. For each (held-out source, recipe): ROC AUC with a 95%
bootstrap interval, sensitivity and specificity at that threshold, and for BraTS the same on the
slices *balanced by brain area* (tumour and tumour-free slices subsampled to equal numbers in
every brain-area band, so slice position carries no signal). Recipes run side by side in one
run, on the same splits:

- ``today``: the defaults before this release (crop to the head, percentile standardisation,
  the old augmentation, class weights only);
- ``balanced``: today's preprocessing and augmentation, with training weights that balance
  sources, and classes within every brain-area band of a source (against the position
  shortcut);
- ``new``: ``balanced`` plus the skull-insensitive inner brain mask for every source and
  bias-field and low-resolution augmentation;
- ``mask-only``, ``augment-only``: the two halves of ``new`` (ablations).

Prints a markdown table; writes ``bench/results/loso.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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

from braincls.common.atomic import write_parquet
from braincls.common.layout import DataLayout
from braincls.common.records import stage_key
from braincls.common.tables import SPLIT_COLUMN
from braincls.config import (
    AugmentConfig,
    EvaluateConfig,
    ImportConfig,
    LabelRuleConfig,
    PreprocessConfig,
    SplitConfig,
    TrainConfig,
    VolumesConfig,
)
from braincls.data.split import split_manifest
from braincls.data.stage import SourceRecord, SplitRecord, run_import, run_preprocess, run_volumes
from braincls.evaluate.stage import run_evaluate
from braincls.train.stage import run_train

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
SOURCES = ("br35h", "brats-t1ce", "brats-flair", "brats-t2", "phantom")
SEQUENCES = ("t1ce", "flair", "t2")

RECIPES: dict[str, dict[str, Any]] = {
    "today": {
        "preprocess": {},
        "augment": {},
        "train": {"balance_sources": False, "balance_brain_area": False},
    },
    "balanced": {
        "preprocess": {},
        "augment": {},
        "train": {"balance_sources": True, "balance_brain_area": True},
    },
    "new": {
        "preprocess": {"brain_mask": "inner"},
        "augment": {
            "bias_field_max_log_gain": 0.3,
            "low_resolution_probability": 0.25,
            "gamma_max_log2": 0.5,
            "noise_stddev": 0.03,
        },
        "train": {"balance_sources": True, "balance_brain_area": True},
    },
    "mask-only": {
        "preprocess": {"brain_mask": "inner"},
        "augment": {},
        "train": {"balance_sources": True},
    },
    "augment-only": {
        "preprocess": {},
        "augment": {
            "bias_field_max_log_gain": 0.3,
            "low_resolution_probability": 0.25,
            "gamma_max_log2": 0.5,
            "noise_stddev": 0.03,
        },
        "train": {"balance_sources": True},
    },
}


def _case_hash(case: str) -> int:
    return int(hashlib.sha256(case.encode()).hexdigest(), 16)


def test_pool(case: str) -> bool:
    """Whether a BraTS case belongs to the test pool (half of the cases, by a stable hash)."""
    return _case_hash(case) % 2 == 1


def validation_case(case: str) -> bool:
    """Whether a training-pool BraTS case validates (a quarter of the pool, by a stable hash):
    every case holds both classes, so a split stratified by a case's majority label would not
    do."""
    return (_case_hash(case) // 2) % 4 == 0


def load_sources(
    layout: DataLayout, image_px: int, brats: Path, br35h: Path, phantom: Path
) -> dict[str, pd.DataFrame]:
    """Every source's images manifest (imported or sliced through the library's stages)."""
    frames: dict[str, pd.DataFrame] = {}
    frames["br35h"] = pd.read_parquet(
        run_import(br35h, layout, ImportConfig()).record.manifest_path
    )
    frames["phantom"] = pd.read_parquet(
        run_import(phantom, layout, ImportConfig()).record.manifest_path
    )
    for sequence in SEQUENCES:
        record: SourceRecord = run_volumes(
            brats,
            layout,
            VolumesConfig(sequences=(sequence,), image_size_px=max(2 * image_px, 192)),
            LabelRuleConfig(),
        ).record
        frame = pd.read_parquet(record.manifest_path)
        frame["source"] = f"brats-{sequence}"
        frames[f"brats-{sequence}"] = frame
    return frames


def fold_manifest(frames: dict[str, pd.DataFrame], holdout: str, seed: int) -> pd.DataFrame:
    """Training sources split into train / val by group (patient or near-duplicate group);
    the held-out source (its test-pool patients, for BraTS) as ``test``."""
    parts = []
    for name, frame in frames.items():
        frame = frame.copy()
        if name.startswith("brats-"):
            in_test_pool = frame["case"].astype(str).map(test_pool)
            if name == holdout:
                frame = frame[in_test_pool]
                frame[SPLIT_COLUMN] = "test"
                parts.append(frame)
                continue
            frame = frame[~in_test_pool].copy()
            frame[SPLIT_COLUMN] = [
                "val" if validation_case(case) else "train" for case in frame["case"].astype(str)
            ]
            parts.append(frame)
            continue
        if name == holdout:
            frame[SPLIT_COLUMN] = "test"
            parts.append(frame)
            continue
        config = SplitConfig(train_fraction=0.8, val_fraction=0.1, test_fraction=0.1, seed=seed)
        split = split_manifest(frame, config)
        # The source's own test split is not needed: it trains.
        split.loc[split[SPLIT_COLUMN] == "test", SPLIT_COLUMN] = "train"
        parts.append(split)
    manifest = pd.concat(parts, ignore_index=True)
    # Class names are shared ("no", "yes") and label indices follow them.
    manifest["label_index"] = manifest["label"].map({"no": 0, "yes": 1}).astype("int64")
    manifest[SPLIT_COLUMN] = manifest[SPLIT_COLUMN].astype("string")
    return manifest


def split_record(
    layout: DataLayout, manifest: pd.DataFrame, holdout: str, seed: int
) -> SplitRecord:
    key = stage_key("split-loso", "1", holdout, seed, len(manifest))
    path = write_parquet(layout.manifests / "split-loso" / key / "split.parquet", manifest)
    quarantine = layout.manifests / "split-loso" / key / "quarantine.parquet"
    write_parquet(
        quarantine,
        pd.DataFrame({"source_path": [], "relative_path": [], "reason": []}, dtype="string"),
    )
    counts = {
        str(split): {str(k): int(v) for k, v in part.groupby("label").size().items()}
        for split, part in manifest.groupby(SPLIT_COLUMN)
    }
    sources = sorted(set(manifest["source"].astype(str)))
    return SplitRecord(
        key=key,
        manifest_path=str(path),
        quarantine_path=str(quarantine),
        class_names=["no", "yes"],
        strategy="grouped",
        counts=counts,
        source="+".join(sources),
        sources=[{"name": name, "kind": "bench", "config": {}} for name in sources],
    )


def area_balanced(frame: pd.DataFrame, bands: int = 8, seed: int = 0) -> pd.DataFrame:
    """Tumour and tumour-free slices subsampled to equal numbers in every brain-area band."""
    rng = np.random.default_rng(seed)
    edges = np.quantile(frame["brain_area_mm2"], np.linspace(0, 1, bands + 1))
    band = np.clip(np.searchsorted(edges, frame["brain_area_mm2"], side="right") - 1, 0, bands - 1)
    chosen = []
    for value in range(bands):
        part = frame[band == value]
        yes, no = part[part["label_index"] == 1], part[part["label_index"] == 0]
        count = min(len(yes), len(no))
        if count:
            chosen.append(yes.iloc[rng.choice(len(yes), count, replace=False)])
            chosen.append(no.iloc[rng.choice(len(no), count, replace=False)])
    return pd.concat(chosen) if chosen else frame.iloc[0:0]


def measure(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict[str, Any]:
    from braincls.evaluate.metrics import binary_metrics, bootstrap_ci

    metrics = binary_metrics(labels, probabilities, threshold)
    intervals = bootstrap_ci(labels, probabilities, threshold, n_resamples=500, seed=0)
    return {
        "n": len(labels),
        "n_tumour": int(labels.sum()),
        "roc_auc": round(float(metrics["roc_auc"]), 4),
        "roc_auc_ci": [round(float(v), 4) for v in intervals["roc_auc"]],
        "sensitivity": round(float(metrics["sensitivity"]), 4),
        "specificity": round(float(metrics["specificity"]), 4),
    }


def run_fold(
    layout: DataLayout,
    frames: dict[str, pd.DataFrame],
    holdout: str,
    recipe: str,
    args: argparse.Namespace,
) -> dict[str, Any]:
    spec = RECIPES[recipe]
    manifest = fold_manifest(frames, holdout, args.seed)
    split = split_record(layout, manifest, holdout, args.seed)
    preprocess = PreprocessConfig(image_size_px=args.image_size, **spec["preprocess"])
    dataset = run_preprocess(split, layout, preprocess).record
    train_config = TrainConfig.model_validate(
        {
            "epochs": args.epochs,
            "warmup_epochs": 2,
            "early_stopping_patience": 4,
            "seed": args.seed,
            "augment": AugmentConfig(**spec["augment"]).model_dump(),
            **spec["train"],
        }
    )
    started = time.perf_counter()
    model = run_train(dataset, layout, train_config).record
    seconds = time.perf_counter() - started
    evaluation = run_evaluate(
        model,
        dataset,
        layout,
        EvaluateConfig(gradcam_examples_per_category=0, bootstrap_resamples=0),
        f"loso-{holdout}-{recipe}",
    ).record
    threshold = float(evaluation.threshold)
    predictions = pd.read_parquet(evaluation.predictions_path)
    held = manifest[manifest[SPLIT_COLUMN] == "test"].reset_index(drop=True)
    scored = held.merge(predictions[["sample_id", "p_positive"]], on="sample_id")
    labels = scored["label_index"].to_numpy(np.int64)
    probabilities = scored["p_positive"].to_numpy(np.float64)
    row: dict[str, Any] = {
        "holdout": holdout,
        "recipe": recipe,
        "trained_on": sorted(set(manifest.loc[manifest[SPLIT_COLUMN] != "test", "source"])),
        "n_train": int((manifest[SPLIT_COLUMN] == "train").sum()),
        "threshold": round(threshold, 4),
        "epochs_run": model.epochs_run,
        "train_seconds": round(seconds, 1),
        "val_auc_best": round(max(model.history.get("val_auc", [float("nan")])), 4),
        "all": measure(labels, probabilities, threshold),
    }
    if holdout.startswith("brats-"):
        balanced = area_balanced(scored)
        row["area_balanced"] = measure(
            balanced["label_index"].to_numpy(np.int64),
            balanced["p_positive"].to_numpy(np.float64),
            threshold,
        )
        # How much the brain area alone tells the classes apart on this held-out set.
        from sklearn.metrics import roc_auc_score

        row["brain_area_alone_auc"] = round(
            float(roc_auc_score(labels, scored["brain_area_mm2"].to_numpy())), 4
        )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--holdout", default=",".join(SOURCES))
    parser.add_argument("--recipes", default="today,new")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--phantom-images", type=int, default=600)
    parser.add_argument("--br35h", type=Path, default=SHARED / "br35h")
    parser.add_argument("--brats", type=Path, default=SHARED / "brats")
    parser.add_argument("--data-root", type=Path, help="Reuse a data root (its stage records).")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "loso.json")
    args = parser.parse_args(argv)
    holdouts = [h for h in args.holdout.split(",") if h]
    recipes = [r for r in args.recipes.split(",") if r]
    unknown = sorted(set(holdouts) - set(SOURCES)) + sorted(set(recipes) - set(RECIPES))
    if unknown:
        parser.error(f"unknown source or recipe: {', '.join(unknown)}")
    for folder in (args.br35h, args.brats):
        if not folder.is_dir():
            parser.error(f"{folder}: not found")
    root = args.data_root or Path(tempfile.mkdtemp(prefix="braincls-loso-"))
    layout = DataLayout(root.resolve())
    from devkit.phantom import generate_image_set

    phantom = layout.root / "phantom-images"
    if not phantom.is_dir():
        generate_image_set(phantom, n_images=args.phantom_images, seed=args.seed)
    started = time.perf_counter()
    frames = load_sources(layout, args.image_size, args.brats, args.br35h, phantom)
    rows = []
    for holdout in holdouts:
        for recipe in recipes:
            row = run_fold(layout, frames, holdout, recipe, args)
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "image_size_px": args.image_size,
        "epochs": args.epochs,
        "seed": args.seed,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "source_images": {name: len(frame) for name, frame in frames.items()},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(
        "| held out | recipe | ROC AUC (95% CI) | sens / spec | area-balanced AUC | sens / spec |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        every, bal = row["all"], row.get("area_balanced")
        print(
            f"| {row['holdout']} | {row['recipe']} | {every['roc_auc']} "
            f"({every['roc_auc_ci'][0]}-{every['roc_auc_ci'][1]}) | "
            f"{every['sensitivity']} / {every['specificity']} | "
            + (
                f"{bal['roc_auc']} ({bal['roc_auc_ci'][0]}-{bal['roc_auc_ci'][1]}) | "
                f"{bal['sensitivity']} / {bal['specificity']} |"
                if bal
                else "n/a | n/a |"
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
