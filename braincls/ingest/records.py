"""Typed records built from NBIA v4 JSON rows.

The v4 API builds each row from a HashMap: key order is not stable, null columns are left out,
numbers sometimes arrive as strings and dates are ``MM-DD-YYYY`` (v1/v2 sent
``YYYY-MM-DD HH:MM:SS.0``). These parsers accept all of that and refuse only rows that lack the
one field a record cannot exist without. No record carries PatientName or other PHI fields.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from braincls.ingest.errors import TciaResponseError

#: NBIA v4 date format (``date_format(x,'%m-%d-%Y')`` in the server's SQL).
NBIA_DATE_FORMAT = "%m-%d-%Y"

_OLD_TIMESTAMP = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[ T].*)?$")


def parse_nbia_date(value: object) -> dt.date | None:
    """Parse an NBIA date: ``MM-DD-YYYY`` (v4), ``YYYY-MM-DD[ HH:MM:SS.0]`` (v1/v2) or DICOM
    ``YYYYMMDD``. Empty or unparseable values give ``None`` (every field is optional)."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        return dt.datetime.strptime(text, NBIA_DATE_FORMAT).date()
    except ValueError:
        pass
    match = _OLD_TIMESTAMP.match(text)
    if match:
        try:
            return dt.date(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:
            return None
    if len(text) == 8 and text.isdigit():
        try:
            return dt.datetime.strptime(text, "%Y%m%d").date()
        except ValueError:
            return None
    return None


def format_nbia_date(value: dt.date) -> str:
    """``MM-DD-YYYY``, the only date form v4 parameters such as ``fromDate`` accept."""
    return value.strftime(NBIA_DATE_FORMAT)


def _text(row: Mapping[str, Any], key: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _integer(row: Mapping[str, Any], key: str) -> int | None:
    value = row.get(key)
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(float(str(value).strip()))
    except ValueError:
        return None


def _required(row: Mapping[str, Any], key: str, endpoint: str) -> str:
    value = _text(row, key)
    if value is None:
        raise TciaResponseError(f"{endpoint}: a row lacks {key}: {dict(row)!r:.300}")
    return value


@dataclass(frozen=True)
class SeriesRecord:
    """One row of ``getSeries`` / ``getUpdatedSeries`` (v4 columns, PHI-free subset).

    ``image_count`` is the listing's ``ImageCount`` (number of DICOM instances) and
    ``file_size_bytes`` its ``FileSize`` (sum of the DICOM files' bytes, LICENSE and
    ``md5hashes.csv`` excluded); either may be ``None`` when the server left it out.
    """

    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    collection: str
    modality: str | None = None
    image_count: int | None = None
    file_size_bytes: int | None = None
    date_released: dt.date | None = None
    series_date: dt.date | None = None
    study_date: dt.date | None = None
    series_description: str | None = None
    protocol_name: str | None = None
    body_part_examined: str | None = None
    series_number: int | None = None
    manufacturer: str | None = None
    manufacturer_model_name: str | None = None
    max_submission_date: dt.date | None = None
    license_name: str | None = None
    license_uri: str | None = None
    data_description_uri: str | None = None

    @classmethod
    def from_api(cls, row: Mapping[str, Any], endpoint: str = "getSeries") -> SeriesRecord:
        """Build a record from one JSON row; raise :class:`TciaResponseError` when one of the
        four identifying fields (series, study, patient, collection) is missing."""
        return cls(
            series_instance_uid=_required(row, "SeriesInstanceUID", endpoint),
            study_instance_uid=_required(row, "StudyInstanceUID", endpoint),
            patient_id=_required(row, "PatientID", endpoint),
            collection=_required(row, "Collection", endpoint),
            modality=_text(row, "Modality"),
            image_count=_integer(row, "ImageCount"),
            file_size_bytes=_integer(row, "FileSize"),
            date_released=parse_nbia_date(row.get("DateReleased")),
            series_date=parse_nbia_date(row.get("SeriesDate")),
            study_date=parse_nbia_date(row.get("StudyDate")),
            series_description=_text(row, "SeriesDescription"),
            protocol_name=_text(row, "ProtocolName"),
            body_part_examined=_text(row, "BodyPartExamined"),
            series_number=_integer(row, "SeriesNumber"),
            manufacturer=_text(row, "Manufacturer"),
            manufacturer_model_name=_text(row, "ManufacturerModelName"),
            max_submission_date=parse_nbia_date(row.get("MaxSubmissionTimestamp")),
            license_name=_text(row, "LicenseName"),
            license_uri=_text(row, "LicenseURI"),
            data_description_uri=_text(row, "DataDescriptionURI"),
        )

    @property
    def sort_key(self) -> tuple[str, str, str, str]:
        """Stable order for results the server returns in no particular order."""
        return (self.collection, self.patient_id, self.study_instance_uid, self.series_instance_uid)

    def listing_fingerprint(self) -> dict[str, Any]:
        """What, in the listing, says whether a local copy is still current."""
        return {
            "image_count": self.image_count,
            "file_size_bytes": self.file_size_bytes,
            "date_released": self.date_released.isoformat() if self.date_released else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (dates as ISO strings)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, dt.date):
                out[key] = value.isoformat()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SeriesRecord:
        """Inverse of :meth:`to_dict`."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            value = data.get(field.name)
            if isinstance(value, str) and field.name in _DATE_FIELDS:
                value = dt.date.fromisoformat(value)
            values[field.name] = value
        return cls(**values)


_DATE_FIELDS = frozenset({"date_released", "series_date", "study_date", "max_submission_date"})


@dataclass(frozen=True)
class SeriesSize:
    """``getSeriesSize``: the bytes and number of objects the server holds for one series."""

    total_size_bytes: int | None
    object_count: int | None


def series_records(rows: list[dict[str, Any]], endpoint: str) -> list[SeriesRecord]:
    """Series records from JSON rows, one per SeriesInstanceUID, in :attr:`sort_key` order."""
    by_uid: dict[str, SeriesRecord] = {}
    for row in rows:
        record = SeriesRecord.from_api(row, endpoint)
        by_uid.setdefault(record.series_instance_uid, record)
    return sorted(by_uid.values(), key=lambda record: record.sort_key)
