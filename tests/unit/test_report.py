"""Figures and the self-contained evaluation report (HTML, markdown, metrics.json)."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from braincls.evaluate.metrics import (
    binary_metrics,
    bootstrap_ci,
    metrics_by_group,
    multiclass_report,
)
from braincls.evaluate.plots import (
    PlotInputError,
    plot_confusion_matrix,
    plot_gradcam_grid,
    plot_pr_curve,
    plot_reliability_diagram,
    plot_roc_curve,
    plot_training_curves,
)
from braincls.evaluate.report import (
    INTENDED_USE,
    SECTIONS,
    ReportContext,
    ReportError,
    write_report,
)
from braincls.model.gradcam import overlay_heatmap, select_examples

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HISTORY = {
    "loss": [0.69, 0.52, 0.41],
    "accuracy": [0.55, 0.74, 0.82],
    "val_loss": [0.66, 0.55, 0.50],
    "val_accuracy": [0.60, 0.71, 0.77],
    "auc": [0.6, 0.8, 0.9],
    "val_auc": [0.62, 0.78, 0.84],
}


@pytest.fixture(scope="module")
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 120)
    scores = np.clip(0.3 * labels + 0.7 * rng.random(120), 0.0, 1.0)
    return labels, scores


def _png(path: Path) -> bool:
    return path.read_bytes()[:8] == PNG_SIGNATURE


# ------------------------------------------------------------------------------ figures


def test_every_plot_writes_a_png(tmp_path: Path, scored: tuple[np.ndarray, np.ndarray]) -> None:
    labels, scores = scored
    written = [
        plot_confusion_matrix([[50, 8], [12, 50]], ["no", "yes"], tmp_path / "cm.png"),
        plot_training_curves(HISTORY, tmp_path / "curves.png"),
        plot_roc_curve(
            labels, scores, tmp_path / "roc.png", threshold=0.5, roc_auc_interval=(0.7, 0.9)
        ),
        plot_pr_curve(labels, scores, tmp_path / "pr.png", threshold=0.5),
        plot_reliability_diagram(labels, scores, tmp_path / "rel.png", n_bins=10, ece=0.05),
    ]
    assert [path.name for path in written] == [
        "cm.png",
        "curves.png",
        "roc.png",
        "pr.png",
        "rel.png",
    ]
    assert all(_png(path) for path in written)
    # Atomic writes leave no temporary files, and the PNGs carry no software URL.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    assert all(b"http" not in path.read_bytes() for path in written)


def test_training_curves_without_validation_series(tmp_path: Path) -> None:
    path = plot_training_curves({"loss": [1.0, 0.5], "accuracy": [0.5, 0.7]}, tmp_path / "c.png")
    assert _png(path)
    with pytest.raises(PlotInputError, match="training history holds no loss or metric series"):
        plot_training_curves({}, tmp_path / "empty.png")


def test_confusion_matrix_shape_must_match_classes(tmp_path: Path) -> None:
    with pytest.raises(PlotInputError) as error:
        plot_confusion_matrix([[1, 2], [3, 4]], ["a", "b", "c"], tmp_path / "cm.png")
    assert str(error.value) == "confusion matrix of shape (2, 2) does not match 3 class names"
    assert not (tmp_path / "cm.png").exists()


def test_roc_needs_both_classes(tmp_path: Path) -> None:
    with pytest.raises(PlotInputError, match="single class"):
        plot_roc_curve([1, 1, 1], [0.2, 0.5, 0.9], tmp_path / "roc.png")


def test_overlay_heatmap_blends_exactly() -> None:
    image = np.zeros((4, 4), np.uint8)
    heatmap = np.zeros((4, 4))
    blended = overlay_heatmap(image, heatmap, alpha=0.5)
    assert blended.shape == (4, 4, 3) and blended.dtype == np.uint8
    # jet(0) is (0, 0, 0.5): half of 127.5 over a black image.
    assert blended[0, 0].tolist() == [0, 0, 64]
    white = overlay_heatmap(np.full((4, 4), 255, np.uint8), heatmap, alpha=0.0)
    assert (white == 255).all()
    # A float image is min-max scaled for display; a (H, W, 1) image is accepted.
    ramp = overlay_heatmap(np.linspace(0.0, 2.0, 16).reshape(4, 4, 1), heatmap, alpha=0.0)
    assert ramp[0, 0].tolist() == [0, 0, 0] and ramp[3, 3].tolist() == [255, 255, 255]


def test_select_examples_most_telling_first() -> None:
    labels = [1, 1, 1, 0, 0, 0, 1, 0]
    scores = [0.9, 0.6, 0.2, 0.8, 0.55, 0.1, 0.05, 0.95]
    chosen = select_examples(labels, scores, threshold=0.5, per_category=2)
    assert chosen == {
        "true positive": [0, 1],
        "false positive": [7, 3],
        "false negative": [6, 2],
    }
    assert select_examples(labels, scores, 0.5, 0)["true positive"] == []


def test_gradcam_grid_with_an_empty_category(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)
    heatmap = np.zeros((16, 16), np.float32)
    heatmap[2:6, 2:6] = 1.0
    rows = {
        "true positive": [(image, heatmap, "P = 0.97"), (image, heatmap, "P = 0.91")],
        "false positive": [(image, heatmap, "P = 0.66")],
        "false negative": [],
    }
    assert _png(plot_gradcam_grid(rows, tmp_path / "gradcam.png"))


# ------------------------------------------------------------------------------ report


@pytest.fixture(scope="module")
def plot_files(
    tmp_path_factory: pytest.TempPathFactory, scored: tuple[np.ndarray, np.ndarray]
) -> dict[str, Path]:
    """The six report figures, drawn once for the module (each takes about half a second)."""
    labels, scores = scored
    folder = tmp_path_factory.mktemp("plots")
    metrics = binary_metrics(labels, scores, 0.5)
    confusion = [[metrics["tn"], metrics["fp"]], [metrics["fn"], metrics["tp"]]]
    heatmap = np.zeros((16, 16), np.float32)
    return {
        "confusion_matrix": plot_confusion_matrix(confusion, ["no", "yes"], folder / "cm.png"),
        "training_curves": plot_training_curves(HISTORY, folder / "curves.png"),
        "roc": plot_roc_curve(labels, scores, folder / "roc.png", threshold=0.5),
        "pr": plot_pr_curve(labels, scores, folder / "pr.png", threshold=0.5),
        "reliability": plot_reliability_diagram(labels, scores, folder / "rel.png"),
        "gradcam": plot_gradcam_grid(
            {"true positive": [(np.zeros((16, 16)), heatmap, "P = 0.9")]},
            folder / "gradcam.png",
        ),
    }


@pytest.fixture
def ctx(
    tmp_path: Path, scored: tuple[np.ndarray, np.ndarray], plot_files: dict[str, Path]
) -> ReportContext:
    """A full report context whose figures are copied into ``tmp_path / "report"``."""
    labels, scores = scored
    threshold = 0.5
    metrics = binary_metrics(labels, scores, threshold)
    intervals = bootstrap_ci(labels, scores, threshold, n_resamples=200, seed=0)
    predicted = (scores >= threshold).astype(int)
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    plots = {}
    for key, source in plot_files.items():
        plots[key] = report_dir / source.name
        shutil.copyfile(source, plots[key])
    frame = pd.DataFrame(
        {
            "source": ["br35h"] * 100 + ["TCGA-GBM"] * 20,
            "label_index": labels,
            "p_positive": scores,
        }
    )
    return ReportContext(
        run_id="20260101-120000-abc123",
        model_name="seed_cnn",
        model_version="v0003",
        # A URL in free text (e.g. a TCIA landing page) must not become a network reference.
        data_source="Br35H via https://example.org/br35h and TCGA-GBM",
        split_strategy="grouped_by_near_duplicate",
        split_counts={
            "train": {"no": 300, "yes": 310},
            "val": {"no": 60, "yes": 70},
            "test": {"no": int((labels == 0).sum()), "yes": int((labels == 1).sum())},
        },
        class_names=["no", "yes"],
        metrics=metrics,
        threshold=threshold,
        threshold_rule="youden",
        intervals=intervals,
        bootstrap_resamples=200,
        classification_report=multiclass_report(labels, predicted, ["no", "yes"]),
        per_source_metrics=metrics_by_group(frame, "source", threshold),
        history=HISTORY,
        plots=plots,
        promotion={
            "version": "v0003",
            "promoted": False,
            "champion_after": "v0002",
            "reasons": ["ROC AUC 0.8000 vs champion v0002 0.9000: worse by 0.1000."],
        },
        data_hash="f" * 64,
        code_version="0.1.0",
    )


def test_report_is_self_contained_and_complete(tmp_path: Path, ctx: ReportContext) -> None:
    paths = write_report(tmp_path / "report", ctx)
    text = paths.html.read_text(encoding="utf-8")

    assert "http://" not in text and "https://" not in text
    assert "//" not in re.sub(r'src="data:[^"]*"', "", text).replace("&#58;//", "")
    sources = re.findall(r'<img\s+src="([^"]*)"', text)
    assert len(sources) == 6
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == PNG_SIGNATURE
    assert len(re.findall(r"<img\b", text)) == 6
    assert "<link" not in text and "<script" not in text and "@import" not in text
    for heading in SECTIONS:
        assert f"<h2>{heading.replace('&', '&amp;')}</h2>" in text
    assert INTENDED_USE in text
    assert "https&#58;//example.org/br35h" in text  # readable, not a link


def test_every_metric_names_its_data_and_split(tmp_path: Path, ctx: ReportContext) -> None:
    markdown = write_report(tmp_path / "report", ctx).markdown.read_text(encoding="utf-8")
    roc_auc = ctx.metrics["roc_auc"]
    low, high = ctx.intervals["roc_auc"]
    assert (
        f"| ROC AUC | {roc_auc:.3f} | {low:.3f} to {high:.3f} | test split, n = 120 |" in markdown
    )
    assert (
        "All metrics below are computed on the test split of Br35H via https://example.org/br35h "
        f"and TCGA-GBM (n = 120: {ctx.split_counts['test']['no']} no, "
        f"{ctx.split_counts['test']['yes']} yes), at the threshold fixed on the val split."
    ) in markdown
    assert (
        "Threshold 0.5000 on P(yes), chosen by rule 'youden' on the val split and fixed before "
        "the test split was scored."
    ) in markdown
    assert "Metrics per source on the test split, threshold 0.5000" in markdown
    assert "| val_loss | 0.5000 | validation split |" in markdown
    assert "Split strategy: grouped by near-duplicate group" in markdown


def test_markdown_has_sections_and_relative_images(tmp_path: Path, ctx: ReportContext) -> None:
    paths = write_report(tmp_path / "report", ctx)
    markdown = paths.markdown.read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", markdown, flags=re.MULTILINE)
    assert headings == list(SECTIONS)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert links == ["cm.png", "curves.png", "roc.png", "pr.png", "rel.png", "gradcam.png"]
    assert all((paths.markdown.parent / link).is_file() for link in links)
    assert f"> **{INTENDED_USE}**" in markdown
    assert "v0003 was not promoted; the champion is v0002." in markdown


def test_metrics_json_record(tmp_path: Path, ctx: ReportContext) -> None:
    paths = write_report(tmp_path / "report", ctx)
    record = json.loads(paths.metrics_json.read_text(encoding="utf-8"))
    assert record["accuracy"] == ctx.metrics["accuracy"]
    assert record["roc_auc"] == ctx.metrics["roc_auc"]
    assert (record["n_train"], record["n_val"], record["n_test"]) == (610, 130, 120)
    assert record["split"] == "grouped_by_near_duplicate"
    assert record["model"] == "seed_cnn"
    assert record["evaluated_split"] == "test"
    assert record["threshold_rule"] == "youden"
    assert record["confidence_intervals"]["roc_auc"] == list(ctx.intervals["roc_auc"])
    assert [row["source"] for row in record["by_source"]] == ["TCGA-GBM", "br35h"]
    assert record["intended_use"] == INTENDED_USE
    assert sorted(p.name for p in paths.html.parent.iterdir() if p.name.startswith(".")) == []


def test_undefined_values_are_null_in_json_and_na_in_text(
    tmp_path: Path, ctx: ReportContext
) -> None:
    ctx.metrics = {**ctx.metrics, "roc_auc": float("nan")}
    ctx.intervals = {**ctx.intervals, "roc_auc": (float("nan"), float("nan"))}
    paths = write_report(tmp_path / "report", ctx)
    record = json.loads(paths.metrics_json.read_text(encoding="utf-8"))
    assert record["roc_auc"] is None
    assert record["confidence_intervals"]["roc_auc"] == [None, None]
    assert "| ROC AUC | n/a | n/a | test split, n = 120 |" in paths.markdown.read_text()


def test_missing_plots_are_stated_not_fatal(tmp_path: Path, ctx: ReportContext) -> None:
    ctx.plots = {key: path for key, path in ctx.plots.items() if key != "gradcam"}
    ctx.history = None
    ctx.per_source_metrics = None
    ctx.promotion = None
    html = write_report(tmp_path / "report", ctx).html.read_text(encoding="utf-8")
    assert "Not available for this run: no gradcam image." in html
    assert "Not applicable: the test split comes from a single source." in html
    assert "No promotion decision was taken in this run." in html
    assert len(re.findall(r"<img\b", html)) == 5


def test_bad_plot_references_are_rejected(tmp_path: Path, ctx: ReportContext) -> None:
    ctx.plots = {**ctx.plots, "saliency": tmp_path / "x.png"}
    with pytest.raises(ReportError, match="unknown plot keys saliency"):
        write_report(tmp_path / "out", ctx)
    ctx.plots = {"roc": tmp_path / "absent.png"}
    with pytest.raises(ReportError, match="plot files missing: roc"):
        write_report(tmp_path / "out", ctx)
    assert not (tmp_path / "out" / "report.html").exists()
