"""A deployment run writes only under the worker's allowed data roots and talks only to its
allowed APIs, whatever its parameters (or the event that filled them) say."""

from __future__ import annotations

from pathlib import Path

import pytest

from braincls.config import Settings, UntrustedLocation, check_run_location

TRUSTED_API = "http://127.0.0.1:8765/nbia-api/services/v4/"


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A worker allowing one data root and one API, running a deployment's flow run."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("BRAINCLS_ALLOWED_DATA_ROOTS", f"{root},{tmp_path / 'other-root'}")
    monkeypatch.setenv("BRAINCLS_ALLOWED_TCIA_BASE_URLS", TRUSTED_API)
    # What Prefect sets in a run of a deployment (prefect.runtime.deployment.id).
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", "6c6b8a0e-0000-4000-8000-000000000001")
    return root


def test_an_event_cannot_choose_where_a_retraining_writes(worker: Path, tmp_path: Path) -> None:
    from flows.retrain import retrain_flow

    elsewhere = tmp_path / "home" / "someone" / ".ssh"
    with pytest.raises(UntrustedLocation, match=r"is not an allowed data root on this worker"):
        retrain_flow(collections=["X"], data_root=str(elsewhere), base_url=TRUSTED_API)
    assert not elsewhere.exists()
    with pytest.raises(UntrustedLocation, match=r"base_url http://evil.example/ is not an allowed"):
        retrain_flow(collections=["X"], data_root=str(worker), base_url="http://evil.example/")
    # Allowed: the run goes on (and stops where nothing of X was ever ingested).
    with pytest.raises(FileNotFoundError, match=r"no verified DICOM for .*raw/X"):
        retrain_flow(
            collections=["X"],
            data_root=str(worker),
            base_url=TRUSTED_API.rstrip("/"),
            skip_ingest=True,
        )


def test_ingest_watch_and_training_runs_are_checked_too(worker: Path, tmp_path: Path) -> None:
    from flows.ingest import ingest_flow
    from flows.train import train_flow
    from flows.watch import watch_flow

    outside = str(tmp_path / "outside")
    with pytest.raises(UntrustedLocation):
        ingest_flow("X", data_root=outside, base_url=TRUSTED_API)
    with pytest.raises(UntrustedLocation):
        watch_flow(collections=["X"], data_root=outside, base_url=TRUSTED_API)
    with pytest.raises(UntrustedLocation):
        train_flow(dataset={}, data_root=outside)
    assert not Path(outside).exists()


def test_runs_started_in_a_shell_are_the_users_own(tmp_path: Path) -> None:
    from flows.retrain import retrain_flow

    with pytest.raises(FileNotFoundError, match=r"no verified DICOM for .*mine/raw/X"):
        retrain_flow(
            collections=["X"],
            data_root=str(tmp_path / "mine"),
            base_url="http://x/",
            skip_ingest=True,
        )


def test_allowed_roots_include_their_subfolders_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRAINCLS_ALLOWED_DATA_ROOTS", str(tmp_path / "data"))
    settings = Settings()
    check_run_location(settings, tmp_path / "data", None)
    check_run_location(settings, tmp_path / "data" / "team-a", None)
    for outside in (tmp_path / "data" / ".." / "etc", tmp_path / "data-evil"):
        with pytest.raises(UntrustedLocation):
            check_run_location(settings, outside, None)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "link").symlink_to(tmp_path)  # resolves outside
    with pytest.raises(UntrustedLocation):
        check_run_location(settings, tmp_path / "data" / "link" / "x", None)
    monkeypatch.delenv("BRAINCLS_ALLOWED_DATA_ROOTS")
    monkeypatch.setenv("BRAINCLS_DATA_ROOT", str(tmp_path / "default"))
    check_run_location(Settings(), tmp_path / "default", Settings().tcia_base_url)
