"""Live progress for the ``braincls`` command: the :class:`~braincls.common.progress.Progress`
events of long work, rendered with rich when the output is a terminal and as plain lines when
it is not (a log file, CI, a pipe). Only the CLI uses this module; the library only calls the
callback it is given.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TextIO

from braincls.common.progress import STAGE_UNIT, Progress

#: Plain mode prints a line at least this often while a task advances (seconds)...
PLAIN_INTERVAL_S = 10.0
#: ...and whenever it passes another tenth of its total.
PLAIN_STEPS = 10


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 5 s``, ``1 h 12 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def metric_text(metrics: dict[str, float] | Any) -> str:
    """An epoch's numbers for a person: ``loss 0.412, val AUC 0.931``."""
    names = {
        "loss": "loss",
        "val_loss": "val loss",
        "auc": "AUC",
        "val_auc": "val AUC",
        "accuracy": "accuracy",
        "val_accuracy": "val accuracy",
    }
    shown = [f"{label} {float(metrics[key]):.3f}" for key, label in names.items() if key in metrics]
    return ", ".join(shown)


@dataclass
class _Task:
    started: float
    last_line: float = 0.0
    last_step: int = -1


class TerminalProgress:
    """A progress callback for the command line, as a context manager.

    ``rich`` (default: whether ``stream`` is a terminal) chooses a live rich display: one bar
    per task with its count, elapsed time and time left, an epoch's metrics beside its bar.
    Otherwise every event worth a line is printed as one: a stage starting, each epoch, every
    tenth of a task (or every 10 s) and its end.
    """

    def __init__(self, stream: TextIO | None = None, *, rich: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.rich = bool(rich) if rich is not None else self.stream.isatty()
        self._tasks: dict[str, _Task] = {}
        self._progress: Any = None
        self._ids: dict[str, Any] = {}

    def __enter__(self) -> TerminalProgress:
        if self.rich:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=Console(file=self.stream),
                transient=False,
                # Epochs take tens of seconds: estimate the speed over the whole task.
                speed_estimate_period=24 * 3600,
            )
            self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    # ---------------------------------------------------------------- events

    def __call__(self, event: Progress) -> None:
        if self.rich and self._progress is not None:
            self._rich(event)
        else:
            self._plain(event)

    def _rich(self, event: Progress) -> None:
        progress = self._progress
        if event.total is None and event.done == 0 and not event.finished:
            # A task starting: say so, and start its clock (so the time left is measured from
            # here, not from its first step).
            progress.console.print(f"[cyan]{event.task}[/]: {event.detail or 'started'}")
            if event.task in self._ids:
                progress.remove_task(self._ids.pop(event.task))
            self._ids[event.task] = progress.add_task(event.task, total=None, unit="", metrics="")
            self._tasks[event.task] = _Task(started=time.monotonic())
            return
        if event.unit == STAGE_UNIT:
            started = self._tasks.pop(event.task, None)
            took = f" in {duration(time.monotonic() - started.started)}" if started else ""
            progress.console.print(f"[green]{event.task}[/]: {event.detail}{took}")
            if event.task in self._ids:
                progress.remove_task(self._ids.pop(event.task))
            return
        description = event.task if not event.detail else f"{event.task}: {event.detail}"
        fields = {"unit": event.unit, "metrics": metric_text(event.metrics)}
        task_id = self._ids.get(event.task)
        if task_id is None:
            task_id = progress.add_task(description, total=event.total, **fields)
            self._ids[event.task] = task_id
        progress.update(
            task_id,
            completed=event.done,
            total=event.total,
            description=description,
            **fields,
        )
        if event.finished:
            progress.update(task_id, completed=event.total or event.done)
            progress.stop_task(task_id)
            del self._ids[event.task]

    def _plain(self, event: Progress) -> None:
        now = time.monotonic()
        if event.total is None and event.done == 0 and not event.finished:
            self._tasks[event.task] = _Task(started=now)
            self._line(f"{event.task}: {event.detail or 'started'}")
            return
        if event.unit == STAGE_UNIT:
            started = self._tasks.pop(event.task, None)
            took = f" in {duration(now - started.started)}" if started else ""
            self._line(f"{event.task}: {event.detail}{took}")
            return
        task = self._tasks.setdefault(event.task, _Task(started=now))
        step = int(PLAIN_STEPS * event.done / event.total) if event.total else -1
        epoch = event.unit == "epochs"
        due = (
            event.finished
            or epoch
            or (step > task.last_step)
            or now - task.last_line >= PLAIN_INTERVAL_S
        )
        if not due:
            return
        task.last_line, task.last_step = now, step
        count = f"{event.done}/{event.total}" if event.total else str(event.done)
        parts = [f"{event.task}: {count} {event.unit}".rstrip()]
        if event.detail:
            parts.append(event.detail)
        if event.metrics:
            parts.append(metric_text(event.metrics))
        elapsed = now - task.started
        if event.finished:
            parts.append(f"done in {duration(elapsed)}")
            self._tasks.pop(event.task, None)
        elif event.total and event.done:
            left = elapsed * (event.total - event.done) / event.done
            parts.append(f"{duration(elapsed)} elapsed, about {duration(left)} left")
        self._line(", ".join(part for part in parts if part))

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
