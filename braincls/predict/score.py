"""Scoring: candidates in, one prediction row per image or slice out, plus a summary per
series, volume and patient.

The model is called exactly as evaluation calls it (:func:`~braincls.model.saved.
predict_probabilities` on uint8 arrays shaped like :func:`~braincls.data.stored.
load_stored_images`' output), and P(tumour) is compared with the threshold fixed at evaluation
the way evaluation compares it (``p >= threshold``), so ``predict`` and ``evaluate`` agree to the
last bit on the same image.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from braincls.common.progress import Progress, ProgressCallback, report
from braincls.predict.inputs import (
    Candidate,
    PlannedSource,
    find_sources,
    plan_dicom,
    plan_dicom_files,
    plan_images,
    plan_missing,
    plan_volume,
)
from braincls.predict.model import PredictError, ScoringModel

logger = logging.getLogger(__name__)

#: Columns of the predictions table, in order (nullable dtypes: a column may not apply).
PREDICTION_COLUMNS: dict[str, str] = {
    "kind": "string",  # image | dicom | volume
    "source_path": "string",  # the image or volume file, or the set-aside DICOM file
    "patient_id": "string",  # (0010,0020), DICOM only
    "study_instance_uid": "string",  # (0020,000D)
    "series_instance_uid": "string",  # (0020,000E)
    "sop_instance_uid": "string",  # (0008,0018)
    "frame_index": "Int64",  # 0-based frame of a multi-frame instance
    "slice_index": "Int64",  # 0-based slice of a volume, or position in its DICOM series
    "slice_position": "Float64",  # mm along the slice normal (DICOM)
    "p_tumour": "Float64",  # P(positive class); <NA> when not scored
    "predicted_class": "string",  # positive class when p_tumour >= threshold
    "threshold": "float64",  # fixed at evaluation
    "model_version": "string",
    "reason": "string",  # why the image was not scored (<NA> when scored)
    "detail": "string",
    "gradcam_path": "string",  # the Grad-CAM overlay, with --gradcam
}

#: Columns of the summary table.
SUMMARY_COLUMNS: dict[str, str] = {
    "level": "string",  # series | patient | volume
    "patient_id": "string",
    "series_instance_uid": "string",
    "source_path": "string",
    "n_images": "int64",
    "n_scored": "int64",
    "n_set_aside": "int64",
    "max_p_tumour": "Float64",
    "max_slice_index": "Int64",  # the slice with the highest P(tumour)
    "n_over_threshold": "int64",
    "slices_over_threshold": "string",  # slice indices, comma-separated (series, volume)
    "n_series": "Int64",  # patient level
    "n_series_over_threshold": "Int64",  # patient level
    "predicted_class": "string",  # positive when any slice is over the threshold
    "threshold": "float64",
    "model_version": "string",
}

#: Reasons of DICOM objects that are no slice of an image series (left out of the summary).
NOT_SLICES: tuple[str, ...] = ("non_image_object", "segmentation")

#: Images scored per model call; the same as evaluation's.
BATCH_SIZE = 64


@dataclass
class Scored:
    """Scored candidates: the prediction rows and, when asked, each row's model input."""

    rows: pd.DataFrame
    pixels: list[np.ndarray | None] = field(default_factory=list)


@dataclass(frozen=True)
class PredictionResult:
    """The predictions table and its summary."""

    predictions: pd.DataFrame
    summary: pd.DataFrame

    @property
    def n_scored(self) -> int:
        """Images that got a probability."""
        return int(self.predictions["p_tumour"].notna().sum())


def _safe_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[-60:].strip("._") or "image"


def _overlay_name(index: int, fields: dict[str, Any]) -> str:
    if fields.get("sop_instance_uid"):
        stem = f"{fields['sop_instance_uid']}-f{fields.get('frame_index') or 0}"
    else:
        stem = Path(str(fields.get("source_path") or "image")).name
        if fields.get("slice_index") is not None:
            stem += f"-s{fields['slice_index']:03d}"
    return f"{index:06d}-{_safe_stem(stem)}.png"


def _write_overlays(
    model: ScoringModel,
    explainer: Any,
    batch: np.ndarray,
    fields: list[dict[str, Any]],
    first_index: int,
    gradcam_dir: Path,
) -> list[str]:
    import cv2

    from braincls.common.atomic import write_bytes
    from braincls.data.preprocess import encode_png
    from braincls.model.gradcam import overlay_heatmap

    heatmaps = explainer.heatmaps(batch)
    paths = []
    for offset, (image, heatmap, row) in enumerate(zip(batch, heatmaps, fields, strict=True)):
        rgb = overlay_heatmap(image[..., 0], heatmap, alpha=0.4)
        target = gradcam_dir / _overlay_name(first_index + offset, row)
        write_bytes(target, encode_png(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)))
        paths.append(str(target))
    return paths


