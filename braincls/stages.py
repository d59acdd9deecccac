"""The pipeline's stages as plain functions over paths and small records.

Each stage reads its inputs from files named in a record, writes its outputs under a folder named
by its *content key* (input hashes + config section + stage version), and returns a small record.
A stage called again with the same key finds its finished output and does no work; Prefect tasks
wrap these functions and add retries, caching and artifacts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from braincls.common.atomic import write_json, write_parquet
from braincls.config import (
    ConvertConfig,
    EvaluateConfig,
    ImportConfig,
    PreprocessConfig,
    SplitConfig,
    TrainConfig,
    stable_hash,
)
from braincls.common.hashing import sha256_file, tree_listing_hash
from braincls.common.layout import DataLayout
from braincls.common.tables import (
    IMAGE_COLUMNS,
    PREPROCESSED_COLUMNS,
    QUARANTINE_COLUMNS,
    SPLIT_COLUMN,
    SPLITS,
    read_manifest,
)

logger = logging.getLogger(__name__)

#: Stage code versions: bump one when its output for the same input changes.
STAGE_VERSIONS = {
    "import": "1",
    "convert": "1",
    "split": "1",
    "preprocess": "1",
    "validate": "1",
    "train": "1",
    "evaluate": "1",
}


class StageOutputMissing(FileNotFoundError):
    """A record names a file that is gone (deleted by hand after a cached run)."""


def _require(path: Path) -> Path:
    if not Path(path).exists():
        raise StageOutputMissing(
            f"{path}: output of an earlier stage is missing; rerun with --refresh "
            "(or delete <data root>/.prefect-results) to rebuild it"
        )
    return Path(path)


def stage_key(stage: str, *parts: object) -> str:
    """Content key of a stage: its version plus the hashes and config it reads."""
    return stable_hash({"stage": stage, "version": STAGE_VERSIONS[stage], "parts": parts})[:24]


@dataclass(frozen=True)
class ImportRecord:
    """Output of the import stage."""

    key: str
    manifest_path: str
    quarantine_path: str
    class_names: list[str]
    n_images: int
    n_quarantined: int
    n_groups: int
    source: str


@dataclass(frozen=True)
class SplitRecord:
    """Output of the split stage."""

    key: str
    manifest_path: str
    quarantine_path: str
    class_names: list[str]
    strategy: str
    counts: dict[str, dict[str, int]]
    source: str


@dataclass(frozen=True)
class DatasetRecord:
    """Output of the preprocess stage: the training-ready manifest."""

    key: str
    manifest_path: str
    manifest_sha256: str
    quarantine_path: str
    class_names: list[str]
    strategy: str
    image_size_px: int
    counts: dict[str, dict[str, int]]
    source: str
    n_written: int = 0
    preprocess: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelRecord:
    """Output of the training stage."""

    key: str
    model_dir: str
    model_path: str
    model_sha256: str
    model_name: str
    epochs_run: int
    history: dict[str, list[float]] = field(default_factory=dict)


def _write_record(path: Path, record: Any) -> None:
    write_json(path, asdict(record))


def _read_record(path: Path, cls: type[Any]) -> Any:
    return cls(**json.loads(Path(path).read_text()))


def import_key(images_dir: Path, config: ImportConfig) -> str:
    """Key of the import stage: the folder's listing (paths, sizes, mtimes) and the config."""
    return stage_key(
        "import",
        str(Path(images_dir).resolve()),
        tree_listing_hash(images_dir),
        config.config_hash(),
    )


