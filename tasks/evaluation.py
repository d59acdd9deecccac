"""Prefect task of the evaluation stage: the report, and what the dashboard shows of it."""

from __future__ import annotations

import base64
from pathlib import Path

from prefect import task
from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
)

from braincls.config import EvaluateConfig
from braincls.evaluate.evaluation import EvaluationRecord
from braincls.common.layout import DataLayout
from braincls.stages import DatasetRecord, ModelRecord, evaluate_key, run_evaluate
from tasks.common import HOUR, TRANSIENT_IO, content_key, retry_on

HEADLINE = ("accuracy", "roc_auc", "sensitivity", "specificity")


def _data_uri(path: str) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


@task(
    name="evaluate-model",
    timeout_seconds=2 * HOUR,
    retries=1,
    retry_delay_seconds=[5],
    retry_condition_fn=retry_on(*TRANSIENT_IO),
    cache_key_fn=content_key(
        "evaluate", lambda p: evaluate_key(p["model"], p["dataset"], p["config"])
    ),
    tags=["braincls", "evaluate"],
)
def evaluate(
    model: ModelRecord,
    dataset: DatasetRecord,
    data_root: str,
    config: EvaluateConfig,
    run_id: str,
) -> EvaluationRecord:
    """Evaluate on the test split; publish metrics, plots and a link to the report."""
    record: EvaluationRecord = run_evaluate(
        model, dataset, DataLayout(Path(data_root)), config, run_id
    )
    metrics = record.metrics
    where = f"test split of {dataset.source} ({metrics['split']}, n = {metrics['n_test']})"
    rows = []
    for name in HEADLINE:
        interval = metrics["intervals"].get(name)
        rows.append(
            {
                "metric": name,
                "value": None if metrics[name] is None else round(float(metrics[name]), 4),
                "95% CI": ""
                if not interval or None in interval
                else f"{interval[0]:.3f} to {interval[1]:.3f}",
                "data": where,
            }
        )
    rows.append(
        {
            "metric": "threshold (chosen on val)",
            "value": round(metrics["threshold"], 4),
            "95% CI": "",
            "data": "val split",
        }
    )
    create_table_artifact(
        key="evaluation-metrics",
        table=rows,
        description=f"Test metrics of {model.model_name}; research use only",
    )
    images = "\n\n".join(
        f"### {name.replace('_', ' ')}\n![{name}]({_data_uri(path)})"
        for name, path in record.plots.items()
    )
    create_markdown_artifact(
        key="evaluation-report",
        markdown=(
            f"# Evaluation of `{model.model_name}` (run {record.run_id})\n\n"
            f"**Research use only; not for diagnosis.** All figures: {where}.\n\n"
            + "\n".join(
                f"- **{r['metric']}**: {r['value']} {('(95% CI ' + r['95% CI'] + ')') if r['95% CI'] else ''}"
                for r in rows
            )
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
    return record
