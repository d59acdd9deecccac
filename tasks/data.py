"""Prefect tasks of the data stages: import, split, preprocess."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from braincls.config import ImportConfig, PreprocessConfig, SplitConfig
from braincls.common.layout import DataLayout
from braincls.stages import (
    DatasetRecord,
    ImportRecord,
    SplitRecord,
    import_key,
    preprocess_key_for,
    read_quarantine,
    run_import,
    run_preprocess,
    run_split,
    split_key,
)
from tasks.common import HOUR, MINUTE, TRANSIENT_IO, content_key, markdown_table, retry_on


@task(
    name="import-images",
    timeout_seconds=2 * HOUR,
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_on(*TRANSIENT_IO),
    cache_key_fn=content_key("import", lambda p: import_key(Path(p["images_dir"]), p["config"])),
    tags=["braincls", "data"],
)
def import_images(images_dir: str, data_root: str, config: ImportConfig) -> ImportRecord:
    """Import a class-per-folder image set; quarantined files are listed as an artifact."""
    record = run_import(Path(images_dir), DataLayout(Path(data_root)), config)
    quarantine = read_quarantine(record)
    create_markdown_artifact(
        key="import-summary",
        markdown=(
            f"## Import of `{record.source}`\n\n"
            f"{record.n_images} images in classes {', '.join(record.class_names)}; "
            f"{record.n_groups} near-duplicate groups; {record.n_quarantined} files set aside.\n\n"
            + markdown_table(quarantine.head(20).to_dict("records"))
        ),
        description="Images imported, near-duplicate groups and quarantined files",
    )
    return record


@task(
    name="split-dataset",
    timeout_seconds=30 * MINUTE,
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_on(*TRANSIENT_IO),
    cache_key_fn=content_key("split", lambda p: split_key(p["record"], p["config"])),
    tags=["braincls", "data"],
)
def split_dataset(record: ImportRecord, data_root: str, config: SplitConfig) -> SplitRecord:
    """Assign train / val / test by group; the counts go to the dashboard."""
    out = run_split(record, DataLayout(Path(data_root)), config)
    rows = [
        {"split": split, **{label: out.counts[split].get(label, 0) for label in out.class_names}}
        for split in ("train", "val", "test")
    ]
    create_table_artifact(
        key="split-counts",
        table=rows,
        description=f"Images per split and class ({out.strategy} split, seed {config.seed})",
    )
    return out


@task(
    name="preprocess-images",
    timeout_seconds=4 * HOUR,
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_on(*TRANSIENT_IO),
    cache_key_fn=content_key("preprocess", lambda p: preprocess_key_for(p["record"], p["config"])),
    tags=["braincls", "data"],
)
def preprocess_images(
    record: SplitRecord, data_root: str, config: PreprocessConfig
) -> DatasetRecord:
    """Store every image at the training size, once per content and config."""
    return run_preprocess(record, DataLayout(Path(data_root)), config)
