"""TCIA ingest: an NBIA v4 client that verifies every series before it becomes visible.

Typical use (a notebook, or one Prefect task per call)::

    from braincls.ingest import NbiaClient, plan_ingest, ingest_series

    with NbiaClient("http://127.0.0.1:8765/nbia-api/services/v4/") as client:
        plan = plan_ingest(client, "Brain-Tumor-Progression", raw_root, {"Modality": "MR"})
        for series in plan.to_download:
            ingest_series(client, series, raw_root)
"""

from braincls.ingest.archive import ExtractedFile, VerifiedArchive, extract_verified
from braincls.ingest.client import (
    SERIES_FILTERS,
    Backoff,
    NbiaClient,
    SeriesDownload,
    parse_retry_after,
)
from braincls.ingest.collection import (
    IngestFailure,
    IngestPlan,
    IngestSummary,
    WatchReport,
    ingest,
    ingest_collection,
    ingest_series,
    plan_ingest,
    summarize,
    watch,
)
from braincls.ingest.errors import (
    ChecksumMismatchError,
    CorruptArchiveError,
    IncompleteSeriesError,
    SeriesVerificationError,
    SizeMismatchError,
    TciaError,
    TciaHttpError,
    TciaRateLimitedError,
    TciaRequestError,
    TciaResponseError,
    TciaServerError,
    TciaTimeoutError,
    TciaTransportError,
    UnsafeArchiveError,
    UnsafeRecordError,
)
from braincls.ingest.records import SeriesRecord, SeriesSize, format_nbia_date, parse_nbia_date
from braincls.ingest.store import (
    Presence,
    VerificationRecord,
    check_present,
    iter_records,
    read_record,
    record_path,
    series_dir,
)

__all__ = [
    "SERIES_FILTERS",
    "Backoff",
    "ChecksumMismatchError",
    "CorruptArchiveError",
    "ExtractedFile",
    "IncompleteSeriesError",
    "IngestFailure",
    "IngestPlan",
    "IngestSummary",
    "NbiaClient",
    "Presence",
    "SeriesDownload",
    "SeriesRecord",
    "SeriesSize",
    "SeriesVerificationError",
    "SizeMismatchError",
    "TciaError",
    "TciaHttpError",
    "TciaRateLimitedError",
    "TciaRequestError",
    "TciaResponseError",
    "TciaServerError",
    "TciaTimeoutError",
    "TciaTransportError",
    "UnsafeArchiveError",
    "UnsafeRecordError",
    "VerificationRecord",
    "VerifiedArchive",
    "WatchReport",
    "check_present",
    "extract_verified",
    "format_nbia_date",
    "ingest",
    "ingest_collection",
    "ingest_series",
    "iter_records",
    "parse_nbia_date",
    "parse_retry_after",
    "plan_ingest",
    "read_record",
    "record_path",
    "series_dir",
    "summarize",
    "watch",
]
