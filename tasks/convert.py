"""Prefect tasks of DICOM conversion: the whole tree in one task, or one task per series."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from braincls.common.layout import DataLayout
from braincls.config import ConvertConfig, LabelRuleConfig, Settings
from braincls.convert import SeriesResult, SeriesUnit, convert_series, pending_series
from braincls.convert.privacy import resolve_pseudonymisation
from braincls.convert.stage import run_convert
from braincls.data.stage import SourceRecord
from tasks.common import HOUR, TRANSIENT_IO, finished, retry_on, stage_task
from tasks.progress import listener


def _labels(path: str | None) -> Path | None:
    return Path(path) if path else None


def with_configured_salt(config: ConvertConfig) -> ConvertConfig:
    """``config`` with the pseudonym salt of the Prefect Secret block named by
    ``BRAINCLS_PSEUDONYM_SALT_BLOCK``, read here on the worker; without that setting the
    library reads ``BRAINCLS_PSEUDONYM_SALT``. The salt is never a parameter of a flow or a
    task, so it is in no run's parameters, no record and no artifact."""
    block = Settings().pseudonym_salt_block
    if not block:
        return config
    from prefect.blocks.system import Secret

    return config.with_pseudonym_salt(str(Secret.load(block).get()))


@stage_task("convert-dicom", timeout_seconds=6 * HOUR, tags=["data", "dicom"])
def convert_dicom(
    sources: list[str],
    data_root: str,
    config: ConvertConfig,
    labels: str | None = None,
    refresh: bool = False,
    rule: LabelRuleConfig | None = None,
) -> SourceRecord | State:
    """Convert DICOM folders into one images manifest (series already converted are reused);
    labels come from the labels table, else from the DICOM SEG / RTSTRUCT objects.

    Conversion and quarantine counts go to the dashboard as the ``conversion-summary`` table,
    and what each segmentation labelled as ``segmentation-summary``.
    """
    outcome = run_convert(
        [Path(s) for s in sources],
        DataLayout(Path(data_root)),
        with_configured_salt(config),
        _labels(labels),
        rule=rule,
        refresh=refresh,
        on_progress=listener(),
    )
    record = outcome.record
    reasons = record.summary.get("set_aside_by_reason", {})
    sources_of_labels = record.summary.get("label_sources", {})
    create_table_artifact(
        key="conversion-summary",
        table=[
            {"what": "images", "count": record.n_images},
            *(
                {"what": f"labelled by {source}", "count": int(n)}
                for source, n in sources_of_labels.items()
            ),
            {"what": "patients", "count": record.n_groups},
            {"what": "set aside", "count": record.n_quarantined},
            {
                "what": "sources with pseudonymised Patient IDs",
                "count": len(record.summary.get("pseudonymised_sources", [])),
            },
            *({"what": f"set aside: {reason}", "count": int(n)} for reason, n in reasons.items()),
        ],
        description=f"DICOM conversion of {record.name}: images, label sources, patients, files set aside by reason",
    )
    segmentations = record.summary.get("segmentations", [])
    if segmentations:
        create_table_artifact(
            key="segmentation-summary",
            table=[
                {key: value for key, value in row.items() if key not in ("segmentation_path",)}
                for row in segmentations
            ],
            description=(
                "Slices each segmentation labelled (yes / no), set aside by the labelling rule "
                "(ambiguous, no brain) and could not match"
            ),
        )
    return finished(outcome)


@stage_task("plan-conversion", timeout_seconds=HOUR, tags=["dicom"])
def plan_conversion(sources: list[str], data_root: str, config: ConvertConfig) -> list[SeriesUnit]:
    """The series under ``sources`` not yet converted (one unit per series key)."""
    converted = DataLayout(Path(data_root)).converted
    salted = with_configured_salt(config)
    return [unit for src in sources for unit in pending_series(Path(src), converted, salted)]


# No timeout: Prefect cannot interrupt a task on a worker thread or a Dask worker (it only warns).
@task(
    name="convert-series",
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_on(*TRANSIENT_IO),
    cache_policy=NO_CACHE,
    persist_result=False,
    tags=["braincls", "dicom"],
)
def convert_one_series(unit: SeriesUnit, data_root: str, config: ConvertConfig) -> SeriesResult:
    """Convert one series into its key folder (atomic; a finished folder is reused); its
    Patient IDs are pseudonymised as for the whole source folder (``unit.root``)."""
    resolved = resolve_pseudonymisation(with_configured_salt(config), unit.root)
    return convert_series(unit, DataLayout(Path(data_root)).converted, resolved)
