"""The main job under Prefect on a small phantom set: stages, caching, invalidation, artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from braincls.config import PipelineConfig

EXPECTED_STAGES = ["import", "split", "preprocess", "validate", "train", "evaluate"]


@pytest.fixture(scope="module")
def phantom_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from devkit.phantom import generate_image_set

    out = tmp_path_factory.mktemp("phantom") / "images"
    generate_image_set(out, n_images=120, seed=5, image_size_px=96)
    return out


def _config(**train: Any) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "preprocess": {"image_size_px": 48},
            "train": {"epochs": 2, "batch_size": 16, "base_filters": 8, **train},
            "evaluate": {"bootstrap_resamples": 200, "gradcam_examples_per_category": 1},
        }
    )


def _latest_artifact_keys() -> set[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return {a.key for a in client.read_latest_artifacts() if a.key}


def test_pipeline_runs_caches_and_invalidates(phantom_images: Path, tmp_path: Path) -> None:
    from flows.pipeline import pipeline

    root = tmp_path / "data"
    first = pipeline(images_dir=str(phantom_images), data_root=str(root), config=_config())
    assert first["states"] == {
        **dict.fromkeys(EXPECTED_STAGES, "Completed"),
        "register": "Completed",
    }
    assert first["model_version"] == "v0001"

    report_dir = Path(first["report_dir"])
    assert report_dir.parent == root / "reports"
    metrics = json.loads((report_dir / "metrics.json").read_text())
    for key in ("accuracy", "roc_auc", "n_train", "n_val", "n_test", "split", "model"):
        assert key in metrics, key
    assert metrics["model"] == "braincls_resnet"
    assert metrics["split"].startswith("grouped")
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 120
    for name in ("confusion_matrix.png", "training_curves.png", "report.html", "report.md"):
        assert (report_dir / name).is_file(), name
    assert "Research use only" in (report_dir / "report.html").read_text()
    assert {
        "split-counts",
        "training-progress",
        "training-history",
        "evaluation-metrics",
    } <= _latest_artifact_keys()

    outputs = [Path(first["model_dir"]) / "model.keras", report_dir / "report.html"]
    written = [path.stat().st_mtime_ns for path in outputs]
    second = pipeline(images_dir=str(phantom_images), data_root=str(root), config=_config())
    assert second["states"] == {**dict.fromkeys(EXPECTED_STAGES, "Cached"), "register": "Completed"}
    assert second["model_version"] == "v0001"  # the same model is not registered twice
    assert second["report_html"] == first["report_html"]
    # Nothing was trained or evaluated again: the model and the report were not rewritten.
    assert [path.stat().st_mtime_ns for path in outputs] == written

    # A new training section reruns training and evaluation only.
    third = pipeline(
        images_dir=str(phantom_images), data_root=str(root), config=_config(learning_rate=5e-4)
    )
    assert third["states"] == {
        "import": "Cached",
        "split": "Cached",
        "preprocess": "Cached",
        "validate": "Cached",
        "train": "Completed",
        "evaluate": "Completed",
        "register": "Completed",
    }
    assert third["model_dir"] != first["model_dir"]
    assert third["model_version"] == "v0002"
    assert "promotion-decision" in _latest_artifact_keys()

    # A new split seed reruns the split and everything after it.
    changed = _config().model_copy(update={"split": _config().split.model_copy(update={"seed": 7})})
    fourth = pipeline(images_dir=str(phantom_images), data_root=str(root), config=changed)
    assert fourth["states"] == {
        "import": "Cached",
        "split": "Completed",
        "preprocess": "Completed",
        "validate": "Completed",
        "train": "Completed",
        "evaluate": "Completed",
        "register": "Completed",
    }


def test_blocking_validation_failure_stops_before_training(
    phantom_images: Path, tmp_path: Path
) -> None:
    from braincls.validate.suite import ValidationFailed
    from flows.failures import StageFailed
    from flows.pipeline import pipeline

    root = tmp_path / "data"
    config = _config().model_copy(
        update={"validate_": _config().validate_.model_copy(update={"min_count_per_class": 500})}
    )
    with pytest.raises(
        StageFailed,
        match=r"^validate failed: ValidationFailed: .*1 blocking check\(s\): labels.min_count_per_split"
        r".*What to do: open the Data Docs",
    ) as failure:
        pipeline(images_dir=str(phantom_images), data_root=str(root), config=config)
    assert isinstance(failure.value.__cause__, ValidationFailed)
    assert not (root / "runs").exists()  # training never started
    assert "validation-results" in _latest_artifact_keys()
    summaries = list((root / "reports").glob("*/validation/validation.html"))
    assert len(summaries) == 1
