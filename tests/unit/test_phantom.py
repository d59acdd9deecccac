"""The synthetic brain MR phantom: anatomy, tumors and the class-per-folder image set."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from devkit.phantom import (
    SEQUENCES,
    generate_image_set,
    make_head,
    make_tumor,
    render_slice,
    tumor_mask,
)
from devkit.phantom.anatomy import TumorSpec

SIZE_PX = 96
FOV_MM = 240.0


def _head_and_tumor(seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    head = make_head(rng)
    tumor = make_tumor(rng, head, radius_range_mm=(8.0, 14.0), contrast_magnitude_range=(0.4, 0.5))
    return head, tumor


def _files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# ------------------------------------------------------------------------------------- anatomy


def test_render_slice_is_float32_non_negative_and_deterministic() -> None:
    head, tumor = _head_and_tumor(1)
    first = render_slice(head, tumor.center_z_mm, tumor, SIZE_PX, np.random.default_rng(3))
    second = render_slice(head, tumor.center_z_mm, tumor, SIZE_PX, np.random.default_rng(3))
    other_noise = render_slice(head, tumor.center_z_mm, tumor, SIZE_PX, np.random.default_rng(4))

    assert first.shape == (SIZE_PX, SIZE_PX)
    assert first.dtype == np.float32
    assert float(first.min()) >= 0.0
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other_noise)


@pytest.mark.parametrize("sequence", SEQUENCES)
def test_every_sequence_draws_a_head_brighter_than_the_background(sequence: str) -> None:
    head, _ = _head_and_tumor(2)
    image = render_slice(head, 0.0, None, SIZE_PX, np.random.default_rng(0), sequence=sequence)
    centre = image[SIZE_PX // 2 - 8 : SIZE_PX // 2 + 8, SIZE_PX // 2 - 8 : SIZE_PX // 2 + 8]
    corner = image[:8, :8]

    assert float(centre.mean()) > 3 * float(corner.mean())


def test_tumor_changes_the_slice_only_inside_its_window() -> None:
    head, tumor = _head_and_tumor(5)
    z_mm = tumor.center_z_mm
    with_tumor = render_slice(head, z_mm, tumor, SIZE_PX, np.random.default_rng(9))
    without = render_slice(head, z_mm, None, SIZE_PX, np.random.default_rng(9))

    rows, cols = np.nonzero(with_tumor != without)
    col, row = head.head_to_image_px(tumor.center_x_mm, tumor.center_y_mm, SIZE_PX, FOV_MM)
    reach_px = tumor.extent_mm(z_mm) / (FOV_MM / SIZE_PX)
    assert rows.size > 0
    assert float(np.max(np.abs(rows + 0.5 - row))) <= reach_px + 1
    assert float(np.max(np.abs(cols + 0.5 - col))) <= reach_px + 1


@pytest.mark.parametrize("contrast", [0.45, -0.45])
def test_tumor_contrast_sign_sets_hyper_or_hypo_intensity(contrast: float) -> None:
    head, tumor = _head_and_tumor(6)
    tumor = replace(
        tumor,
        contrast=contrast,
        necrosis_fraction=0.0,
        edema_width_fraction=0.0,
        edema_contrast=0.0,
    )
    z_mm = tumor.center_z_mm
    mask = tumor_mask(head, tumor, z_mm, SIZE_PX)
    with_tumor = render_slice(head, z_mm, tumor, SIZE_PX, np.random.default_rng(1), sequence="T1")
    without = render_slice(head, z_mm, None, SIZE_PX, np.random.default_rng(1), sequence="T1")

    change = float(with_tumor[mask].mean() - without[mask].mean())
    assert mask.sum() > 20
    assert change > 0.05 if contrast > 0 else change < -0.05


def test_tumor_mask_is_empty_on_slices_that_miss_the_mass() -> None:
    head, tumor = _head_and_tumor(7)
    above = tumor.center_z_mm + 1.01 * tumor.half_height_mm

    assert tumor_mask(head, tumor, tumor.center_z_mm, SIZE_PX).any()
    assert not tumor.intersects(above)
    assert not tumor_mask(head, tumor, above, SIZE_PX).any()


def test_tumors_stay_inside_the_brain() -> None:
    for seed in range(60):
        rng = np.random.default_rng(seed)
        head = make_head(rng)
        tumor = make_tumor(rng, head)
        distance = math.hypot(tumor.center_x_mm, tumor.center_y_mm)
        reach = tumor.radius_mm * tumor.outline_factor * (1 + tumor.edema_width_fraction)
        assert distance + reach <= head.brain_inner_radius_mm(tumor.center_z_mm), seed
        assert head.z_min_mm < tumor.center_z_mm < head.z_max_mm


def test_tumor_section_radius_follows_an_ellipsoid() -> None:
    tumor = TumorSpec(
        center_x_mm=0.0,
        center_y_mm=0.0,
        center_z_mm=10.0,
        radius_mm=8.0,
        height_ratio=0.5,
        outline_harmonics=(),
        contrast=0.3,
        heterogeneity=0.0,
        necrosis_fraction=0.0,
        edema_width_fraction=0.0,
        edema_contrast=0.0,
    )
    assert tumor.section_radius_mm(10.0) == 8.0
    assert tumor.section_radius_mm(12.0) == pytest.approx(8.0 * math.sqrt(0.75))
    assert tumor.section_radius_mm(14.0) == 0.0
    assert tumor.intersects(13.9)
    assert not tumor.intersects(14.0)


def test_render_slice_rejects_bad_arguments() -> None:
    head, _ = _head_and_tumor(1)
    with pytest.raises(ValueError, match="image_size_px must be at least 16, got 8"):
        render_slice(head, 0.0, None, 8, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown sequence 'PD'"):
        render_slice(head, 0.0, None, 32, np.random.default_rng(0), sequence="PD")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- image set


@pytest.fixture(scope="module")
def image_set(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("phantom") / "set"
    return generate_image_set(out, n_images=24, seed=11, image_size_px=64)


def test_image_set_is_balanced_class_folders_of_8_bit_pngs(image_set) -> None:
    root = image_set.out_dir
    entries = sorted(path.name for path in root.iterdir())
    yes = sorted((root / "yes").iterdir())
    no = sorted((root / "no").iterdir())

    assert entries == ["groups.csv", "no", "phantom.json", "yes"]
    assert (len(yes), len(no)) == (12, 12)
    assert (image_set.n_tumor, image_set.n_no_tumor, image_set.n_heads) == (12, 12, 6)
    for path in yes + no:
        assert re.fullmatch(r"phantom-\d{5}\.png", path.name)
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint8
        assert image.shape == (64, 64)
    numbers = sorted(int(path.stem.split("-")[1]) for path in yes + no)
    assert numbers == list(range(1, 25))


def test_image_set_record_lists_every_image_and_shares_heads_across_classes(image_set) -> None:
    record = json.loads((image_set.out_dir / "phantom.json").read_text())
    images = record["images"]
    on_disk = sorted(
        path.relative_to(image_set.out_dir).as_posix() for path in image_set.out_dir.rglob("*.png")
    )

    assert (record["seed"], record["n_images"], record["image_size_px"]) == (11, 24, 64)
    assert sorted(item["path"] for item in images) == on_disk
    for item in images:
        assert item["path"].startswith(item["label"] + "/")
        assert ("tumor_radius_mm" in item) == (item["label"] == "yes")
    heads_yes = sorted(item["head"] for item in images if item["label"] == "yes")
    heads_no = sorted(item["head"] for item in images if item["label"] == "no")
    assert heads_yes == heads_no == sorted(list(range(6)) * 2)


def test_image_set_is_byte_identical_for_a_seed_and_differs_across_seeds(
    image_set, tmp_path: Path
) -> None:
    again = generate_image_set(tmp_path / "again", n_images=24, seed=11, image_size_px=64)
    other = generate_image_set(tmp_path / "other", n_images=24, seed=12, image_size_px=64)
    first, second, third = _files(image_set.out_dir), _files(again.out_dir), _files(other.out_dir)

    assert first == second
    pngs_first = {data for name, data in first.items() if name.endswith(".png")}
    pngs_third = {data for name, data in third.items() if name.endswith(".png")}
    assert len(pngs_first) == len(pngs_third) == 24
    assert not pngs_first & pngs_third


def test_image_set_with_an_odd_count_gives_the_extra_image_to_no(tmp_path: Path) -> None:
    summary = generate_image_set(tmp_path / "odd", n_images=7, seed=0, image_size_px=32)

    assert (summary.n_tumor, summary.n_no_tumor) == (3, 4)
    assert len(list((tmp_path / "odd" / "yes").iterdir())) == 3
    assert len(list((tmp_path / "odd" / "no").iterdir())) == 4


def test_image_set_replaces_an_existing_folder_whole(tmp_path: Path) -> None:
    out = tmp_path / "set"
    (out / "yes").mkdir(parents=True)
    (out / "yes" / "stale.png").write_bytes(b"old")
    (out / "notes.txt").write_text("old")

    generate_image_set(out, n_images=4, seed=0, image_size_px=32)

    assert sorted(path.name for path in out.iterdir()) == [
        "groups.csv",
        "no",
        "phantom.json",
        "yes",
    ]
    assert not (out / "yes" / "stale.png").exists()
    assert [path.name for path in tmp_path.iterdir()] == ["set"]


def test_image_set_rejects_too_few_images(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_images must be at least 2"):
        generate_image_set(tmp_path / "none", n_images=1)
    assert not (tmp_path / "none").exists()


def _best_threshold_accuracy(values: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the best single threshold on ``values`` (either direction), fitted in-sample."""
    order = np.argsort(values, kind="stable")
    sorted_labels = labels[order]
    # Predict "yes" above position k: correct = "no" at or below k plus "yes" above k.
    no_below = np.concatenate([[0], np.cumsum(~sorted_labels)])
    yes_above = sorted_labels.sum() - np.concatenate([[0], np.cumsum(sorted_labels)])
    correct = no_below + yes_above
    best = max(correct.max(), (len(labels) - correct).max())
    return float(best) / len(labels)


