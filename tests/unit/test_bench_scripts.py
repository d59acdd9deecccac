"""The benchmark scripts of issue 6: arguments parse, and the small pure helpers are exact."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "script", ["train_throughput.py", "generalisation.py", "gpu/check.py"], ids=str
)
def test_help_parses(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ")


def test_generalisation_rejects_parts_without_the_model_they_need() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "generalisation.py"), "--parts", "b"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--parts: choose from a, b, c, d; b and d need a" in done.stderr


def test_gpu_check_script_is_valid_bash() -> None:
    done = subprocess.run(["bash", "-n", str(BENCH / "gpu_check.sh")], capture_output=True)
    assert done.returncode == 0, done.stderr


def test_wilson_interval_exact() -> None:
    generalisation = _load(BENCH / "generalisation.py")
    assert generalisation.wilson_interval(0, 24) == [0.0, 0.138]
    assert generalisation.wilson_interval(24, 24) == [0.862, 1.0]
    assert generalisation.wilson_interval(5, 10) == [0.2366, 0.7634]
    assert generalisation.wilson_interval(0, 0) is None


def test_subset_metrics_per_class() -> None:
    generalisation = _load(BENCH / "generalisation.py")
    labels = np.array([1, 1, 1, 0, 0])
    probabilities = np.array([0.9, 0.6, 0.2, 0.7, 0.1])
    metrics = generalisation.subset_metrics(labels, probabilities, 0.5)
    assert (metrics["n"], metrics["n_tumor"], metrics["n_no_tumor"]) == (5, 3, 2)
    assert (metrics["sensitivity"], metrics["specificity"]) == (0.6667, 0.5)
    assert metrics["roc_auc"] == 0.6667
    assert metrics["mean_p_tumor_on_tumor"] == 0.5667
    only_tumor = generalisation.subset_metrics(labels[:3], probabilities[:3], 0.5)
    assert (only_tumor["specificity"], only_tumor["roc_auc"]) == (None, None)