def run_import(images_dir: Path, layout: DataLayout, config: ImportConfig) -> ImportRecord:
    """Import a class-per-folder image set into an images manifest and a quarantine table."""
    from braincls.data.images import import_image_folder

    key = import_key(images_dir, config)
    folder = layout.manifests / "import" / key
    record_path = folder / "record.json"
    if record_path.is_file():
        return _read_record(record_path, ImportRecord)
    result = import_image_folder(images_dir, config)
    write_parquet(folder / "images.parquet", result.manifest)
    write_parquet(folder / "quarantine.parquet", result.quarantine)
    record = ImportRecord(
        key=key,
        manifest_path=str(folder / "images.parquet"),
        quarantine_path=str(folder / "quarantine.parquet"),
        class_names=list(result.class_names),
        n_images=len(result.manifest),
        n_quarantined=len(result.quarantine),
        n_groups=int(result.manifest["group_id"].nunique()),
        source=str(Path(images_dir).resolve().name),
    )
    _write_record(record_path, record)
    return record


class NoLabelledImages(ValueError):
    """A DICOM source produced no image with a label: there is nothing to train on."""


def convert_key(sources: list[Path], labels_path: Path | None, config: ConvertConfig) -> str:
    """Key of the conversion stage: each source folder's listing, the labels table, the config.

    The per-series conversion cache below it is keyed by MD5s; this key only decides whether
    the folders must be walked again at all.
    """
    return stage_key(
        "convert",
        [[str(Path(src).resolve()), tree_listing_hash(Path(src))] for src in sources],
        sha256_file(Path(labels_path)) if labels_path is not None else None,
        config.config_hash(),
    )


def run_convert(
    sources: list[Path],
    layout: DataLayout,
    config: ConvertConfig,
    labels_path: Path | None = None,
    *,
    workers: int | None = None,
) -> ImportRecord:
    """Convert DICOM folders (e.g. ``raw/<Collection>``) into one images manifest.

    The manifest has the image-folder manifest's columns (so split, preprocess and the rest
    treat both sources alike) plus the DICOM ones; ``group_id`` is the patient, so the split
    keeps each patient on one side. Raises :class:`NoLabelledImages` when nothing is labelled.
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
            f"{labels_path}: labels table not found; DICOM images need one to be trained on "
            "(see braincls/dicom/labels.py for its format)"
        )
    key = convert_key(sources, labels_path, config)
    folder = layout.manifests / "convert" / key
    record_path = folder / "record.json"
    if record_path.is_file():
        return _read_record(record_path, ImportRecord)
    table = load_labels(Path(labels_path)) if labels_path is not None else None
    images: list[pd.DataFrame] = []
    quarantine: list[pd.DataFrame] = []
    for index, src in enumerate(sources):
        result = convert_tree(
            Path(src),
            layout.converted,
            config,
            table,
            workers=workers,
            manifest_dir=folder / "parts" / str(index),
        )
        images.append(pd.read_parquet(result.images_manifest))
        quarantine.append(pd.read_parquet(result.quarantine_table))
    manifest = pd.concat(images, ignore_index=True)
    set_aside = pd.concat(quarantine, ignore_index=True)
    if manifest.empty:
        reasons = set_aside["reason"].value_counts().to_dict() if len(set_aside) else {}
        raise NoLabelledImages(
            f"{', '.join(map(str, sources))}: no labelled image to train on "
            f"({len(set_aside)} files set aside: {reasons}); "
            + ("give a labels table" if table is None else "check the labels table's identifiers")
        )
    write_parquet(folder / "images.parquet", manifest)
    write_parquet(folder / "quarantine.parquet", set_aside)
    record = ImportRecord(
        key=key,
        manifest_path=str(folder / "images.parquet"),
        quarantine_path=str(folder / "quarantine.parquet"),
        class_names=list(table.classes) if table is not None else [],
        n_images=len(manifest),
        n_quarantined=len(set_aside),
        n_groups=int(manifest["group_id"].nunique()),
        source="+".join(sorted(set(manifest["source"].astype(str)))),
    )
    _write_record(record_path, record)
    return record


def _counts(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        part = frame[frame[SPLIT_COLUMN] == split]
        counts[split] = {
            str(k): int(v) for k, v in part["label"].value_counts().sort_index().items()
        }
    return counts


def split_key(record: ImportRecord, config: SplitConfig) -> str:
    """Key of the split stage: the images manifest's bytes and the split config."""
    return stage_key(
        "split", sha256_file(_require(Path(record.manifest_path))), config.config_hash()
    )


