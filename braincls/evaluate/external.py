"""External validation: a saved model scored on data it never saw, prepared exactly as its
training data was, at the threshold fixed at evaluation (never tuned on the external data)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from braincls.common.layout import DataLayout
from braincls.common.tables import SPLIT_COLUMN
from braincls.config import (
    ConvertConfig,
    EvaluateConfig,
    ImportConfig,
    LabelRuleConfig,
    PreprocessConfig,
    PseudonymSaltMissing,
    VolumesConfig,
)
from braincls.evaluate.evaluation import EvaluationError, EvaluationResult, evaluate_model
from braincls.model.saved import SavedModel, SavedModelError, read_saved_model


def model_data_root(model_dir: Path) -> Path | None:
    """The data root a training output (``<root>/runs/<key>/model``) or a registry version
    (``<root>/models/vNNNN``) lies under, if it is one of those."""
    model_dir = Path(model_dir).resolve()
    if model_dir.parent.parent.name == "runs":
        return model_dir.parents[2]
    if model_dir.parent.name == "models":
        return model_dir.parents[1]
    return None


def convert_config_of(saved: SavedModel) -> ConvertConfig:
    """The DICOM conversion settings the model's DICOM training data was converted with, or the
    defaults when it was trained on no DICOM (the report says which)."""
    recorded = saved.source_config("dicom")
    if recorded is None:
        return ConvertConfig()
    return ConvertConfig.model_validate({k: v for k, v in recorded.items() if k != "labels"})


def labelling_rule_of(saved: SavedModel, kind: str) -> LabelRuleConfig:
    """The labelling rule the model's ``kind`` training data was labelled with, or the default."""
    recorded = saved.source_config(kind) or {}
    return LabelRuleConfig.model_validate(recorded.get("labels") or {})


def _converted_dicom(
    dicom_dir: Path, labels_path: Path | None, layout: DataLayout, saved: SavedModel
) -> pd.DataFrame:
    """Convert a labelled DICOM folder (per-series cache under the data root) with the model's
    conversion settings, to a manifest whose label indices follow the model's class order.
    Labels come from ``labels_path`` where it names an image, else from the folder's
    segmentations by the model's labelling rule."""
    from braincls.common.tables import read_manifest
    from braincls.convert import ConversionError, LabelsError, convert_tree, load_labels

    try:
        table = load_labels(labels_path) if labels_path is not None else None
        result = convert_tree(
            dicom_dir,
            layout.converted,
            convert_config_of(saved),
            table,
            rule=labelling_rule_of(saved, "dicom"),
        )
    except (ConversionError, LabelsError, PseudonymSaltMissing) as error:
        raise EvaluationError(str(error)) from error
    unknown = sorted(set(result.class_names) - set(saved.class_names))
    if unknown:
        raise EvaluationError(
            f"{labels_path or dicom_dir}: labels {unknown} are not classes of the model "
            f"({saved.class_names})"
        )
    frame = read_manifest(result.images_manifest)
    if frame.empty:
        raise EvaluationError(
            f"{dicom_dir}: no labelled image ({result.set_aside} files set aside, "
            f"{result.unlabelled} unlabelled); see {result.quarantine_table}"
        )
    frame["label_index"] = frame["label"].map(saved.class_names.index).astype("int64")
    return frame


def volumes_settings_of(saved: SavedModel) -> tuple[VolumesConfig, LabelRuleConfig]:
    """The volume settings (sequences, plane, PNG size) and labelling rule the model's volume
    training data was made with, or the defaults when it saw no volumes."""
    recorded = saved.source_config("volumes")
    if recorded is None:
        return VolumesConfig(), LabelRuleConfig()
    rule = LabelRuleConfig.model_validate(recorded.get("labels") or {})
    config = VolumesConfig.model_validate({k: v for k, v in recorded.items() if k != "labels"})
    return config, rule


