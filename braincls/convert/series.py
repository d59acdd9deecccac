"""Converting one DICOM series into training PNGs, cached under a content key.

A *series unit* is the set of files that share a (0020,000E) Series Instance UID (a file
without one is a unit of its own). Its key is the SHA-256 of the sorted MD5 list of its files,
the conversion config hash and :data:`CONVERTER_VERSION`; :func:`convert_series` writes
``out_root/<key>/`` atomically:

- ``<SOPInstanceUID>.png`` (``<SOPInstanceUID>_<frame>.png`` for multi-frame objects): 8-bit,
  ``image_size_px`` square, tissue bright, no text chunks;
- ``native/<same name>`` when 16-bit native output is on;
- ``images.parquet`` and ``quarantine.parquet``: the series' part of the manifests, holding
  file positions (``source_index``) instead of paths, so that a moved download still hits
  the cache;
- ``series.json``: key, counts, converter version.

A second call with the same key does nothing. Labels are joined when the parts are assembled
(:mod:`braincls.convert.tree`), so a new labels table never reconverts pixels.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from braincls.common.atomic import atomic_dir, write_json, write_parquet
from braincls.common.hashing import stable_hash
from braincls.common.tables import empty_frame
from braincls.config import ConvertConfig
from braincls.convert import pixels
from braincls.convert.files import FileOutcome, FrameOutcome, convert_files
from braincls.convert.reading import Reason, is_ignored, md5_file

logger = logging.getLogger(__name__)

#: Version of the conversion code; part of every series key. Bump it whenever a change alters
#: an output file or table, so that caches written by older code are not reused.
CONVERTER_VERSION = "1.1.0"

SERIES_RECORD = "series.json"
IMAGES_PART = "images.parquet"
QUARANTINE_PART = "quarantine.parquet"
NATIVE_FOLDER = "native"

#: Columns of a series' images part (paths are resolved when parts are assembled).
IMAGE_PART_COLUMNS: dict[str, str] = {
    "sample_id": "string",
    "png_name": "string",
    "native_name": "string",
    "source_index": "int64",
    "dicom_md5": "string",
    "width": "int64",
    "height": "int64",
    "channels": "int64",
    "sha256": "string",
    "fingerprint": "string",
    "patient_id": "string",
    "group_id": "string",
    "sop_instance_uid": "string",
    "series_instance_uid": "string",
    "study_instance_uid": "string",
    "collection_header": "string",
    "modality": "string",
    "frame_index": "int64",
    "slice_position": "float64",
    "rows": "int64",
    "cols": "int64",
    "pixel_spacing_row_mm": "float64",
    "pixel_spacing_col_mm": "float64",
    "frame_of_reference_uid": "string",
    "image_position_patient": "string",
    "image_orientation_patient": "string",
    "window_source": "string",
    "foreground_fraction": "float64",
    "intensity_mean": "float64",
    "intensity_std": "float64",
    "intensity_min": "int64",
    "intensity_max": "int64",
}

#: Slice geometry of an image set aside after decoding (a background slice): segmentations of
#: co-registered series are compared slice by slice, background slices included.
GEOMETRY_COLUMNS: dict[str, str] = {
    "patient_id": "string",
    "frame_of_reference_uid": "string",
    "image_position_patient": "string",
    "image_orientation_patient": "string",
    "rows": "Int64",
    "cols": "Int64",
    "pixel_spacing_row_mm": "float64",
    "pixel_spacing_col_mm": "float64",
}

#: Columns of a series' quarantine part.
QUARANTINE_PART_COLUMNS: dict[str, str] = {
    "source_index": "int64",
    "reason": "string",
    "detail": "string",
    "sop_instance_uid": "string",
    "series_instance_uid": "string",
    "frame_index": "Int64",
    **GEOMETRY_COLUMNS,
}


class ConversionError(RuntimeError):
    """Conversion could not run at all (not a problem of one file: those are set aside)."""


# --------------------------------------------------------------------------------------------
# Series units and keys


@dataclass(frozen=True)
class SeriesUnit:
    """Files converted and cached together, with the MD5 of each.

    ``files`` and ``md5s`` are sorted by (MD5, path), so that a position in them
    (``source_index``) means the same content wherever the download lies.
    """

    root: Path
    files: tuple[Path, ...]
    md5s: tuple[str, ...]
    series_instance_uid: str | None = None

    @staticmethod
    def build(
        root: Path, files_md5: Iterable[tuple[Path, str]], series_instance_uid: str | None = None
    ) -> SeriesUnit:
        """A unit of ``files_md5`` (path, MD5) pairs, sorted into canonical order."""
        ordered = sorted(files_md5, key=lambda pair: (pair[1], str(pair[0])))
        return SeriesUnit(
            root=Path(root),
            files=tuple(Path(path) for path, _ in ordered),
            md5s=tuple(md5 for _, md5 in ordered),
            series_instance_uid=series_instance_uid,
        )

    @staticmethod
    def from_directory(directory: Path) -> SeriesUnit:
        """All files under ``directory`` (download side files and hidden files excepted)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ConversionError(f"{directory}: not a directory")
        paths = [
            path
            for path in sorted(directory.rglob("*"))
            if path.is_file()
            and not is_ignored(path)
            and not any(part.startswith(".") for part in path.relative_to(directory).parts)
        ]
        return SeriesUnit.build(directory, ((path, md5_file(path)) for path in paths))

    def relative_path(self, index: int) -> str:
        """POSIX path of file ``index`` relative to :attr:`root`."""
        path = self.files[index]
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def fallback_collection(self) -> str:
        """Collection name for files whose header has none: the top folder under the root."""
        if self.files:
            parts = Path(self.relative_path(0)).parts
            if len(parts) > 1:
                return parts[0]
        return self.root.name or "dicom"


