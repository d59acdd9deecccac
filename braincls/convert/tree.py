"""Converting a folder of DICOM in any layout: discovery, parallel conversion, manifests.

:func:`convert_tree` is the whole ``braincls convert`` command:

1. :func:`discover_series` reads every file once (MD5 and a header without pixels, in worker
   processes) and groups files by (0020,000E) Series Instance UID, wherever they lie; a file
   without one (not DICOM, empty, damaged) is a unit of its own.
2. Units whose key folder is missing are converted, split into chunks of files over a pool of
   processes (decoding is CPU-bound); each unit's folder appears atomically when its last chunk
   is done, so an interrupted run keeps every finished series.
3. :func:`assemble_manifests` joins the per-series parts into ``images.parquet`` and
   ``quarantine.parquet``, resolving paths, applying the labels table and setting aside
   unlabelled images and instances already converted in another series.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import pandas as pd

from braincls.common.atomic import atomic_dir, write_json, write_parquet
from braincls.common.hashing import stable_hash
from braincls.common.progress import Progress, ProgressCallback, report
from braincls.common.tables import IMAGE_COLUMNS, QUARANTINE_COLUMNS, coerce, empty_frame
from braincls.config import ConvertConfig, LabelRuleConfig
from braincls.convert.files import FileOutcome, convert_files, scan_file
from braincls.convert.labels import LabelTable
from braincls.convert.privacy import resolve_pseudonymisation
from braincls.convert.reading import (
    Reason,
    is_ignored,
    pseudonymize,
)
from braincls.convert.series import (
    CONVERTER_VERSION,
    IMAGES_PART,
    QUARANTINE_PART,
    ConversionError,
    SeriesUnit,
    convert_series,
    finish_series,
    is_complete,
    series_key,
)
from braincls.data.labelling import LABEL_CLASSES

logger = logging.getLogger(__name__)

#: DICOM columns of the images manifest, after the common :data:`IMAGE_COLUMNS`.
DICOM_IMAGE_COLUMNS: dict[str, str] = {
    "sop_instance_uid": "string",  # (0008,0018)
    "series_instance_uid": "string",  # (0020,000E)
    "study_instance_uid": "string",  # (0020,000D)
    "collection": "string",  # TCIA (0013,xx10) of creator CTP, else the top folder name
    "modality": "string",  # (0008,0060)
    "frame_index": "int64",  # 0-based frame of a multi-frame object, 0 otherwise
    "slice_position": "float64",  # mm along the slice normal (NaN when unknown)
    "rows": "int64",  # (0028,0010), native
    "cols": "int64",  # (0028,0011), native
    "pixel_spacing_row_mm": "float64",  # (0028,0030) first value
    "pixel_spacing_col_mm": "float64",  # (0028,0030) second value
    "frame_of_reference_uid": "string",  # (0020,0052)
    "image_position_patient": "string",  # (0020,0032), backslash-joined decimals
    "image_orientation_patient": "string",  # (0020,0037), backslash-joined decimals
    "brain_area_mm2": "float64",  # foreground (head or brain) area of the slice
    "tumour_area_mm2": "float64",  # segmented area when a segmentation labelled it, else NaN
    "window_source": "string",  # voi_lut_sequence | window | percentile
    "foreground_fraction": "float64",  # share of foreground in the series-relative thumbnail
    "intensity_mean": "float64",  # of the 8-bit output PNG
    "intensity_std": "float64",
    "intensity_min": "int64",
    "intensity_max": "int64",
    "native_path": "string",  # absolute path of the 16-bit native PNG, <NA> when not written
    "dicom_md5": "string",  # MD5 of the source DICOM file
    "series_key": "string",  # cache folder of the series under the output root
    "converter_version": "string",
}

#: Every column of the DICOM images manifest, in order.
DICOM_MANIFEST_COLUMNS: dict[str, str] = {**IMAGE_COLUMNS, **DICOM_IMAGE_COLUMNS}

#: Every column of the DICOM quarantine table, in order.
DICOM_QUARANTINE_COLUMNS: dict[str, str] = {
    **QUARANTINE_COLUMNS,
    "detail": "string",
    "sop_instance_uid": "string",
    "series_instance_uid": "string",
    "frame_index": "Int64",
    "series_key": "string",
}

#: Below these counts the work runs in this process: starting worker processes (a fork server
#: importing pydicom and OpenCV) costs more than it saves. Reading a header is cheap (MD5 and
#: a peek at the Series Instance UID), converting a file is not.
MIN_FILES_TO_SCAN_IN_POOL = 2000
MIN_FILES_TO_CONVERT_IN_POOL = 100

MANIFESTS_FOLDER = "manifests"
IMAGES_MANIFEST = "images.parquet"
QUARANTINE_TABLE = "quarantine.parquet"
SUMMARY = "summary.json"


@dataclass(frozen=True)
class ConversionResult:
    """What one :func:`convert_tree` run produced (paths and counts, no tables)."""

    images_manifest: Path
    quarantine_table: Path
    files: int
    ignored_files: int
    series: int
    series_converted: int
    series_cached: int
    images: int
    set_aside: int
    unlabelled: int
    reasons: dict[str, int] = field(default_factory=dict)
    #: The classes of the labelled images (``label_index`` is the position here).
    class_names: tuple[str, ...] = ()
    #: Labelled images per label source (table, SEG, RTSTRUCT).
    label_sources: dict[str, int] = field(default_factory=dict)
    #: One row per segmentation object: what it labelled, set aside or could not match.
    segmentations: list[dict[str, object]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Discovery


def _walk(src_dir: Path, exclude: Sequence[Path]) -> tuple[list[Path], int]:
    """Files under ``src_dir`` (sorted), skipping hidden folders, ``exclude`` and side files."""
    excluded = {Path(path).resolve() for path in exclude}
    files: list[Path] = []
    ignored = 0
    for folder, folders, names in os.walk(src_dir):
        here = Path(folder)
        folders[:] = sorted(
            name
            for name in folders
            if not name.startswith(".") and (here / name).resolve() not in excluded
        )
        for name in sorted(names):
            path = here / name
            if is_ignored(path):
                ignored += 1
            elif path.is_file():
                files.append(path)
    return files, ignored


@dataclass(frozen=True)
class IndexEntry:
    """What a scan learnt about one file, valid while its size, mtime and inode stay the same."""

    size: int
    mtime_ns: int
    inode: int
    md5: str
    series_instance_uid: str | None


FILE_INDEX = "file-index.parquet"

_INDEX_COLUMNS: dict[str, str] = {
    "path": "string",
    "size": "int64",
    "mtime_ns": "int64",
    "inode": "int64",
    "md5": "string",
    "series_instance_uid": "string",
}


def load_file_index(out_root: Path) -> dict[str, IndexEntry]:
    """The file index of ``out_root`` (empty when missing or unreadable: it is only a cache)."""
    path = Path(out_root) / FILE_INDEX
    if not path.is_file():
        return {}
    try:
        frame = pd.read_parquet(path)
        entries: dict[str, IndexEntry] = {}
        for row in frame.to_dict("records"):
            uid = row["series_instance_uid"]
            entries[str(row["path"])] = IndexEntry(
                int(row["size"]),
                int(row["mtime_ns"]),
                int(row["inode"]),
                str(row["md5"]),
                None if uid is None or uid is pd.NA else str(uid),
            )
        return entries
    except Exception as error:  # a damaged cache costs a rescan, never a failed run
        logger.warning("ignoring unreadable file index %s: %s", path, error)
        return {}


def save_file_index(out_root: Path, index: dict[str, IndexEntry]) -> Path:
    """Write the file index of ``out_root`` atomically."""
    rows = [
        {
            "path": path,
            "size": entry.size,
            "mtime_ns": entry.mtime_ns,
            "inode": entry.inode,
            "md5": entry.md5,
            "series_instance_uid": entry.series_instance_uid,
        }
        for path, entry in sorted(index.items())
    ]
    frame = pd.DataFrame(rows, columns=list(_INDEX_COLUMNS)).astype(_INDEX_COLUMNS)
    return write_parquet(Path(out_root) / FILE_INDEX, frame)


def discover_series(
    src_dir: Path,
    *,
    exclude: Sequence[Path] = (),
    executor: Executor | None = None,
    index: dict[str, IndexEntry] | None = None,
) -> tuple[list[SeriesUnit], int]:
    """Group every file under ``src_dir`` into series units; return them and the ignored count.

    Files found in ``index`` with the same size, mtime and inode are not read again; every
    other file is read once (MD5 and header) and ``index`` is updated in place. Units come
    sorted by the path of their first file, so results are deterministic.
    """
    src_dir = Path(src_dir)
    paths, ignored = _walk(src_dir, exclude)
    index = {} if index is None else index
    found: dict[Path, tuple[str, str | None]] = {}
    to_scan: list[tuple[Path, os.stat_result]] = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            found[path] = ("", None)
            continue
        entry = index.get(str(path))
        if entry and (entry.size, entry.mtime_ns, entry.inode) == (
            stat.st_size,
            stat.st_mtime_ns,
            stat.st_ino,
        ):
            found[path] = (entry.md5, entry.series_instance_uid)
        else:
            to_scan.append((path, stat))
    scan_paths = [path for path, _ in to_scan]
    if executor is None or len(scan_paths) < MIN_FILES_TO_SCAN_IN_POOL:
        scans = [scan_file(path) for path in scan_paths]
    else:
        chunk = max(1, min(64, len(scan_paths) // 32))
        scans = list(executor.map(scan_file, scan_paths, chunksize=chunk))
    for (path, stat), (md5, uid) in zip(to_scan, scans, strict=True):
        found[path] = (md5, uid)
        if md5:
            index[str(path)] = IndexEntry(stat.st_size, stat.st_mtime_ns, stat.st_ino, md5, uid)
    logger.info(
        "%s: %d files, %d read, %d known from the index",
        src_dir,
        len(paths),
        len(to_scan),
        len(paths) - len(to_scan),
    )

    by_series: dict[str, list[tuple[Path, str]]] = {}
    units: list[SeriesUnit] = []
    for path in paths:
        md5, uid = found[path]
        if uid is None:
            units.append(SeriesUnit.build(src_dir, [(path, md5)]))
        else:
            by_series.setdefault(uid, []).append((path, md5))
    units.extend(SeriesUnit.build(src_dir, pairs, uid) for uid, pairs in by_series.items())
    units.sort(key=lambda unit: min(unit.relative_path(i) for i in range(len(unit.files))))
    return units, ignored


# --------------------------------------------------------------------------------------------
# Parallel conversion


def resolve_workers(workers: int) -> int:
    """``workers``, or one per CPU available to this process when it is 0."""
    if workers > 0:
        return workers
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def _process_pool(workers: int) -> Iterator[Executor | None]:
    """A process pool of ``workers`` (None for one worker: work runs in this process).

    Workers start from a fork server that has imported the converter once, so they neither
    inherit the threads of the caller (Prefect runs an event loop in a thread) nor import
    pydicom, OpenCV and pandas again each.
    """
    if workers <= 1:
        yield None
        return
    methods = multiprocessing.get_all_start_methods()
    context: multiprocessing.context.BaseContext
    if "forkserver" in methods:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(
            ["braincls.convert.files"]
        )  # and pandas, via braincls.data.images
    else:
        context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker
    ) as pool:
        yield pool


def _init_worker() -> None:
    """Keep each worker to one OpenCV thread: the pool already uses every CPU."""
    cv2.setNumThreads(1)


@dataclass
class _OpenSeries:
    unit: SeriesUnit
    folder: AbstractContextManager[Path]
    work_dir: Path
    chunks_left: int
    outcomes: list[FileOutcome] = field(default_factory=list)


def _convert_parallel(
    pending: dict[str, SeriesUnit],
    out_root: Path,
    config: ConvertConfig,
    executor: Executor,
    workers: int,
    on_series_done: Callable[[int], None] | None = None,
) -> None:
    """Convert ``pending`` units (by key) in chunks of files on ``executor``.

    About eight chunks per worker balance the load; each series' folder is finished (and
    renamed into place) as soon as its last chunk is back.
    """
    total_files = sum(len(unit.files) for unit in pending.values())
    chunk_size = max(1, min(32, math.ceil(total_files / (8 * workers))))
    open_series: dict[str, _OpenSeries] = {}
    futures: dict[Future[list[FileOutcome]], str] = {}
    try:
        for key, unit in pending.items():
            folder = atomic_dir(out_root / key)
            work_dir = folder.__enter__()
            indexed = list(enumerate(unit.files))
            chunks = [indexed[i : i + chunk_size] for i in range(0, len(indexed), chunk_size)]
            open_series[key] = _OpenSeries(unit, folder, work_dir, len(chunks))
            for chunk in chunks:
                futures[executor.submit(convert_files, chunk, work_dir, config)] = key
        for future in as_completed(futures):
            key = futures[future]
            state = open_series[key]
            state.outcomes.extend(future.result())
            state.chunks_left -= 1
            if state.chunks_left == 0:
                images, set_aside = finish_series(
                    state.unit, key, state.work_dir, state.outcomes, config
                )
                del open_series[key]
                state.folder.__exit__(None, None, None)
                logger.info(
                    "converted series %s: %d images, %d set aside", key[:12], images, set_aside
                )
                if on_series_done is not None:
                    on_series_done(len(state.unit.files))
    except BaseException as error:
        for future in futures:
            future.cancel()
        for state in open_series.values():
            state.folder.__exit__(type(error), error, error.__traceback__)
        if isinstance(error, BrokenProcessPool):
            raise ConversionError(
                f"a worker process died while converting {len(open_series)} series (a decoder "
                "crash on a damaged file?); finished series are kept, rerun to continue"
            ) from error
        raise


# --------------------------------------------------------------------------------------------
# Manifests


def _read_part(folder: Path, name: str) -> pd.DataFrame:
    path = folder / name
    if not path.is_file():
        raise ConversionError(f"{folder}: series folder lacks {name}; delete the folder to redo it")
    return pd.read_parquet(path)


@dataclass(frozen=True)
class Assembled:
    """What :func:`assemble_manifests` wrote and counted."""

    images_manifest: Path
    quarantine_table: Path
    images: int
    set_aside: int
    unlabelled: int
    reasons: dict[str, int]
    class_names: tuple[str, ...]
    label_sources: dict[str, int]
    segmentations: list[dict[str, object]]


@dataclass
class _Parts:
    """The per-series parts of a conversion, joined: images, set-aside rows, segmentation files
    and the geometry of background slices (for comparing co-registered series)."""

    images: pd.DataFrame
    set_aside: list[pd.DataFrame]
    segmentation_files: list[Path]
    background_geometry: pd.DataFrame


def _join_parts(units: Sequence[SeriesUnit], out_root: Path, config: ConvertConfig) -> _Parts:
    image_parts: list[pd.DataFrame] = []
    quarantine_parts: list[pd.DataFrame] = []
    segmentation_files: list[Path] = []
    background: list[pd.DataFrame] = []
    for unit in units:
        key = series_key(unit.md5s, config)
        folder = out_root / key
        images = _read_part(folder, IMAGES_PART)
        quarantine = _read_part(folder, QUARANTINE_PART)
        indices = [int(index) for index in quarantine["source_index"]]
        quarantine["source_path"] = [str(unit.files[index]) for index in indices]
        quarantine["relative_path"] = [unit.relative_path(index) for index in indices]
        quarantine["series_key"] = key
        quarantine_parts.append(quarantine)
        is_segmentation = quarantine["reason"] == Reason.SEGMENTATION.value
        segmentation_files.extend(Path(p) for p in quarantine.loc[is_segmentation, "source_path"])
        is_background = quarantine["reason"] == Reason.BACKGROUND_SLICE.value
        if is_background.any():
            background.append(quarantine[is_background])
        if images.empty:
            continue
        names = images["png_name"].astype(str)
        images["source_path"] = [str(folder / name) for name in names]
        images["relative_path"] = [f"{key}/{name}" for name in names]
        images["native_path"] = [
            None if pd.isna(name) else str(folder / str(name)) for name in images["native_name"]
        ]
        images["collection"] = images["collection_header"].fillna(unit.fallback_collection())
        images["source"] = images["collection"]
        images["series_key"] = key
        source_indices = [int(index) for index in images["source_index"]]
        images["_dicom_path"] = [str(unit.files[index]) for index in source_indices]
        images["_dicom_relative_path"] = [unit.relative_path(index) for index in source_indices]
        image_parts.append(images)
    return _Parts(
        images=pd.concat(image_parts, ignore_index=True) if image_parts else pd.DataFrame(),
        set_aside=[part for part in quarantine_parts if not part.empty],
        segmentation_files=segmentation_files,
        background_geometry=(
            pd.concat(background, ignore_index=True) if background else pd.DataFrame()
        ),
    )


def _brain_area_mm2(images: pd.DataFrame) -> pd.Series:
    """The slice's foreground area: its series-relative foreground share times its area."""
    return (
        images["foreground_fraction"].astype("float64")
        * images["rows"].astype("float64")
        * images["cols"].astype("float64")
        * images["pixel_spacing_row_mm"].astype("float64")
        * images["pixel_spacing_col_mm"].astype("float64")
    )


