"""Adverse events over the 12 months from day 0 (RULES.md §5). Pure: facts + options + day 0 in, AEs out.

- **Lab terms** (CTCAE v5.0, ``grading.lab_terms()``): every usable result of the term's concept dated day 0 to
  the as-of date is graded with ``grade_lab``. LLN/ULN come from the result's reference range, else the site
  default (``site_lln`` / ``site_uln``, the site map's ``lln``/``uln``), else ``RuleOptions.default_lln`` /
  ``default_uln``. The baseline (used by the baseline-aware terms) is the latest usable result dated strictly
  before day 0. A result reported with a comparator is graded at its bound (for ``<0.1`` ANC the true grade is
  at least that). Results on day 0 count as on study (the 12-month window starts at day 0, both ends included).
- **CRS and ICANS** (ASTCT 2019): from coded Conditions (``crs`` / ``icans`` concepts, not refuted or entered in
  error, onset or recorded date from day 0 to the as-of date) with the grade in the code; an abatement date
  closes the episode. Only when no such Condition exists for the term is it derived per calendar day from the
  inputs of that day: CRS from the highest temperature (fever ≥ 38.0 °C), the largest vasopressor count, the
  largest oxygen flow and any positive-pressure support; ICANS from the lowest ICE score, the deepest depressed
  consciousness, and any seizure (recorded as present → "rapidly resolving", grade 3), cerebral oedema (present →
  focal, grade 3) or deep motor weakness. After a febrile start, later days of the same episode are graded with
  fever masked (``established``); a day whose inputs grade 0 ends the episode. Impossible input values (an ICE
  score of 12, a negative flow) are skipped, never guessed.
- **Episodes**: ``episodes.merge_episodes`` — consecutive graded results of a term are one AE at the worst grade
  (a grade-0 result ends it); episodes whose onset lies in [day 0, day 0 + ``ae_window_days``] are kept.
- A coded CRS/ICANS without a grade (D89.839, G92.00) that no graded episode of the same term covers (from its
  onset to its resolution; an episode not resolved runs on) is reported as one AE with grade None (all such
  Conditions of the term together; onset at the earliest).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from bridge.config import RuleOptions
from bridge.evaluate import grading as G
from bridge.evaluate.episodes import Episode, GradedPoint, merge_episodes, within_window
from bridge.evaluate.response import quantities
from bridge.model import Diagnosis, Fact, PatientFacts, Quantity

CRS_INPUTS = ("body-temperature", "vasopressors", "oxygen-flow", "positive-pressure")
ICANS_INPUTS = ("ice-score", "consciousness-depressed", "seizure", "cerebral-edema", "motor-weakness")


@dataclass(frozen=True)
class AdverseEvent:
    """One AE episode. ``origin`` is ``lab``, ``coded`` or ``derived``; ``grade`` None = coded without a grade."""

    term: str
    grade: int | None
    onset: date
    evidence: tuple[str, ...]
    grading_system: str
    origin: str
    end: date | None = None
    resolved: date | None = None

    def as_json(self) -> dict[str, object]:
        return {"term": self.term, "grade": self.grade, "onset": self.onset.isoformat(),
                "evidence": list(self.evidence), "gradingSystem": self.grading_system}


# ------------------------------------------------------------------ lab terms
def limits(fact: Fact, concept: str, options: RuleOptions, site_lln: Mapping[str, float],
           site_uln: Mapping[str, float]) -> tuple[float | None, float | None]:
    """(LLN, ULN): the result's reference range, else the site default, else the configured default."""
    lln = fact.ref_low.value if fact.ref_low is not None else site_lln.get(concept, options.default_lln.get(concept))
    uln = fact.ref_high.value if fact.ref_high is not None else site_uln.get(concept,
                                                                               options.default_uln.get(concept))
    return lln, uln


def lab_baseline(pf: PatientFacts, concept: str, day0: date) -> float | None:
    """The latest usable value of a concept dated strictly before day 0."""
    before = [f for f in quantities(pf.of(concept), None, day0) if f.when is not None and f.when < day0]
    last = max(before, key=lambda f: (f.when, f.source), default=None)
    return last.value.value if last is not None and isinstance(last.value, Quantity) else None