def run_split(record: ImportRecord, layout: DataLayout, config: SplitConfig) -> SplitRecord:
    """Assign train / val / test, by near-duplicate group (or patient) unless told otherwise."""
    from braincls.data.images import split_manifest

    key = split_key(record, config)
    folder = layout.manifests / "split" / key
    record_path = folder / "record.json"
    if record_path.is_file():
        return _read_record(record_path, SplitRecord)
    manifest = read_manifest(_require(Path(record.manifest_path)))
    frame = split_manifest(manifest, config)
    write_parquet(folder / "split.parquet", frame)
    out = SplitRecord(
        key=key,
        manifest_path=str(folder / "split.parquet"),
        quarantine_path=record.quarantine_path,
        class_names=record.class_names,
        strategy=config.strategy,
        counts=_counts(frame),
        source=record.source,
    )
    _write_record(record_path, out)
    return out


def preprocess_key_for(record: SplitRecord, config: PreprocessConfig) -> str:
    """Key of the preprocess stage: the split manifest's bytes and the preprocess config."""
    return stage_key(
        "preprocess", sha256_file(_require(Path(record.manifest_path))), config.config_hash()
    )


def run_preprocess(
    record: SplitRecord, layout: DataLayout, config: PreprocessConfig
) -> DatasetRecord:
    """Store every image at the training size; the dataset manifest names each stored PNG."""
    from braincls.data.preprocess import preprocess_manifest

    key = preprocess_key_for(record, config)
    folder = layout.manifests / "dataset" / key
    record_path = folder / "record.json"
    if record_path.is_file():
        return _read_record(record_path, DatasetRecord)
    manifest = read_manifest(
        _require(Path(record.manifest_path)), {**IMAGE_COLUMNS, SPLIT_COLUMN: "string"}
    )
    frame, written = preprocess_manifest(manifest, layout, config)
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
        n_written=written,
        preprocess=config.model_dump(mode="json"),
    )
    _write_record(record_path, out)
    return out


def read_dataset(record: DatasetRecord) -> pd.DataFrame:
    """The training-ready manifest named by ``record``."""
    return read_manifest(
        _require(Path(record.manifest_path)),
        {**IMAGE_COLUMNS, SPLIT_COLUMN: "string", **PREPROCESSED_COLUMNS},
    )


def read_quarantine(record: DatasetRecord | SplitRecord | ImportRecord) -> pd.DataFrame:
    """The quarantine table named by ``record``."""
    return read_manifest(_require(Path(record.quarantine_path)), QUARANTINE_COLUMNS)


def train_key(record: DatasetRecord, config: TrainConfig) -> str:
    """Key of the training stage: the dataset manifest's hash and the training config."""
    return stage_key("train", record.manifest_sha256, config.config_hash())


def run_train(
    record: DatasetRecord,
    layout: DataLayout,
    config: TrainConfig,
    on_epoch_end: Any = None,
) -> ModelRecord:
    """Train on the dataset; the model folder appears whole when training has finished."""
    from braincls.train.fit import MODEL_FILE, RECORD_FILE, train_model

    key = train_key(record, config)
    model_dir = layout.runs / key / "model"
    record_path = layout.runs / key / "record.json"
    if record_path.is_file() and (model_dir / MODEL_FILE).is_file():
        return _read_record(record_path, ModelRecord)
    result = train_model(
        read_dataset(record),
        layout.root,
        model_dir,
        layout.runs / key / "work",
        config,
        image_size_px=record.image_size_px,
        manifest_sha256=record.manifest_sha256,
        class_names=record.class_names,
        on_epoch_end=on_epoch_end,
    )
    out = ModelRecord(
        key=key,
        model_dir=str(model_dir),
        model_path=str(model_dir / MODEL_FILE),
        model_sha256=sha256_file(model_dir / MODEL_FILE),
        model_name=config.model,
        epochs_run=result.epochs_run,
        history=result.history,
    )
    if not (model_dir / RECORD_FILE).is_file():
        raise StageOutputMissing(f"{model_dir}: training finished without {RECORD_FILE}")
    _write_record(record_path, out)
    return out