def _sliced_volumes(volumes_dir: Path, layout: DataLayout, saved: SavedModel) -> pd.DataFrame:
    """NIfTI volumes with masks, sliced and labelled as the model's volume data was."""
    from braincls.data.stage import SourceError, run_volumes

    config, _ = volumes_settings_of(saved)
    rule = labelling_rule_of(saved, "volumes")
    try:
        record = run_volumes(volumes_dir, layout, config, rule).record
    except SourceError as error:
        raise EvaluationError(str(error)) from error
    frame = pd.read_parquet(record.manifest_path)
    unknown = sorted(set(frame["label"].astype(str)) - set(saved.class_names))
    if unknown:
        raise EvaluationError(
            f"{volumes_dir}: labels {unknown} are not classes of the model ({saved.class_names})"
        )
    frame["label_index"] = frame["label"].map(saved.class_names.index).astype("int64")
    return frame


def _imported_images(images_dir: Path, saved: SavedModel) -> pd.DataFrame:
    """A class-per-folder image set, imported with the model's import settings."""
    from braincls.data.images import import_image_folder

    recorded = saved.source_config("images")
    config = ImportConfig.model_validate(recorded) if recorded else ImportConfig()
    imported = import_image_folder(images_dir, config)
    if list(imported.class_names) != saved.class_names:
        raise EvaluationError(
            f"{images_dir}: classes {list(imported.class_names)} differ from the model's "
            f"{saved.class_names}"
        )
    return imported.manifest.copy()


def evaluate_external(
    model_dir: Path,
    images_dir: Path,
    data_root: Path,
    config: EvaluateConfig | None = None,
    *,
    run_id: str,
    dicom_labels: Path | None = None,
    dicom: bool = False,
    volumes: bool = False,
) -> EvaluationResult:
    """Evaluate a saved model on every image of a labelled data set.

    ``images_dir`` is a class-per-folder image set; with ``dicom`` (or ``dicom_labels``, a labels
    table) a folder of DICOM (e.g. a TCIA collection), labelled by the table or its
    segmentations; with ``volumes`` a folder of NIfTI volumes with
    segmentation masks (labelled by the rule the model was trained with). Its classes may be a
    subset of the model's (e.g. healthy volunteers only). The images are converted and prepared with the settings
    saved with the model; the decision threshold is the one fixed when the model was
    evaluated. Every image is test data.
    """
    from braincls.data.preprocess import preprocess_manifest
    from braincls.evaluate.stage import ThresholdMissing, fixed_threshold

    model_dir = Path(model_dir)
    try:
        saved = read_saved_model(model_dir)
        own_root = model_data_root(model_dir)
        threshold = fixed_threshold(
            model_dir, [Path(data_root), *([own_root] if own_root is not None else [])]
        )
    except (SavedModelError, ThresholdMissing) as error:
        raise EvaluationError(str(error)) from error
    preprocess = PreprocessConfig.model_validate(saved.preprocess)
    layout = DataLayout(Path(data_root))
    if dicom or dicom_labels is not None:
        frame = _converted_dicom(
            Path(images_dir), Path(dicom_labels) if dicom_labels else None, layout, saved
        )
        source_name = ", ".join(sorted(frame["source"].astype(str).unique()))
    elif volumes:
        frame = _sliced_volumes(Path(images_dir), layout, saved)
        source_name = Path(images_dir).name
    else:
        frame = _imported_images(Path(images_dir), saved)
        source_name = Path(images_dir).name
    frame[SPLIT_COLUMN] = "test"
    frame, _ = preprocess_manifest(frame, layout, preprocess)
    external = (config or EvaluateConfig()).model_copy(
        update={"threshold_rule": "fixed", "threshold": threshold}
    )
    return evaluate_model(
        saved.model_path,
        frame,
        layout.root,
        layout.reports / run_id,
        external,
        run_id=run_id,
        model_name=saved.model_name,
        class_names=saved.class_names,
        strategy="grouped",
        source=f"{source_name} (external: not seen in training)",
        history=None,
        model_version=saved.version,
    )
