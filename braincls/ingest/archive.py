"""Verify an NBIA series ZIP and extract it, refusing anything unsafe or incomplete.

An NBIA ``getImage`` archive is flat: an optional ``LICENSE``, the DICOM files (``00000001.dcm``
or ``1-001.dcm``) and, last, ``md5hashes.csv`` (``Filename,MD5Hash`` and one row per file). TCIA
can stream a well-formed but short archive after a server-side error, so a ZIP that opens is not
yet a complete series: every check below must pass before anything is kept.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from braincls.ingest.errors import (
    ChecksumMismatchError,
    CorruptArchiveError,
    IncompleteSeriesError,
    SizeMismatchError,
    UnsafeArchiveError,
)

MD5_MANIFEST_NAME = "md5hashes.csv"
LICENSE_NAME = "LICENSE"
_CHUNK_BYTES = 1 << 20
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")
_MD5_HEX = re.compile(r"^[0-9a-fA-F]{32}$")


@dataclass(frozen=True)
class ExtractedFile:
    """One DICOM file kept from an archive: its name in the series folder, MD5 and size."""

    name: str
    md5: str
    size_bytes: int


@dataclass(frozen=True)
class VerifiedArchive:
    """What :func:`extract_verified` kept: the DICOM files (sorted by name) and the licence."""

    files: tuple[ExtractedFile, ...]
    license_present: bool

    @property
    def dicom_bytes(self) -> int:
        """Sum of the DICOM files' sizes (comparable with the listing's ``FileSize``)."""
        return sum(item.size_bytes for item in self.files)


def check_entry(info: zipfile.ZipInfo, label: str) -> None:
    """Refuse an entry that could write outside the series folder.

    NBIA archives are flat, so anything but a plain file name is refused: absolute paths, drive
    letters, ``..``, nested folders, symbolic links (Unix mode in ``external_attr``), hidden or
    empty names.
    """
    name = info.filename
    mode = info.external_attr >> 16
    problem: str | None = None
    if stat.S_ISLNK(mode):
        problem = "is a symbolic link"
    elif name.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(name):
        problem = "has an absolute path"
    elif ".." in re.split(r"[/\\]", name):
        problem = "climbs out of the folder with '..'"
    elif info.is_dir() or "/" in name or "\\" in name:
        problem = "is a nested path (NBIA archives are flat)"
    elif name in ("", ".") or name.startswith(".") or "\x00" in name:
        problem = "has an empty or hidden name"
    if problem is not None:
        raise UnsafeArchiveError(f"{label}: archive entry {name!r} {problem}; archive refused")


def _read_md5_manifest(archive: zipfile.ZipFile, label: str) -> dict[str, str]:
    try:
        text = archive.read(MD5_MANIFEST_NAME).decode("utf-8-sig")
    except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError) as err:
        raise CorruptArchiveError(f"{label}: {MD5_MANIFEST_NAME} unreadable ({err})") from err
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [cell.strip().lower() for cell in rows[0]] != ["filename", "md5hash"]:
        raise CorruptArchiveError(
            f"{label}: {MD5_MANIFEST_NAME} lacks the header 'Filename,MD5Hash'"
        )
    hashes: dict[str, str] = {}
    for row in rows[1:]:
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2 or not _MD5_HEX.match(row[1].strip()):
            raise CorruptArchiveError(f"{label}: {MD5_MANIFEST_NAME} has a bad row {row!r}")
        hashes[row[0].strip()] = row[1].strip().lower()
    return hashes


def _names(names: list[str] | set[str], limit: int = 5) -> str:
    ordered = sorted(names)
    shown = ", ".join(ordered[:limit])
    return shown + (f" and {len(ordered) - limit} more" if len(ordered) > limit else "")


def extract_verified(
    zip_path: Path,
    dest_dir: Path,
    *,
    label: str,
    expected_count: int | None,
    expected_bytes: int | None,
) -> VerifiedArchive:
    """Check ``zip_path`` against the listing and extract it into the empty ``dest_dir``.

    Checks, in order: the ZIP opens; every entry name is safe (:func:`check_entry`);
    ``md5hashes.csv`` is present; its rows and the DICOM entries name the same files; the file
    count equals ``expected_count`` (``ImageCount``); the declared sizes add up to
    ``expected_bytes`` (``FileSize``, also a guard against ZIP bombs); then each file is streamed
    out while its MD5 and size are computed, and both are compared. ``label`` names the series
    in error messages. On any failure an exception from :mod:`braincls.ingest.errors` is raised and
    the caller discards ``dest_dir``.
    """
    received_bytes = zip_path.stat().st_size
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CorruptArchiveError(
            f"{label}: archive unreadable ({err}); {received_bytes} bytes received"
        ) from err
    with archive:
        infos = archive.infolist()
        seen: set[str] = set()
        for info in infos:
            check_entry(info, label)
            if info.filename in seen:
                raise UnsafeArchiveError(
                    f"{label}: archive entry {info.filename!r} appears twice; archive refused"
                )
            seen.add(info.filename)
        dicom_infos = [
            info for info in infos if info.filename not in (LICENSE_NAME, MD5_MANIFEST_NAME)
        ]
        dicom_names = {info.filename for info in dicom_infos}
        expected_text = f" of {expected_count}" if expected_count is not None else ""
        if MD5_MANIFEST_NAME not in seen:
            raise IncompleteSeriesError(
                f"{label}: {len(dicom_infos)}{expected_text} files received, "
                f"{MD5_MANIFEST_NAME} missing"
            )
        hashes = _read_md5_manifest(archive, label)
        missing = set(hashes) - dicom_names
        if missing:
            raise IncompleteSeriesError(
                f"{label}: {len(dicom_infos)}{expected_text} files received; "
                f"{MD5_MANIFEST_NAME} lists {len(missing)} the archive lacks: {_names(missing)}"
            )
        unlisted = dicom_names - set(hashes)
        if unlisted:
            raise CorruptArchiveError(
                f"{label}: {len(unlisted)} files have no {MD5_MANIFEST_NAME} row: "
                f"{_names(unlisted)}"
            )
        if expected_count is not None and len(dicom_infos) != expected_count:
            raise IncompleteSeriesError(
                f"{label}: {len(dicom_infos)} files received, the listing's ImageCount is "
                f"{expected_count}"
            )
        declared_bytes = sum(info.file_size for info in dicom_infos)
        if expected_bytes is not None and declared_bytes != expected_bytes:
            raise SizeMismatchError(
                f"{label}: the archive declares {declared_bytes} DICOM bytes, the listing's "
                f"FileSize is {expected_bytes}"
            )

        dest_dir.mkdir(parents=True, exist_ok=True)
        kept: list[ExtractedFile] = []
        license_present = False
        for info in infos:
            if info.filename == MD5_MANIFEST_NAME:
                continue
            digest = hashlib.md5(usedforsecurity=False)
            size_bytes = 0
            try:
                with archive.open(info) as source, open(dest_dir / info.filename, "xb") as sink:
                    while chunk := source.read(_CHUNK_BYTES):
                        digest.update(chunk)
                        size_bytes += len(chunk)
                        sink.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError) as err:
                raise CorruptArchiveError(
                    f"{label}: archive entry {info.filename} is corrupt ({err})"
                ) from err
            if info.filename == LICENSE_NAME:
                license_present = True
                continue
            md5 = digest.hexdigest()
            if md5 != hashes[info.filename]:
                raise ChecksumMismatchError(
                    f"{label}: MD5 of {info.filename} is {md5}, {MD5_MANIFEST_NAME} says "
                    f"{hashes[info.filename]}"
                )
            kept.append(ExtractedFile(name=info.filename, md5=md5, size_bytes=size_bytes))
    result = VerifiedArchive(
        files=tuple(sorted(kept, key=lambda item: item.name)), license_present=license_present
    )
    if expected_bytes is not None and result.dicom_bytes != expected_bytes:
        raise SizeMismatchError(
            f"{label}: {result.dicom_bytes} DICOM bytes received, the listing's FileSize is "
            f"{expected_bytes}"
        )
    return result
