"""Real data: Br35H's near-duplicates are grouped, and a small real run beats chance clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from braincls.common.layout import DataLayout
from braincls.config import EvaluateConfig, ImportConfig, PreprocessConfig, SplitConfig, TrainConfig
from braincls.data.images import import_image_folder
from braincls.data.split import split_manifest


@pytest.fixture(scope="module")
def br35h_manifest(br35h_dir: Path):  # type: ignore[no-untyped-def]
    return import_image_folder(br35h_dir, ImportConfig())


#: Copy pairs an independent near-duplicate check found on two sides of the previous split.
EXAMPLE_PAIRS = (
    ("yes/y1001.jpg", "yes/y710.jpg"),
    ("yes/y1080.jpg", "yes/y807.jpg"),
    ("yes/y882.jpg", "yes/y547.jpg"),
    ("yes/y887.jpg", "yes/y1165.jpg"),
)


@pytest.mark.slow  # the full import verifies ~10,000 candidate pairs: about 2 minutes
def test_br35h_import_counts_and_groups(br35h_manifest) -> None:  # type: ignore[no-untyped-def]
    manifest, quarantine = br35h_manifest.manifest, br35h_manifest.quarantine
    assert br35h_manifest.class_names == ("no", "yes")
    assert len(manifest) == 2999
    assert quarantine["reason"].tolist() == ["exact duplicate of another file (same sha256)"]
    # Measured: 578 groups (the hash-and-thumbnail grouping before it made 1032); 2686 of 2999
    # images have at least one near-duplicate; the largest group holds 57 copies of one slice.
    sizes = manifest["group_id"].value_counts()
    assert len(sizes) == 578
    assert int(sizes[sizes > 1].sum()) == 2686
    assert int(sizes.max()) == 57
    # Br35H's README: duplicates never cross the two classes, so a mixed group is a false link.
    assert (manifest.groupby("group_id")["label"].nunique() == 1).all()
    group = dict(zip(manifest["relative_path"], manifest["group_id"], strict=True))
    for first, second in EXAMPLE_PAIRS:
        assert group[first] == group[second], (first, second)


@pytest.mark.slow
def test_br35h_grouped_split_has_no_leak(br35h_manifest) -> None:  # type: ignore[no-untyped-def]
    split = split_manifest(br35h_manifest.manifest, SplitConfig())
    assert (split.groupby("group_id")["split"].nunique() == 1).all()
    shares = split["split"].value_counts(normalize=True)
    assert shares["test"] == pytest.approx(0.15, abs=0.01)
    random = split_manifest(br35h_manifest.manifest, SplitConfig(strategy="random"))
    # The seed's split by file puts copies of one slice on two sides in 218 of the 578 groups.
    leaked = random.groupby("group_id")["split"].nunique()
    assert int((leaked > 1).sum()) == 218


def test_small_real_run_beats_chance(br35h_dir: Path, tmp_path: Path) -> None:
    """150 + 150 real Br35H images, 64 px, grouped split, 6 epochs: ROC AUC well above 0.5."""
    from braincls.data.stage import run_import, run_preprocess, run_split
    from braincls.evaluate.stage import run_evaluate
    from braincls.train.stage import run_train

    subset = tmp_path / "br35h-300"
    for label in ("yes", "no"):
        (subset / label).mkdir(parents=True)
        for path in sorted((br35h_dir / label).iterdir())[:150]:
            (subset / label / path.name).symlink_to(path)
    layout = DataLayout(tmp_path / "data")
    imported = run_import(subset, layout, ImportConfig()).record
    split = run_split([imported], layout, SplitConfig(seed=1)).record
    # The seed's preprocessing and network without augmentation: on 300 images and a few epochs
    # the shortcut-free default preprocessing is too hard to learn (ROC AUC about 0.6 measured).
    seed_preprocess = PreprocessConfig(
        image_size_px=64, crop_to_head=False, keep_aspect=False, intensity="none"
    )
    dataset = run_preprocess(split, layout, seed_preprocess).record
    train = TrainConfig.model_validate(
        {
            "model": "seed_cnn",
            "epochs": 6,
            "batch_size": 16,
            "seed": 1,
            "early_stopping_patience": 0,
            "dropout_rate": 0.5,
            "learning_rate": 1e-3,
            "augment": {"enabled": False},
        }
    )
    model = run_train(dataset, layout, train).record
    assert model.epochs_run == 6
    assert model.history["loss"][-1] < model.history["loss"][0]
    evaluation = run_evaluate(
        model, dataset, layout, EvaluateConfig(bootstrap_resamples=200), "real-small"
    ).record
    metrics = json.loads(Path(evaluation.metrics_path).read_text())
    assert metrics["split"] == "grouped_by_near_duplicate"
    assert metrics["n_test"] >= 40
    assert metrics["roc_auc"] > 0.75, metrics["roc_auc"]
    assert metrics["accuracy"] > 0.65, metrics["accuracy"]


def test_external_validation_uses_the_training_threshold(
    br35h_dir: Path, real_dicom_dir: Path, tmp_path: Path
) -> None:
    """Train on 100 + 100 Br35H images, then evaluate the saved model on 40 + 40 others, and
    on real DICOM: a tumor patient's series (yes) and a healthy volunteer's (no)."""
    from braincls.data.stage import run_import, run_preprocess, run_split
    from braincls.evaluate.external import evaluate_external
    from braincls.evaluate.stage import run_evaluate
    from braincls.train.stage import run_train

    train_set, external_set = tmp_path / "train", tmp_path / "external"
    for label in ("yes", "no"):
        files = sorted((br35h_dir / label).iterdir())
        for folder, chosen in ((train_set, files[:100]), (external_set, files[-40:])):
            (folder / label).mkdir(parents=True)
            for path in chosen:
                (folder / label / path.name).symlink_to(path)
    layout = DataLayout(tmp_path / "data")
    imported = run_import(train_set, layout, ImportConfig()).record
    split = run_split([imported], layout, SplitConfig(seed=1)).record
    dataset = run_preprocess(split, layout, PreprocessConfig(image_size_px=48)).record
    train = TrainConfig.model_validate(
        {"model": "seed_cnn", "epochs": 2, "augment": {"enabled": False}}
    )
    model = run_train(dataset, layout, train).record
    internal = run_evaluate(
        model, dataset, layout, EvaluateConfig(bootstrap_resamples=100), "internal"
    ).record
    external = evaluate_external(
        Path(model.model_dir),
        external_set,
        layout.root,
        EvaluateConfig(bootstrap_resamples=100),
        run_id="external",
    )
    metrics = json.loads(Path(external.metrics_path).read_text())
    assert metrics["n_test"] == 80
    assert metrics["n_train"] == 0 and metrics["n_val"] == 0
    assert metrics["threshold"] == internal.metrics["threshold"]
    assert metrics["threshold_rule"] == "fixed"
    assert "external" in metrics["data_source"]

    labels = tmp_path / "labels.csv"
    labels.write_text(
        "Collection,label\nBrain-Tumor-Progression,yes\nhealthy-volunteer-t1-mprage,no\n"
    )
    on_dicom = evaluate_external(
        Path(model.model_dir),
        real_dicom_dir,
        layout.root,
        EvaluateConfig(bootstrap_resamples=100),
        run_id="external-dicom",
        dicom_labels=labels,
    )
    dicom_metrics = json.loads(Path(on_dicom.metrics_path).read_text())
    converted = pd.read_parquet(
        next((layout.root / "converted" / "manifests").glob("*/images.parquet"))
    )
    assert dicom_metrics["n_test"] == len(converted) > 100
    assert set(converted["label"]) == {"yes", "no"}
    assert dicom_metrics["threshold"] == internal.metrics["threshold"]
    assert "Brain-Tumor-Progression" in dicom_metrics["data_source"]
