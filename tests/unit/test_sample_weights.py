"""Training weights that balance sources and classes: exact values, totals, the one-source case."""

from __future__ import annotations

import numpy as np
import pytest

from braincls.train.fit import class_weights, sample_weights


def test_each_source_and_within_it_each_class_weigh_the_same() -> None:
    sources = ["a"] * 10 + ["b"] * 10
    labels = [0] * 8 + [1] * 2 + [0] * 5 + [1] * 5
    weights = sample_weights(sources, labels, balance_classes=True, balance_sources=True)
    assert weights is not None
    # N / (S * C_s * n(s, c)): 20 / (2 * 2 * 8), 20 / (2 * 2 * 2), 20 / (2 * 2 * 5)
    assert weights.tolist() == [0.625] * 8 + [2.5] * 2 + [1.0] * 10
    assert weights.mean() == pytest.approx(1.0)
    totals = {
        (source, label): float(
            weights[
                [s == source and y == label for s, y in zip(sources, labels, strict=True)]
            ].sum()
        )
        for source in "ab"
        for label in (0, 1)
    }
    assert totals == {("a", 0): 5.0, ("a", 1): 5.0, ("b", 0): 5.0, ("b", 1): 5.0}


def test_a_source_with_one_class_gets_its_share_on_that_class() -> None:
    sources = ["a"] * 4 + ["b"] * 6
    labels = [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    weights = sample_weights(sources, labels, balance_classes=True, balance_sources=True)
    assert weights is not None
    # b has one class: its whole share (N / S = 5) is spread over its six images.
    assert weights.tolist() == pytest.approx([1.25] * 4 + [5 / 6] * 6)


def test_sources_only_balances_source_totals() -> None:
    sources = ["a"] * 2 + ["b"] * 8
    labels = [0, 1] + [0] * 4 + [1] * 4
    weights = sample_weights(sources, labels, balance_classes=False, balance_sources=True)
    assert weights is not None
    assert weights.tolist() == [2.5, 2.5] + [0.625] * 8


def test_one_source_is_sklearn_balanced_class_weighting() -> None:
    labels = [0, 0, 0, 1]
    weights = sample_weights(["x"] * 4, labels, balance_classes=True, balance_sources=True)
    assert weights is not None
    expected = class_weights(labels)
    assert weights.tolist() == pytest.approx([expected[label] for label in labels])


def test_no_balancing_means_no_weights() -> None:
    assert sample_weights(["a", "b"], [0, 1], balance_classes=False, balance_sources=False) is None
    assert sample_weights(["a", "a"], [0, 1], balance_classes=False, balance_sources=True) is None
    assert np.isclose(
        sample_weights(["a", "b"], [0, 1], balance_classes=False, balance_sources=True), 1.0
    ).all()


def test_within_a_brain_area_band_the_classes_weigh_the_same() -> None:
    from braincls.train.fit import brain_area_bands

    # One volume source: small-brain slices are mostly tumour-free, large ones mostly tumour.
    areas = [1000.0] * 6 + [9000.0] * 6
    labels = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0]  # small brains, then large ones
    bands = brain_area_bands(["v"] * 12, areas, 2)
    assert bands == [0] * 6 + [1] * 6
    weights = sample_weights(
        ["v"] * 12, labels, balance_classes=True, balance_sources=True, bands=bands
    )
    assert weights is not None
    # Each band keeps its share (6 of 12); its two classes split it equally: 3 and 3.
    assert weights.tolist() == pytest.approx([0.6] * 5 + [3.0] + [0.6] * 5 + [3.0])
    assert weights.mean() == pytest.approx(1.0)
    # Brain area alone no longer tells the classes apart under these weights.
    small = np.array(bands) == 0
    tumour = np.array(labels) == 1
    assert weights[small & tumour].sum() == pytest.approx(weights[small & ~tumour].sum())


def test_a_source_without_brain_areas_is_one_band() -> None:
    from braincls.train.fit import brain_area_bands

    assert brain_area_bands(["a", "a", "b"], [float("nan"), float("nan"), 5.0], 4) == [0, 0, 0]
