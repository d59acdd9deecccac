"""Ingest one TCIA collection (or the local NBIA stand-in): new or changed series only."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event
from prefect.task_runners import ThreadPoolTaskRunner

from braincls.common.progress import Progress
from braincls.config import DEFAULT_MODALITY, Settings, TciaConfig
from braincls.ingest.collection import IngestFailure, record_ingest, summarize
from flows.failures import StageFailed, stage
from flows.guard import check_deployment_run
from tasks.common import ensure_global_limit, submit_bounded
from tasks.ingest import TCIA_LIMIT, download_series, plan_collection
from tasks.progress import forward

#: Emitted at the end of every ingest run (payload: collection, new, failed, listed, data_root,
#: base_url, modality).
INGEST_COMPLETED = "braincls.ingest.completed"
#: Emitted, with the same payload, only when a run finished without failures and downloaded at
#: least one new or changed series: the retrain-on-ingest deployment's trigger.
INGEST_NEW_DATA = "braincls.ingest.new-data"


@flow(
    name="ingest",
    log_prints=True,
    # A full collection over a slow link takes hours; a day means something hangs.
    timeout_seconds=24 * 3600,
    task_runner=ThreadPoolTaskRunner(max_workers=4),
)
def ingest_flow(
    collection: str,
    modality: str = DEFAULT_MODALITY,
    filters: dict[str, str] | None = None,
    data_root: str = "data",
    base_url: str | None = None,
    config: TciaConfig | None = None,
    announce_new_data: bool = True,
) -> dict[str, Any]:
    """Download every new or changed series of ``collection`` into ``<data_root>/raw``.

    Args:
        collection: TCIA collection name, e.g. ``UPENN-GBM``.
        modality: Modality filter (empty for all).
        filters: further getSeries filters by their API names (``PatientID``, ``BodyPartExamined``...).
        data_root: the data root; series land in ``raw/<Collection>/<PatientID>/<Study>/<Series>``.
        base_url: NBIA v4 API base URL (default: ``BRAINCLS_TCIA_BASE_URL`` or TCIA's).
        config: client timeouts, retries and politeness.
        announce_new_data: emit ``braincls.ingest.new-data`` when new series arrived, which
            starts the ``retrain-on-ingest`` deployment; a flow that retrains by itself after
            ingesting (``retrain``) turns it off.
    """
    logger = get_run_logger()
    cfg = config or TciaConfig()
    url = base_url or Settings().tcia_base_url
    root = Path(data_root).resolve()
    check_deployment_run(root, url)
    raw_root = str(root / "raw")
    query = {**({"Modality": modality} if modality else {}), **(filters or {})}
    started = time.perf_counter()
    listed_on = dt.datetime.now(dt.UTC).date()
    # The watcher's memory: only an ingest of the whole collection (no filters but the
    # modality) that verified every series counts as complete; any other outcome keeps the
    # collection a candidate for the next watch.
    whole_collection = not filters

    def remember(complete: bool) -> None:
        if whole_collection:
            record_ingest(Path(raw_root), collection, modality, listed_on, complete=complete)

    try:
        with stage(
            f"listing {collection} at {url}",
            "check the collection name (the API's getCollectionValues lists them), the filters "
            "and that the API answers at that URL; then rerun the ingest",
        ):
            plan = plan_collection(collection, query, raw_root, url, cfg)
    except StageFailed:
        remember(complete=False)
        raise
    if not plan.listed:
        raise StageFailed(
            f"listing {collection} at {url} failed: no series match {query or 'no filters'}. "
            "What to do: check the spelling of the collection (case matters) and the filters "
            "(modality), then rerun the ingest"
        )
    # At most `max_concurrent_downloads` series at once: this run never has more downloads in
    # flight, and the Prefect limit `tcia` (created with that value if it is missing) caps
    # all runs together.
    if plan.to_download:
        ensure_global_limit(TCIA_LIMIT, cfg.max_concurrent_downloads)
    futures = submit_bounded(
        download_series, plan.to_download, cfg.max_concurrent_downloads, raw_root, url, cfg
    )
    downloads = []
    failures = []
    total = len(plan.to_download)
    for done, (series, future) in enumerate(zip(plan.to_download, futures, strict=True), 1):
        try:
            result = future.result()
        except Exception as error:  # retries exhausted: count it, keep the other series
            failures.append(IngestFailure.from_exception(series, error))
            continue
        finally:
            forward(Progress("download", done=done, total=total, unit="series", detail=collection))
        if "download" in result:
            downloads.append(result["download"])
        else:
            failures.append(result["failure"])
    summary = summarize(plan, downloads, failures, time.perf_counter() - started)
    remember(complete=not failures)
    create_table_artifact(
        key="ingest-summary",
        table=summary.to_rows() + summary.failure_rows(),
        description=f"Ingest of {collection}: listed / new / skipped / failed, bytes, time",
    )
    payload = {
        "collection": collection,
        "new": summary.downloaded,
        "failed": summary.failed,
        "listed": summary.listed,
        "data_root": str(root),
        "base_url": url,
        "modality": modality,
    }
    resource = {
        "prefect.resource.id": f"braincls.collection.{collection}",
        "prefect.resource.name": collection,
    }
    emit_event(event=INGEST_COMPLETED, resource=resource, payload=payload)
    if announce_new_data and summary.downloaded and not failures:
        # Only a complete ingest that brought new series starts retraining (see prefect.yaml).
        emit_event(event=INGEST_NEW_DATA, resource=resource, payload=payload)
    logger.info(
        "%s: %d listed, %d downloaded, %d skipped, %d failed",
        collection,
        summary.listed,
        summary.downloaded,
        summary.skipped,
        summary.failed,
    )
    if failures:
        raise StageFailed(
            f"downloading {collection} from {url} failed for {len(failures)} of "
            f"{len(plan.to_download)} series: "
            + "; ".join(f"{f.series_instance_uid}: {f.message}" for f in failures[:3])
            + ". What to do: verified series are kept; rerun the ingest once the server answers "
            "again (only the missing series are fetched)"
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
