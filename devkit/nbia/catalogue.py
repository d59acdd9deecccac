"""The catalogue the local NBIA server serves, built from DICOM folders on disk.

Layout of the served root::

    <root>/<folder>/catalogue.json      optional, see below
    <root>/<folder>/**/<any file>       DICOM files at any depth; other files are ignored

Each top-level folder is one collection. Patients, studies and series come from the headers
(read with ``stop_before_pixels``): (0010,0020) PatientID, (0020,000D) StudyInstanceUID,
(0020,000E) SeriesInstanceUID, (0008,0018) SOPInstanceUID, (0020,0013) InstanceNumber,
(0020,0012) AcquisitionNumber, (0008,0060) Modality and the descriptive attributes NBIA lists.
MD5 and sizes are computed from the bytes on disk when the catalogue is built; like NBIA's stored
``md5Digest`` they are not recomputed at download time.

``catalogue.json`` (all keys optional)::

    {
      "Collection": "Demo-Brain-MR",          # name served; default: the folder name
      "DateReleased": "2024-05-01",           # ISO or MM-DD-YYYY; default: newest file's mtime
      "SeriesDateReleased": {"<SeriesInstanceUID>": "2024-06-01"},
      "Public": true,                         # false hides it from getUpdatedSeries
      "LicenseName": "...", "LicenseURI": "...", "DataDescriptionURI": "...", "Site": "..."
    }
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

logger = logging.getLogger(__name__)

CATALOGUE_FILE = "catalogue.json"
DEFAULT_LICENSE_NAME = "Creative Commons Attribution 4.0 International License"
DEFAULT_LICENSE_URI = "https://creativecommons.org/licenses/by/4.0/"
_IGNORED_NAMES = frozenset({CATALOGUE_FILE, "LICENSE", "md5hashes.csv", "labels.csv"})


@dataclass(frozen=True)
class Instance:
    """One DICOM file of a series."""

    path: Path
    sop_instance_uid: str
    instance_number: int | None
    acquisition_number: int | None
    size_bytes: int
    md5: str
    modified_date: dt.date


@dataclass(frozen=True)
class CollectionInfo:
    """A collection: its served name, folder and the catalogue file's fields."""

    name: str
    folder: Path
    public: bool = True
    date_released: dt.date | None = None
    series_date_released: Mapping[str, dt.date] = field(default_factory=dict)
    license_name: str = DEFAULT_LICENSE_NAME
    license_uri: str = DEFAULT_LICENSE_URI
    data_description_uri: str | None = None
    site: str | None = None


@dataclass(frozen=True)
class Series:
    """One series with the header attributes NBIA lists and its instances."""

    collection: CollectionInfo
    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    attributes: Mapping[str, Any]
    instances: tuple[Instance, ...]
    date_released: dt.date

    @property
    def image_count(self) -> int:
        """``ImageCount``: number of DICOM files."""
        return len(self.instances)

    @property
    def file_size_bytes(self) -> int:
        """``FileSize``: sum of the DICOM files' bytes."""
        return sum(item.size_bytes for item in self.instances)

    @property
    def max_submission_date(self) -> dt.date:
        """``MaxSubmissionTimestamp``: newest file modification date."""
        return max(item.modified_date for item in self.instances)

    def get(self, key: str) -> Any:
        """Attribute ``key`` as NBIA names it (``None`` when the header lacks it)."""
        return self.attributes.get(key)


def parse_catalogue_date(value: object, where: str) -> dt.date:
    """``YYYY-MM-DD`` or ``MM-DD-YYYY``; raise ``ValueError`` naming ``where`` otherwise."""
    text = str(value).strip()
    for pattern in ("%Y-%m-%d", "%m-%d-%Y"):
        try:
            return dt.datetime.strptime(text, pattern).date()
        except ValueError:
            continue
    raise ValueError(f"{where}: date {text!r} is neither YYYY-MM-DD nor MM-DD-YYYY")


def _load_collection_info(folder: Path) -> CollectionInfo:
    path = folder / CATALOGUE_FILE
    data: dict[str, Any] = {}
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
    released = data.get("DateReleased")
    series_dates = {
        str(uid): parse_catalogue_date(value, f"{path} SeriesDateReleased[{uid}]")
        for uid, value in dict(data.get("SeriesDateReleased") or {}).items()
    }
    return CollectionInfo(
        name=str(data.get("Collection") or folder.name),
        folder=folder,
        public=bool(data.get("Public", True)),
        date_released=parse_catalogue_date(released, f"{path} DateReleased") if released else None,
        series_date_released=series_dates,
        license_name=str(data.get("LicenseName") or DEFAULT_LICENSE_NAME),
        license_uri=str(data.get("LicenseURI") or DEFAULT_LICENSE_URI),
        data_description_uri=data.get("DataDescriptionURI"),
        site=data.get("Site"),
    )


def _text(dataset: pydicom.Dataset, keyword: str) -> str | None:
    value = dataset.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _integer(dataset: pydicom.Dataset, keyword: str) -> int | None:
    value = dataset.get(keyword)
    if value is None or str(value).strip() == "":
        return None
    try:
        return int(float(str(value)))
    except ValueError:
        return None


def _dicom_date(dataset: pydicom.Dataset, keyword: str) -> dt.date | None:
    text = _text(dataset, keyword)
    if text is None:
        return None
    try:
        return dt.datetime.strptime(text[:8], "%Y%m%d").date()
    except ValueError:
        return None


