"""Adverse events over the 12 months from day 0 (RULES.md §5). Pure: facts + options + day 0 in, AEs out.

- **Lab terms** (CTCAE v5.0, ``grading.lab_terms()``): every usable result of the term's concept dated day 0 to
  the as-of date is graded with ``grade_lab``. LLN/ULN come from the result's reference range, else the site
  default (``site_lln`` / ``site_uln``, the site map's ``lln``/``uln``), else ``RuleOptions.default_lln`` /
  ``default_uln``. A reference limit that is not usable (``Fact.ref_problem``: a ``high`` of zero or below,
  unconvertible; or any limit that is not a finite number > 0) is not used: the default applies and the result
  is still graded (normalize reports the warning). A result reported with a comparator is graded at its bound
  (for ``<0.1`` ANC the true grade is at least that). Results on day 0 count as on study (the 12-month window
  starts at day 0, both ends included).
- **Not-usable lab results** (RULES.md §3: implausible, unconvertible, undated) never create, grade, extend, end
  or split an AE: they are left out of grading entirely, so an episode runs from its first to its last usable
  graded result and is resolved by the next usable normal one. (A not-usable value is unknown; taking it as
  "normal" could end an episode, taking it as "abnormal" could create one — neither is known.)
- **Baseline** (baseline-aware terms): the result of the latest date strictly before day 0. No result → no
  baseline (``grading``: the x ULN arms apply). When a result of that date is not usable the baseline is
  *unknown* (never an older one, never "normal"): ``grade_lab(..., baseline_unknown=True)`` gives the grade only
  when every possible baseline gives it, else the point is ungradable (it neither extends nor ends an episode).
- **CRS and ICANS** (ASTCT 2019): coded Conditions (``crs`` / ``icans`` concepts, not refuted or entered in
  error, onset or recorded date from day 0 to the as-of date) carry the grade in the code; an abatement date
  closes the episode. The signs are graded per calendar day from that day's usable inputs: CRS from the highest
  temperature (fever ≥ 38.0 °C), the largest vasopressor count, the largest oxygen flow and any positive-pressure
  support; ICANS from the lowest ICE score, the deepest depressed consciousness, and any seizure (recorded as
  present → "rapidly resolving", grade 3), cerebral oedema (present → focal, grade 3) or deep motor weakness.
  After a febrile start, later days of the same episode are graded with fever masked (``established``); a day
  whose inputs grade 0 ends the episode. Signs that are not usable — not usable facts, or values outside RULES.md
  §3's plausible ranges (temperature 25–46 °C, vasopressors integer 0–10, oxygen flow 0–100 L/min, ICE integer
  0–10, consciousness 0–4) — are left out: they create, grade, extend and end nothing.
- **Which wins**: with no coded Condition of the term, the derived episodes are the AEs (origin ``derived``).
  With coded Conditions, the coded grades are the AEs (origin ``coded``; a coded grade always wins: derived
  signs are not used for a term that has coded Conditions, except as below). A coded Condition **without a
  grade** (D89.839, G92.00) that no graded coded episode covers (from its onset to its resolution; an episode not
  resolved runs on) takes the worst grade of the derived episodes sharing a day with it — its days are its onset
  to its abatement (its onset day alone when not abated), an episode's are its first to its last graded day; a
  derived episode that shares a day with a graded coded episode (onset to resolution; one not resolved runs on)
  is not used. Such a Condition and the derived
  episodes it matches are one AE (origin ``coded+derived``; onset the earliest of them; evidence the Condition(s)
  then the signs). Ungraded Conditions that match no derived episode are reported as one AE with grade None
  (all such Conditions of the term together; onset at the earliest).
- **Episodes**: ``episodes.merge_episodes`` — consecutive graded results of a term are one AE at the worst grade
  (a grade-0 result ends it); AEs whose onset lies in [day 0, day 0 + ``ae_window_days``] are kept.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

from bridge.config import RuleOptions
from bridge.evaluate import grading as G
from bridge.evaluate.episodes import Episode, GradedPoint, merge_episodes
from bridge.evaluate.response import quantities
from bridge.model import Diagnosis, Fact, PatientFacts, Quantity

CRS_INPUTS = ("body-temperature", "vasopressors", "oxygen-flow", "positive-pressure")
ICANS_INPUTS = ("ice-score", "consciousness-depressed", "seizure", "cerebral-edema", "motor-weakness")
_DROPPED = frozenset({"entered-in-error", "cancelled"})


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
def _limit(q: Quantity | None) -> float | None:
    """A reference limit that can be used: a finite number > 0 (else the default applies)."""
    return q.value if q is not None and math.isfinite(q.value) and q.value > 0 else None


def limits(fact: Fact, concept: str, options: RuleOptions, site_lln: Mapping[str, float],
           site_uln: Mapping[str, float]) -> tuple[float | None, float | None]:
    """(LLN, ULN): the result's usable reference range, else the site default, else the configured default."""
    low, high = _limit(fact.ref_low), _limit(fact.ref_high)
    lln = low if low is not None else site_lln.get(concept, options.default_lln.get(concept))
    uln = high if high is not None else site_uln.get(concept, options.default_uln.get(concept))
    return lln, uln