def read_model_record(record: DatasetRecord, data_root: Path, config: TrainConfig) -> ModelRecord:
    """The record a finished training of ``record`` with ``config`` wrote under ``data_root``."""
    key = train_key(record, config)
    path = DataLayout(Path(data_root)).runs / key / "record.json"
    return _read_record(_require(path), ModelRecord)


def evaluate_key(model: ModelRecord, dataset: DatasetRecord, config: EvaluateConfig) -> str:
    """Key of the evaluation stage: model bytes, dataset manifest and evaluation config."""
    return stage_key("evaluate", model.model_sha256, dataset.manifest_sha256, config.config_hash())


def run_evaluate(
    model: ModelRecord,
    dataset: DatasetRecord,
    layout: DataLayout,
    config: EvaluateConfig,
    run_id: str,
) -> Any:
    """Evaluate the model on the test split; the report goes to ``reports/<run_id>/``.

    An evaluation with the same key (same model bytes, dataset and config) is not repeated:
    its earlier record, naming its earlier report, is returned.
    """
    from dataclasses import replace

    from braincls.evaluate.evaluation import EvaluationRecord, evaluate_model

    key = evaluate_key(model, dataset, config)
    pointer = layout.manifests / "evaluate" / key / "record.json"
    if pointer.is_file():
        return _read_record(pointer, EvaluationRecord)
    result = evaluate_model(
        _require(Path(model.model_path)),
        read_dataset(dataset),
        layout.root,
        layout.reports / run_id,
        config,
        run_id=run_id,
        model_name=model.model_name,
        class_names=dataset.class_names,
        strategy=dataset.strategy,
        source=dataset.source,
        history=model.history,
        data_hash=dataset.manifest_sha256,
    )
    record = replace(result, key=key)
    # The model folder remembers its fixed threshold and preprocessing, for external validation.
    train_record_path = Path(model.model_dir) / "train_record.json"
    train_record = json.loads(train_record_path.read_text())
    train_record["threshold"] = record.metrics["threshold"]
    train_record["preprocess"] = dataset.preprocess
    write_json(train_record_path, train_record)
    _write_record(Path(record.report_dir) / "evaluation.json", record)
    _write_record(pointer, record)
    return record


@dataclass(frozen=True)
class ValidationRecord:
    """Output of the validation gate (only a passing gate produces one)."""

    key: str
    success: bool
    warnings: list[str]
    blocking_failures: list[str]
    docs_index: str | None
    summary_html: str | None
    table_rows: list[dict[str, Any]]
    markdown: str


def validate_key(record: DatasetRecord, config: Any) -> str:
    """Key of the validation stage: dataset manifest, quarantine table and the suite (with its
    configured thresholds and version)."""
    from braincls.validate.suite import suite_hash

    quarantine = sha256_file(_require(Path(record.quarantine_path)))
    return stage_key("validate", record.manifest_sha256, quarantine, suite_hash(config))


def run_validate(
    record: DatasetRecord, layout: DataLayout, config: Any, run_id: str
) -> tuple[ValidationRecord, Any]:
    """Run the Great Expectations suite on the dataset and its quarantine table.

    Data Docs (readable offline) go to ``reports/<run_id>/validation/``. Returns the outcome
    whether or not it passed, with the full report; the caller decides to stop
    (:meth:`braincls.validate.suite.ValidationReport.raise_for_failure`).
    """
    from braincls.validate.suite import run_validation

    report = run_validation(
        read_dataset(record),
        read_quarantine(record),
        config,
        docs_dir=layout.reports / run_id / "validation",
    )
    out = ValidationRecord(
        key=validate_key(record, config),
        success=report.success,
        warnings=list(report.warnings),
        blocking_failures=list(report.blocking_failures),
        docs_index=None if report.docs_index is None else str(report.docs_index),
        summary_html=None if report.summary_html is None else str(report.summary_html),
        table_rows=[dict(row) for row in report.table_rows()],
        markdown=report.to_markdown(),
    )
    return out, report


