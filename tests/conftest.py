"""Shared fixtures: isolated Prefect/Keras homes, the real data beside the project."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"

# Isolate every per-user folder before Prefect or Keras is imported by any test module.
_HOME = Path(tempfile.mkdtemp(prefix="braincls-test-home-"))
os.environ.setdefault("PREFECT_HOME", str(_HOME / "prefect"))
os.environ.setdefault("KERAS_HOME", str(_HOME / "keras"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "braincls")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# DICOM folders that braincls did not ingest from an NBIA API are pseudonymised by default,
# which needs a salt; tests of a missing salt remove it.
os.environ.setdefault("BRAINCLS_PSEUDONYM_SALT", "braincls-tests-not-a-secret")


def _shared(path: str) -> Path:
    target = SHARED_DATA / path
    if not target.exists():
        message = f"real data missing: {target} (expected ../shared/data beside the project)"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message)
        pytest.skip(message)
    return target


@pytest.fixture(scope="session")
def br35h_dir() -> Path:
    """The real Br35H folder (yes/, no/). Its absence fails under CI."""
    return _shared("br35h")


@pytest.fixture(scope="session")
def brats_dir() -> Path:
    """The 16 real BraTS glioma cases (NIfTI). Their absence fails under CI."""
    return _shared("brats")


@pytest.fixture(scope="session")
def real_dicom_dir() -> Path:
    """The two real MR series. Their absence fails under CI."""
    return _shared("dicom")
