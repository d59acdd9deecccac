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
class Comparison:
    """How a candidate was compared with the champion: every model's decision metric.

    With ``same_test_data``, every value was measured on the same images: the candidate's test
    split less any image a compared model trained or validated on (``excluded_images``), each
    model at its own fixed threshold; ``earlier_champions`` are former champions scored on
    those images too, so that a run of small losses, each within the margin, cannot add up
    (the candidate is held to the best of them). Without it the champion's value is its
    registered one, from its own test data, and the comparison is indicative only.
    """

    champion: str
    same_test_data: bool
    candidate_value: float | None
    champion_value: float | None
    earlier_champions: dict[str, float | None] = field(default_factory=dict)
    test_images: int | None = None
    excluded_images: int = 0
    notes: list[str] = field(default_factory=list)
    #: The decision metric per source of the compared data: ``{source: {"candidate": value,
    #: "champion": value, "images": n}}``; empty with one source (the pooled value is it).
    by_source: dict[str, dict[str, float | int | None]] = field(default_factory=dict)

    def reference(self) -> tuple[str, float | None]:
        """The value to beat: the best of the champion and the earlier champions (the
        champion's when no value is known)."""
        known = {
            version: value
            for version, value in {
                self.champion: self.champion_value,
                **self.earlier_champions,
            }.items()
            if value is not None
        }
        if not known:
            return self.champion, None
        best = max(known, key=lambda version: (known[version], version == self.champion))
        return best, known[best]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the reference."""
        reference_version, reference_value = self.reference()
        return dict(
            json_safe(
                {
                    **asdict(self),
                    "reference_version": reference_version,
                    "reference_value": reference_value,
                }
            )
        )


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
    reference_version: str | None = None
    reference_value: float | None = None
    comparison: dict[str, Any] | None = None

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


def _data_phrase(comparison: Comparison) -> str:
    if not comparison.same_test_data:
        return "their own test data"
    if comparison.test_images is None:
        return "the same test data"
    left_out = (
        f" ({comparison.excluded_images} left out: a compared model trained or validated on them)"
        if comparison.excluded_images
        else ""
    )
    return f"the same {comparison.test_images} test images{left_out}"


def _comparison_reasons(
    version: str, comparison: Comparison, config: RegistryConfig
) -> tuple[bool, list[str]]:
    label = METRIC_LABELS[config.decision_metric]
    margin = config.non_inferiority_margin
    champion = comparison.champion
    candidate_value = comparison.candidate_value
    reference_version, reference_value = comparison.reference()
    data = _data_phrase(comparison)
    if candidate_value is None:
        return False, [
            f"{label} of {version} on {data} is undefined, so it cannot be compared; "
            f"{champion} stays champion."
        ]
    if reference_value is None:
        return True, [
            f"{label} of the champion {champion} is undefined; {version} passes the floors "
            f"with {label} {candidate_value:.4f} and becomes champion."
        ]
    against = f"champion {champion} {_shown(comparison.champion_value)}"
    if reference_version != champion:
        against += f" and the best earlier champion {reference_version} {reference_value:.4f}"
    if candidate_value >= reference_value - margin:
        best = "" if reference_version == champion else f" than the best ({reference_version})"
        return True, [
            f"{label} {candidate_value:.4f} vs {against} on {data}: not worse{best} by more "
            f"than the margin {margin:.4f}; {version} becomes champion."
        ]
    than = "" if reference_version == champion else f" than {reference_version}"
    return False, [
        f"{label} {candidate_value:.4f} vs {against} on {data}: worse{than} by "
        f"{reference_value - candidate_value:.4f}, more than the margin {margin:.4f}; "
        f"{version} stays a challenger."
    ]


def registered_by_source(
    candidate_metrics: Mapping[str, Any], champion_metrics: Mapping[str, Any], metric: str
) -> dict[str, dict[str, float | int | None]]:
    """Per-source values from two models' registered metrics (their ``by_source`` rows), for
    the sources both were evaluated on; empty unless both name more than one source."""

    def rows(metrics: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
        listed = metrics.get("by_source") or []
        return {str(row.get("source")): row for row in listed if isinstance(row, Mapping)}

    candidate, champion = rows(candidate_metrics), rows(champion_metrics)
    if len(candidate) < 2 or len(champion) < 2:
        return {}
    return {
        source: {
            "candidate": metric_value(candidate[source], metric),
            "champion": metric_value(champion[source], metric),
            "images": metric_value(candidate[source], "n"),
        }
        for source in sorted(set(candidate) & set(champion))
    }


def worse_sources(comparison: Comparison, margin: float) -> list[tuple[str, float, float]]:
    """The sources on which the candidate is worse than the champion by more than ``margin``:
    ``(source, candidate value, champion value)``, in source order. A source with an undefined
    value (one class only) is not judged."""
    out = []
    for source, values in sorted(comparison.by_source.items()):
        candidate, champion = values.get("candidate"), values.get("champion")
        if candidate is None or champion is None:
            continue
        if float(candidate) < float(champion) - margin:
            out.append((source, float(candidate), float(champion)))
    return out


def _source_reasons(version: str, comparison: Comparison, config: RegistryConfig) -> list[str]:
    """Why ``version`` is refused for being worse on a source (empty when it is not)."""
    label = METRIC_LABELS[config.decision_metric]
    margin = config.non_inferiority_margin
    worse = worse_sources(comparison, margin)
    if not worse:
        return []
    listed = "; ".join(
        f"{source} {candidate:.4f} vs {champion:.4f}" for source, candidate, champion in worse
    )
    return [
        f"{label} per source against the champion {comparison.champion}: worse on "
        f"{len(worse)} of {len(comparison.by_source)} sources by more than the margin "
        f"{margin:.4f} ({listed}); a model is promoted only if it holds up on every source, "
        f"so {version} stays a challenger."
    ]


def _shown(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4f}"


def decide_promotion(
    version: str,
    candidate_metrics: Mapping[str, Any],
    champion: str | None,
    config: RegistryConfig,
    *,
    comparison: Comparison | None = None,
    decided_at: str | None = None,
) -> PromotionDecision:
    """Decide whether ``version`` replaces ``champion``.

    The candidate must pass the floors (on its whole test split, ``candidate_metrics``); the
    first version to pass them becomes champion; after that its decision metric must not be
    worse than the reference of ``comparison`` (the best of the champion and the earlier
    champions on the same images) by more than the margin, and on no source of those images
    may it be worse than the champion by more than the margin (``comparison.by_source``).
    Comparing with the best, not just the current champion, keeps the margin from ratcheting
    the metric down version after version. ``comparison`` is needed whenever there is a champion other than ``version``.
    """
    reasons: list[str] = []
    floors = floor_checks(candidate_metrics, config)
    candidate_value = metric_value(candidate_metrics, config.decision_metric)
    champion_value: float | None = None
    compared: bool | None = None
    reference_version: str | None = None
    reference_value: float | None = None
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
        if comparison is None or comparison.champion != champion:
            raise ValueError(
                f"deciding on {version} against the champion {champion} needs a comparison "
                "with that champion"
            )
        compared = comparison.same_test_data
        reasons.extend(comparison.notes)
        if not comparison.same_test_data and not comparison.notes:
            reasons.append(
                f"The champion {champion} was not evaluated on {version}'s test data; its "
                "registered metrics (from its own test data) are used, so the comparison is "
                "indicative only."
            )
        candidate_value = comparison.candidate_value
        champion_value = comparison.champion_value
        reference_version, reference_value = comparison.reference()
        promoted, more = _comparison_reasons(version, comparison, config)
        reasons.extend(more)
        refused = _source_reasons(version, comparison, config) if promoted else []
        if refused:
            promoted = False
            reasons = refused + reasons
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
        reference_version=reference_version,
        reference_value=reference_value,
        comparison=None if comparison is None or compared is None else comparison.to_dict(),
    )
