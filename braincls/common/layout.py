"""Where things live under the data root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataLayout:
    """Folders under one data root. Nothing is created until a stage writes there."""

    root: Path

    @property
    def raw(self) -> Path:
        """Verified DICOM downloads: raw/<Collection>/<PatientID>/<Study>/<Series>/."""
        return self.root / "raw"

    @property
    def converted(self) -> Path:
        """DICOM converted to PNG, one folder per series key (the conversion cache)."""
        return self.root / "converted"

    @property
    def images(self) -> Path:
        """Preprocessed training images, keyed by preprocessing config and content hash."""
        return self.root / "images"

    @property
    def manifests(self) -> Path:
        """Manifest and quarantine tables, one folder per stage and cache key."""
        return self.root / "manifests"

    @property
    def models(self) -> Path:
        """Model versions (the registry)."""
        return self.root / "models"

    @property
    def runs(self) -> Path:
        """Training working folders (checkpoints) per training key."""
        return self.root / "runs"

    @property
    def reports(self) -> Path:
        """Evaluation reports, one folder per run id."""
        return self.root / "reports"

    @property
    def predictions(self) -> Path:
        """Prediction tables of scoring runs (``braincls predict``, the score flow), one folder
        per run id."""
        return self.root / "predictions"

    def relative(self, path: Path) -> str:
        """``path`` relative to the root, in POSIX form."""
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()
