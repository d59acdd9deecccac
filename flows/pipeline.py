"""The main job: import -> split -> preprocess -> train -> evaluate, every stage cached by content."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from braincls.config import PipelineConfig
from tasks.data import import_images, preprocess_images, split_dataset
from tasks.evaluation import evaluate
from tasks.training import train


def _run_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run = flow_run.get_id()
    return f"{stamp}-{str(run)[:8]}" if run else stamp


def _call(task: Any, storage: Path, *args: Any) -> tuple[Any, str]:
    """Run one task with the data root's result storage; return its result and state name."""
    state = task.with_options(result_storage=storage, persist_result=True)(*args, return_state=True)
    return state.result(), state.name


@flow(name="braincls-pipeline", log_prints=True, timeout_seconds=6 * 3600)
def pipeline(
    images_dir: str,
    data_root: str = "data",
    config: PipelineConfig | None = None,
) -> dict[str, Any]:
    """Train and evaluate a tumor / no-tumor classifier on a class-per-folder image set.

    Args:
        images_dir: folder with one sub-folder per class (e.g. ``yes/`` and ``no/``).
        data_root: where images, manifests, models and reports are written.
        config: the pipeline configuration; defaults everywhere when omitted.
    """
    logger = get_run_logger()
    cfg = config or PipelineConfig()
    root = str(Path(data_root).resolve())
    storage = Path(root) / ".prefect-results"
    states: dict[str, str] = {}
    imported, states["import"] = _call(
        import_images, storage, str(Path(images_dir).resolve()), root, cfg.importing
    )
    split, states["split"] = _call(split_dataset, storage, imported, root, cfg.split)
    dataset, states["preprocess"] = _call(preprocess_images, storage, split, root, cfg.preprocess)
    model, states["train"] = _call(train, storage, dataset, root, cfg.train)
    evaluation, states["evaluate"] = _call(
        evaluate, storage, model, dataset, root, cfg.evaluate, _run_id()
    )
    logger.info("stage states: %s", states)
    logger.info("report: %s", evaluation.report_html)
    return {
        "states": states,
        "report_dir": evaluation.report_dir,
        "report_html": evaluation.report_html,
        "metrics": evaluation.metrics,
        "model_dir": model.model_dir,
    }