def _segmentation_labels(
    parts: _Parts, rule: LabelRuleConfig, source_root: Path | None
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, object]]]:
    """Labels of the images the segmentations cover, their set-aside rows, their summary."""
    from braincls.convert.segmentations import labels_from_segmentations

    geometry = parts.background_geometry
    result = labels_from_segmentations(
        parts.segmentation_files,
        parts.images,
        rule,
        root=source_root,
        series_geometry=geometry if not geometry.empty else None,
    )
    summary = [{str(k): v for k, v in row.items()} for row in result.summary.to_dict("records")]
    return result.labels, result.set_aside, summary


def _set_aside_segmentations(set_aside: pd.DataFrame, source_root: Path | None) -> pd.DataFrame:
    """Rows of the quarantine for segmentations (or series) a segmentation could not label."""
    paths = [
        str(source_root / str(path)) if source_root is not None else str(path)
        for path in set_aside["segmentation_path"]
    ]
    return pd.DataFrame(
        {
            "source_path": paths,
            "relative_path": set_aside["segmentation_path"].astype(str).to_numpy(),
            "reason": set_aside["reason"].astype(str).to_numpy(),
            "detail": set_aside["detail"].to_numpy(),
            "sop_instance_uid": set_aside["segmentation_sop_instance_uid"].to_numpy(),
            "series_instance_uid": set_aside["series_instance_uid"].to_numpy(),
            "frame_index": pd.array([pd.NA] * len(set_aside), dtype="Int64"),
            "series_key": pd.array([pd.NA] * len(set_aside), dtype="string"),
        }
    )


