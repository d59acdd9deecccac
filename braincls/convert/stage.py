"""The conversion stage's entry point: DICOM folders become one images manifest."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from braincls.common.atomic import write_parquet
from braincls.common.hashing import sha256_file, tree_listing_hash
from braincls.common.layout import DataLayout
from braincls.common.progress import ProgressCallback
from braincls.common.records import RECORD_FILE, Outcome, reusable, stage_key, write_record
from braincls.config import ConvertConfig, LabelRuleConfig
from braincls.data.stage import SourceRecord

#: Code version of the conversion stage (the per-series cache below has its own).
CONVERT_STAGE_VERSION = "2"


class NoLabelledImages(ValueError):
    """A DICOM source produced no image with a label: there is nothing to train on."""


def convert_key(
    sources: Sequence[Path],
    labels_path: Path | None,
    config: ConvertConfig,
    rule: LabelRuleConfig | None = None,
) -> str:
    """Key of the conversion stage: each source folder's listing, the labels table, the config
    and the labelling rule.

    The per-series conversion cache below it is keyed by MD5s; this key only decides whether
    the folders must be walked again at all.
    """
    return stage_key(
        "convert",
        CONVERT_STAGE_VERSION,
        [[str(Path(src).resolve()), tree_listing_hash(Path(src))] for src in sources],
        sha256_file(Path(labels_path)) if labels_path is not None else None,
        config.config_hash(),
        (rule or LabelRuleConfig()).config_hash(),
    )


def recorded_convert_config(config: ConvertConfig) -> dict[str, object]:
    """The conversion settings as recorded with datasets and models (never the salt, which
    is no field of the config)."""
    return config.model_dump(mode="json", exclude={"workers"})


def pseudonymised_sources(sources: Sequence[Path], config: ConvertConfig) -> list[str]:
    """The names of the source folders whose Patient IDs were pseudonymised."""
    from braincls.convert.privacy import resolve_pseudonymisation

    return [
        Path(src).name
        for src in sources
        if resolve_pseudonymisation(config, Path(src)).pseudonymize_patient_id
    ]


def run_convert(
    sources: Sequence[Path],
    layout: DataLayout,
    config: ConvertConfig,
    labels_path: Path | None = None,
    *,
    rule: LabelRuleConfig | None = None,
    workers: int | None = None,
    refresh: bool = False,
    on_progress: ProgressCallback | None = None,
) -> Outcome[SourceRecord]:
    """Convert DICOM folders (e.g. ``raw/<Collection>``) into one images manifest.

    Labels come from the labels table where it names an image, else from the DICOM SEG and
    RTSTRUCT objects in the folders (the labelling ``rule``); ``label_source`` says which. The
    manifest has the image-folder manifest's columns (so split, preprocess and the rest treat
    both sources alike) plus the DICOM ones; ``group_id`` is the patient, so the split keeps
    each patient on one side. Raises :class:`NoLabelledImages` when nothing is labelled.
    """
    from braincls.convert import ConversionError, convert_tree, load_labels

    # Missing inputs raise ConversionError, not FileNotFoundError: they are not worth a retry.
    if not sources:
        raise ConversionError("no DICOM source folder given")
    for src in sources:
        if not Path(src).is_dir():
            raise ConversionError(f"{src}: DICOM source folder not found")
    if labels_path is not None and not Path(labels_path).is_file():
        raise ConversionError(
            f"{labels_path}: labels table not found (see braincls/convert/labels.py for its "
            "format; without one, labels come from the segmentations in the folders)"
        )
    rule = rule or LabelRuleConfig()
    key = convert_key(sources, labels_path, config, rule)
    folder = layout.manifests / "convert" / key
    found = reusable(folder / RECORD_FILE, SourceRecord, refresh=refresh)
    if found is not None:
        return Outcome(found, reused=True)
    table = load_labels(Path(labels_path)) if labels_path is not None else None
    images: list[pd.DataFrame] = []
    quarantine: list[pd.DataFrame] = []
    classes: set[str] = set()
    label_sources: dict[str, int] = {}
    segmentations: list[dict[str, object]] = []
    for index, src in enumerate(sources):
        result = convert_tree(
            Path(src),
            layout.converted,
            config,
            table,
            workers=workers,
            manifest_dir=folder / "parts" / str(index),
            refresh=refresh,
            rule=rule,
            on_progress=on_progress,
        )
        images.append(pd.read_parquet(result.images_manifest))
        quarantine.append(pd.read_parquet(result.quarantine_table))
        classes |= set(result.class_names)
        for name, count in result.label_sources.items():
            label_sources[name] = label_sources.get(name, 0) + count
        segmentations.extend(result.segmentations)
    manifest = pd.concat(images, ignore_index=True)
    set_aside = pd.concat(quarantine, ignore_index=True)
    if manifest.empty:
        reasons = set_aside["reason"].value_counts().to_dict() if len(set_aside) else {}
        raise NoLabelledImages(
            f"{', '.join(map(str, sources))}: no labelled image to train on "
            f"({len(set_aside)} files set aside: {reasons}); "
            + (
                "give a labels table, or segmentations (DICOM SEG / RTSTRUCT) of the series"
                if table is None
                else "check the labels table's identifiers"
            )
        )
    # The classes of every labelled image (the validation gate checks that each split holds
    # both); label indices follow their sorted order.
    class_names = sorted(classes | set(manifest["label"].astype(str)))
    manifest["label_index"] = manifest["label"].map(class_names.index).astype("int64")
    write_parquet(folder / "images.parquet", manifest)
    write_parquet(folder / "quarantine.parquet", set_aside)
    by_reason = {
        str(reason): int(count)
        for reason, count in set_aside["reason"].value_counts().sort_index().items()
    }
    record = SourceRecord(
        key=key,
        name="+".join(sorted(set(manifest["source"].astype(str)))),
        kind="dicom",
        manifest_path=str(folder / "images.parquet"),
        quarantine_path=str(folder / "quarantine.parquet"),
        class_names=class_names,
        n_images=len(manifest),
        n_quarantined=len(set_aside),
        n_groups=int(manifest["group_id"].nunique()),
        config={**recorded_convert_config(config), "labels": rule.model_dump(mode="json")},
        summary={
            "patients": int(manifest["group_id"].nunique()),
            "set_aside_by_reason": by_reason,
            "label_sources": label_sources,
            "segmentations": segmentations,
            # Folder names only: which sources' Patient IDs are pseudonyms (privacy.py).
            "pseudonymised_sources": pseudonymised_sources(sources, config),
        },
    )
    write_record(folder / RECORD_FILE, record)
    return Outcome(record, reused=False)
