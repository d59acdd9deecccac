"""A local HTTP server that behaves like TCIA's NBIA v4 REST API.

It serves the :class:`~devkit.nbia.catalogue.Catalogue` of a root folder on
``/nbia-api/services/v4/<endpoint>`` with the real API's paths, case-sensitive parameter names,
JSON field names (nulls left out, ``/`` escaped as ``\\/`` like Jettison), ``MM-DD-YYYY`` dates,
filter semantics, unordered results, HTTP 400 with NBIA's plain-text messages for unknown or
missing parameters, HTTP 200 with an empty body for no results, and NBIA's ZIP layouts
(``LICENSE`` first for ``getImage``, ``00000001.dcm`` or ``1-001.dcm`` names, ``md5hashes.csv``
last, DEFLATE, chunked with no Content-Length). No authentication; an ``Authorization`` header is
ignored. Faults from a :class:`~devkit.nbia.faults.FaultPlan` replace normal answers.

Start it with :func:`serve` (a background thread; a context manager) or from a shell with
``python -m devkit.nbia.server --root DIR`` (:func:`main`). Nothing is open by default: it
binds loopback addresses only (another host needs ``allow_remote``/``--allow-remote``), the
control endpoints (fault injection, reload) answer only with ``control``/``--control``, and
request bodies are bounded (:data:`MAX_BODY_BYTES`) and checked.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import html
import io
import json
import logging
import random
import socket
import struct
import sys
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from devkit.nbia.catalogue import Catalogue, Instance, Series
from devkit.nbia.faults import Fault, FaultKind, FaultPlan

logger = logging.getLogger(__name__)

API_PREFIX = "/nbia-api/services/v4/"
CONTROL_PREFIX = "/braincls-control/"
#: Largest request body read (a form of getImage parameters, or a fault as JSON).
MAX_BODY_BYTES = 64 * 1024
_DATE = "%m-%d-%Y"
_CHUNK_BYTES = 256 * 1024

_NGINX_500 = b"Error: 500 Internal Server Error (nginx upstream)"[:48]


def _nginx_page(status: int, reason: str) -> bytes:
    return (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


_HTML_200_PAGE = (
    b"<!DOCTYPE html><html><head><title>The Cancer Imaging Archive - Maintenance</title></head>"
    b"<body><h1>We'll be back soon</h1><p>The service is undergoing maintenance.</p></body></html>"
)


class _BadRequest(Exception):
    """An HTTP 400 with NBIA's plain-text body."""


class _ResetConnection(Exception):
    """Raised inside a response to cut the TCP connection."""


@dataclass(frozen=True)
class RequestRecord:
    """One request the server saw (for tests: how many downloads did the client make?)."""

    method: str
    endpoint: str
    params: Mapping[str, str]
    status: int
    fault: str | None
    #: ``time.monotonic()`` when the request arrived, and how long the answer took.
    started_at: float
    seconds: float


@dataclass(frozen=True)
class _Endpoint:
    methods: frozenset[str]
    allowed: tuple[str, ...]
    required: tuple[str, ...]
    handler: Callable[[_App, Mapping[str, str]], list[dict[str, Any]]] | None
    default_format: str = "json"


def _fmt(value: dt.date | None) -> str | None:
    return value.strftime(_DATE) if value is not None else None


def _ci(value: str | None, wanted: str) -> bool:
    # NBIA: UPPER(col)=UPPER(param); a NULL column never matches.
    return value is not None and value.upper() == wanted.upper()


def _prune(row: dict[str, Any]) -> dict[str, Any]:
    # Jettison's put(key, null) removes the key: null columns are absent, not null.
    return {key: value for key, value in row.items() if value is not None}


def series_row(series: Series) -> dict[str, Any]:
    """The v4 ``getSeries`` / ``getUpdatedSeries`` row of ``series``."""
    info = series.collection
    return _prune(
        {
            "SeriesInstanceUID": series.series_instance_uid,
            "StudyInstanceUID": series.study_instance_uid,
            "Modality": series.get("Modality"),
            "ProtocolName": series.get("ProtocolName"),
            "SeriesDate": _fmt(series.get("SeriesDate")),
            "SeriesDescription": series.get("SeriesDescription"),
            "BodyPartExamined": series.get("BodyPartExamined"),
            "SeriesNumber": series.get("SeriesNumber"),
            "Collection": info.name,
            "Site": info.site,
            "PatientID": series.patient_id,
            "PatientSex": series.get("PatientSex"),
            "PatientAge": series.get("PatientAge"),
            "Manufacturer": series.get("Manufacturer"),
            "ManufacturerModelName": series.get("ManufacturerModelName"),
            "SoftwareVersions": series.get("SoftwareVersions"),
            "ImageCount": series.image_count,
            "MaxSubmissionTimestamp": _fmt(series.max_submission_date),
            "LicenseName": info.license_name,
            "LicenseURI": info.license_uri,
            "DataDescriptionURI": info.data_description_uri,
            "FileSize": series.file_size_bytes,
            "ReleasedStatus": "Released",
            "DateReleased": _fmt(series.date_released),
            "StudyDesc": series.get("StudyDescription"),
            "StudyDate": _fmt(series.get("StudyDate")),
            "ThirdPartyAnalysis": "NO",
            "AdmittingDiagnosisDescription": series.get("AdmittingDiagnosesDescription"),
            "Authorized": 1,
        }
    )


