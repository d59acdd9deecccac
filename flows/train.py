"""The training stage as its own flow, so it can run as a deployment on a `gpu` work pool.

The pipeline calls it with ``run_deployment`` when given a training deployment name, and runs
the training task in-process otherwise. Both write the same model folder under the shared data
root, keyed by content, so the pipeline reads the result from there.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow

from braincls.config import TrainConfig
from braincls.stages import DatasetRecord
from tasks.training import train


@flow(name="train-model", log_prints=True, timeout_seconds=12 * 3600)
def train_flow(
    dataset: dict[str, Any], data_root: str, config: TrainConfig | None = None
) -> dict[str, Any]:
    """Train on a dataset record (as written by the preprocess stage) under ``data_root``.

    Args:
        dataset: the preprocess stage's record (``manifests/dataset/<key>/record.json``).
        data_root: the data root shared with the pipeline (a shared volume in production).
        config: the training section of the pipeline configuration.
    """
    record = DatasetRecord(**dataset)
    storage = Path(data_root) / ".prefect-results"
    model = train.with_options(result_storage=storage, persist_result=True)(
        record, data_root, config or TrainConfig()
    )
    return asdict(model)
