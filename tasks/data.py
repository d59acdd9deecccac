"""Prefect tasks of the data stages: import, split, preprocess."""

from __future__ import annotations

from pathlib import Path

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import State

from braincls.common.layout import DataLayout
from braincls.config import (
    ImportConfig,
    LabelRuleConfig,
    PreprocessConfig,
    SplitConfig,
    VolumesConfig,
)
from braincls.data.stage import (
    DatasetRecord,
    SourceRecord,
    SplitRecord,
    read_source_quarantine,
    run_import,
    run_preprocess,
    run_split,
    run_volumes,
)
from tasks.common import HOUR, MINUTE, finished, markdown_table, stage_task


@stage_task("import-images", timeout_seconds=2 * HOUR, tags=["data"])
def import_images(
    images_dir: str, data_root: str, config: ImportConfig, refresh: bool = False
) -> SourceRecord | State:
    """Import a class-per-folder image set; quarantined files are listed as an artifact
    (paths relative to the image folder only)."""
    outcome = run_import(Path(images_dir), DataLayout(Path(data_root)), config, refresh=refresh)
    record = outcome.record
    quarantine = read_source_quarantine(record)[["relative_path", "reason"]]
    create_markdown_artifact(
        key="import-summary",
        markdown=(
            f"## Import of `{record.name}`\n\n"
            f"{record.n_images} images in classes {', '.join(record.class_names)}; "
            f"{record.n_groups} near-duplicate groups; {record.n_quarantined} files set aside.\n\n"
            + markdown_table(quarantine.head(20).to_dict("records"))
        ),
        description="Images imported, near-duplicate groups and quarantined files",
    )
    return finished(outcome)


@stage_task("slice-volumes", timeout_seconds=4 * HOUR, tags=["data", "volumes"])
def slice_volumes(
    source_dir: str,
    data_root: str,
    config: VolumesConfig,
    rule: LabelRuleConfig,
    refresh: bool = False,
) -> SourceRecord | State:
    """Slice NIfTI volumes and label each slice from its mask; counts go to the dashboard."""
    outcome = run_volumes(
        Path(source_dir), DataLayout(Path(data_root)), config, rule, refresh=refresh
    )
    record = outcome.record
    summary = record.summary
    create_table_artifact(
        key="volumes-summary",
        table=[
            {"what": "cases read", "count": summary.get("cases_read", 0)},
            *(
                {"what": f"slices labelled {label}", "count": int(n)}
                for label, n in summary.get("labels", {}).items()
            ),
            *(
                {"what": f"set aside: {reason}", "count": int(n)}
                for reason, n in summary.get("set_aside_by_reason", {}).items()
            ),
        ],
        description=(
            f"Volumes of {record.name} ({', '.join(config.sequences)}, {config.plane}): "
            "slices labelled from the masks, and set aside by reason"
        ),
    )
    return finished(outcome)


@stage_task("split-dataset", timeout_seconds=30 * MINUTE, tags=["data"])
def split_dataset(
    sources: list[SourceRecord], data_root: str, config: SplitConfig, refresh: bool = False
) -> SplitRecord | State:
    """Assign train / val / test by group; the counts go to the dashboard."""
    outcome = run_split(sources, DataLayout(Path(data_root)), config, refresh=refresh)
    out = outcome.record
    rows = [
        {"split": split, **{label: out.counts[split].get(label, 0) for label in out.class_names}}
        for split in ("train", "val", "test")
    ]
    create_table_artifact(
        key="split-counts",
        table=rows,
        description=f"Images per split and class ({out.strategy} split, seed {config.seed})",
    )
    return finished(outcome)


@stage_task("preprocess-images", timeout_seconds=4 * HOUR, tags=["data"])
def preprocess_images(
    record: SplitRecord, data_root: str, config: PreprocessConfig, refresh: bool = False
) -> DatasetRecord | State:
    """Store every image at the training size, once per content and config."""
    return finished(run_preprocess(record, DataLayout(Path(data_root)), config, refresh=refresh))
