"""Evaluation figures as PNG: confusion matrix, training curves, ROC, PR, calibration, Grad-CAM.

Figures are built with :class:`matplotlib.figure.Figure` and its Agg canvas directly, never through
``pyplot``: no global figure registry, no backend switch at import time, safe in worker threads.
Every ``plot_*`` function writes its PNG atomically (a reader never sees half a file) and
returns the path. PNG metadata is stripped so files are byte-stable across matplotlib versions
and carry no URL.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from braincls.common.atomic import atomic_path
from braincls.evaluate.metrics import reliability_curve
from braincls.model.gradcam import overlay_heatmap

_DPI = 110
_POSITIVE_COLOUR = "#c0392b"
_NEGATIVE_COLOUR = "#2e86c1"
_NEUTRAL_COLOUR = "#7f8c8d"


class PlotInputError(ValueError):
    """Data handed to a plot function cannot be drawn."""


def _save(figure: Figure, out_path: Path) -> Path:
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        figure.savefig(
            tmp, format="png", dpi=_DPI, bbox_inches="tight", metadata={"Software": None}
        )
    return out_path


def _subtitle(axes: Axes, text: str | None) -> None:
    if text:
        axes.set_title(text, fontsize=9, color="#555555", loc="left")


def plot_confusion_matrix(
    confusion: npt.ArrayLike,
    class_names: Sequence[str],
    out_path: Path,
    *,
    title: str = "Confusion matrix",
    subtitle: str | None = None,
) -> Path:
    """Counts (rows: true class, columns: predicted class) with row percentages in each cell."""
    matrix = np.asarray(confusion, dtype=np.int64)
    n_classes = len(class_names)
    if matrix.shape != (n_classes, n_classes):
        raise PlotInputError(
            f"confusion matrix of shape {matrix.shape} does not match {n_classes} class names"
        )
    row_totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        row_share = np.where(row_totals > 0, matrix / row_totals, 0.0)
    side = 1.6 + 1.3 * n_classes
    figure = Figure(figsize=(side + 1.0, side))
    axes = figure.add_subplot()
    image = axes.imshow(row_share, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of true class")
    for row in range(n_classes):
        for column in range(n_classes):
            colour = "white" if row_share[row, column] > 0.55 else "black"
            axes.text(
                column,
                row,
                f"{matrix[row, column]}\n{100 * row_share[row, column]:.1f}%",
                ha="center",
                va="center",
                color=colour,
                fontsize=11,
            )
    axes.set_xticks(range(n_classes), [str(name) for name in class_names])
    axes.set_yticks(range(n_classes), [str(name) for name in class_names])
    axes.set_xlabel("Predicted class")
    axes.set_ylabel("True class")
    figure.suptitle(title)
    _subtitle(axes, subtitle)
    return _save(figure, out_path)


def plot_training_curves(
    history: Mapping[str, Sequence[float]],
    out_path: Path,
    *,
    title: str = "Training curves",
) -> Path:
    """Loss and accuracy per epoch (and AUC when recorded) from a Keras ``History.history``.

    Expects keys ``loss`` and ``accuracy`` and their ``val_`` counterparts; any other metric
    pair present (``auc``/``val_auc``) gets its own panel.
    """
    panels = [
        name for name in ("loss", "accuracy", "auc") if name in history or f"val_{name}" in history
    ]
    extra = sorted(
        name
        for name in history
        if not name.startswith("val_")
        and name not in panels
        and name not in {"learning_rate", "lr"}
    )
    panels.extend(extra)
    if not panels:
        raise PlotInputError(
            "training history holds no loss or metric series; expected keys such as "
            f"'loss' and 'val_loss', got {', '.join(sorted(history)) or 'none'}"
        )
    figure = Figure(figsize=(4.2 * len(panels), 3.6))
    for position, name in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), position)
        for key, label, colour in (
            (name, "train", _NEGATIVE_COLOUR),
            (f"val_{name}", "validation", _POSITIVE_COLOUR),
        ):
            values = [float(value) for value in history.get(key, [])]
            if values:
                epochs = np.arange(1, len(values) + 1)
                axes.plot(epochs, values, marker="o", markersize=3, label=label, color=colour)
        axes.set_xlabel("Epoch")
        axes.set_ylabel(name.replace("_", " "))
        axes.set_title(name.replace("_", " ").capitalize())
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(title)
    return _save(figure, out_path)


def _operating_point(
    y_true: npt.NDArray[np.int64], y_prob: npt.NDArray[np.float64], threshold: float
) -> tuple[float, float, float]:
    predicted = y_prob >= threshold
    positives = max(int((y_true == 1).sum()), 1)
    negatives = max(int((y_true == 0).sum()), 1)
    true_positive = int((predicted & (y_true == 1)).sum())
    false_positive = int((predicted & (y_true == 0)).sum())
    predicted_positive = max(int(predicted.sum()), 1)
    return (
        true_positive / positives,
        false_positive / negatives,
        true_positive / predicted_positive,
    )


def _binary_arrays(
    y_true: npt.ArrayLike, y_prob: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    labels = np.asarray(y_true).astype(np.int64).ravel()
    probabilities = np.asarray(y_prob, dtype=np.float64).ravel()
    if labels.size != probabilities.size or labels.size == 0:
        raise PlotInputError(
            f"{labels.size} labels and {probabilities.size} probabilities: need the same, "
            "non-zero number"
        )
    if labels.min() == labels.max():
        raise PlotInputError(
            "the data hold a single class; ROC and precision-recall curves need both"
        )
    return labels, probabilities


def plot_roc_curve(
    y_true: npt.ArrayLike,
    y_prob: npt.ArrayLike,
    out_path: Path,
    *,
    threshold: float | None = None,
    roc_auc_interval: tuple[float, float] | None = None,
    subtitle: str | None = None,
) -> Path:
    """ROC curve with its AUC, the chance diagonal and the operating point at ``threshold``."""
    from sklearn.metrics import roc_auc_score, roc_curve

    labels, probabilities = _binary_arrays(y_true, y_prob)
    false_positive_rate, true_positive_rate, _ = roc_curve(labels, probabilities)
    area = float(roc_auc_score(labels, probabilities))
    label = f"ROC AUC {area:.3f}"
    if roc_auc_interval is not None and not any(map(math.isnan, roc_auc_interval)):
        label += f" (95% CI {roc_auc_interval[0]:.3f}-{roc_auc_interval[1]:.3f})"
    figure = Figure(figsize=(5.0, 4.6))
    axes = figure.add_subplot()
    axes.plot(false_positive_rate, true_positive_rate, color=_POSITIVE_COLOUR, label=label)
    axes.plot([0, 1], [0, 1], linestyle="--", color=_NEUTRAL_COLOUR, label="chance")
    if threshold is not None:
        sensitivity, false_rate, _ = _operating_point(labels, probabilities, threshold)
        _mark_threshold(axes, false_rate, sensitivity, threshold)
    _finish_unit_square(
        axes,
        "1 - specificity (false positive rate)",
        "Sensitivity (true positive rate)",
        legend_loc="lower right",
    )
    figure.suptitle("ROC curve")
    _subtitle(axes, subtitle)
    return _save(figure, out_path)


def _mark_threshold(axes: Any, x: float, y: float, threshold: float) -> None:
    """The operating point of the fixed decision threshold on a curve."""
    axes.plot(
        [x], [y], marker="o", color="black", linestyle="none", label=f"threshold {threshold:.3f}"
    )


def _finish_unit_square(axes: Any, xlabel: str, ylabel: str, *, legend_loc: str) -> None:
    """Labels, limits, grid and legend of a curve plotted on [0, 1] x [0, 1]."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.grid(alpha=0.3)
    axes.legend(loc=legend_loc, fontsize=8)


