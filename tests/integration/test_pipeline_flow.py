"""The main job under Prefect on a small phantom set: stages, the one cache, invalidation,
rebuilding lost outputs, refresh, artifacts of the run under test."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
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


def artifact_keys(flow_run_id: Any) -> set[str]:
    """The keys of the artifacts published by one flow run (and its tasks), nothing else."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key for a in artifacts if a.key}


def run_pipeline(**kwargs: Any) -> tuple[dict[str, Any], Any]:
    """The pipeline's result and its flow run id."""
    from flows.pipeline import pipeline

    state = pipeline(**kwargs, return_state=True)
    return state.result(), state.state_details.flow_run_id


def test_pipeline_runs_caches_and_invalidates(phantom_images: Path, tmp_path: Path) -> None:
    root = tmp_path / "data"
    first, first_run = run_pipeline(
        images_dir=str(phantom_images), data_root=str(root), config=_config()
    )
    assert first["states"] == {
        **dict.fromkeys(EXPECTED_STAGES, "Completed"),
        "register": "Completed",
    }
    assert first["model_version"] == "v0001"

    report_dir = Path(first["report_dir"])
    assert report_dir == root / "reports" / first["run_id"]
    # One run id per flow run: validation docs and the report share one folder.
    assert sorted(p.name for p in (root / "reports").iterdir()) == [first["run_id"]]
    assert (report_dir / "validation" / "validation.html").is_file()
    metrics = json.loads((report_dir / "metrics.json").read_text())
    for key in ("accuracy", "roc_auc", "n_train", "n_val", "n_test", "split", "model"):
        assert key in metrics, key
    assert metrics["model"] == "braincls_resnet"
    assert metrics["split"].startswith("grouped")
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 120
    assert [row["source"] for row in metrics["by_source"]] == ["images"]
    for name in ("confusion_matrix.png", "training_curves.png", "report.html", "report.md"):
        assert (report_dir / name).is_file(), name
    assert "Research use only" in (report_dir / "report.html").read_text()
    assert not (root / ".prefect-results").exists()  # one cache: the stage records
    assert {
        "import-summary",
        "split-counts",
        "validation-results",
        "training-progress",
        "training-history",
        "evaluation-metrics",
        "evaluation-by-source",
        "promotion-decision",
    } <= artifact_keys(first_run)

    outputs = [Path(first["model_dir"]) / "model.keras", report_dir / "report.html"]
    written = [path.stat().st_mtime_ns for path in outputs]
    second, second_run = run_pipeline(
        images_dir=str(phantom_images), data_root=str(root), config=_config()
    )
    assert second["states"] == {**dict.fromkeys(EXPECTED_STAGES, "Cached"), "register": "Completed"}
    assert second["model_version"] == "v0001"  # the same model is not registered twice
    assert second["report_html"] == first["report_html"]
    # Nothing was trained or evaluated again: the model and the report were not rewritten.
    assert [path.stat().st_mtime_ns for path in outputs] == written
    # A cached run still tells the dashboard what it used, in its own artifacts.
    assert {"split-counts", "evaluation-metrics", "promotion-decision"} <= artifact_keys(second_run)

    # A new training section reruns training and evaluation only.
    third, _ = run_pipeline(
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

    # A new split seed reruns the split and everything after it.
    changed = _config().model_copy(update={"split": _config().split.model_copy(update={"seed": 7})})
    fourth, _ = run_pipeline(images_dir=str(phantom_images), data_root=str(root), config=changed)
    assert fourth["states"] == {
        "import": "Cached",
        "split": "Completed",
        "preprocess": "Completed",
        "validate": "Completed",
        "train": "Completed",
        "evaluate": "Completed",
        "register": "Completed",
    }


def test_lost_outputs_are_rebuilt_and_refresh_rebuilds_everything(
    phantom_images: Path, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    first, _ = run_pipeline(images_dir=str(phantom_images), data_root=str(root), config=_config())
    dataset = pd.read_parquet(
        next((root / "manifests" / "dataset").glob("*/dataset.parquet")), columns=["image_path"]
    )
    stored_png = root / str(dataset["image_path"].iloc[0])
    report = Path(first["report_html"])
    stored_png.unlink()
    report.unlink()

    # Without --refresh: the stages whose outputs are gone see it and rebuild them; the
    # others are reused.
    second, _ = run_pipeline(images_dir=str(phantom_images), data_root=str(root), config=_config())
    assert second["states"] == {
        "import": "Cached",
        "split": "Cached",
        "preprocess": "Completed",
        "validate": "Cached",
        "train": "Cached",
        "evaluate": "Completed",
        "register": "Completed",
    }
    assert stored_png.is_file()
    assert Path(second["report_html"]).is_file()
    assert second["report_dir"] != first["report_dir"]  # this run's own report folder

    # With --refresh: every stage runs again and rewrites what it wrote.
    model_file = Path(second["model_dir"]) / "model.keras"
    before = {path: path.stat().st_mtime_ns for path in (stored_png, model_file)}
    third, _ = run_pipeline(
        images_dir=str(phantom_images), data_root=str(root), config=_config(), refresh=True
    )
    assert third["states"] == {
        **dict.fromkeys(EXPECTED_STAGES, "Completed"),
        "register": "Completed",
    }
    assert all(path.stat().st_mtime_ns > mtime for path, mtime in before.items())
    assert Path(third["report_html"]).is_file()


def test_blocking_validation_failure_stops_before_training(
    phantom_images: Path, tmp_path: Path
) -> None:
    from braincls.validate.suite import ValidationFailed
    from flows.failures import StageFailed

    root = tmp_path / "data"
    config = _config().model_copy(
        update={"validate_": _config().validate_.model_copy(update={"min_count_per_class": 500})}
    )
    from flows.pipeline import pipeline

    state = pipeline(
        images_dir=str(phantom_images), data_root=str(root), config=config, return_state=True
    )
    assert state.is_failed()
    with pytest.raises(
        StageFailed,
        match=r"^validate failed: ValidationFailed: .*1 blocking check\(s\): labels.min_count_per_split"
        r".*What to do: open the Data Docs",
    ) as failure:
        state.result()
    assert isinstance(failure.value.__cause__, ValidationFailed)
    assert not (root / "runs").exists()  # training never started
    assert {"validation-results", "validation-summary"} <= artifact_keys(
        state.state_details.flow_run_id
    )
    assert "training-progress" not in artifact_keys(state.state_details.flow_run_id)
    summaries = list((root / "reports").glob("*/validation/validation.html"))
    assert len(summaries) == 1
    assert (
        os.listdir(root / "manifests" / "validate") == []
        if (root / "manifests" / "validate").exists()
        else True
    )  # a failed gate leaves no reusable record
