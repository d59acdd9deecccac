"""The evaluation report: one self-contained HTML file, a markdown twin and ``metrics.json``.

``report.html`` embeds every image as a base64 ``data:`` URI and carries its CSS inline, so it
opens offline, can be mailed or archived, and references nothing on the network (even URLs in
free text are written so that they display but are not links). ``report.md`` references the
PNGs by relative path, for viewing beside them (and on the Prefect dashboard). ``metrics.json``
is the machine-readable record.

Every number states the data and the split it was computed on: metrics on the test split with a
threshold fixed on the validation split, training curves on train and validation.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from braincls.common.atomic import write_json, write_text
from braincls.common.notices import DEFAULT_LIMITATIONS, INTENDED_USE
from braincls.common.records import json_safe
from braincls.evaluate.metrics import DEFAULT_CI_METRICS, METRIC_LABELS, METRIC_NAMES

SplitStrategy = Literal["random_by_file", "grouped_by_near_duplicate", "grouped_by_patient"]

#: How each split strategy is described in reports, with what it means for the numbers.
SPLIT_STRATEGY_TEXT: dict[str, str] = {
    "random_by_file": (
        "random by file (as the seed project did): near-duplicate copies of one slice can sit "
        "in both training and test, so test metrics are optimistic"
    ),
    "grouped_by_near_duplicate": (
        "grouped by near-duplicate group: every group of re-saved, rescaled or cropped copies "
        "of a slice lies in exactly one split"
    ),
    "grouped_by_patient": "grouped by patient: all images of a patient lie in exactly one split",
}

#: Section headings, in order; each appears in both the HTML and the markdown report.
SECTIONS: tuple[str, ...] = (
    "Summary",
    "Intended use",
    "Data & split",
    "Metrics",
    "Threshold",
    "Confusion matrix",
    "Curves",
    "ROC/PR",
    "Calibration",
    "Grad-CAM",
    "Classification report",
    "Per-source metrics",
    "Limitations",
    "Promotion",
)

#: Keys of :attr:`ReportContext.plots` and the section each image belongs to.
PLOT_SECTIONS: dict[str, str] = {
    "confusion_matrix": "Confusion matrix",
    "training_curves": "Curves",
    "roc": "ROC/PR",
    "pr": "ROC/PR",
    "reliability": "Calibration",
    "gradcam": "Grad-CAM",
}

_HEADLINE_METRICS: tuple[str, ...] = ("sensitivity", "specificity", "roc_auc", "balanced_accuracy")


class ReportError(ValueError):
    """The report context is incomplete or inconsistent."""


@dataclass(frozen=True)
class ReportPaths:
    """Files written by :func:`write_report`."""

    html: Path
    markdown: Path
    metrics_json: Path


@dataclass
class ReportContext:
    """Everything a report states. Metrics are those of ``evaluated_split`` (the test split).

    ``split_counts`` maps split name (train, val, test) to class name to image count.
    ``intervals`` maps metric name to its (low, high) bootstrap interval at
    ``confidence_level``. ``plots`` maps keys of :data:`PLOT_SECTIONS` to PNG files.
    ``promotion`` is a :class:`braincls.registry.store.PromotionDecision` as a dict (``to_dict()``).
    """

    run_id: str
    model_name: str
    data_source: str
    split_strategy: SplitStrategy
    split_counts: Mapping[str, Mapping[str, int]]
    class_names: Sequence[str]
    metrics: Mapping[str, float]
    threshold: float
    threshold_rule: str
    model_version: str | None = None
    evaluated_split: str = "test"
    threshold_split: str = "val"
    threshold_detail: str = ""
    intervals: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    confidence_level: float = 0.95
    bootstrap_resamples: int = 0
    classification_report: Mapping[str, Any] | None = None
    per_source_metrics: pd.DataFrame | None = None
    per_source_column: str = "source"
    history: Mapping[str, Sequence[float]] | None = None
    plots: Mapping[str, Path] = field(default_factory=dict)
    promotion: Mapping[str, Any] | None = None
    data_hash: str | None = None
    code_version: str | None = None
    limitations: Sequence[str] = DEFAULT_LIMITATIONS
    notes: Sequence[str] = ()
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def count(self, split: str) -> int:
        """Number of images in ``split`` (0 when absent)."""
        return int(sum(self.split_counts.get(split, {}).values()))

    @property
    def evaluated_data(self) -> str:
        """The phrase naming the data every test metric comes from."""
        counts = self.split_counts.get(self.evaluated_split, {})
        detail = ", ".join(f"{count} {name}" for name, count in counts.items())
        return (
            f"{self.evaluated_split} split of {self.data_source} "
            f"(n = {self.count(self.evaluated_split)}{': ' + detail if detail else ''})"
        )


# --------------------------------------------------------------------------------------------
# Formatting helpers
# --------------------------------------------------------------------------------------------


def _count(value: Any) -> str:
    """A count (the metrics hold them as floats) as a whole number."""
    return str(round(float(value)))


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return "n/a"
    return f"{number:.{digits}f}"


def _interval(interval: tuple[float, float] | None) -> str:
    if interval is None or any(math.isnan(float(bound)) for bound in interval):
        return "n/a"
    return f"{interval[0]:.3f} to {interval[1]:.3f}"


_URL_SCHEME = re.compile(r"(?i)\b(https?|ftp|wss?):")


def _text(value: Any) -> str:
    """HTML-escape ``value``; URLs stay readable but are not links or fetchable references."""
    escaped = html.escape(str(value), quote=True)
    return _URL_SCHEME.sub(lambda match: f"{match.group(1)}&#58;", escaped)


def _data_uri(path: Path) -> str:
    payload = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{payload}"


def _anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")


# A Table is a header row plus body rows of already formatted (unescaped) strings.
_Table = tuple[list[str], list[list[str]]]


def _html_table(table: _Table, caption: str | None = None) -> str:
    header, rows = table
    parts = ["<table>"]
    if caption:
        parts.append(f"<caption>{_text(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th>{_text(cell)}</th>" for cell in header) + "</tr>")
    parts.append("</thead><tbody>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{_text(cell)}</td>" for cell in row) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def _md_cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def _md_table(table: _Table, caption: str | None = None) -> str:
    header, rows = table
    lines = []
    if caption:
        lines.extend([f"*{caption}*", ""])
    lines.append("| " + " | ".join(_md_cell(cell) for cell in header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines.extend("| " + " | ".join(_md_cell(cell) for cell in row) + " |" for row in rows)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Content: each section as a list of blocks shared by the HTML and markdown renderers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Paragraph:
    text: str


@dataclass(frozen=True)
class _Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class _TableBlock:
    table: _Table
    caption: str | None = None


@dataclass(frozen=True)
class _Image:
    path: Path
    alt: str
    caption: str


_Block = _Paragraph | _Bullets | _TableBlock | _Image


def _metric_rows(ctx: ReportContext) -> _Table:
    header = ["Metric", "Value", f"{round(ctx.confidence_level * 100)}% CI", "Data"]
    rows = []
    for name in METRIC_NAMES:
        if name not in ctx.metrics:
            continue
        rows.append(
            [
                METRIC_LABELS[name],
                _number(ctx.metrics[name]),
                _interval(ctx.intervals.get(name)),
                f"{ctx.evaluated_split} split, n = {ctx.count(ctx.evaluated_split)}",
            ]
        )
    return header, rows


def _plot_block(ctx: ReportContext, key: str, caption: str, why_missing: str = "") -> _Block:
    path = ctx.plots.get(key)
    if path is None or not Path(path).is_file():
        return _Paragraph(
            why_missing or f"Not available for this run: no {key.replace('_', ' ')} image."
        )
    return _Image(Path(path), alt=key.replace("_", " "), caption=caption)


def _single_class_note(ctx: ReportContext) -> str:
    """Why ROC and PR curves are missing when the evaluated split holds one class ('' else)."""
    counts = ctx.split_counts.get(ctx.evaluated_split, {})
    present = [name for name in ctx.class_names if counts.get(name, 0) > 0]
    if len(present) != 1:
        return ""
    shown = ", ".join(f"{counts.get(name, 0)} {name}" for name in ctx.class_names)
    return (
        f"Not drawn: the {ctx.evaluated_split} split holds one class only ({shown}); ROC and "
        "precision-recall curves need both. The metrics that exist for one class are in the "
        "table above."
    )


def _sections(ctx: ReportContext) -> list[tuple[str, list[_Block]]]:
    test_data = ctx.evaluated_data
    threshold_sentence = (
        f"Threshold {ctx.threshold:.4f} on P({ctx.class_names[-1]}), chosen by rule "
        f"'{ctx.threshold_rule}' on the {ctx.threshold_split} split and fixed before the "
        f"{ctx.evaluated_split} split was scored."
    )
    strategy_text = SPLIT_STRATEGY_TEXT.get(ctx.split_strategy, ctx.split_strategy)
    promotion = ctx.promotion

    summary_items = [
        f"Run {ctx.run_id}; model {ctx.model_name}"
        + (f" version {ctx.model_version}" if ctx.model_version else "")
        + f"; report written {ctx.created_at}.",
        f"Evaluated on the {test_data}; split {strategy_text}.",
    ]
    for name in _HEADLINE_METRICS:
        if name in ctx.metrics:
            summary_items.append(
                f"{METRIC_LABELS[name]}: {_number(ctx.metrics[name])} "
                f"({round(ctx.confidence_level * 100)}% CI {_interval(ctx.intervals.get(name))}) "
                f"on the {ctx.evaluated_split} split."
            )
    summary_items.append(threshold_sentence)
    if promotion is not None:
        summary_items.append(f"Promotion: {_promotion_headline(promotion)}")
    summary_items.append(INTENDED_USE)

    counts_header = ["Split", *[str(name) for name in ctx.class_names], "Total"]
    counts_rows = []
    for split, per_class in ctx.split_counts.items():
        counts_rows.append(
            [
                split,
                *[str(int(per_class.get(str(name), 0))) for name in ctx.class_names],
                str(int(sum(per_class.values()))),
            ]
        )
    data_blocks: list[_Block] = [
        _Paragraph(f"Data source: {ctx.data_source}."),
        _Paragraph(f"Split strategy: {strategy_text}."),
        _TableBlock((counts_header, counts_rows), "Images per split and class"),
    ]
    if ctx.data_hash:
        data_blocks.append(_Paragraph(f"Data manifest hash (SHA-256): {ctx.data_hash}."))
    if ctx.code_version:
        data_blocks.append(_Paragraph(f"Code version: {ctx.code_version}."))

    metric_blocks: list[_Block] = [
        _Paragraph(
            f"All metrics below are computed on the {test_data}, at the threshold fixed on the "
            f"{ctx.threshold_split} split. Intervals: "
            + (
                f"{round(ctx.confidence_level * 100)}% percentile bootstrap over "
                f"{ctx.bootstrap_resamples} stratified resamples of the "
                f"{ctx.evaluated_split} split."
                if ctx.bootstrap_resamples
                else "not computed for this run."
            )
        ),
        _TableBlock(_metric_rows(ctx)),
    ]
    missing_ci = [
        METRIC_LABELS[name]
        for name in DEFAULT_CI_METRICS
        if name in ctx.metrics and name not in ctx.intervals
    ]
    if ctx.bootstrap_resamples and missing_ci:
        metric_blocks.append(_Paragraph("No interval for: " + ", ".join(missing_ci) + "."))
    if ctx.notes:
        metric_blocks.append(_Bullets(tuple(ctx.notes)))

    threshold_blocks: list[_Block] = [_Paragraph(threshold_sentence)]
    if ctx.threshold_detail:
        threshold_blocks.append(_Paragraph(ctx.threshold_detail))
    counts = {name: ctx.metrics.get(name) for name in ("tp", "fp", "tn", "fn")}
    if all(value is not None for value in counts.values()):
        threshold_blocks.append(
            _Paragraph(
                f"At this threshold on the {ctx.evaluated_split} split: "
                f"{_count(counts['tp'])} true positives, {_count(counts['fp'])} false "
                f"positives, {_count(counts['tn'])} true negatives, {_count(counts['fn'])} "
                "false negatives."
            )
        )

    curves_blocks: list[_Block] = [
        _plot_block(
            ctx,
            "training_curves",
            "Loss and accuracy per epoch on the train split and the validation split "
            "(validation data guided training only through early stopping, if enabled).",
        )
    ]
    if ctx.history:
        last = {key: values[-1] for key, values in ctx.history.items() if len(values)}
        curves_blocks.append(
            _TableBlock(
                (
                    ["Series", "Final epoch value", "Data"],
                    [
                        [
                            key,
                            _number(value, 4),
                            "validation split" if key.startswith("val_") else "train split",
                        ]
                        for key, value in sorted(last.items())
                    ],
                ),
                f"Training history ({max(len(v) for v in ctx.history.values())} epochs)",
            )
        )

    report_blocks: list[_Block]
    if ctx.classification_report:
        report_header = ["Class", "Precision", "Recall", "F1", "Support"]
        report_rows = []
        for key, value in ctx.classification_report.items():
            if isinstance(value, Mapping):
                report_rows.append(
                    [
                        str(key),
                        _number(value.get("precision")),
                        _number(value.get("recall")),
                        _number(value.get("f1-score")),
                        _number(value.get("support"), 0),
                    ]
                )
            else:
                report_rows.append([str(key), "", "", _number(value), ""])
        report_blocks = [
            _TableBlock(
                (report_header, report_rows),
                f"scikit-learn classification report on the {test_data}, "
                f"threshold {ctx.threshold:.4f}",
            )
        ]
    else:
        report_blocks = [_Paragraph("Not available for this run: no classification report.")]

    source_blocks: list[_Block]
    frame = ctx.per_source_metrics
    if frame is not None and len(frame):
        shown = [
            column
            for column in (
                ctx.per_source_column,
                "n",
                "n_positive",
                "n_negative",
                "sensitivity",
                "specificity",
                "roc_auc",
                "balanced_accuracy",
            )
            if column in frame.columns
        ]
        source_rows = [
            [
                _number(row[column]) if column != ctx.per_source_column else str(row[column])
                for column in shown
            ]
            for _, row in frame.iterrows()
        ]
        source_blocks = [
            _TableBlock(
                (shown, source_rows),
                f"Metrics per {ctx.per_source_column} on the {ctx.evaluated_split} split, "
                f"threshold {ctx.threshold:.4f}; n/a where a source lacks one class",
            )
        ]
    else:
        source_blocks = [
            _Paragraph(
                f"Not applicable: the {ctx.evaluated_split} split comes from a single source."
            )
        ]

    promotion_blocks: list[_Block]
    if promotion is None:
        promotion_blocks = [_Paragraph("No promotion decision was taken in this run.")]
    else:
        promotion_blocks = [
            _Paragraph(_promotion_headline(promotion)),
            _Bullets(tuple(str(reason) for reason in promotion.get("reasons", ()))),
        ]

    return [
        ("Summary", [_Bullets(tuple(summary_items))]),
        ("Intended use", [_Paragraph(INTENDED_USE)]),
        ("Data & split", data_blocks),
        ("Metrics", metric_blocks),
        ("Threshold", threshold_blocks),
        (
            "Confusion matrix",
            [
                _plot_block(
                    ctx,
                    "confusion_matrix",
                    f"Confusion matrix on the {test_data} at threshold {ctx.threshold:.4f}.",
                )
            ],
        ),
        ("Curves", curves_blocks),
        (
            "ROC/PR",
            [
                _plot_block(ctx, "roc", f"ROC curve on the {test_data}.", _single_class_note(ctx)),
                _plot_block(
                    ctx,
                    "pr",
                    f"Precision-recall curve on the {test_data}.",
                    _single_class_note(ctx),
                ),
            ],
        ),
        (
            "Calibration",
            [
                _Paragraph(
                    f"Expected calibration error {_number(ctx.metrics.get('ece'))} and Brier "
                    f"score {_number(ctx.metrics.get('brier'))} on the {ctx.evaluated_split} "
                    "split."
                ),
                _plot_block(ctx, "reliability", f"Reliability diagram on the {test_data}."),
            ],
        ),
        (
            "Grad-CAM",
            [
                _plot_block(
                    ctx,
                    "gradcam",
                    f"Grad-CAM overlays for examples from the {ctx.evaluated_split} split: "
                    "where the last convolutional layer's evidence for the positive class lies. "
                    "A heatmap shows attention, not a lesion outline.",
                )
            ],
        ),
        ("Classification report", report_blocks),
        ("Per-source metrics", source_blocks),
        ("Limitations", [_Bullets(tuple(ctx.limitations))]),
        ("Promotion", promotion_blocks),
    ]


def _promotion_headline(promotion: Mapping[str, Any]) -> str:
    version = promotion.get("version", "this model")
    after = promotion.get("champion_after")
    if promotion.get("promoted"):
        return f"{version} became the champion."
    return f"{version} was not promoted; the champion is {after or 'none'}."


# --------------------------------------------------------------------------------------------
# Renderers
# --------------------------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2rem auto;
       max-width: 980px; color: #1d2733; line-height: 1.45; padding: 0 1rem; }
h1 { border-bottom: 2px solid #1d2733; padding-bottom: .3rem; }
h2 { margin-top: 2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .92rem; }
caption { text-align: left; font-style: italic; color: #555; padding-bottom: .3rem; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; text-align: left; }
th { background: #f3f5f7; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; border: 1px solid #e1e4e8; }
figcaption { font-size: .9rem; color: #555; }
.intended-use { background: #fff4e5; border-left: 4px solid #e67e22; padding: .6rem 1rem; }
nav ol { columns: 2; font-size: .92rem; }
"""


