"""One training + evaluation run on an image folder, through the library (no Prefect).

Prints one JSON line with the test metrics, training wall time and peak RSS of this process.
Used by the benchmarks in this folder; run each configuration in its own process so that peak
RSS belongs to it alone.

    python bench/train_eval.py --images ../shared/data/br35h --profile seed --split random
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from braincls.common.layout import DataLayout
from braincls.config import (
    AugmentConfig,
    EvaluateConfig,
    ImportConfig,
    PreprocessConfig,
    SplitConfig,
    TrainConfig,
)
from braincls.data.stage import run_import, run_preprocess, run_split
from braincls.evaluate.stage import run_evaluate
from braincls.model.saved import TRAIN_RECORD_FILE
from braincls.train.stage import run_train

#: The seed project's way: stretched canvas, no intensity standardisation, no augmentation,
#: plain Adam at a constant rate in float32, fixed 15 epochs, no class weights, no early
#: stopping.
SEED_PREPROCESS = {"crop_to_head": False, "keep_aspect": False, "intensity": "none"}
SEED_TRAIN = {
    "model": "seed_cnn",
    "dropout_rate": 0.5,
    "learning_rate": 1e-3,
    "lr_schedule": "plateau",
    "mixed_precision": "off",
    "weight_decay": 0.0,
    "class_weights": False,
    "early_stopping_patience": 0,
    "reduce_lr_patience": 0,
    "augment": AugmentConfig(enabled=False).model_dump(),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--profile", choices=["seed", "braincls"], default="braincls")
    parser.add_argument("--split", choices=["grouped", "random"], default="grouped")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    layout = DataLayout(args.data_root.resolve())
    preprocess = PreprocessConfig(
        image_size_px=args.image_size, **(SEED_PREPROCESS if args.profile == "seed" else {})
    )
    train_overrides: dict[str, object] = dict(SEED_TRAIN) if args.profile == "seed" else {}
    train_overrides["seed"] = args.seed
    if args.epochs:
        train_overrides["epochs"] = args.epochs
    elif args.profile == "seed":
        train_overrides["epochs"] = 15
    train_config = TrainConfig.model_validate(train_overrides)

    started = time.perf_counter()
    imported = run_import(args.images, layout, ImportConfig()).record
    split = run_split([imported], layout, SplitConfig(strategy=args.split, seed=args.seed)).record
    dataset = run_preprocess(split, layout, preprocess).record
    data_seconds = time.perf_counter() - started
    started = time.perf_counter()
    model = run_train(dataset, layout, train_config).record
    train_seconds = time.perf_counter() - started
    run_id = f"bench-{args.profile}-{args.split}-{args.seed}"
    evaluation = run_evaluate(
        model, dataset, layout, EvaluateConfig(gradcam_examples_per_category=2), run_id
    ).record
    metrics = json.loads(Path(evaluation.metrics_path).read_text())
    n_train = dataset.counts["train"]
    result = {
        "profile": args.profile,
        "model": train_config.model,
        "split": metrics["split"],
        "image_size_px": args.image_size,
        "epochs_run": model.epochs_run,
        "n_train": sum(n_train.values()),
        "n_test": metrics["n_test"],
        "accuracy": metrics["accuracy"],
        "accuracy_at_0_5": evaluation.metrics["accuracy_at_0_5"],
        "roc_auc": metrics["roc_auc"],
        "sensitivity": metrics["sensitivity"],
        "specificity": metrics["specificity"],
        "roc_auc_ci": metrics["confidence_intervals"].get("roc_auc"),
        "threshold": metrics["threshold"],
        "data_seconds": round(data_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "train_images_per_second": round(
            sum(n_train.values()) * model.epochs_run / train_seconds, 1
        ),
        "precision_policy": json.loads((Path(model.model_dir) / TRAIN_RECORD_FILE).read_text())[
            "precision_policy"
        ],
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "report": evaluation.report_html,
        "model_path": model.model_path,
    }
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
