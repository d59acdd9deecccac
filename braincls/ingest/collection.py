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
        """One row per failed series."""
        return [
            {
                "SeriesInstanceUID": item.series_instance_uid,
                "PatientID": item.patient_id,
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
    since: dt.date | None = None,
) -> WatchReport:
    """Compare the server with local state for the ``collections`` to watch.

    With ``since``, ``getUpdatedSeries`` (released strictly after ``since``) narrows the check to
    collections with updated series plus those with nothing local; a watched collection is then
    only listed in full when something changed. Without it every watched collection is listed
    and diffed (slower, but it also catches series whose size changed without a new release
    date). Pass a ``since`` one day before the last check: the server compares dates only.
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
    if since is not None:
        updated = {record.collection.casefold() for record in client.get_updated_series(since)}
        candidates = [
            name for name in watched if name.casefold() in updated or name in new_collections
        ]
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
        since=since,
    )


#: File under the raw root that remembers when the watcher last checked the server.
WATCH_STATE_FILE = ".watch-state.json"


def local_collections(raw_root: Path) -> list[str]:
    """Collections with at least one verified series under ``raw_root``, sorted."""
    return sorted({record.series.collection for record in iter_records(raw_root)})


def last_watch_date(raw_root: Path) -> dt.date | None:
    """The date of the watcher's last complete check, or None before the first one."""
    path = Path(raw_root) / WATCH_STATE_FILE
    try:
        return dt.date.fromisoformat(json.loads(path.read_text())["checked_on"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def record_watch_date(raw_root: Path, checked_on: dt.date) -> Path:
    """Remember ``checked_on`` as the last complete check (atomic write)."""
    return write_json(Path(raw_root) / WATCH_STATE_FILE, {"checked_on": checked_on.isoformat()})
