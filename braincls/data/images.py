"""Image-folder source: a class-per-folder data set (e.g. Br35H) becomes an images manifest.

Every file is fingerprinted and near-duplicates are grouped (:mod:`braincls.data.fingerprint`),
so that the split keeps copies of one slice on one side.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from braincls.common.hashing import sha256_bytes
from braincls.common.tables import (
    IMAGE_COLUMNS,
    QUARANTINE_COLUMNS,
    coerce,
    empty_frame,
)
from braincls.config import ImportConfig
from braincls.data.duplicates import SliceDescriptor, describe, group_near_duplicates
from braincls.data.fingerprint import perceptual_hash

logger = logging.getLogger(__name__)

#: Folder names taken as the negative (no tumor) class, so that index 1 is the positive class.
NEGATIVE_CLASS_NAMES = frozenset({"no", "no_tumor", "notumor", "normal", "healthy", "negative"})


class ImageFolderError(ValueError):
    """The image folder cannot be imported (missing, no classes, one class only)."""


@dataclass(frozen=True)
class ImportResult:
    """Result of importing an image folder."""

    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    class_names: tuple[str, ...]


def class_folders(images_dir: Path) -> list[Path]:
    """The class folders of a class-per-folder data set, negative class first.

    Raises :class:`ImageFolderError` when the folder is missing or has fewer than two classes.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ImageFolderError(f"{images_dir}: image folder not found")
    folders = [p for p in images_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(folders) < 2:
        names = ", ".join(sorted(p.name for p in folders)) or "none"
        raise ImageFolderError(
            f"{images_dir}: needs at least two class folders (e.g. yes/ and no/), found {names}"
        )
    return sorted(folders, key=lambda p: (p.name.lower() not in NEGATIVE_CLASS_NAMES, p.name))


def decode_image(data: bytes) -> np.ndarray | None:
    """Decode image bytes with OpenCV, keeping channels; ``None`` if undecodable."""
    if not data:
        return None
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        return None
    return image


def to_gray(image: np.ndarray) -> np.ndarray:
    """Grayscale uint8 view of a decoded image (BGR, BGRA, gray, or 16-bit)."""
    if image.dtype != np.uint8:
        scale = 255.0 / max(float(image.max()), 1.0)
        image = np.clip(image.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3:
        return image[:, :, 0]
    return image


def import_image_folder(images_dir: Path, config: ImportConfig) -> ImportResult:
    """Read every file of a class-per-folder set into a manifest; set aside what is unusable.

    Unreadable, empty, too small or non-image files go to the quarantine table with a reason;
    the import goes on. Near-duplicates (the same slice re-saved with other intensities, crop,
    scale, blur or orientation; :mod:`braincls.data.duplicates`) share a ``group_id``;
    byte-identical files are one sample.
    """
    images_dir = Path(images_dir).resolve()
    folders = class_folders(images_dir)
    class_names = tuple(p.name for p in folders)
    rows: list[dict[str, object]] = []
    quarantined: list[dict[str, str]] = []
    descriptors: list[SliceDescriptor | None] = []
    extensions = {e.lower() for e in config.extensions}
    for label_index, folder in enumerate(folders):
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            relative = path.relative_to(images_dir).as_posix()
            if path.name.startswith("."):
                continue

            def set_aside(reason: str, path: Path = path, relative: str = relative) -> None:
                quarantined.append(
                    {"source_path": str(path), "relative_path": relative, "reason": reason}
                )
                logger.warning("set aside %s: %s", relative, reason)

            if path.suffix.lower() not in extensions:
                set_aside(f"not an image file (extension {path.suffix or 'none'})")
                continue
            try:
                data = path.read_bytes()
            except OSError as error:
                set_aside(f"unreadable: {error.strerror}")
                continue
            if not data:
                set_aside("empty file (0 bytes)")
                continue
            image = decode_image(data)
            if image is None:
                set_aside("not decodable as an image")
                continue
            height, width = image.shape[:2]
            if min(height, width) < config.min_side_px:
                set_aside(f"too small: {width}x{height} px, minimum side {config.min_side_px} px")
                continue
            gray = to_gray(image)
            if int(gray.max()) == int(gray.min()):
                set_aside("constant image (every pixel has one value)")
                continue
            digest = sha256_bytes(data)
            rows.append(
                {
                    "sample_id": digest,
                    "source": images_dir.name,
                    "source_path": str(path),
                    "relative_path": relative,
                    "label": folder.name,
                    "label_index": label_index,
                    "width": width,
                    "height": height,
                    "channels": 1 if image.ndim == 2 else int(image.shape[2]),
                    "sha256": digest,
                    "fingerprint": f"{perceptual_hash(gray):016x}",
                    "group_id": "",
                    "patient_id": None,
                    "label_source": "folder",
                }
            )
            try:
                descriptors.append(describe(gray))
            except ValueError as error:
                # Not describable (no head found): it is its own group.
                logger.info("no near-duplicate descriptor for %s: %s", relative, error)
                descriptors.append(None)
    if not rows:
        raise ImageFolderError(f"{images_dir}: no readable images in {', '.join(class_names)}")
    frame = pd.DataFrame(rows)
    # Byte-identical copies of one file are one sample; keep the first, set the others aside.
    duplicated = frame.duplicated("sha256", keep="first")
    for _, row in frame[duplicated].iterrows():
        quarantined.append(
            {
                "source_path": str(row["source_path"]),
                "relative_path": str(row["relative_path"]),
                "reason": "exact duplicate of another file (same sha256)",
            }
        )
    keep = ~duplicated.to_numpy()
    frame = frame[keep].reset_index(drop=True)
    components = near_duplicate_groups(
        [descriptor for descriptor, kept in zip(descriptors, keep, strict=True) if kept], config
    )
    # Name each group after its first member's hash so that ids do not depend on file order.
    first_member = pd.Series(frame["sha256"].to_numpy()).groupby(components).transform("min")
    frame["group_id"] = [f"g{digest[:16]}" for digest in first_member]
    known = read_groups_file(images_dir)
    if known:
        # A data set that knows its patients (or heads) says so; that beats any fingerprint.
        listed = frame["relative_path"].map(known)
        frame.loc[listed.notna(), "group_id"] = "p-" + listed[listed.notna()].astype(str)
        frame.loc[listed.notna(), "patient_id"] = listed[listed.notna()].astype(str)
    manifest = coerce(frame, IMAGE_COLUMNS)
    quarantine = (
        coerce(pd.DataFrame(quarantined), QUARANTINE_COLUMNS)
        if quarantined
        else empty_frame(QUARANTINE_COLUMNS)
    )
    return ImportResult(manifest=manifest, quarantine=quarantine, class_names=class_names)


def near_duplicate_groups(
    descriptors: list[SliceDescriptor | None], config: ImportConfig
) -> np.ndarray:
    """A group number per image: verified near-duplicates share one, the rest are alone."""
    present = [index for index, descriptor in enumerate(descriptors) if descriptor is not None]
    labels = np.arange(len(descriptors), dtype=np.int64) + len(descriptors)
    if present:
        grouped = group_near_duplicates(
            [descriptors[index] for index in present],  # type: ignore[misc]
            min_local_agreement=config.near_duplicate_min_local_agreement,
            min_overlap_fraction=config.near_duplicate_min_overlap_fraction,
        )
        labels[present] = grouped
    return labels


GROUPS_FILE = "groups.csv"


def read_groups_file(images_dir: Path) -> dict[str, str]:
    """Known groups from ``<images_dir>/groups.csv`` (columns ``relative_path,group``), if any.

    Rows name files relative to the image folder; their group (a patient, or a synthetic head)
    replaces the near-duplicate group, so the split keeps each patient on one side.
    """
    path = Path(images_dir) / GROUPS_FILE
    if not path.is_file():
        return {}
    table = pd.read_csv(path, dtype=str)
    missing = {"relative_path", "group"} - set(table.columns)
    if missing:
        raise ImageFolderError(f"{path}: missing columns {', '.join(sorted(missing))}")
    return dict(zip(table["relative_path"], table["group"], strict=True))
