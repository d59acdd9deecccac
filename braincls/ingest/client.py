"""A client for the NBIA v4 REST API (TCIA, or the local stand-in in :mod:`devkit.nbia`).

Every request has a timeout. Failures that TCIA recovers from (5xx, 429, timeouts, connection
resets, HTML error pages served with status 200, truncated or short ZIPs, MD5 mismatches) are
retried with exponential backoff and jitter, honouring ``Retry-After``; a 400 or 404 is not
retried. A series download is streamed to a staging folder, verified in full
(:func:`braincls.ingest.archive.extract_verified`) and only then renamed into the raw tree with its
verification record (:mod:`braincls.ingest.store`), so no partial file is ever left where later
stages read.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import logging
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import httpx

from braincls.config import DEFAULT_TCIA_BASE_URL, TciaConfig
from braincls.ingest.archive import extract_verified
from braincls.ingest.errors import (
    TciaError,
    TciaRateLimitedError,
    TciaRequestError,
    TciaResponseError,
    TciaServerError,
    TciaTimeoutError,
    TciaTransportError,
)
from braincls.ingest.records import (
    SeriesRecord,
    SeriesSize,
    format_nbia_date,
    series_records,
)
from braincls.ingest.store import (
    VerificationRecord,
    incoming_dir,
    record_path,
    series_dir,
    utc_now_iso,
    write_record,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: ``getSeries`` filters, spelled exactly as the API wants them (names are case-sensitive).
SERIES_FILTERS = (
    "Collection",
    "PatientID",
    "StudyInstanceUID",
    "Modality",
    "BodyPartExamined",
    "Manufacturer",
    "ManufacturerModelName",
    "SeriesInstanceUID",
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_ERROR_EXCERPT_CHARS = 200
_DOWNLOAD_CHUNK_BYTES = 1 << 20
#: How NBIA before 2025-11 answers getImage?IncludeMD5=... (HTTP 400).
_REJECTS_MD5 = "Invalid query parameter: 'IncludeMD5'"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: try ``n`` waits about ``initial * multiplier**(n-1)``
    seconds, capped at ``max_seconds``, scaled down by up to ``jitter_fraction`` at random so
    that parallel clients do not retry in lock-step. A server's ``Retry-After`` is a lower bound
    (capped at ``max_retry_after_seconds``)."""

    initial_seconds: float = 2.0
    multiplier: float = 2.0
    max_seconds: float = 60.0
    jitter_fraction: float = 0.5
    max_retry_after_seconds: float = 300.0

    def delay_seconds(
        self, attempt: int, rng: random.Random, retry_after_seconds: float | None = None
    ) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        base = min(self.max_seconds, self.initial_seconds * self.multiplier ** max(attempt - 1, 0))
        delay = base * (1.0 - self.jitter_fraction * rng.random())
        if retry_after_seconds is not None:
            delay = max(delay, min(retry_after_seconds, self.max_retry_after_seconds))
        return delay


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds from an HTTP ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    current = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - current).total_seconds())


@dataclass(frozen=True)
class SeriesDownload:
    """A series that is verified and in place under the raw tree."""

    series: SeriesRecord
    path: Path
    record_path: Path
    image_count: int
    dicom_bytes: int
    #: Bytes received over the network (0 when the series was already present).
    archive_bytes: int
    attempts: int
    seconds: float
    #: False when the series was already present and nothing was fetched.
    downloaded: bool = True


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat[:_ERROR_EXCERPT_CHARS] + ("..." if len(flat) > _ERROR_EXCERPT_CHARS else "")


def _is_html(content_type: str, body: bytes) -> bool:
    return "html" in content_type.lower() or body.lstrip()[:1] == b"<"


