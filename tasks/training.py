"""Prefect task of the training stage."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.task_engine import TaskRunTimeoutError

from braincls.config import TrainConfig
from braincls.common.layout import DataLayout
from braincls.stages import DatasetRecord, ModelRecord, run_train, train_key
from braincls.train.fit import TrainingError
from tasks.common import HOUR, content_key


def _retry_unless_bad_input(task: object, task_run: object, state: object) -> bool:
    """Retry crashes and resource errors (training resumes from its last epoch), not bad input
    and not a run past the stage's time limit (another try would take as long)."""
    try:
        state.result()  # type: ignore[attr-defined]
    except (TrainingError, ValueError, KeyError, TypeError, TaskRunTimeoutError):
        return False
    except BaseException:
        return True
    return False


@task(
    name="train-model",
    timeout_seconds=10 * HOUR,
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=_retry_unless_bad_input,
    cache_key_fn=content_key("train", lambda p: train_key(p["record"], p["config"])),
    tags=["braincls", "train"],
)
def train(record: DatasetRecord, data_root: str, config: TrainConfig) -> ModelRecord:
    """Train the configured model; progress and history go to the dashboard.

    A retry (or a rerun after a crash) resumes from the last finished epoch.
    """
    progress_id = create_progress_artifact(
        progress=0.0, key="training-progress", description=f"Training {config.model}: epochs done"
    )

    def on_epoch_end(epoch: int, total: int, logs: dict[str, float]) -> None:
        update_progress_artifact(artifact_id=progress_id, progress=100.0 * epoch / total)

    model = run_train(record, DataLayout(Path(data_root)), config, on_epoch_end=on_epoch_end)
    update_progress_artifact(artifact_id=progress_id, progress=100.0)
    epochs = len(model.history.get("loss", []))
    rows = [
        {"epoch": i + 1, **{k: round(v[i], 4) for k, v in model.history.items() if i < len(v)}}
        for i in range(epochs)
    ]
    create_table_artifact(
        key="training-history",
        table=rows,
        description=f"Per-epoch training and validation metrics of {config.model} ({record.strategy} split)",
    )
    return model
