"""Builders of domain facts for rule tests (no FHIR): short, explicit, dated relative to AS_OF."""

from __future__ import annotations

from datetime import date, timedelta

from bridge.config import RuleOptions
from bridge.model import Diagnosis, Fact, PartialDate, PatientFacts, Quantity

AS_OF = date(2026, 6, 15)
OPTS = RuleOptions(as_of=AS_OF)
UNITS = {"ast": "U/L", "alt": "U/L", "bilirubin-total": "mg/dL", "lvef": "%", "cd7-blast-percent": "%",
         "hbv-dna": "[IU]/mL", "body-temperature": "Cel", "anc": "10*9/L", "platelets": "10*9/L",
         "marrow-blasts-percent": "%", "blood-blasts-percent": "%", "body-weight": "kg"}
_n = 0


def ago(days: int) -> date:
    return AS_OF - timedelta(days=days)


def _ref(kind: str) -> str:
    global _n
    _n += 1
    return f"{kind}/t{_n}"


def q(concept: str, value: float, days_ago: int = 1, uln: float | None = None, comparator: str | None = None,
      status: str = "final") -> Fact:
    unit = UNITS[concept]
    return Fact(concept, Quantity(value, unit, comparator), ago(days_ago), _ref("Observation"), status,
                ref_high=Quantity(uln, unit) if uln is not None else None)


def score(concept: str, value: int, days_ago: int = 1) -> Fact:
    return Fact(concept, value, ago(days_ago), _ref("Observation"))


def flag(concept: str, value: bool | None, days_ago: int = 1, problem: str | None = None) -> Fact:
    return Fact(concept, value, ago(days_ago), _ref("Observation"), problem=problem)


def dx(*concepts: str, code: str = "X00", days_ago: int | None = 10, clinical: str | None = "active",
       verification: str | None = "confirmed", relapse: bool = False, onset: bool = True) -> Diagnosis:
    when = ago(days_ago) if days_ago is not None else None
    return Diagnosis(frozenset(concepts), "http://hl7.org/fhir/sid/icd-10-cm", code, _ref("Condition"),
                     clinical_status=clinical, verification_status=verification,
                     onset=when if onset else None, recorded=None if onset else when, in_relapse=relapse)


DEFAULT_BIRTH = PartialDate(1990, 1, 1)


def patient(*items: Fact | Diagnosis, born: PartialDate | None = DEFAULT_BIRTH,
            sex: str | None = "female") -> PatientFacts:
    pf = PatientFacts("p1", has_patient=True, birth_date=born, sex=sex)
    for it in items:
        (pf.facts if isinstance(it, Fact) else pf.diagnoses).append(it)  # type: ignore[arg-type]
    return pf
