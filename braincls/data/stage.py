"""The data stages' entry points: import an image folder, split, preprocess.

Each takes paths or records, a config section and the data layout, writes its outputs under a
folder named by its content key, and returns an :class:`~braincls.common.records.Outcome`
holding a typed record. The records are what stages hand each other (never arrays).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from braincls.common.atomic import write_parquet
from braincls.common.hashing import sha256_file, tree_listing_hash
from braincls.common.layout import DataLayout
from braincls.common.records import (
    RECORD_FILE,
    Outcome,
    require,
    reusable,
    stage_key,
    write_record,
)
from braincls.common.tables import (
    IMAGE_COLUMNS,
    PREPROCESSED_COLUMNS,
    QUARANTINE_COLUMNS,
    SPLIT_COLUMN,
    SPLITS,
    read_manifest,
)
from braincls.config import (
    ImportConfig,
    LabelRuleConfig,
    PreprocessConfig,
    SplitConfig,
    VolumesConfig,
)

logger = logging.getLogger(__name__)

#: Code versions of the data stages: bump one when its output for the same input changes.
IMPORT_VERSION = "3"
VOLUMES_VERSION = "1"
SPLIT_VERSION = "3"
PREPROCESS_STAGE_VERSION = "2"


class SourceError(ValueError):
    """The sources cannot be combined (for example, they disagree on the class names)."""


@dataclass(frozen=True)
class SourceRecord:
    """An images manifest from one source: an image folder, DICOM folders or NIfTI volumes.

    ``config`` holds the settings that turned the source into images (recorded with the
    dataset and the model, so that evaluation and prediction prepare images the same way).
    """

    key: str
    name: str
    kind: str
    manifest_path: str
    quarantine_path: str
    class_names: list[str]
    n_images: int
    n_quarantined: int
    n_groups: int
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def output_paths(self) -> Iterable[Path]:
        """The tables this record names."""
        return [Path(self.manifest_path), Path(self.quarantine_path)]

    def describe(self) -> dict[str, Any]:
        """Name, kind and settings of the source, as recorded with datasets and models."""
        return {"name": self.name, "kind": self.kind, "config": self.config}


@dataclass(frozen=True)
class SplitRecord:
    """Output of the split stage: the sources' images with a ``split`` column."""

    key: str
    manifest_path: str
    quarantine_path: str
    class_names: list[str]
    strategy: str
    counts: dict[str, dict[str, int]]
    source: str
    sources: list[dict[str, Any]] = field(default_factory=list)

    def output_paths(self) -> Iterable[Path]:
        """The tables this record names."""
        return [Path(self.manifest_path), Path(self.quarantine_path)]


@dataclass(frozen=True)
class DatasetRecord:
    """Output of the preprocess stage: the training-ready manifest and how it was made."""

    key: str
    manifest_path: str
    manifest_sha256: str
    quarantine_path: str
    class_names: list[str]
    strategy: str
    image_size_px: int
    counts: dict[str, dict[str, int]]
    source: str
    data_root: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    preprocess: dict[str, Any] = field(default_factory=dict)
    n_written: int = 0

    def output_paths(self) -> Iterable[Path]:
        """The tables and every stored image this record names."""
        yield Path(self.manifest_path)
        yield Path(self.quarantine_path)
        if Path(self.manifest_path).is_file():
            frame = pd.read_parquet(self.manifest_path, columns=["image_path"])
            root = Path(self.data_root)
            for relative in frame["image_path"]:
                yield root / str(relative)

    def describe(self) -> dict[str, Any]:
        """What a model trained on this dataset records about its data."""
        return {
            "key": self.key,
            "manifest_sha256": self.manifest_sha256,
            "source": self.source,
            "sources": self.sources,
            "class_names": self.class_names,
            "strategy": self.strategy,
            "image_size_px": self.image_size_px,
            "preprocess": self.preprocess,
            "counts": self.counts,
        }


# ------------------------------------------------------------------------------------ import


def import_key(images_dir: Path, config: ImportConfig) -> str:
    """Key of the import stage: the folder's listing (paths, sizes, mtimes) and the config."""
    return stage_key(
        "import",
        IMPORT_VERSION,
        str(Path(images_dir).resolve()),
        tree_listing_hash(images_dir),
        config.config_hash(),
    )


