"""Plan and run the ingest of a TCIA collection: only series new or changed since the last
verified state are downloaded.

The pieces map one-to-one onto Prefect tasks without containing any Prefect code:
:func:`plan_ingest` (one listing call), :func:`ingest_series` (one series; safe to call for a
series that is already present) and :func:`summarize` (the run summary). :func:`ingest` runs a
whole plan in threads for notebooks and benchmarks; :func:`watch` tells which collections have
something to ingest.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from braincls.common.atomic import write_json
from braincls.common.locks import file_lock
from braincls.ingest.client import SERIES_FILTERS, NbiaClient, SeriesDownload
from braincls.ingest.errors import TciaError
from braincls.ingest.records import SeriesRecord
from braincls.ingest.store import (
    check_present,
    iter_records,
    read_record,
    record_path,
    remove_stale_incoming,
    series_dir,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestPlan:
    """What the server lists for one collection and filters, split by local state."""

    collection: str
    filters: Mapping[str, str]
    listed: tuple[SeriesRecord, ...]
    new: tuple[SeriesRecord, ...]
    changed: tuple[SeriesRecord, ...]
    present: tuple[SeriesRecord, ...]

    @property
    def to_download(self) -> tuple[SeriesRecord, ...]:
        """New and changed series, in listing order."""
        pending = {record.series_instance_uid for record in (*self.new, *self.changed)}
        return tuple(record for record in self.listed if record.series_instance_uid in pending)

    @property
    def bytes_to_download(self) -> int:
        """Sum of the listed ``FileSize`` of the series to download (unknown sizes count 0)."""
        return sum(record.file_size_bytes or 0 for record in self.to_download)


#: (0008,0060) Modality of the series that hold tumour segmentations.
SEGMENTATION_MODALITIES = ("SEG", "RTSTRUCT")


def _with_segmentations(
    client: NbiaClient, collection: str, filters: Mapping[str, str], listed: list[SeriesRecord]
) -> list[SeriesRecord]:
    """``listed`` plus the collection's SEG and RTSTRUCT series of the same patients: the
    segmentations that label the listed images (they have their own Modality, so a Modality
    filter alone would leave them behind)."""
    patients = {series.patient_id for series in listed}
    seen = {series.series_instance_uid for series in listed}
    extra: list[SeriesRecord] = []
    for modality in SEGMENTATION_MODALITIES:
        for series in client.get_series(Collection=collection, **{**filters, "Modality": modality}):
            if series.patient_id in patients and series.series_instance_uid not in seen:
                seen.add(series.series_instance_uid)
                extra.append(series)
    return [*listed, *extra]


def plan_ingest(
    client: NbiaClient,
    collection: str,
    raw_root: Path,
    filters: Mapping[str, str] | None = None,
    *,
    segmentations: bool = False,
) -> IngestPlan:
    """List ``collection`` with ``filters`` (API names, e.g. ``{"Modality": "MR"}``) and compare
    each series with its verification record under ``raw_root``. With ``segmentations`` and a
    Modality filter, the SEG and RTSTRUCT series of the listed patients are listed too."""
    filters = dict(filters or {})
    if "Collection" in filters:
        raise ValueError("pass the collection as the `collection` argument, not as a filter")
    unknown = sorted(set(filters) - set(SERIES_FILTERS))
    if unknown:
        raise ValueError(f"unknown filter(s) {unknown}; allowed: {list(SERIES_FILTERS[1:])}")
    listed = client.get_series(Collection=collection, **filters)
    if segmentations and filters.get("Modality", "").upper() not in ("", *SEGMENTATION_MODALITIES):
        listed = _with_segmentations(client, collection, filters, listed)
    remove_stale_incoming(raw_root)
    new: list[SeriesRecord] = []
    changed: list[SeriesRecord] = []
    present: list[SeriesRecord] = []
    for series in listed:
        series_dir(raw_root, series)  # refuse unusable names at planning time
        presence = check_present(raw_root, series)
        if presence.present:
            present.append(series)
        elif presence.changed:
            logger.info("series %s changed: %s", series.series_instance_uid, presence.reason)
            changed.append(series)
        else:
            new.append(series)
    plan = IngestPlan(
        collection=collection,
        filters=filters,
        listed=tuple(listed),
        new=tuple(new),
        changed=tuple(changed),
        present=tuple(present),
    )
    logger.info(
        "%s %s: %d listed, %d new, %d changed, %d present",
        collection,
        filters or "",
        len(listed),
        len(new),
        len(changed),
        len(present),
    )
    return plan


def ingest_series(
    client: NbiaClient, series: SeriesRecord, raw_root: Path, *, force: bool = False
) -> SeriesDownload:
    """Make ``series`` present under ``raw_root``: download it unless a verified copy matching
    the listing is already there (``force`` downloads regardless). Raises the client's
    :class:`~braincls.ingest.errors.TciaError` when every try failed."""
    raw_root = Path(raw_root)
    if not force and check_present(raw_root, series).present:
        record = read_record(record_path(raw_root, series))
        files = record.files if record else ()
        return SeriesDownload(
            series=series,
            path=series_dir(raw_root, series),
            record_path=record_path(raw_root, series),
            image_count=len(files),
            dicom_bytes=sum(item.size_bytes for item in files),
            archive_bytes=0,
            attempts=0,
            seconds=0.0,
            downloaded=False,
        )
    return client.download_series(series, raw_root)


@dataclass(frozen=True)
class IngestFailure:
    """A series that could not be ingested, with the error that ended it."""

    series_instance_uid: str
    patient_id: str
    error_type: str
    message: str
    attempts: int

    @classmethod
    def from_exception(cls, series: SeriesRecord, error: BaseException) -> IngestFailure:
        """Describe ``error`` raised while ingesting ``series``."""
        return cls(
            series_instance_uid=series.series_instance_uid,
            patient_id=series.patient_id,
            error_type=type(error).__name__,
            message=str(error),
            attempts=getattr(error, "attempts", 1),
        )


@dataclass(frozen=True)
class IngestSummary:
    """The run summary: listed / new / changed / skipped / failed series, bytes and time."""

    collection: str
    filters: Mapping[str, str]
    listed: int
    new: int
    changed: int
    skipped: int
    downloaded: int
    failed: int
    dicom_bytes: int
    archive_bytes: int
    seconds: float
    failures: tuple[IngestFailure, ...] = field(default_factory=tuple)

    @property
    def megabytes_per_second(self) -> float:
        """Verified DICOM megabytes (10^6 bytes) downloaded per second of the run."""
        return self.dicom_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when no series failed."""
        return self.failed == 0

    def to_rows(self) -> list[dict[str, Any]]:
        """One row per measure (a table artifact or a log line)."""
        return [
            {"measure": "collection", "value": self.collection},
            {"measure": "filters", "value": ", ".join(f"{k}={v}" for k, v in self.filters.items())},
            {"measure": "series listed", "value": self.listed},
            {"measure": "series new", "value": self.new},
            {"measure": "series changed", "value": self.changed},
            {"measure": "series skipped (already verified)", "value": self.skipped},
            {"measure": "series downloaded", "value": self.downloaded},
            {"measure": "series failed", "value": self.failed},
            {"measure": "DICOM bytes downloaded", "value": self.dicom_bytes},
            {"measure": "bytes received", "value": self.archive_bytes},
            {"measure": "seconds", "value": round(self.seconds, 3)},
            {"measure": "MB/s", "value": round(self.megabytes_per_second, 3)},
        ]

    def failure_rows(self) -> list[dict[str, Any]]:
        """One row per failed series, named by its UID (no Patient ID: these rows go to the
        dashboard)."""
        return [
            {
                "SeriesInstanceUID": item.series_instance_uid,
                "error": item.error_type,
                "attempts": item.attempts,
                "message": item.message,
            }
            for item in self.failures
        ]


