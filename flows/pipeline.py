"""The main job: import (or convert) -> split -> preprocess -> validate -> train -> evaluate ->
register.

Every stage but the registry reuses its outputs when its inputs have not changed (the stage
records under the data root are the one cache); ``refresh`` rebuilds everything.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from braincls.common.progress import STAGE_UNIT, Progress
from braincls.config import PipelineConfig
from braincls.data.stage import DatasetRecord, SourceRecord
from braincls.train.stage import ModelRecord
from flows.failures import stage
from tasks.common import HOUR
from tasks.convert import convert_dicom
from tasks.data import import_images, preprocess_images, slice_volumes, split_dataset
from tasks.evaluate import evaluate
from tasks.progress import forward
from tasks.registry import register_model
from tasks.train import train
from tasks.validate import validate_dataset


def new_run_id() -> str:
    """One id per flow run: the UTC time and the start of the flow run's id."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run = flow_run.get_id()
    return f"{stamp}-{str(run)[:8]}" if run else stamp


#: What an operator should do when a stage fails; the run's final message carries it.
WHAT_TO_DO = {
    "import": "check the image folder named above (one sub-folder per class) and rerun",
    "volumes": (
        "check the volumes folder and the file patterns (config.volumes); the table of set-aside "
        "files names each bad volume, then rerun"
    ),
    "convert": (
        "check the DICOM folders and the labels table named above; converted series are kept, "
        "so a rerun converts only what is missing"
    ),
    "split": "add data or change the split fractions (config.split), then rerun",
    "preprocess": "check the image named above (or free disk space) and rerun",
    "validate": (
        "open the Data Docs named above, fix the data (or list the check in "
        "config.validate_.warning_checks to let it only warn) and rerun"
    ),
    "train": (
        "rerun the pipeline: training resumes from its last finished epoch; if it fails again, "
        "check memory and the training logs"
    ),
    "evaluate": "rerun the pipeline (the trained model is kept and not retrained)",
    "register": "rerun the pipeline; the registry was left as it was (writes are atomic)",
}


def _call(name: str, task: Any, *args: Any, **kwargs: Any) -> tuple[Any, str]:
    """Run stage ``name``'s task; return its result and state name (``Cached`` when it reused
    an earlier run's outputs). A failure ends the run with a message naming the stage and
    what to do."""
    forward(Progress(name, detail="started"))
    with stage(name, WHAT_TO_DO[name]):
        state = task(*args, **kwargs, return_state=True)
        result = state.result()
    forward(Progress(name, unit=STAGE_UNIT, detail=state.name.lower(), finished=True))
    return result, state.name


def _train_remote(
    deployment: str, dataset: DatasetRecord, root: str, cfg: PipelineConfig, refresh: bool
) -> tuple[ModelRecord, str]:
    """Run the training flow as a deployment (e.g. on the `gpu` pool) and read its record."""
    from prefect.deployments import run_deployment

    from braincls.train.stage import read_model_record

    run = run_deployment(
        deployment,
        parameters={
            "dataset": asdict(dataset),
            "data_root": root,
            "config": cfg.train.model_dump(),
            "refresh": refresh,
        },
        timeout=None,
    )
    if run.state is None or not run.state.is_completed():
        state = run.state.name if run.state else "unknown"
        raise RuntimeError(
            f"training deployment '{deployment}' run {run.name} ended {state}; "
            "see its logs in the dashboard, fix the cause and rerun (training resumes)"
        )
    return read_model_record(dataset, Path(root), cfg.train), "Completed"


def _convert_remote(
    sources: list[str], root: str, labels: str | None, cfg: PipelineConfig, dask_address: str
) -> tuple[SourceRecord, str]:
    """Convert on a Dask cluster (one task per series) through the conversion flow."""
    from flows.convert import convert_on_dask

    record = convert_on_dask(sources, root, dask_address, labels, cfg.convert, cfg.labels)
    return SourceRecord(**record), "Completed"


def _resolved(paths: list[str] | None) -> list[str]:
    return [str(Path(p).resolve()) for p in paths or []]