def score_candidates(
    candidates: Iterable[Candidate],
    model: ScoringModel,
    *,
    total: int | None = None,
    gradcam_dir: Path | None = None,
    keep_pixels: bool = False,
    on_progress: ProgressCallback | None = None,
    batch_size: int = BATCH_SIZE,
) -> Scored:
    """Score ``candidates`` in batches; one row per candidate (set-aside ones with their
    reason), in the order given. ``gradcam_dir`` writes a Grad-CAM overlay per scored image
    there; ``keep_pixels`` returns each row's model input too."""
    from braincls.model.saved import predict_probabilities

    explainer = None
    if gradcam_dir is not None:
        from braincls.model.gradcam import GradcamExplainer

        explainer = GradcamExplainer(model.keras_model)
    rows: list[dict[str, Any]] = []
    kept: list[np.ndarray | None] = []
    pending: list[tuple[int, np.ndarray]] = []
    done = 0
    last_report = 0.0

    def flush() -> None:
        if pending:
            batch = np.stack([pixels for _, pixels in pending])[..., None]
            probabilities = predict_probabilities(model.keras_model, batch, batch_size=batch_size)
            overlays: list[str | None] = [None] * len(pending)
            if explainer is not None and gradcam_dir is not None:
                try:
                    overlays = list(
                        _write_overlays(
                            model,
                            explainer,
                            batch,
                            [rows[index] for index, _ in pending],
                            pending[0][0],
                            gradcam_dir,
                        )
                    )
                except Exception as error:  # an aid: its failure must not lose the scores
                    logger.warning("Grad-CAM skipped for %d images: %s", len(pending), error)
            for (index, _), probability, overlay in zip(
                pending, probabilities, overlays, strict=True
            ):
                rows[index]["p_tumour"] = float(probability)
                rows[index]["predicted_class"] = (
                    model.positive_class if probability >= model.threshold else model.negative_class
                )
                rows[index]["gradcam_path"] = overlay
            pending.clear()

    def progress() -> None:
        nonlocal last_report
        now = time.monotonic()
        if now - last_report >= 0.5:
            last_report = now
            report(on_progress, Progress("score", done=done, total=total, unit="images"))

    for candidate in candidates:
        index = len(rows)
        rows.append(
            {
                **candidate.fields,
                "threshold": model.threshold,
                "model_version": model.version,
                "reason": candidate.reason,
                "detail": candidate.detail,
            }
        )
        kept.append(candidate.pixels if keep_pixels else None)
        done += 1
        if candidate.pixels is not None:
            pending.append((index, candidate.pixels))
        if len(pending) >= batch_size:
            flush()
        progress()
    flush()
    report(
        on_progress,
        Progress("score", done=done, total=total or done, unit="images", finished=True),
    )
    return Scored(rows=prediction_frame(rows), pixels=kept)


