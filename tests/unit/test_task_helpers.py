"""What the thin task layer decides itself: which failures are worth another try, and how a
table reaches the dashboard."""

from __future__ import annotations

from typing import Any

import pytest
from prefect.states import Completed, Failed
from prefect.task_engine import TaskRunTimeoutError

from braincls.common.records import MissingStageOutput
from braincls.train.fit import TrainingError
from tasks.common import markdown_table
from tasks.train import retry_training


class _TensorFlowError(Exception):
    """Stands in for tensorflow.errors.ResourceExhaustedError (not a RuntimeError)."""


_TensorFlowError.__module__ = "tensorflow.python.framework.errors_impl"


def _failed(error: BaseException) -> Any:
    return Failed(data=error)


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (OSError("disk hiccup"), True),
        (MemoryError(), True),
        (RuntimeError("worker crashed"), True),
        (_TensorFlowError("OOM when allocating tensor"), True),
        (FileNotFoundError("dataset.parquet"), False),  # an OSError, but a missing input
        (MissingStageOutput("record gone"), False),
        (TrainingError("the train split holds one class only"), False),
        (ValueError("bad config"), False),
        (KeyError("label_index"), False),
        (TaskRunTimeoutError("past 10 h"), False),
        (Exception("anything else"), False),
    ],
)
def test_training_retries_only_what_another_try_can_fix(
    error: BaseException, retried: bool
) -> None:
    assert retry_training(None, None, _failed(error)) is retried


def test_a_completed_training_is_not_retried() -> None:
    assert retry_training(None, None, Completed(data=1)) is False


def test_markdown_cells_cannot_break_the_table() -> None:
    table = markdown_table(
        [{"check": "a|b", "value": "line 1\nline 2", "note": "back\\slash"}, {"check": 3}]
    )
    assert table.splitlines() == [
        "| check | value | note |",
        "|---|---|---|",
        "| a\\|b | line 1 line 2 | back\\\\slash |",
        "| 3 |  |  |",
    ]
    assert markdown_table([]) == "_(none)_"
