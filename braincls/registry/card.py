"""The model card (markdown) stored with every registered version."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from braincls.common.notices import DEFAULT_LIMITATIONS, INTENDED_USE
from braincls.common.records import json_safe
from braincls.evaluate.metrics import METRIC_LABELS, METRIC_NAMES
from braincls.registry.promotion import metric_value as _metric_value
from braincls.registry.promotion import now_iso as _now

#: Written in a model card before its version is known; the registry replaces it with the
#: allocated version.
VERSION_PLACEHOLDER = "{{version}}"


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
