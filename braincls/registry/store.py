"""The model registry under ``<data root>/models/``: versions, champion, challengers, decisions.

Layout::

    models/
      registry.json        # state: versions, their status, the champion and its history
      decisions.jsonl      # one JSON line per promotion decision, with its reasons
      .lock                # fcntl lock file serialising every state change
      v0001/
        model.keras
        metadata.json      # version, registration time, model hash, metrics, caller metadata
        model_card.md

Every state change (register, promote, rollback) happens under an exclusive ``fcntl.flock`` on
``models/.lock``: the state is read, changed and written back (atomically, by rename) while the
lock is held, so two runs finishing at once can neither corrupt ``registry.json`` nor both
become champion. Readers need no lock: they always see a whole file. The lock requires a local
file system (flock is not reliable on some network file systems).
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from braincls.common.atomic import dir_mode, fsync_path, write_json, write_text
from braincls.common.hashing import sha256_file
from braincls.common.locks import LockTimeout, file_lock
from braincls.common.records import json_safe
from braincls.config import RegistryConfig
from braincls.model.saved import METADATA_FILE, MODEL_FILE
from braincls.registry.card import VERSION_PLACEHOLDER
from braincls.registry.promotion import (
    Comparison,
    PromotionDecision,
    decide_promotion,
    metric_value,
    registered_by_source,
)
from braincls.registry.promotion import now_iso as _now

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STATE_FILE = "registry.json"
DECISIONS_FILE = "decisions.jsonl"
LOCK_FILE = ".lock"
CARD_FILE = "model_card.md"

_VERSION_PATTERN = re.compile(r"^v(\d{4,})$")

VersionStatus = Literal["champion", "challenger", "retired", "rolled_back"]


class RegistryError(RuntimeError):
    """The registry cannot do what was asked (the message says why and what to do)."""


class UnknownVersionError(RegistryError, LookupError):
    """No model version of that name is registered."""


class RegistryLockTimeout(RegistryError, LockTimeout):
    """Another process held the registry's lock for longer than the time limit."""


@dataclass(frozen=True)
class ModelVersion:
    """One registered model version, as recorded in ``registry.json``."""

    version: str
    path: Path
    status: VersionStatus
    registered_at: str
    model_sha256: str
    metrics: dict[str, Any]

    @property
    def model_path(self) -> Path:
        """The saved Keras model."""
        return self.path / MODEL_FILE

    @property
    def metadata_path(self) -> Path:
        """The metadata JSON written at registration."""
        return self.path / METADATA_FILE

    @property
    def card_path(self) -> Path:
        """The model card (markdown)."""
        return self.path / CARD_FILE

    @property
    def is_champion(self) -> bool:
        """Whether this version is the champion now."""
        return self.status == "champion"

    def metadata(self) -> dict[str, Any]:
        """The metadata JSON of this version."""
        return dict(json.loads(self.metadata_path.read_text(encoding="utf-8")))


def _version_number(version: str) -> int:
    match = _VERSION_PATTERN.match(version)
    if match is None:
        raise UnknownVersionError(f"{version!r} is not a version name; versions look like v0001")
    return int(match.group(1))


def _empty_state() -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "next_number": 1,
        "champion": None,
        "champion_history": [],
        "versions": {},
    }


