"""The champion comparison: candidate and champions on the same test images, none of which a
compared model was trained or validated on."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pytest

from braincls.common.atomic import write_parquet
from braincls.common.layout import DataLayout
from braincls.common.tables import IMAGE_COLUMNS, PREPROCESSED_COLUMNS, SPLIT_COLUMN
from braincls.config import PreprocessConfig, RegistryConfig
from braincls.data.stage import DatasetRecord
from braincls.evaluate.stage import EvaluationRecord
from braincls.model.saved import TRAINING_SAMPLES_FILE
from braincls.registry.stage import compare_on_shared_test, earlier_champions
from braincls.registry.store import ModelRegistry

SIZE = 16
CONFIG = RegistryConfig(decision_metric="accuracy", min_sensitivity=0.0, min_roc_auc=0.0)
PREPROCESS = PreprocessConfig(image_size_px=SIZE).model_dump(mode="json")

#: Test images: (sample id, label, mean brightness). t0 is a tumour slice that looks like a
#: tumour-free one: a model that trained on it may have learnt it, one that did not cannot.
TEST_IMAGES = [("t0", 1, 40), ("t1", 1, 220), ("t2", 0, 40), ("t3", 0, 30), ("t4", 1, 200)]


def _brightness_model(path: Path) -> Path:
    """P(tumour) = sigmoid(10 * mean brightness (0..1) - 5): bright images are tumours."""
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([np.array([[10.0]]), np.array([-5.0])])
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def _dataset(root: Path, sources: dict[str, str] | None = None) -> DatasetRecord:
    rows = []
    for sample_id, label, brightness in TEST_IMAGES:
        image_path = f"images/{sample_id}.png"
        (root / "images").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / image_path), np.full((SIZE, SIZE), brightness, np.uint8))
        rows.append(
            {
                **dict.fromkeys(IMAGE_COLUMNS, "x"),
                "sample_id": sample_id,
                "source": (sources or {}).get(sample_id, "x"),
                "group_id": sample_id,
                "label": ["no", "yes"][label],
                "label_index": label,
                "width": SIZE,
                "height": SIZE,
                "channels": 1,
                "patient_id": None,
                SPLIT_COLUMN: "test",
                "image_path": image_path,
                "mean_intensity": float(brightness),
                "std_intensity": 0.0,
                "image_size_px": SIZE,
            }
        )
    columns = {**IMAGE_COLUMNS, SPLIT_COLUMN: "string", **PREPROCESSED_COLUMNS}
    path = write_parquet(root / "dataset.parquet", pd.DataFrame(rows).astype(columns))
    return DatasetRecord(
        key="d",
        manifest_path=str(path),
        manifest_sha256="d",
        quarantine_path=str(path),
        class_names=["no", "yes"],
        strategy="grouped",
        image_size_px=SIZE,
        counts={},
        source="test",
        data_root=str(root),
        preprocess=PREPROCESS,
    )


def _evaluation(root: Path, probabilities: dict[str, float]) -> EvaluationRecord:
    """The candidate's evaluation: its P(tumour) per test image, threshold 0.5."""
    predictions = write_parquet(
        root / "candidate" / "predictions.parquet",
        pd.DataFrame(
            {"sample_id": list(probabilities), "p_positive": list(probabilities.values())}
        ),
    )
    metrics = root / "candidate" / "metrics.json"
    metrics.write_text(json.dumps({"accuracy": 0.8, "sensitivity": 1.0, "roc_auc": 1.0}))
    return EvaluationRecord(
        key="e",
        run_id="r",
        report_dir="",
        report_html="",
        report_md="",
        metrics_path=str(metrics),
        predictions_path=str(predictions),
        metrics={},
        threshold=0.5,
        threshold_rule="fixed",
        model_sha256="c",
        dataset_manifest_sha256="d",
    )


def _register(registry: ModelRegistry, root: Path, name: str, trained_on: list[str] | None) -> str:
    model = _brightness_model(root / name / "model.keras")
    extra = []
    if trained_on is not None:
        extra.append(
            write_parquet(
                root / name / TRAINING_SAMPLES_FILE,
                pd.DataFrame({"sample_id": trained_on, "split": "train"}),
            )
        )
    metadata = {"threshold": 0.5, "image_size_px": SIZE, "preprocess": PREPROCESS}
    version = registry.register(model, {"accuracy": 0.9}, metadata, "# card", extra_files=extra)
    assert registry.promote(version.version).promoted
    return version.version


