"""Prefect tasks of DICOM conversion: the whole tree in one task, or one task per series."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact

from braincls.config import ConvertConfig
from braincls.convert import SeriesResult, SeriesUnit, convert_series, pending_series
from braincls.common.layout import DataLayout
from braincls.stages import ImportRecord, convert_key, read_quarantine, run_convert
from tasks.common import HOUR, TRANSIENT_IO, content_key, retry_on


def _labels(path: str | None) -> Path | None:
    return Path(path) if path else None


@task(
    name="convert-dicom",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_on(*TRANSIENT_IO),
    cache_key_fn=content_key(
        "convert",
        lambda p: convert_key([Path(s) for s in p["sources"]], _labels(p["labels"]), p["config"]),
    ),
    timeout_seconds=6 * HOUR,
    tags=["braincls", "data", "dicom"],
)
def convert_dicom(
    sources: list[str], data_root: str, config: ConvertConfig, labels: str | None = None
) -> ImportRecord:
    """Convert DICOM folders into one images manifest (series already converted are reused).

    Conversion and quarantine counts go to the dashboard as the ``conversion-summary`` table.
    """
    record = run_convert(
        [Path(s) for s in sources], DataLayout(Path(data_root)), config, _labels(labels)
    )
    quarantine = read_quarantine(record)
    reasons = quarantine["reason"].value_counts().sort_index()
    create_table_artifact(
        key="conversion-summary",
        table=[
            {"what": "images", "count": record.n_images},
            {"what": "patients", "count": record.n_groups},
            {"what": "set aside", "count": record.n_quarantined},
            *({"what": f"set aside: {reason}", "count": int(n)} for reason, n in reasons.items()),
        ],
        description=f"DICOM conversion of {record.source}: images, patients, files set aside by reason",
    )
    return record


@task(
    name="plan-conversion",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_on(*TRANSIENT_IO),
    timeout_seconds=HOUR,
    tags=["braincls", "dicom"],
)
def plan_conversion(sources: list[str], data_root: str, config: ConvertConfig) -> list[SeriesUnit]:
    """The series under ``sources`` not yet converted (one unit per series key)."""
    converted = DataLayout(Path(data_root)).converted
    return [unit for src in sources for unit in pending_series(Path(src), converted, config)]


# No timeout: Prefect cannot interrupt a task on a worker thread or a Dask worker (it only warns).
@task(
    name="convert-series",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_on(*TRANSIENT_IO),
    tags=["braincls", "dicom"],
)
def convert_one_series(unit: SeriesUnit, data_root: str, config: ConvertConfig) -> SeriesResult:
    """Convert one series into its key folder (atomic; a finished folder is reused)."""
    return convert_series(unit, DataLayout(Path(data_root)).converted, config)
