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
import fcntl
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from braincls.common.atomic import write_json, write_text
from braincls.config import RegistryConfig
from braincls.common.hashing import sha256_file
from braincls.evaluate.metrics import METRIC_LABELS, METRIC_NAMES
from braincls.evaluate.report import DEFAULT_LIMITATIONS, INTENDED_USE, json_safe

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STATE_FILE = "registry.json"
DECISIONS_FILE = "decisions.jsonl"
LOCK_FILE = ".lock"
MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
CARD_FILE = "model_card.md"
#: Written in a model card before its version is known; :meth:`ModelRegistry.register`
#: replaces it with the allocated version.
VERSION_PLACEHOLDER = "{{version}}"

_VERSION_PATTERN = re.compile(r"^v(\d{4,})$")

VersionStatus = Literal["champion", "challenger", "retired", "rolled_back"]
DecisionKind = Literal["automatic", "manual", "rollback"]


class RegistryError(RuntimeError):
    """The registry cannot do what was asked (the message says why and what to do)."""


class UnknownVersionError(RegistryError, LookupError):
    """No model version of that name is registered."""


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


@dataclass(frozen=True)
class FloorCheck:
    """One promotion floor: the candidate's value of ``metric`` against ``floor``."""

    metric: str
    value: float | None
    floor: float
    passed: bool


