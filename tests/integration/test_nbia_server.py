"""The local NBIA server over real HTTP on 127.0.0.1: paths, parameters, fields, dates, filters,
ZIP layouts and fault modes, checked against what the real v4 API does."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest

from devkit.nbia import FaultKind, Instance, NbiaServer, new_file_names, serve
from devkit.nbia.synthetic import write_synthetic_collection

PGBM_SERIES = "1.3.6.1.4.1.14519.5.2.1.4429.7055.197322826283777183783875680644"
PGBM_STUDY = "1.3.6.1.4.1.14519.5.2.1.4429.7055.304625516276205756661744279896"
HEALTHY_SERIES = "1.3.12.2.1107.5.2.32.35389.2010072308581490237297697.0.0.0"
HEALTHY_FILES = 6

V4_SERIES_KEYS = {
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "Modality",
    "ProtocolName",
    "SeriesDate",
    "SeriesDescription",
    "BodyPartExamined",
    "SeriesNumber",
    "Collection",
    "Site",
    "PatientID",
    "PatientSex",
    "PatientAge",
    "Manufacturer",
    "ManufacturerModelName",
    "SoftwareVersions",
    "ImageCount",
    "MaxSubmissionTimestamp",
    "LicenseName",
    "LicenseURI",
    "DataDescriptionURI",
    "FileSize",
    "ReleasedStatus",
    "DateReleased",
    "StudyDesc",
    "StudyDate",
    "ThirdPartyAnalysis",
    "Authorized",
}


def build_root(root: Path, real_dicom_dir: Path) -> dict[str, list[str]]:
    """Two real series (symlinked, never copied) and a small synthetic collection."""
    pgbm = root / "btp"
    pgbm.mkdir(parents=True)
    for source in sorted((real_dicom_dir / "tcia-brain-tumor-progression-pgbm-001").iterdir()):
        (pgbm / source.name).symlink_to(source)
    (pgbm / "catalogue.json").write_text(
        json.dumps(
            {
                "Collection": "Brain-Tumor-Progression",
                "DateReleased": "2018-07-13",
                "LicenseName": "Creative Commons Attribution 3.0 Unported License",
                "LicenseURI": "https://creativecommons.org/licenses/by/3.0/",
                "DataDescriptionURI": "https://doi.org/10.7937/K9/TCIA.2018.15quzvnb",
                "Site": "MCW",
            }
        )
    )
    healthy = root / "Healthy-Volunteers"
    healthy.mkdir()
    for source in sorted((real_dicom_dir / "healthy-volunteer-t1-mprage").iterdir())[
        :HEALTHY_FILES
    ]:
        (healthy / source.name).symlink_to(source)
    (healthy / "catalogue.json").write_text(
        json.dumps({"DateReleased": "03-01-2024", "Public": False})
    )
    (healthy / "notes.txt").write_text("not DICOM: not served")
    synth = write_synthetic_collection(
        root, "Synth-MR", n_patients=2, series_per_patient=2, instances_per_series=3
    )
    (root / "Synth-MR" / "catalogue.json").write_text(
        json.dumps({"DateReleased": "2024-03-01", "SeriesDateReleased": {synth[3]: "2024-03-05"}})
    )
    return {"synth": synth}


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, real_dicom_dir: Path
) -> Iterator[tuple[NbiaServer, dict[str, list[str]]]]:
    root = tmp_path_factory.mktemp("nbia-root")
    uids = build_root(root, real_dicom_dir)
    with serve(root, seed=7, control=True) as server:  # the tests queue faults over HTTP
        yield server, uids


@pytest.fixture()
def server(served: tuple[NbiaServer, dict[str, list[str]]]) -> Iterator[NbiaServer]:
    yield served[0]
    served[0].faults.clear()


@pytest.fixture()
def synth(served: tuple[NbiaServer, dict[str, list[str]]]) -> list[str]:
    return served[1]["synth"]


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def get(http: httpx.Client, server: NbiaServer, endpoint: str, **params: str) -> httpx.Response:
    return http.get(server.url + endpoint, params=params)


def rows(response: httpx.Response) -> list[dict[str, object]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()  # type: ignore[no-any-return]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# -- binding and routing ------------------------------------------------------------------------


def test_binds_loopback_on_a_free_port_and_serves_the_v4_prefix(server: NbiaServer) -> None:
    assert server.host == "127.0.0.1"
    assert server.url == f"http://127.0.0.1:{server.port}/nbia-api/services/v4/"
    assert server.port > 0


def test_unknown_endpoints_and_paths_are_404(http: httpx.Client, server: NbiaServer) -> None:
    assert get(http, server, "getNothing").status_code == 404
    assert (
        http.get(f"http://127.0.0.1:{server.port}/nbia-api/services/v1/getSeries").status_code
        == 404
    )
    assert http.post(server.url + "getSeries").status_code == 405


# -- listing endpoints --------------------------------------------------------------------------


def test_get_collection_values(http: httpx.Client, server: NbiaServer) -> None:
    collections = {row["Collection"] for row in rows(get(http, server, "getCollectionValues"))}
    assert collections == {"Brain-Tumor-Progression", "Healthy-Volunteers", "Synth-MR"}


def test_get_series_row_has_the_v4_fields_dates_and_sizes(
    http: httpx.Client, server: NbiaServer, real_dicom_dir: Path
) -> None:
    response = get(http, server, "getSeries", Collection="brain-tumor-progression")
    assert b'"https:\\/\\/creativecommons.org\\/licenses\\/by\\/3.0\\/"' in response.content
    (row,) = rows(response)
    assert set(row) == V4_SERIES_KEYS
    files = sorted((real_dicom_dir / "tcia-brain-tumor-progression-pgbm-001").iterdir())
    assert row["SeriesInstanceUID"] == PGBM_SERIES
    assert row["StudyInstanceUID"] == PGBM_STUDY
    assert row["ImageCount"] == 24
    assert row["FileSize"] == sum(path.stat().st_size for path in files)
    assert row["DateReleased"] == "07-13-2018"
    assert row["SeriesDate"] == "04-02-1992"
    assert row["StudyDate"] == "04-02-1992"
    assert row["SeriesNumber"] == 11
    assert (row["PatientID"], row["Modality"], row["BodyPartExamined"]) == (
        "PGBM-001",
        "MR",
        "BRAIN",
    )
    assert row["LicenseURI"] == "https://creativecommons.org/licenses/by/3.0/"
    assert (row["Site"], row["Authorized"], row["ThirdPartyAnalysis"]) == ("MCW", 1, "NO")


def test_get_series_filter_semantics(http: httpx.Client, server: NbiaServer) -> None:
    def uids(**params: str) -> set[object]:
        response = get(http, server, "getSeries", **params)
        return {row["SeriesInstanceUID"] for row in rows(response)} if response.content else set()

    # Text filters are case-insensitive exact matches.
    assert uids(Collection="HEALTHY-volunteers") == {HEALTHY_SERIES}
    assert uids(Collection="Healthy", Modality="mr") == set()
    assert uids(Modality="mr", PatientID="pgbm-001", Manufacturer="siemens") == {PGBM_SERIES}
    # A series without (0018,0015) BodyPartExamined never matches a filter on it.
    assert HEALTHY_SERIES not in uids(BodyPartExamined="BRAIN")
    assert PGBM_SERIES in uids(BodyPartExamined="brain")
    # UIDs match exactly.
    assert uids(SeriesInstanceUID=PGBM_SERIES) == {PGBM_SERIES}
    assert uids(SeriesInstanceUID=PGBM_SERIES[:-1]) == set()
    assert uids(StudyInstanceUID=PGBM_STUDY) == {PGBM_SERIES}


def test_null_columns_are_left_out(http: httpx.Client, server: NbiaServer) -> None:
    (row,) = rows(get(http, server, "getSeries", SeriesInstanceUID=HEALTHY_SERIES))
    assert "BodyPartExamined" not in row
    assert "Site" not in row
    assert row["ImageCount"] == HEALTHY_FILES


def test_no_results_is_http_200_with_an_empty_body(http: httpx.Client, server: NbiaServer) -> None:
    for endpoint, params in [
        ("getSeries", {"Collection": "No-Such-Collection"}),
        ("getPatient", {"Collection": "No-Such-Collection"}),
        ("getSeriesSize", {"SeriesInstanceUID": "1.2.3"}),
        ("getSOPInstanceUIDs", {"SeriesInstanceUID": "1.2.3"}),
    ]:
        response = get(http, server, endpoint, **params)
        assert (response.status_code, response.content) == (200, b"")


def test_unknown_and_wrongly_cased_parameters_are_400(
    http: httpx.Client, server: NbiaServer
) -> None:
    response = get(http, server, "getSeries", collection="Synth-MR")
    assert response.status_code == 400
    assert response.text == (
        "Invalid query parameter: 'collection'. Allowed parameters are: [BodyPartExamined, "
        "Collection, Manufacturer, ManufacturerModelName, Modality, PatientID, "
        "SeriesInstanceUID, StudyInstanceUID, format]"
    )
    # getPatient spells it PatientId; getSeries spells it PatientID.
    assert get(http, server, "getPatient", PatientID="PGBM-001").status_code == 400
    assert get(http, server, "getPatient", PatientId="PGBM-001").status_code == 200


def test_missing_required_parameters_are_400(http: httpx.Client, server: NbiaServer) -> None:
    response = get(http, server, "getSeriesSize")
    assert (response.status_code, response.text) == (
        400,
        "A parameter, SeriesInstanceUID is required for this API call.",
    )
    response = get(http, server, "NewPatientsInCollection", Collection="Synth-MR")
    assert response.text == "A parameter, fromDate is required for this API call."


def test_get_updated_series_is_strictly_after_and_public_only(
    http: httpx.Client, server: NbiaServer, synth: list[str]
) -> None:
    def uids(**params: str) -> set[object]:
        response = get(http, server, "getUpdatedSeries", **params)
        return {row["SeriesInstanceUID"] for row in rows(response)} if response.content else set()

    assert uids(fromDate="03-01-2024") == {synth[3]}
    assert uids(fromDate="02-29-2024") == set(synth)
    assert uids(fromDate="03-05-2024") == set()
    # Everything public since 1900; the non-public collection is never listed.
    assert uids() == {*synth, PGBM_SERIES}
    # A malformed date matches nothing (STR_TO_DATE gives NULL), it is not an error.
    response = get(http, server, "getUpdatedSeries", fromDate="2024-03-01")
    assert (response.status_code, response.content) == (200, b"")


def test_patient_study_and_value_endpoints(http: httpx.Client, server: NbiaServer) -> None:
    patients = rows(get(http, server, "getPatient", Collection="Synth-MR"))
    assert sorted(row["PatientId"] for row in patients) == ["Synth-MR-001", "Synth-MR-002"]
    assert patients[0]["SpeciesDescription"] == "Homo sapiens"
    new = rows(
        get(http, server, "NewPatientsInCollection", Collection="Synth-MR", fromDate="03-01-2024")
    )
    assert len(new) == 2  # >= on the release date
    studies = rows(
        get(http, server, "getPatientStudy", Collection="Synth-MR", PatientID="Synth-MR-001")
    )
    assert [(row["SeriesCount"], row["StudyDate"]) for row in studies] == [(2, "01-02-2024")]
    assert (
        rows(
            get(
                http,
                server,
                "NewStudiesInPatientCollection",
                Collection="synth-mr",
                fromDate="03-02-2024",
            )
        )[0]["PatientID"]
        == "Synth-MR-002"
    )
    assert rows(get(http, server, "getModalityValues", Collection="Synth-MR")) == [
        {"Modality": "MR"}
    ]
    bodies = rows(get(http, server, "getBodyPartValues"))
    assert bodies == [{"BodyPartExamined": "BRAIN"}]
    makers = {row["Manufacturer"] for row in rows(get(http, server, "getManufacturerValues"))}
    assert makers == {"SIEMENS", "BRAINCLS"}
    by_modality = rows(
        get(
            http,
            server,
            "getPatientByCollectionAndModality",
            Collection="Brain-Tumor-Progression",
            Modality="MR",
        )
    )
    assert by_modality == [{"PatientId": "PGBM-001", "Authorized": 1}]


def test_series_size_and_sop_instance_uids(
    http: httpx.Client, server: NbiaServer, real_dicom_dir: Path
) -> None:
    files = sorted((real_dicom_dir / "tcia-brain-tumor-progression-pgbm-001").iterdir())
    size = rows(get(http, server, "getSeriesSize", SeriesInstanceUID=PGBM_SERIES))
    assert size == [{"TotalSizeInBytes": sum(p.stat().st_size for p in files), "ObjectCount": 24}]
    sops = {
        row["SOPInstanceUID"]
        for row in rows(get(http, server, "getSOPInstanceUIDs", SeriesInstanceUID=PGBM_SERIES))
    }
    assert sops == {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in files}


def test_series_metadata_is_a_quoted_csv_download_by_default(
    http: httpx.Client, server: NbiaServer
) -> None:
    response = http.post(server.url + "getSeriesMetadata", data={"list": f"{PGBM_SERIES},1.2.3"})
    assert response.headers["content-disposition"] == 'attachment; filename="SeriesMetaData.csv"'
    assert response.text.startswith('"PatientID","PatientName","PatientSex"')
    (row,) = list(csv.DictReader(io.StringIO(response.text)))
    assert (row["SeriesInstanceUID"], row["ImageCount"]) == (PGBM_SERIES, "24")
    as_json = http.post(
        server.url + "getSeriesMetadata", data={"list": PGBM_SERIES, "format": "json"}
    )
    assert as_json.json()[0]["DateReleased"] == "07-13-2018"
    assert http.post(server.url + "getSeriesMetadata").status_code == 400


def test_single_image_and_md5_endpoints(
    http: httpx.Client, server: NbiaServer, real_dicom_dir: Path
) -> None:
    path = real_dicom_dir / "tcia-brain-tumor-progression-pgbm-001" / "1-05.dcm"
    sop = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
    response = get(
        http, server, "getSingleImage", SeriesInstanceUID=PGBM_SERIES, SOPInstanceUID=sop
    )
    assert response.headers["content-type"] == "application/dicom"
    assert response.content == path.read_bytes()
    assert get(http, server, "getMD5HashForImage", SOPInstanceUID=sop).text == md5(path)


# -- archives -----------------------------------------------------------------------------------


def fetch_zip(
    http: httpx.Client, server: NbiaServer, endpoint: str, **params: str
) -> tuple[httpx.Response, zipfile.ZipFile]:
    response = get(http, server, endpoint, **params)
    assert response.status_code == 200, response.text
    return response, zipfile.ZipFile(io.BytesIO(response.content))


def md5_rows(archive: zipfile.ZipFile) -> dict[str, str]:
    lines = archive.read("md5hashes.csv").decode().splitlines()
    assert lines[0] == "Filename,MD5Hash"
    return dict(line.split(",") for line in lines[1:])


def test_get_image_default_layout(http: httpx.Client, server: NbiaServer) -> None:
    response, archive = fetch_zip(http, server, "getImage", SeriesInstanceUID=PGBM_SERIES)
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == f'attachment; filename="{PGBM_SERIES}.zip"'
    assert response.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.headers
    names = archive.namelist()
    assert names == ["LICENSE"] + [f"{index:08d}.dcm" for index in range(1, 25)]
    assert "Creative Commons Attribution 3.0 Unported License" in archive.read("LICENSE").decode()
    assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}


def test_get_image_new_file_names_with_md5(
    http: httpx.Client, server: NbiaServer, real_dicom_dir: Path
) -> None:
    _, archive = fetch_zip(
        http,
        server,
        "getImage",
        SeriesInstanceUID=PGBM_SERIES,
        NewFileNames="Yes",
        IncludeMD5="yes",
    )
    names = archive.namelist()
    assert names[0] == "LICENSE" and names[-1] == "md5hashes.csv"
    assert names[1:-1] == [f"1-{index:02d}.dcm" for index in range(1, 25)]
    source = real_dicom_dir / "tcia-brain-tumor-progression-pgbm-001"
    # Named in InstanceNumber order: 1-07.dcm is instance 7, byte for byte.
    assert archive.read("1-07.dcm") == (source / "1-07.dcm").read_bytes()
    assert md5_rows(archive) == {
        f"1-{i:02d}.dcm": md5(source / f"1-{i:02d}.dcm") for i in range(1, 25)
    }


def test_get_image_with_md5_hash_has_no_licence(http: httpx.Client, server: NbiaServer) -> None:
    _, archive = fetch_zip(http, server, "getImageWithMD5Hash", SeriesInstanceUID=HEALTHY_SERIES)
    names = archive.namelist()
    assert names == [f"{i:08d}.dcm" for i in range(1, HEALTHY_FILES + 1)] + ["md5hashes.csv"]
    assert set(md5_rows(archive)) == set(names[:-1])
    assert (
        get(
            http,
            server,
            "getImageWithMD5Hash",
            SeriesInstanceUID=HEALTHY_SERIES,
            NewFileNames="Yes",
        ).status_code
        == 400
    )


def test_get_image_of_an_unknown_series_is_400_access_denied(
    http: httpx.Client, server: NbiaServer
) -> None:
    response = get(http, server, "getImage", SeriesInstanceUID="1.2.3.999")
    assert response.status_code == 400
    assert response.text == (
        "The user has not been granted the access to image with given SeriesInstanceUID,1.2.3.999. "
        "Please contact System Admin to resolve this issue."
    )


def test_new_file_names_follow_acquisition_changes() -> None:
    def instance(number: int | None, acquisition: int | None) -> Instance:
        return Instance(Path(f"{number}"), f"1.{number}", number, acquisition, 1, "0" * 32, None)  # type: ignore[arg-type]

    items = [instance(n, 1 if n <= 9 else 2) for n in range(12, 0, -1)]
    names = [name for _, name in new_file_names(items)]
    assert names[:2] == ["1-01.dcm", "1-02.dcm"]
    assert names[8:] == ["1-09.dcm", "2-01.dcm", "2-02.dcm", "2-03.dcm"]


# -- faults on the wire -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "content_type", "body_start"),
    [
        (FaultKind.HTTP_500, 500, "text/plain", b"Error: 500 Internal Server Error"),
        (FaultKind.HTTP_502, 502, "text/html", b"<html>\r\n<head><title>502 Bad Gateway"),
        (FaultKind.HTTP_503, 503, "text/html", b"<html>\r\n<head><title>503 Service"),
        (FaultKind.HTTP_504, 504, "text/html", b"<html>\r\n<head><title>504 Gateway Time-out"),
        (FaultKind.HTML_200, 200, "text/html;charset=UTF-8", b"<!DOCTYPE html>"),
        (FaultKind.EMPTY_200, 200, "application/json", b""),
    ],
)
def test_http_faults_hit_the_next_request_only(
    http: httpx.Client,
    server: NbiaServer,
    kind: FaultKind,
    status: int,
    content_type: str,
    body_start: bytes,
) -> None:
    server.faults.add(kind, endpoint="getCollectionValues")
    response = get(http, server, "getCollectionValues")
    assert (response.status_code, response.headers["content-type"]) == (status, content_type)
    assert response.content.startswith(body_start)
    assert response.headers["server"] == "nginx"
    assert len(rows(get(http, server, "getCollectionValues"))) == 3


def test_429_carries_retry_after(http: httpx.Client, server: NbiaServer) -> None:
    server.faults.add(FaultKind.HTTP_429, retry_after_seconds=7, count=2)
    assert get(http, server, "getSeries").headers["retry-after"] == "7"
    assert get(http, server, "getCollectionValues").status_code == 429
    assert get(http, server, "getCollectionValues").status_code == 200


def test_slow_fault_delays_the_answer(http: httpx.Client, server: NbiaServer) -> None:
    server.faults.add(FaultKind.SLOW, delay_seconds=0.3)
    started = time.monotonic()
    assert get(http, server, "getCollectionValues").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_reset_cuts_the_zip_stream(http: httpx.Client, server: NbiaServer) -> None:
    server.faults.add(FaultKind.RESET, endpoint="getImage", reset_after_bytes=10_000)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        get(http, server, "getImage", SeriesInstanceUID=PGBM_SERIES)


def test_short_zip_is_well_formed_but_lacks_files_and_md5s(
    http: httpx.Client, server: NbiaServer
) -> None:
    server.faults.add(FaultKind.SHORT_ZIP, series_uid=PGBM_SERIES, drop_files=2)
    _, archive = fetch_zip(
        http,
        server,
        "getImage",
        SeriesInstanceUID=PGBM_SERIES,
        NewFileNames="Yes",
        IncludeMD5="yes",
    )
    assert archive.testzip() is None
    assert archive.namelist() == ["LICENSE"] + [f"1-{i:02d}.dcm" for i in range(1, 23)]


def test_wrong_md5_changes_exactly_one_row(http: httpx.Client, server: NbiaServer) -> None:
    params = {"SeriesInstanceUID": HEALTHY_SERIES, "NewFileNames": "Yes", "IncludeMD5": "yes"}
    _, good = fetch_zip(http, server, "getImage", **params)
    server.faults.add(FaultKind.WRONG_MD5)
    _, bad = fetch_zip(http, server, "getImage", **params)
    good_rows, bad_rows = md5_rows(good), md5_rows(bad)
    assert set(good_rows) == set(bad_rows)
    assert sum(good_rows[name] != bad_rows[name] for name in good_rows) == 1


def test_download_only_faults_do_not_hit_listings(http: httpx.Client, server: NbiaServer) -> None:
    server.faults.add(FaultKind.SHORT_ZIP)
    assert get(http, server, "getCollectionValues").status_code == 200
    assert len(server.faults.pending()) == 1


def test_control_endpoint_adds_faults_and_reloads(http: httpx.Client, server: NbiaServer) -> None:
    control = f"http://127.0.0.1:{server.port}/braincls-control/"
    added = http.post(control + "faults", json={"kind": "http_503", "endpoint": "getSeries"})
    assert added.json()[0]["kind"] == "http_503"
    assert get(http, server, "getSeries").status_code == 503
    assert http.post(control + "faults", json={"kind": "nonsense"}).status_code == 400
    assert http.post(control + "reload").json() == [{"series": 6}]
    http.post(control + "faults", json={"kind": "http_500", "count": None})
    assert http.delete(control + "faults").json() == []
    assert get(http, server, "getCollectionValues").status_code == 200


def test_request_log_records_endpoint_status_and_fault(
    http: httpx.Client, server: NbiaServer
) -> None:
    server.clear_requests()
    server.faults.add(FaultKind.HTTP_502)
    get(http, server, "getCollectionValues")
    get(http, server, "getCollectionValues")
    log = server.requests("getCollectionValues")
    assert [(r.status, r.fault) for r in log] == [(502, "http_502"), (200, None)]


def test_main_prints_the_url_and_serves(tmp_path: Path) -> None:
    write_synthetic_collection(
        tmp_path, "CLI-MR", n_patients=1, series_per_patient=1, instances_per_series=1
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen(
        [sys.executable, "-m", "devkit.nbia.server", "--root", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("NBIA v4 API at http://127.0.0.1:")
        url = line.split()[4]
        assert "(1 collections, 1 series)" in line
        assert httpx.get(url + "getCollectionValues").json() == [{"Collection": "CLI-MR"}]
    finally:
        process.terminate()
        process.wait(timeout=10)


# ---------------------------------------------------------------------------------------------
# Nothing open by default


def test_control_endpoints_are_off_unless_asked_for(tmp_path: Path) -> None:
    write_synthetic_collection(
        tmp_path, "Ctl-MR", n_patients=1, series_per_patient=1, instances_per_series=1
    )
    with serve(tmp_path) as plain, httpx.Client(timeout=10) as http:
        control = f"http://127.0.0.1:{plain.port}/braincls-control/"
        zip_slip = {"kind": "zip_slip", "count": None}
        assert http.post(control + "faults", json=zip_slip).status_code == 404
        assert http.post(control + "reload").status_code == 404
        assert http.get(control + "faults").status_code == 404
        assert plain.faults.pending() == []
        # The API itself answers as before.
        assert http.get(plain.url + "getCollectionValues").status_code == 200


def test_a_non_loopback_host_needs_allow_remote(tmp_path: Path) -> None:
    from devkit.nbia.server import NbiaServer

    with pytest.raises(ValueError) as error:
        NbiaServer(tmp_path, host="0.0.0.0")
    assert str(error.value) == (
        "refusing to serve on 0.0.0.0: the NBIA stand-in has no authentication; bind a "
        "loopback address (127.0.0.1, the default) or pass allow_remote=True "
        "(--allow-remote) on a network you trust"
    )
    with pytest.raises(ValueError, match="refusing to serve on ::"):
        NbiaServer(tmp_path, host="::")
    NbiaServer(tmp_path, host="0.0.0.0", allow_remote=True).stop()
    NbiaServer(tmp_path, host="localhost").stop()


def test_control_request_bodies_are_bounded_and_validated(tmp_path: Path) -> None:
    import socket as socket_module

    with serve(tmp_path, control=True) as server, httpx.Client(timeout=10) as http:
        control = f"http://127.0.0.1:{server.port}/braincls-control/faults"
        huge = {"kind": "http_500", "entry_name": "x" * 100_000}
        assert http.post(control, json=huge).status_code == 413
        for bad in (
            {"kind": "http_500", "count": 0},
            {"kind": "http_500", "count": "many"},
            {"kind": "slow", "delay_seconds": 1e9},
            {"kind": "http_500", "series_uid": "../../etc"},
            {"kind": "zip_slip", "entry_name": 42},
            {"kind": "http_500", "unknown": 1},
            ["not", "an", "object"],
        ):
            answer = http.post(control, json=bad)
            assert answer.status_code == 400, bad
            assert answer.text.startswith("bad fault: ")
        assert server.faults.pending() == []
        assert http.post(control, json={"kind": "http_500"}).status_code == 200
        # A Content-Length that is no number, or larger than allowed, is refused unread.
        with socket_module.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.sendall(
                b"POST /braincls-control/faults HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n"
            )
            assert raw.recv(64).startswith(b"HTTP/1.1 400")
        with socket_module.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.sendall(
                b"POST /nbia-api/services/v4/getSeries HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 999999999\r\n\r\n"
            )
            assert raw.recv(64).startswith(b"HTTP/1.1 413")
