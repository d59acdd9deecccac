"""Training throughput: braincls' input pipeline against the seed's, same model, side by side.

    .venv/bin/python bench/train_throughput.py [--images ../shared/data/br35h] [--epochs 3]

Both pipelines feed the same model (``braincls_resnet`` by default, 128 px, built and compiled
as :func:`braincls.train.fit.train_model` does, augmentation layers included) with the same batch
size and the same number of steps per epoch, in one process:

- ``braincls``: :func:`braincls.train.inputs.make_dataset` over the stored (preprocessed) 128 px PNGs
  of the grouped split's train part, exactly as training builds it (decode once, cache uint8,
  shuffle, batch, cast, prefetch 2). One epoch is one full pass over the train split, so the
  cache is complete after the first epoch.
- ``seed``: ``keras.utils.image_dataset_from_directory`` on the raw Br35H folder (JPEG decode
  and resize to 128 px every epoch, no caching), grayscale, ``.take(steps)`` to the same number
  of steps.

Epochs are interleaved (one epoch of each pipeline in turn) so that another job on the shared
CPU slows all alike; the first epoch of each (tracing, compilation, the braincls cache filling)
is excluded. Two more rows say where the time goes: ``input only`` iterates each dataset without
the model (what a pipeline comparison alone measures), and ``model only`` trains a third copy
of the model on one in-memory batch repeated, interleaved with the other two (the compute
ceiling no input pipeline can beat).

Prints a markdown table and writes ``bench/results/train_throughput.json``. Peak RSS is the
process's (both pipelines and all models together).
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IN_MEMORY = "one in-memory batch"


def rss_mb() -> float:
    """Current resident set size of this process (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def prepare_train_split(
    images: Path, data_root: Path, image_size_px: int, seed: int, limit_images: int | None
) -> tuple[list[str], list[int], dict[str, Any]]:
    """Stored PNG paths and labels of the grouped split's train part (import, split, preprocess
    through the library's stages; cached in ``data_root``)."""
    from braincls.common.layout import DataLayout
    from braincls.config import ImportConfig, PreprocessConfig, SplitConfig
    from braincls.data.stage import read_dataset, run_import, run_preprocess, run_split

    layout = DataLayout(data_root.resolve())
    started = time.perf_counter()
    imported = run_import(images, layout, ImportConfig()).record
    split = run_split([imported], layout, SplitConfig(strategy="grouped", seed=seed)).record
    dataset = run_preprocess(split, layout, PreprocessConfig(image_size_px=image_size_px)).record
    frame = read_dataset(dataset)
    train = frame[frame["split"] == "train"]
    if limit_images:
        train = train.sample(n=min(limit_images, len(train)), random_state=seed)
    paths = [str(layout.root / str(p)) for p in train["image_path"]]
    labels = [int(v) for v in train["label_index"]]
    info = {
        "class_names": dataset.class_names,
        "n_images_in_folder": imported.n_images + imported.n_quarantined,
        "data_seconds": round(time.perf_counter() - started, 1),
    }
    return paths, labels, info


def build_compiled(model_name: str, image_size_px: int, augment: bool, seed: int) -> Any:
    """The model as :func:`braincls.train.fit.train_model` builds and compiles it."""
    import keras

    from braincls.config import AugmentConfig, TrainConfig
    from braincls.train.fit import build_for_training
    from braincls.train.precision import accelerators, precision_policy

    config = TrainConfig(  # type: ignore[arg-type]
        model=model_name, seed=seed, augment=AugmentConfig(enabled=augment)
    )
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy(
        precision_policy(config.mixed_precision, accelerators())
    )
    model = build_for_training(config, image_size_px)
    return model


def seed_dataset(images: Path, image_size_px: int, batch_size: int, seed: int, steps: int) -> Any:
    """The seed project's input: decode and resize the raw files every epoch, no cache."""
    import keras

    dataset = keras.utils.image_dataset_from_directory(
        images,
        labels="inferred",
        label_mode="binary",
        color_mode="grayscale",
        image_size=(image_size_px, image_size_px),
        batch_size=batch_size,
        shuffle=True,
        seed=seed,
        verbose=False,
    )
    return dataset.take(steps)


def iterate(dataset: Any) -> tuple[int, float, float]:
    """Images, wall seconds and process CPU seconds of one pass over ``dataset``."""
    count = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for images, _labels in dataset:
        count += int(images.shape[0])
    return count, time.perf_counter() - wall, time.process_time() - cpu


def measured(images: list[int], walls: list[float], cpus: list[float]) -> dict[str, Any]:
    """Throughput over the epochs after the first."""
    total_images, total_wall, total_cpu = sum(images[1:]), sum(walls[1:]), sum(cpus[1:])
    return {
        "epochs_measured": len(images) - 1,
        "images_measured": total_images,
        "seconds_measured": round(total_wall, 2),
        "images_per_second": round(total_images / total_wall, 1) if total_wall else None,
        "cpu_utilisation": round(total_cpu / total_wall, 2) if total_wall else None,
        "warmup_seconds": round(walls[0], 2),
        "epoch_seconds": [round(w, 2) for w in walls],
    }


def table(rows: list[dict[str, Any]]) -> str:
    columns = [
        "measure",
        "pipeline",
        "steps_per_epoch",
        "images_per_epoch",
        "epochs_measured",
        "images_per_second",
        "cpu_utilisation",
        "warmup_seconds",
        "rss_after_mb",
    ]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, default=ROOT.parent / "shared" / "data" / "br35h")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="Data root for the import / split / preprocess stages (default: a temporary folder).",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument(
        "--model", choices=["braincls_resnet", "seed_cnn"], default="braincls_resnet"
    )
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--epochs", type=int, default=3, help="Training epochs per pipeline; the first is warm-up."
    )
    parser.add_argument(
        "--input-epochs",
        type=int,
        default=3,
        help="Passes of the input-only measure (first: warm-up).",
    )
    parser.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Augmentation layers in the model, as in default training.",
    )
    parser.add_argument(
        "--limit-images",
        type=int,
        default=None,
        help="Use only this many training images (smoke runs); steps follow.",
    )
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if args.epochs < 2 or args.input_epochs < 2:
        parser.error("--epochs and --input-epochs need at least 2 (the first is warm-up)")

    with tempfile.TemporaryDirectory(prefix="braincls-throughput-") as tmp:
        data_root = args.data_root or Path(tmp) / "data"
        result = run(args, data_root)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_throughput.json").write_text(json.dumps(result, indent=2))
    print(table(result["rows"]))
    print()
    for line in result["summary"]:
        print(line)