def _render_html(ctx: ReportContext, sections: list[tuple[str, list[_Block]]]) -> str:
    title = f"braincls evaluation report: {ctx.model_name} (run {ctx.run_id})"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_text(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_text(title)}</h1>",
        f'<p class="intended-use"><strong>{_text(INTENDED_USE)}</strong></p>',
        "<nav><ol>"
        + "".join(
            f'<li><a href="#{_anchor(heading)}">{_text(heading)}</a></li>'
            for heading, _ in sections
        )
        + "</ol></nav>",
    ]
    for heading, blocks in sections:
        parts.append(f'<section id="{_anchor(heading)}"><h2>{_text(heading)}</h2>')
        for block in blocks:
            if isinstance(block, _Paragraph):
                parts.append(f"<p>{_text(block.text)}</p>")
            elif isinstance(block, _Bullets):
                items = "".join(f"<li>{_text(item)}</li>" for item in block.items)
                parts.append(f"<ul>{items}</ul>")
            elif isinstance(block, _TableBlock):
                parts.append(_html_table(block.table, block.caption))
            else:
                parts.append(
                    f'<figure><img src="{_data_uri(block.path)}" alt="{_text(block.alt)}">'
                    f"<figcaption>{_text(block.caption)}</figcaption></figure>"
                )
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _render_markdown(
    ctx: ReportContext, sections: list[tuple[str, list[_Block]]], report_dir: Path
) -> str:
    lines = [
        f"# braincls evaluation report: {ctx.model_name} (run {ctx.run_id})",
        "",
        f"> **{INTENDED_USE}**",
        "",
    ]
    for heading, blocks in sections:
        lines.extend([f"## {heading}", ""])
        for block in blocks:
            if isinstance(block, _Paragraph):
                lines.append(block.text)
            elif isinstance(block, _Bullets):
                lines.extend(f"- {item}" for item in block.items)
            elif isinstance(block, _TableBlock):
                lines.append(_md_table(block.table, block.caption))
            else:
                relative = Path(os.path.relpath(block.path.resolve(), report_dir.resolve()))
                lines.append(f"![{block.alt}]({relative.as_posix()})")
                lines.extend(["", f"*{block.caption}*"])
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def metrics_record(ctx: ReportContext) -> dict[str, Any]:
    """The ``metrics.json`` content: flat test metrics plus their provenance."""
    record: dict[str, Any] = {
        "run_id": ctx.run_id,
        "model": ctx.model_name,
        "model_version": ctx.model_version,
        "split": ctx.split_strategy,
        "evaluated_split": ctx.evaluated_split,
        "data_source": ctx.data_source,
        "data_hash": ctx.data_hash,
        "code_version": ctx.code_version,
        "n_train": ctx.count("train"),
        "n_val": ctx.count("val"),
        "n_test": ctx.count("test"),
        "split_counts": {split: dict(counts) for split, counts in ctx.split_counts.items()},
        "class_names": list(ctx.class_names),
        "threshold": ctx.threshold,
        "threshold_rule": ctx.threshold_rule,
        "threshold_split": ctx.threshold_split,
        "confidence_level": ctx.confidence_level,
        "bootstrap_resamples": ctx.bootstrap_resamples,
        "confidence_intervals": {name: list(bounds) for name, bounds in ctx.intervals.items()},
        "classification_report": ctx.classification_report,
        "by_source": ctx.per_source_metrics,
        "promotion": ctx.promotion,
        "intended_use": INTENDED_USE,
        "created_at": ctx.created_at,
    }
    for name, value in ctx.metrics.items():
        record.setdefault(name, value)
    return dict(json_safe(record))


