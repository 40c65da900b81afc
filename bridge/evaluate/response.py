"""Response assessment after the CAR-T infusion (RULES.md §4, errata 4 and 5). Pure: facts + options + day 0 in.

Every criterion is three-valued (``met`` / ``not-met`` / ``unknown``), so a missing or bounded value (``<5 %``)
never decides a category it cannot decide. **Not-usable values** (RULES.md §3: unconvertible, implausible,
equivocal; ``Fact.usable`` False) are *unknown* values, never absent ones: a category is given only when it
would be the same whatever they held, except for the MLFS fallback below, which RULES.md §4 prescribes. Undated
results cannot be placed against day 0 or a window: they are left out here (normalize reports each one). The
decisions the record leaves open, made here:

- **Baseline** marrow blasts: the marrow result of the latest date strictly before day 0 (dates only: a marrow on
  the infusion day cannot be ordered against the infusion and is neither baseline nor assessment). When a result
  of that date is not usable the baseline is unknown — never an older result instead: ``baselineMarrowBlasts``
  is null and the ≥ 50 % decrease for PR is undecidable (the reason names the result).
- **Assessments**: every ``marrow-blasts-percent`` result dated after day 0 up to the as-of date, in date order.
  A result that is not usable is an assessment with response ``NE``, its reason naming the resource.
- **Window data** (ANC, platelets, blood blasts, MRD): the result nearest to the marrow date within
  ±``count_window_days``, dated on or after day 0 and on or before the as-of date; on a tie in distance the
  earlier result wins (it was known when the marrow was read), on the same date the stronger status. Blood
  blasts are the nearest of ``blood-blasts-percent`` and ``blood-blasts-count`` together. When the nearest
  result, or one equally near, is not usable, the count is unknown (not taken from another result): CR, CRi and
  PR are undecidable, and the reason names that result — so an implausible count can never make CR.
- **Auer rods / extramedullary disease** are present only when a positive finding is dated in that window;
  a finding whose result is not usable (equivocal, indeterminate) in the window leaves it unknown (then CR, CRi
  and MLFS are undecidable); otherwise they are absent by default, and the reason says so.
- **Circulating blasts** are present when the blood blasts are above 0. No blood blast result in the window
  leaves "no circulating blasts" unknown (CR, CRi and PR need positive evidence of it), exactly like a missing
  ANC or platelet result: the assessment then falls back to MLFS when the MLFS criteria hold, else NE.
- **Thresholds** are the trial's (``RuleOptions.response``, from the trial file's assessment section; RULES.md §4
  for the shipped trial: marrow blasts < 5 %, ANC > 1.0 and platelets > 100 ×10⁹/L, PR 5–25 % with a ≥ 50 % decrease).
- **Counts** are recovered when ANC and platelets are above their thresholds (``record`` comparators) or ≥ (``eln``);
  a value exactly at a threshold that is not recovered is "below". A missing or unknown ANC *or* platelet result
  makes CR, CRi and PR undecidable (in both CRi readings).
- **CRi**: ``operational`` reading — exactly one lineage below; both below → MLFS. ``literal`` — at least one.
- **PR**: the haematological CR criteria (both counts recovered and no circulating blasts; Auer rods and
  extramedullary disease are not haematological criteria), marrow blasts 5–25 % inclusive, and a decrease of
  at least 50 % from the baseline (marrow ≤ baseline ÷ 2). Without a usable baseline the decrease is unknown.
- **NR** needs every response category decidedly not met: marrow blasts above 25 % are NR even with no counts
  in the window, since no count could make them a response. Any category left undecidable with none met → NE.
- **CRh** (ELN 2022, extra field ``crh``): marrow < 5 %, no circulating blasts, no Auer rods, no
  extramedullary disease, ANC > 0.5 and platelets > 50 (≥ with ``eln`` comparators); reported true only for an
  assessment that is not CR (CRh is the category below CR), None when undecidable. **MRD** (extra field
  ``mrd``): the nearest ``mrd-percent`` result in the window (null when that result is not usable).
- **Relapse** (after the first CR/CRi/MLFS, the remission date): a later marrow with blasts ≥ 5 %, a positive
  extramedullary finding dated after the remission date, or the reappearance of circulating blasts — a blood
  blast result > 0 after the remission date while blasts were absent (absent at remission, where no result
  counts as absent, or a later 0 result after they had been present). Relapse date = the first such result,
  whatever its kind. The assessment on that date becomes ``relapse``; when the first result is a blood or
  extramedullary one with no marrow that day, a ``relapse`` assessment is added for it. Only the first relapse
  is tagged; later marrows keep their own category.
- **Relapse over not-usable values** — never declared from one, and a not-usable result is no evidence of
  continued remission either. A result after the remission *may* be the relapse when it is not usable (marrow,
  blood blasts while they are not known to be present, extramedullary finding), when it is > 0 blood blasts
  after a not-usable blood result (or a not-usable one at remission) that may have been 0, or when it would be a
  relapse after an earlier assessment that may have been a remission (``possible_remission``: MLFS undecidable,
  or a not-usable marrow without a positive finding). If the first such result is certain, it is the relapse.
  If the first one only *may* be, the relapse is undecidable from its date: that assessment (one is added
  when there is none that day) becomes ``NE`` with the reason, so does every later one that may be the first
  relapse, up to and including the first certain relapse result ("relapse by this date at the latest, but it
  may have begun on …"), ``relapseDate`` is null and
  ``ResponseResult.relapse_unknown_from`` holds the date (the CIR censors there).
- **Best response** ranks CR > CRi > MLFS > PR > NR > NE over the categories of the marrow assessments (the
  category a relapse or relapse-undecidable assessment had before tagging still counts, but a relapse is never
  better than the remission it follows); no post-infusion marrow → NE with no assessments. An NE assessment (an
  unknown) never lowers it but may hide a better category: with not-usable values the best response is the best
  *decided* one, a lower bound — the same reading as RULES.md's MLFS fallback, and NE counting as no response
  in the ORR, as usual. Adding not-usable values never improves it (tests/unit/test_h2_properties.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta

from bridge.config import ResponseThresholds, RuleOptions
from bridge.evaluate.logic import compare, dated, fmt, show, tri_and
from bridge.model import Fact, PatientFacts, Quantity, Tri

RESPONSES = ("CR", "CRi", "MLFS", "PR", "NR", "NE")
RANK = {r: i for i, r in enumerate(RESPONSES)}
REMISSION = frozenset({"CR", "CRi", "MLFS"})
RESPONDERS = frozenset({"CR", "CRi", "MLFS", "PR"})
RELAPSE = "relapse"

_DROPPED = frozenset({"entered-in-error", "cancelled"})


# ------------------------------------------------------------------ fact selection
def usable_quantity(f: Fact) -> bool:
    """A usable, dated Quantity (RULES.md §3) that is not entered in error or cancelled."""
    return f.usable and isinstance(f.value, Quantity) and f.status not in _DROPPED


def placed(f: Fact) -> bool:
    """A dated fact that is not entered in error or cancelled (usable or not): it can be placed in time."""
    return f.when is not None and f.status not in _DROPPED


def quantities(facts: Iterable[Fact], start: date | None, end: date) -> list[Fact]:
    """Facts with a usable Quantity dated in [start, end] (start None: no lower bound)."""
    return [f for f in facts if usable_quantity(f) and f.when is not None
            and (start is None or f.when >= start) and f.when <= end]


def nearest(facts: Iterable[Fact], center: date, days: int, floor: date, as_of: date) -> Fact | None:
    """The result nearest to ``center`` within ±days, in [floor, as_of]; ties: the earlier, then stronger status.

    When a result that is not usable is (equally) nearest, it is returned: the value is then unknown, never taken
    from a usable result further away or tied with it (RULES.md §3).
    """
    lo, hi = max(floor, center - timedelta(days=days)), min(as_of, center + timedelta(days=days))
    found = [f for f in facts if placed(f) and f.when is not None and lo <= f.when <= hi]
    if not found:
        return None
    best = min(abs(((f.when or center) - center).days) for f in found)
    tied = [f for f in found if abs(((f.when or center) - center).days) == best]
    bad = sorted((f for f in tied if not usable_quantity(f)), key=lambda f: (f.when, f.source))
    if bad:
        return bad[0]
    first = min(f.when or center for f in tied)
    return dated([f for f in tied if f.when == first], as_of)[0]


def positive_finding(facts: Iterable[Fact], start: date, end: date) -> Fact | None:
    """The first finding recorded as present (value True) dated in [start, end]."""
    hits = [f for f in facts if f.value is True and f.usable and f.when is not None and start <= f.when <= end
            and f.status not in _DROPPED]
    return min(hits, key=lambda f: (f.when, f.source)) if hits else None


def unusable_finding(facts: Iterable[Fact], start: date, end: date) -> Fact | None:
    """The first finding dated in [start, end] whose result is not usable (equivocal, indeterminate)."""
    hits = [f for f in facts if placed(f) and not f.usable and f.when is not None and start <= f.when <= end]
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


def decrease_from(marrow: Quantity, baseline: Quantity | None, percent: float) -> Tri:
    """Marrow blasts decreased by at least ``percent`` % from the baseline, with both values' comparators."""
    if baseline is None or baseline.value <= 0:
        return "unknown"
    result = compare(marrow, "<=", baseline.value * (1 - percent / 100))
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
    auer_rods: bool | None = False  # None: a result that is not usable, so unknown
    extramedullary: bool | None = False


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
    def of(x: Inputs, comparators: str, t: ResponseThresholds | None = None) -> Criteria:
        t = t or default_thresholds()
        no_circ: Tri = "unknown" if x.blood_blasts is None else tri_not(compare(x.blood_blasts, ">", 0.0))
        return Criteria(
            compare(x.marrow, "<", t.marrow_blasts), no_circ, _absent(x.auer_rods), _absent(x.extramedullary),
            recovered(x.anc, t.anc, comparators),
            recovered(x.platelets, t.platelets, comparators),
            tri_and(compare(x.marrow, ">=", t.marrow_blasts), compare(x.marrow, "<=", t.pr_marrow_blasts_max)),
            decrease_from(x.marrow, x.baseline, t.pr_decrease_percent))