def prediction_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The predictions table of ``rows`` (missing columns are <NA>)."""
    return pd.DataFrame(
        {
            name: pd.Series([row.get(name) for row in rows], dtype=dtype)
            for name, dtype in PREDICTION_COLUMNS.items()
        }
    )


def _indices(values: pd.Series) -> str | None:
    shown = sorted(int(v) for v in values.dropna())
    return ",".join(str(v) for v in shown) if shown else None


def _group_row(
    level: str, part: pd.DataFrame, threshold: float, version: str, positive: str, negative: str
) -> dict[str, Any]:
    scored = part[part["p_tumour"].notna()]
    over = scored[scored["p_tumour"] >= threshold]
    probabilities = scored["p_tumour"].astype("float64").to_numpy()
    top = scored.iloc[int(np.argmax(probabilities))] if len(scored) else None
    return {
        "level": level,
        "patient_id": part["patient_id"].dropna().iloc[0]
        if part["patient_id"].notna().any()
        else None,
        "n_images": len(part),
        "n_scored": len(scored),
        "n_set_aside": len(part) - len(scored),
        "max_p_tumour": None if top is None else float(top["p_tumour"]),
        "max_slice_index": None
        if top is None or pd.isna(top["slice_index"])
        else int(top["slice_index"]),
        "n_over_threshold": len(over),
        "slices_over_threshold": _indices(over["slice_index"]),
        "predicted_class": None if top is None else (positive if len(over) else negative),
        "threshold": threshold,
        "model_version": version,
    }


def summarise(predictions: pd.DataFrame, model: ScoringModel) -> pd.DataFrame:
    """One row per DICOM series, per DICOM patient and per volume: images, scored, set aside,
    the highest P(tumour) and its slice, the slices over the threshold, and the call (the
    positive class when any slice is over the threshold)."""
    threshold, version = model.threshold, model.version
    positive, negative = model.positive_class, model.negative_class
    rows: list[dict[str, Any]] = []
    # Segmentations and reports are objects beside the images, not slices of a series.
    dicom = predictions[
        (predictions["kind"] == "dicom")
        & predictions["series_instance_uid"].notna()
        & ~predictions["reason"].isin(NOT_SLICES).fillna(False)
    ]
    for series, part in dicom.groupby("series_instance_uid", sort=False):
        rows.append(
            {
                **_group_row("series", part, threshold, version, positive, negative),
                "series_instance_uid": series,
            }
        )
    series_rows = pd.DataFrame(rows)
    for patient, part in dicom[dicom["patient_id"].notna()].groupby("patient_id", sort=False):
        row = _group_row("patient", part, threshold, version, positive, negative)
        mine = (
            series_rows[series_rows["patient_id"] == patient] if len(series_rows) else series_rows
        )
        row["slices_over_threshold"] = None
        row["n_series"] = len(mine)
        row["n_series_over_threshold"] = (
            int((mine["n_over_threshold"] > 0).sum()) if len(mine) else 0
        )
        rows.append(row)
    volumes = predictions[predictions["kind"] == "volume"]
    for path, part in volumes.groupby("source_path", sort=False):
        rows.append(
            {
                **_group_row("volume", part, threshold, version, positive, negative),
                "source_path": path,
            }
        )
    return pd.DataFrame(
        {
            name: pd.Series([row.get(name) for row in rows], dtype=dtype)
            for name, dtype in SUMMARY_COLUMNS.items()
        }
    )


def plan_paths(
    paths: Sequence[Path],
    model: ScoringModel,
    converted_root: Path,
    work_dir: Path,
    *,
    on_progress: ProgressCallback | None = None,
) -> list[PlannedSource]:
    """Every source under ``paths``, planned: DICOM converted (into ``converted_root``),
    volume headers read, image files listed."""
    sources = find_sources(
        paths, model.import_config.extensions, mask_pattern=model.volumes[0].mask_pattern
    )
    planned: list[PlannedSource] = []
    skip = frozenset(sources.not_dicom)
    for folder in sources.dicom_dirs:
        planned.append(
            plan_dicom(
                folder,
                converted_root,
                model,
                skip=skip,
                manifest_dir=Path(work_dir) / f"dicom-manifest-{len(planned)}",
                on_progress=on_progress,
            )
        )
    if sources.dicom_files:
        planned.append(
            plan_dicom_files(
                sources.dicom_files, converted_root, model, work_dir, on_progress=on_progress
            )
        )
    planned.extend(plan_volume(path, model) for path in sources.volumes)
    if sources.images:
        planned.append(plan_images(sources.images, model))
    if sources.missing:
        planned.append(plan_missing(sources.missing))
    return planned


def predict_paths(
    paths: Sequence[Path],
    model: ScoringModel,
    converted_root: Path,
    *,
    work_dir: Path | None = None,
    gradcam_dir: Path | None = None,
    on_progress: ProgressCallback | None = None,
) -> PredictionResult:
    """Score every image, DICOM instance or frame and volume slice under ``paths`` (files or
    folders, any layout): one row each, set-aside ones with their reason, and the summary.

    DICOM is converted into the per-series cache under ``converted_root`` (a data root's
    ``converted/``, or a temporary folder); ``work_dir`` holds this call's manifests (a
    temporary folder by default, removed afterwards).
    """
    if not paths:
        raise PredictError("nothing to score: give image files, DICOM or NIfTI volumes")
    with tempfile.TemporaryDirectory(prefix="braincls-predict-") as default_work:
        work = Path(work_dir) if work_dir is not None else Path(default_work)
        planned = plan_paths(paths, model, converted_root, work, on_progress=on_progress)
        total = sum(source.count for source in planned)

        def everything() -> Iterable[Candidate]:
            for source in planned:
                yield from source.candidates()

        scored = score_candidates(
            everything(),
            model,
            total=total,
            gradcam_dir=gradcam_dir,
            on_progress=on_progress,
        )
    return PredictionResult(scored.rows, summarise(scored.rows, model))


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` atomically as CSV or parquet, by ``path``'s suffix."""
    from braincls.common.atomic import write_parquet, write_text

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return write_parquet(path, frame)
    if suffix == ".csv":
        return write_text(path, frame.to_csv(index=False))
    raise PredictError(f"{path}: write predictions to a .csv or .parquet file")


def summary_path(predictions_path: Path) -> Path:
    """Where the summary of ``predictions.csv`` goes: ``predictions.summary.csv``."""
    path = Path(predictions_path)
    return path.with_name(f"{path.stem}.summary{path.suffix}")
