"""From the NBIA server to a registered model: ingest -> convert -> split by patient -> train,
the watcher, and conversion on a Dask cluster with results identical to the default path."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tiny import TINY_CONFIG

from braincls.config import PipelineConfig, TciaConfig
from devkit.nbia import serve
from devkit.nbia.synthetic import write_synthetic_collection
from devkit.phantom.dicom import generate_dicom_collection

COLLECTION = "BRAINCLS-PHANTOM"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder the NBIA server serves: one phantom collection of 12 patients."""
    root = tmp_path_factory.mktemp("served")
    generate_dicom_collection(
        root / COLLECTION, n_patients=12, seed=1, image_size_px=64, slices_per_series=(6, 8)
    )
    return root


def _file_hashes(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*.png"))
    }


def test_retrain_ingests_converts_splits_by_patient_and_registers(
    served: Path, tmp_path: Path
) -> None:
    from flows.retrain import retrain_flow

    data_root = tmp_path / "data"
    labels = served / COLLECTION / "labels.csv"
    config = PipelineConfig.model_validate(TINY_CONFIG)
    with serve(served, seed=1) as server:

        def retrain() -> dict[str, Any]:
            return retrain_flow(
                collections=[COLLECTION],
                data_root=str(data_root),
                base_url=server.url,
                labels=str(labels),
                config=config,
            )

        first = retrain()
        listed = first["ingest"][COLLECTION]["listed"]
        assert first["ingest"][COLLECTION]["downloaded"] == listed > 0
        assert first["states"] == {
            "convert": "Completed",
            "split": "Completed",
            "preprocess": "Completed",
            "validate": "Completed",
            "train": "Completed",
            "evaluate": "Completed",
            "register": "Completed",
        }
        assert first["model_version"] == "v0001"
        assert first["promoted"] is True

        # The split keeps every patient on one side, and no PHI reached the manifest.
        split = pd.read_parquet(next((data_root / "manifests" / "split").glob("*/split.parquet")))
        assert split.groupby("patient_id")["split"].nunique().max() == 1
        assert split["patient_id"].nunique() == 12
        assert set(split["group_id"]) == set(split["patient_id"])
        assert not {"PatientName", "PatientBirthDate"} & set(split.columns)
        assert set(split["source"]) == {COLLECTION}

        # Nothing new on the server: nothing downloaded, nothing converted, nothing retrained.
        second = retrain()
    assert second["ingest"][COLLECTION]["downloaded"] == 0
    assert second["ingest"][COLLECTION]["skipped"] == listed
    assert {stage: second["states"][stage] for stage in ("convert", "split", "train")} == {
        "convert": "Cached",
        "split": "Cached",
        "train": "Cached",
    }


def test_retrain_without_labels_says_what_is_missing(tmp_path: Path) -> None:
    from flows.retrain import retrain_flow

    missing = tmp_path / "labels.csv"
    with pytest.raises(FileNotFoundError, match=r"labels\.csv: labels table not found"):
        retrain_flow(
            collections=["X"],
            data_root=str(tmp_path),
            base_url="http://127.0.0.1:9/",
            labels=str(missing),
        )


def test_watch_ingests_new_collections_then_only_new_series(tmp_path: Path) -> None:
    from flows.watch import watch_flow

    served = tmp_path / "served"
    today = dt.datetime.now(dt.UTC).date()
    write_synthetic_collection(
        served,
        "Watch-MR",
        n_patients=2,
        series_per_patient=1,
        instances_per_series=2,
        catalogue={"DateReleased": "2020-01-01"},
    )
    data_root = tmp_path / "data"
    config = TciaConfig(backoff_initial_seconds=0.0)
    with serve(served, seed=2) as server:
        first = watch_flow(
            collections=["watch-mr"],
            data_root=str(data_root),
            base_url=server.url,
            ingest_deployment=None,
            config=config,
        )
        assert first["watched"] == ["Watch-MR"]  # the server's spelling
        assert first["new_collections"] == ["Watch-MR"]
        assert [(s["collection"], s["series"]) for s in first["started"]] == [("Watch-MR", 2)]
        assert first["since"] == {"watch-mr": None}  # never ingested: listed in full
        # The ingest, not the watcher, records a complete ingest, and only when it was one.
        state = json.loads((data_root / "raw" / ".watch-state.json").read_text())
        assert state == {
            "schema_version": 2,
            "collections": {
                "Watch-MR": {
                    "MR": {
                        "last_ingest": today.isoformat(),
                        "last_ingest_complete": True,
                        "last_complete_ingest": today.isoformat(),
                    }
                }
            },
        }

        # Nothing new: updates since the day before the last complete ingest.
        again = watch_flow(
            data_root=str(data_root), base_url=server.url, ingest_deployment=None, config=config
        )
        assert again["watched"] == ["Watch-MR"]  # default: what is already ingested
        assert again["started"] == []
        assert again["since"] == {"Watch-MR": (today - dt.timedelta(days=1)).isoformat()}

        # A new patient released today: one ingest of one series.
        (new_uid,) = write_synthetic_collection(
            served,
            "Watch-MR",
            n_patients=1,
            series_per_patient=1,
            instances_per_series=2,
            first_patient=3,
            catalogue={"DateReleased": "2020-01-01", "SeriesDateReleased": {}},
        )
        catalogue = served / "Watch-MR" / "catalogue.json"
        catalogue.write_text(
            json.dumps(
                {
                    "DateReleased": "2020-01-01",
                    "SeriesDateReleased": {new_uid: today.isoformat()},
                }
            )
        )
        server.reload()
        third = watch_flow(
            collections=["Watch-MR", "No-Such-Collection"],
            data_root=str(data_root),
            base_url=server.url,
            ingest_deployment=None,
            config=config,
        )
    assert third["missing"] == ["No-Such-Collection"]
    assert [(s["collection"], s["series"]) for s in third["started"]] == [("Watch-MR", 1)]
    assert len(list((data_root / "raw" / "Watch-MR").glob("*/*/*/*.dcm"))) == 6


