"""Patient IDs: pseudonymised by default for every source that is not a public de-identified
archive, with a salt from the machine's settings, never from a flow parameter or a record."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from braincls.common.layout import DataLayout
from braincls.config import ConvertConfig, PipelineConfig, PseudonymSaltMissing
from braincls.convert import LabelTable, convert_tree
from braincls.convert.privacy import is_public_archive, resolve_pseudonymisation
from braincls.convert.reading import pseudonymize
from braincls.convert.stage import run_convert
from braincls.ingest.store import RECORD_SUFFIX

SALT = "a-long-random-secret"


def _export(root: Path, patient: str = "MRN-0042") -> Path:
    """One MR slice under ``root``, as a hospital export or a --dicom folder holds it."""
    from test_dicom_convert import make_mr, ramp, save

    save(make_mr(ramp(), patient_id=patient), root / "series" / "a.dcm")
    return root


def _ingested(root: Path) -> Path:
    """The same, with the verification record braincls writes beside a series it ingested
    from an NBIA API (TCIA: public and de-identified)."""
    _export(root, patient="TCGA-02-0001")
    (root / f"series{RECORD_SUFFIX}").write_text("{}")
    return root


def _patients(result_manifest: Path) -> set[str]:
    return set(pd.read_parquet(result_manifest)["patient_id"])


@pytest.fixture
def salt(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("BRAINCLS_PSEUDONYM_SALT", SALT)
    return SALT


@pytest.fixture
def no_salt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BRAINCLS_PSEUDONYM_SALT", raising=False)
    monkeypatch.delenv("BRAINCLS_PSEUDONYM_SALT_BLOCK", raising=False)


def test_a_local_folder_is_pseudonymised_by_default(tmp_path: Path, salt: str) -> None:
    src = _export(tmp_path / "export")
    labels = LabelTable(by_patient_id={"MRN-0042": "tumor"})  # the original IDs still match
    result = convert_tree(src, tmp_path / "out", ConvertConfig(), labels, workers=1)
    assert _patients(result.images_manifest) == {pseudonymize("MRN-0042", salt)}
    assert not is_public_archive(src)


def test_a_public_archive_keeps_its_patient_ids(tmp_path: Path, no_salt: None) -> None:
    src = _ingested(tmp_path / "raw" / "TCGA-GBM")
    labels = LabelTable(by_patient_id={"TCGA-02-0001": "tumor"})
    result = convert_tree(src, tmp_path / "out", ConvertConfig(), labels, workers=1)
    assert _patients(result.images_manifest) == {"TCGA-02-0001"}


def test_a_user_can_say_a_folder_is_de_identified(tmp_path: Path, no_salt: None) -> None:
    src = _export(tmp_path / "export")
    labels = LabelTable(by_patient_id={"MRN-0042": "tumor"})
    config = ConvertConfig(pseudonymize_patient_id=False)
    result = convert_tree(src, tmp_path / "out", config, labels, workers=1)
    assert _patients(result.images_manifest) == {"MRN-0042"}


def test_without_a_salt_a_local_folder_fails_saying_how_to_set_one(
    tmp_path: Path, no_salt: None
) -> None:
    src = _export(tmp_path / "export")
    with pytest.raises(PseudonymSaltMissing) as error:
        run_convert([src], DataLayout(tmp_path / "data"), ConvertConfig())
    message = str(error.value)
    assert message.startswith("Patient IDs of this DICOM must be pseudonymised")
    for advice in (
        "BRAINCLS_PSEUDONYM_SALT",
        "BRAINCLS_PSEUDONYM_SALT_BLOCK",
        "convert.pseudonymize_patient_id to false",
    ):
        assert advice in message
    assert not (tmp_path / "data" / "converted").exists() or not any(
        (tmp_path / "data" / "converted").glob("*/record.json")
    )


def test_the_salt_is_no_parameter_and_reaches_no_record(tmp_path: Path, salt: str) -> None:
    # Not a field: a flow run's parameters (and the failure webhook showing them) cannot
    # carry it.
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        PipelineConfig.model_validate({"convert": {"pseudonym_salt": "x"}})
    assert "salt" not in json.dumps(PipelineConfig().model_dump(mode="json"))
    salted = ConvertConfig().with_pseudonym_salt("from-a-secret-block")
    assert "from-a-secret-block" not in salted.model_dump_json()
    # Its hash is part of the cache key: another salt converts again.
    assert salted.config_hash() != ConvertConfig().config_hash()
    assert (
        ConvertConfig(pseudonymize_patient_id=False).config_hash()
        == ConvertConfig(pseudonymize_patient_id=False).with_pseudonym_salt("other").config_hash()
    )
    src = _export(tmp_path / "export")
    labels = tmp_path / "labels.csv"
    labels.write_text("PatientID,label\nMRN-0042,tumor\n")
    record = run_convert([src], DataLayout(tmp_path / "data"), ConvertConfig(), labels).record
    written = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert written
    for path in written:
        assert SALT.encode() not in path.read_bytes(), path
        assert b"MRN-0042" not in path.read_bytes(), path
    assert record.summary["pseudonymised_sources"] == ["export"]


def test_resolving_decides_per_source(tmp_path: Path, salt: str) -> None:
    public = _ingested(tmp_path / "raw" / "TCGA-GBM")
    local = _export(tmp_path / "export")
    assert resolve_pseudonymisation(ConvertConfig(), public).pseudonymize_patient_id is False
    resolved = resolve_pseudonymisation(ConvertConfig(), local)
    assert resolved.pseudonymize_patient_id is True
    assert resolved.pseudonym_salt.get_secret_value() == salt
    forced = resolve_pseudonymisation(ConvertConfig(pseudonymize_patient_id=True), public)
    assert forced.pseudonymize_patient_id is True  # a private NBIA instance: say so
