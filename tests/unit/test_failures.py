"""Failure messages that name the stage, the cause and what to do."""

from __future__ import annotations

import pytest

from flows.failures import StageFailed, failure_message, stage


def test_stage_wraps_an_error_with_the_stage_and_advice() -> None:
    with pytest.raises(StageFailed) as caught, stage("listing X at http://h/", "check the name"):
        raise ValueError("unknown filter(s) ['Bogus']")
    assert str(caught.value) == (
        "listing X at http://h/ failed: ValueError: unknown filter(s) ['Bogus']. "
        "What to do: check the name"
    )
    assert isinstance(caught.value.__cause__, ValueError)


def test_inner_stage_message_passes_through_unchanged() -> None:
    with (
        pytest.raises(StageFailed, match=r"^inner failed: KeyError: 'k'\. What to do: a$"),
        stage("outer", "b"),
        stage("inner", "a"),
    ):
        raise KeyError("k")


def test_timeouts_say_that_the_time_limit_was_reached() -> None:
    message = failure_message("training", TimeoutError("Scope timed out after 5 second(s)."), "x")
    assert message == (
        "training failed: TimeoutError: Scope timed out after 5 second(s) (it ran past its time "
        "limit; a hung download or a much larger input are the usual causes). What to do: x"
    )