@dataclass(frozen=True)
class RegistrationRecord:
    """Outcome of registering a trained model and deciding on its promotion."""

    version: str
    promoted: bool
    champion: str | None
    summary: str
    reasons: list[str]
    decision: dict[str, Any]


def run_register(
    model: ModelRecord,
    dataset: DatasetRecord,
    evaluation: Any,
    layout: DataLayout,
    config: Any,
) -> RegistrationRecord:
    """Register the model as a new version and promote it if it beats the champion.

    A model already registered (same bytes) is not registered twice. The champion is evaluated
    on this run's test split when it takes the same input size, so both are judged on the same
    data; otherwise its registered metrics are used and the decision says so.
    """
    from braincls import __version__
    from braincls.registry.store import ModelRegistry, model_card_markdown

    registry = ModelRegistry(layout.models)
    metrics = json.loads(Path(evaluation.metrics_path).read_text())
    existing = [
        v for v in registry.list() if v.metadata().get("model_sha256") == model.model_sha256
    ]
    if existing:
        version = existing[-1]
    else:
        card = model_card_markdown(
            model_name=model.model_name,
            training_data=f"{dataset.source} ({sum(sum(c.values()) for c in dataset.counts.values())} images)",
            data_hash=dataset.manifest_sha256,
            split_strategy=str(metrics.get("split")),
            config={"train_key": model.key, "image_size_px": dataset.image_size_px},
            code_version=__version__,
            metrics=metrics,
            intervals=metrics.get("confidence_intervals"),
            threshold=metrics.get("threshold"),
            threshold_rule=metrics.get("threshold_rule"),
        )
        version = registry.register(
            Path(model.model_path),
            metrics,
            {
                "model_sha256": model.model_sha256,
                "model_name": model.model_name,
                "dataset_manifest_sha256": dataset.manifest_sha256,
                "image_size_px": dataset.image_size_px,
                "preprocess_key": dataset.key,
                "report": evaluation.report_html,
                "threshold": metrics.get("threshold"),
                "train_record": json.loads(
                    (Path(model.model_dir) / "train_record.json").read_text()
                ),
            },
            card,
        )
    champion = registry.champion()
    champion_metrics = None
    if champion is not None and champion.version != version.version:
        champion_metrics = _champion_on_same_data(champion, dataset, layout)
    decision = registry.promote_if_better(
        version.version,
        config,
        champion_metrics,
        compared_champion=None if champion is None else champion.version,
    )
    return RegistrationRecord(
        version=version.version,
        promoted=decision.promoted,
        champion=decision.champion_after,
        summary=decision.summary,
        reasons=list(decision.reasons),
        decision=decision.to_dict(),
    )


def _champion_on_same_data(
    champion: Any, dataset: DatasetRecord, layout: DataLayout
) -> dict[str, Any] | None:
    """The champion's test metrics on this dataset's test split, or None when it takes
    differently prepared images (another size or preprocessing)."""
    from braincls.evaluate.evaluation import _split_part, load_images, load_model, predict_probabilities
    from braincls.evaluate.metrics import binary_metrics

    meta = champion.metadata()
    if meta.get("image_size_px") != dataset.image_size_px:
        return None
    frame = read_dataset(dataset)
    paths, labels = _split_part(frame, "test", layout.root)
    model = load_model(champion.model_path)
    probabilities = predict_probabilities(model, load_images(paths, dataset.image_size_px))
    threshold = float(meta.get("threshold") or 0.5)
    return dict(binary_metrics(labels, probabilities, threshold))
