"""The real BraTS glioma volumes (../shared/data/brats): slice labels from the expert masks."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from braincls.config import LabelRuleConfig, VolumesConfig
from braincls.data import volumes

# --------------------------------------------------------------------------------------------
# Real BraTS data
# --------------------------------------------------------------------------------------------

BRATS_CASES = ("Brats18_2013_11_1", "Brats18_TCIA02_135_1")


def test_real_brats_two_cases(brats_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "brats"
    source.mkdir()
    for case in BRATS_CASES:
        (source / case).symlink_to(brats_dir / case, target_is_directory=True)
    rule = LabelRuleConfig(min_tumour_area_mm2=0.0, min_brain_area_mm2=2000.0)
    config = VolumesConfig(sequences=("flair",), image_size_px=64)
    result = volumes.read_volumes(source, tmp_path / "out", config, rule)

    counts = result.manifest.groupby(["case", "label"]).size().to_dict()
    assert counts == {
        ("Brats18_2013_11_1", "no"): 55,
        ("Brats18_2013_11_1", "yes"): 76,
        ("Brats18_TCIA02_135_1", "no"): 65,
        ("Brats18_TCIA02_135_1", "yes"): 61,
    }
    assert result.reason_counts["no_brain"] == 2 * 155 - len(result.manifest)
    assert result.reason_counts["ambiguous_tumour_area"] == 0
    assert dict(result.foreground_modes) == {
        f"{case}/{case}_flair.nii.gz": "nonzero" for case in BRATS_CASES
    }
    assert result.manifest["pixel_spacing_row_mm"].tolist() == [1.0] * len(result.manifest)
    # Independent count: an axial slice is tumour when the mask is non-empty on it.
    for case in BRATS_CASES:
        mask = np.asarray(nib.load(brats_dir / case / f"{case}_seg.nii.gz").dataobj)
        tumour_slices = np.flatnonzero((mask > 0).any(axis=(0, 1))).tolist()
        rows = result.manifest[
            (result.manifest["case"] == case) & (result.manifest["label"] == "yes")
        ]
        assert rows["slice_index"].tolist() == tumour_slices
