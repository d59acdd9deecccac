"""Metrics of a binary classifier: point estimates, bootstrap intervals, thresholds, calibration.

Pure functions on arrays and tables: nothing here reads files, imports a deep-learning framework
or keeps state. Conventions used throughout:

* ``y_true`` holds 0 (negative, no tumor) and 1 (positive, tumor); ``y_prob`` is the model's
  probability of the positive class, in [0, 1].
* A sample is predicted positive when ``y_prob >= threshold``.
* A metric whose denominator is empty is NaN, never a silent 0 (scikit-learn's default): a test
  set without a single positive has no sensitivity, and saying 0 would be a false statement.
  :func:`undefined_metric_notes` explains every NaN in words for reports.

One vectorised implementation (:func:`_metric_matrix`) computes every metric for a whole batch
of bootstrap resamples at once; the point estimate is the same code on the original sample, so
a point estimate and its interval can never disagree in definition.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

logger = logging.getLogger(__name__)

ThresholdRule = Literal["youden", "sensitivity_floor", "fixed"]

#: Threshold-free and threshold-dependent metrics returned by :func:`binary_metrics`.
METRIC_NAMES: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "f1",
    "mcc",
    "roc_auc",
    "pr_auc",
    "brier",
    "ece",
)
#: Confusion counts returned by :func:`binary_metrics` (as ints).
COUNT_NAMES: tuple[str, ...] = ("tp", "fp", "tn", "fn", "n")
#: Metrics that get a bootstrap confidence interval by default.
# Every metric but the ECE, whose bootstrap is biased (the interval can miss the point estimate).
DEFAULT_CI_METRICS: tuple[str, ...] = tuple(name for name in METRIC_NAMES if name != "ece")
#: Metrics where a lower value is better (all others: higher is better).
LOWER_IS_BETTER: frozenset[str] = frozenset({"brier", "ece"})

#: Human-readable names for reports.
METRIC_LABELS: dict[str, str] = {
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "sensitivity": "Sensitivity (recall, TPR)",
    "specificity": "Specificity (TNR)",
    "ppv": "PPV (precision)",
    "npv": "NPV",
    "f1": "F1 score",
    "mcc": "Matthews correlation coefficient",
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC (average precision)",
    "brier": "Brier score",
    "ece": "Expected calibration error",
}

# Upper bound on resamples x samples held in memory at once by the bootstrap (about 16 MB per
# float64 array), so that large test sets do not exhaust memory.
_BOOTSTRAP_CHUNK_ELEMENTS = 2_000_000


class MetricInputError(ValueError):
    """Labels or probabilities handed to a metric function are malformed."""


class ThresholdSelectionError(ValueError):
    """No decision threshold can be chosen from the validation data given."""


@dataclass(frozen=True)
class ReliabilityCurve:
    """Observed frequency of the positive class per bin of predicted probability.

    Bins are equal-width on [0, 1] and closed on the right, like scikit-learn's
    ``calibration_curve(strategy="uniform")``: bin 0 is [0, 1/k], bin i is (i/k, (i+1)/k].
    Empty bins hold NaN in ``mean_predicted`` and ``fraction_positive``.
    """

    bin_edges: npt.NDArray[np.float64]
    mean_predicted: npt.NDArray[np.float64]
    fraction_positive: npt.NDArray[np.float64]
    counts: npt.NDArray[np.int64]


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _as_binary_inputs(
    y_true: npt.ArrayLike, y_prob: npt.ArrayLike
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float64]]:
    labels = np.asarray(y_true)
    probabilities = np.asarray(y_prob, dtype=np.float64)
    if labels.ndim != 1 or probabilities.ndim != 1:
        # A (n, 1) sigmoid output is the common case: accept it, reject anything wider.
        if probabilities.ndim == 2 and probabilities.shape[1] == 1:
            probabilities = probabilities[:, 0]
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
    if labels.ndim != 1 or probabilities.ndim != 1:
        raise MetricInputError(
            f"expected one label and one probability per sample, got label shape {labels.shape} "
            f"and probability shape {probabilities.shape}"
        )
    if labels.shape[0] != probabilities.shape[0]:
        raise MetricInputError(
            f"{labels.shape[0]} labels but {probabilities.shape[0]} probabilities: "
            "both must describe the same samples"
        )
    if labels.shape[0] == 0:
        raise MetricInputError("no samples: metrics need at least one labelled prediction")
    unique_labels = set(np.unique(labels).tolist())
    if not unique_labels <= {0, 1}:
        bad = sorted(str(value) for value in unique_labels - {0, 1})
        raise MetricInputError(
            f"binary labels must be 0 (negative) or 1 (positive); found {', '.join(bad)}"
        )
    if not np.all(np.isfinite(probabilities)):
        count = int(np.sum(~np.isfinite(probabilities)))
        raise MetricInputError(f"{count} probabilities are NaN or infinite")
    if probabilities.min() < 0.0 or probabilities.max() > 1.0:
        raise MetricInputError(
            f"probabilities must lie in [0, 1]; found range [{probabilities.min():.4g}, "
            f"{probabilities.max():.4g}] (pass sigmoid outputs, not logits)"
        )
    return labels.astype(np.int8), probabilities


def _check_threshold(threshold: float) -> float:
    value = float(threshold)
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise MetricInputError(f"threshold must lie in [0, 1], got {threshold!r}")
    return value


# --------------------------------------------------------------------------------------------
# Vectorised core: one row per (re)sample
# --------------------------------------------------------------------------------------------


def _divide(numerator: npt.ArrayLike, denominator: npt.ArrayLike) -> npt.NDArray[np.float64]:
    top = np.asarray(numerator, dtype=np.float64)
    bottom = np.asarray(denominator, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        result = top / bottom
    return np.where(bottom > 0, result, np.nan)


def _row_count(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    return np.asarray(np.count_nonzero(mask, axis=1), dtype=np.float64)


def _rank_auc(
    labels: npt.NDArray[np.int8], probabilities: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """ROC AUC per row as the Mann-Whitney statistic; tied scores count one half."""
    from scipy.stats import rankdata

    ranks = rankdata(probabilities, method="average", axis=1)
    n_positive = labels.sum(axis=1, dtype=np.float64)
    n_negative = labels.shape[1] - n_positive
    positive_rank_sum = np.where(labels == 1, ranks, 0.0).sum(axis=1)
    statistic = positive_rank_sum - n_positive * (n_positive + 1.0) / 2.0
    return _divide(statistic, n_positive * n_negative)


def _average_precision(
    labels: npt.NDArray[np.int8], probabilities: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Average precision per row, as scikit-learn's ``average_precision_score``.

    AP = sum over distinct thresholds of (recall step) x (precision at that threshold). Samples
    with tied scores enter together, so each positive contributes the precision at the end of
    its tie group.
    """
    n_rows, n_samples = labels.shape
    order = np.argsort(-probabilities, axis=1, kind="stable")
    sorted_labels = np.take_along_axis(labels, order, axis=1).astype(np.float64)
    sorted_scores = np.take_along_axis(probabilities, order, axis=1)
    true_positives = np.cumsum(sorted_labels, axis=1)
    precision = true_positives / np.arange(1, n_samples + 1, dtype=np.float64)
    group_end = np.ones((n_rows, n_samples), dtype=bool)
    group_end[:, :-1] = sorted_scores[:, :-1] != sorted_scores[:, 1:]
    positions = np.broadcast_to(np.arange(n_samples), (n_rows, n_samples))
    candidate = np.where(group_end, positions, n_samples)
    end_of_group = np.minimum.accumulate(candidate[:, ::-1], axis=1)[:, ::-1]
    precision_at_group_end = np.take_along_axis(precision, end_of_group, axis=1)
    n_positive = sorted_labels.sum(axis=1)
    return _divide((sorted_labels * precision_at_group_end).sum(axis=1), n_positive)


