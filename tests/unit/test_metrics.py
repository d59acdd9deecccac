"""Metrics pinned to hand-computed values and to scikit-learn; threshold, bootstrap, calibration."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from braincls.evaluate.metrics import (
    DEFAULT_CI_METRICS,
    METRIC_NAMES,
    MetricInputError,
    ThresholdSelectionError,
    _metric_matrix,
    binary_metrics,
    bootstrap_ci,
    choose_threshold,
    expected_calibration_error,
    metrics_by_group,
    multiclass_report,
    reliability_curve,
    undefined_metric_notes,
)

# Four positives, six negatives; at threshold 0.5: TP 2 (0.9, 0.8), FP 1 (0.7), FN 2 (0.4, 0.35),
# TN 5.
Y_TRUE = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
Y_PROB = np.array([0.9, 0.8, 0.4, 0.35, 0.7, 0.3, 0.2, 0.2, 0.1, 0.05])


def _noisy_scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = np.clip(0.25 * labels + 0.75 * rng.random(n), 0.0, 1.0)
    return labels, scores


def test_binary_metrics_match_hand_computed_values() -> None:
    m = binary_metrics(Y_TRUE, Y_PROB, 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"], m["n"]) == (2, 1, 5, 2, 10)
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["sensitivity"] == pytest.approx(0.5)
    assert m["specificity"] == pytest.approx(5 / 6)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 5 / 6) / 2)
    assert m["ppv"] == pytest.approx(2 / 3)
    assert m["npv"] == pytest.approx(5 / 7)
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["mcc"] == pytest.approx(8 / math.sqrt(3 * 4 * 6 * 7))
    # 22 of the 24 positive-negative pairs are ordered correctly (0.4 and 0.35 lose to 0.7).
    assert m["roc_auc"] == pytest.approx(22 / 24)
    # Positives at ranks 1, 2, 4, 5: precisions 1, 1, 3/4, 4/5.
    assert m["pr_auc"] == pytest.approx((1 + 1 + 0.75 + 0.8) / 4)
    assert m["brier"] == pytest.approx(1.505 / 10)
    # Bins (right-closed, width 0.1): |sum(y) - sum(p)| = .15 + .4 + .3 + 1.25 + .7 + .2 + .1.
    assert m["ece"] == pytest.approx(0.31)
    assert set(m) == set(METRIC_NAMES) | {"tp", "fp", "tn", "fn", "n"}
    assert all(isinstance(m[name], int) for name in ("tp", "fp", "tn", "fn", "n"))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_binary_metrics_match_scikit_learn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 40)
    scores = np.round(rng.random(40), 1)  # one decimal: many ties, some exactly at 0.5
    m = binary_metrics(labels, scores, 0.5)
    predicted = (scores >= 0.5).astype(int)
    expected = {
        "accuracy": skm.accuracy_score(labels, predicted),
        "balanced_accuracy": skm.balanced_accuracy_score(labels, predicted),
        "sensitivity": skm.recall_score(labels, predicted),
        "specificity": skm.recall_score(labels, predicted, pos_label=0),
        "ppv": skm.precision_score(labels, predicted),
        "npv": skm.precision_score(labels, predicted, pos_label=0),
        "f1": skm.f1_score(labels, predicted),
        "mcc": skm.matthews_corrcoef(labels, predicted),
        "roc_auc": skm.roc_auc_score(labels, scores),
        "pr_auc": skm.average_precision_score(labels, scores),
        "brier": skm.brier_score_loss(labels, scores),
    }
    for name, value in expected.items():
        assert m[name] == pytest.approx(value, abs=1e-12), name
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted).ravel()
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)


def test_score_equal_to_threshold_is_positive() -> None:
    m = binary_metrics([1, 0], [0.5, 0.49], 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 0, 1, 0)


def test_single_class_gives_nan_with_notes_not_a_crash() -> None:
    m = binary_metrics([0, 0, 0], [0.1, 0.6, 0.2], 0.5)
    assert math.isnan(m["roc_auc"])
    assert math.isnan(m["pr_auc"])
    assert math.isnan(m["sensitivity"])
    assert math.isnan(m["balanced_accuracy"])
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(2 / 3)
    notes = undefined_metric_notes(m)
    assert (
        "ROC AUC is undefined: the data hold a single class (0 positives, 3 negatives); "
        "ROC AUC needs both."
    ) in notes
    assert "Sensitivity (recall, TPR) is undefined: no positive sample (0 positives)." in notes
    assert not any(note.startswith("Specificity") for note in notes)


def test_no_predicted_positive_makes_ppv_undefined() -> None:
    m = binary_metrics([1, 0, 0], [0.2, 0.1, 0.3], 0.5)
    assert math.isnan(m["ppv"])
    assert math.isnan(m["mcc"])
    assert m["f1"] == 0.0
    assert m["npv"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([0, 1], [0.5], "2 labels but 1 probabilities"),
        ([0, 2], [0.1, 0.9], "binary labels must be 0 (negative) or 1 (positive); found 2"),
        ([0, 1], [0.1, 1.7], "probabilities must lie in [0, 1]; found range [0.1, 1.7]"),
        ([0, 1], [0.1, float("nan")], "1 probabilities are NaN or infinite"),
        ([], [], "no samples"),
    ],
)
def test_malformed_inputs_raise_with_the_reason(
    labels: list[int], scores: list[float], message: str
) -> None:
    with pytest.raises(MetricInputError) as error:
        binary_metrics(labels, scores, 0.5)
    assert message in str(error.value)


def test_column_vectors_from_model_predict_are_accepted() -> None:
    m = binary_metrics(Y_TRUE[:, None], Y_PROB[:, None], 0.5)
    assert m["roc_auc"] == pytest.approx(22 / 24)


# ------------------------------------------------------------------------------ threshold

VAL_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 1])
VAL_PROB = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])


def test_youden_threshold_on_validation_data() -> None:
    # J = 0.75 at ">= 0.4" (sens 1, spec 0.75) and at ">= 0.7" (sens 0.75, spec 1); the tie goes
    # to the higher sensitivity, and the threshold sits midway between 0.4 and 0.3.
    assert choose_threshold(VAL_TRUE, VAL_PROB, "youden") == pytest.approx(0.35)


def test_sensitivity_floor_threshold() -> None:
    # Highest threshold keeping 3 of 4 positives: ">= 0.7", midway to the next lower score 0.6.
    assert choose_threshold(VAL_TRUE, VAL_PROB, "sensitivity_floor", 0.75) == pytest.approx(0.65)
    assert choose_threshold(VAL_TRUE, VAL_PROB, "sensitivity_floor", 1.0) == pytest.approx(0.35)
    chosen = choose_threshold(VAL_TRUE, VAL_PROB, "sensitivity_floor", 0.75)
    assert binary_metrics(VAL_TRUE, VAL_PROB, chosen)["sensitivity"] >= 0.75


def test_fixed_threshold_ignores_data() -> None:
    assert choose_threshold(VAL_TRUE, VAL_PROB, "fixed", fixed_threshold=0.42) == 0.42


def test_threshold_comes_from_validation_only() -> None:
    val_labels, val_scores = _noisy_scores(200, seed=10)
    test_a_labels, test_a_scores = _noisy_scores(300, seed=11)
    test_b_labels, test_b_scores = test_a_labels.copy(), test_a_scores.copy()
    test_b_scores[test_b_labels == 1] = np.clip(test_b_scores[test_b_labels == 1] + 0.2, 0, 1)

    threshold = choose_threshold(val_labels, val_scores, "youden")
    # The threshold is a function of the validation data alone: scoring a different test set
    # uses the same value and changes the metrics, never the threshold.
    assert choose_threshold(val_labels, val_scores, "youden") == threshold
    metrics_a = binary_metrics(test_a_labels, test_a_scores, threshold)
    metrics_b = binary_metrics(test_b_labels, test_b_scores, threshold)
    assert metrics_a["sensitivity"] != metrics_b["sensitivity"]
    # The test split's own optimum differs: the test data were not used to choose it.
    assert choose_threshold(test_b_labels, test_b_scores, "youden") != threshold


def test_threshold_needs_both_classes_in_validation() -> None:
    with pytest.raises(ThresholdSelectionError) as error:
        choose_threshold([1, 1, 1], [0.2, 0.8, 0.9], "youden")
    assert str(error.value) == (
        "the validation split holds 3 positive and 0 negative samples; rule 'youden' needs both "
        "classes (use threshold_rule 'fixed' or a larger validation split)"
    )


def test_unknown_threshold_rule() -> None:
    with pytest.raises(ThresholdSelectionError, match="unknown threshold rule 'f1'"):
        choose_threshold(VAL_TRUE, VAL_PROB, "f1")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ bootstrap


def test_vectorised_metrics_match_scikit_learn_on_resampled_rows() -> None:
    labels, scores = _noisy_scores(60, seed=5)
    scores = np.round(scores, 2)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 60, size=(8, 60))  # resamples: duplicated samples, tied scores
    values = _metric_matrix(labels[rows], scores[rows], 0.5, METRIC_NAMES, 10)
    for row_index, row in enumerate(rows):
        assert values["roc_auc"][row_index] == pytest.approx(
            skm.roc_auc_score(labels[row], scores[row]), abs=1e-12
        )
        assert values["pr_auc"][row_index] == pytest.approx(
            skm.average_precision_score(labels[row], scores[row]), abs=1e-12
        )
        assert values["ece"][row_index] == pytest.approx(
            expected_calibration_error(labels[row], scores[row]), abs=1e-12
        )


def test_bootstrap_interval_contains_point_estimate() -> None:
    labels, scores = _noisy_scores(400, seed=1)
    point = binary_metrics(labels, scores, 0.5)
    intervals = bootstrap_ci(labels, scores, 0.5, n_resamples=1000, seed=3)
    assert set(intervals) == set(DEFAULT_CI_METRICS)
    for name, (low, high) in intervals.items():
        assert low < point[name] < high, name


def test_bootstrap_interval_narrows_with_more_data() -> None:
    small_labels, small_scores = _noisy_scores(100, seed=2)
    large_labels, large_scores = _noisy_scores(2000, seed=2)
    small = bootstrap_ci(small_labels, small_scores, 0.5, n_resamples=500, seed=0)
    large = bootstrap_ci(large_labels, large_scores, 0.5, n_resamples=500, seed=0)
    for name in ("accuracy", "sensitivity", "specificity", "roc_auc", "brier"):
        assert (large[name][1] - large[name][0]) < 0.5 * (small[name][1] - small[name][0]), name


def test_bootstrap_is_deterministic_per_seed() -> None:
    labels, scores = _noisy_scores(80, seed=4)
    first = bootstrap_ci(labels, scores, 0.5, n_resamples=200, seed=9)
    assert bootstrap_ci(labels, scores, 0.5, n_resamples=200, seed=9) == first
    assert bootstrap_ci(labels, scores, 0.5, n_resamples=200, seed=10) != first


def test_stratified_bootstrap_keeps_auc_defined_with_few_positives() -> None:
    labels = np.array([1] + [0] * 49)
    scores = np.linspace(0.0, 0.98, 50)
    scores[0] = 0.99
    stratified = bootstrap_ci(labels, scores, 0.5, ["roc_auc"], n_resamples=300, seed=0)
    assert stratified["roc_auc"] == (1.0, 1.0)
    plain = bootstrap_ci(
        labels, scores, 0.5, ["sensitivity"], n_resamples=300, seed=0, stratified=False
    )
    # Plain resampling leaves the positive out of about a third of resamples; those are skipped.
    assert plain["sensitivity"] == (1.0, 1.0)


def test_bootstrap_of_an_always_undefined_metric_is_nan() -> None:
    intervals = bootstrap_ci([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.9], 0.5, ["roc_auc", "specificity"])
    assert all(math.isnan(bound) for bound in intervals["roc_auc"])
    assert intervals["specificity"][1] == 1.0


def test_bootstrap_rejects_unknown_metric() -> None:
    with pytest.raises(MetricInputError, match="no bootstrap for unknown metrics auc"):
        bootstrap_ci(Y_TRUE, Y_PROB, 0.5, ["auc"])


# ------------------------------------------------------------------------------ calibration


def test_reliability_curve_matches_scikit_learn() -> None:
    labels, scores = _noisy_scores(300, seed=6)
    curve = reliability_curve(labels, scores, n_bins=10)
    fraction, mean_predicted = calibration_curve(labels, scores, n_bins=10, strategy="uniform")
    filled = curve.counts > 0
    np.testing.assert_allclose(curve.fraction_positive[filled], fraction, atol=1e-12)
    np.testing.assert_allclose(curve.mean_predicted[filled], mean_predicted, atol=1e-12)
    assert curve.counts.sum() == 300
    assert np.isnan(curve.mean_predicted[~filled]).all()


def test_expected_calibration_error_hand_computed() -> None:
    assert expected_calibration_error(Y_TRUE, Y_PROB, n_bins=10) == pytest.approx(0.31)
    # Two bins: [0, .5] holds 0.4, 0.35, 0.3, 0.2, 0.2, 0.1, 0.05 (2 positives, sum 1.6);
    # (.5, 1] holds 0.9, 0.8, 0.7 (2 positives, sum 2.4): (0.4 + 0.4) / 10.
    assert expected_calibration_error(Y_TRUE, Y_PROB, n_bins=2) == pytest.approx(0.08)
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0


# ------------------------------------------------------------------------------ reports by class / group


def test_multiclass_report_matches_scikit_learn() -> None:
    true = [0, 0, 1, 1, 2, 2, 2]
    predicted = [0, 1, 1, 1, 2, 0, 2]
    report = multiclass_report(true, predicted, ["glioma", "meningioma", "none"])
    expected = skm.classification_report(
        true, predicted, target_names=["glioma", "meningioma", "none"], output_dict=True
    )
    assert report == expected
    assert report["meningioma"]["precision"] == pytest.approx(2 / 3)
    assert report["none"]["recall"] == pytest.approx(2 / 3)
    assert report["accuracy"] == pytest.approx(5 / 7)


def test_multiclass_report_keeps_absent_classes() -> None:
    report = multiclass_report([0, 0], [0, 0], ["no", "yes"])
    assert report["yes"]["support"] == 0
    assert report["yes"]["precision"] == 0.0


def test_multiclass_report_rejects_out_of_range_indices() -> None:
    with pytest.raises(MetricInputError, match=r"predictions hold class indices outside 0\.\.1"):
        multiclass_report([0, 1], [0, 2], ["no", "yes"])


def test_metrics_by_group() -> None:
    frame = pd.DataFrame(
        {
            "source": ["br35h"] * 10 + ["tcia"] * 3,
            "label_index": [*Y_TRUE.tolist(), 0, 0, 0],
            "p_positive": [*Y_PROB.tolist(), 0.2, 0.7, 0.1],
        }
    )
    table = metrics_by_group(frame, "source", threshold=0.5)
    assert table["source"].tolist() == ["br35h", "tcia"]
    assert table["n"].tolist() == [10, 3]
    assert table["n_positive"].tolist() == [4, 0]
    assert table["n_negative"].tolist() == [6, 3]
    assert table.loc[0, "roc_auc"] == pytest.approx(22 / 24)
    assert math.isnan(table.loc[1, "roc_auc"])
    assert table.loc[1, "specificity"] == pytest.approx(2 / 3)


def test_metrics_by_group_names_missing_columns() -> None:
    frame = pd.DataFrame({"source": ["a"], "label_index": [1], "probability": [0.3]})
    with pytest.raises(MetricInputError, match="per-group metrics need columns p_positive"):
        metrics_by_group(frame, "source", threshold=0.5)
