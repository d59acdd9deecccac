"""The split: train / validation / test, by near-duplicate group or patient."""

from __future__ import annotations

import numpy as np
import pandas as pd

from braincls.common.tables import SPLIT_COLUMN, SPLITS
from braincls.config import SplitConfig


class SplitError(ValueError):
    """The manifest cannot be split as configured."""


def split_manifest(manifest: pd.DataFrame, config: SplitConfig) -> pd.DataFrame:
    """Assign every row to train, val or test; deterministic for ``config.seed``.

    ``grouped``: whole groups (near-duplicate group, or patient for DICOM data) are assigned,
    stratified by label (a group's label is its majority label), so no group is on two sides.
    ``random``: rows are assigned one by one, stratified by label (the seed project's way; copies
    of one image end up on both sides).
    """
    total = config.train_fraction + config.val_fraction + config.test_fraction
    if abs(total - 1.0) > 1e-6:
        raise SplitError(f"split fractions must add up to 1, got {total:.3f}")
    frame = manifest.copy()
    rng = np.random.default_rng(config.seed)
    if config.strategy == "random":
        units = frame[["sample_id", "label"]].rename(columns={"sample_id": "unit"})
        unit_column = "sample_id"
    else:
        units = (
            frame.groupby("group_id")["label"]
            .agg(lambda labels: labels.value_counts().index[0])
            .reset_index()
            .rename(columns={"group_id": "unit"})
        )
        unit_column = "group_id"
    sizes = frame.groupby(unit_column).size()
    assignment: dict[str, str] = {}
    for _label, members in sorted(units.groupby("label"), key=lambda item: str(item[0])):
        unit_ids = np.array(sorted(members["unit"].astype(str)))
        rng.shuffle(unit_ids)
        # Fill test, then val, by image count, so that large groups do not skew the fractions.
        counts = sizes.loc[unit_ids].to_numpy()
        cumulative = np.cumsum(counts) / counts.sum()
        test_end = config.test_fraction
        val_end = config.test_fraction + config.val_fraction
        for unit, position in zip(unit_ids, cumulative - counts / counts.sum() / 2, strict=True):
            if position < test_end:
                assignment[unit] = "test"
            elif position < val_end:
                assignment[unit] = "val"
            else:
                assignment[unit] = "train"
    frame[SPLIT_COLUMN] = frame[unit_column].astype(str).map(assignment).astype("string")
    for split in SPLITS:
        present = set(frame.loc[frame[SPLIT_COLUMN] == split, "label"])
        missing = sorted(set(frame["label"]) - present)
        if missing:
            raise SplitError(
                f"split '{split}' has no images of class {', '.join(missing)}: "
                "too few images or groups for the configured fractions"
            )
    return frame
