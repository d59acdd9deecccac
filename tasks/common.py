"""What every braincls task shares: retry rules, the stage-task decorator, the cached state,
artifact helpers.

Caching is the library's (stage records keyed by content, see
:mod:`braincls.common.records`); Prefect's own task cache is off everywhere, so there is one
cache, its results are JSON files under the data root, and ``refresh`` rebuilds what it says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State
from prefect.task_engine import TaskRunTimeoutError

from braincls.common.records import MissingStageOutput, Outcome

#: Exceptions worth a retry at a file-based stage: the filesystem hiccupped, nothing is wrong
#: with the data or the configuration. A missing input is not transient.
TRANSIENT_IO = (OSError, TimeoutError)
NOT_TRANSIENT = (FileNotFoundError, MissingStageOutput, TaskRunTimeoutError)

#: Time limits of the stages (seconds). Generous: they catch a hung stage, not a slow one.
MINUTE = 60
HOUR = 3600

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")


def ensure_global_limit(name: str, limit: int) -> bool:
    """Create the Prefect global concurrency limit ``name`` with ``limit`` slots unless it
    exists (an existing one keeps the value an operator gave it); True when it was created.

    Prefect skips a missing limit with a warning and does not limit at all, so every flow that
    relies on one makes sure it is there before holding it.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return False
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=limit)
            )
        except ObjectAlreadyExists:  # created by another run meanwhile
            return False
    return True


def submit_bounded(task: Any, items: Sequence[Any], limit: int, *args: Any) -> list[Any]:
    """Submit ``task(item, *args)`` for every item, never more than ``limit`` unfinished at a
    time (the flow's task runner may have more threads); the futures, in item order."""
    from prefect.futures import as_completed

    futures: list[Any] = []
    running: set[Any] = set()
    for item in items:
        while len(running) >= max(1, limit):
            running.discard(next(as_completed(list(running))))
        future = task.submit(item, *args)
        futures.append(future)
        running.add(future)
    return futures


def retry_on(*exception_types: type[BaseException]) -> Callable[[Any, Any, Any], bool]:
    """A ``retry_condition_fn`` that retries only when the task raised one of the given types.

    Never retried: a task that ran past its own ``timeout_seconds`` (another try would spend
    the same time again; ``TaskRunTimeoutError`` is a ``TimeoutError``, hence the explicit
    case) and a missing input file (``FileNotFoundError`` is an ``OSError``).
    """

    def should_retry(task: Any, task_run: Any, state: Any) -> bool:
        try:
            state.result()
        except NOT_TRANSIENT:
            return False
        except exception_types:
            return True
        except BaseException:
            return False
        return False

    return should_retry


def stage_task(
    name: str,
    *,
    timeout_seconds: float | None,
    tags: Sequence[str],
    retries: int = 2,
    retry_delay_seconds: Sequence[float] = (2, 10),
    retry_condition_fn: Callable[[Any, Any, Any], bool] | None = None,
) -> Callable[[F], F]:
    """The decorator of a braincls stage task: retries on transient I/O errors (or the given
    condition), a time limit, tags, and no Prefect cache or result persistence (the stage's
    own record is the cache)."""
    return task(  # type: ignore[return-value]
        name=name,
        timeout_seconds=timeout_seconds,
        retries=retries,
        retry_delay_seconds=list(retry_delay_seconds),
        retry_condition_fn=retry_condition_fn or retry_on(*TRANSIENT_IO),
        cache_policy=NO_CACHE,
        persist_result=False,
        tags=["braincls", *tags],
    )


def finished(outcome: Outcome[R]) -> R | State:
    """The task's return value: the record, or a ``Cached`` state holding it when the stage
    reused an earlier run's outputs (so the dashboard shows which stages did work)."""
    if outcome.reused:
        return Completed(
            name="Cached",
            data=outcome.record,
            message="reused the outputs of an earlier run with the same inputs",
        )
    return outcome.record


def _markdown_cell(value: Any) -> str:
    """A table cell: ``|`` escaped and line breaks flattened, so a value cannot break the row."""
    return (
        str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")
    )


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A GitHub-style markdown table of ``rows`` (same keys in each row)."""
    if not rows:
        return "_(none)_"
    headers = list(rows[0])
    lines = [
        "| " + " | ".join(_markdown_cell(h) for h in headers) + " |",
        "|" + "---|" * len(headers),
    ]
    lines += [
        "| " + " | ".join(_markdown_cell(row.get(h, "")) for h in headers) + " |" for row in rows
    ]
    return "\n".join(lines)
