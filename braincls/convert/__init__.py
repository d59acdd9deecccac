"""DICOM to training images: every file converted right, or set aside with a reason.

Public entry points:

- :func:`convert_tree` (the ``braincls convert`` command): discover, convert in parallel with a
  per-series cache, write ``images.parquet`` and ``quarantine.parquet``.
- :func:`convert_series`: one series (or every file under a folder), in this process.
- :func:`load_labels`: the labels table joined to the images.
- :mod:`braincls.convert.pixels`: the pure pixel functions of the grayscale pipeline.

Names are imported on first use, so that importing the package (or the pixel functions alone)
costs nothing until a name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from braincls.convert.files import RenderedFrame, render_frame
    from braincls.convert.labels import LabelsError, LabelTable, load_labels
    from braincls.convert.reading import Reason, SetAside, read_dataset
    from braincls.convert.series import (
        CONVERTER_VERSION,
        ConversionError,
        SeriesResult,
        SeriesUnit,
        convert_series,
        series_key,
    )
    from braincls.convert.tree import (
        DICOM_MANIFEST_COLUMNS,
        DICOM_QUARANTINE_COLUMNS,
        ConversionResult,
        assemble_manifests,
        convert_tree,
        discover_series,
        pending_series,
    )

_MODULE_OF = {
    "CONVERTER_VERSION": "series",
    "ConversionError": "series",
    "SeriesResult": "series",
    "SeriesUnit": "series",
    "convert_series": "series",
    "series_key": "series",
    "RenderedFrame": "files",
    "render_frame": "files",
    "LabelsError": "labels",
    "LabelTable": "labels",
    "load_labels": "labels",
    "Reason": "reading",
    "SetAside": "reading",
    "read_dataset": "reading",
    "DICOM_MANIFEST_COLUMNS": "tree",
    "DICOM_QUARANTINE_COLUMNS": "tree",
    "ConversionResult": "tree",
    "assemble_manifests": "tree",
    "convert_tree": "tree",
    "discover_series": "tree",
    "pending_series": "tree",
}

__all__ = [
    "CONVERTER_VERSION",
    "DICOM_MANIFEST_COLUMNS",
    "DICOM_QUARANTINE_COLUMNS",
    "ConversionError",
    "ConversionResult",
    "LabelTable",
    "LabelsError",
    "Reason",
    "RenderedFrame",
    "SeriesResult",
    "SeriesUnit",
    "SetAside",
    "assemble_manifests",
    "convert_series",
    "convert_tree",
    "discover_series",
    "load_labels",
    "pending_series",
    "read_dataset",
    "render_frame",
    "series_key",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_MODULE_OF])
