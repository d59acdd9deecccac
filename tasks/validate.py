"""Prefect task of the data-validation gate: stops a run before training, and shows why."""

from __future__ import annotations

from pathlib import Path

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.states import State

from braincls.common.layout import DataLayout
from braincls.config import ValidateConfig
from braincls.data.stage import DatasetRecord
from braincls.validate.stage import ValidationRecord, raise_for_failure, run_validate
from tasks.common import HOUR, finished, stage_task


@stage_task(
    "validate-data", timeout_seconds=HOUR, tags=["validate"], retries=1, retry_delay_seconds=(5,)
)
def validate_dataset(
    record: DatasetRecord,
    data_root: str,
    config: ValidateConfig,
    run_id: str,
    refresh: bool = False,
) -> ValidationRecord | State:
    """Run the Great Expectations suite; publish the results; fail on a blocking check.

    Only a passing gate is reused by a later run, so a failed one runs again once the data is
    fixed.
    """
    outcome = run_validate(record, DataLayout(Path(data_root)), config, run_id, refresh=refresh)
    result = outcome.record
    verdict = "passed" if result.success else "FAILED: training will not start"
    create_table_artifact(
        key="validation-results",
        table=result.table_rows,
        description=f"Data validation of {record.source} ({verdict})",
    )
    create_markdown_artifact(
        key="validation-summary",
        markdown=result.markdown
        + (f"\n\nData Docs (open offline): `{result.docs_index}`" if result.docs_index else ""),
        description=f"Data validation gate: {verdict}",
    )
    if result.summary_html:
        create_link_artifact(
            key="validation-docs",
            link=Path(result.summary_html).resolve().as_uri(),
            link_text="validation summary (HTML)",
            description="Self-contained validation summary; GX Data Docs beside it",
        )
    raise_for_failure(result)
    return finished(outcome)
