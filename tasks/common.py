"""What every braincls task shares: content cache keys, retry rules, artifact helpers."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from prefect.context import TaskRunContext
from prefect.task_engine import TaskRunTimeoutError

#: Exceptions worth a retry at a file-based stage: the filesystem hiccupped, nothing is wrong
#: with the data or the configuration.
TRANSIENT_IO = (OSError, TimeoutError)

#: Time limits of the stages (seconds). Generous: they catch a hung stage, not a slow one.
MINUTE = 60
HOUR = 3600


def retry_on(*exception_types: type[BaseException]) -> Callable[[Any, Any, Any], bool]:
    """A ``retry_condition_fn`` that retries only when the task raised one of the given types.

    A task that ran past its own ``timeout_seconds`` is never retried: another try would spend
    the same time again (``TaskRunTimeoutError`` is a ``TimeoutError``, hence the explicit case).
    """

    def should_retry(task: Any, task_run: Any, state: Any) -> bool:
        try:
            state.result()
        except TaskRunTimeoutError:
            return False
        except exception_types:
            return True
        except BaseException:
            return False
        return False

    return should_retry


def content_key(stage: str, compute: Callable[[dict[str, Any]], str]) -> Callable[..., str]:
    """A ``cache_key_fn`` from a library key function over the task's parameters.

    The key names the stage and the data root (the cache lives under the data root) and comes
    from content, never from pickled arrays.
    """

    def key_fn(context: TaskRunContext, parameters: dict[str, Any]) -> str:
        content = f"{compute(parameters)}|{parameters.get('data_root', '')}"
        return f"{stage}-{hashlib.sha256(content.encode()).hexdigest()[:32]}"

    return key_fn


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A GitHub-style markdown table of ``rows`` (same keys in each row)."""
    if not rows:
        return "_(none)_"
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(row.get(h, "")) for h in headers) + " |" for row in rows]
    return "\n".join(lines)