def _absent(present: bool | None) -> Tri:
    return "unknown" if present is None else "not-met" if present else "met"


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


def classify(x: Inputs, comparators: str = "record", cri_reading: str = "operational",
             thresholds: ResponseThresholds | None = None) -> str:
    """The response category of one assessment (no relapse logic); thresholds default to the shipped trial's."""
    return decide(categories(Criteria.of(x, comparators, thresholds), cri_reading))


def crh(x: Inputs, comparators: str, thresholds: ResponseThresholds | None = None) -> Tri:
    """ELN 2022 CR with partial haematological recovery (criteria only)."""
    t = thresholds or default_thresholds()
    c = Criteria.of(x, comparators, t)
    return tri_and(c.marrow_below_5, c.no_circulating, c.no_auer, c.no_emd,
                   recovered(x.anc, t.crh_anc, comparators), recovered(x.platelets, t.crh_platelets, comparators))


def default_thresholds() -> ResponseThresholds:
    """The shipped trial's response thresholds (``RuleOptions.response`` carries the ones in use)."""
    from bridge.trial import load_trial  # the default trial, read once (cached)

    response: ResponseThresholds = load_trial().rule_defaults()["response"]
    return response


# ------------------------------------------------------------------ assessments
@dataclass(frozen=True)
class Assessment:
    """One post-infusion assessment. ``category`` is the response before relapse tagging (None when the
    assessment was added for a blood-only or extramedullary relapse). ``blood_unusable`` names the blood blast
    result of the window when it was not usable (circulating blasts unknown)."""

    when: date
    day: int
    response: str
    evidence: tuple[str, ...]
    reason: str
    category: str | None
    crh: bool | None = None
    mrd: Quantity | None = None
    circulating: Tri = "unknown"
    blood_unusable: str | None = None
    possible_remission: bool = False

    def as_json(self) -> dict[str, object]:
        mrd = None if self.mrd is None else {"percent": self.mrd.value, "comparator": self.mrd.comparator}
        return {"date": self.when.isoformat(), "day": self.day, "response": self.response,
                "evidence": list(self.evidence), "reason": self.reason, "crh": self.crh, "mrd": mrd}


