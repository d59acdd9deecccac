"""The scoring stage's entry point: score paths with a registered model (the champion by
default) and write the predictions under the data root."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from braincls.common.atomic import write_json
from braincls.common.layout import DataLayout
from braincls.common.progress import ProgressCallback
from braincls.common.records import RECORD_FILE, json_safe

PREDICTIONS_FILE = "predictions.parquet"
SUMMARY_FILE = "summary.parquet"
GRADCAM_FOLDER = "gradcam"


@dataclass(frozen=True)
class ScoreRecord:
    """What a scoring run wrote and found (paths and counts, no tables)."""

    run_id: str
    predictions_path: str
    summary_path: str
    model_version: str
    model_dir: str
    threshold: float
    sources: list[str]
    n_images: int
    n_scored: int
    n_set_aside: int
    n_over_threshold: int
    n_series: int
    n_series_over_threshold: int
    n_volumes: int
    n_volumes_over_threshold: int
    reasons: dict[str, int] = field(default_factory=dict)
    gradcam_dir: str | None = None


def run_score(
    paths: list[Path],
    layout: DataLayout,
    run_id: str,
    *,
    model_dir: Path | None = None,
    version: str | None = None,
    gradcam: bool = False,
    on_progress: ProgressCallback | None = None,
) -> ScoreRecord:
    """Score ``paths`` (image files, DICOM in any layout, NIfTI volumes) with ``model_dir``,
    registry ``version`` or the champion, at its fixed threshold; write
    ``predictions/<run_id>/predictions.parquet``, ``summary.parquet`` and ``record.json``.

    DICOM is converted into the data root's per-series cache with the model's conversion
    settings (a collection the model was trained on converts nothing again).
    """
    from braincls.predict.model import open_model, resolve_model_dir
    from braincls.predict.score import predict_paths, write_table

    folder = resolve_model_dir(layout.root, model_dir, version)
    model = open_model(folder, layout.root)
    out_dir = layout.predictions / run_id
    gradcam_dir = out_dir / GRADCAM_FOLDER if gradcam else None
    result = predict_paths(
        [Path(p) for p in paths],
        model,
        layout.converted,
        gradcam_dir=gradcam_dir,
        on_progress=on_progress,
    )
    predictions_path = write_table(result.predictions, out_dir / PREDICTIONS_FILE)
    summary_path = write_table(result.summary, out_dir / SUMMARY_FILE)
    summary = result.summary
    series = summary[summary["level"] == "series"]
    volumes = summary[summary["level"] == "volume"]
    predictions = result.predictions
    record = ScoreRecord(
        run_id=run_id,
        predictions_path=str(predictions_path),
        summary_path=str(summary_path),
        model_version=model.version,
        model_dir=str(folder),
        threshold=model.threshold,
        sources=[str(p) for p in paths],
        n_images=len(predictions),
        n_scored=result.n_scored,
        n_set_aside=len(predictions) - result.n_scored,
        n_over_threshold=int((predictions["predicted_class"] == model.positive_class).sum()),
        n_series=len(series),
        n_series_over_threshold=int((series["n_over_threshold"] > 0).sum()),
        n_volumes=len(volumes),
        n_volumes_over_threshold=int((volumes["n_over_threshold"] > 0).sum()),
        reasons={str(k): int(v) for k, v in Counter(predictions["reason"].dropna()).items()},
        gradcam_dir=None if gradcam_dir is None else str(gradcam_dir),
    )
    write_json(out_dir / RECORD_FILE, json_safe(record.__dict__))
    return record
