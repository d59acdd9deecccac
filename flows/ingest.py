"""Ingest one TCIA collection (or the local NBIA stand-in): new or changed series only."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event
from prefect.task_runners import ThreadPoolTaskRunner

from braincls.config import Settings, TciaConfig
from braincls.tcia.ingest import summarize
from tasks.ingest import download_series, plan_collection


@flow(
    name="ingest",
    log_prints=True,
    timeout_seconds=24 * 3600,
    task_runner=ThreadPoolTaskRunner(max_workers=4),
)
def ingest_flow(
    collection: str,
    modality: str = "MR",
    filters: dict[str, str] | None = None,
    data_root: str = "data",
    base_url: str | None = None,
    config: TciaConfig | None = None,
) -> dict[str, Any]:
    """Download every new or changed series of ``collection`` into ``<data_root>/raw``.

    Args:
        collection: TCIA collection name, e.g. ``UPENN-GBM``.
        modality: Modality filter (empty for all).
        filters: further getSeries filters by their API names (``PatientID``, ``BodyPartExamined``...).
        data_root: the data root; series land in ``raw/<Collection>/<PatientID>/<Study>/<Series>``.
        base_url: NBIA v4 API base URL (default: ``BRAINCLS_TCIA_BASE_URL`` or TCIA's).
        config: client timeouts, retries and politeness.
    """
    logger = get_run_logger()
    cfg = config or TciaConfig()
    url = base_url or Settings().tcia_base_url
    raw_root = str(Path(data_root).resolve() / "raw")
    query = {**({"Modality": modality} if modality else {}), **(filters or {})}
    started = time.perf_counter()
    plan = plan_collection(collection, query, raw_root, url, cfg)
    results = (
        download_series.map(
            plan.to_download, unmapped(raw_root), unmapped(url), unmapped(cfg)
        ).result()
        if plan.to_download
        else []
    )
    downloads = [r["download"] for r in results if "download" in r]
    failures = [r["failure"] for r in results if "failure" in r]
    summary = summarize(plan, downloads, failures, time.perf_counter() - started)
    create_table_artifact(
        key="ingest-summary",
        table=summary.to_rows() + summary.failure_rows(),
        description=f"Ingest of {collection}: listed / new / skipped / failed, bytes, time",
    )
    emit_event(
        event="braincls.ingest.completed",
        resource={
            "prefect.resource.id": f"braincls.collection.{collection}",
            "prefect.resource.name": collection,
        },
        payload={
            "collection": collection,
            "new": summary.downloaded,
            "failed": summary.failed,
            "listed": summary.listed,
        },
    )
    logger.info(
        "%s: %d listed, %d downloaded, %d skipped, %d failed",
        collection,
        summary.listed,
        summary.downloaded,
        summary.skipped,
        summary.failed,
    )
    if failures:
        raise RuntimeError(
            f"{len(failures)} series of {collection} failed: "
            + "; ".join(f"{f.series_instance_uid}: {f.message}" for f in failures[:3])
            + ". Verified series are kept; rerun the ingest to fetch only what is missing."
        )
    return {
        "collection": collection,
        "listed": summary.listed,
        "downloaded": summary.downloaded,
        "skipped": summary.skipped,
        "failed": summary.failed,
        "dicom_bytes": summary.dicom_bytes,
        "raw_root": raw_root,
    }