def test_a_champion_is_never_scored_on_images_it_trained_on(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    dataset = _dataset(tmp_path)
    registry = ModelRegistry(layout.models)
    champion = registry.get(_register(registry, tmp_path, "champion", trained_on=["t0", "x9"]))
    candidate = {"t0": 0.9, "t1": 0.9, "t2": 0.1, "t3": 0.8, "t4": 0.9}

    comparison = compare_on_shared_test(
        champion, [], dataset, _evaluation(tmp_path, candidate), layout, CONFIG
    )

    assert comparison.same_test_data is True
    assert (comparison.test_images, comparison.excluded_images) == (4, 1)
    # Scored on t1..t4 only: the champion gets all four right, the candidate three.
    assert (comparison.champion_value, comparison.candidate_value) == (1.0, 0.75)
    assert comparison.notes == [
        "1 of 5 test images were left out: a compared model was trained or validated on them."
    ]
    # The registered version carries its training samples, and its metadata names the file.
    assert (champion.path / TRAINING_SAMPLES_FILE).is_file()


def test_earlier_champions_are_scored_on_the_same_images(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    dataset = _dataset(tmp_path)
    registry = ModelRegistry(layout.models)
    first = _register(registry, tmp_path, "first", trained_on=["t1"])
    _register(registry, tmp_path, "old", trained_on=None)  # an older braincls: no list
    champion = registry.get(_register(registry, tmp_path, "champion", trained_on=[]))
    earlier = earlier_champions(registry, champion.version, "v0009")
    assert [version.version for version in earlier] == ["v0002", "v0001"]
    candidate = {"t0": 0.9, "t1": 0.9, "t2": 0.1, "t3": 0.1, "t4": 0.9}

    comparison = compare_on_shared_test(
        champion, earlier, dataset, _evaluation(tmp_path, candidate), layout, CONFIG
    )

    # t1 is left out for every model, as the first champion trained on it.
    assert (comparison.test_images, comparison.excluded_images) == (4, 1)
    assert comparison.candidate_value == 1.0
    assert comparison.champion_value == pytest.approx(0.75)
    assert comparison.earlier_champions == {"v0002": 0.75, first: 0.75}
    assert comparison.notes[0] == (
        "v0002 does not record the samples it was trained on (registered by an older "
        "braincls): it may have seen some of these test images."
    )


def test_a_differently_prepared_champion_falls_back_to_its_registered_metrics(
    tmp_path: Path,
) -> None:
    layout = DataLayout(tmp_path)
    dataset = _dataset(tmp_path)
    registry = ModelRegistry(layout.models)
    champion = registry.get(_register(registry, tmp_path, "champion", trained_on=[]))
    uncropped = {**PREPROCESS, "crop_to_head": False}
    other = DatasetRecord(**{**dataset.__dict__, "preprocess": uncropped})
    comparison = compare_on_shared_test(
        champion, [], other, _evaluation(tmp_path, {}), layout, CONFIG
    )
    assert comparison.same_test_data is False
    assert (comparison.candidate_value, comparison.champion_value) == (0.8, 0.9)
    assert comparison.notes[0].startswith(
        "The champion v0001 takes differently prepared images (another input size or preprocessing)"
    )


def test_the_comparison_is_made_per_source_and_refuses_a_model_worse_on_one(
    tmp_path: Path,
) -> None:
    from braincls.registry.promotion import decide_promotion

    layout = DataLayout(tmp_path)
    dataset = _dataset(tmp_path, {"t0": "a", "t1": "a", "t2": "a", "t3": "b", "t4": "b"})
    registry = ModelRegistry(layout.models)
    champion = registry.get(_register(registry, tmp_path, "champion", trained_on=[]))
    # The champion misses t0 (source a), the candidate misses t3 (source b).
    candidate = {"t0": 0.9, "t1": 0.9, "t2": 0.1, "t3": 0.8, "t4": 0.9}

    comparison = compare_on_shared_test(
        champion, [], dataset, _evaluation(tmp_path, candidate), layout, CONFIG
    )

    assert (comparison.candidate_value, comparison.champion_value) == (0.8, 0.8)
    assert comparison.by_source == {
        "a": {"candidate": 1.0, "champion": pytest.approx(2 / 3), "images": 3},
        "b": {"candidate": 0.5, "champion": 1.0, "images": 2},
    }
    decision = decide_promotion(
        "v0002",
        {"accuracy": 0.8, "sensitivity": 1.0, "roc_auc": 1.0},
        champion.version,
        CONFIG,
        comparison=comparison,
    )
    assert not decision.promoted
    assert decision.reasons[0].startswith(
        "Accuracy per source against the champion v0001: worse on 1 of 2 sources by more than "
        "the margin 0.0100 (b 0.5000 vs 1.0000)"
    )
