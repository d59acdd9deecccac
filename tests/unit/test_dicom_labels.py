"""The labels table: most specific identifier wins, contradictions are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from braincls.convert.labels import LabelsError, LabelTable, load_labels
from braincls.convert.reading import pseudonymize


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_most_specific_identifier_wins(tmp_path: Path) -> None:
    table = load_labels(
        _write(
            tmp_path,
            "Collection,PatientID,SeriesInstanceUID,SOPInstanceUID,label\n"
            "Brain-Tumor-Progression,,,,tumor\n"
            ",P2,,,no_tumor\n"
            ",P2,1.2.3,,tumor\n"  # a patient column beside a series labels only the series
            ",,,1.2.3.9,no_tumor\n"
            "\n",
        )
    )
    assert table.classes == ("no_tumor", "tumor")
    assert len(table) == 4
    assert dict(table.by_series_instance_uid) == {"1.2.3": "tumor"}
    assert dict(table.by_patient_id) == {"P2": "no_tumor"}

    def lookup(sop: str, series: str, patient: str, collection: str) -> str | None:
        return table.lookup(
            sop_instance_uid=sop,
            series_instance_uid=series,
            patient_id=patient,
            collection=collection,
        )

    assert lookup("1.2.3.9", "1.2.3", "P2", "Brain-Tumor-Progression") == "no_tumor"
    assert lookup("1.2.3.8", "1.2.3", "P2", "Brain-Tumor-Progression") == "tumor"
    assert lookup("1.2.4.1", "1.2.4", "P2", "Brain-Tumor-Progression") == "no_tumor"
    assert lookup("1.2.5.1", "1.2.5", "P3", "Brain-Tumor-Progression") == "tumor"
    assert lookup("1.2.5.1", "1.2.5", "P3", "Other") is None


def test_snake_case_headers_and_the_catch_all_collection(tmp_path: Path) -> None:
    table = load_labels(_write(tmp_path, "patient_id,Label\nP1,tumor\n,\n"))
    assert (
        table.lookup(sop_instance_uid="1", series_instance_uid="2", patient_id="P1", collection="c")
        == "tumor"
    )
    default = load_labels(_write(tmp_path, "collection,label\n*,no_tumor\n"))
    assert (
        default.lookup(
            sop_instance_uid="1", series_instance_uid="2", patient_id=None, collection="any"
        )
        == "no_tumor"
    )


def test_pseudonymised_patient_ids_match_through_the_same_salt(tmp_path: Path) -> None:
    table = load_labels(_write(tmp_path, "PatientID,label\nP1,tumor\n"))
    mapped = table.with_patient_ids(lambda patient: pseudonymize(patient, "salt"))
    pseudonym = pseudonymize("P1", "salt")
    assert pseudonym.startswith("anon-") and len(pseudonym) == 21
    assert dict(mapped.by_patient_id) == {pseudonym: "tumor"}


def test_content_hash_ignores_row_order(tmp_path: Path) -> None:
    first = load_labels(_write(tmp_path, "PatientID,label\nA,x\nB,y\n"))
    second = load_labels(_write(tmp_path, "PatientID,label\nB,y\nA,x\n"))
    third = load_labels(_write(tmp_path, "PatientID,label\nB,x\nA,x\n"))
    assert first.content_hash() == second.content_hash() != third.content_hash()
    assert LabelTable().classes == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("PatientID,class\nP1,x\n", "no 'label' column"),
        ("Name,label\nP1,x\n", "no identifier column"),
        ("PatientID,label\nP1,\n", ":2: row has no label"),
        ("PatientID,SeriesInstanceUID,label\n,,x\n", ":2: row has a label but no identifier"),
        ("PatientID,label\nP1,x\nP1,y\n", ":3: patient_id 'P1' is labelled both 'x' and 'y'"),
    ],
)
def test_bad_tables_are_refused_with_the_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(LabelsError, match=message):
        load_labels(_write(tmp_path, text))


def test_missing_table(tmp_path: Path) -> None:
    with pytest.raises(LabelsError, match="labels table not found"):
        load_labels(tmp_path / "absent.csv")
