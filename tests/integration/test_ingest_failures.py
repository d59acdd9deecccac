"""A failed ingest run says what failed and what to do (its final state message)."""

from __future__ import annotations

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