class NbiaClient:
    """NBIA v4 client.

    ``http`` is an :class:`httpx.Client` owned by the caller (closed by them), or ``None`` to
    create one that :meth:`close` closes. ``download_slots`` caps concurrent series downloads
    against this host; pass one semaphore to several clients to share the cap (default: a new
    semaphore of ``max_concurrent_downloads``). ``sleep`` and ``rng`` exist so that tests can
    run the retry loop without waiting.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_TCIA_BASE_URL,
        *,
        http: httpx.Client | None = None,
        timeout_seconds: float = 60.0,
        max_attempts: int = 5,
        backoff: Backoff | None = None,
        max_concurrent_downloads: int = 2,
        download_slots: threading.Semaphore | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if max_concurrent_downloads < 1:
            raise ValueError(
                f"max_concurrent_downloads must be at least 1, got {max_concurrent_downloads}"
            )
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.timeout = httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 30.0))
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.max_concurrent_downloads = max_concurrent_downloads
        self.download_slots = download_slots or threading.BoundedSemaphore(max_concurrent_downloads)
        self._owns_http = http is None
        self._http = http or httpx.Client(
            timeout=self.timeout,
            headers={"User-Agent": "braincls-nbia-client"},
            follow_redirects=True,
        )
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        #: The download endpoint in use; switches to getImageWithMD5Hash on servers that do
        #: not know ``IncludeMD5`` (NBIA before 2025-11).
        self.image_endpoint = "getImage"

    @classmethod
    def from_config(
        cls,
        config: TciaConfig,
        base_url: str = DEFAULT_TCIA_BASE_URL,
        *,
        http: httpx.Client | None = None,
        download_slots: threading.Semaphore | None = None,
    ) -> NbiaClient:
        """A client with the timeouts, retries and politeness of ``config``."""
        return cls(
            base_url,
            http=http,
            timeout_seconds=config.timeout_seconds,
            max_attempts=config.max_attempts,
            backoff=Backoff(
                initial_seconds=config.backoff_initial_seconds,
                max_seconds=config.backoff_max_seconds,
                max_retry_after_seconds=config.max_retry_after_seconds,
            ),
            max_concurrent_downloads=config.max_concurrent_downloads,
            download_slots=download_slots,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> NbiaClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- retry loop --------------------------------------------------------------------------

    def _retrying(self, operation: Callable[[], T]) -> T:
        attempt = 1
        while True:
            try:
                return operation()
            except TciaError as err:
                err.attempts = attempt
                if not err.retryable or attempt >= self.max_attempts:
                    raise
                with self._rng_lock:
                    delay = self.backoff.delay_seconds(attempt, self._rng, err.retry_after_seconds)
                logger.warning(
                    "try %d of %d failed: %s; retrying in %.2f s",
                    attempt,
                    self.max_attempts,
                    err.message,
                    delay,
                )
                self._sleep(delay)
                attempt += 1

    # -- HTTP helpers ------------------------------------------------------------------------

    def url(self, endpoint: str) -> str:
        """Absolute URL of ``endpoint``."""
        return self.base_url + endpoint

    @staticmethod
    def _raise_for_status(response: httpx.Response, body: bytes, context: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        text = _excerpt(body.decode("utf-8", errors="replace"))
        message = f"{context}: HTTP {status} {response.reason_phrase} from {response.url}: {text}"
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 429:
            raise TciaRateLimitedError(
                message, status_code=status, body=text, retry_after_seconds=retry_after
            )
        if status >= 500:
            raise TciaServerError(
                message, status_code=status, body=text, retry_after_seconds=retry_after
            )
        raise TciaRequestError(message, status_code=status, body=text)

    def _get_once(self, endpoint: str, params: Mapping[str, str], context: str) -> list[Any]:
        try:
            response = self._http.get(self.url(endpoint), params=dict(params), timeout=self.timeout)
        except httpx.TimeoutException as err:
            raise TciaTimeoutError(
                f"{context}: no answer within {self.timeout.read} s ({type(err).__name__})"
            ) from err
        except httpx.TransportError as err:
            raise TciaTransportError(
                f"{context}: connection failed ({type(err).__name__}: {err})"
            ) from err
        body = response.content
        self._raise_for_status(response, body, context)
        if not body.strip():
            # NBIA answers "no results" with HTTP 200 and an empty body, not with [].
            return []
        content_type = response.headers.get("Content-Type", "")
        if _is_html(content_type, body):
            raise TciaResponseError(
                f"{context}: HTTP 200 with an HTML page instead of JSON: "
                f"{_excerpt(body.decode('utf-8', errors='replace'))}"
            )
        try:
            data = json.loads(body)
        except ValueError as err:
            raise TciaResponseError(f"{context}: body is not JSON ({err})") from err
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
            raise TciaResponseError(f"{context}: expected a JSON array of objects")
        return data

    def get_rows(self, endpoint: str, params: Mapping[str, str] | None = None) -> list[Any]:
        """Raw JSON rows of a GET endpoint, with retries; empty body gives ``[]``."""
        query = {key: value for key, value in (params or {}).items() if value is not None}
        context = f"{endpoint}({', '.join(f'{k}={v}' for k, v in query.items())})"
        return self._retrying(lambda: self._get_once(endpoint, query, context))

    # -- listing endpoints -------------------------------------------------------------------

    def get_collection_values(self) -> list[str]:
        """``getCollectionValues``: names of the collections the server offers, sorted."""
        rows = self.get_rows("getCollectionValues")
        return sorted({str(row["Collection"]) for row in rows if row.get("Collection")})

    def get_series(self, **filters: str) -> list[SeriesRecord]:
        """``getSeries`` with filters named as the API names them (``Collection``,
        ``PatientID``, ``StudyInstanceUID``, ``Modality``, ``BodyPartExamined``,
        ``Manufacturer``, ``ManufacturerModelName``, ``SeriesInstanceUID``). The server matches
        text filters case-insensitively and UIDs exactly; a series whose attribute is empty
        never matches a filter on it. Results are sorted (the server returns them unordered)."""
        unknown = sorted(set(filters) - set(SERIES_FILTERS))
        if unknown:
            raise ValueError(
                f"unknown getSeries filter(s) {unknown}; allowed (case-sensitive): "
                f"{list(SERIES_FILTERS)}"
            )
        return series_records(self.get_rows("getSeries", filters), "getSeries")

    def get_updated_series(self, from_date: dt.date) -> list[SeriesRecord]:
        """``getUpdatedSeries``: series released strictly after ``from_date`` (date only), in
        public collections, across all collections."""
        rows = self.get_rows("getUpdatedSeries", {"fromDate": format_nbia_date(from_date)})
        return series_records(rows, "getUpdatedSeries")

    def get_series_size(self, series_instance_uid: str) -> SeriesSize:
        """``getSeriesSize``: total bytes and object count of one series."""
        rows = self.get_rows("getSeriesSize", {"SeriesInstanceUID": series_instance_uid})
        if not rows:
            return SeriesSize(total_size_bytes=None, object_count=None)
        row = rows[0]

        def number(key: str) -> int | None:
            value = row.get(key)
            try:
                return None if value is None else int(float(value))
            except (TypeError, ValueError):
                return None

        return SeriesSize(
            total_size_bytes=number("TotalSizeInBytes"), object_count=number("ObjectCount")
        )

    def get_sop_instance_uids(self, series_instance_uid: str) -> list[str]:
        """``getSOPInstanceUIDs``: the SOP Instance UIDs (0008,0018) of one series, sorted."""
        rows = self.get_rows("getSOPInstanceUIDs", {"SeriesInstanceUID": series_instance_uid})
        return sorted({str(row["SOPInstanceUID"]) for row in rows if row.get("SOPInstanceUID")})

    # -- download ----------------------------------------------------------------------------

    def _image_params(self, series_instance_uid: str) -> dict[str, str]:
        if self.image_endpoint == "getImage":
            return {
                "SeriesInstanceUID": series_instance_uid,
                "NewFileNames": "Yes",
                "IncludeMD5": "yes",
            }
        return {"SeriesInstanceUID": series_instance_uid}

    def _stream_to_file(self, series_instance_uid: str, target: Path, label: str) -> int:
        endpoint = self.image_endpoint
        params = self._image_params(series_instance_uid)
        received = 0
        try:
            with self._http.stream(
                "GET", self.url(endpoint), params=params, timeout=self.timeout
            ) as response:
                if not 200 <= response.status_code < 300:
                    body = b""
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > 4096:
                            break
                    self._raise_for_status(response, body, f"{label}: {endpoint}")
                with open(target, "wb") as sink:
                    for chunk in response.iter_bytes(_DOWNLOAD_CHUNK_BYTES):
                        sink.write(chunk)
                        received += len(chunk)
        except httpx.TimeoutException as err:
            raise TciaTimeoutError(
                f"{label}: {endpoint} stalled after {received} bytes "
                f"(no data within {self.timeout.read} s)"
            ) from err
        except httpx.TransportError as err:
            raise TciaTransportError(
                f"{label}: {endpoint} connection lost after {received} bytes "
                f"({type(err).__name__}: {err})"
            ) from err
        with open(target, "rb") as source:
            head = source.read(_ERROR_EXCERPT_CHARS)
        if not head.startswith(_ZIP_MAGIC):
            what = "an empty body" if not head else repr(_excerpt(head.decode("latin-1")))
            raise TciaResponseError(
                f"{label}: {endpoint} answered HTTP 200 with {what} instead of a ZIP"
            )
        return received

    def _download_once(self, series: SeriesRecord, raw_root: Path, label: str) -> SeriesDownload:
        started = time.monotonic()
        staging_root = incoming_dir(raw_root)
        staging_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{series.series_instance_uid}.", dir=staging_root))
        try:
            zip_path = staging / "series.zip"
            with self.download_slots:
                archive_bytes = self._stream_to_file(series.series_instance_uid, zip_path, label)
            extracted = staging / "series"
            verified = extract_verified(
                zip_path,
                extracted,
                label=label,
                expected_count=series.image_count,
                expected_bytes=series.file_size_bytes,
            )
            zip_path.unlink()
            target = series_dir(raw_root, series)
            record_file = record_path(raw_root, series)
            # Remove the old record first: a crash below leaves no record, so the series
            # counts as absent and is fetched again; never an old record over new files.
            record_file.unlink(missing_ok=True)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists() or target.is_symlink():
                os.replace(target, staging / "previous")
            os.replace(extracted, target)
            write_record(
                record_file,
                VerificationRecord(
                    series=series,
                    files=verified.files,
                    license_present=verified.license_present,
                    source_url=self.base_url,
                    endpoint=self.image_endpoint,
                    verified_at=utc_now_iso(),
                ),
            )
            return SeriesDownload(
                series=series,
                path=target,
                record_path=record_file,
                image_count=len(verified.files),
                dicom_bytes=verified.dicom_bytes,
                archive_bytes=archive_bytes,
                attempts=1,
                seconds=time.monotonic() - started,
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def download_series(self, series: SeriesRecord, raw_root: Path) -> SeriesDownload:
        """Download, verify and place one series under ``raw_root`` (replacing an older copy).

        Uses ``getImage?IncludeMD5=yes&NewFileNames=Yes`` and falls back to
        ``getImageWithMD5Hash`` when the server rejects ``IncludeMD5``. When the listing lacks
        ImageCount or FileSize they are taken from ``getSeriesSize``. Raises the last
        :class:`~braincls.ingest.errors.TciaError` when every try failed; nothing is left in the
        raw tree then.
        """
        raw_root = Path(raw_root)
        series_dir(raw_root, series)  # refuse unusable names before any network traffic
        if series.image_count is None or series.file_size_bytes is None:
            size = self.get_series_size(series.series_instance_uid)
            series = _with_size(series, size)
        # UIDs only: messages and log lines reach the dashboard and the failure webhook.
        label = f"series {series.series_instance_uid} ({series.collection})"
        attempts = 0
        started = time.monotonic()

        def attempt() -> SeriesDownload:
            nonlocal attempts
            attempts += 1
            try:
                return self._download_once(series, raw_root, label)
            except TciaRequestError as err:
                if self.image_endpoint == "getImage" and _REJECTS_MD5 in err.body:
                    logger.info(
                        "%s: server rejects IncludeMD5; falling back to getImageWithMD5Hash",
                        label,
                    )
                    self.image_endpoint = "getImageWithMD5Hash"
                    return self._download_once(series, raw_root, label)
                raise

        result = self._retrying(attempt)
        logger.info(
            "%s: %d files, %d bytes verified in %.2f s",
            label,
            result.image_count,
            result.dicom_bytes,
            time.monotonic() - started,
        )
        return SeriesDownload(
            series=result.series,
            path=result.path,
            record_path=result.record_path,
            image_count=result.image_count,
            dicom_bytes=result.dicom_bytes,
            archive_bytes=result.archive_bytes,
            attempts=attempts,
            seconds=time.monotonic() - started,
        )


def _with_size(series: SeriesRecord, size: SeriesSize) -> SeriesRecord:
    return replace(
        series,
        image_count=series.image_count if series.image_count is not None else size.object_count,
        file_size_bytes=(
            series.file_size_bytes if series.file_size_bytes is not None else size.total_size_bytes
        ),
    )