@dataclass(frozen=True)
class ResponseResult:
    """The assessments of one patient with the derived best response, remission and relapse.

    ``relapse_unknown_from``: with no relapse found, the date of the first result after the remission that is not
    usable and could have shown a relapse (relapse-free follow-up is known only up to then); else None.
    """

    day0: date
    baseline: Fact | None
    assessments: tuple[Assessment, ...]
    best_response: str
    remission_date: date | None
    relapse_date: date | None
    relapse_evidence: tuple[str, ...] = ()
    relapse_unknown_from: date | None = None

    @property
    def baseline_marrow_blasts(self) -> float | None:
        return self.baseline.value.value if self.baseline and usable_quantity(self.baseline) \
            and isinstance(self.baseline.value, Quantity) else None


@dataclass(frozen=True)
class _Window:
    anc: Fact | None
    platelets: Fact | None
    blasts: Fact | None
    auer: Fact | None
    emd: Fact | None
    mrd: Fact | None
    auer_unusable: Fact | None = None
    emd_unusable: Fact | None = None


def _window(pf: PatientFacts, when: date, day0: date, o: RuleOptions) -> _Window:
    w = o.count_window_days
    near = [nearest(pf.of(c), when, w, day0, o.as_of) for c in ("anc", "platelets")]
    blasts = nearest(pf.of("blood-blasts-percent") + pf.of("blood-blasts-count"), when, w, day0, o.as_of)
    lo, hi = max(day0, when - timedelta(days=w)), min(o.as_of, when + timedelta(days=w))
    return _Window(near[0], near[1], blasts, positive_finding(pf.of("auer-rods"), lo, hi),
                   positive_finding(pf.of("extramedullary-disease"), lo, hi),
                   nearest(pf.of("mrd-percent"), when, w, day0, o.as_of), unusable_finding(pf.of("auer-rods"), lo, hi),
                   unusable_finding(pf.of("extramedullary-disease"), lo, hi))


