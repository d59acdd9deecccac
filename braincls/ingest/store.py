"""Where verified series live under the raw tree, and how we know one is present.

Layout (the classic NBIA Data Retriever layout)::

    raw/<Collection>/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/   LICENSE, *.dcm
    raw/<Collection>/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>.series.json
    raw/.incoming/                                                       downloads in flight

The ``.series.json`` verification record is written after the series folder has been renamed
into place, and removed before a folder is replaced. A series counts as present only when its
record exists, matches the server's current listing (ImageCount, FileSize, DateReleased) and
every file it names is on disk with the recorded size: never merely because a folder exists.
Later stages skip dot-folders (``.incoming``) and read only folders that have a record.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from braincls.common.atomic import write_json
from braincls.ingest.archive import ExtractedFile
from braincls.ingest.errors import UnsafeRecordError
from braincls.ingest.records import SeriesRecord

logger = logging.getLogger(__name__)

RECORD_SUFFIX = ".series.json"
INCOMING_DIR_NAME = ".incoming"
RECORD_SCHEMA_VERSION = 1
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_MAX_COMPONENT_CHARS = 200


def safe_component(value: str, what: str) -> str:
    """Return ``value`` if it can name one folder under the raw tree, else raise
    :class:`UnsafeRecordError` (separators, ``..``, hidden or empty names, control characters)."""
    if (
        not value
        or value in (".", "..")
        or value.startswith(".")
        or "/" in value
        or "\\" in value
        or any(ord(char) < 32 for char in value)
        or len(value) > _MAX_COMPONENT_CHARS
    ):
        # A Patient ID is not repeated in the message (it reaches logs and notifications).
        shown = "(not shown)" if what == "PatientID" else repr(value)
        raise UnsafeRecordError(f"{what} {shown} cannot be used as a folder name")
    return value


def safe_uid(value: str, what: str) -> str:
    """Return ``value`` if it is a DICOM UID (digits and dots, PS3.5 9.1), else raise."""
    if not _UID.match(value) or len(value) > 64:
        raise UnsafeRecordError(f"{what} {value!r} is not a DICOM UID (digits and dots)")
    return value


def series_dir(raw_root: Path, series: SeriesRecord) -> Path:
    """``raw_root/<Collection>/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>``."""
    return (
        Path(raw_root)
        / safe_component(series.collection, "Collection")
        / safe_component(series.patient_id, "PatientID")
        / safe_uid(series.study_instance_uid, "StudyInstanceUID")
        / safe_uid(series.series_instance_uid, "SeriesInstanceUID")
    )


def record_path(raw_root: Path, series: SeriesRecord) -> Path:
    """The verification record beside the series folder: ``<SeriesInstanceUID>.series.json``."""
    folder = series_dir(raw_root, series)
    return folder.with_name(folder.name + RECORD_SUFFIX)


def incoming_dir(raw_root: Path) -> Path:
    """Staging folder for downloads in flight (same file system, so renames are atomic)."""
    return Path(raw_root) / INCOMING_DIR_NAME


def remove_stale_incoming(raw_root: Path, max_age_seconds: float = 6 * 3600) -> int:
    """Delete staging folders left in ``.incoming`` by runs that were killed (older than
    ``max_age_seconds``); return how many were removed. Downloads in flight are younger."""
    staging_root = incoming_dir(raw_root)
    if not staging_root.is_dir():
        return 0
    cutoff = time.time() - max_age_seconds
    removed = 0
    for entry in staging_root.iterdir():
        try:
            if entry.stat().st_mtime >= cutoff:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
        except OSError as err:
            logger.warning("could not remove stale staging entry %s (%s)", entry, err)
    if removed:
        logger.info("removed %d stale staging entries from %s", removed, staging_root)
    return removed


@dataclass(frozen=True)
class VerificationRecord:
    """What was verified for one series and when; written as JSON beside its folder."""

    series: SeriesRecord
    files: tuple[ExtractedFile, ...]
    license_present: bool
    source_url: str
    endpoint: str
    verified_at: str

    @property
    def dicom_bytes(self) -> int:
        """Sum of the verified DICOM files' sizes."""
        return sum(item.size_bytes for item in self.files)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "schema_version": RECORD_SCHEMA_VERSION,
            "series": self.series.to_dict(),
            "listing": self.series.listing_fingerprint(),
            "files": [
                {"name": item.name, "md5": item.md5, "size_bytes": item.size_bytes}
                for item in self.files
            ],
            "dicom_bytes": self.dicom_bytes,
            "license_present": self.license_present,
            "source_url": self.source_url,
            "endpoint": self.endpoint,
            "verified_at": self.verified_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VerificationRecord:
        """Inverse of :meth:`to_json`; raises ``KeyError``/``ValueError`` on a bad record."""
        if data.get("schema_version") != RECORD_SCHEMA_VERSION:
            raise ValueError(f"unknown schema_version {data.get('schema_version')!r}")
        return cls(
            series=SeriesRecord.from_dict(data["series"]),
            files=tuple(
                ExtractedFile(
                    name=str(item["name"]), md5=str(item["md5"]), size_bytes=int(item["size_bytes"])
                )
                for item in data["files"]
            ),
            license_present=bool(data["license_present"]),
            source_url=str(data["source_url"]),
            endpoint=str(data["endpoint"]),
            verified_at=str(data["verified_at"]),
        )


def utc_now_iso() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_record(path: Path, record: VerificationRecord) -> Path:
    """Atomically write ``record`` to ``path``."""
    return write_json(path, record.to_json())


def read_record(path: Path) -> VerificationRecord | None:
    """The record at ``path``, or ``None`` when it is absent or unreadable (logged)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return VerificationRecord.from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        logger.warning("verification record %s unreadable (%s); series counts as absent", path, err)
        return None


@dataclass(frozen=True)
class Presence:
    """Whether a listed series is present locally, and why not when it is not."""

    present: bool
    reason: str
    #: True when an earlier verified copy exists but the listing changed since.
    changed: bool = False


def check_present(raw_root: Path, series: SeriesRecord) -> Presence:
    """Compare the local record of ``series`` with its listing row and the files on disk."""
    record = read_record(record_path(raw_root, series))
    if record is None:
        return Presence(False, "no verification record")
    listed = series.listing_fingerprint()
    recorded = record.series.listing_fingerprint()
    differences = [
        f"{key} {recorded[key]} -> {listed[key]}"
        for key in listed
        if listed[key] is not None and listed[key] != recorded[key]
    ]
    if differences:
        return Presence(False, "listing changed: " + ", ".join(differences), changed=True)
    folder = series_dir(raw_root, series)
    for item in record.files:
        try:
            size_bytes = (folder / item.name).stat().st_size
        except OSError:
            return Presence(False, f"file {item.name} missing", changed=True)
        if size_bytes != item.size_bytes:
            return Presence(
                False,
                f"file {item.name} is {size_bytes} bytes, {item.size_bytes} verified",
                changed=True,
            )
    return Presence(True, "verified copy matches the listing")


def iter_records(raw_root: Path, collection: str | None = None) -> Iterator[VerificationRecord]:
    """Every readable verification record under ``raw_root`` (or one collection's folder)."""
    base = Path(raw_root)
    if collection is not None:
        base = base / safe_component(collection, "Collection")
    if not base.is_dir():
        return
    for path in sorted(base.glob(f"**/*{RECORD_SUFFIX}")):
        if any(part.startswith(".") for part in path.relative_to(raw_root).parts):
            continue
        record = read_record(path)
        if record is not None:
            yield record