def _classes(table: LabelTable, uses_segmentations: bool) -> tuple[str, ...]:
    classes = set(table.classes)
    if uses_segmentations:
        classes |= set(LABEL_CLASSES)
        if len(classes) > len(LABEL_CLASSES):
            raise ConversionError(
                f"the labels table's classes {sorted(table.classes)} differ from the classes "
                f"segmentations give ({', '.join(LABEL_CLASSES)}); write the table with "
                f"{' / '.join(LABEL_CLASSES)} so that both label the same classes"
            )
    return tuple(sorted(classes))


def assemble_manifests(
    units: Sequence[SeriesUnit],
    out_root: Path,
    config: ConvertConfig,
    labels: LabelTable | None,
    manifest_dir: Path,
    *,
    rule: LabelRuleConfig | None = None,
    source_root: Path | None = None,
    keep_unlabelled: bool = False,
) -> Assembled:
    """Join the parts of ``units`` into ``manifest_dir/images.parquet`` and ``quarantine.parquet``.

    Every image gets its label from, in this order: the labels table (it always wins), a DICOM
    SEG or RTSTRUCT among the units that covers it (the labelling ``rule``: areas in mm²), or
    nothing. Images the rule sets aside (ambiguous slivers, too little brain) go to the
    quarantine with the rule's reason; unlabelled images too, unless ``keep_unlabelled`` keeps
    them in the manifest with an empty label and ``label_index`` -1 (for prediction).

    Returns both paths and the counts (images, set aside, unlabelled, per reason, classes,
    label sources, and one summary row per segmentation).
    """
    out_root = Path(out_root)
    rule = rule or LabelRuleConfig()
    table = labels or LabelTable()
    if config.pseudonymize_patient_id:
        salt = config.pseudonym_salt.get_secret_value()
        table = table.with_patient_ids(lambda patient: pseudonymize(patient, salt))
    parts = _join_parts(units, out_root, config)
    images = parts.images
    set_aside = list(parts.set_aside)
    unlabelled_count = 0
    segmentation_summary: list[dict[str, object]] = []
    uses_segmentations = bool(parts.segmentation_files) and not images.empty
    classes = _classes(table, uses_segmentations)
    if not images.empty:
        duplicate = images.duplicated("sample_id", keep="first")
        if duplicate.any():
            first_key = images.drop_duplicates("sample_id").set_index("sample_id")["series_key"]
            rows = images[duplicate]
            set_aside.append(
                _quarantine_from_images(
                    rows,
                    Reason.DUPLICATE_INSTANCE,
                    [f"already converted in series folder {first_key[s]}" for s in rows.sample_id],
                )
            )
            images = images[~duplicate].reset_index(drop=True)
        images["brain_area_mm2"] = _brain_area_mm2(images)
        found = [
            table.lookup(
                sop_instance_uid=_text(row.sop_instance_uid),
                series_instance_uid=_text(row.series_instance_uid),
                patient_id=_text(row.patient_id),
                collection=_text(row.collection),
            )
            for row in images.itertuples(index=False)
        ]
        images["label"] = pd.Series(found, index=images.index, dtype="string")
        images["label_source"] = pd.Series(
            ["table" if label is not None else None for label in found],
            index=images.index,
            dtype="string",
        )
        images["tumour_area_mm2"] = float("nan")
        if uses_segmentations:
            seg_labels, seg_set_aside, segmentation_summary = _segmentation_labels(
                parts, rule, source_root
            )
            if not seg_set_aside.empty:
                set_aside.append(_set_aside_segmentations(seg_set_aside, source_root))
            images, rule_set_aside = _apply_segmentation_labels(images, seg_labels)
            set_aside.extend(rule_set_aside)
        unlabelled = images["label"].isna()
        unlabelled_count = int(unlabelled.sum())
        if unlabelled_count and not keep_unlabelled:
            rows = images[unlabelled]
            if labels is None and not uses_segmentations:
                details = ["no labels table was given and no segmentation covers it"] * len(rows)
            else:
                details = [
                    f"no labels-table row for its SOP Instance UID, Series Instance UID, "
                    f"Patient ID or collection {collection!r}, and no segmentation covers it"
                    for collection in rows["collection"]
                ]
            set_aside.append(_quarantine_from_images(rows, Reason.UNLABELLED, details))
            images = images[~unlabelled]
    if images.empty:
        manifest = empty_frame(DICOM_MANIFEST_COLUMNS)
    else:
        images = images.assign(
            label_index=[
                -1 if pd.isna(label) else classes.index(str(label)) for label in images["label"]
            ],
            converter_version=CONVERTER_VERSION,
        )
        manifest = coerce(images[list(DICOM_MANIFEST_COLUMNS)], DICOM_MANIFEST_COLUMNS)
        manifest = manifest.sort_values(
            ["source", "patient_id", "series_instance_uid", "slice_position", "sample_id"],
            na_position="last",
            kind="stable",
        ).reset_index(drop=True)

    if set_aside:
        quarantine = pd.concat(
            [part[list(DICOM_QUARANTINE_COLUMNS)] for part in set_aside], ignore_index=True
        )
        quarantine = (
            coerce(quarantine, DICOM_QUARANTINE_COLUMNS)
            .sort_values(
                ["relative_path", "frame_index", "reason"], na_position="first", kind="stable"
            )
            .reset_index(drop=True)
        )
    else:
        quarantine = empty_frame(DICOM_QUARANTINE_COLUMNS)

    manifest_dir = Path(manifest_dir)
    images_path = write_parquet(manifest_dir / IMAGES_MANIFEST, manifest)
    quarantine_path = write_parquet(manifest_dir / QUARANTINE_TABLE, quarantine)
    return Assembled(
        images_manifest=images_path,
        quarantine_table=quarantine_path,
        images=len(manifest),
        set_aside=len(quarantine),
        unlabelled=unlabelled_count,
        reasons={str(reason): int(n) for reason, n in Counter(quarantine["reason"]).items()},
        class_names=classes,
        label_sources={str(k): int(v) for k, v in manifest["label_source"].value_counts().items()},
        segmentations=segmentation_summary,
    )


