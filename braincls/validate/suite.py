"""The data-validation gate: a Great Expectations suite that stops bad data before training.

The suite runs on the images manifest after the split and preprocessing (the columns of
:data:`braincls.common.tables.IMAGE_COLUMNS`, ``split`` and :data:`braincls.common.tables.PREPROCESSED_COLUMNS`,
plus ``sop_instance_uid`` and ``modality`` for DICOM data) and on small frames derived from it
with pandas: images per split and class, class shares per split, splits per near-duplicate group,
splits per patient, one row per source file, and the quarantine share. Every check is one or
more built-in GX Core 1.x expectations, tagged with the check's name in ``meta``; a check either
*blocks* the run before training or only *warns* (``ValidateConfig.warning_checks``).

Great Expectations takes seconds to import, so it is imported inside the functions that need it:
``import braincls.validate.suite`` stays cheap. Nothing here touches the network: the context is
ephemeral (in-memory stores; only the Data Docs site, when wanted, is a folder), and the built
Data Docs are rewritten so that opening them loads nothing from a CDN.
"""

from __future__ import annotations

import fnmatch
import html
import json
import logging
import math
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from braincls.common.atomic import atomic_dir
from braincls.common.hashing import stable_hash
from braincls.common.tables import (
    IMAGE_COLUMNS,
    PHI_COLUMNS,
    PREPROCESSED_COLUMNS,
    SELECTION_REASONS,
    SPLIT_COLUMN,
    SPLITS,
)
from braincls.config import DEFAULT_MODALITY, ValidateConfig

logger = logging.getLogger(__name__)

#: Version of the suite's logic; part of the validation cache key. Bump on any change to checks.
SUITE_VERSION = "1.1.0"

Severity = Literal["blocking", "warning"]
#: ``not_applicable``: the data legitimately lacks what the check needs (no DICOM columns, no
#: configured label set); ``not_evaluated``: a required column is missing (schema check fails).
Status = Literal["passed", "failed", "not_applicable", "not_evaluated"]

#: Columns only DICOM-derived manifests have; checks on them run only when they exist.
OPTIONAL_COLUMNS: dict[str, str] = {"sop_instance_uid": "string", "modality": "string"}
#: Columns the suite requires, with their manifest dtypes.
REQUIRED_COLUMNS: dict[str, str] = {
    **IMAGE_COLUMNS,
    SPLIT_COLUMN: "string",
    **PREPROCESSED_COLUMNS,
}
#: Required columns that may hold nulls (image folders have no PatientID).
NULLABLE_COLUMNS = frozenset({"patient_id"})
#: Columns never shown in examples: absolute paths may carry names from a hospital export.
_HIDDEN_COLUMNS = frozenset({"source_path", "relative_path"}) | PHI_COLUMNS

#: Every check of the suite, with what it verifies. Names are what ``warning_checks`` matches.
CHECKS: dict[str, str] = {
    "schema.required_columns": "every required manifest column is present",
    "schema.types": "every column has its manifest type (text, integer, float)",
    "schema.not_null": "no nulls in columns that must always be filled",
    "schema.split_values": "split is one of train / val / test",
    "labels.in_set": "every label is in the configured label set",
    "labels.index_consistent": "label_index is the label's position in the sorted class list",
    "labels.class_count": "the data hold at least two classes",
    "labels.min_count_per_split": "every class has at least the minimum count in every split",
    "labels.class_balance": "every class present in a split holds at least the minimum share",
    "uniqueness.sample_id": "sample_id is unique",
    "uniqueness.sop_instance_uid": "no two files share a SOPInstanceUID (DICOM data)",
    "uniqueness.sha256": "no two files have the same content hash",
    "leakage.group_id": "no near-duplicate group is in more than one split",
    "leakage.patient_id": "no patient is in more than one split (DICOM data)",
    "images.size_px": "stored image size within bounds",
    "images.source_size_px": "source width and height within bounds",
    "images.blank": "no blank images (mean intensity above the floor)",
    "images.saturated": "no saturated images (mean intensity below the ceiling)",
    "images.constant": "no constant images (intensity spread above the floor)",
    "images.modality": "(0008,0060) Modality is one of the accepted values (DICOM data)",
    "quarantine.fraction": (
        "set-aside files / (manifest images + set-aside files) below the ceiling (slices left "
        "out by design and segmentation objects do not count)"
    ),
}

#: Kind of value each manifest dtype stands for: pandas' ``string``, ``str`` and text ``object``
#: columns are all text, ``int64`` and ``Int64`` both integer.
_KINDS = {"string": "text", "int64": "integer", "float64": "float"}
_MAX_EXAMPLES = 5
_DATA_DOCS_RUN_NAME = f"braincls-suite-{SUITE_VERSION}"

JSONValue = Any


class ValidationFailed(Exception):
    """At least one blocking check failed; the run must stop before training."""

    def __init__(self, report: ValidationReport | None = None, *, message: str = "") -> None:
        self.report = report
        super().__init__(failure_message(report) if report is not None else message)


def failure_message(report: ValidationReport) -> str:
    """What a failed gate says: every blocking check with what it saw, and where the docs are."""
    details = "; ".join(
        f"{row['check']} ({row['observed_value']}"
        + (f", e.g. {_first_example(row['examples'])})" if row["examples"] else ")")
        for row in report.table_rows()
        if row["check"] in report.blocking_failures
    )
    where = f" Data Docs: {report.docs_index}." if report.docs_index else ""
    return (
        f"data validation failed, {len(report.blocking_failures)} blocking check(s): "
        f"{details}.{where} Fix the data, or list the check in "
        "ValidateConfig.warning_checks to let it only warn."
    )


