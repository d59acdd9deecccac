"""Progress of a flow run for whoever started it in this process (the ``braincls`` command).

The CLI runs flows in its own process and wants to show their progress live in the terminal;
flow parameters are data (a deployment run takes JSON), so the listener cannot be one. It is
a context variable instead: :func:`listening` sets it around the flow call, Prefect copies the
context into every task (threads included), and tasks and flows :func:`forward` the library's
:class:`~braincls.common.progress.Progress` events to it. A run on a worker has no listener:
its progress goes to the dashboard (progress artifacts, logs) only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from braincls.common.progress import Progress, ProgressCallback

_LISTENER: ContextVar[ProgressCallback | None] = ContextVar("braincls_progress", default=None)


@contextmanager
def listening(callback: ProgressCallback | None) -> Iterator[None]:
    """Hand every progress event of the flows run inside the block to ``callback``."""
    token = _LISTENER.set(callback)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def forward(event: Progress) -> None:
    """Give ``event`` to the listener of this run, if one is listening (cheap when not)."""
    listener = _LISTENER.get()
    if listener is not None:
        listener(event)


def listener() -> ProgressCallback | None:
    """The listener to pass to a library call that takes ``on_progress`` (None: nobody)."""
    return _LISTENER.get()
