"""Response assessment after the CAR-T infusion (RULES.md §4, errata 4 and 5). Pure: facts + options + day 0 in.

Every criterion is three-valued (``met`` / ``not-met`` / ``unknown``), so a missing or bounded value (``<5 %``)
never decides a category it cannot decide. The decisions the record leaves open, made here:

- **Baseline** marrow blasts: the latest usable ``marrow-blasts-percent`` dated strictly before day 0 (dates
  only: a marrow on the infusion day cannot be ordered against the infusion and is neither baseline nor
  assessment).
- **Assessments**: every ``marrow-blasts-percent`` result dated after day 0 up to the as-of date, in date order.
  A result whose value could not be used is an assessment with response ``NE``.
- **Window data** (ANC, platelets, blood blasts, MRD): the result nearest to the marrow date within
  ±``count_window_days``, dated on or after day 0 and on or before the as-of date; on a tie in distance the
  earlier result wins (it was known when the marrow was read), on the same date the stronger status. Blood
  blasts are the nearest of ``blood-blasts-percent`` and ``blood-blasts-count`` together.
- **Auer rods / extramedullary disease** are present only when a positive finding is dated in that window;
  otherwise they are absent by default, and the reason says so.
- **Circulating blasts** are present when the blood blasts are above 0. No blood blast result in the window
  leaves "no circulating blasts" unknown (CR, CRi and PR need positive evidence of it), exactly like a missing
  ANC or platelet result: the assessment then falls back to MLFS when the MLFS criteria hold, else NE.
- **Counts** are recovered when ANC > 1.0 and platelets > 100 ×10⁹/L (``record`` comparators) or ≥ (``eln``);
  a value exactly at a threshold that is not recovered is "below". A missing ANC *or* platelet result makes
  CR, CRi and PR undecidable (in both CRi readings).
- **CRi**: ``operational`` reading — exactly one lineage below; both below → MLFS. ``literal`` — at least one.
- **PR**: the haematological CR criteria (both counts recovered and no circulating blasts; Auer rods and
  extramedullary disease are not haematological criteria), marrow blasts 5–25 % inclusive, and a decrease of
  at least 50 % from the baseline (marrow ≤ baseline ÷ 2). Without a baseline the decrease is unknown.
- **NR** needs every response category decidedly not met: marrow blasts above 25 % are NR even with no counts
  in the window, since no count could make them a response. Any category left undecidable with none met → NE.
- **CRh** (ELN 2022, extra field ``crh``): marrow < 5 %, no circulating blasts, no Auer rods, no
  extramedullary disease, ANC > 0.5 and platelets > 50 (≥ with ``eln`` comparators); reported true only for an
  assessment that is not CR (CRh is the category below CR), None when undecidable. **MRD** (extra field
  ``mrd``): the nearest ``mrd-percent`` result in the window.
- **Relapse** (after the first CR/CRi/MLFS, the remission date): a later marrow with blasts ≥ 5 %, a positive
  extramedullary finding dated after the remission date, or the reappearance of circulating blasts — a blood
  blast result > 0 after the remission date while blasts were absent (absent at remission, where no result
  counts as absent, or a later 0 result after they had been present). Relapse date = the first such result,
  whatever its kind. The assessment on that date becomes ``relapse``; when the first result is a blood or
  extramedullary one with no marrow that day, a ``relapse`` assessment is added for it. Only the first relapse
  is tagged; later marrows keep their own category.
- **Best response** ranks CR > CRi > MLFS > PR > NR > NE over the categories of the marrow assessments (the
  category a relapse assessment had before tagging still counts, but is never better than the remission it
  follows); no post-infusion marrow → NE with no assessments.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta

from bridge.config import RuleOptions
from bridge.evaluate.logic import compare, dated, fmt, show, tri_and
from bridge.model import Fact, PatientFacts, Quantity, Tri

RESPONSES = ("CR", "CRi", "MLFS", "PR", "NR", "NE")
RANK = {r: i for i, r in enumerate(RESPONSES)}
REMISSION = frozenset({"CR", "CRi", "MLFS"})
RESPONDERS = frozenset({"CR", "CRi", "MLFS", "PR"})
RELAPSE = "relapse"

MARROW_CR = 5.0
PR_MAX = 25.0
ANC_CR, PLT_CR = 1.0, 100.0
ANC_CRH, PLT_CRH = 0.5, 50.0
_DROPPED = frozenset({"entered-in-error", "cancelled"})


# ------------------------------------------------------------------ fact selection
def quantities(facts: Iterable[Fact], start: date | None, end: date) -> list[Fact]:
    """Facts with a usable Quantity dated in [start, end] (start None: no lower bound)."""
    return [f for f in facts if isinstance(f.value, Quantity) and f.when is not None and f.status not in _DROPPED
            and (start is None or f.when >= start) and f.when <= end]


def nearest(facts: Iterable[Fact], center: date, days: int, floor: date, as_of: date) -> Fact | None:
    """The result nearest to ``center`` within ±days, in [floor, as_of]; ties: the earlier, then stronger status."""
    lo, hi = max(floor, center - timedelta(days=days)), min(as_of, center + timedelta(days=days))
    found = quantities(facts, lo, hi)
    if not found:
        return None
    best = min(found, key=lambda f: (abs(((f.when or center) - center).days), f.when))
    return dated([f for f in found if f.when == best.when], as_of)[0]


def positive_finding(facts: Iterable[Fact], start: date, end: date) -> Fact | None:
    """The first finding recorded as present (value True) dated in [start, end]."""
    hits = [f for f in facts if f.value is True and f.when is not None and start <= f.when <= end
            and f.status not in _DROPPED]
    return min(hits, key=lambda f: (f.when, f.source)) if hits else None


# ------------------------------------------------------------------ three-valued criteria
def tri_not(value: Tri) -> Tri:
    if value == "unknown":
        return "unknown"
    return "not-met" if value == "met" else "met"


def _exactly_one(a: Tri, b: Tri) -> Tri:
    if "unknown" in (a, b):
        return "unknown"
    return "met" if a != b else "not-met"


def recovered(q: Quantity | None, threshold: float, comparators: str) -> Tri:
    """Is a count recovered: > threshold (record comparators) or >= (ELN)? Unknown without a result."""
    if q is None:
        return "unknown"
    return compare(q, ">" if comparators == "record" else ">=", threshold)


def decrease_half(marrow: Quantity, baseline: Quantity | None) -> Tri:
    """Marrow blasts at most half the baseline (a decrease of at least 50 %), with both values' comparators."""
    if baseline is None or baseline.value <= 0:
        return "unknown"
    result = compare(marrow, "<=", baseline.value / 2)
    loose = {"<": "met", "<=": "met", ">": "not-met", ">=": "not-met"}.get(baseline.comparator or "")
    return "unknown" if loose == result else result


