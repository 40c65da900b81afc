"""The one publication policy for pre-screen results (issue #12 item 8), shared by every path that writes a
ResearchSubject: ``bridge prescreen --publish`` (``bridge.publish.publisher.publish_screenings``) and the
service's re-screen (``bridge.service.rescreen``).

A ResearchSubject is written for a patient when

1. the patient is **screened** (RULES.md §2 "Who is screened": a valid Patient resource, human, alive on the
   as-of date) — a patient who is not screened is never published: nothing is written and a ResearchSubject
   that already exists is left as it is; and
2. the study concerns the patient — its diagnosis criterion ``inc-diagnosis`` is not ``not-met`` (an acute
   leukaemia is recorded) — **or** the patient already has a ResearchSubject, which is then kept up to date
   (e.g. moved to ``ineligible`` when the diagnosis is refuted).

Every other admitted patient is left alone: no trial membership is written into the record of a patient
without an acute leukaemia. ``publishable`` decides one screening; ``select`` splits a batch into what is
published and how many were withheld, by reason (counts only — never a patient id or value).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from bridge.evaluate.eligibility import Screening
from bridge.model import NotScreened

DIAGNOSIS_NOT_MET = "diagnosis-not-met"  # the withheld reason of a screened patient the study does not concern
NOT_SCREENED_REASONS = ("deceased", "non-human", "no-patient-resource")  # RULES.md §2, withheld reasons too

HasSubject = Callable[[str], bool]  # bare patient id -> the patient already has a ResearchSubject


def concerns_the_study(screening: Screening) -> bool:
    """The diagnosis criterion is not ruled out (``met`` or ``unknown``)."""
    return screening.verdict("inc-diagnosis").result != "not-met"


def publishable(screening: Screening, has_subject: HasSubject | None = None) -> bool:
    """Whether the ResearchSubject of this (screened) patient is written. ``has_subject`` is asked only when the
    diagnosis is not met; without it, a patient without the diagnosis is never published."""
    if concerns_the_study(screening):
        return True
    return has_subject is not None and has_subject(screening.patient.removeprefix("Patient/"))


@dataclass(frozen=True)
class Selection:
    """The screenings to publish, in input order, and the number withheld per reason."""

    publish: tuple[Screening, ...]
    withheld: Mapping[str, int] = field(default_factory=dict)

    @property
    def withheld_total(self) -> int:
        return sum(self.withheld.values())

    def withheld_text(self) -> str:
        """``"3 diagnosis-not-met, 1 deceased"`` (counts only), or ``""``."""
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.withheld.items()))


def select(screenings: Iterable[Screening], has_subject: HasSubject | None = None,
           not_screened: Iterable[NotScreened] = ()) -> Selection:
    """Apply the policy to a batch. ``not_screened`` are the patients RULES §2 does not screen: each is counted
    under its reason, and a screening of such a patient (should one be passed) is withheld, never published."""
    excluded = {ns.patient: ns.reason for ns in not_screened}
    withheld: Counter[str] = Counter(excluded.values())
    publish = []
    for s in screenings:
        if s.patient in excluded:
            continue  # already counted under its reason
        if publishable(s, has_subject):
            publish.append(s)
        else:
            withheld[DIAGNOSIS_NOT_MET] += 1
    return Selection(tuple(publish), dict(withheld))


__all__ = ["DIAGNOSIS_NOT_MET", "NOT_SCREENED_REASONS", "HasSubject", "Selection", "concerns_the_study",
           "publishable", "select"]
