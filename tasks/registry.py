"""Prefect task of the model registry: register the new model, decide on promotion."""

from __future__ import annotations

from pathlib import Path

from prefect.artifacts import create_markdown_artifact

from braincls.common.layout import DataLayout
from braincls.config import RegistryConfig
from braincls.data.stage import DatasetRecord
from braincls.evaluate.stage import EvaluationRecord
from braincls.registry.stage import RegistrationRecord, run_register
from braincls.train.stage import ModelRecord
from tasks.common import MINUTE, stage_task


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
        ),
        description=f"Model {outcome.version}: {'promoted' if outcome.promoted else 'kept as challenger'}",
    )
    return outcome
