"""Near-duplicate fingerprints of brain MR slices, invariant to intensity, crop, scale and flips.

Public MRI sets such as Br35H hold one slice many times: re-saved with another brightness,
contrast or gamma, cropped, rescaled, sharpened or blurred, re-encoded as JPEG, and mirrored or
turned by 180 degrees. Splitting such a set by file puts copies on both sides of the split.
Adjacent slices of one head, on the other hand, look alike without being copies, and must stay
apart. This module tells the two apart in three steps:

1. :func:`describe` reduces an image to a :class:`SliceDescriptor`: the head (bright components
   above a background-relative threshold, holes filled) is cropped to its bounding box and
   resampled to a square canonical frame, which removes crop-of-background and scale.
   Intensities are kept (uint8); every comparison is made on ranks or after histogram matching,
   so monotone intensity changes (brightness, contrast, gamma) do not matter.
2. :func:`candidate_pairs` proposes pairs cheaply: the correlation of rank-normalised 16x16
   thumbnails in the best of eight orientations (four rotations, mirrored or not), a generous
   threshold, a fixed number of partners per image.
3. :func:`score_pair` verifies a candidate strictly: the second image (in the proposed
   orientation) is registered onto the first by an affine ECC of the rank images (absorbing
   crops that cut into the head and unequal scale), both are brought to the coarser image's
   resolution, histogram-matched onto each other inside their common head region (clipped
   pixels left out), a zero-phase filter (blur or sharpening) of one is fitted to the other, and
   agreement is measured locally: the correlation in small windows, at a low quantile over
   windows. A copy agrees everywhere up to JPEG noise; an adjacent slice fails where anatomy
   changes, even when its global correlation is as high as a copy's.

:func:`link_pairs` verifies candidates in rounds (later rounds look for partners outside each
image's current group) and :func:`group_near_duplicates` returns the connected components of
the verified links. Every step is deterministic. Memory is O(n * candidates): descriptors are
about 29 kB each, correlations are computed in row blocks.

Known limit (measured on BraTS, see the README): slices 1 mm apart can agree as well as a
sharpened or blurred copy does, so about 2% of 1-mm neighbours are merged at the default
threshold; slices 2 mm apart or more are not merged directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

logger = logging.getLogger(__name__)

ScalarType = TypeVar("ScalarType", bound=np.generic)

#: Larger images are first reduced to this longer side (px): detail beyond it does not help.
WORKING_MAX_SIDE_PX = 512
#: Side (px) of the square canonical frame the head box is resampled to.
CANONICAL_SIDE_PX = 160
#: Side (px) of the rank-normalised thumbnail used to propose candidate pairs.
THUMBNAIL_SIDE_PX = 16
#: The DCT fingerprint keeps the 8x8 lowest frequencies of a 32x32 rank image.
HASH_SIDE_PX = 32
HASH_LOW_FREQUENCIES = 8
#: Head threshold: background level plus this fraction of the range up to the bright tissue.
HEAD_THRESHOLD_FRACTION = 0.08
#: Components at least this fraction of the largest one's area belong to the head too (the
#: cerebellum and temporal lobes of low slices are separate islands).
HEAD_COMPONENT_MIN_FRACTION = 0.05
#: Canonical values at or beyond these are treated as clipped (saturated) and not compared.
SATURATED_LOW_VALUE = 1
SATURATED_HIGH_VALUE = 254
#: Coarse-to-fine sides (px) of the ECC registration.
REGISTRATION_LEVELS_PX = (40, 80, 160)
#: ECC iterations at each level: the fine levels start close to the answer.
REGISTRATION_ITERATIONS = (60, 30, 15)
#: Comparisons are made at the coarser image's head resolution, at least this side (px).
MIN_COMPARISON_SIDE_PX = 32
#: Windows whose variance is below this fraction of the whole head's are too flat to judge.
MIN_WINDOW_VARIANCE_FRACTION = 0.02
#: Histogram matching resolves 1/16 of a grey level.
HISTOGRAM_LEVELS_PER_GREY = 16
#: Rounds after the first verify, per pair of groups, this many best candidates, and per group
#: its this many best-correlated other groups.
BETWEEN_GROUPS_PER_PAIR = 2
BETWEEN_GROUPS_PER_GROUP = 8


@dataclass(frozen=True)
class SliceDescriptor:
    """What the grouping needs to know about one image.

    ``canonical`` is the head's bounding box resampled to ``CANONICAL_SIDE_PX`` squared with its
    original intensities, ``head_mask`` marks the head in that frame, ``thumbnail`` is a
    zero-mean unit-norm vector of the rank-normalised 16x16 thumbnail, ``fingerprint`` a 64-bit
    DCT hash of the rank image, and ``head_side_px`` the shorter side of the head box in the
    (possibly reduced) working image: the resolution the head really has.
    """

    canonical: NDArray[np.uint8]
    head_mask: NDArray[np.bool_]
    thumbnail: NDArray[np.float32]
    fingerprint: int
    head_side_px: int

    @property
    def fingerprint_hex(self) -> str:
        """The fingerprint as 16 hexadecimal digits (the manifest's ``fingerprint`` column)."""
        return f"{self.fingerprint:016x}"


@dataclass(frozen=True)
class PairScore:
    """The verification of one candidate pair (see :func:`score_pair`)."""

    local_agreement: float
    overlap_fraction: float
    registration_correlation: float
    comparison_side_px: int

    def is_copy(self, min_local_agreement: float, min_overlap_fraction: float) -> bool:
        """Whether the pair passes both thresholds."""
        return (
            self.local_agreement >= min_local_agreement
            and self.overlap_fraction >= min_overlap_fraction
        )


def head_mask(gray: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Mask of the head: bright components above a background-relative threshold, holes filled.

    The threshold is the 5th percentile (background, or the darkest tissue of a tight crop) plus
    ``HEAD_THRESHOLD_FRACTION`` of the range up to the 99.5th percentile, so a brightness offset or
    a gamma change moves it with the image. Components of at least
    ``HEAD_COMPONENT_MIN_FRACTION`` of the largest one's area are kept; text and markers are
    smaller and fall away.
    """
    sigma_px = max(1.0, min(gray.shape) / 200.0)
    blurred = cv2.GaussianBlur(gray, (0, 0), sigmaX=sigma_px)
    background, bright = np.percentile(blurred, [5.0, 99.5])
    threshold = background + HEAD_THRESHOLD_FRACTION * max(float(bright - background), 1.0)
    binary = (blurred > threshold).astype(np.uint8)
    close_px = max(3, (min(gray.shape) // 40) | 1)
    binary = cv2.morphologyEx(
        binary, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close_px, close_px))
    )
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return np.ones(gray.shape, dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= HEAD_COMPONENT_MIN_FRACTION * areas.max()) + 1
    mask = np.isin(labels, keep).astype(np.uint8)
    # Fill holes: flood the outside from a padded border; whatever it does not reach is inside.
    padded = np.pad(mask, 1)
    cv2.floodFill(padded, None, (0, 0), 2)
    return np.asarray((padded != 2)[1:-1, 1:-1])


def rank_normalise(values: NDArray[np.uint8], mask: NDArray[np.bool_]) -> NDArray[np.float32]:
    """Mid-rank of each pixel's value among the masked pixels, in [0, 1]; 0 outside the mask.

    Any strictly increasing intensity mapping leaves the result unchanged.
    """
    histogram = np.bincount(values[mask].ravel(), minlength=256).astype(np.float64)
    cumulative = np.cumsum(histogram)
    midrank = (cumulative - histogram / 2.0) / max(float(cumulative[-1]), 1.0)
    return (midrank.astype(np.float32)[values] * mask).astype(np.float32)


def dct_fingerprint(rank_image: NDArray[np.float32]) -> int:
    """64-bit hash: the 8x8 lowest DCT frequencies of a 32x32 rank image above their median."""
    small = cv2.resize(rank_image, (HASH_SIDE_PX, HASH_SIDE_PX), interpolation=cv2.INTER_AREA)
    coefficients = cv2.dct(small)[:HASH_LOW_FREQUENCIES, :HASH_LOW_FREQUENCIES].ravel()
    bits = coefficients > np.median(coefficients[1:])
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def describe(gray: NDArray[np.uint8]) -> SliceDescriptor:
    """Descriptor of one grayscale uint8 image (any size, at least 8 px a side)."""
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 grayscale image, got {gray.dtype} {gray.shape}")
    height_px, width_px = gray.shape
    if min(height_px, width_px) < 8:
        raise ValueError(f"image of {width_px}x{height_px} px is too small to describe")
    reduction = min(1.0, WORKING_MAX_SIDE_PX / max(height_px, width_px))
    working = gray
    if reduction < 1.0:
        reduced_size = (max(8, round(width_px * reduction)), max(8, round(height_px * reduction)))
        working = np.asarray(
            cv2.resize(gray, reduced_size, interpolation=cv2.INTER_AREA), dtype=np.uint8
        )
    mask = head_mask(working)
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(columns[0]), int(columns[-1]) + 1
    side = (CANONICAL_SIDE_PX, CANONICAL_SIDE_PX)
    box = working[top:bottom, left:right]
    box_mask = mask[top:bottom, left:right]
    canonical = np.asarray(cv2.resize(box, side, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    canonical_mask = (
        cv2.resize(box_mask.astype(np.float32), side, interpolation=cv2.INTER_AREA) > 0.5
    )
    ranks = rank_normalise(canonical, canonical_mask)
    thumbnail = cv2.resize(
        ranks, (THUMBNAIL_SIDE_PX, THUMBNAIL_SIDE_PX), interpolation=cv2.INTER_AREA
    ).ravel()
    thumbnail = thumbnail - thumbnail.mean()
    thumbnail = thumbnail / max(float(np.linalg.norm(thumbnail)), 1e-9)
    return SliceDescriptor(
        canonical=canonical,
        head_mask=canonical_mask,
        thumbnail=thumbnail.astype(np.float32),
        fingerprint=dct_fingerprint(ranks),
        head_side_px=min(bottom - top, right - left),
    )


#: The eight orientations of a square image: rotations by 0, 90, 180 and 270 degrees, and the
#: same followed by a left-right mirror. Br35H holds copies rotated by 180 degrees.
ORIENTATIONS = tuple(range(8))


def orient(image: NDArray[ScalarType], orientation: int) -> NDArray[ScalarType]:
    """``image`` turned by 90 degrees ``orientation % 4`` times, then mirrored if 4 or more."""
    turned = np.rot90(image, orientation % 4)
    return np.ascontiguousarray(np.fliplr(turned) if orientation >= 4 else turned)


def inverse_orientation(orientation: int) -> int:
    """The orientation that undoes ``orientation`` (mirrored ones undo themselves)."""
    return orientation if orientation >= 4 else (4 - orientation) % 4


def oriented(descriptor: SliceDescriptor, orientation: int) -> SliceDescriptor:
    """The descriptor of the image turned by :func:`orient` (fingerprint and resolution kept)."""
    if orientation == 0:
        return descriptor
    side = THUMBNAIL_SIDE_PX
    return SliceDescriptor(
        canonical=orient(descriptor.canonical, orientation),
        head_mask=orient(descriptor.head_mask, orientation),
        thumbnail=orient(descriptor.thumbnail.reshape(side, side), orientation).ravel(),
        fingerprint=descriptor.fingerprint,
        head_side_px=descriptor.head_side_px,
    )


@dataclass(frozen=True)
class CandidatePairs:
    """Pairs worth verifying: ``first[k] < second[k]``, the second turned by ``orientation[k]``.

    ``thumbnail_correlation`` is the correlation of the two thumbnails in that orientation.
    """

    first: NDArray[np.int64]
    second: NDArray[np.int64]
    orientation: NDArray[np.int64]
    thumbnail_correlation: NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.first.size)


def candidate_pairs(
    descriptors: list[SliceDescriptor],
    min_thumbnail_correlation: float = 0.5,
    max_candidates_per_image: int = 8,
    orientation_margin: float = 0.03,
    block_size: int = 256,
    components: NDArray[np.int64] | None = None,
) -> CandidatePairs:
    """Pairs ``(i, j)``, ``i < j``, with an orientation of ``j``, worth verifying.

    The correlation of two images is the best over the eight orientations of the second one's
    thumbnail. Each image proposes its ``max_candidates_per_image`` best-correlated partners
    among those at or above ``min_thumbnail_correlation``, each with every orientation within
    ``orientation_margin`` of that partner's best (a nearly symmetric slice correlates well with
    its own mirror image). With ``components`` (a label per image), partners in the image's own
    component are not proposed, so a large group of identical copies does not fill every slot
    and hide its link to another group. The union of proposals (from either side) is returned,
    sorted by pair and orientation. Correlations are computed in row blocks, so memory is
    O(block_size * n * 8 + n * max_candidates_per_image).
    """
    count = len(descriptors)
    if count < 2:
        empty = np.empty(0, dtype=np.int64)
        return CandidatePairs(empty, empty, empty, np.empty(0, dtype=np.float32))
    side = THUMBNAIL_SIDE_PX
    thumbnails = np.stack([d.thumbnail for d in descriptors])
    turned = np.stack(
        [
            orient(thumbnails.reshape(count, side, side).transpose(1, 2, 0), k)
            .transpose(2, 0, 1)
            .reshape(count, side * side)
            for k in ORIENTATIONS
        ]
    )
    keep = min(max_candidates_per_image, count - 1)
    proposals: list[NDArray[np.int64]] = []
    proposal_correlations: list[NDArray[np.float32]] = []
    for start in range(0, count, block_size):
        stop = min(start + block_size, count)
        rows_in_block = np.arange(stop - start)
        # correlation[k, r, j]: image start + r against image j turned by orientation k.
        correlation = np.einsum("rd,kjd->krj", thumbnails[start:stop], turned)
        correlation[:, rows_in_block, rows_in_block + start] = -np.inf
        if components is not None:
            same = components[start:stop, None] == components[None, :]
            correlation[:, same] = -np.inf
        best = correlation.max(axis=0)
        # A stable sort on (-correlation, index) keeps the choice deterministic under ties.
        partners = np.argsort(-best, axis=1, kind="stable")[:, :keep]
        rows = np.repeat(rows_in_block, keep)
        columns = partners.ravel()
        good = np.isfinite(best[rows, columns]) & (best[rows, columns] >= min_thumbnail_correlation)
        rows, columns = rows[good], columns[good]
        close = correlation[:, rows, columns] >= best[rows, columns] - orientation_margin
        orientation_index, pair_index = np.nonzero(close)
        first = rows[pair_index] + start
        second = columns[pair_index]
        orientation = orientation_index.astype(np.int64)
        # Stored with the smaller index first; turning the first by k equals turning the
        # second by the inverse of k.
        swap = first > second
        orientation[swap] = [inverse_orientation(int(k)) for k in orientation[swap]]
        proposals.append(
            np.stack([np.minimum(first, second), np.maximum(first, second), orientation], axis=1)
        )
        proposal_correlations.append(correlation[orientation_index, rows[pair_index], second])
    if not proposals or sum(len(p) for p in proposals) == 0:
        empty = np.empty(0, dtype=np.int64)
        return CandidatePairs(empty, empty, empty, np.empty(0, dtype=np.float32))
    triples, unique_index = np.unique(np.concatenate(proposals), axis=0, return_index=True)
    triples = triples.astype(np.int64)
    return CandidatePairs(
        first=triples[:, 0],
        second=triples[:, 1],
        orientation=triples[:, 2],
        thumbnail_correlation=np.concatenate(proposal_correlations)[unique_index].astype(
            np.float32
        ),
    )


def _registration(
    first_ranks: NDArray[np.float32],
    second_ranks: NDArray[np.float32],
    min_coarse_correlation: float,
) -> tuple[NDArray[np.float32], float, bool]:
    """Affine warp (inverse map) taking the second rank image onto the first.

    Returns the warp, the ECC correlation of the last level reached, and whether the pair went
    through every level: a pair whose correlation after the coarsest level is below
    ``min_coarse_correlation`` stops there (most candidates do, cheaply), and so does a pair whose
    iteration diverges (``None`` warp is never returned; the identity stands in).
    """
    warp = np.eye(2, 3, dtype=np.float32)
    correlation = -1.0
    for level_index, level_px in enumerate(REGISTRATION_LEVELS_PX):
        factor = level_px / CANONICAL_SIDE_PX
        size = (level_px, level_px)
        first_level = cv2.resize(first_ranks, size, interpolation=cv2.INTER_AREA)
        second_level = cv2.resize(second_ranks, size, interpolation=cv2.INTER_AREA)
        level_warp = warp.copy()
        level_warp[:, 2] *= factor
        criteria = (
            cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT,
            REGISTRATION_ITERATIONS[level_index],
            1e-4,
        )
        try:
            # OpenCV's stubs lack the overload with a gaussFiltSize and no mask.
            correlation, level_warp = cv2.findTransformECC(  # type: ignore[call-overload]
                first_level, second_level, level_warp, cv2.MOTION_AFFINE, criteria, None, 3
            )
        except cv2.error:
            # ECC raises when the iteration diverges (no common structure): not a copy.
            return warp, -1.0, False
        warp = level_warp.copy()
        warp[:, 2] /= factor
        if level_index < len(REGISTRATION_LEVELS_PX) - 1 and correlation < min_coarse_correlation:
            return warp, float(correlation), False
    return warp, float(correlation), True


def _histogram_match(
    source: NDArray[np.float32], reference: NDArray[np.float32], mask: NDArray[np.bool_]
) -> NDArray[np.float32]:
    """``source`` mapped monotonically so that its masked histogram equals ``reference``'s.

    Source values are quantised to 1/16 of a grey level (far below JPEG noise) and each level is
    given the mean of the reference quantiles its pixels span, so an image matched to itself (or
    to a monotone transform of itself) comes back unchanged up to that quantisation.
    """
    levels = np.clip(
        np.rint(source * HISTOGRAM_LEVELS_PER_GREY), 0, 256 * HISTOGRAM_LEVELS_PER_GREY
    )
    levels = levels.astype(np.int32)
    counts = np.bincount(levels[mask], minlength=256 * HISTOGRAM_LEVELS_PER_GREY + 1)
    reference_sorted = np.sort(reference[mask].ravel()).astype(np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(reference_sorted)])
    ends = np.cumsum(counts)
    starts = ends - counts
    present = counts > 0
    means = np.zeros(counts.size, dtype=np.float64)
    means[present] = (cumulative[ends[present]] - cumulative[starts[present]]) / counts[present]
    # Levels absent from the mask (outside it) take the value of the nearest present level.
    table = np.interp(np.arange(counts.size), np.flatnonzero(present), means[present])
    return table.astype(np.float32)[levels]


def _filter_prediction(
    source: NDArray[np.float32],
    target: NDArray[np.float32],
    mask: NDArray[np.bool_],
    filter_sigmas_px: tuple[float, ...],
) -> NDArray[np.float32]:
    """Least-squares prediction of ``target`` by a zero-phase filter of ``source``.

    The filter is a linear combination of ``source`` and its Gaussian blurs at
    ``filter_sigmas_px`` (plus a constant), fitted inside ``mask``: it spans blurring, unsharp
    masking and band boosts, the filters image editors apply when they re-save a slice, with
    only a handful of coefficients, too few to invent anatomy.
    """
    columns = [source] + [
        np.asarray(cv2.GaussianBlur(source, (0, 0), sigmaX=sigma)) for sigma in filter_sigmas_px
    ]
    design = np.stack(
        [column[mask] for column in columns] + [np.ones(int(mask.sum()), dtype=np.float32)],
        axis=1,
    ).astype(np.float64)
    coefficients, *_ = np.linalg.lstsq(design, target[mask].astype(np.float64), rcond=None)
    prediction = np.full(source.shape, coefficients[-1], dtype=np.float64)
    for column, coefficient in zip(columns, coefficients[:-1], strict=True):
        prediction += coefficient * column
    return prediction.astype(np.float32)


def _local_correlation(
    reference: NDArray[np.float32],
    prediction: NDArray[np.float32],
    mask: NDArray[np.bool_],
    window_px: int,
    quantile: float,
) -> float:
    """Low quantile over windows of the correlation between ``reference`` and ``prediction``.

    Only windows entirely inside ``mask`` and with at least ``MIN_WINDOW_VARIANCE_FRACTION`` of
    the masked reference's variance count (flat windows hold only noise); windows are sampled
    every second pixel. Returns ``-inf`` when fewer than 10 windows qualify.
    """
    weight = mask.astype(np.float32)
    size = (window_px, window_px)

    def window_mean(values: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.asarray(cv2.boxFilter(values * weight, -1, size, normalize=False))

    count = np.asarray(cv2.boxFilter(weight, -1, size, normalize=False))
    inside = count >= window_px * window_px - 0.5
    safe_count = np.maximum(count, 1.0)
    reference_mean = window_mean(reference) / safe_count
    prediction_mean = window_mean(prediction) / safe_count
    reference_variance = window_mean(reference * reference) / safe_count - reference_mean**2
    prediction_variance = window_mean(prediction * prediction) / safe_count - prediction_mean**2
    covariance = window_mean(reference * prediction) / safe_count - reference_mean * prediction_mean
    structured = inside & (
        reference_variance > MIN_WINDOW_VARIANCE_FRACTION * float(reference[mask].var())
    )
    structured[1::2, :] = False
    structured[:, 1::2] = False
    if int(structured.sum()) < 10:
        return -np.inf
    denominator = np.sqrt(
        np.maximum(reference_variance[structured] * prediction_variance[structured], 1e-12)
    )
    return float(np.quantile(covariance[structured] / denominator, quantile))


@dataclass(frozen=True)
class AlignedPair:
    """Two descriptors registered onto one frame, at the coarser image's resolution.

    ``first`` and ``second`` hold intensities (float32, the second one warped onto the first),
    ``common`` the pixels both heads cover, away from the head borders and from saturated
    (clipped) pixels. ``complete`` is false when the pair was rejected during registration; the
    images are then empty.
    """

    first: NDArray[np.float32]
    second: NDArray[np.float32]
    common: NDArray[np.bool_]
    overlap_fraction: float
    registration_correlation: float
    complete: bool


def align_pair(
    first: SliceDescriptor,
    second: SliceDescriptor,
    *,
    max_scale_change: float = 1.6,
    min_coarse_correlation: float = 0.9,
) -> AlignedPair:
    """Register ``second`` onto ``first`` and resample both to the coarser head's resolution.

    Affine ECC on the rank images, coarse to fine from the identity (stopping after the coarsest
    level when its correlation is below ``min_coarse_correlation``); the warp must not change
    scale by more than ``max_scale_change`` along either axis. The common region is both head
    masks, eroded by 2 px, minus pixels saturated in either image; the comparison side is the
    shorter ``head_side_px`` of the two (between ``MIN_COMPARISON_SIDE_PX`` and the canonical
    side), so the sharper image is brought down to what the coarser one can show.
    """
    empty = np.zeros((0, 0), dtype=np.float32)
    first_ranks = rank_normalise(first.canonical, first.head_mask)
    second_ranks = rank_normalise(second.canonical, second.head_mask)
    warp, correlation, complete = _registration(first_ranks, second_ranks, min_coarse_correlation)
    singular_values = np.linalg.svd(warp[:, :2].astype(np.float64), compute_uv=False)
    plausible = (
        singular_values.max() <= max_scale_change
        and singular_values.min() >= 1.0 / max_scale_change
    )
    if not (complete and plausible):
        return AlignedPair(empty, empty, empty.astype(bool), 0.0, correlation, False)
    side = CANONICAL_SIDE_PX
    flags = cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP
    second_image = np.asarray(
        cv2.warpAffine(second.canonical.astype(np.float32), warp, (side, side), flags=flags),
        dtype=np.float32,
    )
    second_mask = (
        cv2.warpAffine(second.head_mask.astype(np.float32), warp, (side, side), flags=flags) > 0.99
    )
    first_image = first.canonical.astype(np.float32)

    def saturated(image: NDArray[np.float32]) -> NDArray[np.bool_]:
        return np.asarray((image <= SATURATED_LOW_VALUE) | (image >= SATURATED_HIGH_VALUE))

    excluded = cv2.dilate(
        (saturated(first_image) | saturated(second_image)).astype(np.uint8), np.ones((3, 3))
    ).astype(bool)
    both = first.head_mask & second_mask
    overlap_fraction = float(both.sum()) / max(
        1.0, float(min(first.head_mask.sum(), second.head_mask.sum()))
    )
    common = cv2.erode(both.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~excluded
    comparison_px = int(
        np.clip(min(first.head_side_px, second.head_side_px), MIN_COMPARISON_SIDE_PX, side)
    )
    size = (comparison_px, comparison_px)
    return AlignedPair(
        first=np.asarray(cv2.resize(first_image, size, interpolation=cv2.INTER_AREA), np.float32),
        second=np.asarray(cv2.resize(second_image, size, interpolation=cv2.INTER_AREA), np.float32),
        common=cv2.resize(common.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0.99,
        overlap_fraction=overlap_fraction,
        registration_correlation=correlation,
        complete=True,
    )


def score_pair(
    first: SliceDescriptor,
    second: SliceDescriptor,
    *,
    blur_sigma_px: float = 1.0,
    filter_sigmas_px: tuple[float, ...] = (1.0, 2.0, 4.0),
    window_fraction: float = 0.08,
    window_quantile: float = 0.05,
    max_scale_change: float = 1.6,
    min_coarse_correlation: float = 0.9,
) -> PairScore:
    """Register ``second`` onto ``first`` (:func:`align_pair`) and measure agreement everywhere.

    In each direction, the other image is histogram-matched onto the reference (any monotone
    intensity change), both are blurred (Gaussian, ``blur_sigma_px`` at the comparison
    resolution, against JPEG noise), and a zero-phase filter of the matched image is fitted to
    the reference (:func:`_filter_prediction`: blur or sharpening applied on re-saving). The
    agreement is the ``window_quantile`` quantile, over windows of ``window_fraction`` of the
    side, of the local correlation between reference and prediction: a copy agrees everywhere, an
    adjacent slice fails in the windows where anatomy changes. The score is the better direction
    (a filter can blur a sharp copy into a soft one, not the reverse).
    """
    aligned = align_pair(
        first,
        second,
        max_scale_change=max_scale_change,
        min_coarse_correlation=min_coarse_correlation,
    )
    if not aligned.complete:
        return PairScore(-np.inf, 0.0, aligned.registration_correlation, 0)
    comparison_px = aligned.first.shape[0]
    common = aligned.common
    if int(common.sum()) < 100:
        return PairScore(
            -np.inf, aligned.overlap_fraction, aligned.registration_correlation, comparison_px
        )
    window_px = max(6, round(window_fraction * comparison_px))

    def blurred(image: NDArray[np.float32]) -> NDArray[np.float32]:
        return np.asarray(cv2.GaussianBlur(image, (0, 0), sigmaX=blur_sigma_px))

    def direction(reference: NDArray[np.float32], other: NDArray[np.float32]) -> float:
        target = blurred(reference)
        source = blurred(_histogram_match(other, reference, common))
        prediction = _filter_prediction(source, target, common, filter_sigmas_px)
        return _local_correlation(target, prediction, common, window_px, window_quantile)

    agreement = max(
        direction(aligned.first, aligned.second), direction(aligned.second, aligned.first)
    )
    return PairScore(
        agreement, aligned.overlap_fraction, aligned.registration_correlation, comparison_px
    )


@dataclass(frozen=True)
class Links:
    """The verified candidate graph: scores (``None`` where skipped) and which pairs are copies."""

    candidates: CandidatePairs
    scores: list[PairScore | None]
    linked: NDArray[np.bool_]


def _find(parent: list[int], index: int) -> int:
    """Root of ``index`` in a union-find forest, halving paths on the way."""
    while parent[index] != index:
        parent[index] = parent[parent[index]]
        index = parent[index]
    return index


def _best_between_groups(
    candidates: CandidatePairs,
    components: NDArray[np.int64],
    per_group_pair: int,
    per_group: int,
) -> CandidatePairs:
    """Thin candidates between groups: the best ``per_group_pair`` for each pair of groups, and
    for each group only its ``per_group`` best-correlated other groups.

    One verified link joins two groups, so trying every member of a 50-copy group against every
    member of another is wasted work.
    """
    first_group = components[candidates.first]
    second_group = components[candidates.second]
    low = np.minimum(first_group, second_group)
    high = np.maximum(first_group, second_group)
    order = np.lexsort(
        (
            candidates.orientation,
            candidates.second,
            candidates.first,
            -candidates.thumbnail_correlation,
        )
    )
    taken_per_pair: dict[tuple[int, int], int] = {}
    groups_per_group: dict[int, set[int]] = {}
    keep = np.zeros(len(candidates), dtype=bool)
    for position in order:
        key = (int(low[position]), int(high[position]))
        if taken_per_pair.get(key, 0) >= per_group_pair:
            continue
        partners_low = groups_per_group.setdefault(key[0], set())
        partners_high = groups_per_group.setdefault(key[1], set())
        is_new = key[1] not in partners_low
        if is_new and (len(partners_low) >= per_group and len(partners_high) >= per_group):
            continue
        partners_low.add(key[1])
        partners_high.add(key[0])
        taken_per_pair[key] = taken_per_pair.get(key, 0) + 1
        keep[position] = True
    return CandidatePairs(
        first=candidates.first[keep],
        second=candidates.second[keep],
        orientation=candidates.orientation[keep],
        thumbnail_correlation=candidates.thumbnail_correlation[keep],
    )


def link_pairs(
    descriptors: list[SliceDescriptor],
    *,
    min_thumbnail_correlation: float = 0.5,
    max_candidates_per_image: int = 8,
    min_coarse_correlation: float = 0.9,
    min_local_agreement: float = 0.965,
    min_overlap_fraction: float = 0.5,
    max_rounds: int = 4,
    skip_connected: bool = True,
) -> Links:
    """Verify candidate pairs; the linked ones are the edges of the near-duplicate graph.

    Round one proposes each image's best partners (:func:`candidate_pairs`); later rounds
    propose each image's best partners outside its current group, until a round adds no link
    or ``max_rounds`` is reached. Within a round candidates are verified in order of decreasing
    thumbnail correlation; with ``skip_connected`` a candidate whose two images are already
    connected is not verified (it cannot change the groups; in a group of n copies most of the
    candidate pairs are of that kind).

    Thresholds (defaults measured on Br35H and BraTS, see the README):

    - ``min_thumbnail_correlation``, ``max_candidates_per_image``: candidate generation;
      generous, they only bound the work.
    - ``min_coarse_correlation``: ECC correlation of the rank images at 40 and 80 px below
      which registration stops (re-saved copies: 99% above 0.91).
    - ``min_local_agreement``: the verification score (:func:`score_pair`) a copy must reach.
    - ``min_overlap_fraction``: share of the smaller head both images must cover.
    """
    count = len(descriptors)
    parent = list(range(count))
    rounds: list[tuple[CandidatePairs, list[PairScore | None], NDArray[np.bool_]]] = []
    verified: set[tuple[int, int, int]] = set()
    components: NDArray[np.int64] | None = None
    for _ in range(max_rounds):
        candidates = candidate_pairs(
            descriptors,
            min_thumbnail_correlation,
            max_candidates_per_image,
            components=components,
        )
        if components is not None:
            candidates = _best_between_groups(
                candidates,
                components,
                per_group_pair=BETWEEN_GROUPS_PER_PAIR,
                per_group=BETWEEN_GROUPS_PER_GROUP,
            )
        order = np.lexsort(
            (
                candidates.orientation,
                candidates.second,
                candidates.first,
                -candidates.thumbnail_correlation,
            )
        )
        scores: list[PairScore | None] = [None] * len(candidates)
        linked = np.zeros(len(candidates), dtype=bool)
        for position in order:
            first = int(candidates.first[position])
            second = int(candidates.second[position])
            orientation = int(candidates.orientation[position])
            first_root, second_root = _find(parent, first), _find(parent, second)
            if (first, second, orientation) in verified or (
                skip_connected and first_root == second_root
            ):
                continue
            verified.add((first, second, orientation))
            score = score_pair(
                descriptors[first],
                oriented(descriptors[second], orientation),
                min_coarse_correlation=min_coarse_correlation,
            )
            scores[position] = score
            if score.is_copy(min_local_agreement, min_overlap_fraction):
                linked[position] = True
                parent[max(first_root, second_root)] = min(first_root, second_root)
        rounds.append((candidates, scores, linked))
        logger.debug(
            "round %d: %d candidates, %d verified, %d linked",
            len(rounds),
            len(candidates),
            sum(score is not None for score in scores),
            int(linked.sum()),
        )
        if not linked.any():
            break
        components = np.array([_find(parent, i) for i in range(count)], dtype=np.int64)
    return Links(
        candidates=CandidatePairs(
            first=np.concatenate([r[0].first for r in rounds]),
            second=np.concatenate([r[0].second for r in rounds]),
            orientation=np.concatenate([r[0].orientation for r in rounds]),
            thumbnail_correlation=np.concatenate([r[0].thumbnail_correlation for r in rounds]),
        ),
        scores=[score for r in rounds for score in r[1]],
        linked=np.concatenate([r[2] for r in rounds]),
    )


def group_near_duplicates(
    descriptors: list[SliceDescriptor],
    *,
    min_thumbnail_correlation: float = 0.5,
    max_candidates_per_image: int = 8,
    min_coarse_correlation: float = 0.9,
    min_local_agreement: float = 0.965,
    min_overlap_fraction: float = 0.5,
    max_rounds: int = 4,
) -> NDArray[np.int64]:
    """Connected components of the verified near-duplicate graph: one label per descriptor.

    See :func:`link_pairs` for the thresholds. Labels are 0-based, numbered in order of each
    group's first member, so they depend only on the descriptors and their order.
    """
    count = len(descriptors)
    links = link_pairs(
        descriptors,
        min_thumbnail_correlation=min_thumbnail_correlation,
        max_candidates_per_image=max_candidates_per_image,
        min_coarse_correlation=min_coarse_correlation,
        min_local_agreement=min_local_agreement,
        min_overlap_fraction=min_overlap_fraction,
        max_rounds=max_rounds,
    )
    first = links.candidates.first[links.linked]
    second = links.candidates.second[links.linked]
    graph = coo_matrix((np.ones(first.size, dtype=np.int8), (first, second)), shape=(count, count))
    _, labels = connected_components(graph.tocsr(), directed=False)
    # Renumber in order of first appearance so labels do not depend on SciPy's numbering.
    _, first_seen, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank_of_component = np.argsort(np.argsort(first_seen))
    return rank_of_component[inverse].astype(np.int64)
