"""Training behaviour: the default model learns, resumes after a crash, never leaves half a model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pytest

from braincls.config import AugmentConfig, TrainConfig
from braincls.model.saved import MODEL_FILE, TRAINING_SAMPLES_FILE, read_training_samples
from braincls.train import precision as precision_module
from braincls.train.fit import class_weights, learning_rate, train_model
from braincls.train.precision import precision_policy

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
        rows.append(
            {
                "sample_id": f"s{index:03d}",
                "source": "tiny",
                "image_path": f"images/{index:03d}.png",
                "label_index": label,
                "split": split,
            }
        )
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
        class_names=["no", "yes"],
        data={"manifest_sha256": "test"},
        on_epoch_end=hook,
    )


def test_class_weights_balance_classes() -> None:
    assert class_weights([0, 0, 0, 1]) == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}
    assert class_weights([0, 1, 0, 1]) == {0: 1.0, 1: 1.0}


def test_cosine_schedule_warms_up_then_decays_to_zero() -> None:
    config = _config(epochs=5, warmup_epochs=1, learning_rate=2e-3)
    schedule = learning_rate(config, steps_per_epoch=10)
    assert float(schedule(0)) == pytest.approx(2e-4)
    assert float(schedule(5)) == pytest.approx(1.1e-3)
    assert float(schedule(10)) == pytest.approx(2e-3)
    assert float(schedule(30)) == pytest.approx(1e-3)  # half-way through the decay
    assert float(schedule(50)) == pytest.approx(0.0, abs=1e-9)
    assert learning_rate(config, steps_per_epoch=None) == 2e-3
    assert learning_rate(config.model_copy(update={"lr_schedule": "plateau"}), 10) == 2e-3


def test_precision_policy_follows_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    assert precision_policy("auto", ["/physical_device:GPU:0"]) == "mixed_float16"
    assert precision_policy("off", ["/physical_device:GPU:0"]) == "float32"
    assert precision_policy("on", []) == "mixed_float16"
    assert precision_policy("bfloat16", []) == "mixed_bfloat16"
    monkeypatch.setattr(precision_module, "cpu_has_amx_bf16", lambda: True)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert precision_policy("auto", []) == "float32"  # bfloat16 without oneDNN is very slow
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    assert precision_policy("auto", []) == "mixed_bfloat16"
    monkeypatch.setattr(precision_module, "cpu_has_amx_bf16", lambda: False)
    assert precision_policy("auto", []) == "float32"


def test_mixed_precision_training_saves_a_float32_model(
    tiny_dataset: tuple[Path, pd.DataFrame], tmp_path: Path
) -> None:

    root, frame = tiny_dataset
    result = _train(root, frame, tmp_path, _config(epochs=1, mixed_precision="bfloat16"))
    assert json.loads(result.record_path.read_text())["precision_policy"] == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"
    model = keras.models.load_model(result.model_path)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert model.predict(np.zeros((1, SIZE, SIZE, 1)), verbose=0).dtype == np.float32


def test_default_model_learns(tiny_dataset: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    root, frame = tiny_dataset
    result = _train(root, frame, tmp_path, _config(epochs=6))
    assert result.epochs_run == 6
    assert result.history["loss"][-1] < result.history["loss"][0]
    record = json.loads(result.record_path.read_text())
    assert record["model"] == "braincls_resnet"
    assert record["epochs_run"] == 6
    assert record["class_weights"] == {"0": 1.0, "1": 1.0}
    # bfloat16 on a CPU with AMX when oneDNN is on (TensorFlow's default), float32 otherwise.
    fast_bfloat16 = precision_module.onednn_enabled() and precision_module.cpu_has_amx_bf16()
    assert record["precision_policy"] == ("mixed_bfloat16" if fast_bfloat16 else "float32")
    assert record["config"]["test_time_flip"] is True
    # Beside the model: the samples it was trained and validated on, never to be scored on.
    assert record["training_samples"] == TRAINING_SAMPLES_FILE
    samples = pd.read_parquet(tmp_path / "model" / TRAINING_SAMPLES_FILE)
    assert samples.columns.tolist() == ["sample_id", "split"]
    assert samples["split"].value_counts().to_dict() == {"train": 64, "val": 16}
    assert read_training_samples(tmp_path / "model") == {f"s{i:03d}" for i in range(80)}
    from braincls.model.factory import MIRROR_LAYER, single_view
    from braincls.model.saved import load_model

    saved = load_model(result.model_path)
    assert MIRROR_LAYER in {layer.name for layer in saved.layers}
    assert single_view(saved).name == "braincls_resnet"
    image = np.asarray(cv2.imread(str(root / frame.image_path[1]), cv2.IMREAD_GRAYSCALE))
    both = np.stack([image, image[:, ::-1]])[..., None].astype(np.float32)
    p_image, p_mirror = saved.predict(both, verbose=0)[:, 0]
    assert p_image == pytest.approx(p_mirror, abs=1e-6)
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
    assert keras.mixed_precision.global_policy().name == "float32"
    assert not (tmp_path / "model").exists()
    assert not list(tmp_path.glob("**/*.keras"))

    seen_retry: list[int] = []
    result = _train(
        root, frame, tmp_path, _config(epochs=4), lambda e, t, logs: seen_retry.append(e)
    )
    assert seen_retry == [3, 4]  # resumed after the last finished epoch, not from epoch 1
    assert result.epochs_run == 4
    # The cosine schedule resumed at the restored optimizer step, not at step 0: 4 steps/epoch.
    schedule = learning_rate(_config(epochs=4), steps_per_epoch=4)
    expected = [float(schedule(step)) for step in (4, 8, 12, 16)]
    assert result.history["learning_rate"] == pytest.approx(expected, rel=1e-5)
    assert len(result.history["val_auc"]) == 4
    assert (tmp_path / "model" / MODEL_FILE).is_file()
