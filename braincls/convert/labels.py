"""The labels table: which class each converted DICOM image belongs to.

A CSV with a ``label`` column and one or more identifier columns, named by DICOM keyword or in
snake case (case and underscores are ignored): ``Collection``, ``PatientID``,
``SeriesInstanceUID``, ``SOPInstanceUID``. Each row labels the *most specific* identifier it
fills, so a row may carry a PatientID beside a SeriesInstanceUID and still label only that
series. For an image the most specific match wins: SOP instance, then series, then patient,
then collection; a Collection of ``*`` labels every collection (the catch-all default)::

    Collection,PatientID,SeriesInstanceUID,label
    Brain-Tumor-Progression,,,tumor
    ,HEALTHY-01,,no_tumor
    ,,1.3.6.1.4.1.14519.5.2.1.99.1,no_tumor

Identifiers are the original header values: with Patient ID pseudonymisation on, the
converter pseudonymises the table's Patient IDs with the same salt before matching.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from braincls.common.hashing import stable_hash

#: Identifier levels, most specific first, with the normalised CSV header naming each.
LEVELS: tuple[tuple[str, str], ...] = (
    ("sop_instance_uid", "sopinstanceuid"),
    ("series_instance_uid", "seriesinstanceuid"),
    ("patient_id", "patientid"),
    ("collection", "collection"),
)

ANY_COLLECTION = "*"


class LabelsError(ValueError):
    """The labels table cannot be read or contradicts itself."""


def _normalise(header: str) -> str:
    return header.strip().lower().replace("_", "").replace(" ", "")


@dataclass(frozen=True)
class LabelTable:
    """Labels by SOP Instance UID, Series Instance UID, Patient ID and collection."""

    by_sop_instance_uid: Mapping[str, str] = field(default_factory=dict)
    by_series_instance_uid: Mapping[str, str] = field(default_factory=dict)
    by_patient_id: Mapping[str, str] = field(default_factory=dict)
    by_collection: Mapping[str, str] = field(default_factory=dict)

    @property
    def classes(self) -> tuple[str, ...]:
        """Every label the table can give, sorted (``label_index`` is the position here)."""
        labels: set[str] = set()
        for mapping in self._mappings():
            labels.update(mapping.values())
        return tuple(sorted(labels))

    def _mappings(self) -> tuple[Mapping[str, str], ...]:
        return (
            self.by_sop_instance_uid,
            self.by_series_instance_uid,
            self.by_patient_id,
            self.by_collection,
        )

    def lookup(
        self,
        *,
        sop_instance_uid: str | None,
        series_instance_uid: str | None,
        patient_id: str | None,
        collection: str | None,
    ) -> str | None:
        """The label of one image (most specific identifier wins), None when unlabelled."""
        keys = (sop_instance_uid, series_instance_uid, patient_id, collection)
        for key, mapping in zip(keys, self._mappings(), strict=True):
            if key is not None and key in mapping:
                return mapping[key]
        return self.by_collection.get(ANY_COLLECTION)

    def with_patient_ids(self, transform: Callable[[str], str]) -> LabelTable:
        """A copy whose Patient ID keys are passed through ``transform`` (pseudonymisation)."""
        mapped = {transform(key): value for key, value in self.by_patient_id.items()}
        return LabelTable(
            by_sop_instance_uid=self.by_sop_instance_uid,
            by_series_instance_uid=self.by_series_instance_uid,
            by_patient_id=mapped,
            by_collection=self.by_collection,
        )

    def content_hash(self) -> str:
        """SHA-256 of the table's content, independent of row order."""
        return stable_hash([dict(sorted(mapping.items())) for mapping in self._mappings()])

    def __len__(self) -> int:
        return sum(len(mapping) for mapping in self._mappings())


def load_labels(path: Path) -> LabelTable:
    """Read a labels CSV (see the module docstring).

    Raises :class:`LabelsError` for a missing file or ``label`` column, a row without an
    identifier or label, or one identifier given two different labels.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            headers = {_normalise(name): name for name in reader.fieldnames or ()}
            rows = list(reader)
    except FileNotFoundError as error:
        raise LabelsError(f"{path}: labels table not found") from error
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise LabelsError(f"{path}: cannot read labels table: {error}") from error
    if "label" not in headers:
        raise LabelsError(f"{path}: no 'label' column (columns: {', '.join(headers.values())})")
    present = [(level, headers[name]) for level, name in LEVELS if name in headers]
    if not present:
        raise LabelsError(
            f"{path}: no identifier column; expected one of Collection, PatientID, "
            "SeriesInstanceUID, SOPInstanceUID"
        )
    tables: dict[str, dict[str, str]] = {level: {} for level, _ in LEVELS}
    for line, row in enumerate(rows, start=2):
        label = (row.get(headers["label"]) or "").strip()
        filled = [(level, (row.get(column) or "").strip()) for level, column in present]
        filled = [(level, value) for level, value in filled if value]
        if not filled and not label:
            continue  # a blank line
        if not label:
            raise LabelsError(f"{path}:{line}: row has no label")
        if not filled:
            raise LabelsError(f"{path}:{line}: row has a label but no identifier")
        level, key = filled[0]  # LEVELS is ordered most specific first
        known = tables[level].get(key)
        if known is not None and known != label:
            raise LabelsError(
                f"{path}:{line}: {level} {key!r} is labelled both {known!r} and {label!r}"
            )
        tables[level][key] = label
    return LabelTable(
        by_sop_instance_uid=tables["sop_instance_uid"],
        by_series_instance_uid=tables["series_instance_uid"],
        by_patient_id=tables["patient_id"],
        by_collection=tables["collection"],
    )