@dataclass(frozen=True)
class Inputs:
    """What one assessment is decided on (values in canonical units; None = no result in the window)."""

    marrow: Quantity
    baseline: Quantity | None = None
    anc: Quantity | None = None
    platelets: Quantity | None = None
    blood_blasts: Quantity | None = None
    auer_rods: bool = False
    extramedullary: bool = False


@dataclass(frozen=True)
class Criteria:
    """The three-valued criteria of one assessment."""

    marrow_below_5: Tri
    no_circulating: Tri
    no_auer: Tri
    no_emd: Tri
    anc: Tri
    platelets: Tri
    pr_range: Tri
    pr_decrease: Tri

    @staticmethod
    def of(x: Inputs, comparators: str) -> Criteria:
        no_circ: Tri = "unknown" if x.blood_blasts is None else tri_not(compare(x.blood_blasts, ">", 0.0))
        return Criteria(
            compare(x.marrow, "<", MARROW_CR), no_circ, "not-met" if x.auer_rods else "met",
            "not-met" if x.extramedullary else "met", recovered(x.anc, ANC_CR, comparators),
            recovered(x.platelets, PLT_CR, comparators),
            tri_and(compare(x.marrow, ">=", MARROW_CR), compare(x.marrow, "<=", PR_MAX)),
            decrease_half(x.marrow, x.baseline))