@dataclass(frozen=True)
class CheckResult:
    """One expectation's outcome (a check may have several, e.g. one per column)."""

    check: str
    expectation: str  # GX expectation type, e.g. expect_column_values_to_be_in_set
    column: str | None
    severity: Severity
    status: Status
    success: bool | None  # None when the expectation was not run
    observed_value: JSONValue = None
    unexpected_count: int | None = None
    examples: tuple[dict[str, JSONValue], ...] = ()
    dataset: str = "manifest"  # the frame it ran on
    note: str = ""

    def to_dict(self) -> dict[str, JSONValue]:
        """JSON-ready dictionary."""
        return {
            "check": self.check,
            "expectation": self.expectation,
            "column": self.column,
            "severity": self.severity,
            "status": self.status,
            "success": self.success,
            "observed_value": self.observed_value,
            "unexpected_count": self.unexpected_count,
            "examples": list(self.examples),
            "dataset": self.dataset,
            "note": self.note,
        }


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of the suite on one manifest: what failed, how badly, and where the docs are."""

    success: bool  # no blocking failure
    blocking_failures: tuple[str, ...]
    warnings: tuple[str, ...]
    results: tuple[CheckResult, ...]
    image_count: int
    quarantined_count: int
    labels: tuple[str, ...]
    suite_version: str = SUITE_VERSION
    docs_index: Path | None = None  # GX Data Docs index.html, readable offline
    summary_html: Path | None = None  # self-contained one-page summary beside it
    data_docs_pages: dict[str, str] = field(default_factory=dict)  # dataset -> page, relative

    def to_dict(self) -> dict[str, JSONValue]:
        """JSON-ready dictionary."""
        return {
            "success": self.success,
            "blocking_failures": list(self.blocking_failures),
            "warnings": list(self.warnings),
            "results": [row.to_dict() for row in self.results],
            "image_count": self.image_count,
            "quarantined_count": self.quarantined_count,
            "labels": list(self.labels),
            "suite_version": self.suite_version,
            "docs_index": None if self.docs_index is None else str(self.docs_index),
            "summary_html": None if self.summary_html is None else str(self.summary_html),
            "data_docs_pages": dict(self.data_docs_pages),
        }

    def raise_for_failure(self) -> None:
        """Raise :class:`ValidationFailed` when a blocking check failed."""
        if not self.success:
            raise ValidationFailed(self)

    def table_rows(self) -> list[dict[str, JSONValue]]:
        """One row per check for a Prefect table artifact: failures first, then suite order."""
        rows = [_check_row(check, rows) for check, rows in _by_check(self.results).items()]
        order = {name: position for position, name in enumerate(CHECKS)}

        def rank(row: dict[str, JSONValue]) -> tuple[int, int]:
            failed = row["status"] == "failed"
            tier = (0 if row["severity"] == "blocking" else 1) if failed else 2
            return tier, order.get(str(row["check"]), len(order))

        return sorted(rows, key=rank)

    def to_markdown(self) -> str:
        """A markdown summary for a Prefect markdown artifact or a terminal."""
        verdict = "PASSED" if self.success else "FAILED"
        lines = [
            f"# Data validation {verdict}",
            "",
            f"Suite braincls {self.suite_version} on {self.image_count} images "
            f"({self.quarantined_count} files set aside); classes: {', '.join(self.labels) or '-'}.",
            "",
        ]
        if self.blocking_failures:
            lines.append(f"**Blocking failures:** {', '.join(self.blocking_failures)}")
        if self.warnings:
            lines.append(f"**Warnings:** {', '.join(self.warnings)}")
        if not self.blocking_failures and not self.warnings:
            lines.append("Every check passed.")
        if self.docs_index is not None:
            lines.append(f"\nData Docs: `{self.docs_index}`; summary: `{self.summary_html}`")
        lines += [
            "",
            "| check | severity | status | observed | unexpected | examples |",
            "|---|---|---|---|---|---|",
        ]
        for row in self.table_rows():
            cells = [
                row["check"],
                row["severity"],
                row["status"],
                row["observed_value"],
                row["unexpected_count"],
                row["examples"],
            ]
            lines.append("| " + " | ".join(_md_cell(cell) for cell in cells) + " |")
        return "\n".join(lines) + "\n"


def suite_hash(config: ValidateConfig) -> str:
    """Cache-key part for the suite: its version plus every threshold it reads."""
    return stable_hash({"suite_version": SUITE_VERSION, "config": config.model_dump(mode="json")})


def severity_of(check: str, config: ValidateConfig) -> Severity:
    """``warning`` when ``check`` matches a pattern of ``config.warning_checks``, else ``blocking``."""
    if any(fnmatch.fnmatchcase(check, pattern) for pattern in config.warning_checks):
        return "warning"
    return "blocking"


def run_validation(
    manifest: pd.DataFrame,
    quarantine: pd.DataFrame,
    config: ValidateConfig,
    docs_dir: Path | None = None,
    *,
    modalities: Sequence[str] = (DEFAULT_MODALITY,),
) -> ValidationReport:
    """Run the suite on ``manifest`` (after split and preprocessing) and ``quarantine``.

    ``modalities`` are the (0008,0060) Modality values accepted for DICOM data: the ones its
    sources were converted with (``ConvertConfig.modality``); empty accepts any.

    When ``docs_dir`` is given, GX Data Docs are built there (replacing the folder atomically),
    rewritten to load nothing from the network, together with ``validation.html`` (a
    self-contained summary) and ``validation.json`` (the report). Call
    :meth:`ValidationReport.raise_for_failure` to stop on blocking failures.

    Raises:
        ValueError: a pattern of ``config.warning_checks`` matches no check of the suite.
    """
    _check_warning_patterns(config)
    labels = resolve_labels(manifest, config)
    frames = derived_frames(manifest, quarantine, labels)
    planned, skipped = plan_checks(
        frozenset(manifest.columns),
        config,
        labels=labels,
        has_patient_ids=_has_patient_ids(manifest),
        modalities=modalities,
    )
    if docs_dir is None:
        outcomes = _run_gx(frames, planned, docs_site=None)
        return _assemble(manifest, quarantine, labels, frames, planned, outcomes, skipped)

    docs_dir = Path(docs_dir)
    with atomic_dir(docs_dir) as staging:
        outcomes = _run_gx(frames, planned, docs_site=staging)
        pages = _data_docs_pages(staging)
        report = _assemble(
            manifest,
            quarantine,
            labels,
            frames,
            planned,
            outcomes,
            skipped,
            docs_dir=docs_dir,
            pages=pages,
        )
        _make_offline(staging, report)
        (staging / "validation.html").write_text(render_summary_html(report), encoding="utf-8")
        (staging / "validation.json").write_text(
            json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str) + "\n",
            encoding="utf-8",
        )
    logger.info("validation Data Docs written to %s", docs_dir)
    return report


def resolve_labels(manifest: pd.DataFrame, config: ValidateConfig) -> tuple[str, ...]:
    """The class list: the configured one, or the sorted labels found in ``manifest``."""
    if config.labels is not None:
        return tuple(sorted(config.labels))
    if "label" not in manifest.columns:
        return ()
    return tuple(sorted(str(value) for value in manifest["label"].dropna().unique()))


# ---------------------------------------------------------------------------------------------
# Derived frames (pandas only)
# ---------------------------------------------------------------------------------------------


def derived_frames(
    manifest: pd.DataFrame, quarantine: pd.DataFrame, labels: Sequence[str]
) -> dict[str, pd.DataFrame]:
    """The frames the suite runs on, keyed by dataset name.

    ``columns`` (one row per expected column: kind of values and null count), ``manifest``
    (plus ``expected_label_index``), ``files`` (one row per source file: frames of
    a multi-frame DICOM share one file), ``class_counts`` (images per split and class, zero
    included), ``class_shares`` (share of each present class in its split), ``groups`` and
    ``patients`` (number of splits each appears in) and ``quarantine`` (one row of counts).
    Frames whose source columns are missing are left out.
    """
    columns = set(manifest.columns)
    frames: dict[str, pd.DataFrame] = {}

    frames["columns"] = _column_frame(manifest)

    frame = manifest.copy()
    if {"label", "label_index"} <= columns:
        positions = {label: index for index, label in enumerate(sorted(labels))}
        frame["expected_label_index"] = frame["label"].map(positions).astype("Int64")
    frames["manifest"] = frame.reset_index(drop=True)  # examples are looked up by position

    if "source_path" in columns:
        keep = [
            c for c in ("source_path", "sample_id", "sha256", "sop_instance_uid") if c in columns
        ]
        # One row per source file: for DICOM that is the DICOM object (its MD5), so the frames
        # of one multi-frame object, which share its SOPInstanceUID, count once.
        by = "dicom_md5" if "dicom_md5" in columns else "source_path"
        files = manifest.drop_duplicates(subset=by, keep="first")[keep]
        # Absolute paths may carry names from a hospital export: they never enter GX results.
        frames["files"] = files.drop(columns="source_path").reset_index(drop=True)

    if {"label", SPLIT_COLUMN} <= columns:
        counts = manifest.groupby([SPLIT_COLUMN, "label"], dropna=True).size()
        index = pd.MultiIndex.from_product([SPLITS, list(labels)], names=[SPLIT_COLUMN, "label"])
        full = counts.reindex(index, fill_value=0).rename("image_count").reset_index()
        full["image_count"] = full["image_count"].astype("int64")
        frames["class_counts"] = full
        present = full[full["image_count"] > 0].copy()
        totals = present.groupby(SPLIT_COLUMN)["image_count"].transform("sum")
        present["class_share"] = (present["image_count"] / totals).astype("float64")
        frames["class_shares"] = present.reset_index(drop=True)

    for key, dataset in (("group_id", "groups"), ("patient_id", "patients")):
        if {key, SPLIT_COLUMN} <= columns:
            frames[dataset] = _splits_per_key(manifest, key)

    # Slices left out by design (background, the labelling rule) and segmentation objects are
    # not faults: only the other set-aside files count against the ceiling.
    faults = (
        int((~quarantine["reason"].isin(SELECTION_REASONS)).sum())
        if "reason" in quarantine.columns
        else len(quarantine)
    )
    seen_count = len(manifest) + faults
    frames["quarantine"] = pd.DataFrame(
        {
            "quarantined_count": [faults],
            "seen_count": [seen_count],
            "quarantine_fraction": [faults / seen_count if seen_count else 0.0],
        }
    )
    return frames


def _column_frame(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per expected column present: its kind of values, the expected kind, its nulls.

    ``null_count`` is missing (and so not checked) for columns that may hold nulls.
    """
    expected = {**REQUIRED_COLUMNS, **OPTIONAL_COLUMNS}
    present = [name for name in expected if name in manifest.columns]
    return pd.DataFrame(
        {
            "column": pd.array(present, dtype="string"),
            "kind": pd.array([_kind(manifest[name]) for name in present], dtype="string"),
            "expected_kind": pd.array([_KINDS[expected[name]] for name in present], dtype="string"),
            "null_count": pd.array(
                [
                    None if name in NULLABLE_COLUMNS else int(manifest[name].isna().sum())
                    for name in present
                ],
                dtype="Int64",
            ),
        }
    )