def _apply_segmentation_labels(
    images: pd.DataFrame, seg_labels: pd.DataFrame
) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Give the segmentations' labels to the images the table did not label; the images the
    labelling rule sets aside go to the quarantine with the rule's reason."""
    if seg_labels.empty:
        return images, []
    by_sample = seg_labels.drop_duplicates("sample_id").set_index("sample_id")
    covered = images["sample_id"].isin(by_sample.index) & images["label"].isna()
    if not covered.any():
        return images, []
    rows = by_sample.loc[images.loc[covered, "sample_id"]]
    images.loc[covered, "label"] = rows["label"].to_numpy()
    images.loc[covered, "label_source"] = rows["label_source"].to_numpy()
    images.loc[covered, "tumour_area_mm2"] = rows["tumour_area_mm2"].to_numpy(dtype="float64")
    withheld = covered & images["label"].isna()
    set_aside: list[pd.DataFrame] = []
    if withheld.any():
        reasons = by_sample.loc[images.loc[withheld, "sample_id"], "rule_reason"]
        part = images[withheld]
        for reason in sorted(set(reasons.astype(str))):
            chosen = part[(reasons == reason).to_numpy()]
            details = [
                f"{source}: tumour area {area:g} mm²; the labelling rule sets it aside"
                for source, area in zip(
                    by_sample.loc[chosen["sample_id"], "label_source"],
                    by_sample.loc[chosen["sample_id"], "tumour_area_mm2"],
                    strict=True,
                )
            ]
            quarantine = _quarantine_from_images(chosen, Reason.UNLABELLED, details)
            quarantine["reason"] = reason
            set_aside.append(quarantine)
        images = images[~withheld]
    return images, set_aside