def series_key(md5s: Sequence[str], config: ConvertConfig) -> str:
    """Cache key of a series: its sorted MD5 list, the config hash, the converter version."""
    return stable_hash(
        {
            "md5s": sorted(md5s),
            "config": config.config_hash(),
            "converter_version": CONVERTER_VERSION,
        }
    )


def is_complete(series_dir: Path) -> bool:
    """True when ``series_dir`` holds a finished conversion (written atomically, record last)."""
    return (Path(series_dir) / SERIES_RECORD).is_file()


@dataclass(frozen=True)
class SeriesResult:
    """What :func:`convert_series` did for one unit."""

    key: str
    output_dir: Path
    cached: bool
    images: int
    set_aside: int


# --------------------------------------------------------------------------------------------
# Finishing a series: duplicates, background slices, names, parts


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _final_name(sop_instance_uid: str, frame_index: int, multi_frame: bool) -> str:
    return f"{sop_instance_uid}_{frame_index:05d}.png" if multi_frame else f"{sop_instance_uid}.png"


def finish_series(
    unit: SeriesUnit,
    key: str,
    work_dir: Path,
    outcomes: Sequence[FileOutcome],
    config: ConvertConfig,
) -> tuple[int, int]:
    """Turn the outcomes of every file of ``unit`` into the series' folder content.

    Keeps the first file of each SOP Instance UID (by canonical file order), sets aside slices
    that are almost all background (relative to the series, see
    :class:`~braincls.config.ConvertConfig`), renames temporary PNGs to their final names and
    writes the two parts and ``series.json``. Returns (images, set aside).
    """
    images: list[dict[str, object]] = []
    quarantine: list[dict[str, object]] = []
    kept: list[tuple[FileOutcome, FrameOutcome]] = []
    first_file_of: dict[str, int] = {}
    for outcome in sorted(outcomes, key=lambda item: item.file_index):
        sop = outcome.header.get("sop_instance_uid")
        if outcome.reason is not None:
            quarantine.append(_quarantine_row(outcome, outcome.reason, outcome.detail, None))
            continue
        if sop is not None and sop in first_file_of:
            for frame in outcome.frames:
                _remove(work_dir / frame.temp_name)
                if frame.temp_native_name:
                    _remove(work_dir / frame.temp_native_name)
            # Name the first file by content: the cached part must not depend on paths.
            detail = (
                f"(0008,0018) SOP Instance UID already converted from the file with MD5 "
                f"{unit.md5s[first_file_of[sop]]}"
            )
            quarantine.append(_quarantine_row(outcome, Reason.DUPLICATE_INSTANCE, detail, None))
            continue
        if sop is not None:
            first_file_of[sop] = outcome.file_index
        kept.extend((outcome, frame) for frame in outcome.frames)

    fractions = _foreground_fractions([frame.thumbnail for _, frame in kept], config)
    native_dir = work_dir / NATIVE_FOLDER
    for (outcome, frame), fraction in zip(kept, fractions, strict=True):
        if config.skip_background_slices and fraction < config.min_foreground_fraction:
            _remove(work_dir / frame.temp_name)
            if frame.temp_native_name:
                _remove(work_dir / frame.temp_native_name)
            detail = (
                f"foreground {100 * fraction:.1f}% of the slice < "
                f"{100 * config.min_foreground_fraction:.1f}%"
            )
            quarantine.append(
                {
                    **_quarantine_row(outcome, Reason.BACKGROUND_SLICE, detail, frame.frame_index),
                    **_geometry(outcome, frame),
                }
            )
            continue
        images.append(_image_row(unit, outcome, frame, fraction, work_dir, native_dir))

    images_frame = _frame(images, IMAGE_PART_COLUMNS)
    quarantine_frame = _frame(quarantine, QUARANTINE_PART_COLUMNS)
    write_parquet(work_dir / IMAGES_PART, images_frame)
    write_parquet(work_dir / QUARANTINE_PART, quarantine_frame)
    write_json(
        work_dir / SERIES_RECORD,
        {
            "key": key,
            "converter_version": CONVERTER_VERSION,
            "config_hash": config.config_hash(),
            "files": len(unit.files),
            "images": len(images_frame),
            "set_aside": len(quarantine_frame),
        },
    )
    return len(images_frame), len(quarantine_frame)


