"""Failure messages an operator can act on.

A flow run's final state message is the text of the exception that ended it; the dashboard, the
``prefect flow-run`` commands and the failure webhook all show that text. Flows wrap each stage in
:func:`stage` so that the message names the stage, the cause and what to do next, instead of
Prefect's bare ``Task run encountered an exception``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class StageFailed(RuntimeError):
    """A stage of a flow failed; the message says which, why, and what to do."""


def failure_message(stage_name: str, error: BaseException, what_to_do: str) -> str:
    """``<stage> failed: <Error>: <cause>. What to do: <advice>`` (one line)."""
    cause = str(error).strip().rstrip(".") or "(no message)"
    if isinstance(error, TimeoutError):
        cause += " (it ran past its time limit; a hung download or a much larger input are the usual causes)"
    return f"{stage_name} failed: {type(error).__name__}: {cause}. What to do: {what_to_do}"


@contextmanager
def stage(stage_name: str, what_to_do: str) -> Iterator[None]:
    """Re-raise any exception of the block as :class:`StageFailed` with an actionable message.

    A :class:`StageFailed` from an inner stage passes through unchanged, so the innermost stage
    names the cause.
    """
    try:
        yield
    except StageFailed:
        raise
    except Exception as error:
        raise StageFailed(failure_message(stage_name, error, what_to_do)) from error