def _text(value: object) -> str | None:
    """A table cell as text; None for missing values (None, <NA>, NaN)."""
    if value is None or value is pd.NA or isinstance(value, float):
        return None
    return str(value)


def _quarantine_from_images(
    rows: pd.DataFrame, reason: Reason, details: Sequence[str]
) -> pd.DataFrame:
    """Quarantine rows for converted images (the DICOM file is the source)."""
    return pd.DataFrame(
        {
            "source_path": rows["_dicom_path"].to_numpy(),
            "relative_path": rows["_dicom_relative_path"].to_numpy(),
            "reason": reason.value,
            "detail": list(details),
            "sop_instance_uid": rows["sop_instance_uid"].to_numpy(),
            "series_instance_uid": rows["series_instance_uid"].to_numpy(),
            "frame_index": rows["frame_index"].to_numpy(),
            "series_key": rows["series_key"].to_numpy(),
        }
    )


def pending_series(
    src_dir: Path, out_root: Path, config: ConvertConfig | None = None
) -> list[SeriesUnit]:
    """The series units under ``src_dir`` whose conversion is not yet in ``out_root``.

    One unit per series key (duplicates dropped), in discovery order. Reads in this process and
    updates the file index, so a following :func:`convert_tree` reads no header again. This is
    how a scheduler (Dask, a Prefect task per series) hands series out one at a time.
    """
    config = config or ConvertConfig()
    src_dir = Path(src_dir).resolve()
    out_root = Path(out_root).resolve()
    if not src_dir.is_dir():
        raise ConversionError(f"{src_dir}: source folder not found")
    # Pseudonymise unless the folder is a public de-identified archive (privacy.py).
    config = resolve_pseudonymisation(config, src_dir)
    index = load_file_index(out_root)
    units, _ = discover_series(src_dir, exclude=[out_root], index=index)
    save_file_index(out_root, index)
    pending: dict[str, SeriesUnit] = {}
    for unit in units:
        key = series_key(unit.md5s, config)
        if key not in pending and not is_complete(out_root / key):
            pending[key] = unit
    return list(pending.values())