class ModelRegistry:
    """Versions of trained models under ``root`` (``<data root>/models``).

    Nothing is created until the first registration; reading an empty registry is fine. A
    change waits at most ``lock_timeout_seconds`` for another process's change to finish, then
    raises :class:`RegistryLockTimeout`.
    """

    def __init__(self, root: Path, *, lock_timeout_seconds: float = 120.0) -> None:
        self.root = Path(root)
        self.lock_timeout_seconds = lock_timeout_seconds

    # ---------------------------------------------------------------- state and locking

    @property
    def state_path(self) -> Path:
        """``registry.json``."""
        return self.root / STATE_FILE

    @property
    def decisions_path(self) -> Path:
        """``decisions.jsonl``."""
        return self.root / DECISIONS_FILE

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with file_lock(
            self.root / LOCK_FILE,
            timeout_seconds=self.lock_timeout_seconds,
            what=f"the model registry {self.root}",
            error=RegistryLockTimeout,
        ):
            yield

    def _read_state(self) -> dict[str, Any]:
        if not self.state_path.exists():
            return _empty_state()
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise RegistryError(
                f"{self.state_path} is not valid JSON ({error}); restore it from a backup or "
                "rebuild it from the version folders' metadata.json"
            ) from error
        if state.get("schema_version") != SCHEMA_VERSION:
            raise RegistryError(
                f"{self.state_path} has schema version {state.get('schema_version')!r}; this "
                f"braincls reads version {SCHEMA_VERSION}"
            )
        return dict(state)

    def _write_state(self, state: Mapping[str, Any]) -> None:
        write_json(self.state_path, json_safe(state), durable=True)

    def _append_decision(self, decision: PromotionDecision) -> None:
        line = json.dumps(decision.to_dict(), sort_keys=True, allow_nan=False) + "\n"
        with open(self.decisions_path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def _version_from_state(self, state: Mapping[str, Any], version: str) -> ModelVersion:
        record = state["versions"].get(version)
        if record is None:
            known = ", ".join(sorted(state["versions"], key=_version_number)) or "none"
            raise UnknownVersionError(
                f"model version {version!r} is not registered under {self.root} (known: {known})"
            )
        return ModelVersion(
            version=version,
            path=self.root / version,
            status=record["status"],
            registered_at=record["registered_at"],
            model_sha256=record["model_sha256"],
            metrics=dict(record.get("metrics", {})),
        )

    # ---------------------------------------------------------------- reading

    def list(self) -> builtins.list[ModelVersion]:
        """Every registered version, oldest first."""
        state = self._read_state()
        return [
            self._version_from_state(state, version)
            for version in sorted(state["versions"], key=_version_number)
        ]

    def get(self, version: str) -> ModelVersion:
        """The registered ``version``; raises :class:`UnknownVersionError` if there is none."""
        return self._version_from_state(self._read_state(), version)

    def champion(self) -> ModelVersion | None:
        """The current champion, or None before any model passed the floors."""
        state = self._read_state()
        if state["champion"] is None:
            return None
        return self._version_from_state(state, state["champion"])

    def champion_history(self) -> builtins.list[str]:
        """The versions that were champion, in the order they became it (rollbacks removed)."""
        return [str(version) for version in self._read_state()["champion_history"]]

    def decisions(self) -> builtins.list[dict[str, Any]]:
        """Every recorded decision, oldest first."""
        if not self.decisions_path.exists():
            return []
        lines = self.decisions_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    # ---------------------------------------------------------------- writing

    def register(
        self,
        model_file: Path,
        metrics: Mapping[str, Any],
        metadata: Mapping[str, Any],
        card_markdown: str,
        *,
        extra_files: Sequence[Path] = (),
    ) -> ModelVersion:
        """Copy ``model_file`` into a new version folder with its metadata and model card.

        ``extra_files`` (such as the list of training samples beside a trained model) are
        copied into the version folder under their own names.

        A model already registered (same bytes) is not registered again: its version is
        returned. Both that check and the version (``v0001``, ``v0002``, ...) happen under the
        lock, so concurrent registrations of one model give one version, and of different
        models distinct, increasing versions. ``metrics`` are the model's test
        metrics (used by :meth:`promote_if_better`); ``{{version}}`` in ``card_markdown`` is
        replaced by the version. The new version starts as a challenger.
        """
        model_file = Path(model_file)
        if not model_file.is_file():
            raise RegistryError(f"cannot register {model_file}: no such model file")
        self.root.mkdir(parents=True, exist_ok=True)
        # The copy (tens of MB) happens outside the lock; only the rename is serialised.
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.root))
        try:
            shutil.copyfile(model_file, staging / MODEL_FILE)
            fsync_path(staging / MODEL_FILE)
            for extra in extra_files:
                shutil.copyfile(extra, staging / Path(extra).name)
                fsync_path(staging / Path(extra).name)
            model_sha256 = sha256_file(staging / MODEL_FILE)
            with self._locked():
                state = self._read_state()
                for known in sorted(state["versions"], key=_version_number):
                    record = state["versions"][known]
                    if record["model_sha256"] == model_sha256:
                        logger.info("model %s is already registered as %s", model_sha256, known)
                        return self._version_from_state(state, known)
                number = max([state["next_number"], *self._folder_numbers()])
                version = f"v{number:04d}"
                registered_at = _now()
                write_json(
                    staging / METADATA_FILE,
                    json_safe(
                        {
                            **dict(metadata),
                            "version": version,
                            "registered_at": registered_at,
                            "model_file": MODEL_FILE,
                            "model_sha256": model_sha256,
                            "source_model_file": str(model_file),
                            "metrics": dict(metrics),
                        }
                    ),
                    durable=True,
                )
                write_text(
                    staging / CARD_FILE,
                    card_markdown.replace(VERSION_PLACEHOLDER, version),
                    durable=True,
                )
                # mkdtemp made the folder private; a version is as readable as any new folder.
                os.chmod(staging, dir_mode())
                fsync_path(staging)
                os.replace(staging, self.root / version)
                fsync_path(self.root)
                state["versions"][version] = {
                    "status": "challenger",
                    "registered_at": registered_at,
                    "model_sha256": model_sha256,
                    "metrics": json_safe(dict(metrics)),
                }
                state["next_number"] = number + 1
                self._write_state(state)
                logger.info("registered model version %s (sha256 %s)", version, model_sha256)
                return self._version_from_state(state, version)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _folder_numbers(self) -> builtins.list[int]:
        # A version folder renamed into place just before a crash is never reused.
        numbers = []
        for child in self.root.iterdir():
            match = _VERSION_PATTERN.match(child.name)
            if match and child.is_dir():
                numbers.append(int(match.group(1)) + 1)
        return numbers

    def promote_if_better(
        self,
        version: str,
        config: RegistryConfig,
        champion_metrics: Mapping[str, Any] | None = None,
        *,
        compared_champion: str | None = None,
        comparison: Comparison | None = None,
    ) -> PromotionDecision:
        """Make ``version`` champion if :func:`~braincls.registry.promotion.decide_promotion`
        says so; record the decision in ``decisions.jsonl`` and return it.

        ``comparison`` holds the candidate's and the champions' decision metric on the same
        test images (:func:`braincls.registry.stage.compare_on_shared_test` makes it);
        ``champion_metrics`` are the champion's metrics on the candidate's whole test data,
        for callers that have only those (``compared_champion`` names the champion they belong
        to). When neither is given, or they belong to a champion that was replaced meanwhile,
        the champion's registered metrics are used instead and the decision says so.
        """
        with self._locked():
            state = self._read_state()
            candidate = self._version_from_state(state, version)
            champion = state["champion"]
            if champion is not None and champion != version:
                comparison = self._comparison_with(
                    state,
                    candidate,
                    champion,
                    config,
                    champion_metrics,
                    compared_champion,
                    comparison,
                )
            decision = decide_promotion(
                version, candidate.metrics, champion, config, comparison=comparison
            )
            if decision.promoted:
                self._set_champion(state, version)
                self._write_state(state)
            self._append_decision(decision)
        logger.info("promotion decision: %s", decision.summary)
        return decision

    def _comparison_with(
        self,
        state: Mapping[str, Any],
        candidate: ModelVersion,
        champion: str,
        config: RegistryConfig,
        champion_metrics: Mapping[str, Any] | None,
        compared_champion: str | None,
        comparison: Comparison | None,
    ) -> Comparison:
        """The comparison to decide with: the caller's, if it was made against the champion
        that is champion now; else one from the registered metrics (indicative only)."""
        if comparison is not None and comparison.champion == champion:
            return comparison
        metric = config.decision_metric
        compared = comparison.champion if comparison is not None else compared_champion
        if comparison is None and champion_metrics is not None and compared in (None, champion):
            return Comparison(
                champion=champion,
                same_test_data=True,
                candidate_value=metric_value(candidate.metrics, metric),
                champion_value=metric_value(champion_metrics, metric),
                by_source=registered_by_source(candidate.metrics, champion_metrics, metric),
            )
        notes = []
        if comparison is not None or champion_metrics is not None:
            what = (
                "comparison was made against"
                if comparison
                else "supplied champion metrics belong to"
            )
            notes.append(
                f"The {what} {compared}, but the champion is now {champion}; its registered "
                "metrics are used."
            )
        registered = self._version_from_state(state, champion).metrics
        return Comparison(
            champion=champion,
            same_test_data=False,
            candidate_value=metric_value(candidate.metrics, metric),
            champion_value=metric_value(registered, metric),
            notes=notes,
            by_source=registered_by_source(candidate.metrics, registered, metric),
        )

    @staticmethod
    def _set_champion(state: dict[str, Any], version: str) -> None:
        previous = state["champion"]
        if previous is not None:
            state["versions"][previous]["status"] = "retired"
        state["versions"][version]["status"] = "champion"
        state["champion"] = version
        state["champion_history"].append(version)

    def promote(self, version: str, reason: str = "manual promotion") -> PromotionDecision:
        """Make ``version`` champion without checks (a person's decision), and record it."""
        with self._locked():
            state = self._read_state()
            self._version_from_state(state, version)
            before = state["champion"]
            if before == version:
                reasons = [f"{version} is already the champion; nothing changed."]
                promoted = False
            else:
                self._set_champion(state, version)
                self._write_state(state)
                reasons = [f"{reason}: {version} replaces {before or 'no champion'}."]
                promoted = True
            decision = PromotionDecision(
                version=version,
                kind="manual",
                promoted=promoted,
                champion_before=before,
                champion_after=state["champion"],
                reasons=reasons,
                decided_at=_now(),
            )
            self._append_decision(decision)
        return decision

    def rollback(self, reason: str = "manual rollback") -> PromotionDecision:
        """Reinstate the previous champion; the current one is marked ``rolled_back``."""
        with self._locked():
            state = self._read_state()
            history: list[str] = state["champion_history"]
            current = state["champion"]
            if current is None or len(history) < 2:
                raise RegistryError(
                    f"no previous champion to roll back to under {self.root} "
                    f"(champion: {current or 'none'}); use `braincls models promote VERSION`"
                )
            history.pop()
            previous = history[-1]
            state["versions"][current]["status"] = "rolled_back"
            state["versions"][previous]["status"] = "champion"
            state["champion"] = previous
            self._write_state(state)
            decision = PromotionDecision(
                version=current,
                kind="rollback",
                promoted=False,
                champion_before=current,
                champion_after=previous,
                reasons=[f"{reason}: {current} withdrawn, {previous} is champion again."],
                decided_at=_now(),
            )
            self._append_decision(decision)
        return decision
