"""The NBIA client against the local server over real HTTP: listings, verified downloads, every
fault mode (recovered, or failed with the right error and nothing left on disk)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from braincls.ingest import (
    Backoff,
    ChecksumMismatchError,
    IncompleteSeriesError,
    NbiaClient,
    SeriesRecord,
    TciaError,
    TciaRateLimitedError,
    TciaRequestError,
    TciaResponseError,
    TciaServerError,
    TciaTransportError,
    UnsafeArchiveError,
    check_present,
    ingest,
    plan_ingest,
    read_record,
    record_path,
    series_dir,
)
from devkit.nbia import FaultKind, NbiaServer, serve
from devkit.nbia.synthetic import write_synthetic_collection

PGBM_SERIES = "1.3.6.1.4.1.14519.5.2.1.4429.7055.197322826283777183783875680644"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, real_dicom_dir: Path) -> Iterator[NbiaServer]:
    root = tmp_path_factory.mktemp("nbia-root")
    pgbm = root / "Brain-Tumor-Progression"
    pgbm.mkdir()
    for source in sorted((real_dicom_dir / "tcia-brain-tumor-progression-pgbm-001").iterdir()):
        (pgbm / source.name).symlink_to(source)
    (pgbm / "catalogue.json").write_text(json.dumps({"DateReleased": "2018-07-13"}))
    write_synthetic_collection(
        root,
        "Synth-MR",
        n_patients=3,
        series_per_patient=2,
        instances_per_series=4,
        catalogue={"DateReleased": "2024-03-01"},
    )
    with serve(root, seed=3) as running:
        yield running


@pytest.fixture()
def sleeps() -> list[float]:
    return []


@pytest.fixture()
def client(server: NbiaServer, sleeps: list[float]) -> Iterator[NbiaClient]:
    server.faults.clear()
    server.clear_requests()
    with NbiaClient(
        server.url,
        timeout_seconds=5.0,
        max_attempts=3,
        backoff=Backoff(initial_seconds=0.01, max_seconds=0.02),
        sleep=sleeps.append,
    ) as made:
        yield made
    server.faults.clear()


@pytest.fixture()
def synth_series(client: NbiaClient) -> SeriesRecord:
    return client.get_series(Collection="Synth-MR")[0]


def tree_files(raw_root: Path) -> list[str]:
    """Every file and folder under raw_root (the staging folder must be empty)."""
    return sorted(p.relative_to(raw_root).as_posix() for p in raw_root.rglob("*"))


def assert_nothing_kept(raw_root: Path) -> None:
    assert tree_files(raw_root) in ([], [".incoming"])


# -- listings -----------------------------------------------------------------------------------


def test_collection_values_are_sorted(client: NbiaClient) -> None:
    assert client.get_collection_values() == ["Brain-Tumor-Progression", "Synth-MR"]


def test_get_series_gives_typed_sorted_records(client: NbiaClient, real_dicom_dir: Path) -> None:
    (record,) = client.get_series(Collection="brain-tumor-progression", Modality="mr")
    files = list((real_dicom_dir / "tcia-brain-tumor-progression-pgbm-001").iterdir())
    assert record.series_instance_uid == PGBM_SERIES
    assert (record.collection, record.patient_id) == ("Brain-Tumor-Progression", "PGBM-001")
    assert record.image_count == 24
    assert record.file_size_bytes == sum(path.stat().st_size for path in files)
    assert record.date_released == dt.date(2018, 7, 13)
    assert record.series_date == dt.date(1992, 4, 2)
    assert record.license_uri == "https://creativecommons.org/licenses/by/4.0/"
    synth = client.get_series(Collection="Synth-MR")
    assert len(synth) == 6
    assert synth == sorted(synth, key=lambda item: item.sort_key)


def test_empty_results_are_empty_lists(client: NbiaClient) -> None:
    assert client.get_series(Collection="No-Such-Collection") == []
    assert client.get_updated_series(dt.date(2024, 3, 1)) == []
    assert client.get_sop_instance_uids("1.2.3") == []
    assert client.get_series_size("1.2.3").object_count is None


def test_updated_series_size_and_sop_uids(client: NbiaClient, real_dicom_dir: Path) -> None:
    updated = client.get_updated_series(dt.date(2024, 2, 29))
    assert {record.collection for record in updated} == {"Synth-MR"}
    assert len(updated) == 6
    files = list((real_dicom_dir / "tcia-brain-tumor-progression-pgbm-001").iterdir())
    size = client.get_series_size(PGBM_SERIES)
    assert (size.object_count, size.total_size_bytes) == (24, sum(p.stat().st_size for p in files))
    expected = sorted(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in files)
    assert client.get_sop_instance_uids(PGBM_SERIES) == expected


def test_unknown_parameter_is_400_and_not_retried(client: NbiaClient, server: NbiaServer) -> None:
    with pytest.raises(TciaRequestError) as caught:
        client.get_rows("getSeries", {"collection": "Synth-MR"})
    assert caught.value.status_code == 400
    assert "Invalid query parameter: 'collection'" in str(caught.value)
    assert len(server.requests("getSeries")) == 1


@pytest.mark.parametrize(
    "kind", [FaultKind.HTTP_500, FaultKind.HTTP_503, FaultKind.HTML_200, FaultKind.RESET]
)
def test_listing_faults_are_retried(
    client: NbiaClient, server: NbiaServer, sleeps: list[float], kind: FaultKind
) -> None:
    server.faults.add(kind, endpoint="getSeries", count=2, reset_after_bytes=100)
    assert len(client.get_series(Collection="Synth-MR")) == 6
    assert [r.fault for r in server.requests("getSeries")] == [kind.value, kind.value, None]
    assert len(sleeps) == 2


def test_listing_429_waits_at_least_retry_after(
    client: NbiaClient, server: NbiaServer, sleeps: list[float]
) -> None:
    server.faults.add(FaultKind.HTTP_429, endpoint="getCollectionValues", retry_after_seconds=4)
    assert client.get_collection_values() == ["Brain-Tumor-Progression", "Synth-MR"]
    assert sleeps == [4.0]


def test_listing_gives_up_with_the_endpoint_and_attempts(
    client: NbiaClient, server: NbiaServer
) -> None:
    server.faults.add(FaultKind.HTTP_500, endpoint="getCollectionValues", count=None)
    with pytest.raises(TciaServerError) as caught:
        client.get_collection_values()
    message = str(caught.value)
    assert message.startswith("getCollectionValues(): HTTP 500 Internal Server Error from http://")
    assert message.endswith("[gave up after 3 attempts]")
    assert caught.value.attempts == 3


def test_listing_timeout_is_retried(server: NbiaServer, sleeps: list[float]) -> None:
    server.faults.clear()
    server.faults.add(FaultKind.SLOW, endpoint="getCollectionValues", delay_seconds=0.6)
    with NbiaClient(
        server.url,
        timeout_seconds=0.2,
        max_attempts=2,
        backoff=Backoff(initial_seconds=0.0),
        sleep=sleeps.append,
    ) as quick:
        assert quick.get_collection_values() == ["Brain-Tumor-Progression", "Synth-MR"]
    assert len(sleeps) == 1


# -- downloads ----------------------------------------------------------------------------------


def test_download_places_a_verified_series_with_its_record(
    client: NbiaClient, tmp_path: Path, real_dicom_dir: Path
) -> None:
    (series,) = client.get_series(SeriesInstanceUID=PGBM_SERIES)
    result = client.download_series(series, tmp_path)
    folder = (
        tmp_path / "Brain-Tumor-Progression" / "PGBM-001" / series.study_instance_uid / PGBM_SERIES
    )
    assert result.path == folder
    assert (result.image_count, result.attempts, result.downloaded) == (24, 1, True)
    assert result.dicom_bytes == series.file_size_bytes
    assert sorted(p.name for p in folder.iterdir()) == [
        *(f"1-{i:02d}.dcm" for i in range(1, 25)),
        "LICENSE",
    ]
    source = real_dicom_dir / "tcia-brain-tumor-progression-pgbm-001"
    for index in (1, 13, 24):
        name = f"1-{index:02d}.dcm"
        assert (folder / name).read_bytes() == (source / name).read_bytes()
    record = read_record(record_path(tmp_path, series))
    assert record is not None
    assert record.series == series
    assert record.endpoint == "getImage"
    assert record.files[0].md5 == hashlib.md5((source / "1-01.dcm").read_bytes()).hexdigest()
    assert check_present(tmp_path, series).present
    assert tree_files(tmp_path / ".incoming") == []


RECOVERED = [
    FaultKind.HTTP_500,
    FaultKind.HTTP_502,
    FaultKind.HTTP_503,
    FaultKind.HTTP_504,
    FaultKind.HTTP_429,
    FaultKind.RESET,
    FaultKind.SHORT_ZIP,
    FaultKind.WRONG_MD5,
    FaultKind.HTML_200,
    FaultKind.EMPTY_200,
]


@pytest.mark.parametrize("kind", RECOVERED)
def test_download_recovers_from_one_fault(
    client: NbiaClient,
    server: NbiaServer,
    synth_series: SeriesRecord,
    tmp_path: Path,
    kind: FaultKind,
) -> None:
    server.faults.add(kind, endpoint="getImage", reset_after_bytes=500, retry_after_seconds=1)
    result = client.download_series(synth_series, tmp_path)
    assert (result.attempts, result.image_count) == (2, 4)
    assert [r.fault for r in server.requests("getImage")] == [kind.value, None]
    assert check_present(tmp_path, synth_series).present


def test_download_recovers_from_a_timeout(
    server: NbiaServer, synth_series: SeriesRecord, tmp_path: Path
) -> None:
    server.faults.add(FaultKind.SLOW, endpoint="getImage", delay_seconds=0.6)
    with NbiaClient(server.url, timeout_seconds=0.2, backoff=Backoff(initial_seconds=0.0)) as quick:
        assert quick.download_series(synth_series, tmp_path).attempts == 2


FAILED = [
    (FaultKind.HTTP_500, TciaServerError, "getImage: HTTP 500 Internal Server Error from"),
    (FaultKind.HTTP_503, TciaServerError, "getImage: HTTP 503 Service Unavailable from"),
    (FaultKind.HTTP_429, TciaRateLimitedError, "getImage: HTTP 429 Too Many Requests"),
    (FaultKind.RESET, TciaTransportError, "getImage connection lost after"),
    (FaultKind.SHORT_ZIP, IncompleteSeriesError, "3 of 4 files received, md5hashes.csv missing"),
    (FaultKind.WRONG_MD5, ChecksumMismatchError, ", md5hashes.csv says "),
    (FaultKind.HTML_200, TciaResponseError, 'answered HTTP 200 with "<!DOCTYPE html>'),
    (
        FaultKind.EMPTY_200,
        TciaResponseError,
        "answered HTTP 200 with an empty body instead of a ZIP",
    ),
]


@pytest.mark.parametrize(("kind", "error", "fragment"), FAILED)
def test_download_fails_after_the_last_try_and_keeps_nothing(
    client: NbiaClient,
    server: NbiaServer,
    synth_series: SeriesRecord,
    tmp_path: Path,
    kind: FaultKind,
    error: type[TciaError],
    fragment: str,
) -> None:
    server.faults.add(kind, endpoint="getImage", count=None, reset_after_bytes=500)
    with pytest.raises(error) as caught:
        client.download_series(synth_series, tmp_path)
    message = str(caught.value)
    label = f"series {synth_series.series_instance_uid} (Synth-MR)"
    assert message.startswith(label)
    assert synth_series.patient_id not in message  # UIDs only: messages reach the webhook
    assert fragment in message
    assert message.endswith("[gave up after 3 attempts]")
    assert len(server.requests("getImage")) == 3
    assert_nothing_kept(tmp_path)


def test_a_failed_refresh_keeps_the_old_verified_copy_out_of_sight(
    client: NbiaClient, server: NbiaServer, synth_series: SeriesRecord, tmp_path: Path
) -> None:
    client.download_series(synth_series, tmp_path)
    server.faults.add(FaultKind.WRONG_MD5, endpoint="getImage", count=None)
    with pytest.raises(ChecksumMismatchError):
        client.download_series(synth_series, tmp_path)
    # The old copy and its record are untouched: the failure happened before the swap.
    assert check_present(tmp_path, synth_series).present


def test_unknown_series_is_not_retried(
    client: NbiaClient, server: NbiaServer, tmp_path: Path
) -> None:
    ghost = SeriesRecord("1.2.3.999", "1.2.3", "P", "Synth-MR", image_count=1, file_size_bytes=1)
    with pytest.raises(TciaRequestError) as caught:
        client.download_series(ghost, tmp_path)
    assert "has not been granted the access to image with given SeriesInstanceUID,1.2.3.999" in str(
        caught.value
    )
    assert caught.value.attempts == 1
    assert [r.endpoint for r in server.requests()] == ["getImage"]
    assert client.image_endpoint == "getImage"
    assert_nothing_kept(tmp_path)


@pytest.mark.parametrize(
    ("kind", "options", "fragment"),
    [
        (FaultKind.ZIP_SLIP, {}, "archive entry '../../escape.dcm' climbs out of the folder"),
        (
            FaultKind.ZIP_SLIP,
            {"entry_name": "/tmp/abs-escape.dcm"},
            "archive entry '/tmp/abs-escape.dcm' has an absolute path",
        ),
        (FaultKind.ZIP_SYMLINK, {}, "archive entry '00000000.dcm' is a symbolic link"),
    ],
)
def test_malicious_archives_are_refused_without_retry(
    client: NbiaClient,
    server: NbiaServer,
    synth_series: SeriesRecord,
    tmp_path: Path,
    kind: FaultKind,
    options: dict[str, str],
    fragment: str,
) -> None:
    raw_root = tmp_path / "deep" / "raw"
    server.faults.add(kind, count=None, **options)
    with pytest.raises(UnsafeArchiveError) as caught:
        client.download_series(synth_series, raw_root)
    assert fragment in str(caught.value)
    assert caught.value.attempts == 1
    assert len(server.requests("getImage")) == 1
    assert not list(tmp_path.rglob("*escape*"))
    assert not Path("/tmp/abs-escape.dcm").exists()
    assert_nothing_kept(raw_root)


def test_falls_back_to_get_image_with_md5_hash_on_older_servers(
    tmp_path: Path, server: NbiaServer, synth_series: SeriesRecord
) -> None:
    with serve(server.root, get_image_accepts_md5=False) as old, NbiaClient(old.url) as legacy:
        result = legacy.download_series(synth_series, tmp_path / "raw")
        assert legacy.image_endpoint == "getImageWithMD5Hash"
        assert [(r.endpoint, r.status) for r in old.requests()] == [
            ("getImage", 400),
            ("getImageWithMD5Hash", 200),
        ]
    assert sorted(p.name for p in result.path.iterdir()) == [f"{i:08d}.dcm" for i in range(1, 5)]
    assert result.attempts == 1


def test_listing_without_sizes_falls_back_to_get_series_size(
    client: NbiaClient, server: NbiaServer, synth_series: SeriesRecord, tmp_path: Path
) -> None:
    bare = SeriesRecord(
        synth_series.series_instance_uid,
        synth_series.study_instance_uid,
        synth_series.patient_id,
        synth_series.collection,
    )
    result = client.download_series(bare, tmp_path)
    assert (result.image_count, result.dicom_bytes) == (4, synth_series.file_size_bytes)
    assert len(server.requests("getSeriesSize")) == 1


def test_at_most_two_downloads_run_at_once(
    client: NbiaClient, server: NbiaServer, tmp_path: Path
) -> None:
    server.faults.add(FaultKind.SLOW, endpoint="getImage", count=None, delay_seconds=0.15)
    plan = plan_ingest(client, "Synth-MR", tmp_path)
    summary = ingest(client, plan, tmp_path, max_workers=6)
    assert summary.downloaded == 6
    spans = [(r.started_at, r.started_at + r.seconds) for r in server.requests("getImage")]
    overlap = max(sum(start <= t < end for start, end in spans) for t, _ in spans)
    assert overlap == 2


def test_a_shared_semaphore_caps_several_clients(server: NbiaServer, tmp_path: Path) -> None:
    slots = threading.BoundedSemaphore(1)
    server.faults.add(FaultKind.SLOW, endpoint="getImage", count=None, delay_seconds=0.1)
    server.clear_requests()
    with (
        NbiaClient(server.url, download_slots=slots) as first,
        NbiaClient(server.url, download_slots=slots) as second,
    ):
        series = first.get_series(Collection="Synth-MR")[:4]
        threads = [
            threading.Thread(target=c.download_series, args=(s, tmp_path))
            for c, s in zip([first, second, first, second], series, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    spans = [(r.started_at, r.started_at + r.seconds) for r in server.requests("getImage")]
    assert max(sum(start <= t < end for start, end in spans) for t, _ in spans) == 1
    assert all(check_present(tmp_path, s).present for s in series)
    assert series_dir(tmp_path, series[0]).is_dir()
