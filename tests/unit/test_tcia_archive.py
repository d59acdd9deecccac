"""Verification of series archives and of local state, on hand-made ZIPs."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from braincls.ingest import (
    ChecksumMismatchError,
    CorruptArchiveError,
    IncompleteSeriesError,
    SeriesRecord,
    SizeMismatchError,
    UnsafeArchiveError,
    UnsafeRecordError,
    VerificationRecord,
    check_present,
    extract_verified,
    record_path,
    series_dir,
)
from braincls.ingest.store import (
    incoming_dir,
    remove_stale_incoming,
    safe_component,
    utc_now_iso,
    write_record,
)

FILES = {"1-1.dcm": b"A" * 100, "1-2.dcm": b"B" * 50}
LABEL = "series 1.2.3 (C/P)"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def make_zip(
    path: Path,
    files: dict[str, bytes] = FILES,
    *,
    md5_rows: dict[str, str] | None = None,
    with_md5: bool = True,
    extra: list[tuple[zipfile.ZipInfo | str, bytes]] = (),  # type: ignore[assignment]
) -> Path:
    rows = md5_rows if md5_rows is not None else {name: md5(data) for name, data in files.items()}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("LICENSE", "licence text")
        for name, data in files.items():
            archive.writestr(name, data)
        for info, data in extra:
            archive.writestr(info, data)
        if with_md5:
            lines = ["Filename,MD5Hash", *(f"{n},{h}" for n, h in rows.items())]
            archive.writestr("md5hashes.csv", "\n".join(lines) + "\n")
    return path


def extract(zip_path: Path, dest: Path, count: int | None = 2, size: int | None = 150) -> object:
    return extract_verified(zip_path, dest, label=LABEL, expected_count=count, expected_bytes=size)


def test_a_complete_archive_is_extracted_with_md5s_and_licence(tmp_path: Path) -> None:
    result = extract(make_zip(tmp_path / "a.zip"), tmp_path / "out")
    assert [(f.name, f.md5, f.size_bytes) for f in result.files] == [  # type: ignore[attr-defined]
        ("1-1.dcm", md5(FILES["1-1.dcm"]), 100),
        ("1-2.dcm", md5(FILES["1-2.dcm"]), 50),
    ]
    assert result.license_present  # type: ignore[attr-defined]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["1-1.dcm", "1-2.dcm", "LICENSE"]


def test_md5_rows_are_compared_case_insensitively(tmp_path: Path) -> None:
    rows = {name: md5(data).upper() for name, data in FILES.items()}
    result = extract(make_zip(tmp_path / "a.zip", md5_rows=rows), tmp_path / "out")
    assert len(result.files) == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("../../escape.dcm", "climbs out of the folder with '..'"),
        ("/tmp/abs.dcm", "has an absolute path"),
        ("C:/evil.dcm", "has an absolute path"),
        ("sub/1-3.dcm", "is a nested path (NBIA archives are flat)"),
        (".hidden", "has an empty or hidden name"),
    ],
)
def test_unsafe_entry_names_are_refused_before_anything_is_written(
    tmp_path: Path, entry: str, problem: str
) -> None:
    info = zipfile.ZipInfo(entry)
    with pytest.raises(UnsafeArchiveError) as caught:
        extract(make_zip(tmp_path / "a.zip", extra=[(info, b"x")]), tmp_path / "out")
    assert str(caught.value) == f"{LABEL}: archive entry {entry!r} {problem}; archive refused"
    assert not caught.value.retryable
    assert not (tmp_path / "out").exists()
    assert not (tmp_path.parent / "escape.dcm").exists()


def test_symbolic_link_entries_are_refused(tmp_path: Path) -> None:
    info = zipfile.ZipInfo("link.dcm")
    info.external_attr = 0o120777 << 16
    with pytest.raises(UnsafeArchiveError, match=r"'link\.dcm' is a symbolic link"):
        extract(make_zip(tmp_path / "a.zip", extra=[(info, b"/etc/passwd")]), tmp_path / "out")


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_duplicate_entries_are_refused(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", extra=[("1-1.dcm", b"other")])
    with pytest.raises(UnsafeArchiveError, match=r"'1-1\.dcm' appears twice"):
        extract(path, tmp_path / "out")


def test_a_short_archive_without_md5hashes_is_incomplete(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {"1-1.dcm": FILES["1-1.dcm"]}, with_md5=False)
    with pytest.raises(IncompleteSeriesError) as caught:
        extract(path, tmp_path / "out")
    assert str(caught.value) == f"{LABEL}: 1 of 2 files received, md5hashes.csv missing"
    assert caught.value.retryable


def test_md5_rows_for_missing_files_are_incomplete(tmp_path: Path) -> None:
    rows = {name: md5(data) for name, data in FILES.items()}
    path = make_zip(tmp_path / "a.zip", {"1-1.dcm": FILES["1-1.dcm"]}, md5_rows=rows)
    with pytest.raises(IncompleteSeriesError) as caught:
        extract(path, tmp_path / "out")
    assert str(caught.value) == (
        f"{LABEL}: 1 of 2 files received; md5hashes.csv lists 1 the archive lacks: 1-2.dcm"
    )


def test_count_must_equal_image_count(tmp_path: Path) -> None:
    with pytest.raises(IncompleteSeriesError) as caught:
        extract(make_zip(tmp_path / "a.zip"), tmp_path / "out", count=3)
    assert str(caught.value) == f"{LABEL}: 2 files received, the listing's ImageCount is 3"


def test_bytes_must_equal_file_size(tmp_path: Path) -> None:
    with pytest.raises(SizeMismatchError) as caught:
        extract(make_zip(tmp_path / "a.zip"), tmp_path / "out", size=151)
    assert str(caught.value) == (
        f"{LABEL}: the archive declares 150 DICOM bytes, the listing's FileSize is 151"
    )


def test_a_wrong_md5_row_is_a_checksum_mismatch(tmp_path: Path) -> None:
    rows = {name: md5(data) for name, data in FILES.items()}
    rows["1-2.dcm"] = "0" * 32
    with pytest.raises(ChecksumMismatchError) as caught:
        extract(make_zip(tmp_path / "a.zip", md5_rows=rows), tmp_path / "out")
    assert str(caught.value) == (
        f"{LABEL}: MD5 of 1-2.dcm is {md5(FILES['1-2.dcm'])}, md5hashes.csv says {'0' * 32}"
    )


def test_a_truncated_archive_is_corrupt(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptArchiveError, match=r"archive unreadable \(File is not a zip file\)"):
        extract(path, tmp_path / "out")


def test_an_html_page_is_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(b"<html><body>503</body></html>")
    with pytest.raises(CorruptArchiveError, match=r"; 29 bytes received$"):
        extract(path, tmp_path / "out")


SERIES = SeriesRecord(
    series_instance_uid="1.2.3.4",
    study_instance_uid="1.2.3",
    patient_id="PGBM-001",
    collection="Brain-Tumor-Progression",
    image_count=2,
    file_size_bytes=150,
)


def place(raw_root: Path, series: SeriesRecord = SERIES) -> None:
    folder = series_dir(raw_root, series)
    folder.mkdir(parents=True)
    result = extract(make_zip(raw_root / "a.zip"), folder)
    (raw_root / "a.zip").unlink()
    write_record(
        record_path(raw_root, series),
        VerificationRecord(
            series=series,
            files=result.files,  # type: ignore[attr-defined]
            license_present=True,
            source_url="http://x/",
            endpoint="getImage",
            verified_at=utc_now_iso(),
        ),
    )


def test_layout_is_collection_patient_study_series(tmp_path: Path) -> None:
    assert (
        series_dir(tmp_path, SERIES) == tmp_path / "Brain-Tumor-Progression/PGBM-001/1.2.3/1.2.3.4"
    )
    assert record_path(tmp_path, SERIES) == (
        tmp_path / "Brain-Tumor-Progression/PGBM-001/1.2.3/1.2.3.4.series.json"
    )


def test_a_folder_without_record_is_not_present(tmp_path: Path) -> None:
    series_dir(tmp_path, SERIES).mkdir(parents=True)
    assert check_present(tmp_path, SERIES).reason == "no verification record"
    assert not check_present(tmp_path, SERIES).present


def test_a_verified_series_is_present_until_its_listing_or_files_change(tmp_path: Path) -> None:
    place(tmp_path)
    assert check_present(tmp_path, SERIES).present
    grown = SeriesRecord(**{**SERIES.__dict__, "image_count": 3, "file_size_bytes": 200})
    presence = check_present(tmp_path, grown)
    assert (presence.present, presence.changed) == (False, True)
    assert presence.reason == "listing changed: image_count 2 -> 3, file_size_bytes 150 -> 200"
    (series_dir(tmp_path, SERIES) / "1-2.dcm").write_bytes(b"short")
    assert check_present(tmp_path, SERIES).reason == "file 1-2.dcm is 5 bytes, 50 verified"
    (series_dir(tmp_path, SERIES) / "1-2.dcm").unlink()
    assert check_present(tmp_path, SERIES).reason == "file 1-2.dcm missing"


def test_a_corrupt_record_counts_as_absent(tmp_path: Path) -> None:
    place(tmp_path)
    record_path(tmp_path, SERIES).write_text("{not json")
    assert check_present(tmp_path, SERIES).reason == "no verification record"


@pytest.mark.parametrize("value", ["", ".", "..", "../x", "a/b", "a\\b", ".incoming", "a\x00b"])
def test_unusable_folder_names_are_refused(value: str) -> None:
    with pytest.raises(UnsafeRecordError, match="cannot be used as a folder name"):
        safe_component(value, "PatientID")


def test_a_non_uid_series_uid_is_refused(tmp_path: Path) -> None:
    series = SeriesRecord(**{**SERIES.__dict__, "series_instance_uid": "../../etc"})
    with pytest.raises(
        UnsafeRecordError, match=r"SeriesInstanceUID '../../etc' is not a DICOM UID"
    ):
        series_dir(tmp_path, series)


def test_stale_staging_folders_are_removed_and_fresh_ones_kept(tmp_path: Path) -> None:
    stale = incoming_dir(tmp_path) / "1.2.3.abc"
    fresh = incoming_dir(tmp_path) / "1.2.4.def"
    for folder in (stale, fresh):
        folder.mkdir(parents=True)
        (folder / "series.zip").write_bytes(b"partial")
    os.utime(stale, (1_000_000, 1_000_000))
    assert remove_stale_incoming(tmp_path, max_age_seconds=3600) == 1
    assert [p.name for p in incoming_dir(tmp_path).iterdir()] == ["1.2.4.def"]
    assert remove_stale_incoming(tmp_path / "nowhere") == 0
