"""Pipeline settings as small as they get, for tests that check the machinery, not the model.

Used by tests/integration/test_dicom_pipeline.py and tests/ops (``tests/`` is on ``sys.path``
through its conftest.py).
"""

from __future__ import annotations

from typing import Any

TINY_CONFIG: dict[str, Any] = {
    "convert": {"image_size_px": 64, "workers": 1},
    "preprocess": {"image_size_px": 32},
    "train": {"epochs": 1, "batch_size": 16},
    "tcia": {"backoff_initial_seconds": 0.0},
    "registry": {"min_sensitivity": 0.0, "min_roc_auc": 0.0},
    "validate": {"min_count_per_class": 2},
    "evaluate": {"bootstrap_resamples": 100},
}