def _kind(values: pd.Series) -> str:
    """``text``, ``integer``, ``float``, ``boolean`` or the dtype's name."""
    api = pd.api.types
    if api.is_bool_dtype(values.dtype):
        return "boolean"
    if api.is_integer_dtype(values.dtype):
        return "integer"
    if api.is_float_dtype(values.dtype):
        return "float"
    if values.dtype == object:
        return "text" if api.infer_dtype(values, skipna=True) in ("string", "empty") else "object"
    if api.is_string_dtype(values.dtype):
        return "text"
    return str(values.dtype)


def _splits_per_key(manifest: pd.DataFrame, key: str) -> pd.DataFrame:
    pairs = manifest[[key, SPLIT_COLUMN]].dropna().drop_duplicates()
    pairs = pairs.sort_values([key, SPLIT_COLUMN])
    grouped = pairs.groupby(key)[SPLIT_COLUMN]
    out = pd.DataFrame({"split_count": grouped.size().astype("int64"), "splits": grouped.first()})
    # Only keys in several splits need the (per-group, slow) join; there are few of them.
    leaked = out.index[out["split_count"] > 1]
    if len(leaked):
        joined = pairs[pairs[key].isin(leaked)].groupby(key)[SPLIT_COLUMN].agg(",".join)
        out["splits"] = out["splits"].astype("object")
        out.loc[leaked, "splits"] = joined
    out["splits"] = out["splits"].astype("string")
    return out.rename_axis(key).reset_index()


def _has_patient_ids(manifest: pd.DataFrame) -> bool:
    return "patient_id" in manifest.columns and bool(manifest["patient_id"].notna().any())


