"""``braincls.predict``: images, DICOM (with and without labels) and NIfTI volumes scored
exactly as evaluation scores them, the per-series summary, bad inputs as rows with a reason."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from fake_models import register_fake_version

from braincls.config import (
    ConvertConfig,
    EvaluateConfig,
    ImportConfig,
    LabelRuleConfig,
    VolumesConfig,
)

#: External evaluation, fast: no bootstrap, no Grad-CAM (the probabilities are what matter).
FAST_EVALUATION = EvaluateConfig(bootstrap_resamples=0, gradcam_examples_per_category=0)

#: The training sources recorded with the model: how its DICOM and volumes were prepared.
SOURCES: list[dict[str, Any]] = [
    {"name": "images", "kind": "images", "config": ImportConfig().model_dump(mode="json")},
    {
        "name": "PHANTOM",
        "kind": "dicom",
        "config": {
            **ConvertConfig(image_size_px=64).model_dump(mode="json", exclude={"pseudonym_salt"}),
            "labels": LabelRuleConfig().model_dump(mode="json"),
        },
    },
    {
        "name": "volumes",
        "kind": "volumes",
        "config": {
            **VolumesConfig(image_size_px=64).model_dump(mode="json"),
            "labels": LabelRuleConfig(min_brain_area_mm2=400.0).model_dump(mode="json"),
        },
    },
]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("predict") / "data"
    register_fake_version(root, image_size_px=32, seed=3, threshold=0.5, sources=SOURCES)
    return root


@pytest.fixture(scope="module")
def model(data_root: Path) -> Any:
    from braincls.predict.model import open_model, resolve_model_dir

    return open_model(resolve_model_dir(data_root), data_root)


@pytest.fixture(scope="module")
def phantom_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from devkit.phantom import generate_image_set

    out = tmp_path_factory.mktemp("phantom-images") / "images"
    generate_image_set(out, n_images=24, seed=2, image_size_px=64)
    return out


@pytest.fixture(scope="module")
def phantom_dicom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from devkit.phantom.dicom import generate_dicom_collection

    out = tmp_path_factory.mktemp("phantom-dicom") / "BRAINCLS-PHANTOM"
    generate_dicom_collection(out, n_patients=2, seed=4, image_size_px=64, slices_per_series=(4, 6))
    return out


def test_the_champion_is_the_default_model_with_its_fixed_threshold(model: Any) -> None:
    assert model.version == "v0001"
    assert model.threshold == 0.5
    assert model.image_size_px == 32
    described = model.describe()
    assert described["model_version"] == "v0001"
    assert described["test_metrics"]["roc_auc"] == {"value": 0.8, "interval_95": [0.6, 0.95]}
    assert described["intended_use"].startswith("Research use only.")


def test_a_model_without_a_threshold_cannot_predict(tmp_path: Path) -> None:
    from fake_models import save_untrained_model

    from braincls.predict.model import PredictError, open_model

    folder = tmp_path / "runs" / "key" / "model"
    save_untrained_model(folder / "model.keras", 32, 0)
    (folder / "train_record.json").write_text(
        '{"model": "braincls_resnet", "class_names": ["no", "yes"], "image_size_px": 32,'
        ' "dataset": {"preprocess": {"image_size_px": 32}}}'
    )
    with pytest.raises(PredictError, match="no decision threshold: this model was never evaluated"):
        open_model(folder, tmp_path)


def test_no_champion_is_a_clear_error(tmp_path: Path) -> None:
    from braincls.predict.model import NoChampion, resolve_model_dir

    with pytest.raises(NoChampion, match="no champion model under"):
        resolve_model_dir(tmp_path)


def test_images_score_as_evaluation_scores_them(
    model: Any, data_root: Path, phantom_images: Path, tmp_path: Path
) -> None:
    from braincls.evaluate.external import evaluate_external
    from braincls.predict.score import predict_paths

    evaluated = evaluate_external(
        model.saved.folder, phantom_images, data_root, FAST_EVALUATION, run_id="ext-images"
    )
    expected = pd.read_parquet(evaluated.predictions_path).set_index("sample_id")
    result = predict_paths([phantom_images], model, tmp_path / "converted")
    rows = result.predictions
    assert set(rows["kind"]) == {"image"}
    assert rows["reason"].isna().all()
    digests = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in rows["source_path"]]
    assert sorted(digests) == sorted(expected.index)
    got = rows["p_tumour"].astype("float64").to_numpy()
    want = expected.loc[digests, "p_positive"].to_numpy()
    # Bit for bit: the same preparation, the same model call.
    assert np.array_equal(got, want)
    classes = (rows["predicted_class"] == "yes").astype(int).to_numpy()
    assert np.array_equal(classes, expected.loc[digests, "predicted_index"].to_numpy())
    assert (rows["threshold"] == 0.5).all()
    assert (rows["model_version"] == "v0001").all()
    assert result.summary.empty  # image files have no series, volume or patient


def _dicom_key(rows: pd.DataFrame) -> list[str]:
    return [
        f"{sop}#{frame}" if multi else str(sop)
        for sop, frame, multi in zip(
            rows["sop_instance_uid"],
            rows["frame_index"],
            rows["sop_instance_uid"].duplicated(keep=False),
            strict=True,
        )
    ]


def test_labelled_dicom_scores_as_evaluation_scores_it(
    model: Any, data_root: Path, phantom_dicom: Path
) -> None:
    from braincls.common.layout import DataLayout
    from braincls.evaluate.external import evaluate_external
    from braincls.predict.score import predict_paths

    evaluated = evaluate_external(
        model.saved.folder,
        phantom_dicom,
        data_root,
        FAST_EVALUATION,
        run_id="ext-dicom",
        dicom_labels=phantom_dicom / "labels.csv",
    )
    expected = pd.read_parquet(evaluated.predictions_path).set_index("sample_id")
    result = predict_paths([phantom_dicom], model, DataLayout(data_root).converted)
    rows = result.predictions
    scored = rows[rows["p_tumour"].notna()]
    keys = _dicom_key(scored)
    # Prediction scores every image evaluation scored (and the unlabelled ones too).
    assert set(expected.index) <= set(keys)
    by_key = dict(zip(keys, scored["p_tumour"].astype("float64"), strict=True))
    assert np.array_equal(
        np.array([by_key[key] for key in expected.index]), expected["p_positive"].to_numpy()
    )
    # The converter's set-aside files and frames are rows with its reason, never a crash.
    set_aside = rows[rows["reason"].notna()]
    assert set(set_aside["reason"]) >= {"non_image_object", "segmentation"}
    assert set_aside["p_tumour"].isna().all()


def test_unlabelled_dicom_gets_per_series_and_per_patient_summaries(
    model: Any, phantom_dicom: Path, tmp_path: Path
) -> None:
    from braincls.predict.score import predict_paths

    # The same collection without its labels table or segmentations: nothing to label it.
    source = tmp_path / "unlabelled"
    shutil.copytree(phantom_dicom, source)
    (source / "labels.csv").unlink()
    result = predict_paths([source], model, tmp_path / "converted")
    rows = result.predictions
    scored = rows[rows["p_tumour"].notna()]
    assert len(scored) > 0
    assert scored["series_instance_uid"].notna().all()
    summary = result.summary
    series = summary[summary["level"] == "series"].set_index("series_instance_uid")
    assert set(series.index) == set(scored["series_instance_uid"])
    for uid, part in scored.groupby("series_instance_uid"):
        row = series.loc[uid]
        p = part["p_tumour"].astype("float64")
        assert row["n_scored"] == len(part)
        assert row["max_p_tumour"] == p.max()
        assert row["max_slice_index"] == part.loc[p.idxmax(), "slice_index"]
        over = sorted(int(v) for v in part.loc[p >= 0.5, "slice_index"])
        assert row["n_over_threshold"] == len(over)
        assert row["slices_over_threshold"] == (",".join(map(str, over)) if over else None)
        assert row["predicted_class"] == ("yes" if over else "no")
        # Slice indices run along the series by position.
        ordered = part.sort_values("slice_position")["slice_index"].tolist()
        assert ordered == list(range(len(part)))
    patients = summary[summary["level"] == "patient"].set_index("patient_id")
    assert set(patients.index) == set(scored["patient_id"])
    for patient, part in scored.groupby("patient_id"):
        assert patients.loc[patient, "n_series"] == part["series_instance_uid"].nunique()


def _volume(path: Path, mask_path: Path | None = None) -> None:
    """A 2 mm RAS volume: a 'head' cylinder on slices 3..18 of 24 and a 'tumour' box."""
    shape = (40, 40, 24)
    x, y = np.mgrid[: shape[0], : shape[1]]
    head = (x - 20) ** 2 + (y - 20) ** 2 <= 15**2
    image = np.zeros(shape, np.int16)
    generator = np.random.default_rng(0)
    for z in range(3, 19):
        image[..., z][head] = 300 + generator.integers(0, 200, head.sum())
    mask = np.zeros(shape, np.uint8)
    mask[14:22, 16:24, 8:12] = 4
    image[mask > 0] = 900
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, affine), path)
    if mask_path is not None:
        nib.save(nib.Nifti1Image(mask, affine), mask_path)


def test_a_volume_scores_as_evaluation_scores_it(
    model: Any, data_root: Path, tmp_path: Path
) -> None:
    from braincls.evaluate.external import evaluate_external
    from braincls.predict.score import predict_paths

    source = tmp_path / "volumes"
    volume = source / "case1" / "case1_flair.nii.gz"
    _volume(volume, source / "case1" / "case1_seg.nii.gz")
    evaluated = evaluate_external(
        model.saved.folder, source, data_root, FAST_EVALUATION, run_id="ext-vol", volumes=True
    )
    expected = pd.read_parquet(evaluated.predictions_path)
    expected["slice_index"] = [int(s.rsplit("/", 1)[1]) for s in expected["sample_id"]]
    result = predict_paths([volume], model, tmp_path / "converted")
    rows = result.predictions.set_index("slice_index")
    assert list(rows.index) == list(range(24))
    assert (rows["kind"] == "volume").all()
    got = rows.loc[expected["slice_index"], "p_tumour"].astype("float64").to_numpy()
    assert np.array_equal(got, expected["p_positive"].to_numpy())
    # Slices without enough brain are rows with the reason training set them aside for.
    no_brain = rows[rows["reason"] == "no_brain"].index.tolist()
    assert no_brain == [0, 1, 2, 19, 20, 21, 22, 23]
    assert rows.loc[no_brain, "p_tumour"].isna().all()
    volume_row = result.summary.iloc[0]
    assert volume_row["level"] == "volume"
    assert (volume_row["n_images"], volume_row["n_scored"], volume_row["n_set_aside"]) == (
        24,
        16,
        8,
    )


def test_unreadable_inputs_are_rows_with_a_reason(model: Any, tmp_path: Path) -> None:
    from braincls.predict.score import predict_paths

    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not a picture")
    (folder / "tiny.png").write_bytes(
        _png(np.full((8, 8), 100, np.uint8) + np.eye(8, dtype=np.uint8))
    )
    (folder / "flat.png").write_bytes(_png(np.full((64, 64), 7, np.uint8)))
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    (folder / "notes.dcm").write_text("DICM? no")
    result = predict_paths([folder, tmp_path / "missing.png"], model, tmp_path / "converted")
    reasons = dict(
        zip(
            [Path(str(p)).name for p in result.predictions["source_path"]],
            result.predictions["reason"],
            strict=True,
        )
    )
    assert reasons == {
        "empty.png": "empty_file",
        "text.jpg": "not_an_image",
        "tiny.png": "too_small",
        "flat.png": "constant_image",
        "broken.nii.gz": "unreadable_volume",
        "notes.dcm": "not_dicom",
        "missing.png": "not_found",
    }
    assert result.predictions["p_tumour"].isna().all()
    assert result.predictions["detail"].notna().all()


def _png(gray: np.ndarray) -> bytes:
    from braincls.data.preprocess import encode_png

    return encode_png(gray)


def test_gradcam_overlays_and_tables_by_suffix(
    model: Any, phantom_images: Path, tmp_path: Path
) -> None:
    import cv2

    from braincls.predict.score import predict_paths, summary_path, write_table

    images = sorted((phantom_images / "yes").iterdir())[:3]
    result = predict_paths(images, model, tmp_path / "converted", gradcam_dir=tmp_path / "gc")
    overlays = [Path(p) for p in result.predictions["gradcam_path"]]
    assert [p.parent for p in overlays] == [tmp_path / "gc"] * 3
    for path in overlays:
        overlay = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert overlay.shape == (32, 32, 3)
    csv = write_table(result.predictions, tmp_path / "out" / "p.csv")
    parquet = write_table(result.predictions, tmp_path / "out" / "p.parquet")
    assert pd.read_csv(csv)["p_tumour"].tolist() == pd.read_parquet(parquet)["p_tumour"].tolist()
    assert summary_path(csv) == tmp_path / "out" / "p.summary.csv"
