"""The training stage: one training per key at a time, whoever starts it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from braincls.common.layout import DataLayout
from braincls.common.locks import LockTimeout
from braincls.config import TrainConfig
from braincls.data.stage import DatasetRecord
from braincls.model.saved import MODEL_FILE, TRAIN_RECORD_FILE, TRAINING_SAMPLES_FILE
from braincls.train import stage as train_stage
from braincls.train.fit import TrainResult
from braincls.train.stage import run_train, train_key

RECORD = DatasetRecord(
    key="d",
    manifest_path="unused",
    manifest_sha256="abc",
    quarantine_path="unused",
    class_names=["no", "yes"],
    strategy="grouped",
    image_size_px=32,
    counts={},
    source="phantom",
    data_root="unused",
)


class FakeTraining:
    """Stands in for Keras: sleeps, counts how many trainings run at once, writes a model."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = 0
        self.most_at_once = 0
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(
        self,
        dataset: Any,
        data_root: Path,
        model_dir: Path,
        work_dir: Path,
        *args: Any,
        **kwargs: Any,
    ) -> TrainResult:
        with self.lock:
            self.calls += 1
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / "epoch").write_text("in progress")
        time.sleep(self.seconds)
        model_dir.mkdir(parents=True, exist_ok=True)
        for name in (MODEL_FILE, TRAIN_RECORD_FILE, TRAINING_SAMPLES_FILE):
            (model_dir / name).write_bytes(b"x")
        with self.lock:
            self.running -= 1
        return TrainResult(
            model_dir, model_dir / MODEL_FILE, model_dir / TRAIN_RECORD_FILE, {}, 1, self.seconds
        )


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTraining:
    training = FakeTraining(seconds=0.5)
    monkeypatch.setattr(train_stage, "train_model", training)
    monkeypatch.setattr(train_stage, "read_dataset", lambda record: None)
    return training


def test_two_runs_of_one_key_train_once(fake: FakeTraining, tmp_path: Path) -> None:
    # Two retrain deployments reaching the same training at once (same data, same config).
    layout = DataLayout(tmp_path)
    outcomes: list[bool] = []

    def train() -> None:
        outcomes.append(run_train(RECORD, layout, TrainConfig()).reused)

    threads = [threading.Thread(target=train) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert (fake.calls, fake.most_at_once) == (1, 1)
    assert sorted(outcomes) == [False, True]  # the second reuses the first one's model


def test_a_training_waits_at_most_its_lock_timeout(fake: FakeTraining, tmp_path: Path) -> None:
    import fcntl

    layout = DataLayout(tmp_path)
    key = train_key(RECORD, TrainConfig())
    lock = layout.runs / key / ".lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(LockTimeout) as error:
            run_train(RECORD, layout, TrainConfig(), lock_timeout_seconds=0.2)
    assert str(error.value).startswith(f"training {key} (braincls_resnet on phantom): {lock}")
    assert fake.calls == 0