def _foreground_fractions(
    thumbnails: Sequence[NDArray[np.float32]], config: ConvertConfig
) -> list[float]:
    """Foreground share of each thumbnail, against the series' own intensity range.

    A series without any intensity range (every thumbnail one constant) is all background when
    that constant is 0 or less and all foreground otherwise.
    """
    if not thumbnails:
        return []
    low = min(float(np.percentile(thumb, 1)) for thumb in thumbnails)
    high = max(float(np.percentile(thumb, 99)) for thumb in thumbnails)
    if not high > low:
        return [1.0 if high > 0 else 0.0 for _ in thumbnails]
    threshold = low + config.background_threshold_fraction * (high - low)
    return [pixels.foreground_fraction(thumb, threshold) for thumb in thumbnails]


def _quarantine_row(
    outcome: FileOutcome, reason: Reason, detail: str, frame_index: int | None
) -> dict[str, object]:
    return {
        "source_index": outcome.file_index,
        "reason": reason.value,
        "detail": detail,
        "sop_instance_uid": outcome.header.get("sop_instance_uid"),
        "series_instance_uid": outcome.header.get("series_instance_uid"),
        "frame_index": frame_index,
    }


def _geometry(outcome: FileOutcome, frame: FrameOutcome) -> dict[str, object]:
    spacing = frame.pixel_spacing_mm
    return {
        "patient_id": outcome.header.get("patient_id"),
        "frame_of_reference_uid": outcome.header.get("frame_of_reference_uid"),
        "image_position_patient": frame.image_position,
        "image_orientation_patient": frame.image_orientation,
        "rows": outcome.rows,
        "cols": outcome.cols,
        "pixel_spacing_row_mm": spacing[0] if spacing else math.nan,
        "pixel_spacing_col_mm": spacing[1] if spacing else math.nan,
    }


