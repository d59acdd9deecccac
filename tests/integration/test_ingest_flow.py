"""The ingest flow under Prefect against the local NBIA server over real HTTP."""

from __future__ import annotations

from pathlib import Path

from braincls.config import TciaConfig
from devkit.nbia import serve
from devkit.nbia.synthetic import write_synthetic_collection


def test_ingest_flow_downloads_new_series_only(tmp_path: Path) -> None:
    from flows.ingest import ingest_flow

    served = tmp_path / "served"
    write_synthetic_collection(
        served, "Demo-MR", n_patients=2, series_per_patient=2, instances_per_series=3
    )
    data_root = tmp_path / "data"
    config = TciaConfig(backoff_initial_seconds=0.0)
    with serve(served, seed=3) as server:
        first = ingest_flow("Demo-MR", data_root=str(data_root), base_url=server.url, config=config)
        assert (first["listed"], first["downloaded"], first["skipped"], first["failed"]) == (
            4,
            4,
            0,
            0,
        )
        assert len(list((data_root / "raw" / "Demo-MR").glob("*/*/*/*.dcm"))) == 12
        again = ingest_flow("Demo-MR", data_root=str(data_root), base_url=server.url, config=config)
        assert (again["listed"], again["downloaded"], again["skipped"]) == (4, 0, 4)
        write_synthetic_collection(
            served,
            "Demo-MR",
            n_patients=1,
            series_per_patient=1,
            instances_per_series=3,
            first_patient=3,
        )
        server.reload()
        third = ingest_flow("Demo-MR", data_root=str(data_root), base_url=server.url, config=config)
        assert (third["listed"], third["downloaded"], third["skipped"]) == (5, 1, 4)