def test_global_intensity_statistics_do_not_separate_the_classes(tmp_path: Path) -> None:
    """No single global statistic (mean, spread, bright tail) tells tumor from tumor-free."""
    summary = generate_image_set(tmp_path / "set", n_images=200, seed=3, image_size_px=64)
    record = json.loads((summary.out_dir / "phantom.json").read_text())
    statistics, labels = [], []
    for item in record["images"]:
        image = cv2.imread(str(summary.out_dir / item["path"]), cv2.IMREAD_GRAYSCALE)
        pixels = image.astype(np.float64).ravel()
        statistics.append(
            [pixels.mean(), pixels.std(), *np.percentile(pixels, [50, 90, 99, 99.9]), pixels.max()]
        )
        labels.append(item["label"] == "yes")
    table, truth = np.array(statistics), np.array(labels)

    accuracies = [_best_threshold_accuracy(table[:, k], truth) for k in range(table.shape[1])]

    # The measure itself finds a perfect threshold when there is one, in either direction.
    toy = np.array([False, False, True, True])
    assert _best_threshold_accuracy(np.array([0.0, 1.0, 2.0, 3.0]), toy) == 1.0
    assert _best_threshold_accuracy(np.array([3.0, 2.0, 1.0, 0.0]), toy) == 1.0
    assert truth.sum() == 100
    assert max(accuracies) < 0.7, accuracies