def _bin_ids(probabilities: npt.NDArray[np.float64], n_bins: int) -> npt.NDArray[np.intp]:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], probabilities, side="left")


def _batch_ece(
    labels: npt.NDArray[np.int8], probabilities: npt.NDArray[np.float64], n_bins: int
) -> npt.NDArray[np.float64]:
    n_rows, n_samples = labels.shape
    flat = (_bin_ids(probabilities, n_bins) + n_bins * np.arange(n_rows)[:, None]).ravel()
    size = n_rows * n_bins
    sum_probability = np.bincount(flat, weights=probabilities.ravel(), minlength=size)
    sum_label = np.bincount(flat, weights=labels.ravel().astype(np.float64), minlength=size)
    # sum_b |mean_label_b - mean_prob_b| * n_b / n  ==  sum_b |sum_label_b - sum_prob_b| / n
    gap = np.abs(sum_label - sum_probability).reshape(n_rows, n_bins)
    return np.asarray(gap.sum(axis=1) / n_samples, dtype=np.float64)


def _metric_matrix(
    labels: npt.NDArray[np.int8],
    probabilities: npt.NDArray[np.float64],
    threshold: float,
    names: Sequence[str],
    n_bins: int,
) -> dict[str, npt.NDArray[np.float64]]:
    """Every requested metric for every row of ``labels`` / ``probabilities`` (2-D arrays)."""
    wanted = set(names)
    predicted = probabilities >= threshold
    positive = labels == 1
    tp = _row_count(predicted & positive)
    fp = _row_count(predicted & ~positive)
    fn = _row_count(~predicted & positive)
    tn = _row_count(~predicted & ~positive)
    n = tp + fp + fn + tn
    out: dict[str, npt.NDArray[np.float64]] = {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "n": n}
    sensitivity = _divide(tp, tp + fn)
    specificity = _divide(tn, tn + fp)
    out["accuracy"] = _divide(tp + tn, n)
    out["sensitivity"] = sensitivity
    out["specificity"] = specificity
    out["balanced_accuracy"] = (sensitivity + specificity) / 2.0
    out["ppv"] = _divide(tp, tp + fp)
    out["npv"] = _divide(tn, tn + fn)
    out["f1"] = _divide(2.0 * tp, 2.0 * tp + fp + fn)
    mcc_denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    out["mcc"] = _divide(tp * tn - fp * fn, mcc_denominator)
    if "roc_auc" in wanted:
        out["roc_auc"] = _rank_auc(labels, probabilities)
    if "pr_auc" in wanted:
        out["pr_auc"] = _average_precision(labels, probabilities)
    if "brier" in wanted:
        out["brier"] = np.mean((probabilities - labels) ** 2, axis=1)
    if "ece" in wanted:
        out["ece"] = _batch_ece(labels, probabilities, n_bins)
    return out


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def binary_metrics(
    y_true: npt.ArrayLike,
    y_prob: npt.ArrayLike,
    threshold: float = 0.5,
    *,
    calibration_bins: int = 10,
) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` plus the confusion counts of :data:`COUNT_NAMES`.

    Threshold-dependent metrics (accuracy ... mcc) predict positive when ``y_prob >= threshold``;
    ROC AUC, PR AUC (average precision), Brier score and ECE use the probabilities directly.
    Undefined metrics (e.g. sensitivity with no positive sample, ROC AUC with one class only)
    are NaN; :func:`undefined_metric_notes` says why. Counts are ints.
    """
    labels, probabilities = _as_binary_inputs(y_true, y_prob)
    threshold = _check_threshold(threshold)
    rows = _metric_matrix(
        labels[None, :],
        probabilities[None, :],
        threshold,
        METRIC_NAMES,
        calibration_bins,
    )
    result: dict[str, float] = {name: float(rows[name][0]) for name in METRIC_NAMES}
    for name in COUNT_NAMES:
        result[name] = int(rows[name][0])
    undefined = [name for name in METRIC_NAMES if math.isnan(result[name])]
    if undefined:
        # Said once in the report and by the CLI (undefined_metric_notes); the bootstrap calls
        # this many times, so it is not a warning here.
        logger.info(
            "metrics undefined on %d samples (%d positive): %s",
            result["n"],
            result["tp"] + result["fn"],
            ", ".join(undefined),
        )
    return result


def undefined_metric_notes(metrics: Mapping[str, float]) -> list[str]:
    """One sentence per NaN metric in ``metrics`` (as returned by :func:`binary_metrics`)."""
    positives = int(metrics.get("tp", 0) + metrics.get("fn", 0))
    negatives = int(metrics.get("tn", 0) + metrics.get("fp", 0))
    predicted_positive = int(metrics.get("tp", 0) + metrics.get("fp", 0))
    predicted_negative = int(metrics.get("tn", 0) + metrics.get("fn", 0))
    reasons = {
        "sensitivity": f"no positive sample ({positives} positives)",
        "specificity": f"no negative sample ({negatives} negatives)",
        "balanced_accuracy": "sensitivity or specificity is undefined",
        "ppv": f"the model predicted no positive ({predicted_positive} predicted positive)",
        "npv": f"the model predicted no negative ({predicted_negative} predicted negative)",
        "f1": "there is no positive sample and no positive prediction",
        "mcc": "a row or column of the confusion matrix is empty",
        "roc_auc": (
            f"the data hold a single class ({positives} positives, {negatives} negatives); "
            "ROC AUC needs both"
        ),
        "pr_auc": f"no positive sample ({positives} positives)",
        "accuracy": "no sample",
        "brier": "no sample",
        "ece": "no sample",
    }
    notes = []
    for name in METRIC_NAMES:
        value = metrics.get(name)
        if value is not None and isinstance(value, float) and math.isnan(value):
            notes.append(f"{METRIC_LABELS[name]} is undefined: {reasons[name]}.")
    return notes


def choose_threshold(
    y_true_val: npt.ArrayLike,
    y_prob_val: npt.ArrayLike,
    rule: ThresholdRule = "youden",
    min_sensitivity: float = 0.9,
    *,
    fixed_threshold: float = 0.5,
) -> float:
    """Decision threshold chosen on the **validation** split, to be fixed before testing.

    * ``youden``: maximises sensitivity + specificity - 1 (Youden's J); ties go to the higher
      sensitivity.
    * ``sensitivity_floor``: the highest threshold whose sensitivity is at least
      ``min_sensitivity`` (so specificity is as high as the floor allows).
    * ``fixed``: returns ``fixed_threshold`` and ignores the data.

    The returned value lies midway between the chosen validation score and the next lower
    distinct score: every threshold in that gap gives the same validation result, and the
    midpoint is the least sensitive to small shifts of unseen scores.
    """
    if rule == "fixed":
        return _check_threshold(fixed_threshold)
    if rule not in ("youden", "sensitivity_floor"):
        raise ThresholdSelectionError(
            f"unknown threshold rule {rule!r}; use 'youden', 'sensitivity_floor' or 'fixed'"
        )
    if not 0.0 < min_sensitivity <= 1.0:
        raise ThresholdSelectionError(f"min_sensitivity must lie in (0, 1], got {min_sensitivity}")
    labels, probabilities = _as_binary_inputs(y_true_val, y_prob_val)
    positive_scores = np.sort(probabilities[labels == 1])
    negative_scores = np.sort(probabilities[labels == 0])
    if positive_scores.size == 0 or negative_scores.size == 0:
        raise ThresholdSelectionError(
            f"the validation split holds {positive_scores.size} positive and "
            f"{negative_scores.size} negative samples; rule {rule!r} needs both classes "
            "(use threshold_rule 'fixed' or a larger validation split)"
        )
    candidates = np.unique(probabilities)  # ascending
    true_positives = positive_scores.size - np.searchsorted(positive_scores, candidates, "left")
    false_positives = negative_scores.size - np.searchsorted(negative_scores, candidates, "left")
    sensitivity = true_positives / positive_scores.size
    specificity = 1.0 - false_positives / negative_scores.size
    if rule == "youden":
        youden = sensitivity + specificity - 1.0
        best = np.flatnonzero(np.isclose(youden, youden.max(), rtol=0.0, atol=1e-12))
        # Lower thresholds have higher sensitivity: among equal J take the lowest.
        index = int(best[0])
    else:
        eligible = np.flatnonzero(sensitivity >= min_sensitivity - 1e-12)
        index = int(eligible[-1])  # the lowest index always qualifies: sensitivity 1
    if index == 0:
        return float(candidates[0])
    return float((candidates[index] + candidates[index - 1]) / 2.0)


def bootstrap_ci(
    y_true: npt.ArrayLike,
    y_prob: npt.ArrayLike,
    threshold: float,
    metrics: Sequence[str] = DEFAULT_CI_METRICS,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    *,
    stratified: bool = True,
    calibration_bins: int = 10,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals, ``{metric: (low, high)}``.

    Each resample draws ``n`` samples with replacement; ``stratified`` (the default) draws the
    positives and the negatives separately, keeping the class counts of the test set so that
    every resample has both classes. The threshold is held fixed, as it was chosen before the
    test set was seen. Resamples where a metric is undefined are left out of its interval; a
    metric undefined in all of them gets ``(nan, nan)``.
    """
    labels, probabilities = _as_binary_inputs(y_true, y_prob)
    threshold = _check_threshold(threshold)
    unknown = [name for name in metrics if name not in METRIC_NAMES]
    if unknown:
        raise MetricInputError(
            f"no bootstrap for unknown metrics {', '.join(unknown)}; "
            f"known: {', '.join(METRIC_NAMES)}"
        )
    if n_resamples < 1:
        raise MetricInputError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise MetricInputError(f"confidence must lie in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    n_samples = labels.size
    positive_index = np.flatnonzero(labels == 1)
    negative_index = np.flatnonzero(labels == 0)
    chunk_rows = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // n_samples)
    collected: dict[str, list[npt.NDArray[np.float64]]] = {name: [] for name in metrics}
    done = 0
    while done < n_resamples:
        rows = min(chunk_rows, n_resamples - done)
        if stratified:
            parts = [
                index[rng.integers(0, index.size, size=(rows, index.size))]
                for index in (positive_index, negative_index)
                if index.size
            ]
            resample = np.concatenate(parts, axis=1)
        else:
            resample = rng.integers(0, n_samples, size=(rows, n_samples))
        values = _metric_matrix(
            labels[resample], probabilities[resample], threshold, metrics, calibration_bins
        )
        for name in metrics:
            collected[name].append(values[name])
        done += rows
    tail = (1.0 - confidence) / 2.0 * 100.0
    intervals: dict[str, tuple[float, float]] = {}
    for name in metrics:
        samples = np.concatenate(collected[name])
        finite = samples[~np.isnan(samples)]
        if finite.size == 0:
            intervals[name] = (math.nan, math.nan)
            continue
        low, high = np.percentile(finite, [tail, 100.0 - tail])
        intervals[name] = (float(low), float(high))
    return intervals


def expected_calibration_error(
    y_true: npt.ArrayLike, y_prob: npt.ArrayLike, n_bins: int = 10
) -> float:
    """Expected calibration error: sum over equal-width bins of |observed - predicted| x share.

    Bins as in :class:`ReliabilityCurve`. 0 means the predicted probabilities match the observed
    frequencies in every bin.
    """
    labels, probabilities = _as_binary_inputs(y_true, y_prob)
    if n_bins < 1:
        raise MetricInputError(f"n_bins must be at least 1, got {n_bins}")
    return float(_batch_ece(labels[None, :], probabilities[None, :], n_bins)[0])


def reliability_curve(
    y_true: npt.ArrayLike, y_prob: npt.ArrayLike, n_bins: int = 10
) -> ReliabilityCurve:
    """Mean predicted probability and observed positive fraction per equal-width bin."""
    labels, probabilities = _as_binary_inputs(y_true, y_prob)
    if n_bins < 1:
        raise MetricInputError(f"n_bins must be at least 1, got {n_bins}")
    bins = _bin_ids(probabilities, n_bins)
    counts = np.bincount(bins, minlength=n_bins).astype(np.int64)
    sum_probability = np.bincount(bins, weights=probabilities, minlength=n_bins)
    sum_label = np.bincount(bins, weights=labels.astype(np.float64), minlength=n_bins)
    return ReliabilityCurve(
        bin_edges=np.linspace(0.0, 1.0, n_bins + 1),
        mean_predicted=_divide(sum_probability, counts.astype(np.float64)),
        fraction_positive=_divide(sum_label, counts.astype(np.float64)),
        counts=counts,
    )


def multiclass_report(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, class_names: Sequence[str]
) -> dict[str, Any]:
    """scikit-learn's per-class report (precision, recall, F1, support) as a dict.

    ``y_true`` and ``y_pred`` hold class indices into ``class_names``. A class with no predicted
    (or no true) sample gets 0.0 precision (or recall), scikit-learn's convention for this table;
    its support column makes the case visible.
    """
    from sklearn.metrics import classification_report

    true_index = np.asarray(y_true).astype(np.int64).ravel()
    predicted_index = np.asarray(y_pred).astype(np.int64).ravel()
    if true_index.size != predicted_index.size:
        raise MetricInputError(
            f"{true_index.size} true labels but {predicted_index.size} predictions"
        )
    n_classes = len(class_names)
    for name, values in (("true labels", true_index), ("predictions", predicted_index)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise MetricInputError(
                f"{name} hold class indices outside 0..{n_classes - 1} "
                f"(classes: {', '.join(class_names)})"
            )
    report = classification_report(
        true_index,
        predicted_index,
        labels=list(range(n_classes)),
        target_names=[str(name) for name in class_names],
        output_dict=True,
        zero_division=0.0,
    )
    return dict(report)


def metrics_by_group(
    frame: pd.DataFrame,
    group_col: str,
    threshold: float,
    *,
    label_col: str = "label_index",
    prob_col: str = "p_positive",
    calibration_bins: int = 10,
) -> pd.DataFrame:
    """:func:`binary_metrics` per value of ``group_col`` (e.g. per source or collection).

    Returns one row per group, sorted by group, with columns ``group_col``, ``n``,
    ``n_positive``, ``n_negative`` and every metric of :data:`METRIC_NAMES`; a group with a
    single class has NaN ROC AUC rather than an error.
    """
    missing = [name for name in (group_col, label_col, prob_col) if name not in frame.columns]
    if missing:
        raise MetricInputError(
            f"per-group metrics need columns {', '.join(missing)}; "
            f"the table has {', '.join(map(str, frame.columns))}"
        )
    rows: list[dict[str, Any]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for group, part in frame.groupby(group_col, sort=True, dropna=False):
            values = binary_metrics(
                part[label_col].to_numpy(),
                part[prob_col].to_numpy(dtype=np.float64),
                threshold,
                calibration_bins=calibration_bins,
            )
            positives = int(values["tp"] + values["fn"])
            row: dict[str, Any] = {
                group_col: group,
                "n": int(values["n"]),
                "n_positive": positives,
                "n_negative": int(values["n"]) - positives,
            }
            row.update({name: values[name] for name in METRIC_NAMES})
            rows.append(row)
    columns = [group_col, "n", "n_positive", "n_negative", *METRIC_NAMES]
    return pd.DataFrame(rows, columns=columns)