def categories(c: Criteria, cri_reading: str) -> dict[str, Tri]:
    """CR, CRi, MLFS and PR as met / not-met / unknown (RULES.md §4 and erratum 5)."""
    leukemia_free = tri_and(c.marrow_below_5, c.no_auer, c.no_emd)
    counts_known: Tri = "unknown" if "unknown" in (c.anc, c.platelets) else "met"
    if cri_reading == "literal":
        partial = tri_and(counts_known, tri_not(tri_and(c.anc, c.platelets)))
    else:
        partial = _exactly_one(tri_not(c.anc), tri_not(c.platelets))
    return {
        "CR": tri_and(leukemia_free, c.no_circulating, c.anc, c.platelets),
        "CRi": tri_and(leukemia_free, c.no_circulating, partial),
        "MLFS": leukemia_free,
        "PR": tri_and(c.anc, c.platelets, c.no_circulating, c.pr_range, c.pr_decrease),
    }


def decide(cats: dict[str, Tri]) -> str:
    """The best category that is met; NE when one is undecidable and none better is met; else NR."""
    for name in ("CR", "CRi", "MLFS", "PR"):
        if cats[name] == "met":
            return name
        if cats[name] == "unknown" and name in ("MLFS", "PR"):
            return "NE"
    return "NR"


def classify(x: Inputs, comparators: str = "record", cri_reading: str = "operational") -> str:
    """The response category of one assessment (no relapse logic)."""
    return decide(categories(Criteria.of(x, comparators), cri_reading))


def crh(x: Inputs, comparators: str) -> Tri:
    """ELN 2022 CR with partial haematological recovery (criteria only)."""
    c = Criteria.of(x, comparators)
    return tri_and(c.marrow_below_5, c.no_circulating, c.no_auer, c.no_emd,
                   recovered(x.anc, ANC_CRH, comparators), recovered(x.platelets, PLT_CRH, comparators))


# ------------------------------------------------------------------ assessments
@dataclass(frozen=True)
class Assessment:
    """One post-infusion assessment. ``category`` is the response before relapse tagging (None when the
    assessment was added for a blood-only or extramedullary relapse)."""

    when: date
    day: int
    response: str
    evidence: tuple[str, ...]
    reason: str
    category: str | None
    crh: bool | None = None
    mrd: Quantity | None = None
    circulating: Tri = "unknown"

    def as_json(self) -> dict[str, object]:
        mrd = None if self.mrd is None else {"percent": self.mrd.value, "comparator": self.mrd.comparator}
        return {"date": self.when.isoformat(), "day": self.day, "response": self.response,
                "evidence": list(self.evidence), "reason": self.reason, "crh": self.crh, "mrd": mrd}


@dataclass(frozen=True)
class ResponseResult:
    """The assessments of one patient with the derived best response, remission and relapse."""

    day0: date
    baseline: Fact | None
    assessments: tuple[Assessment, ...]
    best_response: str
    remission_date: date | None
    relapse_date: date | None
    relapse_evidence: tuple[str, ...] = ()

    @property
    def baseline_marrow_blasts(self) -> float | None:
        return self.baseline.value.value if self.baseline and isinstance(self.baseline.value, Quantity) else None


@dataclass(frozen=True)
class _Window:
    anc: Fact | None
    platelets: Fact | None
    blasts: Fact | None
    auer: Fact | None
    emd: Fact | None
    mrd: Fact | None


def _window(pf: PatientFacts, when: date, day0: date, o: RuleOptions) -> _Window:
    w = o.count_window_days
    near = [nearest(pf.of(c), when, w, day0, o.as_of) for c in ("anc", "platelets")]
    blasts = nearest(pf.of("blood-blasts-percent") + pf.of("blood-blasts-count"), when, w, day0, o.as_of)
    lo, hi = max(day0, when - timedelta(days=w)), min(o.as_of, when + timedelta(days=w))
    return _Window(near[0], near[1], blasts, positive_finding(pf.of("auer-rods"), lo, hi),
                   positive_finding(pf.of("extramedullary-disease"), lo, hi),
                   nearest(pf.of("mrd-percent"), when, w, day0, o.as_of))