#: Series-level attributes taken from the first instance: NBIA name -> DICOM keyword.
_SERIES_TEXT = {
    "Modality": "Modality",
    "ProtocolName": "ProtocolName",
    "SeriesDescription": "SeriesDescription",
    "BodyPartExamined": "BodyPartExamined",
    "Manufacturer": "Manufacturer",
    "ManufacturerModelName": "ManufacturerModelName",
    "SoftwareVersions": "SoftwareVersions",
    "PatientName": "PatientName",
    "PatientSex": "PatientSex",
    "PatientAge": "PatientAge",
    "EthnicGroup": "EthnicGroup",
    "StudyDescription": "StudyDescription",
    "StudyID": "StudyID",
    "AdmittingDiagnosesDescription": "AdmittingDiagnosesDescription",
}


@dataclass(frozen=True)
class _FileInfo:
    """What one file contributes; cached across rescans by (path, size, mtime)."""

    series_instance_uid: str
    study_instance_uid: str
    patient_id: str
    attributes: Mapping[str, Any]
    instance: Instance


def _read_file(path: Path) -> _FileInfo | None:
    data = path.read_bytes()
    try:
        dataset = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, TypeError) as err:
        logger.debug("not served (not DICOM): %s (%s)", path, err)
        return None
    series_uid = _text(dataset, "SeriesInstanceUID")
    study_uid = _text(dataset, "StudyInstanceUID")
    sop_uid = _text(dataset, "SOPInstanceUID")
    if not (series_uid and study_uid and sop_uid):
        logger.warning("not served (lacks Study/Series/SOP Instance UID): %s", path)
        return None
    attributes: dict[str, Any] = {
        name: _text(dataset, keyword) for name, keyword in _SERIES_TEXT.items()
    }
    if attributes["Modality"]:
        attributes["Modality"] = attributes["Modality"].upper()
    attributes["SeriesNumber"] = _integer(dataset, "SeriesNumber")
    attributes["SeriesDate"] = _dicom_date(dataset, "SeriesDate")
    attributes["StudyDate"] = _dicom_date(dataset, "StudyDate")
    stat = path.stat()
    instance = Instance(
        path=path,
        sop_instance_uid=sop_uid,
        instance_number=_integer(dataset, "InstanceNumber"),
        acquisition_number=_integer(dataset, "AcquisitionNumber"),
        size_bytes=len(data),
        md5=hashlib.md5(data, usedforsecurity=False).hexdigest(),
        modified_date=dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC).date(),
    )
    return _FileInfo(
        series_instance_uid=series_uid,
        study_instance_uid=study_uid,
        patient_id=_text(dataset, "PatientID") or "",
        attributes=attributes,
        instance=instance,
    )


_CacheKey = tuple[str, int, int]


@dataclass
class Catalogue:
    """Collections and series of a served root. Build with :meth:`scan`."""

    root: Path
    collections: dict[str, CollectionInfo]
    series: dict[str, Series]
    _file_cache: dict[_CacheKey, _FileInfo | None] = field(default_factory=dict, repr=False)

    @classmethod
    def scan(cls, root: Path, previous: Catalogue | None = None) -> Catalogue:
        """Read every collection folder under ``root``. Files unchanged since ``previous``
        (same path, size and modification time) are not read again."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"NBIA root {root} is not a folder")
        old_cache = previous._file_cache if previous is not None else {}
        cache: dict[_CacheKey, _FileInfo | None] = {}
        collections: dict[str, CollectionInfo] = {}
        series: dict[str, Series] = {}
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for folder in folders:
            info = _load_collection_info(folder)
            if info.name.casefold() in {name.casefold() for name in collections}:
                raise ValueError(f"collection {info.name!r} is defined twice under {root}")
            collections[info.name] = info
            grouped: dict[str, list[_FileInfo]] = {}
            for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
                dirnames[:] = sorted(name for name in dirnames if not name.startswith("."))
                for filename in sorted(filenames):
                    if filename in _IGNORED_NAMES or filename.startswith("."):
                        continue
                    path = Path(dirpath) / filename
                    try:
                        stat = path.stat()
                    except OSError as err:
                        logger.warning("not served (unreadable): %s (%s)", path, err)
                        continue
                    key = (str(path), stat.st_size, stat.st_mtime_ns)
                    file_info = old_cache[key] if key in old_cache else _read_file(path)
                    cache[key] = file_info
                    if file_info is not None:
                        grouped.setdefault(file_info.series_instance_uid, []).append(file_info)
            for series_uid, files in grouped.items():
                if series_uid in series:
                    logger.warning(
                        "series %s appears in %s and %s; serving the first",
                        series_uid,
                        series[series_uid].collection.name,
                        info.name,
                    )
                    continue
                unique: dict[str, Instance] = {}
                for item in files:
                    unique.setdefault(item.instance.sop_instance_uid, item.instance)
                instances = tuple(unique.values())
                first = files[0]
                released = (
                    info.series_date_released.get(series_uid)
                    or info.date_released
                    or max(item.modified_date for item in instances)
                )
                series[series_uid] = Series(
                    collection=info,
                    series_instance_uid=series_uid,
                    study_instance_uid=first.study_instance_uid,
                    patient_id=first.patient_id,
                    attributes=first.attributes,
                    instances=instances,
                    date_released=released,
                )
        catalogue = cls(root=root, collections=collections, series=series)
        catalogue._file_cache = cache
        logger.info(
            "NBIA catalogue of %s: %d collections, %d series, %d instances",
            root,
            len(collections),
            len(series),
            sum(s.image_count for s in series.values()),
        )
        return catalogue

    def find_instance(self, sop_instance_uid: str) -> tuple[Series, Instance] | None:
        """The series and instance with ``sop_instance_uid`` (linear scan; tests only)."""
        for item in self.series.values():
            for instance in item.instances:
                if instance.sop_instance_uid == sop_instance_uid:
                    return item, instance
        return None
