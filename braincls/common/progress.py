"""Progress of long work, as plain events handed to a callback.

The library reports progress (images converted or scored, series downloaded, epochs trained)
by calling a :data:`ProgressCallback` it is given, and knows nothing about who listens: the
command line renders the events in the terminal, a Prefect task turns them into a progress
artifact. No callback, no cost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Progress:
    """One step of a piece of work.

    ``task`` names the work (``"score"``, ``"convert"``, ``"download"``, ``"train"``) and stays
    the same across its events; ``done`` of ``total`` units (``total`` None when unknown) have
    been finished; ``unit`` names them (``"images"``, ``"series"``, ``"epochs"``); ``metrics``
    carries numbers worth showing with the step (an epoch's loss and validation AUC).
    ``stage`` alone (``done`` 0, ``total`` None) announces a stage starting.
    """

    task: str
    done: int = 0
    total: int | None = None
    unit: str = ""
    detail: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    #: True on the last event of ``task``.
    finished: bool = False


#: The ``unit`` of a stage's last event: the stage as a whole finished (``detail``: its state).
STAGE_UNIT = "stage"

#: What the library calls with each :class:`Progress` event.
ProgressCallback = Callable[[Progress], None]


def report(callback: ProgressCallback | None, event: Progress) -> None:
    """Hand ``event`` to ``callback`` if there is one."""
    if callback is not None:
        callback(event)