def plot_pr_curve(
    y_true: npt.ArrayLike,
    y_prob: npt.ArrayLike,
    out_path: Path,
    *,
    threshold: float | None = None,
    subtitle: str | None = None,
) -> Path:
    """Precision-recall curve with average precision and the prevalence (chance) line."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    labels, probabilities = _binary_arrays(y_true, y_prob)
    precision, recall, _ = precision_recall_curve(labels, probabilities)
    average_precision = float(average_precision_score(labels, probabilities))
    prevalence = float(labels.mean())
    figure = Figure(figsize=(5.0, 4.6))
    axes = figure.add_subplot()
    axes.step(
        recall,
        precision,
        where="post",
        color=_POSITIVE_COLOUR,
        label=f"average precision {average_precision:.3f}",
    )
    axes.axhline(
        prevalence, linestyle="--", color=_NEUTRAL_COLOUR, label=f"prevalence {prevalence:.3f}"
    )
    if threshold is not None:
        sensitivity, _, ppv = _operating_point(labels, probabilities, threshold)
        _mark_threshold(axes, sensitivity, ppv, threshold)
    _finish_unit_square(axes, "Recall (sensitivity)", "Precision (PPV)", legend_loc="lower left")
    figure.suptitle("Precision-recall curve")
    _subtitle(axes, subtitle)
    return _save(figure, out_path)


def plot_reliability_diagram(
    y_true: npt.ArrayLike,
    y_prob: npt.ArrayLike,
    out_path: Path,
    *,
    n_bins: int = 10,
    ece: float | None = None,
    subtitle: str | None = None,
) -> Path:
    """Observed positive fraction against mean predicted probability, with bin counts below."""
    curve = reliability_curve(y_true, y_prob, n_bins)
    centres = (curve.bin_edges[:-1] + curve.bin_edges[1:]) / 2.0
    width = 1.0 / n_bins
    filled = curve.counts > 0
    figure = Figure(figsize=(5.0, 5.4))
    grid = figure.add_gridspec(2, 1, height_ratios=(3, 1), hspace=0.08)
    top = figure.add_subplot(grid[0])
    bottom = figure.add_subplot(grid[1], sharex=top)
    top.plot([0, 1], [0, 1], linestyle="--", color=_NEUTRAL_COLOUR, label="perfect calibration")
    label = "model" if ece is None else f"model (ECE {ece:.3f})"
    top.plot(
        curve.mean_predicted[filled],
        curve.fraction_positive[filled],
        marker="o",
        color=_POSITIVE_COLOUR,
        label=label,
    )
    top.set_ylabel("Observed fraction positive")
    top.set_xlim(0.0, 1.0)
    top.set_ylim(-0.01, 1.01)
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize=8)
    top.tick_params(labelbottom=False)
    _subtitle(top, subtitle)
    bottom.bar(centres, curve.counts, width=width * 0.9, color=_NEGATIVE_COLOUR)
    bottom.set_xlabel("Predicted probability of the positive class")
    bottom.set_ylabel("Count")
    figure.suptitle("Reliability diagram")
    return _save(figure, out_path)


GradcamPanel = tuple[npt.NDArray[Any], npt.NDArray[Any], str]
"""One Grad-CAM panel: (image as given to the model, heatmap in [0, 1], caption)."""


def plot_gradcam_grid(
    rows: Mapping[str, Sequence[GradcamPanel]],
    out_path: Path,
    *,
    title: str = "Grad-CAM: where the model looks",
    alpha: float = 0.4,
) -> Path:
    """One row per category (e.g. true positive, false positive, false negative) of overlays.

    Each panel is ``(image, heatmap, caption)``; a category without examples shows one line
    saying so, which is itself a finding (e.g. no false negatives).
    """
    if not rows:
        raise PlotInputError("no Grad-CAM categories to draw")
    n_columns = max(1, *(len(panels) for panels in rows.values()))
    figure = Figure(figsize=(2.3 * n_columns + 1.2, 2.5 * len(rows)))
    for row_index, (category, panels) in enumerate(rows.items()):
        for column in range(n_columns):
            axes = figure.add_subplot(len(rows), n_columns, row_index * n_columns + column + 1)
            axes.set_xticks([])
            axes.set_yticks([])
            if column == 0:
                axes.set_ylabel(category, fontsize=10)
            if column < len(panels):
                image, heatmap, caption = panels[column]
                axes.imshow(overlay_heatmap(image, heatmap, alpha=alpha))
                axes.set_title(caption, fontsize=8)
            elif column == 0:
                axes.text(0.5, 0.5, "no examples", ha="center", va="center", fontsize=9)
            else:
                axes.set_frame_on(False)
    figure.suptitle(title)
    return _save(figure, out_path)
