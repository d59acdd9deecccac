"""Registered model versions without training: an untrained ``braincls_resnet`` saved and
registered exactly as the pipeline registers a model (training record, preprocessing, data
sources, the threshold fixed at evaluation, test metrics).

For tests of everything after training (prediction, the service, external evaluation), where
the model's weights do not matter but its folder, metadata and threshold do. Seconds instead of
the minutes a training takes. ``tests/`` is on ``sys.path`` through its conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Test metrics recorded with a fake version (what the registry and the service show).
FAKE_METRICS: dict[str, Any] = {
    "accuracy": 0.75,
    "roc_auc": 0.8,
    "sensitivity": 0.7,
    "specificity": 0.8,
    "n_train": 100,
    "n_val": 20,
    "n_test": 20,
    "split": "grouped_by_patient",
    "model": "braincls_resnet",
    "confidence_intervals": {"roc_auc": [0.6, 0.95], "sensitivity": [0.5, 0.9]},
}


def save_untrained_model(path: Path, image_size_px: int, seed: int) -> Path:
    """An untrained flip-averaged ``braincls_resnet`` (4 base filters) saved at ``path``."""
    import keras

    from braincls.model.factory import build_model, with_test_time_flip

    keras.utils.set_random_seed(seed)
    model = with_test_time_flip(
        build_model("braincls_resnet", image_size_px=image_size_px, base_filters=4, seed=seed)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return path


def register_fake_version(
    data_root: Path,
    *,
    image_size_px: int = 32,
    seed: int = 0,
    threshold: float = 0.5,
    sources: list[dict[str, Any]] | None = None,
    promote: bool = True,
    metrics: dict[str, Any] | None = None,
) -> Any:
    """Register an untrained model under ``data_root/models``; return its ``ModelVersion``.

    ``sources`` are the training sources recorded with it (name, kind, conversion config), by
    default one image folder; ``promote`` makes it the champion.
    """
    from braincls.common.layout import DataLayout
    from braincls.config import ImportConfig, PreprocessConfig
    from braincls.registry.store import ModelRegistry

    layout = DataLayout(Path(data_root))
    staging = layout.root / "fake-models" / f"seed{seed}-{image_size_px}px"
    model_file = save_untrained_model(staging / "model.keras", image_size_px, seed)
    preprocess = PreprocessConfig(image_size_px=image_size_px).model_dump(mode="json")
    recorded_sources = sources or [
        {"name": "images", "kind": "images", "config": ImportConfig().model_dump(mode="json")}
    ]
    train_record = {
        "model": "braincls_resnet",
        "config": {"model": "braincls_resnet", "base_filters": 4, "seed": seed},
        "image_size_px": image_size_px,
        "class_names": ["no", "yes"],
        "positive_class": "yes",
        "dataset": {"sources": recorded_sources, "preprocess": preprocess},
        "history": {},
    }
    (staging / "train_record.json").write_text(json.dumps(train_record))
    registry = ModelRegistry(layout.models)
    version = registry.register(
        model_file,
        dict(metrics or FAKE_METRICS),
        {
            "model_name": "braincls_resnet",
            "image_size_px": image_size_px,
            "preprocess": preprocess,
            "sources": recorded_sources,
            "threshold": threshold,
            "threshold_rule": "youden",
            "train_record": train_record,
        },
        "# fake model {{version}}\n",
    )
    if promote:
        registry.promote(version.version, reason="test")
    return registry.get(version.version)