def _q(f: Fact | None) -> Quantity | None:
    return f.value if f is not None and isinstance(f.value, Quantity) else None


def _shown(f: Fact) -> str:
    q = _q(f)
    return f"{show(q) if q else 'no value'} on {f.when}"


def _count_note(label: str, f: Fact | None, threshold: float, o: RuleOptions) -> str:
    if f is None:
        return f"no {label} within ±{o.count_window_days} days"
    op = ">" if o.comparators == "record" else ">="
    state = {"met": "recovered", "not-met": "below", "unknown": "undecidable"}[
        recovered(_q(f), threshold, o.comparators)]
    return f"{label} {_shown(f)} {state} ({op} {fmt(threshold)}, {o.comparators} comparators)"


def _finding_note(label: str, f: Fact | None) -> str:
    return f"{label} recorded on {f.when}" if f else f"no {label} recorded (absent by default)"


def _reason(marrow: Fact, win: _Window, response: str, o: RuleOptions, c: Criteria) -> str:
    parts = [f"marrow blasts {_shown(marrow)}",
             _count_note("ANC", win.anc, ANC_CR, o), _count_note("platelets", win.platelets, PLT_CR, o),
             f"blood blasts {_shown(win.blasts)}" if win.blasts
             else f"no blood blast result within ±{o.count_window_days} days",
             _finding_note("Auer rods", win.auer), _finding_note("extramedullary disease", win.emd)]
    if c.anc == c.platelets == "not-met" and response in ("MLFS", "CRi"):
        parts.append(f"both lineages below: {response} by the {o.cri_reading} CRi reading")
    cats = categories(c, o.cri_reading)
    if response in ("MLFS", "NE") and "unknown" in (cats["CR"], cats["CRi"], cats["PR"]):
        parts.append("CR/CRi/PR undecidable")
    return f"{response}: " + "; ".join(parts)


def _assess(pf: PatientFacts, marrow: Fact, value: Quantity, day0: date, baseline: Fact | None,
            o: RuleOptions) -> Assessment:
    when = marrow.when or day0
    win = _window(pf, when, day0, o)
    refs = (marrow.source, *(f.source for f in (win.anc, win.platelets, win.blasts, win.auer, win.emd, win.mrd)
                             if f is not None))
    x = Inputs(value, _q(baseline), _q(win.anc), _q(win.platelets), _q(win.blasts),
               win.auer is not None, win.emd is not None)
    c = Criteria.of(x, o.comparators)
    response = decide(categories(c, o.cri_reading))
    h = crh(x, o.comparators)
    return Assessment(when, (when - day0).days, response, tuple(dict.fromkeys(refs)),
                      _reason(marrow, win, response, o, c), response,
                      None if h == "unknown" else (h == "met" and response != "CR"), _q(win.mrd),
                      tri_not(c.no_circulating))


def _not_usable(marrow: Fact, day0: date) -> Assessment:
    when = marrow.when or day0
    why = marrow.problem or "no usable value"
    return Assessment(when, (when - day0).days, "NE", (marrow.source,), f"NE: marrow result not usable ({why})",
                      "NE")


def baseline_marrow(pf: PatientFacts, day0: date) -> Fact | None:
    """The latest usable marrow blast result dated strictly before day 0."""
    found = dated(quantities(pf.of("marrow-blasts-percent"), None, day0 - timedelta(days=1)), day0)
    return found[0] if found else None


def _marrows(pf: PatientFacts, day0: date, as_of: date) -> list[Fact]:
    keep = [f for f in pf.of("marrow-blasts-percent") if f.when is not None and day0 < f.when <= as_of
            and f.status not in _DROPPED]
    return sorted(keep, key=lambda f: (f.when, f.source))


# ------------------------------------------------------------------ relapse
@dataclass(frozen=True)
class _Event:
    when: date
    source: str
    why: str


