"""Stage records: the small JSON files that make braincls' one cache.

Every stage writes its outputs under a folder named by its *content key* (the hashes of what it
reads, its config section and its code version) and, last, a ``record.json`` naming those
outputs. A stage called again with the same key reuses the record only when every file the
record names still exists and no refresh was asked for; otherwise it rebuilds. Records are
frozen dataclasses serialised as JSON (never pickled), so a data root shared by several workers
carries data, not code.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import pandas as pd

from braincls.common.atomic import write_json
from braincls.common.hashing import stable_hash

logger = logging.getLogger(__name__)

#: File name of a stage record inside its output folder.
RECORD_FILE = "record.json"


class MissingStageOutput(FileNotFoundError):
    """A record names a file that is gone; the stage that wrote it rebuilds it when run again."""


class HasOutputs(Protocol):
    """A stage record: it can list the files it names."""

    def output_paths(self) -> Iterable[Path]: ...


R = TypeVar("R")


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """What a stage returns: its record, and whether it was reused from an earlier run."""

    record: R
    reused: bool


def stage_key(stage: str, version: str, *parts: object) -> str:
    """Content key of a stage: its name and code version plus the hashes and config it reads."""
    return stable_hash({"stage": stage, "version": version, "parts": parts})[:24]


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf as None, numpy scalars and arrays as Python, paths as strings."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, pd.DataFrame):
        return json_safe(value.to_dict(orient="records"))
    return value


def write_record(path: Path, record: Any) -> Path:
    """Write a record dataclass as JSON, atomically."""
    return write_json(Path(path), json_safe(asdict(record)))


def read_record(path: Path, cls: type[R]) -> R:
    """Read a record of type ``cls``; :class:`MissingStageOutput` when the file is gone."""
    path = Path(path)
    if not path.is_file():
        raise MissingStageOutput(
            f"{path}: stage record missing; run the pipeline again and the stage that wrote it "
            "rebuilds it"
        )
    return cls(**json.loads(path.read_text(encoding="utf-8")))


def require(path: Path | str) -> Path:
    """``path``, which an earlier stage wrote; :class:`MissingStageOutput` if it is gone."""
    path = Path(path)
    if not path.exists():
        raise MissingStageOutput(
            f"{path}: output of an earlier stage is missing; run the pipeline again: the stage "
            "that wrote it sees the file is gone and rebuilds it"
        )
    return path


def reusable(path: Path, cls: type[R], *, refresh: bool = False) -> R | None:
    """The finished record at ``path``, or None when the stage must run.

    It must run when asked to (``refresh``), when there is no record, when the record was
    written by another braincls version with other fields, or when any file the record names
    (:meth:`HasOutputs.output_paths`) is gone.
    """
    path = Path(path)
    if refresh or not path.is_file():
        return None
    try:
        record = cls(**json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as error:
        logger.warning("%s: unreadable stage record (%s); the stage runs again", path, error)
        return None
    outputs = getattr(record, "output_paths", None)
    missing = [Path(p) for p in outputs()] if outputs is not None else []
    missing = [p for p in missing if not p.exists()]
    if missing:
        logger.warning(
            "%s: %d output file(s) it names are gone (first: %s); the stage runs again",
            path.parent.name,
            len(missing),
            missing[0].name,
        )
        return None
    return record


def field_names(cls: type[Any]) -> list[str]:
    """The field names of a record dataclass."""
    return [f.name for f in dataclasses.fields(cls)]
