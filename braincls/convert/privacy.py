"""Which DICOM keeps its Patient IDs: a public de-identified archive does; everything else is
pseudonymised by default.

A *public de-identified archive* here is a collection that braincls ingested from an NBIA API
(TCIA): the archive de-identified it before publishing it, and braincls wrote a verification
record (``<SeriesInstanceUID>.series.json``) beside each series it downloaded. Any other folder
(a ``--dicom`` folder, a PACS or hospital export, a copy of TCIA data made by hand) may carry
real Patient IDs, so with ``ConvertConfig.pseudonymize_patient_id='auto'`` (the default) its
Patient IDs are replaced by salted pseudonyms in every manifest, record and report. A user who
knows such a folder is de-identified says so with ``pseudonymize_patient_id=false``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from braincls.config import ConvertConfig
from braincls.ingest.store import RECORD_SUFFIX

logger = logging.getLogger(__name__)


def is_public_archive(folder: Path) -> bool:
    """Whether ``folder`` was ingested from an NBIA API by braincls (verification records)."""
    return next(Path(folder).rglob(f"*{RECORD_SUFFIX}"), None) is not None


def resolve_pseudonymisation(config: ConvertConfig, source: Path) -> ConvertConfig:
    """``config`` for converting ``source``, with ``pseudonymize_patient_id`` decided (true
    unless 'auto' meets a public de-identified archive) and, when pseudonymising, the salt
    attached (:class:`~braincls.config.PseudonymSaltMissing` when none is configured)."""
    wanted = config.pseudonymize_patient_id
    if wanted == "auto":
        wanted = not is_public_archive(source)
    resolved = config.model_copy(update={"pseudonymize_patient_id": bool(wanted)})
    if not wanted:
        return resolved
    return resolved.with_pseudonym_salt(config.pseudonym_salt)
