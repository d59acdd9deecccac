"""Parsing NBIA rows and dates, backoff delays and Retry-After."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from braincls.config import TciaConfig
from braincls.ingest import (
    Backoff,
    NbiaClient,
    SeriesRecord,
    TciaResponseError,
    format_nbia_date,
    parse_nbia_date,
    parse_retry_after,
)
from braincls.ingest.records import series_records

ROW = {
    "SeriesInstanceUID": "1.2.3.4",
    "StudyInstanceUID": "1.2.3",
    "PatientID": "PGBM-001",
    "Collection": "Brain-Tumor-Progression",
    "Modality": "MR",
    "ImageCount": 24,
    "FileSize": 4079410,
    "DateReleased": "06-15-2014",
    "SeriesDate": "04-02-1992",
    "StudyDate": "04-02-1992",
    "SeriesNumber": 11,
    "LicenseURI": "https://creativecommons.org/licenses/by/3.0/",
    "PatientName": "should never be kept",
    "Authorized": 1,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("06-15-2014", dt.date(2014, 6, 15)),
        ("2014-06-15 00:00:00.0", dt.date(2014, 6, 15)),
        ("2014-06-15", dt.date(2014, 6, 15)),
        ("20140615", dt.date(2014, 6, 15)),
        ("", None),
        (None, None),
        ("15/06/2014", None),
        ("13-45-2014", None),
    ],
)
def test_parse_nbia_date_accepts_v4_v1_and_dicom_forms(text: str | None, expected: object) -> None:
    assert parse_nbia_date(text) == expected


def test_format_nbia_date_is_month_day_year() -> None:
    assert format_nbia_date(dt.date(2024, 1, 31)) == "01-31-2024"


def test_series_record_from_a_full_row() -> None:
    record = SeriesRecord.from_api(ROW)
    assert record.series_instance_uid == "1.2.3.4"
    assert record.image_count == 24
    assert record.file_size_bytes == 4079410
    assert record.date_released == dt.date(2014, 6, 15)
    assert record.series_date == dt.date(1992, 4, 2)
    assert record.series_number == 11
    assert record.body_part_examined is None
    assert "patient_name" not in record.to_dict()
    assert "PGBM-001" in record.to_dict().values()


def test_series_record_tolerates_missing_fields_and_numbers_as_text() -> None:
    row = {key: ROW[key] for key in ("SeriesInstanceUID", "StudyInstanceUID", "PatientID")}
    row.update({"Collection": "C", "ImageCount": "7", "FileSize": "1024.0", "SeriesNumber": ""})
    record = SeriesRecord.from_api(row)
    assert (record.image_count, record.file_size_bytes, record.series_number) == (7, 1024, None)
    assert record.date_released is None
    assert record.modality is None


def test_series_record_without_a_uid_names_the_endpoint() -> None:
    row = dict(ROW)
    del row["SeriesInstanceUID"]
    with pytest.raises(
        TciaResponseError, match=r"^getUpdatedSeries: a row lacks SeriesInstanceUID"
    ):
        SeriesRecord.from_api(row, "getUpdatedSeries")


def test_series_record_round_trips_through_dict() -> None:
    record = SeriesRecord.from_api(ROW)
    assert SeriesRecord.from_dict(record.to_dict()) == record


def test_series_records_are_sorted_and_deduplicated() -> None:
    rows = [
        {**ROW, "SeriesInstanceUID": "1.2.3.9", "PatientID": "B"},
        {**ROW, "SeriesInstanceUID": "1.2.3.5", "PatientID": "A"},
        {**ROW, "SeriesInstanceUID": "1.2.3.9", "PatientID": "B"},
    ]
    records = series_records(rows, "getSeries")
    assert [r.series_instance_uid for r in records] == ["1.2.3.5", "1.2.3.9"]


def test_backoff_grows_exponentially_within_jitter_and_cap() -> None:
    backoff = Backoff(initial_seconds=1.0, multiplier=2.0, max_seconds=5.0, jitter_fraction=0.5)
    rng = random.Random(0)
    delays = [backoff.delay_seconds(attempt, rng) for attempt in range(1, 6)]
    bases = [1.0, 2.0, 4.0, 5.0, 5.0]
    for delay, base in zip(delays, bases, strict=True):
        assert base * 0.5 <= delay <= base


def test_backoff_honours_retry_after_up_to_its_cap() -> None:
    backoff = Backoff(initial_seconds=0.1, max_retry_after_seconds=30.0)
    rng = random.Random(0)
    assert backoff.delay_seconds(1, rng, retry_after_seconds=7.0) == 7.0
    assert backoff.delay_seconds(1, rng, retry_after_seconds=3600.0) == 30.0


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None


def test_client_from_config_takes_every_setting() -> None:
    config = TciaConfig(
        timeout_seconds=7.0,
        max_attempts=3,
        max_concurrent_downloads=1,
        backoff_initial_seconds=0.5,
        backoff_max_seconds=4.0,
        max_retry_after_seconds=9.0,
    )
    with NbiaClient.from_config(config, "http://127.0.0.1:9/nbia-api/services/v4") as client:
        assert client.base_url == "http://127.0.0.1:9/nbia-api/services/v4/"
        assert client.timeout.read == 7.0
        assert client.max_attempts == 3
        assert client.max_concurrent_downloads == 1
        assert client.backoff == Backoff(
            initial_seconds=0.5, max_seconds=4.0, max_retry_after_seconds=9.0
        )


def test_get_series_refuses_unknown_filters_before_any_request() -> None:
    with (
        NbiaClient("http://127.0.0.1:9/nbia-api/services/v4/") as client,
        pytest.raises(ValueError, match=r"unknown getSeries filter\(s\) \['modality'\]"),
    ):
        client.get_series(modality="MR")