@dataclass(frozen=True)
class Baseline:
    """A lab baseline: ``value`` (None: none or not usable), ``unknown`` when a result exists but is not usable."""

    value: float | None
    unknown: bool = False
    source: str | None = None


def _placeable(f: Fact) -> bool:
    return f.when is not None and f.status not in _DROPPED


def lab_baseline_of(pf: PatientFacts, concept: str, day0: date) -> Baseline:
    """The result of the latest date strictly before day 0; unknown when a result of that date is not usable."""
    before = [f for f in pf.of(concept) if _placeable(f) and f.when is not None and f.when < day0]
    if not before:
        return Baseline(None)
    last = max(f.when or day0 for f in before)
    same = sorted((f for f in before if f.when == last), key=lambda f: f.source, reverse=True)
    bad = next((f for f in same if not _usable_quantity(f)), None)
    if bad is not None:
        return Baseline(None, True, bad.source)
    chosen = same[0]
    return Baseline(chosen.value.value if isinstance(chosen.value, Quantity) else None, False, chosen.source)


def lab_baseline(pf: PatientFacts, concept: str, day0: date) -> float | None:
    """The baseline value of a concept (None when there is none or it is not usable)."""
    return lab_baseline_of(pf, concept, day0).value


def _usable_quantity(f: Fact) -> bool:
    return f.usable and isinstance(f.value, Quantity) and math.isfinite(f.value.value)


def lab_points(pf: PatientFacts, day0: date, options: RuleOptions, site_lln: Mapping[str, float],
               site_uln: Mapping[str, float]) -> list[GradedPoint]:
    """Every usable on-study result of every CTCAE lab term, graded (0 = no AE, None = ungradable)."""
    points = []
    for term in G.lab_terms():
        baseline = lab_baseline_of(pf, term.concept, day0)
        for fact in quantities(pf.of(term.concept), day0, options.as_of):
            if not _usable_quantity(fact) or not isinstance(fact.value, Quantity) or fact.when is None:
                continue
            lln, uln = limits(fact, term.concept, options, site_lln, site_uln)
            grade = G.grade_lab(term.term, fact.value.value, lln, uln, baseline.value,
                                baseline_unknown=baseline.unknown)
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


def _covered(d: Diagnosis, episodes: Iterable[Episode]) -> bool:
    """Is the Condition dated inside an episode (onset to resolution; one not resolved runs on)?"""
    return d.when is not None and any(e.onset <= d.when <= (e.resolved or date.max) for e in episodes)