@dataclass(frozen=True)
class PromotionDecision:
    """What happened to ``version`` and why. ``reasons`` are full sentences for people."""

    version: str
    kind: DecisionKind
    promoted: bool
    champion_before: str | None
    champion_after: str | None
    reasons: list[str]
    decided_at: str
    decision_metric: str | None = None
    candidate_value: float | None = None
    champion_value: float | None = None
    margin: float | None = None
    same_test_data: bool | None = None
    floors: list[FloorCheck] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN as null)."""
        return dict(json_safe(asdict(self)))

    @property
    def summary(self) -> str:
        """One line: outcome and the first reason."""
        outcome = "promoted to champion" if self.promoted else "not promoted"
        if self.kind == "rollback":
            outcome = f"rolled back; champion is now {self.champion_after}"
        first = self.reasons[0] if self.reasons else ""
        return f"{self.version}: {outcome}. {first}".strip()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _version_number(version: str) -> int:
    match = _VERSION_PATTERN.match(version)
    if match is None:
        raise UnknownVersionError(f"{version!r} is not a version name; versions look like v0001")
    return int(match.group(1))


def _metric_value(metrics: Mapping[str, Any], name: str) -> float | None:
    value = metrics.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


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

    Nothing is created until the first registration; reading an empty registry is fine.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

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
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

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
        write_json(self.state_path, json_safe(state))

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
    ) -> ModelVersion:
        """Copy ``model_file`` into a new version folder with its metadata and model card.

        The version (``v0001``, ``v0002``, ...) is allocated under the lock, so concurrent
        registrations get distinct, increasing versions. ``metrics`` are the model's test
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
            model_sha256 = sha256_file(staging / MODEL_FILE)
            with self._locked():
                state = self._read_state()
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
                )
                write_text(staging / CARD_FILE, card_markdown.replace(VERSION_PLACEHOLDER, version))
                os.replace(staging, self.root / version)
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
    ) -> PromotionDecision:
        """Make ``version`` champion if it passes the floors and is non-inferior to the champion.

        ``champion_metrics`` are the current champion's metrics **on the same test data** as
        ``version``'s (the caller evaluates the champion on that data); ``compared_champion``
        names the champion they belong to. When they are missing, or belong to a champion that
        was replaced meanwhile, the champion's registered metrics are used instead and the
        decision says so. The first version passing the floors becomes champion. The decision
        and its reasons are appended to ``decisions.jsonl`` and returned.
        """
        with self._locked():
            state = self._read_state()
            candidate = self._version_from_state(state, version)
            champion = state["champion"]
            floors = [
                self._floor(candidate.metrics, "sensitivity", config.min_sensitivity),
                self._floor(candidate.metrics, "roc_auc", config.min_roc_auc),
            ]
            reasons: list[str] = []
            metric = config.decision_metric
            margin = config.non_inferiority_margin
            candidate_value = _metric_value(candidate.metrics, metric)
            champion_value: float | None = None
            same_test_data: bool | None = None
            promoted = False
            if champion == version:
                reasons.append(f"{version} is already the champion; nothing changed.")
            elif not all(check.passed for check in floors):
                for check in floors:
                    if not check.passed:
                        shown = "missing" if check.value is None else f"{check.value:.4f}"
                        reasons.append(
                            f"{METRIC_LABELS[check.metric]} {shown} is below the floor "
                            f"{check.floor:.4f}; {version} stays a challenger."
                        )
            elif champion is None:
                promoted = True
                reasons.append(
                    f"{version} passes the floors ("
                    + ", ".join(
                        f"{METRIC_LABELS[c.metric]} {c.value:.4f} >= {c.floor:.4f}"
                        for c in floors
                        if c.value is not None
                    )
                    + ") and there is no champion yet: it becomes the first champion."
                )
            else:
                champion_record = self._version_from_state(state, champion)
                if champion_metrics is not None and compared_champion in (None, champion):
                    source = champion_metrics
                    same_test_data = True
                else:
                    source = champion_record.metrics
                    same_test_data = False
                    if champion_metrics is not None:
                        reasons.append(
                            f"The supplied champion metrics belong to {compared_champion}, but "
                            f"the champion is now {champion}; its registered metrics are used."
                        )
                    else:
                        reasons.append(
                            f"The champion {champion} was not evaluated on {version}'s test "
                            "data; its registered metrics (from its own test data) are used, "
                            "so the comparison is indicative only."
                        )
                champion_value = _metric_value(source, metric)
                label = METRIC_LABELS[metric]
                data = "the same test data" if same_test_data else "their own test data"
                if candidate_value is None:
                    reasons.append(
                        f"{label} of {version} is undefined, so it cannot be compared; "
                        f"{champion} stays champion."
                    )
                elif champion_value is None:
                    promoted = True
                    reasons.append(
                        f"{label} of the champion {champion} is undefined; {version} passes the "
                        f"floors with {label} {candidate_value:.4f} and becomes champion."
                    )
                elif candidate_value >= champion_value - margin:
                    promoted = True
                    reasons.append(
                        f"{label} {candidate_value:.4f} vs champion {champion} "
                        f"{champion_value:.4f} on {data}: not worse by more than the margin "
                        f"{margin:.4f}; {version} becomes champion."
                    )
                else:
                    reasons.append(
                        f"{label} {candidate_value:.4f} vs champion {champion} "
                        f"{champion_value:.4f} on {data}: worse by "
                        f"{champion_value - candidate_value:.4f}, more than the margin "
                        f"{margin:.4f}; {version} stays a challenger."
                    )
            if promoted:
                self._set_champion(state, version)
                self._write_state(state)
            decision = PromotionDecision(
                version=version,
                kind="automatic",
                promoted=promoted,
                champion_before=champion,
                champion_after=state["champion"],
                reasons=reasons,
                decided_at=_now(),
                decision_metric=metric,
                candidate_value=candidate_value,
                champion_value=champion_value,
                margin=margin,
                same_test_data=same_test_data,
                floors=floors,
            )
            self._append_decision(decision)
        logger.info("promotion decision: %s", decision.summary)
        return decision

    @staticmethod
    def _floor(metrics: Mapping[str, Any], name: str, floor: float) -> FloorCheck:
        value = _metric_value(metrics, name)
        return FloorCheck(
            metric=name, value=value, floor=floor, passed=value is not None and value >= floor
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


def model_card_markdown(
    *,
    model_name: str,
    training_data: str,
    data_hash: str,
    split_strategy: str,
    config: Mapping[str, Any],
    code_version: str,
    metrics: Mapping[str, Any],
    intervals: Mapping[str, Sequence[float]] | None = None,
    evaluated_on: str = "test split",
    threshold: float | None = None,
    threshold_rule: str | None = None,
    confidence_level: float = 0.95,
    version: str = VERSION_PLACEHOLDER,
    limitations: Sequence[str] = DEFAULT_LIMITATIONS,
    created_at: str | None = None,
) -> str:
    """The model card (markdown) stored with every version.

    Sections: intended use, training data (with its manifest hash and split), configuration,
    code version, metrics with intervals (stating the data they come from), limitations. The
    default ``version`` is a placeholder that :meth:`ModelRegistry.register` fills in.
    """
    intervals = intervals or {}
    percent = round(confidence_level * 100)
    lines = [
        f"# Model card: {model_name} {version}",
        "",
        f"Created {created_at or _now()}.",
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "Binary classification of single 2-D brain MR slices (tumor / no tumor) for research "
        "on data pipelines and model evaluation.",
        "",
        "## Training data",
        "",
        f"- Data: {training_data}",
        f"- Data manifest hash (SHA-256): `{data_hash}`",
        f"- Split: {split_strategy}",
        "",
        "## Configuration",
        "",
        "```json",
        json.dumps(json_safe(dict(config)), indent=2, sort_keys=True),
        "```",
        "",
        "## Code version",
        "",
        f"`{code_version}`",
        "",
        "## Metrics",
        "",
        f"On the {evaluated_on}"
        + (
            f", at threshold {threshold:.4f} chosen by rule '{threshold_rule}' on the "
            "validation split"
            if threshold is not None
            else ""
        )
        + f"; {percent}% bootstrap confidence intervals.",
        "",
        f"| Metric | Value | {percent}% CI |",
        "|---|---|---|",
    ]
    for name in METRIC_NAMES:
        if name not in metrics:
            continue
        value = _metric_value(metrics, name)
        bounds = intervals.get(name)
        shown_interval = "n/a"
        if bounds is not None and len(bounds) == 2:
            low, high = (_metric_value({"x": bound}, "x") for bound in bounds)
            if low is not None and high is not None:
                shown_interval = f"{low:.3f} to {high:.3f}"
        shown_value = "n/a" if value is None else f"{value:.3f}"
        lines.append(f"| {METRIC_LABELS[name]} | {shown_value} | {shown_interval} |")
    lines.extend(["", "## Limitations", ""])
    lines.extend(f"- {item}" for item in limitations)
    return "\n".join(lines) + "\n"
