"""The split: train / validation / test, by near-duplicate group or patient.

Each group's split is drawn from a hash of its id and the seed, so a group's split depends on
nothing else: adding data never moves an existing group (a patient in the test split stays
there, so a model trained on an older split is never scored on images it trained on).
"""

from __future__ import annotations

import hashlib

import pandas as pd

from braincls.common.tables import SPLIT_COLUMN, SPLITS
from braincls.config import SplitConfig


class SplitError(ValueError):
    """The manifest cannot be split as configured."""


def unit_position(unit_id: str, seed: int) -> float:
    """Where a group (or, for a random split, an image) falls in [0, 1): the first 64 bits of
    SHA-256 over the seed and the id. Stable across runs, machines and Python versions."""
    digest = hashlib.sha256(f"braincls-split\0{seed}\0{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(position: float, config: SplitConfig) -> str:
    """The split of a unit at ``position``: test first, then val, then train."""
    if position < config.test_fraction:
        return "test"
    if position < config.test_fraction + config.val_fraction:
        return "val"
    return "train"


def split_manifest(manifest: pd.DataFrame, config: SplitConfig) -> pd.DataFrame:
    """Assign every row to train, val or test; deterministic for ``config.seed``.

    ``grouped``: whole groups (near-duplicate group, or patient for DICOM data) are assigned,
    each by :func:`unit_position` of its group id, so no group is on two sides and a group
    keeps its split when other groups are added. The fractions are shares of groups, met in
    expectation (not exactly: that would tie every group's split to all the others).
    ``random``: rows are assigned one by one, by their sample id (the seed project's way;
    copies of one image end up on both sides).
    """
    frame = manifest.copy()
    unit_column = "sample_id" if config.strategy == "random" else "group_id"
    units = frame[unit_column].astype(str)
    assignment = {unit: split_of(unit_position(unit, config.seed), config) for unit in set(units)}
    frame[SPLIT_COLUMN] = units.map(assignment).astype("string")
    for split in SPLITS:
        present = set(frame.loc[frame[SPLIT_COLUMN] == split, "label"])
        missing = sorted(set(frame["label"]) - present)
        if missing:
            raise SplitError(
                f"split '{split}' has no images of class {', '.join(missing)}: "
                "too few images or groups for the configured fractions (try another "
                "split seed, or add data)"
            )
    return frame