def run(args: argparse.Namespace, data_root: Path) -> dict[str, Any]:
    import keras
    import numpy as np
    import tensorflow as tf

    from braincls.train.inputs import make_dataset

    paths, labels, info = prepare_train_split(
        args.images, data_root, args.image_size, args.seed, args.limit_images
    )
    if info["class_names"] != sorted(p.name for p in args.images.iterdir() if p.is_dir()):
        raise SystemExit(f"class folders of {args.images} differ from {info['class_names']}")
    steps = math.ceil(len(paths) / args.batch_size)
    n_seed_files = info["n_images_in_folder"]
    if steps * args.batch_size > n_seed_files:
        raise SystemExit(f"{steps} steps of {args.batch_size} exceed the {n_seed_files} raw files")
    images_per_epoch = {"braincls": len(paths), "seed": steps * args.batch_size}

    def datasets() -> dict[str, Any]:
        return {
            "braincls": make_dataset(
                paths,
                labels,
                image_size_px=args.image_size,
                batch_size=args.batch_size,
                shuffle=True,
                seed=args.seed,
            ),
            "seed": seed_dataset(args.images, args.image_size, args.batch_size, args.seed, steps),
        }

    rows: list[dict[str, Any]] = []
    started = time.perf_counter()

    # 1. Input only: each dataset iterated without a model, interleaved pass by pass.
    inputs = datasets()
    passes: dict[str, tuple[list[int], list[float], list[float]]] = {
        name: ([], [], []) for name in inputs
    }
    for _ in range(args.input_epochs):
        for name, dataset in inputs.items():
            count, wall, cpu = iterate(dataset)
            passes[name][0].append(count)
            passes[name][1].append(wall)
            passes[name][2].append(cpu)
    for name in inputs:
        rows.append(
            {
                "measure": "input only",
                "pipeline": name,
                "steps_per_epoch": steps,
                "images_per_epoch": passes[name][0][-1],
                **measured(*passes[name]),
                "rss_after_mb": rss_mb(),
            }
        )
    del inputs

    # 2. Training: one model per pipeline (same weights at start), epochs interleaved with a
    # third model trained on one in-memory batch repeated (the compute ceiling: no input work).
    train_data = datasets()
    batch_x = np.full((args.batch_size, args.image_size, args.image_size, 1), 128, np.float32)
    batch_y = np.resize(np.asarray(labels, np.float32), args.batch_size)
    train_data[IN_MEMORY] = tf.data.Dataset.from_tensors((batch_x, batch_y)).repeat(steps)
    images_per_epoch[IN_MEMORY] = steps * args.batch_size
    models = {
        name: build_compiled(args.model, args.image_size, args.augment, args.seed)
        for name in train_data
    }
    epochs: dict[str, tuple[list[int], list[float], list[float]]] = {
        name: ([], [], []) for name in train_data
    }
    rss_after_warmup: dict[str, float] = {}
    for epoch in range(args.epochs):
        for name, dataset in train_data.items():
            wall, cpu = time.perf_counter(), time.process_time()
            models[name].fit(dataset, epochs=1, verbose=0, shuffle=False)
            epochs[name][0].append(images_per_epoch[name])
            epochs[name][1].append(time.perf_counter() - wall)
            epochs[name][2].append(time.process_time() - cpu)
            if epoch == 0:
                rss_after_warmup[name] = rss_mb()
            print(
                f"train {name} epoch {epoch + 1}/{args.epochs}: {epochs[name][1][-1]:.1f} s",
                flush=True,
            )
    for name in train_data:
        rows.append(
            {
                "measure": "model only" if name == IN_MEMORY else "training",
                "pipeline": name,
                "steps_per_epoch": steps,
                "images_per_epoch": images_per_epoch[name],
                **measured(*epochs[name]),
                "rss_after_warmup_mb": rss_after_warmup[name],
                "rss_after_mb": rss_mb(),
            }
        )

    def speed(measure: str, pipeline: str) -> float:
        return float(
            next(
                r["images_per_second"]
                for r in rows
                if r["measure"] == measure and r["pipeline"] == pipeline
            )
        )

    train_ratio = speed("training", "braincls") / speed("training", "seed")
    input_ratio = speed("input only", "braincls") / speed("input only", "seed")
    ceiling = speed("model only", IN_MEMORY)
    summary = [
        f"training: braincls {speed('training', 'braincls')} img/s, seed-style "
        f"{speed('training', 'seed')} img/s, ratio {train_ratio:.2f}x (goal: 2x)",
        f"input only: braincls {speed('input only', 'braincls')} img/s, seed-style "
        f"{speed('input only', 'seed')} img/s, ratio {input_ratio:.2f}x",
        f"model only (compute ceiling): {ceiling} img/s; braincls training reaches "
        f"{speed('training', 'braincls') / ceiling:.0%} of it",
        f"peak RSS of this process: {peak_rss_mb()} MB",
    ]
    return {
        "model": args.model,
        "image_size_px": args.image_size,
        "batch_size": args.batch_size,
        "augment": args.augment,
        "steps_per_epoch": steps,
        "n_train_images": len(paths),
        "epochs": args.epochs,
        "input_epochs": args.input_epochs,
        "keras_version": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "tensorflow_version": tf.__version__,
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "precision_policy": keras.mixed_precision.global_policy().name,
        "cpu_count": os.cpu_count(),
        "data_seconds": info["data_seconds"],
        "bench_seconds": round(time.perf_counter() - started, 1),
        "training_ratio": round(train_ratio, 3),
        "input_only_ratio": round(input_ratio, 3),
        "peak_rss_mb": peak_rss_mb(),
        "rows": rows,
        "summary": summary,
    }


if __name__ == "__main__":
    main()