def _q(f: Fact | None) -> Quantity | None:
    return f.value if f is not None and usable_quantity(f) and isinstance(f.value, Quantity) else None


def _unusable(f: Fact | None) -> bool:
    return f is not None and not usable_quantity(f)


def _not_usable_note(f: Fact) -> str:
    return f"{f.source} on {f.when} not usable ({f.problem or 'no usable value'})"


def _shown(f: Fact) -> str:
    q = _q(f)
    return f"{show(q)} on {f.when}" if q else _not_usable_note(f)


def _count_note(label: str, f: Fact | None, threshold: float, o: RuleOptions) -> str:
    if f is None:
        return f"no {label} within ±{o.count_window_days} days"
    if _unusable(f):
        return f"{label} {_not_usable_note(f)}: unknown"
    op = ">" if o.comparators == "record" else ">="
    state = {"met": "recovered", "not-met": "below", "unknown": "undecidable"}[
        recovered(_q(f), threshold, o.comparators)]
    return f"{label} {_shown(f)} {state} ({op} {fmt(threshold)}, {o.comparators} comparators)"


def _finding_note(label: str, f: Fact | None, bad: Fact | None) -> str:
    if f is not None:
        return f"{label} recorded on {f.when}"
    if bad is not None:
        return f"{label} {_not_usable_note(bad)}: unknown"
    return f"no {label} recorded (absent by default)"


