"""The validation gate's entry point: the Great Expectations suite on a dataset."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from braincls.common.hashing import sha256_file
from braincls.common.layout import DataLayout
from braincls.common.records import RECORD_FILE, Outcome, require, reusable, stage_key, write_record
from braincls.config import ValidateConfig
from braincls.data.stage import DatasetRecord, read_dataset, read_source_quarantine

#: Code version of the validation stage (the suite has its own version inside its hash).
VALIDATE_STAGE_VERSION = "2"


@dataclass(frozen=True)
class ValidationRecord:
    """Output of the validation gate."""

    key: str
    success: bool
    warnings: list[str]
    blocking_failures: list[str]
    docs_index: str | None
    summary_html: str | None
    table_rows: list[dict[str, Any]]
    markdown: str
    run_id: str = ""
    dataset_source: str = ""
    failure: str = ""
    outputs: list[str] = field(default_factory=list)

    def output_paths(self) -> Iterable[Path]:
        """The Data Docs and summary this record names."""
        return [Path(path) for path in self.outputs]


def accepted_modalities(record: DatasetRecord) -> tuple[str, ...]:
    """The (0008,0060) Modality values the gate accepts: those the dataset's DICOM sources
    were converted with (``ConvertConfig.modality``, the one modality setting); empty when a
    source accepted every modality."""
    from braincls.config import DEFAULT_MODALITY

    wanted = [
        str((source.get("config") or {}).get("modality", DEFAULT_MODALITY)).strip().upper()
        for source in record.sources
        if source.get("kind") == "dicom"
    ]
    if not wanted:
        return (DEFAULT_MODALITY,)
    return () if "" in wanted else tuple(sorted(set(wanted)))


def validate_key(record: DatasetRecord, config: ValidateConfig) -> str:
    """Key of the validation stage: dataset manifest, quarantine table, the accepted
    modalities and the suite (with its configured thresholds and version)."""
    from braincls.validate.suite import suite_hash

    quarantine = sha256_file(require(record.quarantine_path))
    return stage_key(
        "validate",
        VALIDATE_STAGE_VERSION,
        record.manifest_sha256,
        quarantine,
        suite_hash(config),
        accepted_modalities(record),
    )


def run_validate(
    record: DatasetRecord,
    layout: DataLayout,
    config: ValidateConfig,
    run_id: str,
    *,
    refresh: bool = False,
) -> Outcome[ValidationRecord]:
    """Run the suite on the dataset and its quarantine table; Data Docs (readable offline) go
    to ``reports/<run_id>/validation/``.

    Returns the outcome whether or not the gate passed; only a passing gate is reused by a
    later run with the same key (a failed one runs again once the data is fixed). The caller
    stops the run on a failure (:func:`raise_for_failure`).
    """
    from braincls.validate.suite import failure_message, run_validation

    key = validate_key(record, config)
    folder = layout.manifests / "validate" / key
    found = reusable(folder / RECORD_FILE, ValidationRecord, refresh=refresh)
    if found is not None:
        return Outcome(found, reused=True)
    report = run_validation(
        read_dataset(record),
        read_source_quarantine(record),
        config,
        docs_dir=layout.reports / run_id / "validation",
        modalities=accepted_modalities(record),
    )
    docs = [str(p) for p in (report.docs_index, report.summary_html) if p is not None]
    out = ValidationRecord(
        key=key,
        success=report.success,
        warnings=list(report.warnings),
        blocking_failures=list(report.blocking_failures),
        docs_index=None if report.docs_index is None else str(report.docs_index),
        summary_html=None if report.summary_html is None else str(report.summary_html),
        table_rows=[dict(row) for row in report.table_rows()],
        markdown=report.to_markdown(),
        run_id=run_id,
        dataset_source=record.source,
        failure="" if report.success else failure_message(report),
        outputs=docs,
    )
    if out.success:
        write_record(folder / RECORD_FILE, out)
    return Outcome(out, reused=False)


def raise_for_failure(record: ValidationRecord) -> None:
    """Stop the run (:class:`~braincls.validate.suite.ValidationFailed`) when a blocking check
    failed, naming the checks, what they saw and where the Data Docs are."""
    from braincls.validate.suite import ValidationFailed

    if not record.success:
        raise ValidationFailed(message=record.failure)
