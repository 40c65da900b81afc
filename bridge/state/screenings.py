"""Screenings for the coordinator page: each patient's latest pre-screen, or why it was not screened.

A patient is in at most one of the two: recording a screening forgets a not-screened mark and marking a patient
not screened (RULES.md §2 "Who is screened": deceased, non-human, no valid Patient resource) deletes its saved
screening, in the same transaction, so the page never lists a patient known not to be screened.

Every saved screening names the trial and the ruleset version it was evaluated under (``trial``,
``ruleset_version``; ``None`` on rows saved before they were recorded). ``save_prescreen`` is what
``bridge prescreen --save`` and the service both call.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bridge.evaluate.eligibility import Screening
    from bridge.model import NotScreened

Json = dict[str, Any]


@dataclass(frozen=True)
class ScreeningRecord:
    patient_id: str
    status: str
    verdicts: list[Json]
    as_of: str
    updated_at: float
    trial: str | None = None
    ruleset_version: str | None = None
    # the screening log (issue #17): when the patient was first screened (kept when a screening is replaced;
    # None on a record not yet saved: the store sets it to updated_at), and age (completed years on the as-of
    # date) and administrative sex at this screening, None when unknown
    first_screened_at: float | None = None
    age: int | None = None
    sex: str | None = None


@dataclass(frozen=True)
class NotScreenedRecord:
    """A patient the pre-screen did not screen (RULES.md §2), with the reason
    (``deceased`` / ``non-human`` / ``no-patient-resource``) and the as-of date it was decided on."""

    patient_id: str
    reason: str
    as_of: str
    updated_at: float


class ScreeningNumbers(Protocol):
    """The screening log's pseudonymous screening numbers (issue #17): the store assigns each patient a number
    the first time one of its screenings is saved — 1, 2, 3 … in the order patients were first screened — and
    keeps it for ever (a patient later not screened, then screened again, keeps its number). The number is
    never derived from the patient id; only the subject identification list maps it back."""

    def screening_numbers(self) -> dict[str, int]:
        """Patient id -> screening number, for every patient ever screened."""
        ...


class Screenings(ScreeningNumbers, Protocol):
    """The latest screening per patient and the patients not screened (and their screening numbers)."""

    def save_screening(self, record: ScreeningRecord) -> None:
        """Record the patient's latest screening (and forget that it was not screened, if it was)."""
        ...

    def screening(self, patient_id: str) -> ScreeningRecord | None: ...

    def screenings(self) -> list[ScreeningRecord]: ...

    def mark_not_screened(self, record: NotScreenedRecord) -> bool:
        """Record that the patient is not screened and delete its saved screening, if any (True when one was
        deleted): the coordinator page no longer lists it."""
        ...

    def not_screened(self) -> list[NotScreenedRecord]: ...

    def record_prescreen(self, screenings: Iterable[ScreeningRecord],
                         not_screened: Iterable[NotScreenedRecord] = ()) -> None:
        """Record a pre-screen run's results in one transaction."""
        ...


def _named(trial: str | None, ruleset_version: str | None) -> tuple[str | None, str | None]:
    """(trial, ruleset version) as given, or the shipped trial's when neither is given."""
    if trial is None and ruleset_version is None:
        from bridge.trial import load_trial  # here: the state layer reads no trial file unless asked to

        shipped = load_trial()
        return shipped.id, shipped.ruleset_version
    return trial, ruleset_version


def screening_record(screening: Screening, as_of: date | str, now: float, trial: str | None = None,
                     ruleset_version: str | None = None) -> ScreeningRecord:
    """The stored form of one screening (bare patient id, verdicts as ``{criterion, result, evidence, reason}``),
    naming the trial id and ruleset version it was evaluated under (neither given: the shipped trial's), with the
    patient's age and sex where the screening carries them (``bridge.pipeline.ScreenedPatient``: what the
    pipeline's ``evaluate_patient`` returns), else None."""
    trial, ruleset_version = _named(trial, ruleset_version)
    verdicts = [{"criterion": v.criterion, **v.as_json()} for v in screening.verdicts]
    age, sex = getattr(screening, "age", None), getattr(screening, "sex", None)
    return ScreeningRecord(screening.patient.removeprefix("Patient/"), screening.status, verdicts, _iso(as_of), now,
                           trial, ruleset_version, age=age if isinstance(age, int) else None,
                           sex=sex if isinstance(sex, str) else None)


def not_screened_record(ns: NotScreened, as_of: date | str, now: float) -> NotScreenedRecord:
    return NotScreenedRecord(ns.patient.removeprefix("Patient/"), ns.reason, _iso(as_of), now)


def _iso(as_of: date | str) -> str:
    return as_of.isoformat() if isinstance(as_of, date) else as_of


def save_prescreen(store: Screenings, screenings: Iterable[Screening], not_screened: Iterable[NotScreened],
                   as_of: date | str, now: float, *, trial: str | None = None,
                   ruleset_version: str | None = None) -> tuple[int, int]:
    """Record a pre-screen run for the coordinator page — what ``bridge prescreen --save`` and the service both
    call: each screening replaces the patient's older one, and each not-screened patient (RULES.md §2) is marked
    so, its older screening deleted, so the page never lists it. ``trial`` / ``ruleset_version`` name what the
    run evaluated (neither given: the shipped trial's). Returns (screenings saved, not screened)."""
    records = [screening_record(s, as_of, now, trial, ruleset_version) for s in screenings]
    excluded = [not_screened_record(ns, as_of, now) for ns in not_screened]
    store.record_prescreen(records, excluded)
    return len(records), len(excluded)


__all__ = [
    "NotScreenedRecord",
    "ScreeningNumbers",
    "ScreeningRecord",
    "Screenings",
    "not_screened_record",
    "save_prescreen",
    "screening_record",
]