def _reason(marrow: Fact, win: _Window, response: str, o: RuleOptions, c: Criteria, baseline: Fact | None) -> str:
    parts = [f"marrow blasts {_shown(marrow)}",
             _count_note("ANC", win.anc, o.response.anc, o),
             _count_note("platelets", win.platelets, o.response.platelets, o),
             f"blood blasts {_shown(win.blasts)}" if win.blasts
             else f"no blood blast result within ±{o.count_window_days} days",
             _finding_note("Auer rods", win.auer, win.auer_unusable),
             _finding_note("extramedullary disease", win.emd, win.emd_unusable)]
    if baseline is not None and _unusable(baseline) and c.pr_range != "not-met":
        parts.append(f"baseline marrow {_not_usable_note(baseline)}: the decrease from baseline is unknown")
    if c.anc == c.platelets == "not-met" and response in ("MLFS", "CRi"):
        parts.append(f"both lineages below: {response} by the {o.cri_reading} CRi reading")
    cats = categories(c, o.cri_reading)
    if response in ("MLFS", "NE") and "unknown" in (cats["CR"], cats["CRi"], cats["PR"]):
        parts.append("CR/CRi/PR undecidable")
    return f"{response}: " + "; ".join(parts)


def _finding(present: Fact | None, bad: Fact | None) -> bool | None:
    return True if present is not None else None if bad is not None else False


def _assess(pf: PatientFacts, marrow: Fact, value: Quantity, day0: date, baseline: Fact | None,
            o: RuleOptions) -> Assessment:
    when = marrow.when or day0
    win = _window(pf, when, day0, o)
    refs = (marrow.source, *(f.source for f in (win.anc, win.platelets, win.blasts, win.auer, win.emd, win.mrd,
                                                 None if win.auer else win.auer_unusable,
                                                 None if win.emd else win.emd_unusable) if f is not None))
    if baseline is not None and _unusable(baseline):
        refs = (*refs, baseline.source)
    x = Inputs(value, _q(baseline), _q(win.anc), _q(win.platelets), _q(win.blasts),
               _finding(win.auer, win.auer_unusable), _finding(win.emd, win.emd_unusable))
    c = Criteria.of(x, o.comparators, o.response)
    cats = categories(c, o.cri_reading)
    response = decide(cats)
    h = crh(x, o.comparators, o.response)
    return Assessment(when, (when - day0).days, response, tuple(dict.fromkeys(refs)),
                      _reason(marrow, win, response, o, c, baseline), response,
                      None if h == "unknown" else (h == "met" and response != "CR"), _q(win.mrd),
                      tri_not(c.no_circulating), win.blasts.source if _unusable(win.blasts) and win.blasts else None,
                      response not in REMISSION and cats["MLFS"] == "unknown")


def _not_usable(pf: PatientFacts, marrow: Fact, day0: date, o: RuleOptions) -> Assessment:
    """A marrow result that is not usable: NE; it could have been a remission unless a finding rules it out."""
    when = marrow.when or day0
    win = _window(pf, when, day0, o)
    no_circ: Tri = "unknown" if _q(win.blasts) is None else tri_not(compare(_q(win.blasts) or Quantity(0, ""), ">", 0))
    free = tri_and("unknown", _absent(_finding(win.auer, win.auer_unusable)),
                   _absent(_finding(win.emd, win.emd_unusable)))
    return Assessment(when, (when - day0).days, "NE", (marrow.source,),
                      f"NE: marrow result {_not_usable_note(marrow)}", "NE", circulating=tri_not(no_circ),
                      blood_unusable=win.blasts.source if _unusable(win.blasts) and win.blasts else None,
                      possible_remission=free != "not-met")


def baseline_marrow(pf: PatientFacts, day0: date) -> Fact | None:
    """The marrow blast result of the latest date strictly before day 0. When a result of that date is not
    usable it is returned (the baseline is then unknown; an older result is never used instead)."""
    found = dated([f for f in pf.of("marrow-blasts-percent") if placed(f)], day0 - timedelta(days=1))
    if not found:
        return None
    same_day = [f for f in found if f.when == found[0].when]
    return next((f for f in same_day if not usable_quantity(f)), found[0])


def _marrows(pf: PatientFacts, day0: date, as_of: date) -> list[Fact]:
    keep = [f for f in pf.of("marrow-blasts-percent") if placed(f) and f.when is not None and day0 < f.when <= as_of]
    return sorted(keep, key=lambda f: (f.when, f.source))


