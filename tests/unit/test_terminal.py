"""Live progress in the terminal: plain lines when the output is not a terminal, a rich display
when it is; the events come from the library's callbacks and the flows' stages."""

from __future__ import annotations

import io
import re

from braincls.common.progress import STAGE_UNIT, Progress
from braincls.terminal import TerminalProgress, duration, metric_text


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_for_stages_epochs_and_counts(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    clock = _Clock()
    monkeypatch.setattr("braincls.terminal.time.monotonic", clock)
    out = io.StringIO()
    with TerminalProgress(out) as progress:
        assert not progress.rich  # a StringIO is no terminal
        progress(Progress("validate", detail="started"))
        clock.now += 4
        progress(Progress("validate", unit=STAGE_UNIT, detail="completed", finished=True))
        progress(Progress("train", detail="started"))
        for epoch in (1, 2):
            clock.now += 30
            progress(
                Progress(
                    "train",
                    done=epoch,
                    total=30,
                    unit="epochs",
                    metrics={"loss": 0.5 / epoch, "val_auc": 0.8 + epoch / 100, "lr": 1e-3},
                )
            )
        progress(Progress("train", unit=STAGE_UNIT, detail="cached", finished=True))
        for done in range(0, 101):
            clock.now += 0.01
            progress(Progress("score", done=done, total=100, unit="images", finished=done == 100))
    lines = out.getvalue().splitlines()
    assert lines[:6] == [
        "validate: started",
        "validate: completed in 4 s",
        "train: started",
        "train: 1/30 epochs, loss 0.500, val AUC 0.810, 30 s elapsed, about 14 min 30 s left",
        "train: 2/30 epochs, loss 0.250, val AUC 0.820, 1 min elapsed, about 14 min left",
        "train: cached in 1 min",
    ]
    score = lines[6:]
    # One line per tenth of the work and one at the end, not one per image.
    assert len(score) == 11
    assert score[0] == "score: 0/100 images"
    assert score[-1] == "score: 100/100 images, done in 1 s"
    assert all(re.fullmatch(r"score: \d+/100 images.*", line) for line in score)


def test_rich_display_on_a_terminal() -> None:
    out = io.StringIO()
    with TerminalProgress(out, rich=True) as progress:
        progress(Progress("train", detail="started"))
        progress(Progress("train", done=3, total=3, unit="epochs", metrics={"val_auc": 0.9}))
        progress(Progress("train", unit=STAGE_UNIT, detail="completed", finished=True))
    shown = out.getvalue()
    assert "train" in shown and "started" in shown
    assert "completed in" in shown


def test_helpers() -> None:
    assert [duration(s) for s in (0.4, 59, 61, 3600, 3725)] == [
        "0 s",
        "59 s",
        "1 min 1 s",
        "1 h 0 min",
        "1 h 2 min",
    ]
    assert metric_text({"loss": 0.25, "val_auc": 0.9, "other": 1}) == "loss 0.250, val AUC 0.900"
