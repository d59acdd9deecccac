"""The data-validation gate: a clean manifest passes; each defect fails exactly its check."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from braincls.common.tables import (
    IMAGE_COLUMNS,
    PREPROCESSED_COLUMNS,
    QUARANTINE_COLUMNS,
    SPLIT_COLUMN,
    SPLITS,
    empty_frame,
)
from braincls.config import ValidateConfig
from braincls.validate.suite import (
    CHECKS,
    SUITE_VERSION,
    ValidationFailed,
    ValidationReport,
    run_validation,
    suite_definition,
    suite_hash,
)

LABELS = ("no", "yes")
PER_CLASS = 10  # images per split and class: 3 splits x 2 classes x 10 = 60 rows
CONFIG = ValidateConfig(labels=LABELS)
DTYPES = {**IMAGE_COLUMNS, SPLIT_COLUMN: "string", **PREPROCESSED_COLUMNS}
DICOM_DTYPES = {**DTYPES, "sop_instance_uid": "string", "modality": "string"}
#: Checks that need DICOM columns or patient ids, not applicable to image-folder data.
DICOM_ONLY = {"uniqueness.sop_instance_uid", "leakage.patient_id", "images.modality"}


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def folder_manifest() -> pd.DataFrame:
    """60 distinct images, one near-duplicate group each, 10 per split and class."""
    rows = []
    for split in SPLITS:
        for label in LABELS:
            for number in range(PER_CLASS):
                name = f"{label}/{split}-{number:02d}.jpg"
                rows.append(
                    {
                        "sample_id": _digest(f"id:{name}"),
                        "source": "toy",
                        "source_path": f"/data/toy/{name}",
                        "relative_path": name,
                        "label": label,
                        "label_index": LABELS.index(label),
                        "width": 256 + number,
                        "height": 240,
                        "channels": 1,
                        "sha256": _digest(f"content:{name}"),
                        "fingerprint": _digest(name)[:16],
                        "group_id": f"group-{split}-{label}-{number:02d}",
                        "patient_id": None,
                        "label_source": "folder",
                        SPLIT_COLUMN: split,
                        "image_path": f"images/p128/{_digest(name)[:16]}.png",
                        "mean_intensity": 40.0 + 3 * number,
                        "std_intensity": 30.0 + number,
                        "image_size_px": 128,
                    }
                )
    return pd.DataFrame(rows).astype(DTYPES)


def dicom_manifest() -> pd.DataFrame:
    """The same 60 images as DICOM: 2 patients per split and class, 2 series (groups) each."""
    frame = folder_manifest()
    number = frame.groupby([SPLIT_COLUMN, "label"]).cumcount()
    patient = (frame[SPLIT_COLUMN] + "-" + frame["label"] + "-" + (number // 5).astype(str)).map(
        lambda key: "PAT-" + _digest(key)[:8]
    )
    frame["patient_id"] = patient.astype("string")
    # Series of 3 and 2 images: a patient has two groups, so a patient can leak on its own.
    frame["group_id"] = (patient + "-series" + ((number % 5) // 3).astype(str)).astype("string")
    frame["sop_instance_uid"] = [f"1.2.826.0.1.3680043.8.498.{i + 1}" for i in range(len(frame))]
    frame["sample_id"] = frame["sop_instance_uid"]
    frame["modality"] = "MR"
    return frame.astype(DICOM_DTYPES)


def no_quarantine() -> pd.DataFrame:
    return empty_frame(QUARANTINE_COLUMNS)


def failed_checks(report: ValidationReport) -> dict[str, str]:
    """check -> severity of every failing check."""
    return {row.check: row.severity for row in report.results if row.success is False}


def html_is_offline(page: Path) -> bool:
    text = page.read_text(encoding="utf-8")
    remote = re.compile(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=[\"']https?://", re.I)
    return remote.search(text) is None and "amazonaws" not in text


@pytest.fixture(scope="module")
def clean_report(tmp_path_factory: pytest.TempPathFactory) -> ValidationReport:
    docs_dir = tmp_path_factory.mktemp("reports") / "validation"
    docs_dir.mkdir()
    (docs_dir / "stale.html").write_text("from an earlier run")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    with pytest.MonkeyPatch.context() as patch:  # nothing may reach for the network
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket.socket, "connect_ex", refuse)
        return run_validation(folder_manifest(), no_quarantine(), CONFIG, docs_dir)


def test_clean_folder_manifest_passes(clean_report: ValidationReport) -> None:
    assert clean_report.success is True
    assert clean_report.blocking_failures == ()
    assert clean_report.warnings == ()
    statuses = {row.check: row.status for row in clean_report.results}
    assert set(statuses) == set(CHECKS)
    assert {check for check, status in statuses.items() if status != "passed"} == DICOM_ONLY
    assert {statuses[check] for check in DICOM_ONLY} == {"not_applicable"}
    assert (clean_report.image_count, clean_report.quarantined_count) == (60, 0)
    assert clean_report.labels == LABELS
    clean_report.raise_for_failure()  # no exception


def test_clean_dicom_manifest_runs_every_check() -> None:
    report = run_validation(dicom_manifest(), no_quarantine(), CONFIG, None)
    assert report.success is True
    assert report.docs_index is None
    assert {row.status for row in report.results} == {"passed"}
    assert {row.check for row in report.results} == set(CHECKS)


def test_data_docs_written_offline_and_replace_old_folder(clean_report: ValidationReport) -> None:
    docs_dir = clean_report.docs_index.parent if clean_report.docs_index else None
    assert docs_dir is not None and clean_report.docs_index == docs_dir / "index.html"
    assert not (docs_dir / "stale.html").exists()
    assert clean_report.summary_html == docs_dir / "validation.html"
    assert set(clean_report.data_docs_pages) == {
        "columns",
        "manifest",
        "files",
        "class_counts",
        "class_shares",
        "groups",
        "quarantine",
    }
    for page in clean_report.data_docs_pages.values():
        assert (docs_dir / page).is_file()
    pages = sorted(docs_dir.rglob("*.html"))
    assert [page for page in pages if not html_is_offline(page)] == []
    index = (docs_dir / "index.html").read_text(encoding="utf-8")
    assert 'href="validation.html"' in index
    assert f'href="{clean_report.data_docs_pages["groups"]}"' in index
    saved = json.loads((docs_dir / "validation.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(clean_report.to_dict()))
    summary = (docs_dir / "validation.html").read_text(encoding="utf-8")
    assert "Data validation PASSED" in summary and "leakage.group_id" in summary
    assert not list(docs_dir.parent.glob(".validation.*"))  # no staging folder left behind


def test_report_serialises_and_summarises(clean_report: ValidationReport) -> None:
    data = json.loads(json.dumps(clean_report.to_dict()))
    assert data["success"] is True and data["suite_version"] == SUITE_VERSION
    row = next(r for r in data["results"] if r["check"] == "uniqueness.sample_id")
    assert row == {
        "check": "uniqueness.sample_id",
        "expectation": "expect_column_values_to_be_unique",
        "column": "sample_id",
        "severity": "blocking",
        "status": "passed",
        "success": True,
        "observed_value": "0 of 60 unexpected",
        "unexpected_count": 0,
        "examples": [],
        "dataset": "manifest",
        "note": "",
    }
    table = clean_report.table_rows()
    assert [r["check"] for r in table] == list(CHECKS)
    types = next(r for r in table if r["check"] == "schema.types")
    assert types["observed_value"] == "0 of 19 unexpected"
    modality = next(r for r in table if r["check"] == "images.modality")
    assert modality["observed_value"] == "not applicable: no modality column (not DICOM data)"
    markdown = clean_report.to_markdown()
    assert markdown.startswith("# Data validation PASSED")
    assert "| leakage.group_id | blocking | passed |" in markdown


def _wrong_label(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[[0, 1], "label"] = "maybe"
    return frame


def _missing_class(frame: pd.DataFrame) -> pd.DataFrame:
    drop = (frame[SPLIT_COLUMN] == "val") & (frame["label"] == "yes")
    return frame[~drop].reset_index(drop=True)


def _leaked_group(frame: pd.DataFrame) -> pd.DataFrame:
    test_row = frame.index[frame[SPLIT_COLUMN] == "test"][0]
    frame.loc[test_row, "group_id"] = frame.loc[0, "group_id"]  # row 0 is in train
    return frame


def _leaked_patient(frame: pd.DataFrame) -> pd.DataFrame:
    # Move one whole series (group) of a training patient to test: groups stay on one side.
    moved = frame["group_id"] == frame.loc[3, "group_id"]
    frame.loc[moved, SPLIT_COLUMN] = "test"
    return frame


def _duplicate_hash(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[45, "sha256"] = frame.loc[0, "sha256"]
    return frame


def _blank_images(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[[5, 25, 45], ["mean_intensity", "std_intensity"]] = 0.0
    return frame


def _saturated_images(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[[7], ["mean_intensity", "std_intensity"]] = [255.0, 0.0]
    return frame


def _constant_images(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[[8, 9], ["mean_intensity", "std_intensity"]] = [128.0, 0.5]
    return frame


def _wrong_modality(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[[10, 11], "modality"] = "CT"
    return frame


def _missing_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns="std_intensity")


def _quarantine(count: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source_path": [f"/data/toy/bad{i}.jpg" for i in range(count)],
            "relative_path": [f"bad{i}.jpg" for i in range(count)],
            "reason": ["unreadable: cannot decode /data/toy/x.jpg"] * (count - 1) + ["empty"],
        }
    ).astype(QUARANTINE_COLUMNS)


DEFECTS: dict[str, tuple[Callable[[], pd.DataFrame], Callable[[pd.DataFrame], pd.DataFrame]]] = {
    "wrong_label": (folder_manifest, _wrong_label),
    "missing_class": (folder_manifest, _missing_class),
    "leaked_group": (folder_manifest, _leaked_group),
    "leaked_patient": (dicom_manifest, _leaked_patient),
    "duplicate_hash": (folder_manifest, _duplicate_hash),
    "blank_images": (folder_manifest, _blank_images),
    "saturated_images": (folder_manifest, _saturated_images),
    "constant_images": (folder_manifest, _constant_images),
    "wrong_modality": (dicom_manifest, _wrong_modality),
    "missing_column": (folder_manifest, _missing_column),
}


@pytest.mark.parametrize(
    ("defect", "check", "severity", "unexpected_count", "example"),
    [
        ("wrong_label", "labels.in_set", "blocking", 2, {"label": "maybe"}),
        ("missing_class", "labels.min_count_per_split", "blocking", 1, {"split": "val"}),
        ("leaked_group", "leakage.group_id", "blocking", 1, {"splits": "test,train"}),
        ("leaked_patient", "leakage.patient_id", "blocking", 1, {"splits": "test,train"}),
        ("duplicate_hash", "uniqueness.sha256", "warning", 2, {}),
        ("blank_images", "images.blank", "blocking", 3, {"mean_intensity": 0.0}),
        ("saturated_images", "images.saturated", "blocking", 1, {"mean_intensity": 255.0}),
        ("constant_images", "images.constant", "blocking", 2, {"std_intensity": 0.5}),
        ("wrong_modality", "images.modality", "blocking", 2, {"modality": "CT"}),
        ("missing_column", "schema.required_columns", "blocking", 1, {}),
    ],
)
def test_defect_fails_exactly_its_check(
    defect: str,
    check: str,
    severity: str,
    unexpected_count: int,
    example: dict[str, object],
    tmp_path: Path,
) -> None:
    make, spoil = DEFECTS[defect]
    docs_dir = tmp_path / "reports" / "run-1" / "validation"
    report = run_validation(spoil(make()), no_quarantine(), CONFIG, docs_dir)

    assert failed_checks(report) == {check: severity}
    failing = [row for row in report.results if row.success is False]
    assert sum(row.unexpected_count or 0 for row in failing) == unexpected_count
    examples = [e for row in failing for e in row.examples]
    assert examples and all(e.items() >= example.items() for e in examples[:1])
    assert not any("source_path" in e or "relative_path" in e for e in examples)
    assert (docs_dir / "index.html").is_file() and html_is_offline(docs_dir / "index.html")
    assert check in (docs_dir / "validation.html").read_text(encoding="utf-8")
    if severity == "blocking":
        assert report.success is False and report.blocking_failures == (check,)
        with pytest.raises(ValidationFailed, match=re.escape(check)) as raised:
            report.raise_for_failure()
        assert raised.value.report is report
        assert str(docs_dir / "index.html") in str(raised.value)
    else:
        assert report.success is True and report.warnings == (check,)
        report.raise_for_failure()


def test_missing_column_skips_checks_that_need_it() -> None:
    report = run_validation(_missing_column(folder_manifest()), no_quarantine(), CONFIG, None)
    skipped = {(row.check, row.column) for row in report.results if row.status == "not_evaluated"}
    assert skipped == {("images.constant", "std_intensity")}
    row = next(r for r in report.results if r.check == "schema.required_columns")
    assert (row.observed_value, row.examples) == (
        "missing: std_intensity",
        ({"missing_column": "std_intensity"},),
    )


def test_too_many_quarantined_files_block() -> None:
    # 20 set aside of 80 seen = 0.25 > 0.2.
    report = run_validation(folder_manifest(), _quarantine(20), CONFIG, None)
    assert failed_checks(report) == {"quarantine.fraction": "blocking"}
    row = next(r for r in report.results if r.check == "quarantine.fraction")
    assert (row.observed_value, row.unexpected_count) == (0.25, 20)
    # Reasons are cut at the first colon: details may name files.
    assert row.examples == ({"reason": "unreadable", "count": 19}, {"reason": "empty", "count": 1})
    with pytest.raises(ValidationFailed, match=r"quarantine\.fraction \(0\.25"):
        report.raise_for_failure()


def test_slices_left_out_by_design_do_not_count_as_quarantined() -> None:
    # 5 faults + 40 rows the converter or the labelling rule leaves out on purpose.
    by_design = ["background_slice", "no_brain", "ambiguous_tumour_area", "segmentation"] * 10
    quarantine = pd.concat(
        [
            _quarantine(5),
            pd.DataFrame(
                {
                    "source_path": [f"/data/x/{i}.dcm" for i in range(40)],
                    "relative_path": [f"x/{i}.dcm" for i in range(40)],
                    "reason": by_design,
                }
            ),
        ],
        ignore_index=True,
    ).astype("string")
    report = run_validation(folder_manifest(), quarantine, CONFIG, None)
    row = next(r for r in report.results if r.check == "quarantine.fraction")
    # 5 of 65 seen (60 images + 5 faults), not 45 of 105.
    assert (row.observed_value, row.unexpected_count) == (0.0769, 5)
    assert "quarantine.fraction" not in failed_checks(report)


def test_warning_checks_config_makes_a_check_blocking() -> None:
    config = ValidateConfig(labels=LABELS, warning_checks=())
    report = run_validation(_duplicate_hash(folder_manifest()), no_quarantine(), config, None)
    assert report.blocking_failures == ("uniqueness.sha256",)
    with pytest.raises(ValidationFailed, match=r"uniqueness\.sha256 \(2 of 60 unexpected"):
        report.raise_for_failure()


def test_unknown_warning_check_is_refused() -> None:
    config = ValidateConfig(warning_checks=("labels.balance",))
    with pytest.raises(ValueError, match=r"labels\.balance match no check"):
        run_validation(folder_manifest(), no_quarantine(), config, None)


def test_inferred_labels_skip_the_label_set_check() -> None:
    report = run_validation(
        _wrong_label(folder_manifest()), no_quarantine(), ValidateConfig(), None
    )
    assert report.labels == ("maybe", "no", "yes")
    row = next(r for r in report.results if r.check == "labels.in_set")
    assert row.status == "not_applicable"
    # Taken for a class, 'maybe' shifts label_index, lacks images in every split and holds
    # 2 of 20 training images (share 0.1 < 0.2).
    assert failed_checks(report) == {
        "labels.index_consistent": "blocking",
        "labels.min_count_per_split": "blocking",
        "labels.class_balance": "warning",
    }


def test_suite_definition_and_hash() -> None:
    definition = suite_definition(CONFIG)
    assert json.loads(json.dumps(definition)) == definition
    checks = {item["check"] for item in definition["expectations"]}
    assert checks == set(CHECKS)
    assert suite_hash(CONFIG) == suite_hash(ValidateConfig(labels=LABELS))
    assert suite_hash(CONFIG) != suite_hash(ValidateConfig(labels=LABELS, min_count_per_class=6))


def test_import_does_not_load_great_expectations() -> None:
    code = "import sys, braincls.validate.suite; print('great_expectations' in sys.modules)"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "False"


def test_wrong_column_type_fails_types_and_errors_count_as_failures() -> None:
    frame = folder_manifest()
    frame["mean_intensity"] = frame["mean_intensity"].astype(str).astype("string")
    report = run_validation(frame, no_quarantine(), CONFIG, None)
    assert failed_checks(report) == {
        "schema.types": "blocking",
        "images.blank": "blocking",
        "images.saturated": "blocking",
        "images.constant": "blocking",
    }
    types = next(r for r in report.results if r.check == "schema.types")
    assert types.examples == (
        {"kind": "text", "expected_kind": "float", "column": "mean_intensity"},
    )
    blank = next(r for r in report.results if r.check == "images.blank")
    assert str(blank.observed_value).startswith("error: ")


def _dicom_dataset(tmp_path: Path, modality: str, converted_with: str) -> Any:
    from braincls.common.atomic import write_parquet
    from braincls.data.stage import DatasetRecord

    frame = dicom_manifest()
    frame["modality"] = modality
    manifest = write_parquet(tmp_path / "dataset.parquet", frame)
    quarantine = write_parquet(tmp_path / "quarantine.parquet", no_quarantine())
    return DatasetRecord(
        key="d",
        manifest_path=str(manifest),
        manifest_sha256=_digest(modality),
        quarantine_path=str(quarantine),
        class_names=list(LABELS),
        strategy="grouped",
        image_size_px=128,
        counts={},
        source="CT-COLLECTION",
        data_root=str(tmp_path),
        sources=[
            {"name": "CT-COLLECTION", "kind": "dicom", "config": {"modality": converted_with}}
        ],
    )


def test_the_gate_accepts_the_modality_the_data_was_converted_with(tmp_path: Path) -> None:
    # A retraining with modality=CT: ingest and conversion use CT, and so must the gate.
    from braincls.common.layout import DataLayout
    from braincls.validate.stage import run_validate

    layout = DataLayout(tmp_path)
    passed = run_validate(_dicom_dataset(tmp_path, "CT", "CT"), layout, CONFIG, "r1").record
    assert passed.success, passed.failure
    row = next(r for r in passed.table_rows if r["check"] == "images.modality")
    assert row["status"] == "passed"
    # MR slices in data converted as CT cannot happen by conversion; the gate still says so.
    mixed = run_validate(_dicom_dataset(tmp_path, "MR", "CT"), layout, CONFIG, "r2").record
    assert mixed.blocking_failures == ["images.modality"]
    # Converted with modality '' (every modality): nothing to check against.
    anything = run_validate(_dicom_dataset(tmp_path, "CT", ""), layout, CONFIG, "r3").record
    row = next(r for r in anything.table_rows if r["check"] == "images.modality")
    assert row["observed_value"] == (
        "not applicable: every modality accepted (converted with modality '')"
    )


def test_modality_is_one_setting() -> None:
    from pydantic import ValidationError

    from braincls.config import PipelineConfig

    for section, field in (("tcia", "modality"), ("validate", "modalities")):
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            PipelineConfig.model_validate({section: {field: "CT"}})
    assert PipelineConfig.model_validate({"convert": {"modality": "CT"}}).convert.modality == "CT"