def test_a_collection_whose_ingest_failed_stays_a_watch_candidate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The watcher starts ingests as deployment runs and does not wait for them. Here the
    # "deployment" runs the ingest flow in this process and, like a real run, does not raise
    # into the watcher when the ingest fails.
    import prefect.deployments

    from devkit.nbia.faults import Fault, FaultKind, FaultPlan
    from flows.ingest import ingest_flow
    from flows.watch import watch_flow

    started_runs: list[str] = []

    def run_deployment(name: str, parameters: dict[str, Any], timeout: float) -> Any:
        state = ingest_flow(**parameters, config=config, return_state=True)
        started_runs.append(state.name)
        return type("FlowRun", (), {"name": f"fake-{len(started_runs)}"})()

    monkeypatch.setattr(prefect.deployments, "run_deployment", run_deployment)
    served = tmp_path / "served"
    uids = write_synthetic_collection(
        served,
        "Watch-MR",
        n_patients=2,
        series_per_patient=1,
        instances_per_series=2,
        catalogue={"DateReleased": "2020-01-01"},
    )
    data_root = tmp_path / "data"
    config = TciaConfig(backoff_initial_seconds=0.0, max_attempts=1)
    faults = FaultPlan()
    with serve(served, seed=2, faults=faults) as server:
        faults.push(Fault(FaultKind.EMPTY_200, endpoint=None, series_uid=uids[1], count=None))
        first = watch_flow(
            collections=["Watch-MR"], data_root=str(data_root), base_url=server.url, config=config
        )
        assert [s["series"] for s in first["started"]] == [2]
        assert started_runs == ["Failed"]  # one of the two series could not be fetched
        faults.clear()
        # The next watch: the failed ingest is looked at again (in full), although nothing
        # was released since, and this time it completes.
        second = watch_flow(data_root=str(data_root), base_url=server.url, config=config)
        assert second["since"] == {"Watch-MR": None}
        assert [s["series"] for s in second["started"]] == [1]
        assert started_runs == ["Failed", "Completed"]
        third = watch_flow(data_root=str(data_root), base_url=server.url, config=config)
    assert third["started"] == []
    assert third["since"] is not None and third["since"]["Watch-MR"] is not None


def test_dask_conversion_matches_the_default_path(served: Path, tmp_path: Path) -> None:
    from distributed import LocalCluster

    from braincls.common.layout import DataLayout
    from braincls.config import ConvertConfig
    from braincls.convert.stage import run_convert
    from flows.convert import convert_on_dask

    source = served / COLLECTION
    labels = str(source / "labels.csv")
    config = ConvertConfig(image_size_px=48, workers=2)
    default_root, dask_root = tmp_path / "default", tmp_path / "dask"
    # The default path: what the pipeline's convert-dicom task runs (a local process pool).
    default = run_convert([source], DataLayout(default_root), config, Path(labels)).record
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        on_dask = convert_on_dask(
            [str(source)], str(dask_root), cluster.scheduler_address, labels, config
        )

    assert on_dask["n_images"] == default.n_images > 0
    assert on_dask["n_quarantined"] == default.n_quarantined
    assert on_dask["class_names"] == default.class_names == ["no", "yes"]
    left = pd.read_parquet(default.manifest_path)
    right = pd.read_parquet(on_dask["manifest_path"])
    # Everything but the absolute output paths is identical, row for row.
    paths = [c for c in left.columns if c.endswith("_path") and c != "relative_path"]
    pd.testing.assert_frame_equal(left.drop(columns=paths), right.drop(columns=paths))
    default_pngs = _file_hashes(default_root / "converted")
    assert len(default_pngs) >= default.n_images
    assert default_pngs == _file_hashes(dask_root / "converted")
