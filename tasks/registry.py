"""Prefect task of the model registry: register the new model, decide on promotion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact

from braincls.common.layout import DataLayout
from braincls.config import RegistryConfig
from braincls.data.stage import DatasetRecord
from braincls.evaluate.stage import EvaluationRecord
from braincls.registry.stage import RegistrationRecord, run_register
from braincls.train.stage import ModelRecord
from tasks.common import MINUTE, markdown_table, stage_task


def comparison_markdown(version: str, decision: dict[str, Any]) -> str:
    """The comparison behind an automatic decision as a table: each model's decision metric,
    on which images, and the value the candidate had to come within the margin of."""
    comparison = decision.get("comparison")
    if not comparison:
        return ""
    metric = decision.get("decision_metric")
    data = (
        f"the same {comparison['test_images']} test images"
        if comparison["same_test_data"] and comparison.get("test_images") is not None
        else (
            "the same test data" if comparison["same_test_data"] else "each model's own test data"
        )
    )
    rows = [
        {"model": version, "role": "candidate", metric: comparison["candidate_value"]},
        {"model": comparison["champion"], "role": "champion", metric: comparison["champion_value"]},
        *(
            {"model": earlier, "role": "earlier champion", metric: value}
            for earlier, value in comparison["earlier_champions"].items()
        ),
    ]
    for row in rows:
        row["reference"] = "yes" if row["model"] == comparison["reference_version"] else ""
    left_out = comparison.get("excluded_images") or 0
    return (
        f"\n## Comparison ({metric} on {data}; {left_out} test images left out because a "
        f"compared model trained or validated on them)\n\n{markdown_table(rows)}\n\n"
        f"Margin: {decision.get('margin')}: the candidate must come within it of the reference.\n"
    )


@stage_task("register-model", timeout_seconds=10 * MINUTE, tags=["registry"])
def register_model(
    model: ModelRecord,
    dataset: DatasetRecord,
    evaluation: EvaluationRecord,
    data_root: str,
    config: RegistryConfig,
) -> RegistrationRecord:
    """Register the model version; promote it only if it passes the floors and is not worse
    than the champion on the same test data. Never reused: the champion may have changed."""
    outcome = run_register(model, dataset, evaluation, DataLayout(Path(data_root)), config)
    reasons = "\n".join(f"- {reason}" for reason in outcome.reasons)
    create_markdown_artifact(
        key="promotion-decision",
        markdown=(
            f"# Promotion decision: {outcome.version}\n\n**{outcome.summary}**\n\n"
            f"Champion now: `{outcome.champion}`\n\n{reasons}\n"
            + comparison_markdown(outcome.version, outcome.decision)
        ),
        description=f"Model {outcome.version}: {'promoted' if outcome.promoted else 'kept as challenger'}",
    )
    return outcome
