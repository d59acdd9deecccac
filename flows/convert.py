"""DICOM conversion as its own flow: one task per series, on any task runner (Dask included).

The pipeline converts in one task with a local process pool; users who outgrow one machine run
this flow with ``dask_address`` pointing to a Dask scheduler. Both paths end in the same
assembly step over the same per-series cache, so they produce identical manifests and PNGs.
The data root must be a filesystem shared by the flow and every Dask worker.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, unmapped

from braincls.config import ConvertConfig, LabelRuleConfig
from tasks.convert import convert_dicom, convert_one_series, plan_conversion


@flow(name="convert-dicom", log_prints=True, timeout_seconds=12 * 3600)
def convert_flow(
    sources: list[str],
    data_root: str = "data",
    labels: str | None = None,
    config: ConvertConfig | None = None,
    rule: LabelRuleConfig | None = None,
) -> dict[str, Any]:
    """Convert DICOM folders to training images, one task per series.

    Args:
        sources: DICOM folders (e.g. ``data/raw/UPENN-GBM``), any layout below them.
        data_root: data root shared with every worker; PNGs land in ``converted/``.
        labels: labels table (CSV) mapping PatientID / series / instance to a class.
        config: conversion settings (modality, image size, windowing, slice selection).
        rule: how segmentations (DICOM SEG, RTSTRUCT) label slices without a table row.
    """
    cfg = config or ConvertConfig()
    root = str(Path(data_root).resolve())
    sources = [str(Path(src).resolve()) for src in sources]
    units = plan_conversion(sources, root, cfg)
    if units:
        convert_one_series.map(units, unmapped(root), unmapped(cfg)).result()
    # Every series is converted now: this assembles the manifests and converts nothing.
    record = convert_dicom(sources, root, cfg, labels, rule=rule)
    return asdict(record)


def convert_on_dask(
    sources: list[str],
    data_root: str,
    dask_address: str,
    labels: str | None = None,
    config: ConvertConfig | None = None,
    rule: LabelRuleConfig | None = None,
) -> dict[str, Any]:
    """Run :func:`convert_flow` with its series tasks on the Dask scheduler at ``dask_address``."""
    from prefect_dask import DaskTaskRunner

    runner = DaskTaskRunner(address=dask_address)
    result: dict[str, Any] = convert_flow.with_options(task_runner=runner)(
        sources, data_root, labels, config, rule
    )
    return result