def write_report(report_dir: Path, ctx: ReportContext) -> ReportPaths:
    """Write ``report.html``, ``report.md`` and ``metrics.json`` into ``report_dir``, atomically.

    Plot files named in ``ctx.plots`` must exist (they are embedded into the HTML and linked
    from the markdown by a path relative to ``report_dir``); a missing key is reported as
    "not available" in its section.
    """
    report_dir = Path(report_dir)
    if not ctx.class_names:
        raise ReportError("the report context has no class names")
    unknown = sorted(set(ctx.plots) - set(PLOT_SECTIONS))
    if unknown:
        raise ReportError(
            f"unknown plot keys {', '.join(unknown)}; known: {', '.join(PLOT_SECTIONS)}"
        )
    missing = sorted(key for key, path in ctx.plots.items() if not Path(path).is_file())
    if missing:
        raise ReportError(
            "plot files missing: " + ", ".join(f"{key} ({ctx.plots[key]})" for key in missing)
        )
    sections = _sections(ctx)
    report_dir.mkdir(parents=True, exist_ok=True)
    html_path = write_text(report_dir / "report.html", _render_html(ctx, sections))
    markdown_path = write_text(
        report_dir / "report.md", _render_markdown(ctx, sections, report_dir)
    )
    metrics_path = write_json(report_dir / "metrics.json", metrics_record(ctx))
    return ReportPaths(html=html_path, markdown=markdown_path, metrics_json=metrics_path)
