"""The human texts of a trial's eligibility criteria, as the trial file holds them (``bridge.trial``).

``text`` is the criterion as the registry record publishes it, verbatim, with only the list number removed.
Where the record has an erratum (RULES.md §1) the criterion also carries ``applied``, the text the bridge
actually evaluates by default, and a ``note`` that says why; a ``switchable`` criterion (the organ-function
reading) evaluates the record's text again under ``organ_function_reading: literal``. The ResearchStudy's
enrollment Group publishes these texts (``bridge.publish.study``).
"""

from __future__ import annotations

from typing import Literal

from bridge.trial import Criterion, Trial, load_trial

Kind = Literal["inclusion", "exclusion"]
CriterionText = Criterion  # the former name of a criterion's texts; a trial's Criterion carries them


def criteria(trial: Trial | None = None) -> tuple[Criterion, ...]:
    """The criteria of ``trial`` (default: the shipped one) in the file's order."""
    return (trial or load_trial()).criteria


def criterion(criterion_id: str, trial: Trial | None = None) -> Criterion:
    """The criterion with this id; ``KeyError`` for an id not in the trial."""
    return (trial or load_trial()).criterion(criterion_id)


__all__ = ["CriterionText", "Kind", "criteria", "criterion"]
