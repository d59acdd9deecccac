"""Prefect task of the evaluation stage: the report, and what the dashboard shows of it."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.states import State

from braincls.common.layout import DataLayout
from braincls.common.notices import INTENDED_USE
from braincls.config import EvaluateConfig
from braincls.data.stage import DatasetRecord
from braincls.evaluate.stage import EvaluationRecord, run_evaluate
from braincls.train.stage import ModelRecord
from tasks.common import HOUR, finished, markdown_table, stage_task

HEADLINE = ("accuracy", "roc_auc", "sensitivity", "specificity")


def _data_uri(path: str) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _interval(metrics: dict[str, Any], name: str) -> str:
    interval = metrics["intervals"].get(name)
    if not interval or None in interval:
        return ""
    return f"{interval[0]:.3f} to {interval[1]:.3f}"


def metric_rows(metrics: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """The headline test metrics with their intervals and data, and the threshold."""
    rows = [
        {
            "metric": name,
            "value": None if metrics[name] is None else round(float(metrics[name]), 4),
            "95% CI": _interval(metrics, name),
            "data": where,
        }
        for name in HEADLINE
    ]
    rows.append(
        {
            "metric": "threshold (chosen on val)",
            "value": round(metrics["threshold"], 4),
            "95% CI": "",
            "data": "val split",
        }
    )
    return rows


def source_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-source test metrics (each source of a multi-source dataset on its own)."""
    rows = []
    for row in metrics.get("by_source", []):
        rows.append(
            {
                "source": row["source"],
                "n": row["n"],
                **{
                    name: None if row.get(name) is None else round(float(row[name]), 4)
                    for name in HEADLINE
                },
            }
        )
    return rows


@stage_task(
    "evaluate-model",
    timeout_seconds=2 * HOUR,
    tags=["evaluate"],
    retries=1,
    retry_delay_seconds=(5,),
)
def evaluate(
    model: ModelRecord,
    dataset: DatasetRecord,
    data_root: str,
    config: EvaluateConfig,
    run_id: str,
    refresh: bool = False,
) -> EvaluationRecord | State:
    """Evaluate on the test split; publish metrics (pooled and per source), plots and a link
    to the report."""
    outcome = run_evaluate(
        model, dataset, DataLayout(Path(data_root)), config, run_id, refresh=refresh
    )
    record = outcome.record
    metrics = record.metrics
    where = f"test split of {dataset.source} ({metrics['split']}, n = {metrics['n_test']})"
    rows = metric_rows(metrics, where)
    create_table_artifact(
        key="evaluation-metrics",
        table=rows,
        description=f"Test metrics of {model.model_name}; {INTENDED_USE}",
    )
    by_source = source_rows(metrics)
    create_table_artifact(
        key="evaluation-by-source",
        table=by_source,
        description=(
            f"Test metrics of {model.model_name} per data source (threshold "
            f"{metrics['threshold']:.3f}, the same for all); {INTENDED_USE}"
        ),
    )
    images = "\n\n".join(
        f"### {name.replace('_', ' ')}\n![{name}]({_data_uri(path)})"
        for name, path in record.plots.items()
    )
    create_markdown_artifact(
        key="evaluation-report",
        markdown=(
            f"# Evaluation of `{model.model_name}` (run {record.run_id})\n\n"
            f"**{INTENDED_USE}** All figures: {where}.\n\n"
            + "\n".join(
                f"- **{r['metric']}**: {r['value']} {('(95% CI ' + r['95% CI'] + ')') if r['95% CI'] else ''}"
                for r in rows
            )
            + "\n\n## Per source (test split)\n\n"
            + markdown_table(by_source)
            + f"\n\nReport: `{record.report_html}`\n\n{images}"
        ),
        description="Evaluation summary with plots",
    )
    if "confusion_matrix" in record.plots:
        create_image_artifact(
            image_url=_data_uri(record.plots["confusion_matrix"]),
            key="confusion-matrix",
            description=f"Confusion matrix, {where}",
        )
    create_link_artifact(
        key="evaluation-report-file",
        link=Path(record.report_html).resolve().as_uri(),
        link_text=f"report {record.run_id}",
        description="Self-contained HTML report on the data root",
    )
    return finished(outcome)
