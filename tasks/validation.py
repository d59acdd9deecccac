"""Prefect task of the data-validation gate: stops a run before training, and shows why."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from braincls.config import ValidateConfig
from braincls.common.layout import DataLayout
from braincls.stages import DatasetRecord, ValidationRecord, run_validate, validate_key
from tasks.common import HOUR, TRANSIENT_IO, content_key, retry_on


@task(
    name="validate-data",
    timeout_seconds=1 * HOUR,
    retries=1,
    retry_delay_seconds=[5],
    retry_condition_fn=retry_on(*TRANSIENT_IO),
    cache_key_fn=content_key("validate", lambda p: validate_key(p["record"], p["config"])),
    tags=["braincls", "validate"],
)
def validate_dataset(
    record: DatasetRecord, data_root: str, config: ValidateConfig, run_id: str
) -> ValidationRecord:
    """Run the Great Expectations suite; publish the results; fail on a blocking check.

    Only a passing gate is cached, so a failed one runs again once the data is fixed.
    """
    outcome, report = run_validate(record, DataLayout(Path(data_root)), config, run_id)
    verdict = "passed" if outcome.success else "FAILED: training will not start"
    create_table_artifact(
        key="validation-results",
        table=outcome.table_rows,
        description=f"Data validation of {record.source} ({verdict})",
    )
    create_markdown_artifact(
        key="validation-summary",
        markdown=outcome.markdown
        + (f"\n\nData Docs (open offline): `{outcome.docs_index}`" if outcome.docs_index else ""),
        description=f"Data validation gate: {verdict}",
    )
    if outcome.summary_html:
        create_link_artifact(
            key="validation-docs",
            link=Path(outcome.summary_html).resolve().as_uri(),
            link_text="validation summary (HTML)",
            description="Self-contained validation summary; GX Data Docs beside it",
        )
    report.raise_for_failure()
    return outcome
