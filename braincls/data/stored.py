"""The stored training images: the preprocessed 8-bit PNGs that training, evaluation and
prediction read (with OpenCV, no TensorFlow)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from braincls.common.tables import SPLIT_COLUMN


class StoredImageError(RuntimeError):
    """A stored image is missing, unreadable or of another size than the model takes."""


def load_stored_images(paths: list[str], image_size_px: int) -> np.ndarray:
    """Stored 8-bit PNGs as a (n, size, size, 1) uint8 array."""
    batch = np.empty((len(paths), image_size_px, image_size_px, 1), np.uint8)
    for index, path in enumerate(paths):
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise StoredImageError(f"{path}: stored image missing or unreadable")
        if image.shape != (image_size_px, image_size_px):
            raise StoredImageError(
                f"{path}: {image.shape[1]}x{image.shape[0]} px, the model takes {image_size_px} px"
            )
        batch[index, :, :, 0] = image
    return batch


def split_images(
    dataset: pd.DataFrame, split: str, data_root: Path
) -> tuple[list[str], np.ndarray]:
    """Absolute stored-image paths and label indices of one split of a dataset manifest."""
    part = dataset[dataset[SPLIT_COLUMN] == split]
    paths = [str(Path(data_root) / str(p)) for p in part["image_path"]]
    return paths, part["label_index"].to_numpy(np.int64)