def _days(d: Diagnosis) -> tuple[date, date]:
    """A Condition's days: onset to abatement, or its onset day alone."""
    start = d.when or date.min
    end = d.abatement if d.abatement is not None and d.abatement >= start else start
    return start, end


def _shares_day(lo: date, hi: date, e: Episode) -> bool:
    return e.onset <= hi and e.end >= lo


# ------------------------------------------------------------------ derived CRS / ICANS
#: The plausible range of each sign (RULES.md §3); a value outside it is not usable.
SIGN_RANGES: Mapping[str, tuple[float, float, bool]] = {
    "body-temperature": (25.0, 46.0, False),
    "vasopressors": (0.0, 10.0, True),
    "oxygen-flow": (0.0, 100.0, False),
    "ice-score": (0.0, 10.0, True),
    "consciousness-depressed": (0.0, 4.0, True),
}


def usable_sign(f: Fact) -> bool:
    """A sign the grading may read: usable, and a number inside its plausible range (booleans for findings)."""
    if not f.usable or f.status in _DROPPED:
        return False
    if isinstance(f.value, bool):
        return True
    x = f.value.value if isinstance(f.value, Quantity) else float(f.value) if isinstance(f.value, int) else None
    if x is None or not math.isfinite(x):
        return False
    low, high, integer = SIGN_RANGES.get(f.concept, (-math.inf, math.inf, False))
    return low <= x <= high and (not integer or float(x).is_integer())


def by_day(pf: PatientFacts, concepts: Iterable[str], day0: date, as_of: date) -> dict[date, list[Fact]]:
    """The usable signs of the concepts dated day 0 to as-of, grouped by calendar day."""
    days: dict[date, list[Fact]] = {}
    for concept in concepts:
        for f in pf.of(concept):
            if f.when is not None and day0 <= f.when <= as_of and usable_sign(f):
                days.setdefault(f.when, []).append(f)
    return dict(sorted(days.items()))


def _numbers(facts: Iterable[Fact], concept: str) -> list[float]:
    out: list[float] = []
    for f in facts:
        if f.concept != concept or f.value is None or isinstance(f.value, bool) or not usable_sign(f):
            continue
        out.append(float(f.value.value if isinstance(f.value, Quantity) else f.value))
    return out


def _flag(facts: Iterable[Fact], concept: str) -> bool | None:
    values = [f.value for f in facts if f.concept == concept and isinstance(f.value, bool) and usable_sign(f)]
    return True if True in values else (False if values else None)


def crs_grade(facts: list[Fact], established: bool) -> int | None:
    """The ASTCT CRS grade of one day's usable inputs."""
    temps = _numbers(facts, "body-temperature")
    pressors = _numbers(facts, "vasopressors")
    flows = _numbers(facts, "oxygen-flow")
    fever = G.fever_from_temperature(max(temps)) if temps else None
    hypotension = G.hypotension_from_vasopressors(None, int(max(pressors)) if pressors else None)
    hypoxia = G.hypoxia_from_oxygen(max(flows) if flows else None, _flag(facts, "positive-pressure"))
    return G.grade_crs(fever, hypotension, hypoxia, established=established)


def icans_grade(facts: list[Fact]) -> int | None:
    """The ASTCT ICANS grade of one day's usable inputs (None when nothing was assessed)."""
    ice = _numbers(facts, "ice-score")
    conscious = _numbers(facts, "consciousness-depressed")
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


def _event(e: Episode, origin: str) -> AdverseEvent:
    return AdverseEvent(e.term, e.worst_grade, e.onset, e.evidence, G.GRADING_SYSTEM[e.term], origin, e.end,
                        e.resolved)