# ---------------------------------------------------------------------------------------------
# The suite, as data
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedExpectation:
    """One GX expectation of the suite: its check, the frame it runs on, and its arguments."""

    check: str
    dataset: str
    expectation: str  # GX class name, e.g. ExpectColumnValuesToBeInSet
    kwargs: Mapping[str, JSONValue]
    severity: Severity
    note: str = ""

    @property
    def expectation_type(self) -> str:
        """GX's snake-case type name."""
        return _snake(self.expectation)

    @property
    def column(self) -> str | None:
        """The column (or ``A,B`` pair) the expectation is about, if any."""
        if "column" in self.kwargs:
            return str(self.kwargs["column"])
        if "column_A" in self.kwargs:
            return f"{self.kwargs['column_A']},{self.kwargs['column_B']}"
        return None

    def to_dict(self) -> dict[str, JSONValue]:
        """JSON-ready dictionary (the suite definition)."""
        return {
            "check": self.check,
            "dataset": self.dataset,
            "expectation": self.expectation_type,
            "kwargs": dict(self.kwargs),
            "severity": self.severity,
        }


def plan_checks(
    columns: Iterable[str],
    config: ValidateConfig,
    *,
    labels: Sequence[str],
    has_patient_ids: bool,
    modalities: Sequence[str] = (DEFAULT_MODALITY,),
) -> tuple[list[PlannedExpectation], list[CheckResult]]:
    """The suite for a manifest with ``columns``: expectations to run, and checks skipped.

    A check whose manifest columns are missing is reported ``not_evaluated`` (the schema check
    fails for it); a check on DICOM-only data where there is none is ``not_applicable``.
    """
    planner = _Planner(frozenset(columns), config, tuple(modalities))
    planner.schema()
    planner.labels(tuple(labels))
    planner.uniqueness(has_patient_ids)
    planner.images()
    planner.add(
        "quarantine.fraction",
        "quarantine",
        "ExpectColumnMaxToBeBetween",
        needs=(),
        column="quarantine_fraction",
        min_value=0.0,
        max_value=config.max_quarantine_fraction,
    )
    return planner.planned, planner.skipped


def suite_definition(
    config: ValidateConfig,
    *,
    columns: Iterable[str] | None = None,
    labels: Sequence[str] = (),
    has_patient_ids: bool = True,
) -> dict[str, JSONValue]:
    """The suite as JSON-ready data (defaults: a DICOM manifest with every column)."""
    if columns is None:
        columns = [*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS]
    planned, skipped = plan_checks(columns, config, labels=labels, has_patient_ids=has_patient_ids)
    return {
        "suite_version": SUITE_VERSION,
        "expectations": [item.to_dict() for item in planned],
        "skipped": [row.to_dict() for row in skipped],
    }


