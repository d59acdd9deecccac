"""The labelling rule: a slice's label from the tumour area segmented on it (one place).

Every source of segmentations (DICOM SEG, RTSTRUCT, NIfTI masks) measures two areas per slice,
in mm², and calls :func:`label_slice`; the rule's settings are :class:`LabelRuleConfig`
and are recorded with the dataset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from braincls.config import LabelRuleConfig

#: Class names of segmentation-derived labels (sorted: ``label_index`` 1 is the tumour class).
NO_TUMOUR = "no"
TUMOUR = "yes"
LABEL_CLASSES: tuple[str, str] = (NO_TUMOUR, TUMOUR)

#: Why a slice with a segmentation gets no label.
AMBIGUOUS = "ambiguous_tumour_area"
NO_BRAIN = "no_brain"
UNSELECTED_ONLY = "unselected_segments_only"
#: Every reason of the rule: slices set aside by design, not faults of the data.
RULE_REASONS: tuple[str, ...] = (AMBIGUOUS, NO_BRAIN, UNSELECTED_ONLY)


@dataclass(frozen=True)
class SliceLabel:
    """The rule's verdict on one slice: a label, or ``None`` with the reason it is set aside."""

    label: str | None
    reason: str | None
    tumour_area_mm2: float
    brain_area_mm2: float


def label_slice(
    tumour_area_mm2: float,
    brain_area_mm2: float,
    rule: LabelRuleConfig,
    unselected_area_mm2: float = 0.0,
) -> SliceLabel:
    """Apply the rule: ``yes`` at or above the tumour threshold, ``no`` when nothing is segmented
    and the brain is present, otherwise set aside (ambiguous sliver, or too little brain).

    ``unselected_area_mm2`` is the area of segments the rule does not count (e.g. edema when
    only enhancing tumour counts): a slice showing only those is not tumour-free, so it is set
    aside rather than called ``no``.
    """
    tumour = float(tumour_area_mm2)
    brain = float(brain_area_mm2)
    if tumour > 0 and tumour >= rule.min_tumour_area_mm2:
        return SliceLabel(TUMOUR, None, tumour, brain)
    if tumour > 0:
        return SliceLabel(None, AMBIGUOUS, tumour, brain)
    if unselected_area_mm2 > 0:
        return SliceLabel(None, UNSELECTED_ONLY, tumour, brain)
    if brain >= rule.min_brain_area_mm2:
        return SliceLabel(NO_TUMOUR, None, tumour, brain)
    return SliceLabel(None, NO_BRAIN, tumour, brain)


def area_mm2(mask: npt.ArrayLike, pixel_spacing_mm: tuple[float, float]) -> float:
    """Area of the true pixels of a 2-D ``mask`` with (row, column) ``pixel_spacing_mm``."""
    count = int(np.count_nonzero(np.asarray(mask)))
    return float(count * float(pixel_spacing_mm[0]) * float(pixel_spacing_mm[1]))


def selected_segments(available: Mapping[int, str], rule: LabelRuleConfig) -> list[int]:
    """The segment numbers (or mask label values) that count as tumour under ``rule``.

    ``available`` maps each segment number to its label (the label may be empty). An empty
    ``rule.segments`` selects all; otherwise a segment counts when its number, or its label
    (case-insensitive), is listed.
    """
    if not rule.segments:
        return sorted(available)
    wanted = {str(value).strip().casefold() for value in rule.segments}
    return sorted(
        number
        for number, label in available.items()
        if str(number) in wanted or (label or "").strip().casefold() in wanted
    )