def run_import(
    images_dir: Path, layout: DataLayout, config: ImportConfig, *, refresh: bool = False
) -> Outcome[SourceRecord]:
    """Import a class-per-folder image set into an images manifest and a quarantine table."""
    from braincls.data.images import import_image_folder

    key = import_key(images_dir, config)
    folder = layout.manifests / "import" / key
    found = reusable(folder / RECORD_FILE, SourceRecord, refresh=refresh)
    if found is not None:
        return Outcome(found, reused=True)
    result = import_image_folder(images_dir, config)
    write_parquet(folder / "images.parquet", result.manifest)
    write_parquet(folder / "quarantine.parquet", result.quarantine)
    record = SourceRecord(
        key=key,
        name=str(Path(images_dir).resolve().name),
        kind="images",
        manifest_path=str(folder / "images.parquet"),
        quarantine_path=str(folder / "quarantine.parquet"),
        class_names=list(result.class_names),
        n_images=len(result.manifest),
        n_quarantined=len(result.quarantine),
        n_groups=int(result.manifest["group_id"].nunique()),
        config=config.model_dump(mode="json"),
    )
    write_record(folder / RECORD_FILE, record)
    return Outcome(record, reused=False)


def volumes_key(source_dir: Path, config: VolumesConfig, rule: LabelRuleConfig) -> str:
    """Key of the volumes stage: the folder's listing, the volume settings, the labelling rule."""
    return stage_key(
        "volumes",
        VOLUMES_VERSION,
        str(Path(source_dir).resolve()),
        tree_listing_hash(source_dir),
        config.config_hash(),
        rule.config_hash(),
    )


def run_volumes(
    source_dir: Path,
    layout: DataLayout,
    config: VolumesConfig,
    rule: LabelRuleConfig,
    *,
    refresh: bool = False,
) -> Outcome[SourceRecord]:
    """Slice co-registered volumes (NIfTI) and label every slice from its segmentation mask.

    The slices are written as PNGs under ``converted/volumes/<key>/``; ``group_id`` is the case
    (the patient), so the split keeps a patient's slices and sequences on one side.
    """
    from braincls.common.atomic import atomic_dir
    from braincls.data.volumes import read_volumes

    key = volumes_key(source_dir, config, rule)
    folder = layout.manifests / "volumes" / key
    found = reusable(folder / RECORD_FILE, SourceRecord, refresh=refresh)
    if found is not None:
        return Outcome(found, reused=True)
    images_dir = layout.converted / "volumes" / key
    with atomic_dir(images_dir) as staging:
        result = read_volumes(source_dir, staging, config, rule)
    manifest = result.manifest.copy()
    if not manifest.empty:
        # The PNGs were written under the staging name; point at their final place.
        manifest["source_path"] = [
            str(images_dir / relative) for relative in manifest["relative_path"].astype(str)
        ]
    if manifest["label"].nunique() < 2:
        raise SourceError(
            f"{source_dir}: the volumes gave labelled slices of "
            f"{sorted(set(manifest['label'].astype(str)))} only ({result.cases_read} cases "
            f"read, set aside: {dict(result.reason_counts)}); training needs both classes"
        )
    write_parquet(folder / "images.parquet", manifest)
    write_parquet(folder / "quarantine.parquet", result.quarantine)
    record = SourceRecord(
        key=key,
        name=str(Path(source_dir).resolve().name),
        kind="volumes",
        manifest_path=str(folder / "images.parquet"),
        quarantine_path=str(folder / "quarantine.parquet"),
        class_names=sorted(set(manifest["label"].astype(str))),
        n_images=len(manifest),
        n_quarantined=len(result.quarantine),
        n_groups=int(manifest["group_id"].nunique()),
        config={**config.model_dump(mode="json"), "labels": rule.model_dump(mode="json")},
        summary={
            "cases_found": result.cases_found,
            "cases_read": result.cases_read,
            "labels": dict(result.label_counts),
            "set_aside_by_reason": {k: int(v) for k, v in result.reason_counts.items() if v},
        },
    )
    write_record(folder / RECORD_FILE, record)
    return Outcome(record, reused=False)


def read_source_quarantine(record: SourceRecord | SplitRecord | DatasetRecord) -> pd.DataFrame:
    """The quarantine table named by ``record``."""
    return read_manifest(require(record.quarantine_path), QUARANTINE_COLUMNS)


# ------------------------------------------------------------------------------------- split