def _patient_row(series: Series) -> dict[str, Any]:
    return _prune(
        {
            "PatientId": series.patient_id,
            "PatientName": series.get("PatientName"),
            "PatientSex": series.get("PatientSex"),
            "EthnicGroup": series.get("EthnicGroup"),
            "Collection": series.collection.name,
            "Phantom": "NO",
            "SpeciesCode": "337915000",
            "SpeciesDescription": "Homo sapiens",
            "Authorized": 1,
        }
    )


def _study_row(series: Series, series_count: int) -> dict[str, Any]:
    return _prune(
        {
            "StudyInstanceUID": series.study_instance_uid,
            "StudyDate": _fmt(series.get("StudyDate")),
            "StudyDescription": series.get("StudyDescription"),
            "AdmittingDiagnosesDescription": series.get("AdmittingDiagnosesDescription"),
            "StudyID": series.get("StudyID"),
            "PatientAge": series.get("PatientAge"),
            "PatientID": series.patient_id,
            "PatientName": series.get("PatientName"),
            "PatientSex": series.get("PatientSex"),
            "EthnicGroup": series.get("EthnicGroup"),
            "Collection": series.collection.name,
            "SeriesCount": series_count,
            "Authorized": 1,
        }
    )


_METADATA_COLUMNS = (
    "PatientID",
    "PatientName",
    "PatientSex",
    "EthnicGroup",
    "Phantom",
    "SpeciesCode",
    "SpeciesDescription",
    "StudyInstanceUID",
    "StudyDate",
    "StudyDesc",
    "AdmittingDiagnosisDescription",
    "StudyID",
    "PatientAge",
    "LongitudinalTemporalEventType",
    "LongitudinalTemporalOffsetFromEvent",
    "SeriesInstanceUID",
    "Collection",
    "Site",
    "Modality",
    "ProtocolName",
    "SeriesDate",
    "SeriesDescription",
    "BodyPartExamined",
    "SeriesNumber",
    "AnnotationsFlag",
    "Manufacturer",
    "ManufacturerModelName",
    "PixelSpacing(mm)-Row",
    "SliceThickness(mm)",
    "SoftwareVersions",
    "ImageCount",
    "MaxSubmissionTimestamp",
    "LicenseName",
    "LicenseURI",
    "DataDescriptionURI",
    "FileSize",
    "ReleasedStatus",
    "DateReleased",
    "ThirdPartyAnalysis",
    "Authorized",
)


def _metadata_row(series: Series) -> dict[str, Any]:
    row = dict(series_row(series))
    row.update(
        {
            "PatientName": series.get("PatientName"),
            "EthnicGroup": series.get("EthnicGroup"),
            "Phantom": "NO",
            "SpeciesCode": "337915000",
            "SpeciesDescription": "Homo sapiens",
            "StudyID": series.get("StudyID"),
        }
    )
    return {column: row.get(column) for column in _METADATA_COLUMNS}


def new_file_names(instances: Sequence[Instance]) -> list[tuple[Instance, str]]:
    """Order and name instances as ``getImage?NewFileNames=Yes`` does.

    NBIA sorts by (0020,0013) InstanceNumber (missing first), then names each file
    ``<acquisition>-<instance>.dcm``: the acquisition counter increases whenever (0020,0012)
    AcquisitionNumber changes, the instance counter restarts there, and both are zero-padded to
    the width of their totals (``ImageDAO2Impl.setNewFileNames``). 24 images give ``1-01.dcm``
    to ``1-24.dcm``.
    """
    ordered = sorted(
        instances,
        key=lambda item: (
            item.instance_number is not None,
            item.instance_number or 0,
            item.sop_instance_uid,
        ),
    )
    if not ordered:
        return []
    acquisition_total = instance_total = 1
    acquisition = ordered[0].acquisition_number or 0
    instance = ordered[0].instance_number or 0
    for item in ordered:
        if item.acquisition_number is not None and item.acquisition_number != acquisition:
            acquisition = item.acquisition_number
            acquisition_total += 1
        if item.instance_number is not None and item.instance_number != instance:
            instance = item.instance_number
            instance_total += 1
    acquisition_width = len(str(acquisition_total))
    instance_width = len(str(instance_total))
    acquisition = ordered[0].acquisition_number or 0
    acquisition_counter, instance_counter = 1, 0
    named: list[tuple[Instance, str]] = []
    for item in ordered:
        current = item.acquisition_number or 0
        if current != acquisition:
            acquisition = current
            acquisition_counter += 1
            instance_counter = 1
        else:
            instance_counter += 1
        named.append(
            (
                item,
                f"{acquisition_counter:0{acquisition_width}d}-"
                f"{instance_counter:0{instance_width}d}.dcm",
            )
        )
    return named