class _Planner:
    def __init__(
        self, columns: frozenset[str], config: ValidateConfig, modalities: tuple[str, ...]
    ) -> None:
        self.columns = columns
        self.config = config
        self.modalities = modalities
        self.planned: list[PlannedExpectation] = []
        self.skipped: list[CheckResult] = []

    def add(
        self,
        check: str,
        dataset: str,
        expectation: str,
        *,
        needs: Sequence[str],
        **kwargs: JSONValue,
    ) -> None:
        severity = severity_of(check, self.config)
        missing = [name for name in needs if name not in self.columns]
        if missing:
            column = kwargs.get("column") or kwargs.get("column_A")
            self.skipped.append(
                CheckResult(
                    check=check,
                    expectation=_snake(expectation),
                    column=None if column is None else str(column),
                    severity=severity,
                    status="not_evaluated",
                    success=None,
                    dataset=dataset,
                    note=f"manifest lacks column(s) {', '.join(missing)}",
                )
            )
            return
        self.planned.append(PlannedExpectation(check, dataset, expectation, kwargs, severity))

    def not_applicable(self, check: str, expectation: str, column: str | None, note: str) -> None:
        self.skipped.append(
            CheckResult(
                check=check,
                expectation=_snake(expectation),
                column=column,
                severity=severity_of(check, self.config),
                status="not_applicable",
                success=None,
                note=note,
            )
        )

    def schema(self) -> None:
        self.add(
            "schema.required_columns",
            "manifest",
            "ExpectTableColumnsToMatchSet",
            needs=(),
            column_set=sorted(REQUIRED_COLUMNS),
            exact_match=False,
        )
        # Types and nulls run on the one-row-per-column frame: one expectation each instead of
        # one per column keeps the suite fast (GX costs ~30 ms per expectation) and the report
        # short, while the examples still name the offending columns.
        self.add(
            "schema.types",
            "columns",
            "ExpectColumnPairValuesToBeEqual",
            needs=(),
            column_A="kind",
            column_B="expected_kind",
        )
        self.add(
            "schema.not_null",
            "columns",
            "ExpectColumnValuesToBeBetween",
            needs=(),
            column="null_count",
            min_value=None,
            max_value=0,
        )
        self.add(
            "schema.split_values",
            "manifest",
            "ExpectColumnValuesToBeInSet",
            needs=(SPLIT_COLUMN,),
            column=SPLIT_COLUMN,
            value_set=list(SPLITS),
        )

    def labels(self, labels: tuple[str, ...]) -> None:
        config = self.config
        if config.labels is None:
            self.not_applicable(
                "labels.in_set",
                "ExpectColumnValuesToBeInSet",
                "label",
                "no label set configured (ValidateConfig.labels); classes inferred from the "
                f"data: {', '.join(labels) or 'none'}",
            )
        else:
            self.add(
                "labels.in_set",
                "manifest",
                "ExpectColumnValuesToBeInSet",
                needs=("label",),
                column="label",
                value_set=sorted(config.labels),
            )
        self.add(
            "labels.index_consistent",
            "manifest",
            "ExpectColumnPairValuesToBeEqual",
            needs=("label", "label_index"),
            column_A="label_index",
            column_B="expected_label_index",
            ignore_row_if="either_value_is_missing",
        )
        self.add(
            "labels.class_count",
            "manifest",
            "ExpectColumnUniqueValueCountToBeBetween",
            needs=("label",),
            column="label",
            min_value=2,
            max_value=None,
        )
        self.add(
            "labels.min_count_per_split",
            "class_counts",
            "ExpectColumnValuesToBeBetween",
            needs=("label", SPLIT_COLUMN),
            column="image_count",
            min_value=config.min_count_per_class,
            max_value=None,
        )
        self.add(
            "labels.class_balance",
            "class_shares",
            "ExpectColumnValuesToBeBetween",
            needs=("label", SPLIT_COLUMN),
            column="class_share",
            min_value=config.min_class_share,
            max_value=1.0,
        )

    def uniqueness(self, has_patient_ids: bool) -> None:
        self.add(
            "uniqueness.sample_id",
            "manifest",
            "ExpectColumnValuesToBeUnique",
            needs=("sample_id",),
            column="sample_id",
        )
        if "sop_instance_uid" in self.columns:
            self.add(
                "uniqueness.sop_instance_uid",
                "files",
                "ExpectColumnValuesToBeUnique",
                needs=("source_path", "sop_instance_uid"),
                column="sop_instance_uid",
            )
        else:
            self.not_applicable(
                "uniqueness.sop_instance_uid",
                "ExpectColumnValuesToBeUnique",
                "sop_instance_uid",
                "no sop_instance_uid column (not DICOM data)",
            )
        self.add(
            "uniqueness.sha256",
            "files",
            "ExpectColumnValuesToBeUnique",
            needs=("source_path", "sha256"),
            column="sha256",
        )
        self.add(
            "leakage.group_id",
            "groups",
            "ExpectColumnValuesToBeBetween",
            needs=("group_id", SPLIT_COLUMN),
            column="split_count",
            min_value=None,
            max_value=1,
        )
        if has_patient_ids or "patient_id" not in self.columns:
            self.add(
                "leakage.patient_id",
                "patients",
                "ExpectColumnValuesToBeBetween",
                needs=("patient_id", SPLIT_COLUMN),
                column="split_count",
                min_value=None,
                max_value=1,
            )
        else:
            self.not_applicable(
                "leakage.patient_id",
                "ExpectColumnValuesToBeBetween",
                "patient_id",
                "no patient identifiers (image-folder data); groups are checked instead",
            )

    def images(self) -> None:
        config = self.config
        self.add(
            "images.size_px",
            "manifest",
            "ExpectColumnValuesToBeBetween",
            needs=("image_size_px",),
            column="image_size_px",
            min_value=config.min_image_size_px,
            max_value=config.max_image_size_px,
        )
        for column in ("width", "height"):
            self.add(
                "images.source_size_px",
                "manifest",
                "ExpectColumnValuesToBeBetween",
                needs=(column,),
                column=column,
                min_value=config.min_source_side_px,
                max_value=config.max_source_side_px,
            )
        mostly = 1.0 - config.max_abnormal_image_fraction
        self.add(
            "images.blank",
            "manifest",
            "ExpectColumnValuesToBeBetween",
            needs=("mean_intensity",),
            column="mean_intensity",
            min_value=config.min_mean_intensity,
            max_value=None,
            mostly=mostly,
        )
        self.add(
            "images.saturated",
            "manifest",
            "ExpectColumnValuesToBeBetween",
            needs=("mean_intensity",),
            column="mean_intensity",
            min_value=None,
            max_value=config.max_mean_intensity,
            mostly=mostly,
        )
        # Blank and saturated images have no spread either; the row condition keeps each bad
        # image in exactly one check, so the report names one cause.
        self.add(
            "images.constant",
            "manifest",
            "ExpectColumnValuesToBeBetween",
            needs=("mean_intensity", "std_intensity"),
            column="std_intensity",
            min_value=config.min_std_intensity,
            max_value=None,
            mostly=mostly,
            row_condition={
                "type": "and",
                "conditions": [
                    {
                        "type": "comparison",
                        "column": {"name": "mean_intensity"},
                        "operator": ">=",
                        "parameter": config.min_mean_intensity,
                    },
                    {
                        "type": "comparison",
                        "column": {"name": "mean_intensity"},
                        "operator": "<=",
                        "parameter": config.max_mean_intensity,
                    },
                ],
            },
        )
        if "modality" in self.columns and not self.modalities:
            self.not_applicable(
                "images.modality",
                "ExpectColumnValuesToBeInSet",
                "modality",
                "every modality accepted (converted with modality '')",
            )
        elif "modality" in self.columns:
            self.add(
                "images.modality",
                "manifest",
                "ExpectColumnValuesToBeInSet",
                needs=("modality",),
                column="modality",
                value_set=list(self.modalities),
            )
        else:
            self.not_applicable(
                "images.modality",
                "ExpectColumnValuesToBeInSet",
                "modality",
                "no modality column (not DICOM data)",
            )


def _check_warning_patterns(config: ValidateConfig) -> None:
    unknown = [
        pattern
        for pattern in config.warning_checks
        if not any(fnmatch.fnmatchcase(name, pattern) for name in CHECKS)
    ]
    if unknown:
        raise ValueError(
            f"ValidateConfig.warning_checks: {', '.join(unknown)} match no check; "
            f"checks are: {', '.join(CHECKS)}"
        )


# ---------------------------------------------------------------------------------------------
# Running GX
# ---------------------------------------------------------------------------------------------

#: Columns identifying an unexpected row in examples, beside the checked ones, per dataset.
_INDEX_COLUMNS: dict[str, tuple[str, ...]] = {
    "columns": ("column",),
    "manifest": ("sample_id", "image_path"),
    "files": ("sample_id",),
    "class_counts": (SPLIT_COLUMN, "label"),
    "class_shares": (SPLIT_COLUMN, "label", "image_count"),
    "groups": ("group_id", "splits"),
    "patients": ("patient_id", "splits"),
    "quarantine": (),
}


@dataclass(frozen=True)
class _Outcome:
    success: bool
    result: dict[str, JSONValue]
    error: str | None