def _blood_reappearance(pf: PatientFacts, remission: Assessment, as_of: date) -> _Event | None:
    present = remission.circulating == "met"
    results = quantities(pf.of("blood-blasts-percent") + pf.of("blood-blasts-count"),
                         remission.when + timedelta(days=1), as_of)
    for f in sorted(results, key=lambda f: (f.when, f.source)):
        if not isinstance(f.value, Quantity):
            continue
        above = compare(f.value, ">", 0.0)
        if above == "met" and not present:
            return _Event(f.when or remission.when, f.source, "reappearance of circulating blasts")
        present = above == "met" if above != "unknown" else present
    return None


def _marrow_relapse(marrows: Sequence[Fact], remission: Assessment) -> _Event | None:
    for m in marrows:
        q = _q(m)
        if m.when and m.when > remission.when and q is not None and compare(q, ">=", MARROW_CR) == "met":
            return _Event(m.when, m.source, "marrow blasts >= 5 %")
    return None


def _emd_relapse(pf: PatientFacts, remission: Assessment, as_of: date) -> _Event | None:
    emd = positive_finding(pf.of("extramedullary-disease"), remission.when + timedelta(days=1), as_of)
    return _Event(emd.when, emd.source, "new extramedullary disease") if emd and emd.when else None


def _relapse(pf: PatientFacts, marrows: Sequence[Fact], remission: Assessment, as_of: date) -> _Event | None:
    """The first relapse result after the remission date, of whatever kind (ties: by source)."""
    events = [e for e in (_marrow_relapse(marrows, remission), _blood_reappearance(pf, remission, as_of),
                          _emd_relapse(pf, remission, as_of)) if e is not None]
    return min(events, key=lambda e: (e.when, e.source)) if events else None


def _tag(assessments: list[Assessment], event: _Event, remission: Assessment, day0: date) -> list[Assessment]:
    note = f"; relapse after {remission.response} of {remission.when}: {event.why} on {event.when}"
    same = [i for i, a in enumerate(assessments) if a.when == event.when]
    if same:
        a = assessments[same[0]]
        evidence = tuple(dict.fromkeys((*a.evidence, event.source)))
        assessments[same[0]] = replace(a, response=RELAPSE, evidence=evidence, reason=a.reason + note)
        return assessments
    added = Assessment(event.when, (event.when - day0).days, RELAPSE, (event.source,),
                       f"relapse{note} (no marrow result that day)", None)
    return sorted([*assessments, added], key=lambda a: a.when)


def best_of(categories_seen: Iterable[str]) -> str:
    """Best overall response by the ranking CR > CRi > MLFS > PR > NR > NE (NE when there is none)."""
    return min(categories_seen, key=lambda r: RANK[r], default="NE")


def assess_response(pf: PatientFacts, day0: date, options: RuleOptions) -> ResponseResult:
    """Baseline, every post-infusion marrow assessment, best response, remission and first relapse."""
    baseline = baseline_marrow(pf, day0)
    marrows = _marrows(pf, day0, options.as_of)
    assessments = [_assess(pf, m, m.value, day0, baseline, options) if isinstance(m.value, Quantity)
                   else _not_usable(m, day0) for m in marrows]
    remission = next((a for a in assessments if a.category in REMISSION), None)
    event = _relapse(pf, marrows, remission, options.as_of) if remission is not None else None
    if event is not None and remission is not None:
        assessments = _tag(assessments, event, remission, day0)
    best = best_of(a.category for a in assessments if a.category is not None)
    return ResponseResult(day0, baseline, tuple(assessments), best, remission.when if remission else None,
                          event.when if event else None, (event.source,) if event else ())


__all__ = ["RANK", "RELAPSE", "REMISSION", "RESPONDERS", "RESPONSES", "Assessment", "Criteria", "Inputs",
           "ResponseResult", "assess_response", "baseline_marrow", "best_of", "categories", "classify", "crh",
           "decide", "decrease_half", "nearest", "positive_finding", "quantities", "recovered", "tri_not"]
