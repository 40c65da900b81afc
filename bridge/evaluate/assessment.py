"""Post-infusion assessment of one patient and of the cohort (RULES.md §4, §5): the ``bridge assess`` document.

Pure: ``PatientFacts`` + ``RuleOptions`` in, ``PatientAssessment`` / JSON-ready dicts out. The as-of date cuts
all data (each part only looks at what is dated on or before it).

- ``assess_patient`` is None when the patient has no completed infusion of the product on or before the as-of
  date; such patients are left out of the document and of the cohort. Every patient with one is assessed,
  deceased ones included (a death ends follow-up in the CIR; RULES.md §2 "Who is screened" applies to the
  pre-screen, not here). ``assess_patients(..., failures=[])`` keeps going when one patient's assessment raises
  (a bug): that patient is recorded with the exception type and left out, the others are assessed.
- **Kinetics** for ``car-t-copies`` and ``car-t-percent`` (``kinetics.kinetics``), from results dated day 0 to
  the as-of date; a concept without any such result is left out.
- **CIR subject** (``cir_subject``): origin = remission date; exit and event = the relapse date (event
  ``relapse``), else a death on or before the as-of date (``death``; ``deceasedBoolean`` true without a date =
  death at last follow-up), else last follow-up (``censored``; ``pf.last_activity(as_of)``, never before the
  origin). When the relapse is undecidable (``ResponseResult.relapse_unknown_from``: a not-usable result after
  the remission that may have been the relapse), follow-up is censored on that date (unless death came first):
  relapse-free follow-up is known only up to it. With ``relapse_after_transplant_counts`` False, an HSCT
  (``hsct`` Condition dated after day 0) cuts follow-up: an event dated after the transplant is censored at the
  transplant date (at the origin if the transplant came first). The per-patient ``relapseDate`` is reported as
  observed either way.
- **Cohort**: ``infused`` = patients assessed; ORR = best response in {CR, CRi, MLFS, PR} over infused, with the
  exact Clopper–Pearson interval; best-response counts; AEs (events, patients with at least one,
  ``byTermAndGrade`` with grade keys "1".."5", and "unknown" for a coded syndrome without a grade); CIR at the
  trial's time points (``RuleOptions.cir_months``; Aalen–Johansen, ``stats.cir_summary``).
- **Rounding**: every float of the document is rounded to 6 decimals (stable output; the interval 0.025 of
  ORR 1/1 is 0.025, not 0.025000000000000022). Whole cell counts are written as integers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from bridge.config import RuleOptions
from bridge.evaluate.dose import Dose, course
from bridge.evaluate.kinetics import KineticPoint, kinetics
from bridge.evaluate.response import RESPONDERS, RESPONSES, ResponseResult, assess_response
from bridge.evaluate.safety import AdverseEvent, adverse_events
from bridge.evaluate.stats import CirSubject, Event, cir_summary, orr
from bridge.model import Failed, PatientFacts, Quantity
from bridge.trial import Trial, load_trial

KINETIC_CONCEPTS = ("car-t-copies", "car-t-percent")
ROUND_DIGITS = 6


@dataclass(frozen=True)
class PatientAssessment:
    """Everything assessed for one infused patient."""

    patient: str
    dose: Dose
    response: ResponseResult
    adverse_events: tuple[AdverseEvent, ...]
    kinetics: Mapping[str, dict[str, object]]
    transplant: date | None = None

    @property
    def day0(self) -> date:
        return self.dose.day0

    def worst_grade(self, term: str) -> int | None:
        """The worst grade of a term (0 when it never occurred; None when only ungraded events exist)."""
        grades = [e.grade for e in self.adverse_events if e.term == term]
        known = [g for g in grades if g is not None]
        return max(known) if known else (None if grades else 0)

    def as_json(self) -> dict[str, object]:
        d, r = self.dose, self.response
        return {
            "patient": self.patient, "dayZero": d.day0.isoformat(),
            "infusions": [i.as_json() for i in d.infusions], "weightKg": d.weight_kg,
            "cellsPerKg": d.cells_per_kg, "doseWithinProtocol": d.within_protocol, "doseReason": d.reason,
            "baselineMarrowBlasts": r.baseline_marrow_blasts, "assessments": [a.as_json() for a in r.assessments],
            "bestResponse": r.best_response, "remissionDate": _iso(r.remission_date),
            "relapseDate": _iso(r.relapse_date), "adverseEvents": [e.as_json() for e in self.adverse_events],
            "kinetics": dict(self.kinetics),
        }


def _iso(d: date | None) -> str | None:
    return d.isoformat() if d else None


def patient_kinetics(pf: PatientFacts, day0: date, as_of: date) -> dict[str, dict[str, object]]:
    """Cmax, Tmax, AUC 0-28 and persistence per kinetic concept with on-study results."""
    out: dict[str, dict[str, object]] = {}
    for concept in KINETIC_CONCEPTS:
        facts = [f for f in pf.of(concept) if f.when is not None and day0 <= f.when <= as_of
                 and f.status not in ("entered-in-error", "cancelled")]
        if facts:
            out[concept] = kinetics(_point(f.when or day0, day0, f.value, f.source) for f in facts)
    return out


def _point(when: date, day0: date, value: object, source: str) -> KineticPoint:
    usable = isinstance(value, Quantity) and math.isfinite(value.value) and value.value >= 0
    q = value if usable and isinstance(value, Quantity) else None
    return KineticPoint((when - day0).days, q.value if q else None, source, q.comparator if q else None)


def transplant_date(pf: PatientFacts, day0: date, as_of: date) -> date | None:
    """The first HSCT (``hsct`` Condition, not refuted/entered in error) dated after day 0 up to as-of."""
    dates = [d.when for d in pf.diagnosed("hsct") if d.is_valid and d.when is not None and day0 < d.when <= as_of]
    return min(dates, default=None)


def assess_patient(pf: PatientFacts, options: RuleOptions, site_uln: Mapping[str, float] | None = None,
                   site_lln: Mapping[str, float] | None = None) -> PatientAssessment | None:
    """Dose, response, AEs and kinetics of one patient; None when no completed infusion on or before as-of."""
    dose = course(pf, options)
    if dose is None:
        return None
    day0 = dose.day0
    return PatientAssessment(
        pf.ref, dose, assess_response(pf, day0, options),
        tuple(adverse_events(pf, day0, options, site_lln=site_lln, site_uln=site_uln)),
        patient_kinetics(pf, day0, options.as_of), transplant_date(pf, day0, options.as_of))


def assess_patients(patients: Iterable[PatientFacts], options: RuleOptions,
                    site_uln: Mapping[str, float] | None = None,
                    site_lln: Mapping[str, float] | None = None,
                    failures: list[Failed] | None = None) -> list[PatientAssessment]:
    """The assessments of every infused patient, in input order.

    With ``failures`` given, a patient whose assessment raises is recorded there (reference and exception type)
    and the others are still assessed; without it the exception propagates.
    """
    out: list[PatientAssessment] = []
    for p in patients:
        try:
            found = assess_patient(p, options, site_uln, site_lln)
        except Exception as exc:  # one patient's bug must not lose the others (issue #12)
            if failures is None:
                raise
            failures.append(Failed(p.ref, type(exc).__name__, "assessment"))
            continue
        if found is not None:
            out.append(found)
    return out


# ------------------------------------------------------------------ CIR
def death_date(pf: PatientFacts, as_of: date) -> date | None:
    """The death date as of ``as_of``: deceasedDateTime, or last follow-up for deceased without a date."""
    if pf.deceased_date is not None:
        return pf.deceased_date if pf.deceased_date <= as_of else None
    return pf.last_activity(as_of) if pf.deceased else None


def _first_exit(pa: PatientAssessment, pf: PatientFacts, origin: date, as_of: date) -> tuple[date, Event]:
    relapse, death = pa.response.relapse_date, death_date(pf, as_of)
    unknown = pa.response.relapse_unknown_from
    if relapse is not None and (death is None or relapse <= death):
        return relapse, "relapse"
    if unknown is not None and (death is None or unknown <= death):
        return max(unknown, origin), "censored"  # relapse-free follow-up is known only up to then
    if death is not None:
        return max(death, origin), "death"
    return max(pf.last_activity(as_of) or origin, origin), "censored"


def cir_subject(pa: PatientAssessment, pf: PatientFacts, options: RuleOptions) -> CirSubject | None:
    """The patient in the CIR (None without a remission); see the module docstring for the transplant option."""
    origin = pa.response.remission_date
    if origin is None:
        return None
    exit_date, event = _first_exit(pa, pf, origin, options.as_of)
    hsct = pa.transplant
    if not options.relapse_after_transplant_counts and hsct is not None and exit_date > hsct:
        return CirSubject(origin, max(hsct, origin), "censored")
    return CirSubject(origin, exit_date, event)


# ------------------------------------------------------------------ cohort
def _ae_block(assessments: Sequence[PatientAssessment]) -> dict[str, object]:
    by: dict[str, dict[str, int]] = {}
    for pa in assessments:
        for e in pa.adverse_events:
            grades = by.setdefault(e.term, {})
            key = "unknown" if e.grade is None else str(e.grade)
            grades[key] = grades.get(key, 0) + 1
    ordered = {t: dict(sorted(g.items())) for t, g in sorted(by.items())}
    return {"events": sum(len(pa.adverse_events) for pa in assessments),
            "patients": sum(1 for pa in assessments if pa.adverse_events), "byTermAndGrade": ordered}


def cohort(assessments: Sequence[PatientAssessment], patients: Iterable[PatientFacts],
           options: RuleOptions) -> dict[str, Any]:
    """The cohort block: infused, ORR with its exact interval, best responses, AE counts, CIR at the trial's
    time points."""
    facts = {p.ref: p for p in patients}
    best = {r: sum(1 for pa in assessments if pa.response.best_response == r) for r in RESPONSES}
    responders = sum(1 for pa in assessments if pa.response.best_response in RESPONDERS)
    subjects = [s for pa in assessments if pa.patient in facts
                and (s := cir_subject(pa, facts[pa.patient], options)) is not None]
    return {"infused": len(assessments), "orr": orr(responders, len(assessments)), "bestResponse": best,
            "adverseEvents": _ae_block(assessments), "cir": cir_summary(subjects, options.cir_months)}


def rounded(doc: Any, digits: int = ROUND_DIGITS) -> Any:
    """The document with every float rounded (dicts, lists and tuples walked; other values kept)."""
    if isinstance(doc, float):
        return round(doc, digits) if math.isfinite(doc) else doc
    if isinstance(doc, dict):
        return {k: rounded(v, digits) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [rounded(v, digits) for v in doc]
    return doc


def assessment_json(assessments: Sequence[PatientAssessment], patients: Iterable[PatientFacts],
                    options: RuleOptions, trial: Trial | None = None) -> dict[str, Any]:
    """The ``bridge assess --format json`` document (issue #5 contract); ``study`` is the trial's id."""
    doc = {"study": (trial or load_trial()).id, "asOf": options.as_of.isoformat(), "comparators": options.comparators,
           "patients": [pa.as_json() for pa in assessments], "cohort": cohort(assessments, patients, options)}
    return dict(rounded(doc))


__all__ = ["KINETIC_CONCEPTS", "PatientAssessment", "assess_patient", "assess_patients",
           "assessment_json", "cir_subject", "cohort", "death_date", "patient_kinetics", "rounded",
           "transplant_date"]
