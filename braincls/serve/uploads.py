"""What a client uploads, checked before anything reads it: its kind from its first bytes (never
its name), and ZIP archives unpacked only when every member is safe.

Everything is written under the request's own temporary folder, under names made here (the
member's index and a clean suffix), so no name a client sends can reach the file system.
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

#: Kinds of upload.
IMAGE, DICOM, VOLUME, ZIP = "image", "dicom", "volume", "zip"

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")
_GZIP = b"\x1f\x8b"
_NIFTI_MAGIC = (b"n+1\x00", b"ni1\x00")
_CLEAN_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")


@dataclass(frozen=True)
class Rejected(Exception):
    """An upload the service will not read: the HTTP status, a code naming the reason and a
    sentence for the person who sent it."""

    status: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True)
class ZipLimits:
    """How much a ZIP may hold."""

    max_members: int
    max_total_bytes: int
    max_compression_ratio: float


def sniff(head: bytes, filename: str) -> str:
    """The upload's kind from its first bytes (at least 352): PNG, JPEG, ZIP, DICOM (Part 10:
    ``DICM`` at offset 128) or NIfTI-1 (magic at offset 344, or gzip named ``.nii.gz``).
    Anything else is :class:`Rejected` (415)."""
    if not head:
        raise Rejected(400, "empty_file", "the uploaded file is empty")
    if head.startswith(_PNG) or head.startswith(_JPEG):
        return IMAGE
    if head.startswith(_ZIP):
        return ZIP
    if head[128:132] == b"DICM":
        return DICOM
    if head[344:348] in _NIFTI_MAGIC:
        return VOLUME
    if head.startswith(_GZIP) and filename.lower().endswith(".nii.gz"):
        return VOLUME
    raise Rejected(
        415,
        "unsupported_type",
        "not a PNG, JPEG, DICOM instance (Part 10 file), NIfTI volume or ZIP of those",
    )


def _member_name(info: zipfile.ZipInfo) -> PurePosixPath:
    """The member's path, refused when it could leave the folder it is unpacked into."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    first = path.parts[0] if path.parts else ""
    if path.is_absolute() or ".." in path.parts or ":" in first or "\x00" in name:
        raise Rejected(
            400,
            "unsafe_zip",
            "the ZIP holds a member whose path leaves the archive (absolute, '..' or a drive)",
        )
    return path


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _clean_suffix(name: str) -> str:
    lower = name.lower()
    if lower.endswith(".nii.gz"):
        return ".nii.gz"
    suffix = PurePosixPath(lower).suffix
    return suffix if _CLEAN_SUFFIX.fullmatch(suffix) else ""


def extract_zip(archive: Path, dest: Path, limits: ZipLimits) -> dict[str, str]:
    """Unpack the safe members of ``archive`` into ``dest`` as ``00000.<suffix>``, ...; return
    each written path's member name.

    Refused (:class:`Rejected`) before anything is written: a damaged archive, encrypted
    members, symbolic links, paths that leave the archive (zip-slip), more than
    ``max_members`` members, more than ``max_total_bytes`` unpacked or a member compressed more
    than ``max_compression_ratio`` times (a ZIP bomb). The sizes are counted again while
    unpacking, since an archive can lie about them. Folders, hidden files and macOS resource
    forks are skipped.
    """
    try:
        with zipfile.ZipFile(archive) as handle:
            infos = handle.infolist()
            if len(infos) > limits.max_members:
                raise Rejected(
                    413,
                    "too_many_files",
                    f"the ZIP holds {len(infos)} members; at most {limits.max_members} are read",
                )
            members: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
            declared = 0
            for info in infos:
                path = _member_name(info)
                if _is_symlink(info):
                    raise Rejected(400, "unsafe_zip", "the ZIP holds a symbolic link")
                if info.flag_bits & 0x1:
                    raise Rejected(400, "encrypted_zip", "the ZIP holds an encrypted member")
                if info.is_dir() or any(
                    part.startswith(".") or part == "__MACOSX" for part in path.parts
                ):
                    continue
                declared += info.file_size
                ratio = info.file_size / max(info.compress_size, 1)
                if info.file_size > 1 << 20 and ratio > limits.max_compression_ratio:
                    raise Rejected(
                        413,
                        "zip_bomb",
                        f"a ZIP member is compressed {ratio:.0f} times; at most "
                        f"{limits.max_compression_ratio:g} is accepted",
                    )
                members.append((info, path))
            if declared > limits.max_total_bytes:
                raise Rejected(
                    413,
                    "zip_too_large",
                    f"the ZIP unpacks to {declared} bytes; at most {limits.max_total_bytes}",
                )
            dest.mkdir(parents=True, exist_ok=True)
            written: dict[str, str] = {}
            total = 0
            for index, (info, path) in enumerate(members):
                target = dest / f"{index:05d}{_clean_suffix(path.name)}"
                with handle.open(info) as source, open(target, "wb") as out:
                    while chunk := source.read(1 << 20):
                        total += len(chunk)
                        if total > limits.max_total_bytes:
                            raise Rejected(
                                413,
                                "zip_too_large",
                                f"the ZIP unpacks to more than {limits.max_total_bytes} bytes",
                            )
                        out.write(chunk)
                written[str(target)] = path.as_posix()
            return written
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        EOFError,
        NotImplementedError,
    ) as error:
        shutil.rmtree(dest, ignore_errors=True)
        raise Rejected(400, "bad_zip", f"the ZIP cannot be read ({type(error).__name__})") from None
    except Rejected:
        shutil.rmtree(dest, ignore_errors=True)
        raise
