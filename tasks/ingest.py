"""Prefect tasks of TCIA ingest: list a collection, download one series per task, watch."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.concurrency.sync import concurrency

from braincls.config import TciaConfig
from braincls.ingest import NbiaClient
from braincls.ingest.collection import (
    IngestFailure,
    IngestPlan,
    WatchReport,
    ingest_series,
    plan_ingest,
    watch,
)
from braincls.ingest.errors import (
    TciaRequestError,
    TciaServerError,
    TciaTimeoutError,
    TciaTransportError,
)
from braincls.ingest.records import SeriesRecord
from tasks.common import HOUR, MINUTE, retry_on

#: Faults worth another try after the client's own retries gave up (a long outage).
TRANSIENT_TCIA = (TciaServerError, TciaTimeoutError, TciaTransportError, OSError)

#: Name of the Prefect global concurrency limit that caps downloads from TCIA.
TCIA_LIMIT = "tcia"


@task(
    name="plan-ingest",
    timeout_seconds=30 * MINUTE,
    retries=3,
    retry_delay_seconds=[10, 60, 300],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_on(*TRANSIENT_TCIA),
    tags=["braincls", "tcia"],
)
def plan_collection(
    collection: str, filters: dict[str, str], raw_root: str, base_url: str, config: TciaConfig
) -> IngestPlan:
    """List the collection and compare it with the verified local state."""
    with NbiaClient.from_config(config, base_url) as client:
        return plan_ingest(
            client,
            collection,
            Path(raw_root),
            filters,
            segmentations=config.include_segmentations,
        )


@task(
    name="download-series",
    # No timeout_seconds: this task is mapped onto worker threads, where Prefect cannot
    # interrupt it (it only logs a warning per run). The client's per-request HTTP timeout
    # (TciaConfig.timeout_seconds) and bounded retries end a stalled download instead.
    retries=2,
    retry_delay_seconds=[30, 300],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_on(*TRANSIENT_TCIA),
    tags=["braincls", "tcia"],
)
def download_series(
    series: SeriesRecord, raw_root: str, base_url: str, config: TciaConfig
) -> dict[str, Any]:
    """Download and verify one series (a no-op when a verified copy is present).

    Holds one slot of the global concurrency limit ``tcia`` while it downloads; a missing
    limit is an error, not a silent "no limit" (the ingest flow creates it where it is
    missing). Returns a small dict: the series UID, whether it was downloaded, its bytes, or
    the error that ended it.
    """
    slot = concurrency(TCIA_LIMIT, occupy=1, strict=True, raise_on_lease_renewal_failure=False)
    with slot, NbiaClient.from_config(config, base_url) as client:
        try:
            result = ingest_series(client, series, Path(raw_root))
        except TciaRequestError as error:  # 400/404: retrying cannot help
            get_run_logger().error("series %s: %s", series.series_instance_uid, error)
            return {"failure": IngestFailure.from_exception(series, error)}
    return {"download": result}


@task(
    name="check-tcia",
    retries=3,
    retry_delay_seconds=[10, 60, 300],
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_on(*TRANSIENT_TCIA),
    timeout_seconds=HOUR,
    tags=["braincls", "tcia"],
)
def check_for_new_series(
    collections: list[str],
    filters: dict[str, str],
    raw_root: str,
    base_url: str,
    config: TciaConfig,
    since: dict[str, dt.date | None] | None,
) -> WatchReport:
    """Compare the server's listing with the verified local state of ``collections``."""
    with NbiaClient.from_config(config, base_url) as client:
        return watch(client, Path(raw_root), collections, filters, since=since)
