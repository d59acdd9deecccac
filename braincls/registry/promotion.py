"""The promotion decision as a pure function: does a candidate replace the champion, and why.

:func:`decide_promotion` reads nothing and writes nothing; the registry calls it under its lock
with the state it read, and records what it returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from braincls.common.records import json_safe
from braincls.config import RegistryConfig
from braincls.evaluate.metrics import METRIC_LABELS

DecisionKind = Literal["automatic", "manual", "rollback"]


def now_iso() -> str:
    """The current UTC time, ISO 8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def metric_value(metrics: Mapping[str, Any], name: str) -> float | None:
    """``metrics[name]`` as a float, or None when missing, not a number or NaN."""
    value = metrics.get(name)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


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


def floor_checks(metrics: Mapping[str, Any], config: RegistryConfig) -> list[FloorCheck]:
    """The candidate's floors: sensitivity and ROC AUC at least the configured minimums."""
    checks = []
    for name, floor in (("sensitivity", config.min_sensitivity), ("roc_auc", config.min_roc_auc)):
        value = metric_value(metrics, name)
        checks.append(FloorCheck(name, value, floor, value is not None and value >= floor))
    return checks


def _failed_floor_reasons(version: str, floors: list[FloorCheck]) -> list[str]:
    reasons = []
    for check in floors:
        if not check.passed:
            shown = "missing" if check.value is None else f"{check.value:.4f}"
            reasons.append(
                f"{METRIC_LABELS[check.metric]} {shown} is below the floor "
                f"{check.floor:.4f}; {version} stays a challenger."
            )
    return reasons


def _comparison_reasons(
    version: str,
    champion: str,
    candidate_value: float | None,
    champion_value: float | None,
    config: RegistryConfig,
    same_test_data: bool,
) -> tuple[bool, list[str]]:
    label = METRIC_LABELS[config.decision_metric]
    margin = config.non_inferiority_margin
    data = "the same test data" if same_test_data else "their own test data"
    if candidate_value is None:
        return False, [
            f"{label} of {version} is undefined, so it cannot be compared; "
            f"{champion} stays champion."
        ]
    if champion_value is None:
        return True, [
            f"{label} of the champion {champion} is undefined; {version} passes the floors "
            f"with {label} {candidate_value:.4f} and becomes champion."
        ]
    if candidate_value >= champion_value - margin:
        return True, [
            f"{label} {candidate_value:.4f} vs champion {champion} {champion_value:.4f} on "
            f"{data}: not worse by more than the margin {margin:.4f}; {version} becomes champion."
        ]
    return False, [
        f"{label} {candidate_value:.4f} vs champion {champion} {champion_value:.4f} on {data}: "
        f"worse by {champion_value - candidate_value:.4f}, more than the margin {margin:.4f}; "
        f"{version} stays a challenger."
    ]


def decide_promotion(
    version: str,
    candidate_metrics: Mapping[str, Any],
    champion: str | None,
    champion_metrics: Mapping[str, Any] | None,
    config: RegistryConfig,
    *,
    same_test_data: bool,
    comparison_note: str | None = None,
    decided_at: str | None = None,
) -> PromotionDecision:
    """Decide whether ``version`` replaces ``champion``.

    The candidate must pass the floors; the first version to pass them becomes champion;
    after that its decision metric must not be worse than the champion's by more than the
    margin. ``champion_metrics`` are the champion's metrics on ``version``'s test data when
    ``same_test_data`` (else its registered ones, and the decision says the comparison is
    indicative only, in ``comparison_note`` when the caller knows better why).
    """
    reasons: list[str] = []
    floors = floor_checks(candidate_metrics, config)
    candidate_value = metric_value(candidate_metrics, config.decision_metric)
    champion_value: float | None = None
    compared: bool | None = None
    promoted = False
    if champion == version:
        reasons.append(f"{version} is already the champion; nothing changed.")
    elif not all(check.passed for check in floors):
        reasons.extend(_failed_floor_reasons(version, floors))
    elif champion is None:
        promoted = True
        passed = ", ".join(
            f"{METRIC_LABELS[c.metric]} {c.value:.4f} >= {c.floor:.4f}"
            for c in floors
            if c.value is not None
        )
        reasons.append(
            f"{version} passes the floors ({passed}) and there is no champion yet: it becomes "
            "the first champion."
        )
    else:
        compared = same_test_data
        if not same_test_data:
            reasons.append(
                comparison_note
                or f"The champion {champion} was not evaluated on {version}'s test data; its "
                "registered metrics (from its own test data) are used, so the comparison is "
                "indicative only."
            )
        champion_value = metric_value(champion_metrics or {}, config.decision_metric)
        promoted, more = _comparison_reasons(
            version, champion, candidate_value, champion_value, config, same_test_data
        )
        reasons.extend(more)
    return PromotionDecision(
        version=version,
        kind="automatic",
        promoted=promoted,
        champion_before=champion,
        champion_after=version if promoted else champion,
        reasons=reasons,
        decided_at=decided_at or now_iso(),
        decision_metric=config.decision_metric,
        candidate_value=candidate_value,
        champion_value=champion_value,
        margin=config.non_inferiority_margin,
        same_test_data=compared,
        floors=floors,
    )