def _matched(term: str, dxs: list[Diagnosis], eps: list[Episode]) -> AdverseEvent:
    """Ungraded coded Condition(s) with the derived episodes sharing their days: one AE at the derived grade."""
    onset = min([d.when or date.max for d in dxs] + [e.onset for e in eps])
    evidence = tuple(dict.fromkeys([d.source for d in dxs] + [s for e in eps for s in e.evidence]))
    resolved = [e.resolved for e in eps]
    return AdverseEvent(term, max(e.worst_grade for e in eps), onset, evidence, G.GRADING_SYSTEM[term],
                        "coded+derived", max(e.end for e in eps),
                        None if None in resolved else max(r for r in resolved if r is not None))


def _group(loose: list[Diagnosis], derived: list[Episode]) -> tuple[list[tuple[list[Diagnosis], list[Episode]]],
                                                                      list[Diagnosis]]:
    """Ungraded Conditions grouped with the derived episodes sharing their days (one group per connected set),
    and the Conditions that match none."""
    groups: list[tuple[list[Diagnosis], set[int]]] = []
    unmatched: list[Diagnosis] = []
    for d in loose:
        lo, hi = _days(d)
        hits = {i for i, e in enumerate(derived) if _shares_day(lo, hi, e)}
        if not hits:
            unmatched.append(d)
            continue
        joined = [g for g in groups if g[1] & hits]
        merged = ([x for g in joined for x in g[0]] + [d], hits.union(*(g[1] for g in joined)))
        groups = [g for g in groups if not g[1] & hits] + [merged]
    return [(dxs, [derived[i] for i in sorted(idx)]) for dxs, idx in groups], unmatched


def syndrome_events(pf: PatientFacts, concept: str, day0: date, o: RuleOptions) -> list[AdverseEvent]:
    """The AEs of CRS or ICANS: coded, derived, or a coded Condition without a grade taking the derived grade."""
    term = G.SYNDROME_TERM[concept]
    inputs = CRS_INPUTS if concept == "crs" else ICANS_INPUTS
    derived = merge_episodes(derived_points(term, by_day(pf, inputs, day0, o.as_of)))
    found = coded(pf, concept, day0, o.as_of)
    if not found:
        return [_event(e, "derived") for e in derived]
    coded_eps = merge_episodes(coded_points(term, found, o.as_of))
    events = [_event(e, "coded") for e in coded_eps]
    loose = [d for d in found if d.grade is None and d.when is not None and not _covered(d, coded_eps)]
    free = [e for e in derived if not any(_shares_day(c.onset, c.resolved or date.max, e) for c in coded_eps)]
    groups, unmatched = _group(loose, free)
    events += [_matched(term, dxs, eps) for dxs, eps in groups]
    if unmatched:
        events.append(AdverseEvent(term, None, min(d.when or date.max for d in unmatched),
                                   tuple(dict.fromkeys(d.source for d in unmatched)), G.GRADING_SYSTEM[term],
                                   "coded"))
    return events


# ------------------------------------------------------------------ all together
def adverse_events(pf: PatientFacts, day0: date, options: RuleOptions, site_lln: Mapping[str, float] | None = None,
                   site_uln: Mapping[str, float] | None = None) -> list[AdverseEvent]:
    """Every AE episode with onset in the window from day 0, sorted by onset then term."""
    labs = merge_episodes(lab_points(pf, day0, options, site_lln or {}, site_uln or {}))
    events = [_event(e, "lab") for e in labs]
    for concept in ("crs", "icans"):
        events += syndrome_events(pf, concept, day0, options)
    last = day0 + timedelta(days=options.ae_window_days)
    kept = [e for e in events if day0 <= e.onset <= last]
    return sorted(kept, key=lambda e: (e.onset, e.term, e.evidence))


__all__ = ["CRS_INPUTS", "ICANS_INPUTS", "SIGN_RANGES", "AdverseEvent", "Baseline", "adverse_events", "by_day",
           "coded", "coded_points", "crs_grade", "derived_points", "icans_grade", "lab_baseline", "lab_baseline_of",
           "lab_points", "limits", "syndrome_events", "usable_sign"]
