"""The training stage as its own flow, so it can run as a deployment on a `gpu` work pool.

The pipeline calls it with ``run_deployment`` when given a training deployment name, and runs
the training task in-process otherwise. Both write the same model folder under the shared data
root, keyed by content, so the pipeline reads the result from there.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow

from braincls.config import TrainConfig
from braincls.data.stage import DatasetRecord
from flows.failures import stage
from flows.guard import check_deployment_run
from tasks.train import train


@flow(name="train-model", log_prints=True, timeout_seconds=12 * 3600)
def train_flow(
    dataset: dict[str, Any],
    data_root: str,
    config: TrainConfig | None = None,
    refresh: bool = False,
) -> dict[str, Any]:
    """Train on a dataset record (as written by the preprocess stage) under ``data_root``.

    Args:
        dataset: the preprocess stage's record (``manifests/dataset/<key>/record.json``).
        data_root: the data root shared with the pipeline (a shared volume in production).
        config: the training section of the pipeline configuration.
        refresh: train from scratch even when a finished model of the same key exists.
    """
    cfg = config or TrainConfig()
    check_deployment_run(data_root)
    with stage(
        "reading the dataset record",
        "pass the record of a finished preprocess stage (manifests/dataset/<key>/record.json) "
        "and a data root this worker can read",
    ):
        record = DatasetRecord(**dataset)
    with stage(
        f"training {cfg.model} on {record.source}",
        "read the training logs above; for out-of-memory lower train.batch_size, for a time-out "
        "lower train.epochs or use the gpu pool, then rerun (training resumes from the last "
        "finished epoch)",
    ):
        model = train(record, data_root, cfg, refresh=refresh)
    return asdict(model)
