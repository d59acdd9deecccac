"""Prefect task of the training stage."""

from __future__ import annotations

from pathlib import Path

from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.states import State
from prefect.task_engine import TaskRunTimeoutError

from braincls.common.layout import DataLayout
from braincls.common.progress import Progress
from braincls.common.records import MissingStageOutput
from braincls.config import TrainConfig
from braincls.data.stage import DatasetRecord
from braincls.train.fit import TrainingError
from braincls.train.stage import ModelRecord, run_train
from tasks.common import HOUR, finished, stage_task
from tasks.progress import forward


def retry_training(task: object, task_run: object, state: object) -> bool:
    """Retry what a second try can fix: a crash or a resource error (training resumes from its
    last finished epoch). Never bad input, a missing input, or a run past the time limit."""
    try:
        state.result()  # type: ignore[attr-defined]
    except (
        TrainingError,
        ValueError,
        KeyError,
        TypeError,
        FileNotFoundError,
        MissingStageOutput,
        TaskRunTimeoutError,
    ):
        return False
    except (OSError, MemoryError, RuntimeError):
        return True
    except Exception as error:
        # TensorFlow's runtime errors (out of memory, an internal error) are not RuntimeErrors.
        return type(error).__module__.startswith("tensorflow")
    return False


@stage_task(
    "train-model",
    timeout_seconds=10 * HOUR,
    tags=["train"],
    retry_delay_seconds=(5, 30),
    retry_condition_fn=retry_training,
)
def train(
    record: DatasetRecord, data_root: str, config: TrainConfig, refresh: bool = False
) -> ModelRecord | State:
    """Train the configured model; progress and history go to the dashboard.

    A retry (or a rerun after a crash) resumes from the last finished epoch.
    """
    progress_id = create_progress_artifact(
        progress=0.0, key="training-progress", description=f"Training {config.model}: epochs done"
    )

    def on_epoch_end(epoch: int, total: int, logs: dict[str, float]) -> None:
        update_progress_artifact(artifact_id=progress_id, progress=100.0 * epoch / total)
        forward(Progress("train", done=epoch, total=total, unit="epochs", metrics=dict(logs)))

    outcome = run_train(
        record, DataLayout(Path(data_root)), config, on_epoch_end=on_epoch_end, refresh=refresh
    )
    model = outcome.record
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
    return finished(outcome)
