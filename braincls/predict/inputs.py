"""What to score: image files, DICOM (any layout) and NIfTI volumes, each prepared exactly as the
model's training data was, or set aside with the reason.

Every image becomes a :class:`Candidate`: the columns that identify it and either the model's
input (the preprocessed 8-bit square image, byte-identical to the stored PNG evaluation reads)
or a reason and detail. Nothing here raises for bad input: an unreadable file is a candidate
with a reason.

- Image files are decoded and preprocessed in memory (:func:`image_candidate`), with the
  minimum-size and constant-image rules of the model's image import.
- DICOM is converted with the model's own conversion settings (``convert_tree``, per-series
  cache), keeping unlabelled images; files and slices the converter sets aside (background
  slices, non-image objects, undecodable files) become candidates with its reason.
- NIfTI volumes are oriented, windowed and rendered with the model's volume settings; slices
  with too little brain (the labelling rule's ``min_brain_area_mm2``) are set aside as
  ``no_brain``, as they were in training.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from braincls.common.progress import Progress, ProgressCallback, report
from braincls.config import LabelRuleConfig
from braincls.data.images import decode_image, to_gray
from braincls.data.preprocess import PreprocessError, preprocess_array
from braincls.predict.model import ScoringModel

logger = logging.getLogger(__name__)

#: Suffixes of NIfTI volumes.
VOLUME_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")

#: Kinds of input (the ``kind`` column).
IMAGE, DICOM, VOLUME = "image", "dicom", "volume"

#: Reasons of candidates that are not scored, besides the converter's and the volume reader's.
NOT_FOUND = "not_found"
EMPTY_FILE = "empty_file"
UNREADABLE_FILE = "unreadable_file"
NOT_AN_IMAGE = "not_an_image"
TOO_SMALL = "too_small"
CONSTANT_IMAGE = "constant_image"
NO_BRAIN = "no_brain"
PREPROCESS_FAILED = "preprocess_failed"

#: The rule DICOM is converted with for prediction: it sets no slice aside, so a folder's
#: segmentations (which label training data) cannot withhold an image from scoring.
SCORING_RULE = LabelRuleConfig(min_tumour_area_mm2=0.0, min_brain_area_mm2=0.0)

#: Files beside images that are not images: braincls' verification records of ingested
#: series, labels and groups tables, catalogues, notes. They are neither scored nor reported.
_SIDE_FILE_SUFFIXES: tuple[str, ...] = (".json", ".csv", ".txt", ".md", ".html", ".yaml", ".yml")


@dataclass
class Candidate:
    """One image to score (``pixels``: the model input, uint8, side x side) or the reason it
    cannot be scored (``reason``, ``detail``); ``fields`` are its identifying columns."""

    fields: dict[str, Any]
    pixels: np.ndarray | None = None
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class PlannedSource:
    """A source whose candidates are known in number before they are made (for progress)."""

    count: int
    candidates: Callable[[], Iterator[Candidate]]


@dataclass
class Sources:
    """The inputs found under the paths given, by kind."""

    images: list[Path] = field(default_factory=list)
    volumes: list[Path] = field(default_factory=list)
    dicom_dirs: list[Path] = field(default_factory=list)
    dicom_files: list[Path] = field(default_factory=list)
    missing: list[Path] = field(default_factory=list)
    #: Files under a DICOM folder that are read as images or volumes instead.
    not_dicom: set[Path] = field(default_factory=set)


def is_volume(path: Path) -> bool:
    """Whether ``path`` names a NIfTI volume (``.nii``, ``.nii.gz``)."""
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def _is_hidden_or_side(path: Path) -> bool:
    from braincls.convert.reading import is_ignored

    return is_ignored(path) or path.name.lower().endswith(_SIDE_FILE_SUFFIXES)


def find_sources(
    paths: Sequence[Path], image_suffixes: Sequence[str], mask_pattern: str | None = None
) -> Sources:
    """Sort ``paths`` (files or folders, any layout) into images, volumes and DICOM.

    A file is an image by its suffix (``image_suffixes``), a volume by ``.nii`` / ``.nii.gz``,
    and DICOM otherwise (DICOM files often have no suffix). A folder is walked (hidden entries
    and side files such as tables skipped): its images and volumes are read as such, volumes
    named like segmentation masks (the file name of ``mask_pattern``, e.g. ``{case}_seg.nii.gz``)
    are left out, and when anything else is in it the folder is converted as DICOM.
    """
    from braincls.data.volumes import pattern_regex

    suffixes = {suffix.lower() for suffix in image_suffixes}
    mask_name = (
        pattern_regex(PurePosixPath(mask_pattern).name) if mask_pattern is not None else None
    )
    found = Sources()
    for given in paths:
        path = Path(given)
        if path.is_file():
            if is_volume(path):
                found.volumes.append(path)
            elif path.suffix.lower() in suffixes:
                found.images.append(path)
            else:
                found.dicom_files.append(path)
            continue
        if not path.is_dir():
            found.missing.append(path)
            continue
        other = False
        for folder, folders, names in os.walk(path):
            folders[:] = sorted(name for name in folders if not name.startswith("."))
            for name in sorted(names):
                file = Path(folder) / name
                if _is_hidden_or_side(file):
                    continue
                if is_volume(file) and mask_name is not None and mask_name.fullmatch(name):
                    found.not_dicom.add(file.resolve())
                elif is_volume(file):
                    found.volumes.append(file)
                    found.not_dicom.add(file.resolve())
                elif file.suffix.lower() in suffixes:
                    found.images.append(file)
                    found.not_dicom.add(file.resolve())
                else:
                    other = True
        if other:
            found.dicom_dirs.append(path)
    return found


# --------------------------------------------------------------------------------------------
# Images


def image_candidate(data: bytes, fields: dict[str, Any], model: ScoringModel) -> Candidate:
    """An image file's bytes, prepared as the model's image-folder training data was: decoded
    (channels kept), checked like the import checks (empty, undecodable, too small, constant)
    and preprocessed by :func:`~braincls.data.preprocess.preprocess_array`."""
    fields = {"kind": IMAGE, **fields}
    if not data:
        return Candidate(fields, reason=EMPTY_FILE, detail="empty file (0 bytes)")
    image = decode_image(data)
    if image is None:
        return Candidate(fields, reason=NOT_AN_IMAGE, detail="not decodable as an image")
    height, width = image.shape[:2]
    minimum = model.import_config.min_side_px
    if min(height, width) < minimum:
        return Candidate(
            fields,
            reason=TOO_SMALL,
            detail=f"too small: {width}x{height} px, minimum side {minimum} px",
        )
    gray = to_gray(image)
    if int(gray.max()) == int(gray.min()):
        return Candidate(
            fields, reason=CONSTANT_IMAGE, detail="constant image (every pixel has one value)"
        )
    try:
        pixels = preprocess_array(image, model.preprocess)
    except (PreprocessError, ValueError) as error:
        return Candidate(fields, reason=PREPROCESS_FAILED, detail=str(error))
    return Candidate(fields, pixels=pixels)


def image_file_candidate(path: Path, model: ScoringModel) -> Candidate:
    """:func:`image_candidate` of the file at ``path`` (unreadable files get a reason)."""
    fields = {"source_path": str(path)}
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        return Candidate(
            {"kind": IMAGE, **fields},
            reason=UNREADABLE_FILE,
            detail=f"unreadable: {error.strerror or error}",
        )
    return image_candidate(data, fields, model)


def plan_images(paths: Sequence[Path], model: ScoringModel) -> PlannedSource:
    """The image files as one source."""
    return PlannedSource(len(paths), lambda: (image_file_candidate(path, model) for path in paths))


# --------------------------------------------------------------------------------------------
# DICOM


def _text(value: Any) -> str | None:
    return None if value is None or value is pd.NA or isinstance(value, float) else str(value)


def _number(value: Any, kind: Callable[[Any], Any]) -> Any:
    """``kind(value)``, or None for a missing value (None, <NA>, NaN)."""
    return None if value is None or bool(pd.isna(value)) else kind(value)


def _slice_order(manifest: pd.DataFrame) -> pd.Series:
    """0-based position of each image in its series, by slice position then frame."""
    order = manifest.sort_values(
        ["series_instance_uid", "slice_position", "frame_index", "sop_instance_uid"],
        na_position="last",
        kind="stable",
    )
    return order.groupby("series_instance_uid", dropna=False).cumcount().reindex(manifest.index)


def plan_dicom(
    src_dir: Path,
    converted_root: Path,
    model: ScoringModel,
    *,
    skip: frozenset[Path] = frozenset(),
    original_paths: dict[str, str] | None = None,
    manifest_dir: Path | None = None,
    on_progress: ProgressCallback | None = None,
) -> PlannedSource:
    """Convert the DICOM under ``src_dir`` with the model's conversion settings (into the
    per-series cache under ``converted_root``) and plan its candidates: every converted image,
    and every file or frame the converter set aside, with its reason.

    ``skip`` are files read as images or volumes instead (not reported again);
    ``original_paths`` maps paths under ``src_dir`` back to the paths the user gave (single
    files are linked into a folder to be converted).
    """
    from braincls.convert import ConversionError, convert_tree
    from braincls.data.preprocess import preprocess_file

    report(on_progress, Progress("convert", detail=f"converting DICOM under {src_dir.name}"))
    try:
        result = convert_tree(
            src_dir,
            converted_root,
            model.convert_config,
            None,
            workers=1,
            manifest_dir=manifest_dir,
            rule=SCORING_RULE,
            keep_unlabelled=True,
        )
    except ConversionError as error:
        detail = str(error)
        return PlannedSource(
            1,
            lambda: iter(
                [
                    Candidate(
                        {"kind": DICOM, "source_path": str(src_dir)},
                        reason="conversion_failed",
                        detail=detail,
                    )
                ]
            ),
        )
    report(
        on_progress,
        Progress(
            "convert",
            done=result.series,
            total=result.series,
            unit="series",
            detail=f"{result.images} images from {result.series} series "
            f"({result.series_cached} cached)",
            finished=True,
        ),
    )
    manifest = pd.read_parquet(result.images_manifest)
    quarantine = pd.read_parquet(result.quarantine_table)
    mapping = original_paths or {}
    keep = [
        Path(str(path)).resolve() not in skip and not _is_hidden_or_side(Path(str(path)))
        for path in quarantine["source_path"]
    ]
    quarantine = quarantine[keep].reset_index(drop=True)
    if not manifest.empty:
        manifest = manifest.assign(slice_index=_slice_order(manifest))
    preprocess = model.preprocess
    # Set-aside rows name their series; their patient is the series' patient.
    patients = (
        {}
        if manifest.empty
        else dict(
            zip(
                manifest["series_instance_uid"].astype(str),
                manifest["patient_id"],
                strict=True,
            )
        )
    )

    def dicom_fields(row: Any) -> dict[str, Any]:
        return {
            "kind": DICOM,
            "patient_id": _text(row.patient_id),
            "study_instance_uid": _text(row.study_instance_uid),
            "series_instance_uid": _text(row.series_instance_uid),
            "sop_instance_uid": _text(row.sop_instance_uid),
            "frame_index": int(row.frame_index),
        }

    def candidates() -> Iterator[Candidate]:
        for row in manifest.itertuples(index=False):
            fields = {
                **dicom_fields(row),
                "slice_index": _number(row.slice_index, int),
                "slice_position": _number(row.slice_position, float),
            }
            try:
                pixels = preprocess_file(Path(str(row.source_path)), preprocess)
            except (PreprocessError, OSError, ValueError) as error:
                yield Candidate(fields, reason=PREPROCESS_FAILED, detail=str(error))
                continue
            yield Candidate(fields, pixels=pixels)
        for row in quarantine.itertuples(index=False):
            path = str(row.source_path)
            frame = _number(row.frame_index, int)
            yield Candidate(
                {
                    "kind": DICOM,
                    "source_path": mapping.get(path, path),
                    "patient_id": _text(patients.get(str(row.series_instance_uid))),
                    "series_instance_uid": _text(row.series_instance_uid),
                    "sop_instance_uid": _text(row.sop_instance_uid),
                    "frame_index": frame,
                },
                reason=str(row.reason),
                detail=_text(row.detail),
            )

    return PlannedSource(len(manifest) + len(quarantine), candidates)


def plan_dicom_files(
    files: Sequence[Path],
    converted_root: Path,
    model: ScoringModel,
    work_dir: Path,
    *,
    on_progress: ProgressCallback | None = None,
) -> PlannedSource:
    """Single DICOM files: linked into one folder under ``work_dir`` and converted together
    (so that instances of one series are one series)."""
    folder = Path(work_dir) / "dicom-files"
    folder.mkdir(parents=True, exist_ok=True)
    mapping: dict[str, str] = {}
    for index, path in enumerate(files):
        link = folder / f"{index:06d}{Path(path).suffix}"
        link.symlink_to(Path(path).resolve())
        mapping[str(link.resolve())] = str(path)
        mapping[str(link)] = str(path)
    return plan_dicom(
        folder,
        converted_root,
        model,
        original_paths=mapping,
        manifest_dir=Path(work_dir) / "dicom-files-manifest",
        on_progress=on_progress,
    )


# --------------------------------------------------------------------------------------------
# NIfTI volumes


def _volume_error(path: Path, reason: str, detail: str) -> PlannedSource:
    candidate = Candidate({"kind": VOLUME, "source_path": str(path)}, reason=reason, detail=detail)
    return PlannedSource(1, lambda: iter([candidate]))


def plan_volume(path: Path, model: ScoringModel) -> PlannedSource:
    """One NIfTI volume, sliced in the model's plane and rendered with its volume settings;
    its header is read now (the slice count), its voxels when the candidates are made."""
    from braincls.data.volumes import SetAside, display_volume, load_data, load_header

    path = Path(path)
    config, rule = model.volumes
    name = path.name
    try:
        image = load_header(path, name)
    except SetAside as problem:
        return _volume_error(path, problem.reason, problem.detail)
    affine = np.asarray(image.affine, dtype=np.float64)
    preprocess = model.preprocess
    axis = {"sagittal": 0, "coronal": 1, "axial": 2}[config.plane]
    # The number of slices in the plane (the canonical axis of the plane), for progress.
    from nibabel.orientations import aff2axcodes

    codes = aff2axcodes(affine)
    wanted = {0: ("L", "R"), 1: ("P", "A"), 2: ("I", "S")}[axis]
    voxel_axis = next((i for i, code in enumerate(codes) if code in wanted), axis)
    count = int(image.shape[voxel_axis])

    def candidates() -> Iterator[Candidate]:
        base = {"kind": VOLUME, "source_path": str(path)}
        try:
            volume = load_data(image, path, name)
        except SetAside as problem:
            yield Candidate(base, reason=problem.reason, detail=problem.detail)
            return
        shown = display_volume(volume, affine, config.plane, config)
        for index in range(shown.slices.slices.shape[0]):
            fields = {**base, "slice_index": index}
            brain = shown.brain_area_mm2(index)
            if brain < rule.min_brain_area_mm2:
                yield Candidate(
                    fields,
                    reason=NO_BRAIN,
                    detail=(
                        f"brain area {brain:g} mm² below min_brain_area_mm2 "
                        f"{rule.min_brain_area_mm2:g} (set aside in training too)"
                    ),
                )
                continue
            try:
                pixels = preprocess_array(shown.render(index, config.image_size_px), preprocess)
            except (PreprocessError, ValueError) as error:
                yield Candidate(fields, reason=PREPROCESS_FAILED, detail=str(error))
                continue
            yield Candidate(fields, pixels=pixels)

    return PlannedSource(count, candidates)


def plan_missing(paths: Sequence[Path]) -> PlannedSource:
    """Paths that do not exist, one candidate each."""
    return PlannedSource(
        len(paths),
        lambda: (
            Candidate(
                {"kind": None, "source_path": str(path)},
                reason=NOT_FOUND,
                detail="no such file or folder",
            )
            for path in paths
        ),
    )