# ------------------------------------------------------------------ relapse
@dataclass(frozen=True)
class _Event:
    """A result after a remission (or a possible one) that is (``hit``) or may be (not ``hit``) a relapse."""

    when: date
    source: str
    why: str
    hit: bool = True


def _blood(pf: PatientFacts, start: date, end: date) -> list[Fact]:
    facts = pf.of("blood-blasts-percent") + pf.of("blood-blasts-count")
    return sorted((f for f in facts if placed(f) and f.when is not None and start <= f.when <= end),
                  key=lambda f: (f.when, f.source))


def _blood_events(pf: PatientFacts, anchor: Assessment, start: date, end: date) -> list[_Event]:
    """Reappearances of circulating blasts in [start, end], up to the first certain one.

    Blasts are absent at the anchor when its blood result is 0 or there is none (no result counts as absent),
    present when it is above 0, unknown when it was not usable. A usable result above 0 is a reappearance after
    an absent state, may be one after an unknown state (a not-usable result after present ones), and is none
    after a present state. A not-usable result while blasts are not known to be present may itself be one.
    """
    state = "present" if anchor.circulating == "met" else "unknown" if anchor.blood_unusable else "absent"
    why = "reappearance of circulating blasts"
    events: list[_Event] = []
    for f in _blood(pf, start, end):
        if not usable_quantity(f) or not isinstance(f.value, Quantity):
            if state != "present":
                events.append(_Event(f.when or start, f.source, f"blood blast result {f.source} not usable", False))
            state = "absent" if state == "absent" else "unknown"
            continue
        above = compare(f.value, ">", 0.0)
        if above == "met" and state != "present":
            events.append(_Event(f.when or start, f.source, why, state == "absent"))
            if state == "absent":
                return events
        if above != "unknown":
            state = "present" if above == "met" else "absent"
    return events


def _results(pf: PatientFacts, marrows: Sequence[Fact], anchor: Assessment, end: date,
             relapse_at: float) -> list[_Event]:
    """The results after the anchor's date up to ``end`` that are or may be a relapse, in date order."""
    start = anchor.when + timedelta(days=1)
    events: list[_Event] = []
    for m in marrows:
        if m.when is None or not start <= m.when <= end:
            continue
        q = _q(m)
        if q is None:
            events.append(_Event(m.when, m.source, f"marrow result {m.source} not usable", False))
        elif compare(q, ">=", relapse_at) != "not-met":
            events.append(_Event(m.when, m.source, f"marrow blasts >= {fmt(relapse_at)} %",
                                 compare(q, ">=", relapse_at) == "met"))
    events += _blood_events(pf, anchor, start, end)
    for f in pf.of("extramedullary-disease"):
        if placed(f) and f.when is not None and start <= f.when <= end and f.value is not False:
            present = f.usable and f.value is True
            events.append(_Event(f.when, f.source, "new extramedullary disease" if present
                                 else f"extramedullary disease result {f.source} not usable", present))
    return sorted(events, key=lambda e: (e.when, not e.hit, e.source))


@dataclass(frozen=True)
class _Relapse:
    event: _Event | None  # the relapse (the first result after the remission, certainly one)
    undecided: tuple[_Event, ...] = ()  # else the results that may be the first relapse, up to the first certain one

    @property
    def unknown(self) -> _Event | None:
        return self.undecided[0] if self.undecided else None


def _relapse(pf: PatientFacts, marrows: Sequence[Fact], assessments: Sequence[Assessment],
             remission: Assessment | None, as_of: date, relapse_at: float) -> _Relapse:
    """RULES.md §4: relapse = the first result after the remission showing it. Results between a possible
    remission (undecidable) before it and the remission may be relapses; so may results that are not usable."""
    possible = next((a for a in assessments if a.possible_remission
                     and (remission is None or a.when < remission.when)), None)
    events: list[_Event] = []
    if possible is not None:
        end = remission.when - timedelta(days=1) if remission is not None else as_of
        events += [replace(e, hit=False) for e in _results(pf, marrows, possible, end, relapse_at)]
    if remission is not None:
        events += _results(pf, marrows, remission, as_of, relapse_at)
    events.sort(key=lambda e: (e.when, not e.hit, e.source))
    if not events:
        return _Relapse(None)
    if events[0].hit:
        return _Relapse(events[0])
    first_hit = next((i for i, e in enumerate(events) if e.hit), len(events) - 1)
    return _Relapse(None, tuple(events[:first_hit + 1]))