def license_text(series: Series) -> str:
    """The ``LICENSE`` entry of a ``getImage`` archive."""
    info = series.collection
    return (
        f"Collection: {info.name}\n"
        f"This data is licensed under the {info.license_name}\n"
        f"{info.license_uri}\n"
        "Please cite the collection as described on its TCIA page when you use this data.\n"
    )


class _ChunkedWriter:
    """A write-only, non-seekable stream that sends HTTP/1.1 chunks; zipfile writes into it
    (with data descriptors, as Java's ZipOutputStream does)."""

    def __init__(self, wfile: Any, reset_after_bytes: int | None) -> None:
        self._wfile = wfile
        self._buffer = bytearray()
        self._sent = 0
        self._reset_after = reset_after_bytes

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= _CHUNK_BYTES:
            self._send(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def _send(self, data: bytes) -> None:
        if not data:
            return
        if self._reset_after is not None and self._sent + len(data) >= self._reset_after:
            part = data[: max(0, self._reset_after - self._sent)]
            if part:
                self._wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            raise _ResetConnection
        self._wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self._sent += len(data)

    def finish(self) -> None:
        self._send(bytes(self._buffer))
        self._buffer.clear()
        self._wfile.write(b"0\r\n\r\n")


@dataclass
class _App:
    """Request handling, shared by the handler threads."""

    catalogue: Catalogue
    faults: FaultPlan
    rng: random.Random
    shuffle: bool
    get_image_accepts_md5: bool
    compress_level: int
    #: Whether the ``/braincls-control/`` endpoints (faults, reload) answer.
    control: bool = False
    log: list[RequestRecord] = field(default_factory=list)
    #: Requests that arrived before this ``time.monotonic()`` were cleared from the log.
    log_floor: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- listing endpoints -----------------------------------------------------------------

    def _series(self) -> list[Series]:
        return list(self.catalogue.series.values())

    def _in_collection(self, series: Series, params: Mapping[str, str]) -> bool:
        wanted = params.get("Collection")
        return not wanted or _ci(series.collection.name, wanted)

    def get_collection_values(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        names = {series.collection.name for series in self._series()}
        return [{"Collection": name} for name in names]

    def _distinct(
        self, params: Mapping[str, str], column: str, key: str, filters: Sequence[str]
    ) -> list[dict[str, Any]]:
        values = set()
        for series in self._series():
            if not self._in_collection(series, params):
                continue
            if any(
                params.get(name) and not _ci(series.get(name), params[name]) for name in filters
            ):
                continue
            value = series.get(column)
            if value is not None:
                values.add(value.upper() if column != "Manufacturer" else value)
        return [{key: value} for value in values]

    def get_modality_values(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        return self._distinct(params, "Modality", "Modality", ["BodyPartExamined"])

    def get_body_part_values(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        return self._distinct(params, "BodyPartExamined", "BodyPartExamined", ["Modality"])

    def get_manufacturer_values(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        return self._distinct(
            params, "Manufacturer", "Manufacturer", ["Modality", "BodyPartExamined"]
        )

    def _patients(
        self, params: Mapping[str, str], predicate: Callable[[Series], bool]
    ) -> list[dict[str, Any]]:
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for series in self._series():
            if self._in_collection(series, params) and predicate(series):
                rows.setdefault((series.collection.name, series.patient_id), _patient_row(series))
        return list(rows.values())

    def get_patient(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        wanted = params.get("PatientId")
        return self._patients(params, lambda s: not wanted or _ci(s.patient_id, wanted))

    def get_patient_by_collection_and_modality(
        self, params: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        wanted = params.get("Modality")
        rows = self._patients(params, lambda s: not wanted or _ci(s.get("Modality"), wanted))
        return [{"PatientId": row["PatientId"], "Authorized": 1} for row in rows]

    def new_patients_in_collection(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        since = _parse_from_date(params["fromDate"])
        if since is None:
            return []
        return self._patients(params, lambda s: s.date_released >= since)

    def _studies(
        self, params: Mapping[str, str], predicate: Callable[[Series], bool]
    ) -> list[dict[str, Any]]:
        counts: dict[str, int] = {}
        first: dict[str, Series] = {}
        for series in self._series():
            if not self._in_collection(series, params) or not predicate(series):
                continue
            if params.get("PatientID") and not _ci(series.patient_id, params["PatientID"]):
                continue
            uid = series.study_instance_uid
            counts[uid] = counts.get(uid, 0) + 1
            first.setdefault(uid, series)
        return [_study_row(first[uid], counts[uid]) for uid in first]

    def get_patient_study(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        wanted = params.get("StudyInstanceUID")
        return self._studies(params, lambda s: not wanted or s.study_instance_uid == wanted)

    def new_studies_in_patient_collection(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        since = _parse_from_date(params["fromDate"])
        if since is None:
            return []
        return self._studies(params, lambda s: s.date_released >= since)

    def get_series(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        rows = []
        for series in self._series():
            if not self._in_collection(series, params):
                continue
            if params.get("PatientID") and not _ci(series.patient_id, params["PatientID"]):
                continue
            if any(
                params.get(name) and not _ci(series.get(name), params[name])
                for name in _TEXT_FILTERS
            ):
                continue
            if params.get("StudyInstanceUID") and (
                series.study_instance_uid != params["StudyInstanceUID"]
            ):
                continue
            if params.get("SeriesInstanceUID") and (
                series.series_instance_uid != params["SeriesInstanceUID"]
            ):
                continue
            rows.append(series_row(series))
        return rows

    def get_updated_series(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        since = _parse_from_date(params.get("fromDate") or "01-01-1900")
        if since is None:
            # MySQL STR_TO_DATE gives NULL for a malformed date: nothing matches.
            return []
        return [
            series_row(series)
            for series in self._series()
            if series.collection.public and series.date_released > since
        ]

    def _one_series(self, uid: str) -> Series | None:
        return self.catalogue.series.get(uid)

    def get_series_size(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        series = self._one_series(params["SeriesInstanceUID"])
        if series is None:
            return []
        return [{"TotalSizeInBytes": series.file_size_bytes, "ObjectCount": series.image_count}]

    def get_sop_instance_uids(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        series = self._one_series(params["SeriesInstanceUID"])
        if series is None:
            return []
        return [{"SOPInstanceUID": item.sop_instance_uid} for item in series.instances]

    def get_series_metadata(self, params: Mapping[str, str]) -> list[dict[str, Any]]:
        uids = [
            uid
            for uid in "".join(
                char for char in params["list"] if char.isdigit() or char in ".,"
            ).split(",")
            if uid
        ]
        rows = []
        for uid in dict.fromkeys(uids):
            series = self._one_series(uid)
            if series is not None:
                rows.append(_metadata_row(series))
        return rows

    # -- download entries ------------------------------------------------------------------

    def archive_entries(
        self, series: Series, endpoint: str, params: Mapping[str, str]
    ) -> tuple[list[tuple[str, bytes | Path]], bool]:
        """(entries, include_md5): the archive's files in order, md5hashes.csv excluded."""
        entries: list[tuple[str, bytes | Path]] = []
        if endpoint == "getImageWithMD5Hash":
            include_md5 = True
            named = [(item, f"{index:08d}.dcm") for index, item in enumerate(series.instances, 1)]
        else:
            include_md5 = params.get("IncludeMD5", "").lower() == "yes"
            entries.append(("LICENSE", license_text(series).encode("utf-8")))
            if params.get("NewFileNames", "").lower() == "yes":
                named = new_file_names(series.instances)
            else:
                named = [
                    (item, f"{index:08d}.dcm") for index, item in enumerate(series.instances, 1)
                ]
        entries.extend((name, item.path) for item, name in named)
        return entries, include_md5


_TABLE_FORMATS = frozenset({"csv", "csvquoted", "csv-download", "html", "xml"})
_TEXT_FILTERS = ("Modality", "BodyPartExamined", "Manufacturer", "ManufacturerModelName")


def _parse_from_date(value: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(value, _DATE).date()
    except ValueError:
        return None


_ENDPOINTS: dict[str, _Endpoint] = {
    "getCollectionValues": _Endpoint(
        frozenset({"GET"}), ("format",), (), _App.get_collection_values
    ),
    "getModalityValues": _Endpoint(
        frozenset({"GET"}),
        ("Collection", "BodyPartExamined", "format"),
        (),
        _App.get_modality_values,
    ),
    "getBodyPartValues": _Endpoint(
        frozenset({"GET"}), ("Collection", "Modality", "format"), (), _App.get_body_part_values
    ),
    "getManufacturerValues": _Endpoint(
        frozenset({"GET"}),
        ("Collection", "Modality", "BodyPartExamined", "format"),
        (),
        _App.get_manufacturer_values,
    ),
    "getPatient": _Endpoint(
        frozenset({"GET"}), ("Collection", "PatientId", "format"), (), _App.get_patient
    ),
    "getPatientByCollectionAndModality": _Endpoint(
        frozenset({"GET"}),
        ("Collection", "Modality", "format"),
        (),
        _App.get_patient_by_collection_and_modality,
    ),
    "NewPatientsInCollection": _Endpoint(
        frozenset({"GET"}),
        ("Collection", "fromDate", "format"),
        ("Collection", "fromDate"),
        _App.new_patients_in_collection,
    ),
    "getPatientStudy": _Endpoint(
        frozenset({"GET"}),
        ("Collection", "PatientID", "StudyInstanceUID", "format"),
        (),
        _App.get_patient_study,
    ),
    "NewStudiesInPatientCollection": _Endpoint(
        frozenset({"GET"}),
        ("Collection", "fromDate", "PatientID", "format"),
        ("Collection", "fromDate"),
        _App.new_studies_in_patient_collection,
    ),
    "getSeries": _Endpoint(
        frozenset({"GET"}),
        (
            "Collection",
            "PatientID",
            "StudyInstanceUID",
            "Modality",
            "BodyPartExamined",
            "ManufacturerModelName",
            "Manufacturer",
            "SeriesInstanceUID",
            "format",
        ),
        (),
        _App.get_series,
    ),
    "getUpdatedSeries": _Endpoint(
        frozenset({"GET"}), ("fromDate", "format"), (), _App.get_updated_series
    ),
    "getSeriesSize": _Endpoint(
        frozenset({"GET"}),
        ("SeriesInstanceUID", "format"),
        ("SeriesInstanceUID",),
        _App.get_series_size,
    ),
    "getSOPInstanceUIDs": _Endpoint(
        frozenset({"GET"}),
        ("SeriesInstanceUID", "format"),
        ("SeriesInstanceUID",),
        _App.get_sop_instance_uids,
    ),
    "getSeriesMetadata": _Endpoint(
        frozenset({"POST"}),
        ("list", "format"),
        ("list",),
        _App.get_series_metadata,
        default_format="csv-download",
    ),
    "getImage": _Endpoint(
        frozenset({"GET"}),
        ("SeriesInstanceUID", "NewFileNames", "IncludeMD5"),
        ("SeriesInstanceUID",),
        None,
    ),
    "getImageWithMD5Hash": _Endpoint(
        frozenset({"GET"}), ("SeriesInstanceUID",), ("SeriesInstanceUID",), None
    ),
    "getSingleImage": _Endpoint(
        frozenset({"GET"}),
        ("SeriesInstanceUID", "SOPInstanceUID"),
        ("SeriesInstanceUID", "SOPInstanceUID"),
        None,
    ),
    "getMD5HashForImage": _Endpoint(
        frozenset({"GET"}), ("SOPInstanceUID",), ("SOPInstanceUID",), None
    ),
}


def _encode_json(rows: list[dict[str, Any]]) -> bytes:
    # Jettison escapes "/" by default: real URIs arrive as "https:\/\/...".
    return json.dumps(rows, separators=(",", ":")).replace("/", "\\/").encode("utf-8")


def _encode_csv(rows: list[dict[str, Any]]) -> bytes:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return buffer.getvalue().encode("utf-8")


def _encode_html(rows: list[dict[str, Any]]) -> bytes:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(row.get(c, '')))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>".encode()


def _encode_xml(rows: list[dict[str, Any]]) -> bytes:
    from xml.sax.saxutils import escape

    items = "".join(
        "<row>" + "".join(f"<{k}>{escape(str(v))}</{k}>" for k, v in row.items()) + "</row>"
        for row in rows
    )
    return f'<?xml version="1.0" encoding="UTF-8"?><rows>{items}</rows>'.encode()


_Pending = tuple[str, str, dict[str, str], "Fault | None", float]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx"
    sys_version = ""
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 30
    #: The request being answered, until its status line is sent (then it is logged).
    _pending: _Pending | None = None

    @property
    def app(self) -> _App:
        return self.server.app  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- responses -------------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
        reset_after_bytes: int | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if reset_after_bytes is not None:
            self.wfile.write(body[: min(reset_after_bytes, max(len(body) - 1, 0))])
            raise _ResetConnection
        self.wfile.write(body)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        self.close_connection = True

    # -- dispatch --------------------------------------------------------------------------

    def send_response(self, code: int, message: str | None = None) -> None:
        super().send_response(code, message)
        # Log before any byte of the answer leaves: a client that has its answer can rely on
        # the request being in the log.
        self._log_request(code)

    def _log_request(self, status: int) -> None:
        pending = getattr(self, "_pending", None)
        if pending is None:
            return
        self._pending = None
        method, endpoint, params, fault, started = pending
        with self.app.lock:
            self.app.log.append(
                RequestRecord(
                    method=method,
                    endpoint=endpoint,
                    params=dict(params),
                    status=status,
                    fault=fault.kind.value if fault else None,
                    started_at=started,
                    seconds=time.monotonic() - started,
                )
            )

    def _dispatch(self, method: str) -> None:
        started = time.monotonic()
        parsed = urllib.parse.urlsplit(self.path)
        params: dict[str, str] = {}
        for key, value in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True):
            params.setdefault(key, value)
        self._pending = (
            method,
            parsed.path,
            params,
            None,
            started,
        )
        try:
            body = self._read_body()
            if body is None:
                return
            if parsed.path.startswith(CONTROL_PREFIX) and not self.app.control:
                self._send(404, b"Not Found", "text/plain")
                return
            if parsed.path.startswith(CONTROL_PREFIX):
                self._control(method, parsed.path[len(CONTROL_PREFIX) :], body)
                return
            if not parsed.path.startswith(API_PREFIX):
                self._send(404, b"Not Found", "text/plain")
                return
            endpoint = parsed.path[len(API_PREFIX) :]
            spec = _ENDPOINTS.get(endpoint)
            if spec is None:
                self._send(404, b"Not Found", "text/plain")
                return
            if method not in spec.methods:
                self._send(405, b"Method Not Allowed", "text/plain")
                return
            if method == "POST" and body:
                form = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
                for key, value in form:
                    params.setdefault(key, value)
            fault = self.app.faults.take(endpoint, params.get("SeriesInstanceUID"))
            self._pending = (method, endpoint, params, fault, started)
            self._answer(endpoint, spec, params, fault)
        except _ResetConnection:
            self._reset()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            # Only requests that never got a status line are logged here, with status 0.
            self._log_request(0)

    def _read_body(self) -> bytes | None:
        """The request body, at most :data:`MAX_BODY_BYTES`; None when the request was
        refused (a Content-Length that is no number, or too large: never read)."""
        text = self.headers.get("Content-Length") or "0"
        try:
            length = int(text)
            if length < 0:
                raise ValueError(text)
        except ValueError:
            self.close_connection = True
            self._send(400, b"Bad Request: invalid Content-Length", "text/plain")
            return None
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(413, b"Payload Too Large", "text/plain")
            return None
        return self.rfile.read(length) if length else b""

    def _answer(
        self, endpoint: str, spec: _Endpoint, params: dict[str, str], fault: Fault | None
    ) -> int:
        reset_after: int | None = None
        if fault is not None:
            kind = fault.kind
            if kind is FaultKind.SLOW:
                time.sleep(fault.delay_seconds)
            elif kind is FaultKind.HTTP_500:
                self._send(500, _NGINX_500, "text/plain")
                return 500
            elif kind in (FaultKind.HTTP_502, FaultKind.HTTP_503, FaultKind.HTTP_504):
                status = int(kind.value.split("_")[1])
                reason = {
                    502: "Bad Gateway",
                    503: "Service Temporarily Unavailable",
                    504: "Gateway Time-out",
                }[status]
                self._send(status, _nginx_page(status, reason), "text/html")
                return status
            elif kind is FaultKind.HTTP_429:
                headers = {}
                if fault.retry_after_seconds is not None:
                    headers["Retry-After"] = str(round(fault.retry_after_seconds))
                self._send(429, _nginx_page(429, "Too Many Requests"), "text/html", headers)
                return 429
            elif kind is FaultKind.HTML_200:
                self._send(200, _HTML_200_PAGE, "text/html;charset=UTF-8")
                return 200
            elif kind is FaultKind.EMPTY_200:
                self._send(200, b"", "application/json")
                return 200
            elif kind is FaultKind.RESET:
                reset_after = fault.reset_after_bytes

        try:
            allowed = set(spec.allowed)
            if endpoint == "getImage" and not self.app.get_image_accepts_md5:
                allowed.discard("IncludeMD5")
            for name in params:
                if name not in allowed:
                    raise _BadRequest(
                        f"Invalid query parameter: '{name}'. Allowed parameters are: "
                        f"[{', '.join(sorted(allowed))}]"
                    )
            for name in spec.required:
                if not params.get(name):
                    raise _BadRequest(f"A parameter, {name} is required for this API call.")
        except _BadRequest as err:
            self._send(400, str(err).encode("utf-8"), "text/plain", reset_after_bytes=reset_after)
            return 400

        if spec.handler is None:
            return self._binary(endpoint, params, fault, reset_after)
        fmt = (params.get("format") or spec.default_format).lower()
        with self.app.lock:
            rows = spec.handler(self.app, params)
            if self.app.shuffle:
                # NBIA has no ORDER BY and builds JSON objects from HashMaps.
                self.app.rng.shuffle(rows)
                if fmt not in _TABLE_FORMATS:
                    rows = [dict(self.app.rng.sample(list(row.items()), len(row))) for row in rows]
        return self._rows(rows, fmt, reset_after)

    def _rows(self, rows: list[dict[str, Any]], fmt: str, reset_after: int | None) -> int:
        if not rows:
            self._send(200, b"", "application/json", reset_after_bytes=None)
            return 200
        headers: dict[str, str] = {}
        if fmt in ("csv", "csvquoted", "csv-download"):
            body, content_type = _encode_csv(rows), "text/csv"
            if fmt == "csv-download":
                headers["Content-Disposition"] = 'attachment; filename="SeriesMetaData.csv"'
        elif fmt == "html":
            body, content_type = _encode_html(rows), "text/html"
        elif fmt == "xml":
            body, content_type = _encode_xml(rows), "application/xml"
        else:
            body, content_type = _encode_json(rows), "application/json"
        self._send(200, body, content_type, headers, reset_after_bytes=reset_after)
        return 200

    def _access_denied(self, uid: str) -> int:
        message = (
            "The user has not been granted the access to image with given SeriesInstanceUID,"
            f"{uid}. Please contact System Admin to resolve this issue."
        )
        self._send(400, message.encode("utf-8"), "application/json")
        return 400

    def _binary(
        self,
        endpoint: str,
        params: Mapping[str, str],
        fault: Fault | None,
        reset_after: int | None,
    ) -> int:
        catalogue = self.app.catalogue
        if endpoint == "getMD5HashForImage":
            found = catalogue.find_instance(params["SOPInstanceUID"])
            if found is None:
                self._send(200, b"", "text/plain")
                return 200
            self._send(200, found[1].md5.encode(), "text/plain", reset_after_bytes=reset_after)
            return 200
        uid = params["SeriesInstanceUID"]
        series = catalogue.series.get(uid)
        if series is None:
            return self._access_denied(uid)
        if endpoint == "getSingleImage":
            wanted = params["SOPInstanceUID"]
            instance = next(
                (item for item in series.instances if item.sop_instance_uid == wanted), None
            )
            if instance is None:
                return self._access_denied(uid)
            self._send(
                200,
                instance.path.read_bytes(),
                "application/dicom",
                {"Content-Disposition": f"attachment; filename={wanted}.dcm"},
                reset_after_bytes=reset_after,
            )
            return 200
        entries, include_md5 = self.app.archive_entries(series, endpoint, params)
        self._stream_zip(series, entries, include_md5, fault, reset_after)
        return 200

    def _stream_zip(
        self,
        series: Series,
        entries: list[tuple[str, bytes | Path]],
        include_md5: bool,
        fault: Fault | None,
        reset_after: int | None,
    ) -> None:
        kind = fault.kind if fault is not None else None
        md5_by_path = {item.path: item.md5 for item in series.instances}
        dicom = [(name, source) for name, source in entries if name != "LICENSE"]
        if kind is FaultKind.SHORT_ZIP:
            assert fault is not None
            keep = max(0, len(dicom) - fault.drop_files)
            dropped = {name for name, _ in dicom[keep:]}
            entries = [(name, source) for name, source in entries if name not in dropped]
            include_md5 = False
        md5_rows = [
            (name, md5_by_path[source])
            for name, source in entries
            if isinstance(source, Path) and source in md5_by_path
        ]
        if kind is FaultKind.WRONG_MD5 and md5_rows:
            name, digest = md5_rows[0]
            md5_rows[0] = (name, digest[::-1] if digest[::-1] != digest else "0" * 32)
        extra: list[tuple[zipfile.ZipInfo, bytes]] = []
        if kind is FaultKind.ZIP_SLIP and dicom:
            assert fault is not None
            source = dicom[0][1]
            data = source.read_bytes() if isinstance(source, Path) else source
            info = zipfile.ZipInfo(fault.entry_name)
            info.compress_type = zipfile.ZIP_DEFLATED
            extra.append((info, data))
            digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
            md5_rows.append((fault.entry_name, digest))
        if kind is FaultKind.ZIP_SYMLINK:
            info = zipfile.ZipInfo("00000000.dcm")
            info.external_attr = 0o120777 << 16
            extra.append((info, b"/etc/passwd"))
        # NBIA writes md5hashes.csv rows in HashMap order, not archive order.
        self.app.rng.shuffle(md5_rows)

        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header(
            "Content-Disposition", f'attachment; filename="{series.series_instance_uid}.zip"'
        )
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        writer = _ChunkedWriter(self.wfile, reset_after)
        with zipfile.ZipFile(
            writer,
            mode="w",
            compression=zipfile.ZIP_DEFLATED,
            compresslevel=self.app.compress_level,
        ) as archive:
            for name, source in entries:
                data = source.read_bytes() if isinstance(source, Path) else source
                archive.writestr(name, data)
            for info, data in extra:
                archive.writestr(info, data)
            if include_md5:
                lines = ["Filename,MD5Hash"] + [f"{name},{digest}" for name, digest in md5_rows]
                archive.writestr("md5hashes.csv", "\n".join(lines) + "\n")
        writer.finish()

    # -- control ---------------------------------------------------------------------------

    def _control(self, method: str, action: str, body: bytes) -> int:
        app = self.app
        if action == "faults" and method == "GET":
            payload = [fault.to_json() for fault in app.faults.pending()]
        elif action == "faults" and method == "POST":
            try:
                fault = Fault.from_json(json.loads(body or b"{}"))
            except (ValueError, TypeError, KeyError) as err:
                self._send(400, f"bad fault: {err}".encode(), "text/plain")
                return 400
            app.faults.push(fault)
            payload = [fault.to_json()]
        elif action == "faults" and method == "DELETE":
            app.faults.clear()
            payload = []
        elif action == "reload" and method == "POST":
            with app.lock:
                app.catalogue = Catalogue.scan(app.catalogue.root, app.catalogue)
                count = len(app.catalogue.series)
            payload = [{"series": count}]
        else:
            self._send(404, b"Not Found", "text/plain")
            return 404
        self._send(200, json.dumps(payload).encode(), "application/json")
        return 200


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Do not wait for idle keep-alive connections when stopping.
    block_on_close = False
    allow_reuse_address = True
    app: _App


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class NbiaServer:
    """A running local NBIA server (see :func:`serve`).

    Nothing is open by default: it binds loopback addresses only unless ``allow_remote``, and
    the control endpoints (``/braincls-control/faults`` and ``reload``, which let a client
    queue zip-slip or symlink entries) answer only with ``control=True`` (tests turn them
    on).
    """

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: FaultPlan | None = None,
        *,
        shuffle: bool = True,
        seed: int | None = None,
        get_image_accepts_md5: bool = True,
        compress_level: int = 1,
        control: bool = False,
        allow_remote: bool = False,
    ) -> None:
        if not allow_remote and not is_loopback(host):
            raise ValueError(
                f"refusing to serve on {host}: the NBIA stand-in has no authentication; bind "
                "a loopback address (127.0.0.1, the default) or pass allow_remote=True "
                "(--allow-remote) on a network you trust"
            )
        self.root = Path(root)
        self.faults = faults if faults is not None else FaultPlan()
        self._app = _App(
            catalogue=Catalogue.scan(self.root),
            faults=self.faults,
            rng=random.Random(seed),
            shuffle=shuffle,
            get_image_accepts_md5=get_image_accepts_md5,
            compress_level=compress_level,
            control=control,
        )
        self._httpd = _Server((host, port), _Handler)
        self._httpd.app = self._app
        self.host = host
        self.port = int(self._httpd.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the v4 API, ending in ``/`` (what a client takes as ``base_url``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{API_PREFIX}"

    @property
    def catalogue(self) -> Catalogue:
        """The catalogue being served."""
        return self._app.catalogue

    def start(self) -> NbiaServer:
        """Serve in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.1},
                name=f"nbia-server-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted."""
        self._httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def reload(self) -> int:
        """Rescan the root (after adding or changing files); returns the number of series."""
        with self._app.lock:
            self._app.catalogue = Catalogue.scan(self.root, self._app.catalogue)
            return len(self._app.catalogue.series)

    def requests(self, endpoint: str | None = None) -> list[RequestRecord]:
        """Requests seen so far, optionally only those to ``endpoint``."""
        with self._app.lock:
            return [
                r
                for r in self._app.log
                if r.started_at >= self._app.log_floor
                and (endpoint is None or r.endpoint == endpoint)
            ]

    def clear_requests(self) -> None:
        """Forget the request log, including requests still being answered (a slow fault's
        request is logged when its answer ends)."""
        with self._app.lock:
            self._app.log.clear()
            self._app.log_floor = time.monotonic()

    def __enter__(self) -> NbiaServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(
    root: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: FaultPlan | None = None,
    **options: Any,
) -> NbiaServer:
    """Build the catalogue of ``root`` and start serving it in a background thread.

    ``port=0`` picks a free port (read ``.port`` / ``.url``). ``options``: ``shuffle`` (return
    rows in random order like NBIA, default True), ``seed``, ``get_image_accepts_md5`` (False
    emulates NBIA before 2025-11, which rejects ``IncludeMD5``), ``compress_level`` (DEFLATE
    level, default 1), ``control`` (answer the fault and reload endpoints, default False),
    ``allow_remote`` (bind a non-loopback ``host``, default False). Use as a context manager
    or call ``.stop()``.
    """
    return NbiaServer(Path(root), host, port, faults, **options).start()


def main(argv: Sequence[str] | None = None) -> int:
    """``braincls nbia-serve --root DIR [--host 127.0.0.1] [--port N] [--control]
    [--allow-remote]``: serve until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="braincls nbia-serve", description="Serve DICOM folders as a local NBIA v4 API."
    )
    parser.add_argument("--root", type=Path, required=True, help="folder of collection folders")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument(
        "--control",
        action="store_true",
        help="answer /braincls-control/ (fault injection, reload): for tests, never exposed",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (no authentication: only on a network you trust)",
    )
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        server = NbiaServer(
            args.root, args.host, args.port, control=args.control, allow_remote=args.allow_remote
        )
    except ValueError as error:
        parser.error(str(error))
    catalogue = server.catalogue
    print(
        f"NBIA v4 API at {server.url} ({len(catalogue.collections)} collections, "
        f"{len(catalogue.series)} series); Ctrl-C stops",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
