"""Planning and running ingests against the local server: re-ingest downloads nothing,
incremental ingest downloads only new or changed series, failures are reported per series,
and watch finds what needs ingest."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from braincls.ingest import (
    Backoff,
    IngestPlan,
    NbiaClient,
    UnsafeRecordError,
    ingest,
    ingest_collection,
    ingest_series,
    plan_ingest,
    read_record,
    record_path,
    series_dir,
    summarize,
    watch,
)
from devkit.nbia import FaultKind, NbiaServer, serve
from devkit.nbia.synthetic import synthetic_uid, write_synthetic_collection, write_synthetic_series

COLLECTION = "Synth-MR"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("template")
    write_synthetic_collection(
        folder,
        COLLECTION,
        n_patients=5,
        series_per_patient=2,
        instances_per_series=3,
        catalogue={"DateReleased": "2024-03-01"},
    )
    write_synthetic_collection(folder, "Other-MR", n_patients=1, series_per_patient=1)
    return folder


@pytest.fixture()
def root(template: Path, tmp_path: Path) -> Path:
    """A fresh copy per test: tests add and change series."""
    return Path(shutil.copytree(template, tmp_path / "served"))


@pytest.fixture()
def server(root: Path) -> Iterator[NbiaServer]:
    with serve(root, seed=11) as running:
        yield running


@pytest.fixture()
def client(server: NbiaServer) -> Iterator[NbiaClient]:
    with NbiaClient(
        server.url, max_attempts=2, backoff=Backoff(initial_seconds=0.0), sleep=lambda _: None
    ) as made:
        yield made


@pytest.fixture()
def raw_root(tmp_path: Path) -> Path:
    return tmp_path / "data" / "raw"


def downloads(server: NbiaServer) -> int:
    return len(server.requests("getImage"))


def test_first_ingest_downloads_everything_and_reports_it(
    client: NbiaClient, server: NbiaServer, raw_root: Path
) -> None:
    plan = plan_ingest(client, COLLECTION, raw_root, {"Modality": "MR"})
    assert (len(plan.listed), len(plan.new), len(plan.changed), len(plan.present)) == (10, 10, 0, 0)
    assert plan.bytes_to_download == sum(s.file_size_bytes or 0 for s in plan.listed)
    summary = ingest(client, plan, raw_root)
    assert (summary.listed, summary.new, summary.downloaded, summary.skipped, summary.failed) == (
        10,
        10,
        10,
        0,
        0,
    )
    assert summary.dicom_bytes == plan.bytes_to_download
    assert summary.ok and summary.seconds > 0
    assert downloads(server) == 10
    patients = sorted(p.name for p in (raw_root / COLLECTION).iterdir())
    assert patients == [f"{COLLECTION}-{n:03d}" for n in range(1, 6)]
    rows = {row["measure"]: row["value"] for row in summary.to_rows()}
    assert (rows["series listed"], rows["series downloaded"], rows["filters"]) == (
        10,
        10,
        "Modality=MR",
    )


def test_re_ingest_downloads_nothing(
    client: NbiaClient, server: NbiaServer, raw_root: Path
) -> None:
    ingest_collection(client, COLLECTION, raw_root)
    server.clear_requests()
    plan = plan_ingest(client, COLLECTION, raw_root)
    assert (len(plan.new), len(plan.changed), len(plan.present)) == (0, 0, 10)
    summary = ingest(client, plan, raw_root)
    assert (summary.downloaded, summary.skipped, summary.dicom_bytes) == (0, 10, 0)
    assert downloads(server) == 0
    # One series as a task: already present, nothing fetched.
    result = ingest_series(client, plan.listed[0], raw_root)
    assert (result.downloaded, result.archive_bytes, result.image_count) == (False, 0, 3)
    assert downloads(server) == 0


def test_incremental_ingest_downloads_only_new_series(
    client: NbiaClient, server: NbiaServer, root: Path, raw_root: Path
) -> None:
    ingest_collection(client, COLLECTION, raw_root)
    added = write_synthetic_collection(
        root,
        COLLECTION,
        first_patient=6,
        n_patients=1,
        series_per_patient=2,
        instances_per_series=3,
    )
    assert server.reload() == 13
    server.clear_requests()
    plan = plan_ingest(client, COLLECTION, raw_root)
    assert sorted(s.series_instance_uid for s in plan.new) == sorted(added)
    assert (len(plan.changed), len(plan.present)) == (0, 10)
    summary = ingest(client, plan, raw_root)
    assert (summary.new, summary.downloaded, summary.skipped) == (2, 2, 10)
    assert sorted(r.params["SeriesInstanceUID"] for r in server.requests("getImage")) == sorted(
        added
    )


def test_a_changed_series_is_fetched_again_and_replaced(
    client: NbiaClient, server: NbiaServer, root: Path, raw_root: Path
) -> None:
    ingest_collection(client, COLLECTION, raw_root)
    target = plan_ingest(client, COLLECTION, raw_root).listed[0]
    source_folder = next(
        p.parent for p in root.rglob("IM0001.dcm") if target.series_instance_uid in str(p)
    )
    write_synthetic_series(
        source_folder / "extra",
        patient_id=target.patient_id,
        study_instance_uid=target.study_instance_uid,
        series_instance_uid=target.series_instance_uid,
        n_instances=1,
        seed=99,
    )
    (source_folder / "extra" / "IM0001.dcm").rename(source_folder / "IM0004.dcm")
    server.reload()
    server.clear_requests()
    plan = plan_ingest(client, COLLECTION, raw_root)
    assert [s.series_instance_uid for s in plan.changed] == [target.series_instance_uid]
    summary = ingest(client, plan, raw_root)
    assert (summary.changed, summary.downloaded) == (1, 1)
    record = read_record(record_path(raw_root, target))
    assert record is not None and len(record.files) == 4
    assert len(list(series_dir(raw_root, target).glob("*.dcm"))) == 4


def test_a_folder_without_its_record_is_fetched_again(
    client: NbiaClient, server: NbiaServer, raw_root: Path
) -> None:
    ingest_collection(client, COLLECTION, raw_root)
    series = plan_ingest(client, COLLECTION, raw_root).listed[3]
    record_path(raw_root, series).unlink()
    (series_dir(raw_root, series) / "1-1.dcm").write_bytes(b"half a file")
    plan = plan_ingest(client, COLLECTION, raw_root)
    assert [s.series_instance_uid for s in plan.new] == [series.series_instance_uid]
    ingest(client, plan, raw_root)
    assert (series_dir(raw_root, series) / "1-1.dcm").stat().st_size > 100


def test_failures_are_collected_per_series_and_nothing_partial_is_kept(
    client: NbiaClient, server: NbiaServer, raw_root: Path
) -> None:
    plan = plan_ingest(client, COLLECTION, raw_root)
    broken = plan.listed[4]
    server.faults.add(
        FaultKind.SHORT_ZIP, series_uid=broken.series_instance_uid, count=None, drop_files=2
    )
    summary = ingest(client, plan, raw_root)
    assert (summary.downloaded, summary.failed) == (9, 1)
    (failure,) = summary.failures
    assert failure.series_instance_uid == broken.series_instance_uid
    assert failure.error_type == "IncompleteSeriesError"
    assert failure.attempts == 2
    assert (
        "1 of 3 files received, md5hashes.csv missing [gave up after 2 attempts]" in failure.message
    )
    assert summary.failure_rows()[0]["error"] == "IncompleteSeriesError"
    assert not series_dir(raw_root, broken).exists()
    assert not record_path(raw_root, broken).exists()
    assert list((raw_root / ".incoming").iterdir()) == []


def test_filters_narrow_the_plan_and_unknown_filters_are_refused(
    client: NbiaClient, raw_root: Path
) -> None:
    assert plan_ingest(client, COLLECTION, raw_root, {"Modality": "CT"}).listed == ()
    described = plan_ingest(client, COLLECTION, raw_root, {"PatientID": "synth-mr-002"})
    assert {s.patient_id for s in described.listed} == {"Synth-MR-002"}
    with pytest.raises(ValueError, match=r"unknown filter\(s\) \['modality'\]"):
        plan_ingest(client, COLLECTION, raw_root, {"modality": "MR"})
    with pytest.raises(ValueError, match="not as a filter"):
        plan_ingest(client, COLLECTION, raw_root, {"Collection": "Other-MR"})


def test_a_listing_that_would_escape_the_raw_tree_is_refused(
    client: NbiaClient, server: NbiaServer, root: Path, raw_root: Path
) -> None:
    study, series = synthetic_uid("evil", "study"), synthetic_uid("evil", "series")
    write_synthetic_series(
        root / "Evil-MR" / "p",
        patient_id="../../outside",
        study_instance_uid=study,
        series_instance_uid=series,
        n_instances=1,
    )
    server.reload()
    # The message does not repeat the Patient ID (it reaches logs and notifications).
    with pytest.raises(UnsafeRecordError, match=r"^PatientID \(not shown\) cannot be used"):
        plan_ingest(client, "Evil-MR", raw_root)
    assert not raw_root.exists()


def test_summarize_counts_present_series_as_skipped(client: NbiaClient, raw_root: Path) -> None:
    plan = plan_ingest(client, "Other-MR", raw_root)
    result = ingest_series(client, plan.listed[0], raw_root)
    summary = summarize(plan, [result], [], seconds=2.0)
    assert (summary.downloaded, summary.skipped, summary.dicom_bytes) == (1, 0, result.dicom_bytes)
    assert summary.megabytes_per_second == pytest.approx(result.dicom_bytes / 1e6 / 2.0)
    replan: IngestPlan = plan_ingest(client, "Other-MR", raw_root)
    assert summarize(replan, [], [], seconds=0.1).skipped == 1


def test_watch_reports_missing_new_and_changed_collections(
    client: NbiaClient, server: NbiaServer, root: Path, raw_root: Path
) -> None:
    report = watch(client, raw_root, ["synth-mr", "Gone-MR"])
    assert report.server_collections == ("Other-MR", COLLECTION)
    assert (report.watched, report.missing, report.new_collections) == (
        (COLLECTION,),
        ("Gone-MR",),
        (COLLECTION,),
    )
    assert [len(plan.to_download) for plan in report.plans] == [10]
    ingest(client, report.plans[0], raw_root)

    assert watch(client, raw_root, [COLLECTION]).plans == ()
    # Newly released series: getUpdatedSeries narrows the check to collections that changed.
    added = write_synthetic_collection(root, COLLECTION, first_patient=9, n_patients=1)
    catalogue = json.loads((root / COLLECTION / "catalogue.json").read_text())
    catalogue["SeriesDateReleased"] = {uid: "2024-04-02" for uid in added}
    (root / COLLECTION / "catalogue.json").write_text(json.dumps(catalogue))
    server.reload()
    server.clear_requests()
    quiet = watch(client, raw_root, [COLLECTION], since={COLLECTION: dt.date(2024, 4, 2)})
    assert quiet.plans == () and server.requests("getSeries") == []
    report = watch(client, raw_root, [COLLECTION], since={"synth-mr": dt.date(2024, 4, 1)})
    assert report.series_to_download == 2
    assert sorted(s.series_instance_uid for s in report.plans[0].new) == sorted(added)
    # A collection without a date of a complete ingest is listed in full, whatever was released.
    server.clear_requests()
    assert watch(client, raw_root, [COLLECTION], since={}).series_to_download == 2
    assert len(server.requests("getSeries")) == 1
