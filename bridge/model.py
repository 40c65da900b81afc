"""The domain model in the middle: typed facts about one patient, free of FHIR classes.

Normalize builds these from FHIR JSON; evaluate reads only these. Every fact names the resource it came
from (``source``, e.g. ``"Observation/abc"``) so verdicts can cite evidence.

The source items (``Entry``, ``Skipped``, ``NonClinical``: what a reader yields and normalize consumes) live
here too, so normalize depends on the model and not on ingest; ``bridge.ingest.readers`` re-exports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

Tri = Literal["met", "not-met", "unknown"]


@dataclass(frozen=True)
class Entry:
    """One FHIR resource (plain JSON) read from a source; ``where`` names the file and entry, never content."""

    resource: dict[str, Any]
    where: str
    full_url: str | None = None


@dataclass(frozen=True)
class Skipped:
    """A source entry that could not be read as a resource: where, why, and the element path when known."""

    where: str
    reason: str
    expression: str | None = None


@dataclass(frozen=True)
class NonClinical:
    """A Bundle entry that is only a ``request`` or a ``response``: read, not clinical data, not a skip."""

    where: str


Item = Entry | Skipped | NonClinical


@dataclass(frozen=True)
class Quantity:
    """A UCUM quantity. ``comparator`` is FHIR's (<, <=, >=, >) when the lab reported a bound."""

    value: float
    unit: str
    comparator: str | None = None


@dataclass(frozen=True)
class PartialDate:
    """A FHIR date that may lack month and day (``1980``, ``1980-04``, ``1980-04-02``)."""

    year: int
    month: int | None = None
    day: int | None = None

    @property
    def is_full(self) -> bool:
        return self.month is not None and self.day is not None

    def earliest(self) -> date:
        return date(self.year, self.month or 1, self.day or 1)

    def latest(self) -> date:
        if self.month is None:
            return date(self.year, 12, 31)
        if self.day is not None:
            return date(self.year, self.month, self.day)
        nxt = date(self.year + (self.month == 12), self.month % 12 + 1, 1)
        return date.fromordinal(nxt.toordinal() - 1)


@dataclass(frozen=True)
class Span:
    """Where a not-usable value may really lie: a quantity between ``low`` and ``high`` (in ``unit``), an integer
    score between them, or (``kind`` bool) positive or negative. Evaluate tries these to decide whether the
    unknown value could change a verdict."""

    kind: Literal["quantity", "score", "bool"]
    low: float = 0.0
    high: float = 0.0
    unit: str = ""


@dataclass(frozen=True)
class Fact:
    """One observed thing about the patient, mapped to a concept.

    ``value`` is a converted ``Quantity`` (in the concept's canonical unit), an ``int`` (scores, classes),
    a ``bool`` (qualitative: positive/negative, finding present/absent), or ``None`` when the value could
    not be used — then ``problem`` says why (an unconvertible unit, outside the concept's plausible range, an
    equivocal or indeterminate qualitative result), without the value itself. A fact without a date
    (``when`` None) is not usable either. RULES.md §3: a not-usable fact is an *unknown* value, never an
    absent one — the rules must give ``unknown`` wherever its value could change the verdict.
    ``ref_problem`` says why the reference range could not be used (then ``ref_high``/``ref_low`` are None
    and the configured default limit applies, with a warning).
    """

    concept: str
    value: Quantity | bool | int | None
    when: date | None
    source: str
    status: str = "final"
    ref_low: Quantity | None = None
    ref_high: Quantity | None = None
    problem: str | None = None
    method: str | None = None
    ref_problem: str | None = None
    span: Span | None = None  # for a not-usable value: where it may lie (set by normalize)

    @property
    def usable(self) -> bool:
        """A value the rules may read: converted, plausible and dated."""
        return self.problem is None and self.value is not None and self.when is not None


@dataclass(frozen=True)
class Diagnosis:
    """A coded Condition mapped to condition concepts (``concepts``) by the ICD/SNOMED tables."""

    concepts: frozenset[str]
    system: str
    code: str
    source: str
    clinical_status: str | None = None
    verification_status: str | None = None
    onset: date | None = None
    recorded: date | None = None
    abatement: date | None = None
    in_relapse: bool = False
    grade: int | None = None

    @property
    def is_current(self) -> bool:
        """Active, recurrence or relapse (or no status), and not refuted / entered-in-error."""
        if self.verification_status in ("refuted", "entered-in-error"):
            return False
        return self.clinical_status in (None, "active", "recurrence", "relapse")

    @property
    def is_valid(self) -> bool:
        return self.verification_status not in ("refuted", "entered-in-error")

    @property
    def when(self) -> date | None:
        return self.onset or self.recorded


@dataclass(frozen=True)
class Infusion:
    """A MedicationAdministration of a mapped product (e.g. ``cd7-car-t-product``)."""

    concept: str
    when: date | None
    status: str
    cells: float | None
    source: str
    problem: str | None = None


@dataclass(frozen=True)
class Stay:
    """An Encounter, reduced to what admission logic needs."""

    source: str
    klass: str | None
    status: str | None
    start: date | None
    end: date | None

    @property
    def is_inpatient(self) -> bool:
        return self.klass in ("IMP", "ACUTE", "NONAC")


@dataclass
class PatientFacts:
    """Everything the rules may look at for one patient."""

    patient_id: str
    has_patient: bool = False  # a valid Patient resource was read (RULES.md §2 "Who is screened")
    animal: bool = False  # the Patient carries the patient-animal extension
    birth_date: PartialDate | None = None
    sex: str | None = None
    deceased: bool = False
    deceased_date: date | None = None
    facts: list[Fact] = field(default_factory=list)
    diagnoses: list[Diagnosis] = field(default_factory=list)
    infusions: list[Infusion] = field(default_factory=list)
    stays: list[Stay] = field(default_factory=list)
    activity: set[date] = field(default_factory=set)

    def last_activity(self, as_of: date) -> date | None:
        """The latest date of any resource of this patient on or before ``as_of`` (last follow-up)."""
        return max((d for d in self.activity if d <= as_of), default=None)

    @property
    def ref(self) -> str:
        return f"Patient/{self.patient_id}"

    def of(self, concept: str) -> list[Fact]:
        return [f for f in self.facts if f.concept == concept]

    def diagnosed(self, concept: str) -> list[Diagnosis]:
        return [d for d in self.diagnoses if concept in d.concepts]


@dataclass(frozen=True)
class NotScreened:
    """A patient the rules are not applied to (RULES.md §2 "Who is screened"); ``reason`` is one of
    ``deceased``, ``non-human``, ``no-patient-resource``."""

    patient: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"patient": self.patient, "reason": self.reason}


@dataclass(frozen=True)
class Failed:
    """A patient whose evaluation or assessment raised an unexpected exception (a bug): ``error`` is the
    exception's type (and where it was raised) — never its message, which may quote a value. The others go on."""

    patient: str
    error: str
    stage: str = "evaluation"  # or "assessment"

    def line(self) -> str:
        return f"{self.patient}: {self.stage} failed ({self.error}); left out of the results — a bug, please report it"


@dataclass(frozen=True)
class Verdict:
    """One criterion's result with its evidence (resource refs) and a one-line reason free of names."""

    criterion: str
    result: Tri
    reason: str
    evidence: tuple[str, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {"result": self.result, "evidence": list(self.evidence), "reason": self.reason}


__all__ = ["Diagnosis", "Entry", "Fact", "Failed", "Infusion", "Item", "NonClinical", "NotScreened", "PartialDate",
           "PatientFacts", "Quantity", "Skipped", "Span", "Stay", "Tri", "Verdict"]
