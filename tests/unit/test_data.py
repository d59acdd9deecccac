"""Image-folder import: quarantine reasons, near-duplicate groups, group-preserving splits."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from braincls.config import ImportConfig, PipelineConfig, SplitConfig
from braincls.data.fingerprint import perceptual_hash
from braincls.data.images import ImageFolderError, class_folders, import_image_folder
from braincls.data.split import SplitError, split_manifest


def _slice_image(seed: int, side: int = 120) -> np.ndarray:
    """A distinct synthetic 'slice': an ellipse head with random blobs, on black."""
    rng = np.random.default_rng(seed)
    image = np.zeros((side, side), np.uint8)
    cv2.ellipse(image, (side // 2, side // 2), (side // 3, side // 2 - 8), 0, 0, 360, 90, -1)
    for _ in range(6):
        center = (int(rng.integers(30, side - 30)), int(rng.integers(20, side - 20)))
        cv2.circle(image, center, int(rng.integers(5, 14)), int(rng.integers(120, 255)), -1)
    return cv2.GaussianBlur(image, (3, 3), 0)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    root = tmp_path / "set"
    for label, offset in (("no", 0), ("yes", 1000)):
        (root / label).mkdir(parents=True)
        for i in range(12):
            cv2.imwrite(str(root / label / f"{label}{i}.png"), _slice_image(offset + i))
    base = _slice_image(1000)
    # Near-duplicates of yes0: rescaled + brighter, and padded with a black border.
    brighter = cv2.convertScaleAbs(cv2.resize(base, (200, 200)), alpha=1.15, beta=10)
    cv2.imwrite(str(root / "yes" / "yes0_rescaled.jpg"), brighter)
    cv2.imwrite(
        str(root / "yes" / "yes0_padded.png"),
        cv2.copyMakeBorder(base, 20, 20, 35, 35, cv2.BORDER_CONSTANT, value=0),
    )
    # Exact copy, broken files and a non-image.
    (root / "yes" / "yes0_copy.png").write_bytes((root / "yes" / "yes0.png").read_bytes())
    (root / "no" / "empty.jpg").write_bytes(b"")
    (root / "no" / "broken.jpg").write_bytes(b"this is not a JPEG")
    (root / "no" / "notes.txt").write_text("scanner notes")
    cv2.imwrite(str(root / "no" / "tiny.png"), np.full((8, 8), 128, np.uint8))
    cv2.imwrite(str(root / "no" / "flat.png"), np.full((64, 64), 77, np.uint8))
    return root


def test_class_folders_needs_two_classes(tmp_path: Path) -> None:
    with pytest.raises(ImageFolderError, match="image folder not found"):
        class_folders(tmp_path / "missing")
    (tmp_path / "yes").mkdir()
    with pytest.raises(ImageFolderError, match=r"needs at least two class folders .* found yes"):
        class_folders(tmp_path)
    (tmp_path / "no").mkdir()
    assert [p.name for p in class_folders(tmp_path)] == ["no", "yes"]


def test_negative_class_comes_first(tmp_path: Path) -> None:
    for name in ("tumor", "healthy"):
        (tmp_path / name).mkdir()
    assert [p.name for p in class_folders(tmp_path)] == ["healthy", "tumor"]


def test_import_quarantines_with_reasons(image_folder: Path) -> None:
    result = import_image_folder(image_folder, ImportConfig())
    reasons = dict(
        zip(result.quarantine["relative_path"], result.quarantine["reason"], strict=True)
    )
    assert reasons == {
        "no/broken.jpg": "not decodable as an image",
        "no/empty.jpg": "empty file (0 bytes)",
        "no/flat.png": "constant image (every pixel has one value)",
        "no/notes.txt": "not an image file (extension .txt)",
        "no/tiny.png": "too small: 8x8 px, minimum side 16 px",
        "yes/yes0_copy.png": "exact duplicate of another file (same sha256)",
    }
    manifest = result.manifest
    assert len(manifest) == 12 + 14
    assert result.class_names == ("no", "yes")
    assert manifest.groupby("label")["label_index"].first().to_dict() == {"no": 0, "yes": 1}
    assert manifest["sample_id"].is_unique
    assert manifest["patient_id"].isna().all()
    assert manifest["fingerprint"].str.fullmatch(r"[0-9a-f]{16}").all()


def test_near_duplicates_share_a_group(image_folder: Path) -> None:
    manifest = import_image_folder(image_folder, ImportConfig()).manifest
    group_of = dict(zip(manifest["relative_path"], manifest["group_id"], strict=True))
    assert (
        group_of["yes/yes0.png"]
        == group_of["yes/yes0_rescaled.jpg"]
        == group_of["yes/yes0_padded.png"]
    )
    # Every other image stands alone: 26 images, 24 groups.
    assert manifest["group_id"].nunique() == 24


def test_perceptual_hash_ignores_border_and_brightness() -> None:
    base = _slice_image(7)
    padded = cv2.copyMakeBorder(base, 30, 30, 10, 10, cv2.BORDER_CONSTANT, value=0)
    brighter = cv2.convertScaleAbs(base, alpha=1.2, beta=5)
    other = _slice_image(8)
    h = perceptual_hash(base)
    assert bin(h ^ perceptual_hash(padded)).count("1") <= 4
    assert bin(h ^ perceptual_hash(brighter)).count("1") <= 4
    assert bin(h ^ perceptual_hash(other)).count("1") > 10


def _manifest(n_groups: int, per_group: int) -> pd.DataFrame:
    rows = []
    for g in range(n_groups):
        for k in range(per_group):
            rows.append(
                {"sample_id": f"s{g}-{k}", "group_id": f"g{g}", "label": "yes" if g % 2 else "no"}
            )
    return pd.DataFrame(rows)


def test_grouped_split_keeps_groups_whole_and_is_deterministic() -> None:
    manifest = _manifest(10_000, 2)
    first = split_manifest(manifest, SplitConfig(seed=3))
    again = split_manifest(manifest, SplitConfig(seed=3))
    other = split_manifest(manifest, SplitConfig(seed=4))
    assert first["split"].tolist() == again["split"].tolist()
    assert first["split"].tolist() != other["split"].tolist()
    assert (first.groupby("group_id")["split"].nunique() == 1).all()
    # Each group's split is drawn on its own: the shares match the fractions in expectation
    # (a binomial share of 10,000 groups: a standard deviation of 0.005 or less).
    shares = first["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.70, abs=0.02)
    assert shares["val"] == pytest.approx(0.15, abs=0.02)
    assert shares["test"] == pytest.approx(0.15, abs=0.02)
    for split in ("train", "val", "test"):
        labels = first.loc[first["split"] == split, "label"].value_counts(normalize=True)
        assert labels["yes"] == pytest.approx(0.5, abs=0.04)


@pytest.mark.parametrize("strategy", ["grouped", "random"])
def test_existing_groups_keep_their_split_when_data_is_added(strategy: str) -> None:
    # The case: 40 patients, then one more. Sorting and shuffling the ids moved 6 of
    # the 40, and 2 old training patients into the new test split.
    before = split_manifest(_manifest(40, 2), SplitConfig(strategy=strategy, seed=42))
    grown = pd.concat(
        [
            _manifest(40, 2),
            pd.DataFrame([{"sample_id": "s-new", "group_id": "g-new", "label": "yes"}]),
        ],
        ignore_index=True,
    )
    after = split_manifest(grown, SplitConfig(strategy=strategy, seed=42))
    old = after.iloc[: len(before)]
    assert old["sample_id"].tolist() == before["sample_id"].tolist()
    moved = before.loc[before["split"].to_numpy() != old["split"].to_numpy(), "sample_id"]
    assert moved.tolist() == []
    # Rows added later (more images of a known patient) join their group's split.
    more = pd.concat(
        [grown, pd.DataFrame([{"sample_id": "s0-late", "group_id": "g0", "label": "no"}])],
        ignore_index=True,
    )
    if strategy == "grouped":
        late = split_manifest(more, SplitConfig(seed=42)).set_index("sample_id")["split"]
        assert late["s0-late"] == late["s0-0"]


def test_split_depends_on_the_seed_and_the_group_id_only() -> None:
    manifest = _manifest(60, 1)
    split = split_manifest(manifest, SplitConfig(seed=42)).set_index("group_id")["split"]
    shuffled = manifest.sample(frac=1.0, random_state=0).reset_index(drop=True)
    again = split_manifest(shuffled, SplitConfig(seed=42)).set_index("group_id")["split"]
    assert again.sort_index().tolist() == split.sort_index().tolist()


def test_random_split_separates_copies() -> None:
    split = split_manifest(_manifest(200, 3), SplitConfig(strategy="random", seed=3))
    assert (split.groupby("group_id")["split"].nunique() > 1).sum() > 50


def test_split_fails_when_a_class_cannot_reach_every_split() -> None:
    manifest = pd.DataFrame(
        [{"sample_id": "a", "group_id": "g1", "label": "yes"}]
        + [{"sample_id": f"n{i}", "group_id": f"h{i}", "label": "no"} for i in range(20)]
    )
    with pytest.raises(SplitError, match="has no images of class yes"):
        split_manifest(manifest, SplitConfig())


def test_split_fractions_are_checked_when_the_config_is_made() -> None:
    # Before any import or conversion runs: a bad config fails at once, not hours later.
    with pytest.raises(ValidationError, match=r"must add up to 1, got 0.5 \+ 0.15 \+ 0.15"):
        SplitConfig(train_fraction=0.5)
    with pytest.raises(ValidationError, match="must add up to 1"):
        PipelineConfig.model_validate({"split": {"test_fraction": 0.3}})
    assert SplitConfig(train_fraction=0.6, val_fraction=0.2, test_fraction=0.2).seed == 42


def test_groups_file_overrides_fingerprint_groups(image_folder: Path) -> None:
    (image_folder / "groups.csv").write_text(
        "relative_path,group\nno/no0.png,P1\nyes/yes5.png,P1\nno/no3.png,P2\n"
    )
    manifest = import_image_folder(image_folder, ImportConfig()).manifest.set_index("relative_path")
    assert (
        manifest.loc["no/no0.png", "group_id"] == manifest.loc["yes/yes5.png", "group_id"] == "p-P1"
    )
    assert manifest.loc["no/no3.png", "group_id"] == "p-P2"
    assert manifest.loc["no/no3.png", "patient_id"] == "P2"
    assert pd.isna(manifest.loc["no/no1.png", "patient_id"])
    assert manifest.loc["no/no1.png", "group_id"].startswith("g")