def _run_gx(
    frames: Mapping[str, pd.DataFrame],
    planned: Sequence[PlannedExpectation],
    *,
    docs_site: Path | None,
) -> dict[int, _Outcome]:
    """Run ``planned`` through an ephemeral GX context; build Data Docs in ``docs_site``."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # In-memory stores throughout (a file context re-reads its YAML on every access, which
    # costs seconds); only the Data Docs site, when wanted, is a folder.
    defaults = InMemoryStoreBackendDefaults(init_temp_docs_sites=docs_site is not None)
    if docs_site is not None:
        site_config: dict[str, Any] = defaults.data_docs_sites["local_site"]
        site_config["store_backend"]["base_directory"] = str(docs_site)
        site_config["show_how_to_buttons"] = False  # GX tutorial links and newsletter footer
    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=defaults,
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    source = context.data_sources.add_pandas(name="braincls")

    by_dataset: dict[str, list[int]] = {}
    for position, item in enumerate(planned):
        by_dataset.setdefault(item.dataset, []).append(position)

    outcomes: dict[int, _Outcome] = {}
    for dataset, positions in by_dataset.items():
        frame = frames.get(dataset)
        if frame is None:  # its source columns are missing; the planner skipped its checks
            continue
        batch = source.add_dataframe_asset(name=dataset).add_batch_definition_whole_dataframe(
            "whole"
        )
        expectations = [
            getattr(gxe, planned[position].expectation)(
                **planned[position].kwargs,
                meta={"braincls_check": planned[position].check, "braincls_position": position},
                notes=(
                    f"braincls check `{planned[position].check}` ({planned[position].severity}): "
                    f"{CHECKS[planned[position].check]}"
                ),
                severity="warning" if planned[position].severity == "warning" else "critical",
            )
            for position in positions
        ]
        # One suite with all its expectations: adding them one by one re-serialises the suite
        # each time.
        suite = context.suites.add(
            gx.ExpectationSuite(
                name=f"braincls.{dataset}",
                expectations=expectations,
                meta={"braincls_suite_version": SUITE_VERSION},
            )
        )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"braincls.{dataset}", data=batch, suite=suite)
        )
        # ValidationDefinition.run stores its result, which is all Data Docs need: no checkpoint.
        # No unexpected_index_column_names: GX then looks up every unexpected row one by one
        # (seconds for thousands of rows); the row positions it returns are looked up here.
        suite_result = definition.run(
            batch_parameters={"dataframe": frame},
            result_format={
                "result_format": "SUMMARY",
                "partial_unexpected_count": _MAX_EXAMPLES,
            },
            run_id=RunIdentifier(run_name=_DATA_DOCS_RUN_NAME),
        )
        for result in suite_result.results:
            meta = (result.expectation_config.meta if result.expectation_config else None) or {}
            position = int(meta["braincls_position"])
            outcomes[position] = _Outcome(
                success=bool(result.success),
                result=dict(result.result or {}),
                error=_exception_message(result.exception_info),
            )
    if docs_site is not None:
        context.build_data_docs()
    return outcomes


def _exception_message(info: Any) -> str | None:
    """The first raised exception's message in GX's exception_info (flat or keyed by metric)."""
    if not isinstance(info, Mapping):
        return None
    if "raised_exception" in info:
        return str(info.get("exception_message")) if info.get("raised_exception") else None
    for value in info.values():
        message = _exception_message(value)
        if message is not None:
            return message
    return None


# ---------------------------------------------------------------------------------------------
# Report assembly
# ---------------------------------------------------------------------------------------------


def _assemble(
    manifest: pd.DataFrame,
    quarantine: pd.DataFrame,
    labels: tuple[str, ...],
    frames: Mapping[str, pd.DataFrame],
    planned: Sequence[PlannedExpectation],
    outcomes: Mapping[int, _Outcome],
    skipped: Sequence[CheckResult],
    *,
    docs_dir: Path | None = None,
    pages: Mapping[str, str] | None = None,
) -> ValidationReport:
    rows: list[CheckResult] = list(skipped)
    for position, item in enumerate(planned):
        outcome = outcomes.get(position)
        if outcome is None:
            rows.append(
                CheckResult(
                    check=item.check,
                    expectation=item.expectation_type,
                    column=item.column,
                    severity=item.severity,
                    status="not_evaluated",
                    success=None,
                    dataset=item.dataset,
                    note=f"the {item.dataset} frame could not be derived",
                )
            )
            continue
        rows.append(_result_row(item, outcome, quarantine, frames.get(item.dataset)))
    order = {name: position for position, name in enumerate(CHECKS)}
    rows.sort(key=lambda row: order[row.check])  # stable: keeps column order within a check

    failed = [row for row in rows if row.success is False]
    blocking = tuple(dict.fromkeys(row.check for row in failed if row.severity == "blocking"))
    warned = tuple(dict.fromkeys(row.check for row in failed if row.severity == "warning"))
    report = ValidationReport(
        success=not blocking,
        blocking_failures=blocking,
        warnings=warned,
        results=tuple(rows),
        image_count=len(manifest),
        quarantined_count=len(quarantine),
        labels=labels,
        docs_index=None if docs_dir is None else docs_dir / "index.html",
        summary_html=None if docs_dir is None else docs_dir / "validation.html",
        data_docs_pages=dict(pages or {}),
    )
    if blocking:
        logger.warning("data validation: blocking failures %s", ", ".join(blocking))
    if warned:
        logger.warning("data validation: warnings %s", ", ".join(warned))
    return report


def _result_row(
    item: PlannedExpectation,
    outcome: _Outcome,
    quarantine: pd.DataFrame,
    frame: pd.DataFrame | None,
) -> CheckResult:
    result = outcome.result
    unexpected = result.get("unexpected_count")
    observed: JSONValue
    examples: list[dict[str, JSONValue]]
    if outcome.error is not None:
        observed, examples, unexpected = f"error: {outcome.error}", [], None
    elif item.expectation == "ExpectTableColumnsToMatchSet":
        details = result.get("details") or {}
        missing = sorted((details.get("mismatched") or {}).get("missing") or [])
        observed = f"missing: {', '.join(missing)}" if missing else "all present"
        examples = [{"missing_column": name} for name in missing[:_MAX_EXAMPLES]]
        unexpected = len(missing)
    elif "observed_value" in result:
        observed = _jsonable(result["observed_value"])
        examples = []
    else:
        element_count = result.get("element_count")
        observed = f"{unexpected} of {element_count} unexpected"
        examples = _examples(item, result, frame)
    if item.check == "quarantine.fraction":
        observed = _round(observed)
        examples = _quarantine_reasons(quarantine)
        unexpected = (
            int(frame["quarantined_count"].iloc[0]) if frame is not None else len(quarantine)
        )
    success = outcome.success and outcome.error is None
    return CheckResult(
        check=item.check,
        expectation=item.expectation_type,
        column=item.column,
        severity=item.severity,
        status="passed" if success else "failed",
        success=success,
        observed_value=observed,
        unexpected_count=None if unexpected is None else int(unexpected),
        examples=tuple(examples) if not success or item.check == "quarantine.fraction" else (),
        dataset=item.dataset,
    )


def _examples(
    item: PlannedExpectation, result: Mapping[str, JSONValue], frame: pd.DataFrame | None
) -> list[dict[str, JSONValue]]:
    """A few unexpected rows: the checked values plus the columns that identify the row."""
    positions = [
        int(position)
        for position in (result.get("partial_unexpected_index_list") or [])[:_MAX_EXAMPLES]
        if isinstance(position, numbers.Integral)
    ]
    if positions and frame is not None:
        checked = [
            str(item.kwargs[key])
            for key in ("column", "column_A", "column_B")
            if key in item.kwargs
        ]
        wanted = [*checked, *_INDEX_COLUMNS[item.dataset]]
        columns = [
            name
            for name in dict.fromkeys(wanted)
            if name in frame.columns and name not in _HIDDEN_COLUMNS
        ]
        records = frame.loc[positions, columns].to_dict("records")
        return [{str(key): _jsonable(value) for key, value in row.items()} for row in records]
    counts = result.get("partial_unexpected_counts") or []
    return [
        {"value": _jsonable(entry.get("value")), "count": _jsonable(entry.get("count"))}
        for entry in counts[:_MAX_EXAMPLES]
        if isinstance(entry, Mapping)
    ]


def _quarantine_reasons(quarantine: pd.DataFrame) -> list[dict[str, JSONValue]]:
    """The most frequent reasons, cut at the first colon (details may name files)."""
    if quarantine.empty or "reason" not in quarantine.columns:
        return []
    reasons = quarantine["reason"].fillna("unknown").astype(str)
    reasons = reasons.str.split(":", n=1).str[0].str.strip().str.slice(0, 80)
    counts = reasons.value_counts().head(_MAX_EXAMPLES)
    return [{"reason": str(reason), "count": int(count)} for reason, count in counts.items()]


def _jsonable(value: Any) -> JSONValue:
    """Plain JSON values from numpy / pandas scalars, tuples and missing values."""
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = [_jsonable(item) for item in value]
        return [*items[:20], "..."] if len(items) > 20 else items
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return _jsonable(item())
        except (TypeError, ValueError):
            pass
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _round(value: JSONValue) -> JSONValue:
    return round(value, 4) if isinstance(value, float) else value


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _by_check(results: Iterable[CheckResult]) -> dict[str, list[CheckResult]]:
    grouped: dict[str, list[CheckResult]] = {}
    for row in results:
        grouped.setdefault(row.check, []).append(row)
    return grouped


def _check_row(check: str, rows: Sequence[CheckResult]) -> dict[str, JSONValue]:
    """Collapse a check's expectations (e.g. one per column) into one table row."""
    failed = [row for row in rows if row.success is False]
    ran = [row for row in rows if row.success is not None]
    shown: Sequence[CheckResult]
    if failed:
        status, shown = "failed", failed
    elif ran:
        status, shown = "passed", ran
    else:
        status, shown = rows[0].status, rows
    columns = list(dict.fromkeys(row.column for row in shown if row.column))
    if status in ("not_applicable", "not_evaluated"):
        observed = f"{status.replace('_', ' ')}: {'; '.join(dict.fromkeys(r.note for r in rows))}"
    elif len(shown) == 1:
        observed = shown[0].observed_value
    elif status == "failed":
        observed = "; ".join(f"{row.column}: {row.observed_value}" for row in shown)
    else:
        observed = f"{len(shown)} columns {status.replace('_', ' ')}"
    notes = list(dict.fromkeys(row.note for row in rows if row.note))
    unexpected = [row.unexpected_count for row in shown if row.unexpected_count is not None]
    examples = [example for row in shown for example in row.examples][:_MAX_EXAMPLES]
    return {
        "check": check,
        "severity": rows[0].severity,
        "status": status,
        "expectation": ", ".join(dict.fromkeys(row.expectation for row in shown)),
        "column": _short_list(columns),
        "observed_value": _text(observed),
        "unexpected_count": sum(unexpected) if unexpected else None,
        "examples": json.dumps(examples, default=str) if examples else "",
        "note": "; ".join(notes),
    }