def summarize(
    plan: IngestPlan,
    downloads: Iterable[SeriesDownload],
    failures: Iterable[IngestFailure],
    seconds: float,
) -> IngestSummary:
    """The summary of running ``plan``: ``downloads`` are the series made present (fetched or
    found present), ``failures`` those that failed."""
    downloads = list(downloads)
    failures = tuple(failures)
    fetched = [item for item in downloads if item.downloaded]
    return IngestSummary(
        collection=plan.collection,
        filters=dict(plan.filters),
        listed=len(plan.listed),
        new=len(plan.new),
        changed=len(plan.changed),
        skipped=len(plan.present) + sum(1 for item in downloads if not item.downloaded),
        downloaded=len(fetched),
        failed=len(failures),
        dicom_bytes=sum(item.dicom_bytes for item in fetched),
        archive_bytes=sum(item.archive_bytes for item in fetched),
        seconds=seconds,
        failures=failures,
    )


def ingest(
    client: NbiaClient,
    plan: IngestPlan,
    raw_root: Path,
    *,
    max_workers: int | None = None,
) -> IngestSummary:
    """Download every new or changed series of ``plan``; failures are collected, not raised.

    Threads default to the client's download cap; the client's semaphore enforces the per-host
    limit whatever ``max_workers`` is.
    """
    started = time.monotonic()
    pending = plan.to_download
    downloads: list[SeriesDownload] = []
    failures: list[IngestFailure] = []
    workers = max_workers or client.max_concurrent_downloads
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="tcia") as pool:
        futures = [
            (series, pool.submit(ingest_series, client, series, raw_root)) for series in pending
        ]
        for series, future in futures:
            try:
                downloads.append(future.result())
            except TciaError as err:
                logger.error("%s", err)
                failures.append(IngestFailure.from_exception(series, err))
    summary = summarize(plan, downloads, failures, time.monotonic() - started)
    logger.info(
        "%s: %d downloaded, %d skipped, %d failed, %.1f MB in %.2f s",
        plan.collection,
        summary.downloaded,
        summary.skipped,
        summary.failed,
        summary.dicom_bytes / 1e6,
        summary.seconds,
    )
    return summary


