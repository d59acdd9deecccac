"""A failed ingest run says what failed and what to do (its final state message)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from braincls.config import TciaConfig
from devkit.nbia import serve
from devkit.nbia.synthetic import write_synthetic_collection


def test_failed_ingests_name_the_cause_and_the_next_step(tmp_path: Path) -> None:
    from flows.failures import StageFailed
    from flows.ingest import ingest_flow

    served = tmp_path / "served"
    write_synthetic_collection(
        served, "Demo-MR", n_patients=1, series_per_patient=1, instances_per_series=2
    )
    config = TciaConfig(backoff_initial_seconds=0.0)
    with serve(served, seed=3) as server:
        with pytest.raises(StageFailed) as unknown:
            ingest_flow(
                "Demo-Typo", data_root=str(tmp_path / "data"), base_url=server.url, config=config
            )
        assert str(unknown.value) == (
            f"listing Demo-Typo at {server.url} failed: no series match {{'Modality': 'MR'}}. "
            "What to do: check the spelling of the collection (case matters) and the filters "
            "(modality), then rerun the ingest"
        )
        with pytest.raises(StageFailed) as bad_filter:
            ingest_flow(
                "Demo-MR",
                filters={"Bogus": "1"},
                data_root=str(tmp_path / "data"),
                base_url=server.url,
                config=config,
            )
        assert str(bad_filter.value).startswith(
            f"listing Demo-MR at {server.url} failed: ValueError: unknown filter(s) ['Bogus']"
        )
        assert str(bad_filter.value).endswith(
            "What to do: check the collection name (the API's getCollectionValues lists them), "
            "the filters and that the API answers at that URL; then rerun the ingest"
        )
    assert not (tmp_path / "data" / "raw" / "Demo-MR").exists()


def test_failures_name_series_by_uid_never_by_patient_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # What a failure says reaches the dashboard, the run's final message and the failure
    # webhook: UIDs identify a series there, Patient IDs do not appear.
    import logging

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from devkit.nbia.faults import Fault, FaultKind, FaultPlan
    from flows.failures import StageFailed
    from flows.ingest import ingest_flow

    served = tmp_path / "served"
    (failing, *_) = write_synthetic_collection(
        served, "Phi-MR", n_patients=2, series_per_patient=1, instances_per_series=2
    )
    faults = FaultPlan()
    faults.push(Fault(FaultKind.EMPTY_200, series_uid=failing, count=None))
    config = TciaConfig(backoff_initial_seconds=0.0, max_attempts=1)
    caplog.set_level(logging.DEBUG)
    with serve(served, seed=3, faults=faults) as server, pytest.raises(StageFailed) as error:
        ingest_flow("Phi-MR", data_root=str(tmp_path / "data"), base_url=server.url, config=config)
    message = str(error.value)
    assert f"{failing}:" in message
    patients = ("Phi-MR-001", "Phi-MR-002")
    for patient in patients:
        assert patient not in message
        for record in caplog.records:
            assert patient not in record.getMessage(), record.getMessage()
    with get_client(sync_client=True) as client:
        (summary, *_) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ingest-summary"])),
            sort="CREATED_DESC",
            limit=1,
        )
    table = json.dumps(summary.data)
    assert failing in table
    for patient in patients:
        assert patient not in table
