"""Train the default braincls model a few epochs on a phantom set, without TensorFlow.

Run by ``bench/gpu_check.sh`` (which installs Keras from carried wheels and sets
``KERAS_BACKEND``); ``--prepare`` is run by ``bench/gpu_check.sh --fetch-wheels`` on a machine
with the project's environment (OpenCV) to write the phantom set as one ``.npz`` of stored
training images, so the GPU machine needs neither OpenCV nor TensorFlow.

Prints the backend, the devices found, loss and images/s per epoch, and one JSON line; exits
non-zero when training fails, the loss is not finite, TensorFlow was imported, or (without
``--allow-cpu``) the backend sees no GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def prepare(out: Path, n_images: int, image_size_px: int, seed: int) -> None:
    """Phantom PNGs through braincls' default preprocessing, packed as uint8 arrays."""
    from braincls.config import PreprocessConfig
    from braincls.data.preprocess import preprocess_file
    from devkit.phantom import generate_image_set

    config = PreprocessConfig(image_size_px=image_size_px)
    with tempfile.TemporaryDirectory(prefix="braincls-gpu-phantom-") as tmp:
        folder = Path(tmp) / "phantom"
        generate_image_set(folder, n_images=n_images, seed=seed, image_size_px=256)
        paths = sorted(folder.glob("*/*.png"))
        images = np.stack([preprocess_file(path, config) for path in paths])[..., None]
        labels = np.array([1 if path.parent.name == "yes" else 0 for path in paths], np.uint8)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".tmp.npz")
    np.savez_compressed(tmp_out, images=images, labels=labels)
    tmp_out.replace(out)
    print(
        f"wrote {out}: {images.shape} uint8, {int(labels.sum())} tumor, {out.stat().st_size} bytes"
    )


def devices(backend: str) -> tuple[list[str], bool]:
    """Device names the backend sees and whether one is a GPU."""
    if backend == "jax":
        import jax

        found = jax.devices()
        return [str(d) for d in found], any(d.platform == "gpu" for d in found)
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            return [f"cuda:{i} {n}" for i, n in enumerate(names)], True
        return ["cpu"], False
    raise SystemExit(f"KERAS_BACKEND={backend}: this check runs on jax or torch (no TensorFlow)")


def train(args: argparse.Namespace) -> dict[str, Any]:
    import keras

    from braincls.config import AugmentConfig, TrainConfig
    from braincls.model.factory import build_model

    backend = keras.backend.backend()
    names, has_gpu = devices(backend)
    print(f"keras {keras.__version__}, backend {backend}, devices: {names}", flush=True)
    if not has_gpu and not args.allow_cpu:
        raise SystemExit(f"no GPU visible to {backend} (devices: {names}); --allow-cpu to go on")

    data = np.load(args.data)
    images, labels = data["images"], data["labels"].astype(np.float32)
    image_size_px = int(images.shape[1])
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(labels))
    n_val = len(order) // 5
    val_rows, train_rows = order[:n_val], order[n_val:]

    class ArraySequence(keras.utils.PyDataset):
        """braincls' PngSequence over an in-memory uint8 array: uint8 until the batch."""

        def __init__(self, rows: np.ndarray, shuffle: bool) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.rows, self.shuffle = rows.copy(), shuffle

        def __len__(self) -> int:
            return math.ceil(len(self.rows) / args.batch_size)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            chosen = self.rows[index * args.batch_size : (index + 1) * args.batch_size]
            return images[chosen].astype(np.float32), labels[chosen]

        def on_epoch_end(self) -> None:
            if self.shuffle:
                rng.shuffle(self.rows)

    config = TrainConfig(seed=args.seed)
    precision = "mixed_float16" if has_gpu and args.mixed_precision else "float32"
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(args.seed)
    model = build_model(
        "braincls_resnet",
        image_size_px=image_size_px,
        dropout_rate=config.dropout_rate,
        base_filters=config.base_filters,
        augment=AugmentConfig(),
        seed=args.seed,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(
            learning_rate=config.learning_rate, weight_decay=config.weight_decay
        ),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )

    class Timer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []
            self.logs: list[dict[str, float]] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.last_batch_end = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            # Training time only: up to the last training batch, before validation.
            self.seconds.append(self.last_batch_end - self.started)
            self.logs.append({k: float(v) for k, v in (logs or {}).items()})
            print(
                f"epoch {epoch + 1}/{args.epochs}: {self.seconds[-1]:.2f} s, "
                f"{len(train_rows) / self.seconds[-1]:.1f} img/s, "
                + ", ".join(f"{k} {v:.4f}" for k, v in self.logs[-1].items()),
                flush=True,
            )

    timer = Timer()
    model.fit(
        ArraySequence(train_rows, shuffle=True),
        validation_data=ArraySequence(val_rows, shuffle=False),
        epochs=args.epochs,
        callbacks=[timer],
        verbose=0,
    )
    measured = sum(timer.seconds[1:])
    losses = [log["loss"] for log in timer.logs]
    result = {
        "backend": backend,
        "devices": names,
        "gpu": has_gpu,
        "precision_policy": precision,
        "image_size_px": image_size_px,
        "batch_size": args.batch_size,
        "n_train": len(train_rows),
        "n_val": len(val_rows),
        "epochs": args.epochs,
        "first_epoch_seconds": round(timer.seconds[0], 2),
        "images_per_second": round(len(train_rows) * (args.epochs - 1) / measured, 1),
        "loss": [round(v, 4) for v in losses],
        "val_accuracy": round(timer.logs[-1].get("val_accuracy", float("nan")), 4),
        "tensorflow_imported": "tensorflow" in sys.modules,
        "keras_version": keras.__version__,
        "python": sys.version.split()[0],
    }
    if not all(math.isfinite(v) for v in losses):
        raise SystemExit(f"loss is not finite: {losses}")
    if result["tensorflow_imported"]:
        raise SystemExit("TensorFlow was imported: this check must run without it")
    if losses[-1] >= losses[0]:
        print(f"warning: the loss did not fall ({losses[0]:.4f} -> {losses[-1]:.4f})", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="Phantom set (.npz).")
    parser.add_argument("--prepare", action="store_true", help="Write --data, then stop.")
    parser.add_argument("--n-images", type=int, default=600)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4, help="Epochs; the first is warm-up.")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--mixed-precision",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="mixed_float16 on a GPU, as braincls training does (float32 on CPU).",
    )
    parser.add_argument("--allow-cpu", action="store_true", help="Go on when no GPU is seen.")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if args.prepare:
        prepare(args.data, args.n_images, args.image_size, args.seed)
        return
    if args.epochs < 2:
        parser.error("--epochs needs at least 2 (the first is warm-up)")
    os.environ.setdefault("KERAS_BACKEND", "jax")
    print(json.dumps(train(args)))


if __name__ == "__main__":
    main()