def _counts(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        part = frame[frame[SPLIT_COLUMN] == split]
        counts[split] = {
            str(k): int(v) for k, v in part["label"].value_counts().sort_index().items()
        }
    return counts


def split_key(sources: Sequence[SourceRecord], config: SplitConfig) -> str:
    """Key of the split stage: every source manifest's bytes and the split config."""
    return stage_key(
        "split",
        SPLIT_VERSION,
        [sha256_file(require(record.manifest_path)) for record in sources],
        config.config_hash(),
    )


def combine_sources(sources: Sequence[SourceRecord]) -> tuple[pd.DataFrame, list[str]]:
    """The images manifests of ``sources`` as one table, and the common class names.

    Every source keeps its name in the ``source`` column; the sources must agree on their
    classes, and ``label_index`` follows the first source's class order.
    """
    if not sources:
        raise SourceError("no data source given")
    class_names = list(sources[0].class_names)
    for record in sources[1:]:
        if set(record.class_names) != set(class_names):
            raise SourceError(
                f"sources disagree on the classes: {sources[0].name} has {class_names}, "
                f"{record.name} has {record.class_names}; give them the same class names"
            )
    frames = [read_manifest(require(record.manifest_path)) for record in sources]
    if len(frames) == 1:
        return frames[0], class_names
    frame = pd.concat(frames, ignore_index=True)
    frame["label_index"] = frame["label"].map(class_names.index).astype("int64")
    duplicated = frame["sample_id"].duplicated()
    if duplicated.any():
        raise SourceError(
            f"{int(duplicated.sum())} images appear in two sources (same sample id, e.g. "
            f"{frame.loc[duplicated, 'sample_id'].iloc[0]}); give each image one source"
        )
    return frame, class_names


def run_split(
    sources: Sequence[SourceRecord],
    layout: DataLayout,
    config: SplitConfig,
    *,
    refresh: bool = False,
) -> Outcome[SplitRecord]:
    """Assign train / val / test, by near-duplicate group (or patient) unless told otherwise."""
    from braincls.data.split import split_manifest

    key = split_key(sources, config)
    folder = layout.manifests / "split" / key
    found = reusable(folder / RECORD_FILE, SplitRecord, refresh=refresh)
    if found is not None:
        return Outcome(found, reused=True)
    manifest, class_names = combine_sources(sources)
    frame = split_manifest(manifest, config)
    write_parquet(folder / "split.parquet", frame)
    if len(sources) == 1:
        quarantine_path = sources[0].quarantine_path
    else:
        quarantine = pd.concat(
            [read_source_quarantine(record) for record in sources], ignore_index=True
        )
        quarantine_path = str(write_parquet(folder / "quarantine.parquet", quarantine))
    out = SplitRecord(
        key=key,
        manifest_path=str(folder / "split.parquet"),
        quarantine_path=quarantine_path,
        class_names=class_names,
        strategy=config.strategy,
        counts=_counts(frame),
        source="+".join(record.name for record in sources),
        sources=[record.describe() for record in sources],
    )
    write_record(folder / RECORD_FILE, out)
    return Outcome(out, reused=False)


# -------------------------------------------------------------------------------- preprocess


def preprocess_stage_key(record: SplitRecord, config: PreprocessConfig) -> str:
    """Key of the preprocess stage: the split manifest's bytes and the preprocess config."""
    return stage_key(
        "preprocess",
        PREPROCESS_STAGE_VERSION,
        sha256_file(require(record.manifest_path)),
        config.config_hash(),
    )


def run_preprocess(
    record: SplitRecord, layout: DataLayout, config: PreprocessConfig, *, refresh: bool = False
) -> Outcome[DatasetRecord]:
    """Store every image at the training size; the dataset manifest names each stored PNG."""
    from braincls.data.preprocess import preprocess_manifest

    key = preprocess_stage_key(record, config)
    folder = layout.manifests / "dataset" / key
    found = reusable(folder / RECORD_FILE, DatasetRecord, refresh=refresh)
    if found is not None:
        return Outcome(found, reused=True)
    manifest = read_manifest(
        require(record.manifest_path), {**IMAGE_COLUMNS, SPLIT_COLUMN: "string"}
    )
    frame, written = preprocess_manifest(manifest, layout, config, overwrite=refresh)
    path = write_parquet(folder / "dataset.parquet", frame)
    out = DatasetRecord(
        key=key,
        manifest_path=str(path),
        manifest_sha256=sha256_file(path),
        quarantine_path=record.quarantine_path,
        class_names=record.class_names,
        strategy=record.strategy,
        image_size_px=config.image_size_px,
        counts=record.counts,
        source=record.source,
        data_root=str(layout.root),
        sources=record.sources,
        preprocess=config.model_dump(mode="json"),
        n_written=written,
    )
    write_record(folder / RECORD_FILE, out)
    return Outcome(out, reused=False)


def read_dataset(record: DatasetRecord) -> pd.DataFrame:
    """The training-ready manifest named by ``record``."""
    return read_manifest(
        require(record.manifest_path),
        {**IMAGE_COLUMNS, SPLIT_COLUMN: "string", **PREPROCESSED_COLUMNS},
    )