def ingest_collection(
    client: NbiaClient,
    collection: str,
    raw_root: Path,
    filters: Mapping[str, str] | None = None,
    *,
    max_workers: int | None = None,
) -> IngestSummary:
    """:func:`plan_ingest` then :func:`ingest`; the time includes the listing."""
    started = time.monotonic()
    plan = plan_ingest(client, collection, raw_root, filters)
    summary = ingest(client, plan, raw_root, max_workers=max_workers)
    return replace(summary, seconds=time.monotonic() - started)


@dataclass(frozen=True)
class WatchReport:
    """What :func:`watch` found: the server's collections and a plan for each watched
    collection that has new or changed series."""

    server_collections: tuple[str, ...]
    watched: tuple[str, ...]
    #: Watched names the server does not (or no longer) list.
    missing: tuple[str, ...]
    #: Watched collections with no verified series locally yet.
    new_collections: tuple[str, ...]
    #: Plans with at least one series to download.
    plans: tuple[IngestPlan, ...]
    since: dt.date | None

    @property
    def series_to_download(self) -> int:
        """Series to download across all plans."""
        return sum(len(plan.to_download) for plan in self.plans)


def watch(
    client: NbiaClient,
    raw_root: Path,
    collections: Sequence[str],
    filters: Mapping[str, str] | None = None,
    *,
    since: Mapping[str, dt.date | None] | None = None,
) -> WatchReport:
    """Compare the server with local state for the ``collections`` to watch.

    ``since`` maps a watched collection (any case) to the date from which to ask
    for updates: the day before its last complete ingest (the server compares dates only, and
    ``getUpdatedSeries`` returns series released strictly after the date). A collection mapped
    to None, or missing from ``since`` (never ingested completely, or its last ingest failed
    or was partial), is always listed in full. With ``since`` None every watched collection is
    listed and diffed (slower, but it also catches series whose size changed without a new
    release date).
    """
    server = tuple(client.get_collection_values())
    by_folded = {name.casefold(): name for name in server}
    watched: list[str] = []
    missing: list[str] = []
    for name in collections:
        match = by_folded.get(name.casefold())
        (watched if match else missing).append(match or name)
    new_collections = tuple(
        name for name in watched if next(iter_records(raw_root, name), None) is None
    )
    candidates = list(watched)
    oldest: dt.date | None = None
    if since is not None:
        folded = {name.casefold(): date for name, date in since.items()}
        dates = {name: folded.get(name.casefold()) for name in watched}
        known = [date for date in dates.values() if date is not None]
        candidates = [name for name, date in dates.items() if date is None]
        if known:
            oldest = min(known)
            updated = client.get_updated_series(oldest)
            for name, date in dates.items():
                if date is not None and any(
                    record.collection.casefold() == name.casefold()
                    and (record.date_released is None or record.date_released > date)
                    for record in updated
                ):
                    candidates.append(name)
        candidates = [name for name in watched if name in candidates]
    plans = []
    for name in candidates:
        plan = plan_ingest(client, name, raw_root, filters)
        if plan.to_download:
            plans.append(plan)
    return WatchReport(
        server_collections=server,
        watched=tuple(watched),
        missing=tuple(missing),
        new_collections=new_collections,
        plans=tuple(plans),
        since=oldest,
    )