def lab_points(pf: PatientFacts, day0: date, options: RuleOptions, site_lln: Mapping[str, float],
               site_uln: Mapping[str, float]) -> list[GradedPoint]:
    """Every on-study result of every CTCAE lab term, graded (0 = no AE, None = ungradable)."""
    points = []
    for term in G.lab_terms():
        baseline = lab_baseline(pf, term.concept, day0)
        for fact in quantities(pf.of(term.concept), day0, options.as_of):
            if not isinstance(fact.value, Quantity) or fact.when is None:
                continue
            lln, uln = limits(fact, term.concept, options, site_lln, site_uln)
            grade = G.grade_lab(term.term, fact.value.value, lln, uln, baseline)
            points.append(GradedPoint(term.term, fact.when, grade, fact.source))
    return points


# ------------------------------------------------------------------ coded CRS / ICANS
def coded(pf: PatientFacts, concept: str, day0: date, as_of: date) -> list[Diagnosis]:
    """Valid coded Conditions of a syndrome dated from day 0 to the as-of date."""
    return sorted((d for d in pf.diagnosed(concept) if d.is_valid and d.when is not None and day0 <= d.when <= as_of),
                  key=lambda d: (d.when or day0, d.source))


def coded_points(term: str, conditions: Iterable[Diagnosis], as_of: date) -> list[GradedPoint]:
    points = []
    for d in conditions:
        if d.when is not None and d.grade is not None:
            points.append(GradedPoint(term, d.when, d.grade, d.source))
            if d.abatement is not None and d.when <= d.abatement <= as_of:
                points.append(GradedPoint(term, d.abatement, 0, d.source))
    return points


def _ungraded(term: str, conditions: Iterable[Diagnosis], episodes: Iterable[Episode]) -> AdverseEvent | None:
    spans = [(e.onset, e.resolved or date.max) for e in episodes if e.term == term]  # open: runs on
    loose = [d for d in conditions if d.grade is None and d.when is not None
             and not any(lo <= d.when <= hi for lo, hi in spans)]
    if not loose:
        return None
    return AdverseEvent(term, None, min(d.when or date.max for d in loose),
                        tuple(dict.fromkeys(d.source for d in loose)), G.GRADING_SYSTEM[term], "coded")


# ------------------------------------------------------------------ derived CRS / ICANS
def by_day(pf: PatientFacts, concepts: Iterable[str], day0: date, as_of: date) -> dict[date, list[Fact]]:
    """The facts of the concepts dated day 0 to as-of, grouped by calendar day."""
    days: dict[date, list[Fact]] = {}
    for concept in concepts:
        for f in pf.of(concept):
            if f.when is not None and day0 <= f.when <= as_of and f.status not in ("entered-in-error", "cancelled"):
                days.setdefault(f.when, []).append(f)
    return dict(sorted(days.items()))


def _numbers(facts: Iterable[Fact], concept: str, ok: Callable[[float], bool]) -> list[float]:
    out: list[float] = []
    for f in facts:
        if f.concept != concept or f.value is None or isinstance(f.value, bool):
            continue
        x = float(f.value.value if isinstance(f.value, Quantity) else f.value)
        if math.isfinite(x) and ok(x):
            out.append(x)
    return out


def _flag(facts: Iterable[Fact], concept: str) -> bool | None:
    values = [f.value for f in facts if f.concept == concept and isinstance(f.value, bool)]
    return True if True in values else (False if values else None)


def crs_grade(facts: list[Fact], established: bool) -> int | None:
    """The ASTCT CRS grade of one day's inputs."""
    temps = _numbers(facts, "body-temperature", lambda x: 25.0 <= x <= 45.0)
    pressors = _numbers(facts, "vasopressors", lambda x: x >= 0 and x.is_integer())
    flows = _numbers(facts, "oxygen-flow", lambda x: x >= 0)
    fever = G.fever_from_temperature(max(temps)) if temps else None
    hypotension = G.hypotension_from_vasopressors(None, int(max(pressors)) if pressors else None)
    hypoxia = G.hypoxia_from_oxygen(max(flows) if flows else None, _flag(facts, "positive-pressure"))
    return G.grade_crs(fever, hypotension, hypoxia, established=established)


