"""A class-per-folder phantom image set (``yes/``, ``no/``): the embedded default data.

Every synthetic head contributes tumor slices (``yes``) and tumor-free slices (``no``) in equal
numbers, so head shape, size, position, weighting and noise carry no class signal; only the
tumor does. Tumors span small, faint masses to large ones with necrosis and edema, so the task is
not trivially separable.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from braincls.common.atomic import atomic_dir, write_json
from devkit.phantom.anatomy import (
    SEQUENCES,
    TISSUES,
    HeadModel,
    TumorSpec,
    make_head,
    make_tumor,
    render_slice,
)

logger = logging.getLogger(__name__)

#: Class folder names, as in Br35H.
TUMOR_CLASS: Final = "yes"
NO_TUMOR_CLASS: Final = "no"

#: Slices each head contributes to each class.
SLICES_PER_HEAD_PER_CLASS = 2
#: Range of the square field of view (mm) of the image set: heads fill 55 to 85% of the frame.
FIELD_OF_VIEW_RANGE_MM = (180.0, 235.0)
#: Tumor slices cut the mass within this fraction of its half height from its centre, so the
#: cross-section is at least 80% of the nominal radius.
TUMOR_SLICE_SPREAD = 0.6
#: PNG encoder settings: noisy MR slices barely compress, so Huffman-only coding with the "up"
#: filter is as small as full deflate (about 49 kB at 256 px) at a third of the time.
#: Share of heads whose tumor is subtle (small or faint): these keep the task from being
#: trivially separable. The rest are conspicuous masses like most of Br35H's.
SUBTLE_TUMOR_FRACTION = 0.2
SUBTLE_RADIUS_RANGE_MM = (2.5, 8.0)
SUBTLE_CONTRAST_RANGE = (0.07, 0.25)
CONSPICUOUS_RADIUS_RANGE_MM = (8.0, 28.0)
CONSPICUOUS_CONTRAST_RANGE = (0.3, 0.8)
_PNG_PARAMETERS = (
    cv2.IMWRITE_PNG_COMPRESSION,
    1,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
    cv2.IMWRITE_PNG_FILTER,
    cv2.IMWRITE_PNG_FILTER_UP,
)

Label = Literal["yes", "no"]


@dataclass(frozen=True)
class PhantomSummary:
    """What :func:`generate_image_set` wrote."""

    out_dir: Path
    n_images: int
    n_tumor: int
    n_no_tumor: int
    n_heads: int
    seed: int
    image_size_px: int
    elapsed_seconds: float


@dataclass(frozen=True)
class _PlannedImage:
    label: Label
    head_index: int
    slice_index: int
    z_mm: float
    sequence: str
    field_of_view_mm: float
    white_level: float


def _sub_rng(seed: int, *path: int) -> np.random.Generator:
    """An independent generator for one node of the generation tree (seed, stream, ...)."""
    return np.random.default_rng(np.random.SeedSequence([seed, *path]))


def _slice_height(rng: np.random.Generator, tumor: TumorSpec) -> float:
    return tumor.center_z_mm + float(rng.uniform(-1.0, 1.0)) * TUMOR_SLICE_SPREAD * (
        tumor.half_height_mm
    )


GROUPS_FILE = "groups.csv"


def to_uint8(image: NDArray[np.float32], white_level: float) -> NDArray[np.uint8]:
    """Map intensities ``[0, white_level]`` linearly onto ``0..255`` (clipping above)."""
    scaled = image * np.float32(255.0 / white_level)
    np.clip(scaled, 0.0, 255.0, out=scaled)
    return np.rint(scaled).astype(np.uint8)


def _draw_tumor(rng: np.random.Generator, head: HeadModel) -> TumorSpec:
    """A subtle tumor with probability ``SUBTLE_TUMOR_FRACTION``, else a conspicuous one."""
    subtle = rng.random() < SUBTLE_TUMOR_FRACTION
    return make_tumor(
        rng,
        head,
        radius_range_mm=SUBTLE_RADIUS_RANGE_MM if subtle else CONSPICUOUS_RADIUS_RANGE_MM,
        contrast_magnitude_range=SUBTLE_CONTRAST_RANGE if subtle else CONSPICUOUS_CONTRAST_RANGE,
    )


def _plan_head(
    seed: int, head_index: int, n_tumor: int, n_no_tumor: int
) -> tuple[HeadModel, TumorSpec, list[_PlannedImage]]:
    """The head, its tumor and the images it contributes (``n_tumor`` yes, ``n_no_tumor`` no)."""
    rng = _sub_rng(seed, 0, head_index)
    head = make_head(rng)
    tumor = _draw_tumor(rng, head)
    plans: list[_PlannedImage] = []
    classes: tuple[tuple[Label, int], ...] = (("yes", n_tumor), ("no", n_no_tumor))
    for label, count in classes:
        for slice_index in range(count):
            if label == TUMOR_CLASS:
                z_mm = _slice_height(rng, tumor)
            else:
                # Tumor-free slices come from the same distribution of heights as tumor slices
                # (a decoy tumor draws it), so the slice level carries no class signal either.
                z_mm = _slice_height(rng, _draw_tumor(rng, head))
            sequence = SEQUENCES[int(rng.integers(len(SEQUENCES)))]
            # Exported images are windowed by hand: the white level varies around the brightest
            # normal tissue, independently of the tumor.
            white_level = head.gain * TISSUES[sequence].brightest * float(rng.uniform(0.9, 1.3))
            plans.append(
                _PlannedImage(
                    label=label,
                    head_index=head_index,
                    slice_index=slice_index,
                    z_mm=z_mm,
                    sequence=sequence,
                    field_of_view_mm=float(rng.uniform(*FIELD_OF_VIEW_RANGE_MM)),
                    white_level=white_level,
                )
            )
    return head, tumor, plans


def generate_image_set(
    out_dir: Path, n_images: int = 600, seed: int = 0, image_size_px: int = 256
) -> PhantomSummary:
    """Write a balanced class-per-folder phantom set: ``out_dir/yes/*.png``, ``out_dir/no/*.png``.

    Images are 8-bit grayscale PNG, ``image_size_px`` squared, named ``phantom-NNNNN.png`` in a
    seeded order that reveals neither class nor head. ``out_dir/phantom.json`` records the
    parameters and, per image, the head, slice height, weighting and tumor (for analysis by tumor
    size or contrast). ``n_images // 2`` images are tumor slices and the rest tumor-free; each
    head contributes the same number of each. The same arguments give byte-identical files.
    ``out_dir`` appears whole or not at all (an existing one is replaced).
    """
    if n_images < 2:
        raise ValueError(f"n_images must be at least 2 (one per class), got {n_images}")
    if image_size_px < 16:
        raise ValueError(f"image_size_px must be at least 16, got {image_size_px}")
    started = time.perf_counter()
    n_tumor = n_images // 2
    n_no_tumor = n_images - n_tumor
    n_heads = math.ceil(n_no_tumor / SLICES_PER_HEAD_PER_CLASS)

    heads: list[tuple[HeadModel, TumorSpec]] = []
    plans: list[_PlannedImage] = []
    remaining = {TUMOR_CLASS: n_tumor, NO_TUMOR_CLASS: n_no_tumor}
    for head_index in range(n_heads):
        take_tumor = min(SLICES_PER_HEAD_PER_CLASS, remaining[TUMOR_CLASS])
        take_free = min(SLICES_PER_HEAD_PER_CLASS, remaining[NO_TUMOR_CLASS])
        remaining[TUMOR_CLASS] -= take_tumor
        remaining[NO_TUMOR_CLASS] -= take_free
        head, tumor, head_plans = _plan_head(seed, head_index, take_tumor, take_free)
        heads.append((head, tumor))
        plans.extend(head_plans)
    order = _sub_rng(seed, 1).permutation(len(plans))

    records = []
    with atomic_dir(Path(out_dir)) as staging:
        for folder in (TUMOR_CLASS, NO_TUMOR_CLASS):
            (staging / folder).mkdir()
        for file_number, plan_index in enumerate(order, start=1):
            plan = plans[int(plan_index)]
            head, tumor = heads[plan.head_index]
            with_tumor = plan.label == TUMOR_CLASS
            image = render_slice(
                head,
                plan.z_mm,
                tumor if with_tumor else None,
                image_size_px,
                _sub_rng(seed, 2, plan.head_index, plan.slice_index, int(with_tumor)),
                sequence=plan.sequence,  # type: ignore[arg-type]
                field_of_view_mm=plan.field_of_view_mm,
            )
            relative = f"{plan.label}/phantom-{file_number:05d}.png"
            ok, encoded = cv2.imencode(
                ".png", to_uint8(image, plan.white_level), list(_PNG_PARAMETERS)
            )
            if not ok:
                raise RuntimeError(f"OpenCV could not encode {relative} as PNG")
            (staging / relative).write_bytes(encoded.tobytes())
            records.append(_image_record(relative, plan, tumor if with_tumor else None))
        # Known grouping: every slice of one synthetic head is one "patient", so the importer
        # splits by head instead of guessing from image similarity (synthetic heads look alike).
        (staging / GROUPS_FILE).write_text(
            "relative_path,group\n"
            + "".join(f"{r['path']},head-{int(str(r['head'])):04d}\n" for r in records)
        )
        write_json(
            staging / "phantom.json",
            {
                "generator": "devkit.phantom.generate_image_set",
                "description": (
                    "Synthetic axial brain MR slices (skull, cortex, white matter, ventricles, "
                    "Rician noise, coil bias); 'yes' slices cut an irregular tumor, 'no' slices "
                    "come from the same heads without it. Not patient data."
                ),
                "seed": seed,
                "n_images": n_images,
                "image_size_px": image_size_px,
                "classes": {TUMOR_CLASS: n_tumor, NO_TUMOR_CLASS: n_no_tumor},
                "n_heads": n_heads,
                "images": records,
            },
        )
    elapsed = time.perf_counter() - started
    logger.info("wrote %d phantom images to %s in %.1f s", n_images, out_dir, elapsed)
    return PhantomSummary(
        out_dir=Path(out_dir),
        n_images=n_images,
        n_tumor=n_tumor,
        n_no_tumor=n_no_tumor,
        n_heads=n_heads,
        seed=seed,
        image_size_px=image_size_px,
        elapsed_seconds=elapsed,
    )


def _image_record(relative: str, plan: _PlannedImage, tumor: TumorSpec | None) -> dict[str, object]:
    record: dict[str, object] = {
        "path": relative,
        "label": plan.label,
        "head": plan.head_index,
        "z_mm": round(plan.z_mm, 2),
        "sequence": plan.sequence,
        "field_of_view_mm": round(plan.field_of_view_mm, 2),
    }
    if tumor is not None:
        record.update(
            tumor_radius_mm=round(tumor.radius_mm, 2),
            tumor_section_radius_mm=round(tumor.section_radius_mm(plan.z_mm), 2),
            tumor_contrast=round(tumor.contrast, 3),
            tumor_necrosis=tumor.necrosis_fraction > 0,
            tumor_edema=tumor.edema_width_fraction > 0,
        )
    return record
