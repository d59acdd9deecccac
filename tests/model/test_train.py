"""Training behaviour: the default model learns, resumes after a crash, never leaves half a model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from braincls.config import AugmentConfig, TrainConfig
from braincls.train import MODEL_FILE, class_weights, train_model

SIZE = 32


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """96 synthetic 32 px images: class 1 has a bright blob somewhere, class 0 does not."""
    root = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    rows = []
    for index in range(96):
        label = index % 2
        image = rng.normal(60, 12, (SIZE, SIZE)).clip(0, 255).astype(np.uint8)
        if label:
            center = (int(rng.integers(8, 24)), int(rng.integers(8, 24)))
            cv2.circle(image, center, 4, 220, -1)
        path = root / f"images/{index:03d}.png"
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), image)
        split = "train" if index < 64 else ("val" if index < 80 else "test")
        rows.append({"image_path": f"images/{index:03d}.png", "label_index": label, "split": split})
    return root, pd.DataFrame(rows)


def _config(**overrides: object) -> TrainConfig:
    base: dict[str, object] = {
        "epochs": 4,
        "batch_size": 16,
        "base_filters": 8,
        "learning_rate": 3e-3,
        "early_stopping_patience": 0,
        "reduce_lr_patience": 0,
        "augment": AugmentConfig(enabled=False).model_dump(),
    }
    return TrainConfig.model_validate({**base, **overrides})


def _train(root: Path, frame: pd.DataFrame, out: Path, config: TrainConfig, hook=None):  # type: ignore[no-untyped-def]
    return train_model(
        frame,
        root,
        out / "model",
        out / "work",
        config,
        image_size_px=SIZE,
        manifest_sha256="test",
        class_names=["no", "yes"],
        on_epoch_end=hook,
    )


def test_class_weights_balance_classes() -> None:
    assert class_weights([0, 0, 0, 1]) == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}
    assert class_weights([0, 1, 0, 1]) == {0: 1.0, 1: 1.0}


def test_default_model_learns(tiny_dataset: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    root, frame = tiny_dataset
    result = _train(root, frame, tmp_path, _config(epochs=6))
    assert result.epochs_run == 6
    assert result.history["loss"][-1] < result.history["loss"][0]
    record = json.loads(result.record_path.read_text())
    assert record["model"] == "braincls_resnet"
    assert record["epochs_run"] == 6
    assert record["class_weights"] == {"0": 1.0, "1": 1.0}
    assert record["precision_policy"] == "float32"
    assert (tmp_path / "model" / MODEL_FILE).is_file()


def test_augmented_seed_model_trains(
    tiny_dataset: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    root, frame = tiny_dataset
    result = _train(
        root,
        frame,
        tmp_path,
        _config(model="seed_cnn", epochs=2, augment=AugmentConfig().model_dump()),
    )
    assert result.epochs_run == 2
    assert json.loads(result.record_path.read_text())["model"] == "seed_cnn"


def test_crash_leaves_no_model_and_retry_resumes(
    tiny_dataset: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:
    root, frame = tiny_dataset
    seen_first: list[int] = []

    def crash_after_two(epoch: int, total: int, logs: dict[str, float]) -> None:
        seen_first.append(epoch)
        if epoch == 2:
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError, match="worker lost"):
        _train(root, frame, tmp_path, _config(epochs=4), crash_after_two)
    assert seen_first == [1, 2]
    assert not (tmp_path / "model").exists()
    assert not list(tmp_path.glob("**/*.keras"))

    seen_retry: list[int] = []
    result = _train(
        root, frame, tmp_path, _config(epochs=4), lambda e, t, logs: seen_retry.append(e)
    )
    assert seen_retry == [3, 4]  # resumed after the last finished epoch, not from epoch 1
    assert result.epochs_run == 4
    assert len(result.history["val_auc"]) == 4
    assert (tmp_path / "model" / MODEL_FILE).is_file()