# Longer than the training task's own limit (10 h) plus the other stages.
@flow(name="braincls-pipeline", log_prints=True, timeout_seconds=12 * HOUR)
def pipeline(
    images_dir: str | None = None,
    data_root: str = "data",
    config: PipelineConfig | None = None,
    train_deployment: str | None = None,
    dicom_dirs: list[str] | None = None,
    labels: str | None = None,
    dask_address: str | None = None,
    images_dirs: list[str] | None = None,
    volumes_dirs: list[str] | None = None,
    refresh: bool = False,
) -> dict[str, Any]:
    """Train and evaluate a tumor / no-tumor classifier on image folders and / or DICOM.

    Args:
        images_dir: a folder with one sub-folder per class (e.g. ``yes/`` and ``no/``).
        data_root: where images, manifests, models and reports are written.
        config: the pipeline configuration; defaults everywhere when omitted. Sources listed in
            its ``sources`` section are added to those given here.
        train_deployment: run training as this deployment (e.g. ``train-model/train-gpu``)
            instead of in-process; the data root must be shared with its workers.
        dicom_dirs: DICOM folders to convert (e.g. ``data/raw/X``); the split keeps each
            patient on one side.
        labels: labels table (CSV) for ``dicom_dirs``: PatientID / series / instance -> class.
        dask_address: convert DICOM on this Dask scheduler (``tcp://host:8786``), one task per
            series, instead of a local process pool.
        images_dirs: more class-per-folder image sets, each a source of its own.
        volumes_dirs: folders of co-registered NIfTI volumes with segmentation masks (BraTS
            layout by default, see config.volumes), each a source of its own; slices are
            labelled from the masks (config.labels) and split by patient.
        refresh: rebuild every stage's outputs instead of reusing earlier ones.
    """
    logger = get_run_logger()
    cfg = config or PipelineConfig()
    root = str(Path(data_root).resolve())
    run_id = new_run_id()
    states: dict[str, str] = {}
    listed = cfg.sources
    image_sources = _resolved(
        [*([images_dir] if images_dir else []), *(images_dirs or []), *listed.images]
    )
    dicom_sources = _resolved([*(dicom_dirs or []), *listed.dicom])
    volume_sources = _resolved([*(volumes_dirs or []), *listed.volumes])
    labels = labels or listed.labels
    if not image_sources and not dicom_sources and not volume_sources:
        raise ValueError(
            "give at least one source: images_dir(s) (image folders), volumes_dirs or dicom_dirs"
        )
    sources: list[SourceRecord] = []
    for index, folder in enumerate(image_sources):
        record, states[f"import[{index}]" if index else "import"] = _call(
            "import", import_images, folder, root, cfg.importing, refresh=refresh
        )
        sources.append(record)
    for index, folder in enumerate(volume_sources):
        record, states[f"volumes[{index}]" if index else "volumes"] = _call(
            "volumes", slice_volumes, folder, root, cfg.volumes, cfg.labels, refresh=refresh
        )
        sources.append(record)
    if dicom_sources:
        labels_path = str(Path(labels).resolve()) if labels else None
        if dask_address:
            with stage("convert", WHAT_TO_DO["convert"]):
                record, states["convert"] = _convert_remote(
                    dicom_sources, root, labels_path, cfg, dask_address
                )
        else:
            record, states["convert"] = _call(
                "convert",
                convert_dicom,
                dicom_sources,
                root,
                cfg.convert,
                labels_path,
                refresh=refresh,
                rule=cfg.labels,
            )
        sources.append(record)
    split, states["split"] = _call(
        "split", split_dataset, sources, root, cfg.split, refresh=refresh
    )
    dataset, states["preprocess"] = _call(
        "preprocess", preprocess_images, split, root, cfg.preprocess, refresh=refresh
    )
    # The gate: a blocking failure raises here, before any training starts.
    _, states["validate"] = _call(
        "validate", validate_dataset, dataset, root, cfg.validate_, run_id, refresh=refresh
    )
    if train_deployment:
        with stage("train", WHAT_TO_DO["train"]):
            model, states["train"] = _train_remote(train_deployment, dataset, root, cfg, refresh)
    else:
        model, states["train"] = _call("train", train, dataset, root, cfg.train, refresh=refresh)
    evaluation, states["evaluate"] = _call(
        "evaluate", evaluate, model, dataset, root, cfg.evaluate, run_id, refresh=refresh
    )
    registration, states["register"] = _call(
        "register", register_model, model, dataset, evaluation, root, cfg.registry
    )
    logger.info("stage states: %s", states)
    logger.info("promotion: %s", registration.summary)
    logger.info("report: %s", evaluation.report_html)
    return {
        "run_id": run_id,
        "states": states,
        "report_dir": evaluation.report_dir,
        "report_html": evaluation.report_html,
        "metrics": evaluation.metrics,
        "model_dir": model.model_dir,
        "model_version": registration.version,
        "promoted": registration.promoted,
        "champion": registration.champion,
    }