def _image_row(
    unit: SeriesUnit,
    outcome: FileOutcome,
    frame: FrameOutcome,
    fraction: float,
    work_dir: Path,
    native_dir: Path,
) -> dict[str, object]:
    header = outcome.header
    sop = str(header["sop_instance_uid"])
    multi_frame = len(outcome.frames) > 1 or frame.frame_index > 0
    name = _final_name(sop, frame.frame_index, multi_frame)
    os.replace(work_dir / frame.temp_name, work_dir / name)
    native_name = None
    if frame.temp_native_name:
        native_dir.mkdir(exist_ok=True)
        native_name = f"{NATIVE_FOLDER}/{name}"
        os.replace(work_dir / frame.temp_native_name, work_dir / native_name)
    patient = header.get("patient_id")
    group = patient or header.get("study_instance_uid") or header.get("series_instance_uid") or sop
    return {
        "sample_id": f"{sop}#{frame.frame_index}" if multi_frame else sop,
        "png_name": name,
        "native_name": native_name,
        "source_index": outcome.file_index,
        "dicom_md5": unit.md5s[outcome.file_index],
        "width": frame.width,
        "height": frame.height,
        "channels": 1,
        "sha256": frame.sha256,
        "fingerprint": frame.fingerprint,
        "patient_id": patient,
        "group_id": group,
        "sop_instance_uid": sop,
        "series_instance_uid": header.get("series_instance_uid"),
        "study_instance_uid": header.get("study_instance_uid"),
        "collection_header": header.get("collection_header"),
        "modality": header.get("modality"),
        "frame_index": frame.frame_index,
        "slice_position": frame.slice_position,
        **_geometry(outcome, frame),
        "window_source": frame.window_source,
        "foreground_fraction": fraction,
        "intensity_mean": frame.intensity_mean,
        "intensity_std": frame.intensity_std,
        "intensity_min": frame.intensity_min,
        "intensity_max": frame.intensity_max,
    }


def _frame(rows: list[dict[str, object]], columns: dict[str, str]) -> pd.DataFrame:
    if not rows:
        return empty_frame(columns)
    return pd.DataFrame(rows, columns=list(columns)).astype(columns)


# --------------------------------------------------------------------------------------------
# One series, serially


def read_series_record(series_dir: Path) -> dict[str, object]:
    """The ``series.json`` of a finished series folder."""
    record: dict[str, object] = json.loads((Path(series_dir) / SERIES_RECORD).read_text())
    return record


def convert_series(
    series: SeriesUnit | Path,
    out_root: Path,
    config: ConvertConfig | None = None,
    *,
    refresh: bool = False,
) -> SeriesResult:
    """Convert one series (a :class:`SeriesUnit`, or every file under a folder) in this process.

    Writes ``out_root/<series key>/`` atomically and returns counts; when that folder already
    holds a finished conversion nothing is read or written (``cached=True``), unless
    ``refresh`` asks for the series to be converted again.
    """
    config = config or ConvertConfig()
    unit = series if isinstance(series, SeriesUnit) else SeriesUnit.from_directory(Path(series))
    key = series_key(unit.md5s, config)
    target = Path(out_root) / key
    if is_complete(target) and not refresh:
        record = read_series_record(target)
        return SeriesResult(
            key, target, True, int(str(record["images"])), int(str(record["set_aside"]))
        )
    with atomic_dir(target) as work_dir:
        outcomes = convert_files(list(enumerate(unit.files)), work_dir, config)
        images, set_aside = finish_series(unit, key, work_dir, outcomes, config)
    logger.info("converted series %s: %d images, %d set aside", key[:12], images, set_aside)
    return SeriesResult(key, target, False, images, set_aside)