def _first_example(examples: JSONValue) -> str:
    parsed = json.loads(examples) if isinstance(examples, str) and examples else []
    if not parsed:
        return ""
    return ", ".join(f"{key}={value}" for key, value in parsed[0].items())


def _short_list(items: Sequence[str], limit: int = 3) -> str:
    if len(items) <= limit:
        return ", ".join(items)
    return f"{', '.join(items[:limit])} +{len(items) - limit} more"


def _text(value: JSONValue) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _md_cell(value: JSONValue) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------------------------------------
# Data Docs, offline
# ---------------------------------------------------------------------------------------------

_REMOTE_LINK = re.compile(r"<link\b[^>]*\bhref=[\"']https?://[^>]*>", re.IGNORECASE)
_REMOTE_SCRIPT = re.compile(
    r"<script\b[^>]*\bsrc=[\"']https?://[^>]*>\s*</script>", re.IGNORECASE | re.DOTALL
)
_REMOTE_IMAGE = re.compile(r"<img\b[^>]*\bsrc=[\"']https?://[^>]*>", re.IGNORECASE)
_REMOTE_CSS_URL = re.compile(r"url\(\s*[\"']?https?://[^)]*\)", re.IGNORECASE)

#: Replaces Bootstrap and Font Awesome, which GX loads from CDNs: enough to read the pages.
_OFFLINE_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 1.5rem;
color:#212529;font-size:14px;line-height:1.45}
a{color:#0062cc}table{border-collapse:collapse;margin:.4rem 0;max-width:100%}
td,th{border:1px solid #dee2e6;padding:.25rem .5rem;vertical-align:top;text-align:left}
.alert{padding:.5rem .8rem;border:1px solid #d6d8db;background:#e2e3e5;border-radius:4px;
margin:.5rem 0}.card{border:1px solid #dee2e6;border-radius:4px;margin:.5rem 0;padding:.4rem}
.text-danger{color:#c82333}.text-success{color:#218838}.text-warning{color:#b8860b}
.fas,.far{font-style:normal}.fa-times:before{content:"\\2717 "}
.fa-check-circle:before,.fa-check:before{content:"\\2713 "}
.fa-question-circle:before{content:"? "}.fa-comment:before{content:"\\2139 "}
.cooltip .top,.navbar,.btn-group,nav.navbar,[hidden]{display:none}
.collapse{display:block}ul.nav{padding-left:1rem}
.braincls-offline-index{border:2px solid #6c757d;padding:.6rem 1rem;margin:1rem 0;border-radius:4px}
"""


def _make_offline(site: Path, report: ValidationReport) -> None:
    """Strip CDN stylesheets, scripts and the remote logo; inline a small stylesheet.

    GX pages load Bootstrap, jQuery, bootstrap-table, Font Awesome and Vega from CDNs and a logo
    (with the data context's id) from S3. Offline they would hang or show nothing, and a
    hospital network should not be told who opened a report. The validation pages are static
    HTML and stay fully readable; the index page's tables are filled by JavaScript, so a static
    list of the validation pages is added to it. Unreferenced static images are dropped.
    """
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        text = _REMOTE_LINK.sub("", text)
        text = _REMOTE_SCRIPT.sub("", text)
        text = _REMOTE_IMAGE.sub("", text)
        text = _REMOTE_CSS_URL.sub("none", text)
        text = text.replace("</head>", f"<style>{_OFFLINE_CSS}</style>\n</head>", 1)
        if page == site / "index.html":
            text = re.sub(
                r"(<body\b[^>]*>)", lambda m: m.group(1) + _offline_index(report), text, count=1
            )
        page.write_text(text, encoding="utf-8")
    for stylesheet in site.rglob("*.css"):
        text = stylesheet.read_text(encoding="utf-8")
        stylesheet.write_text(_REMOTE_CSS_URL.sub("none", text), encoding="utf-8")
    static = site / "static"
    if static.is_dir():
        referenced = "\n".join(p.read_text(encoding="utf-8") for p in site.rglob("*.html"))
        referenced += "\n".join(p.read_text(encoding="utf-8") for p in static.rglob("*.css"))
        for asset in [p for p in static.rglob("*") if p.is_file()]:
            if asset.suffix != ".css" and asset.name not in referenced:
                asset.unlink()
        for folder in sorted(static.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def _offline_index(report: ValidationReport) -> str:
    verdict = "passed" if report.success else "FAILED"
    items = []
    for dataset, page in sorted(report.data_docs_pages.items()):
        failed = any(row.dataset == dataset and row.success is False for row in report.results)
        mark = "&#x2717; failed" if failed else "&#x2713; passed"
        items.append(
            f'<li><a href="{html.escape(page)}">braincls.{html.escape(dataset)}</a> {mark}</li>'
        )
    return (
        '<div class="braincls-offline-index"><h3>braincls data validation: '
        f"{verdict}</h3><p>Summary of every check: "
        '<a href="validation.html">validation.html</a>. Validation results per frame:</p>'
        f"<ul>{''.join(items)}</ul></div>"
    )


def _data_docs_pages(site: Path) -> dict[str, str]:
    """dataset -> its validation-result page, relative to the site root."""
    pages: dict[str, str] = {}
    validations = site / "validations" / "braincls"
    for page in sorted(validations.rglob("*.html")) if validations.is_dir() else []:
        dataset = page.relative_to(validations).parts[0]
        pages[dataset] = page.relative_to(site).as_posix()
    return pages


def render_summary_html(report: ValidationReport) -> str:
    """A self-contained HTML page of the report: no scripts, no external resources."""
    verdict = "PASSED" if report.success else "FAILED"
    colour = "#218838" if report.success else "#c82333"
    rows = []
    for row in report.table_rows():
        status = str(row["status"])
        css = {"failed": "failed", "passed": "passed"}.get(status, "skipped")
        if status == "failed" and row["severity"] == "warning":
            css = "warned"
        cells = "".join(
            f"<td>{html.escape('' if row[key] is None else str(row[key]))}</td>"
            for key in (
                "check",
                "severity",
                "status",
                "expectation",
                "column",
                "observed_value",
                "unexpected_count",
                "examples",
                "note",
            )
        )
        rows.append(f'<tr class="{css}">{cells}</tr>')
    links = "".join(
        f'<li><a href="{html.escape(page)}">braincls.{html.escape(dataset)}</a></li>'
        for dataset, page in sorted(report.data_docs_pages.items())
    )
    failures = ", ".join(report.blocking_failures) or "none"
    warned = ", ".join(report.warnings) or "none"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>braincls data validation: {verdict}</title>
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem;
color:#212529;font-size:14px}}
h1{{color:{colour}}}table{{border-collapse:collapse}}
td,th{{border:1px solid #dee2e6;padding:.3rem .5rem;vertical-align:top;text-align:left}}
th{{background:#f1f3f5}}tr.failed{{background:#f8d7da}}tr.warned{{background:#fff3cd}}
tr.skipped{{color:#6c757d}}td:nth-child(8){{font-family:monospace;font-size:12px}}
</style></head><body>
<h1>Data validation {verdict}</h1>
<p>Suite braincls {html.escape(report.suite_version)} on {report.image_count} images
({report.quarantined_count} files set aside); classes: {html.escape(", ".join(report.labels))}.</p>
<p><strong>Blocking failures:</strong> {html.escape(failures)}<br>
<strong>Warnings:</strong> {html.escape(warned)}</p>
<table><thead><tr><th>check</th><th>severity</th><th>status</th><th>expectation</th>
<th>column</th><th>observed</th><th>unexpected</th><th>examples</th><th>note</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>
<p>Great Expectations Data Docs: <a href="index.html">index.html</a></p><ul>{links}</ul>
</body></html>
"""