# --------------------------------------------------------------------------------------------
# The whole command


def convert_tree(
    src_dir: Path,
    out_root: Path,
    config: ConvertConfig | None = None,
    labels: LabelTable | None = None,
    *,
    workers: int | None = None,
    manifest_dir: Path | None = None,
    refresh: bool = False,
    rule: LabelRuleConfig | None = None,
    keep_unlabelled: bool = False,
    on_progress: ProgressCallback | None = None,
) -> ConversionResult:
    """Convert every DICOM file under ``src_dir`` (any layout) into PNGs under ``out_root``.

    Only series whose key folder is missing are converted; the manifests are written to
    ``manifest_dir``, by default ``out_root/manifests/<run key>/`` where the run key covers the
    series keys, their file paths, the labels and the config (same inputs, same paths).
    ``workers`` overrides ``config.workers`` (0: one per CPU); ``refresh`` converts every series
    again, finished or not. Files that cannot be converted are set aside, never raised;
    :class:`ConversionError` means the run itself failed.

    Labels come from the ``labels`` table where it names an image, else from the DICOM SEG and
    RTSTRUCT objects under ``src_dir`` by the labelling ``rule`` (see
    :func:`assemble_manifests`). Images without a label are converted and cached but listed in
    the quarantine with reason ``unlabelled`` instead of the images manifest (unless
    ``keep_unlabelled``: then they are in the manifest without a label, for prediction), and
    counted in :attr:`ConversionResult.unlabelled`: a later run with a labels table reconverts
    nothing.

    ``on_progress`` is told the files of each series as it is converted (task ``convert``).

    With more than one worker, processes start from a fork server (or by spawn), which
    re-imports the caller's ``__main__`` module: a script calling this must guard its entry
    point with ``if __name__ == "__main__":`` (Python's rule for such process pools).
    """
    config = config or ConvertConfig()
    rule = rule or LabelRuleConfig()
    src_dir = Path(src_dir).resolve()
    out_root = Path(out_root).resolve()
    if not src_dir.is_dir():
        raise ConversionError(f"{src_dir}: source folder not found")
    # Pseudonymise unless the folder is a public de-identified archive (privacy.py).
    config = resolve_pseudonymisation(config, src_dir)
    count = resolve_workers(config.workers if workers is None else workers)
    started = time.perf_counter()
    index = load_file_index(out_root)
    with _process_pool(count) as executor:
        try:
            units, ignored = discover_series(
                src_dir, exclude=[out_root], executor=executor, index=index
            )
        except BrokenProcessPool as error:
            raise ConversionError(
                f"{src_dir}: a worker process died while reading headers; rerun to continue"
            ) from error
        save_file_index(out_root, index)
        keys = [series_key(unit.md5s, config) for unit in units]
        pending: dict[str, SeriesUnit] = {}
        for key, unit in zip(keys, units, strict=True):
            if key not in pending and (refresh or not is_complete(out_root / key)):
                pending[key] = unit
        logger.info(
            "%s: %d files in %d series units, %d to convert (%d workers)",
            src_dir,
            sum(len(unit.files) for unit in units),
            len(units),
            len(pending),
            count,
        )
        pending_files = sum(len(unit.files) for unit in pending.values())
        files_done = 0

        def series_done(files: int) -> None:
            nonlocal files_done
            files_done += files
            report(
                on_progress,
                Progress("convert", done=files_done, total=pending_files, unit="files"),
            )

        if executor is None or pending_files < MIN_FILES_TO_CONVERT_IN_POOL:
            for unit in pending.values():
                convert_series(unit, out_root, config, refresh=refresh)
                series_done(len(unit.files))
        else:
            _convert_parallel(pending, out_root, config, executor, count, series_done)

    run_key = stable_hash(
        {
            "source": str(src_dir),
            "output": str(out_root),
            "units": [
                [key, [str(path) for path in unit.files]]
                for key, unit in zip(keys, units, strict=True)
            ],
            "labels": labels.content_hash() if labels is not None else None,
            "rule": rule.config_hash(),
            "keep_unlabelled": keep_unlabelled,
            "config": config.config_hash(),
            "converter_version": CONVERTER_VERSION,
        }
    )
    target = Path(manifest_dir) if manifest_dir else out_root / MANIFESTS_FOLDER / run_key[:16]
    assembled = assemble_manifests(
        units,
        out_root,
        config,
        labels,
        target,
        rule=rule,
        source_root=src_dir,
        keep_unlabelled=keep_unlabelled,
    )
    result = ConversionResult(
        images_manifest=assembled.images_manifest,
        quarantine_table=assembled.quarantine_table,
        files=sum(len(unit.files) for unit in units),
        ignored_files=ignored,
        series=len(units),
        series_converted=len(pending),
        series_cached=len(set(keys)) - len(pending),
        images=assembled.images,
        set_aside=assembled.set_aside,
        unlabelled=assembled.unlabelled,
        reasons=assembled.reasons,
        class_names=assembled.class_names,
        label_sources=assembled.label_sources,
        segmentations=assembled.segmentations,
    )
    write_json(
        target / SUMMARY,
        {
            "converter_version": CONVERTER_VERSION,
            "seconds": round(time.perf_counter() - started, 3),
            **{name: value for name, value in vars(result).items()},
        },
    )
    logger.info(
        "converted %s: %d images, %d set aside (%d unlabelled), %d series converted, %d cached",
        src_dir,
        result.images,
        result.set_aside,
        result.unlabelled,
        result.series_converted,
        result.series_cached,
    )
    return result
