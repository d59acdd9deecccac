"""The ingest flow under Prefect against the local NBIA server over real HTTP."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

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


def _most_at_once(records: list[Any]) -> int:
    """The largest number of requests the server was answering at one moment."""
    events = sorted(
        [(r.started_at, 1) for r in records] + [(r.started_at + r.seconds, -1) for r in records],
        key=lambda event: (event[0], event[1]),
    )
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


@pytest.mark.parametrize("limit", [1, 2])
def test_downloads_never_exceed_the_configured_limit(tmp_path: Path, limit: int) -> None:
    # No `braincls setup` here: the limit does not exist until the flow creates it.
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from devkit.nbia.faults import Fault, FaultKind, FaultPlan
    from flows.ingest import ingest_flow
    from tasks.ingest import TCIA_LIMIT

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectNotFound):
        client.delete_global_concurrency_limit_by_name(TCIA_LIMIT)
    served = tmp_path / "served"
    write_synthetic_collection(
        served, "Limit-MR", n_patients=3, series_per_patient=2, instances_per_series=2
    )
    faults = FaultPlan()
    # Every download takes a second, so that downloads allowed at once overlap.
    faults.push(Fault(FaultKind.SLOW, endpoint="getImage", count=None, delay_seconds=1.0))
    config = TciaConfig(backoff_initial_seconds=0.0, max_concurrent_downloads=limit)
    with serve(served, seed=3, faults=faults) as server:
        result = ingest_flow(
            "Limit-MR", data_root=str(tmp_path / "data"), base_url=server.url, config=config
        )
        downloads = server.requests("getImage")
    assert (result["downloaded"], len(downloads)) == (6, 6)
    assert _most_at_once(downloads) == limit
    with get_client(sync_client=True) as client:
        created = client.read_global_concurrency_limit_by_name(TCIA_LIMIT)
    assert (created.limit, created.active) == (limit, True)