#: File under the raw root that remembers, per collection and modality filter, how its last
#: ingest went and the date of its last complete one.
WATCH_STATE_FILE = ".watch-state.json"
WATCH_STATE_LOCK = ".watch-state.lock"
WATCH_STATE_VERSION = 2


def local_collections(raw_root: Path) -> list[str]:
    """Collections with at least one verified series under ``raw_root``, sorted."""
    return sorted({record.series.collection for record in iter_records(raw_root)})


def _read_watch_state(raw_root: Path) -> dict[str, Any]:
    path = Path(raw_root) / WATCH_STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"schema_version": WATCH_STATE_VERSION, "collections": {}}
    if not isinstance(state, dict) or state.get("schema_version") != WATCH_STATE_VERSION:
        # The first watcher's format ({"checked_on": ...}) recorded checks, not ingests:
        # it says nothing about which collection is complete, so it is not trusted.
        return {"schema_version": WATCH_STATE_VERSION, "collections": {}}
    return state


def record_ingest(
    raw_root: Path, collection: str, modality: str, started_on: dt.date, *, complete: bool
) -> Path:
    """Remember how the ingest of ``collection`` (``modality`` filter, '' for all) that
    listed the server on ``started_on`` ended: ``complete`` only when every listed series is
    verified. Only a complete ingest moves ``last_complete_ingest``; a failed or partial one
    keeps the collection a candidate for the watcher. Concurrent ingests are serialised."""
    raw_root = Path(raw_root)
    with file_lock(raw_root / WATCH_STATE_LOCK, timeout_seconds=60, what="the watch state"):
        state = _read_watch_state(raw_root)
        entry = state["collections"].setdefault(collection, {}).setdefault(modality, {})
        entry["last_ingest"] = started_on.isoformat()
        entry["last_ingest_complete"] = complete
        if complete:
            entry["last_complete_ingest"] = started_on.isoformat()
        return write_json(raw_root / WATCH_STATE_FILE, state)


def last_complete_ingest(raw_root: Path, collection: str, modality: str) -> dt.date | None:
    """The listing date of the last complete ingest of ``collection`` with ``modality``, or
    None when there is none or the last ingest was not complete (failed or partial)."""
    collections = _read_watch_state(raw_root)["collections"]
    by_folded = {name.casefold(): value for name, value in collections.items()}
    entry = by_folded.get(collection.casefold(), {}).get(modality, {})
    if not entry.get("last_ingest_complete"):
        return None
    try:
        return dt.date.fromisoformat(str(entry["last_complete_ingest"]))
    except (KeyError, ValueError):
        return None
