"""Image-folder source: import a class-per-folder data set, find near-duplicates, split by group.

Br35H (and many public MRI sets) holds the same slice several times: re-saved, rescaled, cropped,
brightness-changed. A split by file puts copies of one image on both sides and inflates every
score, so images are fingerprinted, near-duplicates are grouped, and whole groups are split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from braincls.config import ImportConfig, SplitConfig
from braincls.common.hashing import sha256_bytes
from braincls.common.tables import (
    IMAGE_COLUMNS,
    QUARANTINE_COLUMNS,
    SPLIT_COLUMN,
    SPLITS,
    coerce,
    empty_frame,
)

logger = logging.getLogger(__name__)

#: Folder names taken as the negative (no tumor) class, so that index 1 is the positive class.
NEGATIVE_CLASS_NAMES = frozenset({"no", "no_tumor", "notumor", "normal", "healthy", "negative"})

_HASH_SIDE_PX = 32
_HASH_LOW_FREQ = 8
_CONTENT_THRESHOLD = 20


class ImportError_(ValueError):
    """The image folder cannot be imported (missing, no classes, one class only)."""


@dataclass(frozen=True)
class ImportResult:
    """Result of importing an image folder."""

    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    class_names: tuple[str, ...]


def class_folders(images_dir: Path) -> list[Path]:
    """The class folders of a class-per-folder data set, negative class first.

    Raises :class:`ImportError_` when the folder is missing or has fewer than two classes.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ImportError_(f"{images_dir}: image folder not found")
    folders = [p for p in images_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(folders) < 2:
        names = ", ".join(sorted(p.name for p in folders)) or "none"
        raise ImportError_(
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


def content_box(gray: np.ndarray, threshold: int = _CONTENT_THRESHOLD) -> tuple[int, int, int, int]:
    """Bounding box (y0, y1, x0, x1) of pixels brighter than ``threshold``; whole image if none."""
    mask = gray > threshold
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0 or cols.size == 0:
        return 0, gray.shape[0], 0, gray.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def perceptual_hash(gray: np.ndarray) -> int:
    """64-bit DCT perceptual hash of the image's content box.

    The image is cropped to its non-background box (so added borders and crops of black canvas do
    not matter), resized to 32x32, transformed with a 2-D DCT; the 8x8 lowest frequencies (DC
    excluded from the median) are compared with their median. Brightness and contrast changes and
    rescaling leave the hash (nearly) unchanged.
    """
    y0, y1, x0, x1 = content_box(gray)
    crop = gray[y0:y1, x0:x1]
    small = cv2.resize(crop, (_HASH_SIDE_PX, _HASH_SIDE_PX), interpolation=cv2.INTER_AREA)
    coefficients = cv2.dct(small.astype(np.float32))[:_HASH_LOW_FREQ, :_HASH_LOW_FREQ].flatten()
    median = np.median(coefficients[1:])
    bits = coefficients > median
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def thumbnail(gray: np.ndarray) -> np.ndarray:
    """32x32 thumbnail of the content box, standardised so that a dot product is a correlation."""
    y0, y1, x0, x1 = content_box(gray)
    small = cv2.resize(
        gray[y0:y1, x0:x1], (_HASH_SIDE_PX, _HASH_SIDE_PX), interpolation=cv2.INTER_AREA
    )
    values = small.astype(np.float32).ravel()
    values = (values - values.mean()) / (values.std() + 1e-6)
    return (values / np.sqrt(values.size)).astype(np.float32)


def group_near_duplicates(
    hashes: np.ndarray,
    thumbnails: np.ndarray,
    max_distance_bits: int,
    min_correlation: float,
) -> np.ndarray:
    """Connected components of the near-duplicate graph; returns a component label per image.

    Two images are linked when their perceptual hashes differ in at most ``max_distance_bits``
    AND their content thumbnails correlate at least ``min_correlation``. The hash alone chains
    unrelated slices together through single links (on Br35H a 10-bit rule merged 300 images and
    26 groups of both classes); the correlation check removes those false links. Distances are
    computed in row blocks, so memory stays O(n * block).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    count = hashes.shape[0]
    block = 1024
    row_parts: list[np.ndarray] = []
    col_parts: list[np.ndarray] = []
    for start in range(0, count, block):
        stop = min(start + block, count)
        distances = np.bitwise_count(np.bitwise_xor(hashes[start:stop, None], hashes[None, :]))
        rows, cols = np.nonzero(distances <= max_distance_bits)
        rows = rows + start
        keep = cols > rows
        rows, cols = rows[keep], cols[keep]
        correlation = np.einsum("ij,ij->i", thumbnails[rows], thumbnails[cols])
        linked = correlation >= min_correlation
        row_parts.append(rows[linked])
        col_parts.append(cols[linked])
    rows = np.concatenate(row_parts) if row_parts else np.empty(0, dtype=np.int64)
    cols = np.concatenate(col_parts) if col_parts else np.empty(0, dtype=np.int64)
    graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(count, count))
    _, labels = connected_components(graph.tocsr(), directed=False)
    return np.asarray(labels)


def import_image_folder(images_dir: Path, config: ImportConfig) -> ImportResult:
    """Read every file of a class-per-folder set into a manifest; set aside what is unusable.

    Unreadable, empty, too small or non-image files go to the quarantine table with a reason;
    the import goes on. Near-duplicates (perceptual-hash distance within the configured bits)
    share a ``group_id``; byte-identical files always do.
    """
    images_dir = Path(images_dir).resolve()
    folders = class_folders(images_dir)
    class_names = tuple(p.name for p in folders)
    rows: list[dict[str, object]] = []
    quarantined: list[dict[str, str]] = []
    thumbs: list[np.ndarray] = []
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
                }
            )
            thumbs.append(thumbnail(gray))
    if not rows:
        raise ImportError_(f"{images_dir}: no readable images in {', '.join(class_names)}")
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
    hashes = np.array([int(h, 16) for h in frame["fingerprint"]], dtype=np.uint64)
    components = group_near_duplicates(
        hashes,
        np.stack(thumbs)[keep],
        config.near_duplicate_max_distance_bits,
        config.near_duplicate_min_correlation,
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
        raise ImportError_(f"{path}: missing columns {', '.join(sorted(missing))}")
    return dict(zip(table["relative_path"], table["group"], strict=True))


class SplitError(ValueError):
    """The manifest cannot be split as configured."""


def split_manifest(manifest: pd.DataFrame, config: SplitConfig) -> pd.DataFrame:
    """Assign every row to train, val or test; deterministic for ``config.seed``.

    ``grouped``: whole groups (near-duplicate group, or patient for DICOM data) are assigned,
    stratified by label (a group's label is its majority label), so no group is on two sides.
    ``random``: rows are assigned one by one, stratified by label (the seed project's way; copies
    of one image end up on both sides).
    """
    total = config.train_fraction + config.val_fraction + config.test_fraction
    if abs(total - 1.0) > 1e-6:
        raise SplitError(f"split fractions must add up to 1, got {total:.3f}")
    frame = manifest.copy()
    rng = np.random.default_rng(config.seed)
    if config.strategy == "random":
        units = frame[["sample_id", "label"]].rename(columns={"sample_id": "unit"})
        unit_column = "sample_id"
    else:
        units = (
            frame.groupby("group_id")["label"]
            .agg(lambda labels: labels.value_counts().index[0])
            .reset_index()
            .rename(columns={"group_id": "unit"})
        )
        unit_column = "group_id"
    sizes = frame.groupby(unit_column).size()
    assignment: dict[str, str] = {}
    for _label, members in sorted(units.groupby("label"), key=lambda item: str(item[0])):
        unit_ids = np.array(sorted(members["unit"].astype(str)))
        rng.shuffle(unit_ids)
        # Fill test, then val, by image count, so that large groups do not skew the fractions.
        counts = sizes.loc[unit_ids].to_numpy()
        cumulative = np.cumsum(counts) / counts.sum()
        test_end = config.test_fraction
        val_end = config.test_fraction + config.val_fraction
        for unit, position in zip(unit_ids, cumulative - counts / counts.sum() / 2, strict=True):
            if position < test_end:
                assignment[unit] = "test"
            elif position < val_end:
                assignment[unit] = "val"
            else:
                assignment[unit] = "train"
    frame[SPLIT_COLUMN] = frame[unit_column].astype(str).map(assignment).astype("string")
    for split in SPLITS:
        present = set(frame.loc[frame[SPLIT_COLUMN] == split, "label"])
        missing = sorted(set(frame["label"]) - present)
        if missing:
            raise SplitError(
                f"split '{split}' has no images of class {', '.join(missing)}: "
                "too few images or groups for the configured fractions"
            )
    return frame
