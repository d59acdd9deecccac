"""The mission's main loop on real glioma MRI: a TCIA-like collection made from BraTS cases
(MR series + DICOM SEG) is served over HTTP, ingested, labelled from its SEG objects with no
labels table, split by patient, trained, evaluated and registered; and the same cases as NIfTI
volumes through the pipeline's volumes source."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from tiny import TINY_CONFIG

from braincls.config import PipelineConfig
from devkit.brats_dicom import generate_brats_collection
from devkit.nbia import serve

COLLECTION = "BRATS-GLIOMA-SEG"
CASES = (
    "Brats18_2013_11_1",
    "Brats18_2013_20_1",
    "Brats18_TCIA01_201_1",
    "Brats18_TCIA01_378_1",
    "Brats18_TCIA02_135_1",
    "Brats18_TCIA02_370_1",
)

pytestmark = pytest.mark.slow


def _config() -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            **TINY_CONFIG,
            # Every slice reaches the labelling rule (brain presence is its business here), so
            # the labels can be checked against the masks slice for slice.
            "convert": {**TINY_CONFIG["convert"], "skip_background_slices": False},
            "validate": {"min_count_per_class": 1, "min_class_share": 0.05},
            "split": {"train_fraction": 0.5, "val_fraction": 0.25, "test_fraction": 0.25},
        }
    )


def test_retrain_on_a_served_collection_labels_from_seg_without_a_labels_table(
    brats_dir: Path, tmp_path: Path
) -> None:
    from flows.retrain import retrain_flow

    served = tmp_path / "served"
    summary = generate_brats_collection(
        brats_dir,
        served,
        collection=COLLECTION,
        cases=CASES,
        sequences=("flair",),
        slice_step=5,
        in_plane_step=3,
    )
    assert summary.n_seg_objects == len(CASES)
    assert not (served / COLLECTION / "labels.csv").exists()
    data_root = tmp_path / "data"
    with serve(served, seed=3) as server:
        result = retrain_flow(
            collections=[COLLECTION],
            data_root=str(data_root),
            base_url=server.url,
            config=_config(),
        )
    ingested = result["ingest"][COLLECTION]
    # One MR and one SEG series per case: the SEG series come with the images.
    assert ingested["downloaded"] == ingested["listed"] == 2 * len(CASES)
    assert result["states"]["convert"] == "Completed"
    assert result["model_version"] == "v0001"

    manifest = pd.read_parquet(next((data_root / "manifests" / "convert").glob("*/images.parquet")))
    assert set(manifest["label_source"]) == {"SEG"}
    assert set(manifest["label"]) == {"no", "yes"}
    assert manifest["patient_id"].nunique() == len(CASES)
    quarantine = pd.read_parquet(
        next((data_root / "manifests" / "convert").glob("*/quarantine.parquet"))
    )
    assert (quarantine["reason"] == "segmentation").sum() == len(CASES)
    # Labels agree with the expert masks: a slice is 'yes' exactly when the BraTS mask covers
    # at least the rule's area on it (counted independently from the NIfTI files).
    positives = manifest.groupby("patient_id")["label"].apply(lambda s: int((s == "yes").sum()))
    assert positives.to_dict() == _expected_tumour_slices(brats_dir, summary)
    split = pd.read_parquet(next((data_root / "manifests" / "split").glob("*/split.parquet")))
    assert split.groupby("patient_id")["split"].nunique().max() == 1


def _expected_tumour_slices(brats_dir: Path, summary: object) -> dict[str, int]:
    """Per case, the written slices whose downsampled mask covers at least 100 mm²."""
    import nibabel as nib
    import numpy as np

    from devkit.brats_dicom import block_mode_labels

    expected = {}
    step, block = 5, 3
    for case in CASES:
        mask = np.asarray(nib.load(brats_dir / case / f"{case}_seg.nii.gz").dataobj)
        count = 0
        for k in range(0, mask.shape[2], step):
            labels = block_mode_labels(mask[:, :, k].T, block)
            if np.count_nonzero(labels) * block * block >= 100:
                count += 1
        expected[case] = count
    return expected


def test_pipeline_on_nifti_volumes_splits_by_patient_with_mask_labels(
    brats_dir: Path, tmp_path: Path
) -> None:
    from flows.pipeline import pipeline

    source = tmp_path / "brats"
    source.mkdir()
    for case in CASES:
        (source / case).symlink_to(brats_dir / case, target_is_directory=True)
    config = _config().model_copy(
        update={
            "volumes": _config().volumes.model_copy(
                update={"sequences": ("t1ce", "flair"), "image_size_px": 64}
            )
        }
    )
    result = pipeline(volumes_dirs=[str(source)], data_root=str(tmp_path / "data"), config=config)
    assert result["states"]["volumes"] == "Completed"
    dataset = pd.read_parquet(
        next((tmp_path / "data" / "manifests" / "dataset").glob("*/dataset.parquet"))
    )
    assert set(dataset["label_source"]) == {"mask"}
    assert dataset.groupby("patient_id")["split"].nunique().max() == 1
    assert set(dataset["sequence"]) == {"t1ce", "flair"}
    assert result["metrics"]["n_test"] > 0
