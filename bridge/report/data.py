"""Gather everything the cohort report needs from one source, as one plain JSON-ready document.

The report renderer (``bridge.report.render``) reads only this document, never the engine, so it can be
built and tested from fixture JSON. This module is the one adapter between the two::

    source ──► load_patients ──┬─► prescreen_json            "prescreen"   (the ``bridge prescreen`` document,
                               │                                           with its ``notScreened`` array)
                               ├─► assessment_json           "assessment"  (the ``bridge assess`` document)
                               ├─► follow-up per patient     "followUp"    {patient: {lastFollowUpDay, deathDay}}
                               ├─► Aalen–Johansen step curve "cir"         {horizonDays, subjects, curve}
                               └─► kinetic points per day    "kineticSeries" {patient: {concept: [[day, value, cmp]]}}

Who is screened (RULES.md §2): ``bridge.evaluate.screened.not_screened`` is applied to every loaded patient
on the report's as-of date. A patient who is not screened is never a result of the pre-screen part: it is
listed in ``prescreen.notScreened`` (``{patient, reason}``) and the funnel counts it as "not screened". The
assessment part keeps a deceased infused patient (a death ends follow-up: swimmer, CIR competing event), but
never lists a patient without a valid Patient resource or a non-human one (``assessable``): it is
``bridge.pipeline.assess_loaded``, the wiring ``bridge assess`` uses.

Conventions: days are calendar days from the patient's day 0 (RULES.md §4); kinetic values are in the
concept's canonical unit and a ``<`` / ``<=`` result (below detection) is written as value 0 with its
comparator kept, exactly as ``bridge.evaluate.kinetics`` counts it. The curve's ``low``/``high`` are the
log(−log) 95 % band of ``stats.cif_at``; the 12- and 24-month points of the curve therefore equal the
``cohort.cir`` figures of the assessment document.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import date

from bridge.config import RuleOptions
from bridge.evaluate.assessment import KINETIC_CONCEPTS, PatientAssessment, cir_subject, death_date
from bridge.evaluate.screened import assessable, not_screened
from bridge.evaluate.stats import DAYS_PER_MONTH, CirSubject, aalen_johansen, cif_at
from bridge.model import Item, PatientFacts, Quantity
from bridge.normalize.mappings import CodeMap
from bridge.pipeline import assess_loaded, load_patients, prescreen_json, screen_run
from bridge.trial import Trial, load_trial

Json = dict[str, object]
_DROPPED = frozenset({"entered-in-error", "cancelled"})


def gather(items: Iterable[Item], options: RuleOptions, cmap: CodeMap, source_name: str = "",
           trial: Trial | None = None) -> Json:
    """The report document for every patient of ``items`` (a source read once)."""
    patients, _ = load_patients(items, cmap)
    return gather_patients(patients, options, cmap, source_name, trial)


def gather_patients(patients: Sequence[PatientFacts], options: RuleOptions, cmap: CodeMap,
                    source_name: str = "", trial: Trial | None = None) -> Json:
    """The report document from already normalized patients, for ``trial`` (None: the shipped default; the
    options should be ``RuleOptions.for_trial(trial, ...)``)."""
    trial = trial or load_trial()
    excluded = {p.ref: ns for p in patients if (ns := not_screened(p, options.as_of)) is not None}
    screened = [p for p in patients if p.ref not in excluded]
    assessment = assess_loaded(patients, options, cmap, trial=trial)  # the same wiring as `bridge assess`
    assessed = assessment.assessments
    run = screen_run(screened, options, cmap, trial=trial)
    facts = {p.ref: p for p in assessment.patients}
    return {
        "study": trial.id, "asOf": options.as_of.isoformat(), "ruleset": trial.ruleset_version, "source": source_name,
        "prescreen": {**prescreen_json(run.screenings, options, trial=trial),
                      "notScreened": [ns.as_json() for ns in excluded.values()]},
        # patients whose evaluation raised (a bug): left out of the report, named by `bridge report` (exit 1)
        "failed": [f.line() for f in [*run.failed, *assessment.failures]],
        "assessment": assessment.as_json(),
        "followUp": {pa.patient: follow_up(pa, facts[pa.patient], options.as_of) for pa in assessed},
        "cir": cir_curve(_subjects(assessed, facts, options), max(options.cir_months)),
        "kineticSeries": {pa.patient: kinetic_series(facts[pa.patient], pa.day0, options.as_of) for pa in assessed},
    }


def _subjects(assessed: Iterable[PatientAssessment], facts: dict[str, PatientFacts],
              options: RuleOptions) -> list[tuple[str, CirSubject]]:
    out = []
    for pa in assessed:
        subject = cir_subject(pa, facts[pa.patient], options)
        if subject is not None:
            out.append((pa.patient, subject))
    return out


def _day(when: date | None, day0: date) -> int | None:
    return None if when is None else (when - day0).days


def follow_up(pa: PatientAssessment, pf: PatientFacts, as_of: date) -> Json:
    """Last follow-up and death as days from day 0 (None when unknown / alive)."""
    return {"lastFollowUpDay": _day(pf.last_activity(as_of), pa.day0), "deathDay": _day(death_date(pf, as_of), pa.day0)}


def kinetic_series(pf: PatientFacts, day0: date, as_of: date) -> dict[str, list[list[object]]]:
    """Per kinetic concept, ``[day, value, comparator]`` from day 0 to as-of, in day order (below LOD = 0)."""
    out: dict[str, list[list[object]]] = {}
    for concept in KINETIC_CONCEPTS:
        points = [_kinetic_point(f.value, (f.when - day0).days) for f in pf.of(concept)
                  if f.when is not None and day0 <= f.when <= as_of and f.status not in _DROPPED]
        usable = sorted((p for p in points if p is not None), key=lambda p: p[0])
        if usable:
            out[concept] = [list(p) for p in usable]
    return out


def _kinetic_point(value: object, day: int) -> tuple[int, float, str | None] | None:
    if not isinstance(value, Quantity) or not math.isfinite(value.value) or value.value < 0:
        return None
    below = value.comparator in ("<", "<=")
    return day, 0.0 if below else value.value, value.comparator


def cir_curve(subjects: Sequence[tuple[str, CirSubject]], months: int) -> Json:
    """The relapse CIF as a step curve with its 95 % band up to ``months`` (the trial's last CIR time point),
    and each subject's time and event."""
    horizon = months * DAYS_PER_MONTH
    curve = aalen_johansen([s for _, s in subjects], horizon)
    steps: list[Json] = []
    for day in (0.0, *curve.times):
        estimate, band = cif_at(curve, day)
        if estimate is None or band is None:
            continue
        k = sum(1 for t in curve.times if t <= day) - 1
        steps.append({"day": day, "estimate": estimate, "low": band[0], "high": band[1],
                      "death": curve.cif_death[k] if k >= 0 else 0.0})
    defined = min(curve.defined_until, horizon) if subjects else 0.0
    return {"horizonDays": horizon, "definedUntilDay": defined, "curve": steps,
            "subjects": [{"patient": p, "days": (s.exit - s.origin).days, "event": s.event} for p, s in subjects]}


__all__ = ["assessable", "cir_curve", "follow_up", "gather", "gather_patients", "kinetic_series"]
