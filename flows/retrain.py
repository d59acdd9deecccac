"""Scheduled retraining: ingest what is new in the watched collections, then the whole pipeline
on their DICOM (convert -> split by patient -> preprocess -> validate -> train -> evaluate ->
register)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.concurrency.sync import concurrency

from braincls.config import PipelineConfig, Settings
from braincls.ingest.collection import local_collections
from braincls.ingest.store import safe_component
from flows.guard import check_deployment_run
from flows.ingest import ingest_flow
from flows.pipeline import pipeline
from tasks.common import HOUR, ensure_global_limit

#: The Prefect global concurrency limit (1 slot) every retraining holds while it runs.
RETRAIN_LIMIT = "braincls-retrain"


# Room for a long ingest and the pipeline's own 12 h limit.
@flow(name="retrain", log_prints=True, timeout_seconds=36 * HOUR)
def retrain_flow(
    collections: list[str] | None = None,
    data_root: str = "data",
    base_url: str | None = None,
    labels: str | None = None,
    modality: str | None = None,
    config: PipelineConfig | None = None,
    train_deployment: str | None = None,
    skip_ingest: bool = False,
    refresh: bool = False,
) -> dict[str, Any]:
    """Ingest new series of ``collections``, then train, evaluate and register a model on them.

    Args:
        collections: TCIA collection names, e.g. ``["UPENN-GBM"]`` (default: every
            collection already ingested under the data root).
        data_root: the data root (raw DICOM, images, manifests, models, reports).
        base_url: NBIA v4 API base URL (default: ``BRAINCLS_TCIA_BASE_URL`` or TCIA's).
        labels: labels table (CSV: PatientID / SeriesInstanceUID / SOPInstanceUID -> label);
            default ``<data_root>/labels.csv`` when it exists. Images the table does not name
            are labelled from the collection's segmentations (DICOM SEG, RTSTRUCT) by the
            labelling rule (``config.labels``).
        modality: (0008,0060) Modality to ingest, convert and accept at the validation gate;
            sets ``config.convert.modality``, the one modality setting (default: its value,
            MR).
        config: the pipeline configuration (training, evaluation, promotion floors...).
        train_deployment: run training as this deployment (e.g. ``train-model/train-gpu``).
        skip_ingest: train on what is already verified locally, without asking the server.
        refresh: rebuild every stage's outputs instead of reusing earlier ones.
    """
    logger = get_run_logger()
    cfg = config or PipelineConfig()
    if modality is not None:
        cfg = cfg.model_copy(
            update={"convert": cfg.convert.model_copy(update={"modality": modality})}
        )
    root = Path(data_root).resolve()
    url = base_url or Settings().tcia_base_url
    # Started by a deployment (the retrain-on-ingest trigger fills these from an event): only
    # where and what this worker allows.
    check_deployment_run(root, url)
    collections = list(collections or local_collections(root / "raw"))
    if not collections:
        raise ValueError(
            f"{root / 'raw'}: nothing to retrain on: no collection has been ingested there "
            "yet; pass collections=[...] (or ingest one first)"
        )
    labels_path: Path | None = Path(labels).resolve() if labels else root / "labels.csv"
    if labels and not Path(str(labels_path)).is_file():
        raise FileNotFoundError(
            f"{labels_path}: labels table not found (columns Collection/PatientID/"
            "SeriesInstanceUID/SOPInstanceUID, label); without --labels, labels come from "
            "<data root>/labels.csv if present, else from the collection's segmentations"
        )
    if labels_path is not None and not labels_path.is_file():
        labels_path = None
    # One retraining at a time across every deployment (scheduled, on ingest) and the CLI:
    # two would train the same key in the same folder. Prefect does not limit at all with a
    # missing limit, so it is created here when `braincls setup` has not made it.
    ensure_global_limit(RETRAIN_LIMIT, 1)
    logger.info("waiting for the %s slot (one retraining at a time)", RETRAIN_LIMIT)
    with concurrency(RETRAIN_LIMIT, occupy=1, strict=True, raise_on_lease_renewal_failure=False):
        return _ingest_and_train(
            collections, root, url, labels_path, cfg, train_deployment, skip_ingest, refresh
        )


def _ingest_and_train(
    collections: list[str],
    root: Path,
    url: str,
    labels_path: Path | None,
    cfg: PipelineConfig,
    train_deployment: str | None,
    skip_ingest: bool,
    refresh: bool,
) -> dict[str, Any]:
    """The retraining itself, while this run holds the retraining slot."""
    logger = get_run_logger()
    ingested: dict[str, Any] = {}
    if not skip_ingest:
        for name in collections:
            state = ingest_flow(
                collection=name,
                modality=cfg.convert.modality,
                data_root=str(root),
                base_url=url,
                config=cfg.tcia,
                # This run trains on what it ingests: no second retraining by the event trigger.
                announce_new_data=False,
                return_state=True,
            )
            if state.is_completed():
                ingested[name] = state.result()
            else:
                # Verified series are kept; train on them and say so instead of skipping the week.
                logger.warning(
                    "ingest of %s ended %s: training on verified series", name, state.name
                )
                ingested[name] = {"state": state.name, "message": state.message}
    sources = [root / "raw" / safe_component(name, "Collection") for name in collections]
    missing = [str(src) for src in sources if not src.is_dir()]
    if missing:
        raise FileNotFoundError(
            f"no verified DICOM for {', '.join(missing)}; check the collection names "
            "and the ingest runs' logs"
        )
    result = pipeline(
        dicom_dirs=[str(src) for src in sources],
        labels=str(labels_path) if labels_path is not None else None,
        data_root=str(root),
        config=cfg,
        train_deployment=train_deployment,
        refresh=refresh,
    )
    return {**result, "ingest": ingested}