def _tag(assessments: list[Assessment], event: _Event, response: str, note: str, day0: date) -> list[Assessment]:
    """The assessment on the event's date gets ``response`` and the note (one is added when there is none)."""
    same = [i for i, a in enumerate(assessments) if a.when == event.when]
    if same:
        a = assessments[same[0]]
        evidence = tuple(dict.fromkeys((*a.evidence, event.source)))
        assessments[same[0]] = replace(a, response=response, evidence=evidence, reason=a.reason + note)
        return assessments
    added = Assessment(event.when, (event.when - day0).days, response, (event.source,),
                       f"{response}{note} (no marrow result that day)", None)
    return sorted([*assessments, added], key=lambda a: a.when)


def _after(remission: Assessment | None) -> str:
    return f" after {remission.response} of {remission.when}" if remission is not None else ""


def _apply(assessments: list[Assessment], rel: _Relapse, remission: Assessment | None,
           day0: date) -> list[Assessment]:
    if rel.event is not None and remission is not None:
        note = f"; relapse{_after(remission)}: {rel.event.why} on {rel.event.when}"
        return _tag(assessments, rel.event, RELAPSE, note, day0)
    u = rel.unknown
    if u is None:
        return assessments
    anchor = _after(remission) if remission is not None and u.when > remission.when else \
        " after a possible remission (undecidable)"
    tagged: set[date] = set()
    for e in rel.undecided:
        if e.when in tagged:
            continue
        tagged.add(e.when)
        if e is u:
            note = f"; relapse undecidable{anchor}: {e.why} on {e.when}"
        elif e.hit:
            note = (f"; {e.why} on {e.when}: relapse by this date at the latest, but it may have begun on {u.when} "
                    f"({u.why}): relapse date unknown")
        else:
            note = f"; relapse undecidable: {e.why} on {e.when}, after {u.why} on {u.when}"
        assessments = _tag(assessments, e, "NE", note, day0)
    return assessments


def best_of(categories_seen: Iterable[str]) -> str:
    """Best overall response by the ranking CR > CRi > MLFS > PR > NR > NE (NE when there is none)."""
    return min(categories_seen, key=lambda r: RANK[r], default="NE")


def assess_response(pf: PatientFacts, day0: date, options: RuleOptions) -> ResponseResult:
    """Baseline, every post-infusion marrow assessment, best response, remission and first relapse."""
    baseline = baseline_marrow(pf, day0)
    marrows = _marrows(pf, day0, options.as_of)
    assessments = [_assess(pf, m, m.value, day0, baseline, options) if usable_quantity(m)
                   and isinstance(m.value, Quantity) else _not_usable(pf, m, day0, options) for m in marrows]
    remission = next((a for a in assessments if a.category in REMISSION), None)
    rel = _relapse(pf, marrows, assessments, remission, options.as_of, options.response.marrow_blasts)
    assessments = _apply(assessments, rel, remission, day0)
    event = rel.event if remission is not None else None
    best = best_of(a.category for a in assessments if a.category is not None)
    return ResponseResult(day0, baseline, tuple(assessments), best, remission.when if remission else None,
                          event.when if event else None, (event.source,) if event else (),
                          rel.unknown.when if rel.unknown is not None and remission is not None else None)


__all__ = ["RANK", "RELAPSE", "REMISSION", "RESPONDERS", "RESPONSES", "Assessment", "Criteria", "Inputs",
           "ResponseResult", "assess_response", "baseline_marrow", "best_of", "categories", "classify", "crh",
           "decide", "decrease_from", "default_thresholds", "nearest", "placed", "positive_finding", "quantities",
           "recovered", "tri_not", "unusable_finding", "usable_quantity"]
