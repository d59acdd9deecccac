"""What every braincls output says about its use: reports, model cards, the service and the page."""

from __future__ import annotations

#: The fixed intended-use statement of every braincls report, model card and prediction.
INTENDED_USE = "Research use only. Not a medical device; not for diagnosis or treatment decisions."

#: Limitations that hold for every braincls model; a report adds run-specific ones.
DEFAULT_LIMITATIONS: tuple[str, ...] = (
    "Trained and tested on 2-D slices; it sees no volume, no patient history and no other "
    "sequence, and its output is not a diagnosis.",
    "Performance was measured on data from the same source(s) as the training data; it is "
    "unknown on other scanners, protocols, institutions or populations until externally "
    "validated (`braincls evaluate`).",
    "A 'no tumor' output does not exclude disease: lesions unlike those in the training data, "
    "small lesions and non-tumor pathology are not covered.",
    "Probabilities are only as calibrated as the reliability diagram shows, on this test split.",
    "Confidence intervals come from a bootstrap of the test split; they reflect sampling "
    "variation of that split only, not a shift to other data.",
)