def icans_grade(facts: list[Fact]) -> int | None:
    """The ASTCT ICANS grade of one day's inputs (None when nothing was assessed)."""
    ice = _numbers(facts, "ice-score", lambda x: 0 <= x <= 10 and x.is_integer())
    conscious = _numbers(facts, "consciousness-depressed", lambda x: x in G.CONSCIOUSNESS_CODES)
    seizure, edema = _flag(facts, "seizure"), _flag(facts, "cerebral-edema")
    return G.grade_icans(
        ice_score=int(min(ice)) if ice else None,
        consciousness=int(max(conscious)) if conscious else None,
        seizure=None if seizure is None else ("rapidly-resolving" if seizure else "none"),
        motor_weakness=_flag(facts, "motor-weakness"),
        cerebral_edema=None if edema is None else ("focal" if edema else "none"),
    )


def derived_points(term: str, days: Mapping[date, list[Fact]]) -> list[GradedPoint]:
    """One graded point per source per day; CRS fever counts as masked after a febrile start (``established``)."""
    points: list[GradedPoint] = []
    established = False
    for when, facts in days.items():
        grade = crs_grade(facts, established) if term == G.CRS_TERM else icans_grade(facts)
        if grade is None:
            continue
        established = grade > 0
        points += [GradedPoint(term, when, grade, src) for src in dict.fromkeys(f.source for f in facts)]
    return points


def _syndrome(pf: PatientFacts, concept: str, day0: date, o: RuleOptions) -> tuple[list[GradedPoint], str,
                                                                                   list[Diagnosis]]:
    term = G.SYNDROME_TERM[concept]
    found = coded(pf, concept, day0, o.as_of)
    if found:
        return coded_points(term, found, o.as_of), "coded", found
    inputs = CRS_INPUTS if concept == "crs" else ICANS_INPUTS
    return derived_points(term, by_day(pf, inputs, day0, o.as_of)), "derived", []


# ------------------------------------------------------------------ all together
def _events(episodes: Iterable[Episode], origin: Mapping[str, str]) -> list[AdverseEvent]:
    return [AdverseEvent(e.term, e.worst_grade, e.onset, e.evidence, G.GRADING_SYSTEM[e.term],
                         origin.get(e.term, "lab"), e.end, e.resolved) for e in episodes]


def adverse_events(pf: PatientFacts, day0: date, options: RuleOptions, site_lln: Mapping[str, float] | None = None,
                   site_uln: Mapping[str, float] | None = None) -> list[AdverseEvent]:
    """Every AE episode with onset in the window from day 0, sorted by onset then term."""
    points = lab_points(pf, day0, options, site_lln or {}, site_uln or {})
    origin: dict[str, str] = {}
    conditions: dict[str, list[Diagnosis]] = {}
    for concept in ("crs", "icans"):
        found, how, dxs = _syndrome(pf, concept, day0, options)
        points += found
        origin[G.SYNDROME_TERM[concept]] = how
        conditions[G.SYNDROME_TERM[concept]] = dxs
    episodes = within_window(merge_episodes(points), day0, options.ae_window_days)
    events = _events(episodes, origin)
    events += [e for term, dxs in conditions.items() if (e := _ungraded(term, dxs, episodes)) is not None
               and (e.onset - day0).days <= options.ae_window_days]
    return sorted(events, key=lambda e: (e.onset, e.term, e.evidence))


__all__ = ["CRS_INPUTS", "ICANS_INPUTS", "AdverseEvent", "adverse_events", "by_day", "coded", "coded_points",
           "crs_grade", "derived_points", "icans_grade", "lab_baseline", "lab_points", "limits"]
