"""Who is screened (RULES.md §2): the rules apply only to a living human with a valid Patient resource.

Pure: ``PatientFacts`` and the as-of date in, a ``NotScreened`` (with its reason) or ``None`` out. A patient
known only from subject references has no Patient resource; a Patient that failed validation was skipped, so
it counts as absent too. ``deceasedBoolean`` true, or a death date on or before the as-of date, is deceased.
"""

from __future__ import annotations

from datetime import date

from bridge.model import NotScreened, PatientFacts


def not_screened(pf: PatientFacts, as_of: date) -> NotScreened | None:
    """Why ``pf`` is not screened on ``as_of``, or None when the rules apply to it."""
    if not pf.has_patient:
        return NotScreened(pf.ref, "no-patient-resource")
    if pf.animal:
        return NotScreened(pf.ref, "non-human")
    if pf.deceased and (pf.deceased_date is None or pf.deceased_date <= as_of):
        return NotScreened(pf.ref, "deceased")
    return None


def assessable(pf: PatientFacts, as_of: date) -> bool:
    """Whether the post-infusion assessment applies: a screened patient, or one not screened only because
    deceased on the as-of date (a death ends follow-up; it does not undo an infusion)."""
    reason = not_screened(pf, as_of)
    return reason is None or reason.reason == "deceased"


__all__ = ["assessable", "not_screened"]
