"""Rule building blocks: the reusable rules a trial file's criteria are made of (RULES.md §2).

A criterion of a trial file (``trials/*.yaml``) names one block and gives its parameters; nothing here knows a
trial. Each block is a pure function ``(PatientFacts, Context, params) -> Outcome`` (three-valued result, a
one-line reason, the evidence) plus a declaration of its parameters, which says what each one is (a concept,
a window, a threshold ...) and which concepts it makes the rule read:

- ``fact`` concepts are the facts the rule reads; ``decide`` (``bridge.evaluate.unknowns``) weighs their
  not-usable values, and a pull fetches them within its look-back;
- ``any-age`` fact concepts are read however old the result (a positive HBsAg excludes at any age), so a pull
  fetches them without a date;
- ``condition`` concepts are the diagnoses the rule reads (the population path keeps every resource coded with
  one); ``gate`` marks those without which the criterion is not met.

Generic blocks: ``age-between``, ``score-in-range``, ``quantity-threshold`` (a value or a multiple of the ULN),
``diagnosis-among`` (met / review-needed concepts), ``finding-or-diagnosis``, ``qualitative-test``, and
``any-of`` / ``all-of`` over other blocks in three-valued logic. Named blocks hold the rules peculiar to one
protocol's wording: ``relapsed-refractory-diagnosis``, ``organ-function`` (with the record's literal reading,
RULES.md §1.1), ``pregnancy``, ``infection``, ``hepatitis``, ``cardiac-event``, ``investigator-judgement``.

Every block is monotone in each quantity it reads (one threshold per comparison), and a score range is tried
score by score, which is what ``decide`` relies on. ``param_issues`` checks a criterion's block and parameters
against these declarations for the trial loader (``bridge.trial``), every problem at once with its path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from bridge.config import RuleOptions
from bridge.errors import Issue
from bridge.evaluate.logic import compare, fmt, holds, in_window, latest, show, tri_and, tri_or
from bridge.model import Diagnosis, Fact, PatientFacts, Quantity, Tri

if TYPE_CHECKING:
    from bridge.normalize.mappings import ConceptInfo

Params = Mapping[str, Any]
COMPARATORS = ("<", "<=", ">", ">=")


@dataclass(frozen=True)
class Context:
    """What a block is told beside the patient: the rule options and the site's per-lab ULN defaults."""

    options: RuleOptions
    site_uln: Mapping[str, float] = field(default_factory=dict)

    @property
    def as_of(self) -> date:
        return self.options.as_of


@dataclass(frozen=True)
class Outcome:
    """A block's answer; empty evidence entries are dropped when it becomes a ``Verdict``."""

    result: Tri
    reason: str
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reads:
    """The concepts a block (with its parameters) reads; see the module docstring."""

    facts: frozenset[str] = frozenset()
    any_age: frozenset[str] = frozenset()
    conditions: frozenset[str] = frozenset()
    gate: frozenset[str] = frozenset()

    def __or__(self, other: Reads) -> Reads:
        return Reads(self.facts | other.facts, self.any_age | other.any_age, self.conditions | other.conditions,
                     self.gate | other.gate)


@dataclass(frozen=True)
class Param:
    """One parameter of a block.

    ``kind``: concept | concepts | days | number | integer | text | texts | comparator | unit | choice | blocks
    | record | records. ``reads``: what a concept parameter makes the rule read (fact, any-age, condition,
    gate). ``concept_kinds``: the catalogue kinds a concept may have. ``fields``: a record's parameters.
    ``unit_of``: for a record with a ``unit``, the sibling concept parameter whose canonical unit it must be.
    """

    kind: str
    required: bool = True
    reads: tuple[str, ...] = ()
    concept_kinds: tuple[str, ...] = ()
    fields: Mapping[str, Param] = field(default_factory=dict)
    choices: tuple[str, ...] = ()
    unit_of: str | None = None


Run = Callable[[PatientFacts, Context, Params], Outcome]


@dataclass(frozen=True)
class Block:
    """A rule building block: its name in trial files, its parameters, its pure rule and any extra check."""

    name: str
    params: Mapping[str, Param]
    run: Run
    check: Callable[[Params, str], list[Issue]] | None = None  # what the declarations cannot say


# ---------------------------------------------------------------------------------------------- fact helpers
def _current(pf: PatientFacts, concepts: Iterable[str], as_of: date) -> list[Diagnosis]:
    """Current diagnoses of any of ``concepts`` (concept by concept, in order), dated on or before as-of."""
    return [d for c in concepts for d in pf.diagnosed(c) if d.is_current and (d.when is None or d.when <= as_of)]


def _valid(pf: PatientFacts, concepts: Iterable[str], as_of: date) -> list[Diagnosis]:
    """Diagnoses that are not refuted or entered in error, whatever their clinical status."""
    return [d for c in concepts for d in pf.diagnosed(c) if d.is_valid and (d.when is None or d.when <= as_of)]


def _positive_finding(pf: PatientFacts, concept: str, as_of: date, days: int | None = None) -> Fact | None:
    fact = latest(pf.of(concept), as_of, days)
    return fact if fact is not None and fact.value is True else None


def _test(pf: PatientFacts, concept: str, as_of: date) -> Fact | None:
    """The latest usable result of a test (not-usable ones are weighed by ``decide``)."""
    return latest([f for f in pf.of(concept) if f.usable], as_of)


def _recent(dxs: list[Diagnosis], as_of: date, days: int) -> list[Diagnosis]:
    return [d for d in dxs if d.when is None or in_window(d.when, as_of, days)]


def _unusable_value(fact: Fact) -> bool:
    return fact.value is None or isinstance(fact.value, bool | int)


def _recorded(what: str, hits: list[Diagnosis]) -> Outcome:
    return Outcome("met", f"{what} recorded ({hits[0].code})", tuple(d.source for d in hits))


def _uln(fact: Fact, concept: str, ctx: Context) -> tuple[float | None, str]:
    if fact.ref_high is not None:
        return fact.ref_high.value, "ULN from the reference range"
    unusable = " (its reference range is not usable)" if fact.ref_problem else ""
    if concept in ctx.site_uln:
        return ctx.site_uln[concept], f"ULN from the site default{unusable}"
    if concept in ctx.options.default_uln:
        return ctx.options.default_uln[concept], f"ULN from the configured default{unusable}"
    return None, f"no ULN{unusable}"


def number_text(x: float) -> str:
    """A threshold as the trial file writes it (``3``, ``2.0``), for reasons that quote the protocol."""
    return str(x)


def unit_text(unit: str) -> str:
    """A UCUM unit for a reason line: ``[IU]/mL`` reads ``IU/mL``."""
    return unit.replace("[", "").replace("]", "")


# ---------------------------------------------------------------------------------------------- generic blocks
def completed_years(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def age_between(pf: PatientFacts, ctx: Context, p: Params) -> Outcome:
    """min <= age in completed years <= max on the as-of date; a partial birth date may leave it undecided."""
    lo_bound, hi_bound = p["min"], p["max"]
    if pf.birth_date is None:
        return Outcome("unknown", "no birth date", (pf.ref,))
    low = completed_years(pf.birth_date.latest(), ctx.as_of)
    high = completed_years(pf.birth_date.earliest(), ctx.as_of)
    oks = {lo_bound <= a <= hi_bound for a in (low, high)}
    age = f"age {low}" if low == high else f"age {low}-{high} (partial birth date)"
    span = f"{lo_bound}-{hi_bound}"
    if oks == {True} and (low >= lo_bound and high <= hi_bound):
        return Outcome("met", f"{age} on {ctx.as_of}", (pf.ref,))
    if oks == {False} and (high < lo_bound or low > hi_bound):
        return Outcome("not-met", f"{age} on {ctx.as_of}, outside {span}", (pf.ref,))
    return Outcome("unknown", f"{age} on {ctx.as_of}: the {span} bound cannot be decided", (pf.ref,))


def score_in_range(pf: PatientFacts, ctx: Context, p: Params) -> Outcome:
    """The latest score of ``concept`` within ``window_days`` lies in [min, max]."""
    label, days = p["label"], p["window_days"]
    fact = latest(pf.of(p["concept"]), ctx.as_of, days)
    if fact is None:
        return Outcome("unknown", f"no {label} within {days} days")
    if not isinstance(fact.value, int) or isinstance(fact.value, bool):
        return Outcome("unknown", f"{label} on {fact.when} has no usable score", (fact.source,))
    result: Tri = "met" if p["min"] <= fact.value <= p["max"] else "not-met"
    return Outcome(result, f"{label} {fact.value} on {fact.when}", (fact.source,))


def quantity_threshold(pf: PatientFacts, ctx: Context, p: Params) -> Outcome:
    """The latest value of ``concept`` within ``window_days`` compared with ``value`` (in ``unit``) or with
    ``uln_multiple`` x the ULN (reference range, else the site's, else the configured default)."""
    label, days, op = p["label"], p["window_days"], p["comparator"]
    fact = latest(pf.of(p["concept"]), ctx.as_of, days)
    if fact is None:
        return Outcome("unknown", f"no {label} within {days} days")
    if fact.value is None or isinstance(fact.value, bool | int):
        return Outcome("unknown", f"{label} on {fact.when} not usable ({fact.problem or 'no value'})", (fact.source,))
    if "uln_multiple" not in p:
        threshold = p["value"]
        return Outcome(compare(fact.value, op, threshold),
                       f"{label} {show(fact.value)} on {fact.when} ({op} {fmt(threshold)} needed)", (fact.source,))
    uln, how = _uln(fact, p["concept"], ctx)
    if uln is None:
        return Outcome("unknown", f"{label} {show(fact.value)} on {fact.when}: {how}", (fact.source,))
    multiple = p["uln_multiple"]
    return Outcome(compare(fact.value, op, multiple * uln),
                   f"{label} {show(fact.value)} on {fact.when} = {fmt(fact.value.value / uln)}x ULN ({how}; "
                   f"{op} {fmt(multiple)}x ULN needed)", (fact.source,))


def _combined(pf: PatientFacts, ctx: Context, p: Params, combine: Callable[..., Tri]) -> Outcome:
    parts = [run_block(b["block"], pf, ctx, b["params"]) for b in p["of"]]
    return Outcome(combine(*(o.result for o in parts)), "; ".join(o.reason for o in parts),
                   tuple(e for o in parts for e in o.evidence))


def any_of(pf: PatientFacts, ctx: Context, p: Params) -> Outcome:
    """Three-valued OR: met if one part is met, not-met only if every part is not-met, else unknown."""
    return _combined(pf, ctx, p, tri_or)


def all_of(pf: PatientFacts, ctx: Context, p: Params) -> Outcome:
    """Three-valued AND: not-met if one part is not-met, met only if every part is met, else unknown."""
    return _combined(pf, ctx, p, tri_and)


def diagnosis_among(pf: PatientFacts, ctx: Context, p: Params) -> Outcome:
    """A current diagnosis among ``concepts`` -> met; else one among ``review`` -> unknown; else not-met."""
    hits = _current(pf, p["concepts"], ctx.as_of)
    if hits:
        return _recorded(p["what"], hits)
    review = _current(pf, p.get("review", ()), ctx.as_of)
    if review:
        return Outcome("unknown", str(p["review_reason"]).format(code=review[0].code), tuple(d.source for d in review))
    return Outcome("not-met", "no record")


def finding_or_diagnosis(pf: PatientFacts, ctx: Context, p: Params) -> Outcome:
    """A current diagnosis of ``concept`` -> met; else its latest finding (any age) decides; none -> not-met."""
    concept, what = p["concept"], p["what"]
    dx = _current(pf, (concept,), ctx.as_of)
    if dx:
        return _recorded(what, dx)
    finding = latest(pf.of(concept), ctx.as_of)
    if finding is not None and finding.value is True:
        return Outcome("met", f"{what} finding on {finding.when}", (finding.source,))
    if finding is not None and finding.value is False:
        return Outcome("not-met", f"{what} negative on {finding.when}", (finding.source,))
    if finding is not None:
        return Outcome("unknown", f"{p['finding_label']} on {finding.when} has no usable result", (finding.source,))
    return Outcome("not-met", "no record")


def qualitative_test(pf: PatientFacts, ctx: Context, p: Params) -> Outcome:
    """A diagnosis or a positive test (any age) -> met; a negative test within ``window_days`` -> not-met."""
    select = _valid if p.get("diagnosis_status", "current") == "valid" else _current
    dx = select(pf, p.get("diagnosis", ()), ctx.as_of)
    if dx:
        return _recorded(p["what"], dx)
    label, days = p["test_label"], p["window_days"]
    test = _test(pf, p["test"], ctx.as_of)
    if test and test.value is True:
        return Outcome("met", f"{label} positive on {test.when}", (test.source,))
    if test and test.value is False and in_window(test.when, ctx.as_of, days):
        return Outcome("not-met", f"{label} negative on {test.when}", (test.source,))
    return Outcome("unknown", f"no {label} within {days} days", (test.source,) if test else ())


# ---------------------------------------------------------------------------------------------- named blocks
def relapsed_refractory_diagnosis(pf: PatientFacts, ctx: Context, p: Params) -> Outcome:
    """A current ``diagnosis`` that is in relapse (ICD-10-CM "in relapse" code or a relapse clinical status) or
    refractory (a positive ``refractory`` finding or diagnosis) -> met; the diagnosis alone -> unknown."""
    what = p["what"]
    found = _current(pf, p["diagnosis"], ctx.as_of)
    if not found:
        return Outcome("not-met", p["absent"])
    refs = [d.source for d in found]
    relapsed = [d for d in found if d.in_relapse or d.clinical_status in p["relapse_statuses"]]
    if relapsed:
        first = relapsed[0]
        how = "ICD-10-CM 'in relapse' code" if first.in_relapse else f"clinical status {first.clinical_status}"
        return Outcome("met", f"relapsed {what} ({how})", tuple(d.source for d in relapsed))
    concept = p["refractory"]
    refractory = _positive_finding(pf, concept, ctx.as_of) or next(iter(_current(pf, (concept,), ctx.as_of)), None)
    if refractory is not None:
        return Outcome("met", f"refractory {what} ({concept} finding)", (*refs, refractory.source))
    return Outcome("unknown", f"{what} recorded; relapsed/refractory status not documented", tuple(refs))


def _not_usable(fact: Fact | None, label: str, days: int, none: str = "no") -> str:
    if fact is None:
        return f"{none} {label} within {days} days"
    return f"{label} on {fact.when} not usable ({fact.problem or 'no value'})"


def _reading_head(p: Params, literal: bool) -> str:
    """``organ-function reading (AST, ALT <= 3x ULN; bilirubin <= 2.0 mg/dL)`` or the literal one, from params."""
    by_multiple: dict[Any, list[str]] = {}
    for lim in p.get("uln_limits", ()):
        by_multiple.setdefault(lim["max_uln"], []).append(lim["label"])
    op, join, sep = (">", " or ", " or ") if literal else ("<=", ", ", "; ")
    parts = [f"{join.join(labels)} {op} {number_text(m)}x ULN" for m, labels in by_multiple.items()]
    parts += [f"{lim.get('short', lim['label'])} {op} {number_text(lim['max'])} {lim['unit']}"
              for lim in p.get("absolute_limits", ())]
    return f"{'literal' if literal else 'organ-function'} reading ({sep.join(parts)})"


class _Limits:
    """The parts of the organ-function rule under both readings, with their reasons and evidence."""

    def __init__(self) -> None:
        self.parts: list[Tri] = []
        self.literal: list[Tri] = []
        self.reasons: list[str] = []
        self.refs: list[str] = []

    def unknown(self, reason: str, fact: Fact | None) -> None:
        self.add("unknown", "unknown", reason, fact.source if fact else "")

    def add(self, within: Tri, beyond: Tri, reason: str, ref: str) -> None:
        self.parts.append(within)
        self.literal.append(beyond)
        self.reasons.append(reason)
        self.refs.append(ref)


def organ_function(pf: PatientFacts, ctx: Context, p: Params) -> Outcome:
    """Every ``uln_limits`` value <= max_uln x ULN and every ``absolute_limits`` value <= max, each the latest
    within ``window_days`` (the organ-function reading, RULES.md §1.1). Under ``organ_function_reading:
    literal`` the record's words apply instead: any of them above its limit."""
    days, out = p["window_days"], _Limits()
    for lim in p.get("uln_limits", ()):
        concept, label = lim["concept"], lim["label"]
        fact = latest(pf.of(concept), ctx.as_of, days)
        if fact is None or not isinstance(fact.value, Quantity):
            out.unknown(_not_usable(fact, label, days), fact)
            continue
        uln, how = _uln(fact, concept, ctx)
        if uln is None:
            out.unknown(f"{label} {show(fact.value)}: {how}", fact)
            continue
        limit = lim["max_uln"] * uln
        out.add(compare(fact.value, "<=", limit), compare(fact.value, ">", limit),
                f"{label} {show(fact.value)} = {fmt(fact.value.value / uln)}x ULN ({how})", fact.source)
    for lim in p.get("absolute_limits", ()):
        fact = latest(pf.of(lim["concept"]), ctx.as_of, days)
        if fact is None or not isinstance(fact.value, Quantity):
            out.unknown(_not_usable(fact, lim["label"], days, "no usable"), fact)
            continue
        out.add(compare(fact.value, "<=", lim["max"]), compare(fact.value, ">", lim["max"]),
                f"{lim['label']} {show(fact.value)}", fact.source)
    literal = ctx.options.organ_function_reading == "literal"
    result = tri_or(*out.literal) if literal else tri_and(*out.parts)
    return Outcome(result, f"{_reading_head(p, literal)}: " + "; ".join(out.reasons), tuple(out.refs))


def pregnancy(pf: PatientFacts, ctx: Context, p: Params) -> Outcome:
    """Not-met for ``exempt_sex``; met for a current pregnancy/lactation (diagnosis or finding) or a positive
    test within ``window_days``; not-met for a negative test within it; else unknown."""
    if pf.sex is not None and pf.sex == p.get("exempt_sex"):
        return Outcome("not-met", f"{pf.sex} sex", (pf.ref,))
    recorded = _current(pf, p["conditions"], ctx.as_of)
    if recorded:
        return Outcome("met", "pregnancy or lactation recorded as current", tuple(d.source for d in recorded))
    status = [f for f in (_positive_finding(pf, c, ctx.as_of) for c in p["findings"]) if f]
    if status:
        return Outcome("met", "pregnancy or lactation recorded as current", tuple(f.source for f in status))
    days = p["window_days"]
    test = latest(pf.of(p["test"]), ctx.as_of, days)
    if test is not None and test.value is True:
        return Outcome("met", f"positive pregnancy test on {test.when}", (test.source,))
    if test is not None and test.value is False:
        return Outcome("not-met", f"negative pregnancy test on {test.when}", (test.source,))
    older = latest(pf.of(p["test"]), ctx.as_of)
    return Outcome("unknown", f"no pregnancy test result within {days} days", (older.source if older else pf.ref,))


def infection(pf: PatientFacts, ctx: Context, p: Params) -> Outcome:
    """Active ``met`` diagnosis (sepsis) -> met; an infection with onset within ``window_days`` (or neutropenia
    with fever: a ``fever`` diagnosis or a temperature at the threshold) -> unknown (control status needs
    review); older infections or none -> not-met."""
    as_of, days = ctx.as_of, p["window_days"]
    severe = _current(pf, p["met"], as_of)
    if severe:
        return Outcome("met", f"{p['met_what']} ({severe[0].code})", tuple(d.source for d in severe))
    fever = p["fever_temperature"]
    recent = _recent(_current(pf, p["infections"], as_of), as_of, days)
    neutropenia = _recent(_current(pf, p["neutropenia"], as_of), as_of, days)
    febrile: list[Diagnosis | Fact] = [*_recent(_current(pf, p["fever"], as_of), as_of, days)]
    febrile += [f for f in pf.of(fever["concept"]) if in_window(f.when, as_of, days) and isinstance(f.value, Quantity)
                and holds(f.value.value, fever["comparator"], fever["value"])]
    if neutropenia and febrile:
        recent = recent + neutropenia
    if recent:
        codes = ", ".join(sorted({d.code for d in recent}))
        refs = (*[d.source for d in recent], *[f.source for f in febrile if isinstance(f, Fact)])
        return Outcome("unknown", f"active infection with onset in the last {days} days ({codes}): control status "
                       "needs review", refs)
    older = _current(pf, p["infections"], as_of)
    if older:
        return Outcome("not-met", f"no infection with onset in the last {days} days (older: "
                       f"{', '.join(sorted({d.code for d in older}))})", tuple(d.source for d in older))
    return Outcome("not-met", "no record")


def hepatitis(pf: PatientFacts, ctx: Context, p: Params) -> Outcome:
    """Active hepatitis B/C (diagnosis, HBsAg positive, HBV DNA above the threshold, HCV RNA detectable) -> met;
    HBsAg and HCV antibody (or RNA) negative within ``window_days`` -> not-met; else unknown."""
    as_of, days = ctx.as_of, p["window_days"]
    hbsag, hbv_dna = _test(pf, p["hbsag"], as_of), _test(pf, p["hbv_dna"], as_of)
    hcv_ab, hcv_rna = _test(pf, p["hcv_antibody"], as_of), _test(pf, p["hcv_rna"], as_of)
    active = _current(pf, p["active"], as_of)
    if active:
        return _recorded("active viral hepatitis", active)
    if hbsag and hbsag.value is True:
        return Outcome("met", f"HBsAg positive on {hbsag.when}", (hbsag.source,))
    threshold, unit = p["hbv_dna_above"]["value"], unit_text(p["hbv_dna_above"]["unit"])
    dna = compare(hbv_dna.value, ">", threshold) if hbv_dna and isinstance(hbv_dna.value, Quantity) else None
    if hbv_dna and isinstance(hbv_dna.value, Quantity) and dna == "met":
        return Outcome("met", f"HBV DNA {show(hbv_dna.value)} above {fmt(threshold)} {unit}", (hbv_dna.source,))
    if hcv_rna and hcv_rna.value is True:
        return Outcome("met", f"HCV RNA detectable on {hcv_rna.when}", (hcv_rna.source,))
    if hcv_ab and hcv_ab.value is True and hcv_rna is None:
        return Outcome("unknown", f"HCV antibody positive on {hcv_ab.when}, no HCV RNA result", (hcv_ab.source,))
    if hbv_dna and dna == "unknown":
        return Outcome("unknown", f"HBV DNA on {hbv_dna.when} detected but not quantified against "
                       f"{fmt(threshold)} {unit}", (hbv_dna.source,))
    hbv_ok = hbsag is not None and hbsag.value is False and in_window(hbsag.when, as_of, days)
    hcv_ok = hcv_ab is not None and in_window(hcv_ab.when, as_of, days) and (
        hcv_ab.value is False or (hcv_rna is not None and hcv_rna.value is False))
    refs = tuple(t.source for t in (hbsag, hcv_ab, hcv_rna, hbv_dna) if t)
    if hbv_ok and hcv_ok:
        return Outcome("not-met", f"HBsAg and HCV negative within {days} days", refs)
    if not refs:
        return Outcome("unknown", "no hepatitis B/C tests")
    missing = [n for n, ok in (("HBsAg", hbv_ok), ("HCV antibody", hcv_ok)) if not ok]
    return Outcome("unknown", f"no negative {' and '.join(missing)} within {days} days", refs)


def cardiac_event(pf: PatientFacts, ctx: Context, p: Params) -> Outcome:
    """An ``events`` diagnosis (or a ``dated_only`` one with a dated onset) with onset within ``window_days``,
    whatever its clinical status -> met; one without a date -> unknown; else not-met."""
    as_of, what, label = ctx.as_of, p["what"], p["window_label"]
    since = as_of - timedelta(days=p["window_days"])
    events = [d for c in p["events"] for d in pf.diagnosed(c) if d.is_valid]
    events += [d for c in p.get("dated_only", ()) for d in pf.diagnosed(c) if d.is_valid and d.onset is not None]
    recent = [d for d in events if d.when is not None and since <= d.when <= as_of]
    if recent:
        return Outcome("met", f"{what} ({recent[0].code}) on {recent[0].when}, within {label}",
                       tuple(d.source for d in recent))
    undated = [d for d in events if d.when is None]
    if undated:
        return Outcome("unknown", f"{what} ({undated[0].code}) without a date", tuple(d.source for d in undated))
    return Outcome("not-met", "no record" if not events else f"no event within {label}",
                   tuple(d.source for d in events))


def investigator_judgement(pf: PatientFacts, ctx: Context, p: Params) -> Outcome:
    """Always unknown: only the investigator can say (an advisory criterion)."""
    return Outcome("unknown", "investigator judgement")


# ---------------------------------------------------------------------------------------------- declarations
def _concept(*reads: str, kinds: tuple[str, ...] = (), required: bool = True) -> Param:
    return Param("concept", required, reads, kinds)


def _concepts(*reads: str, required: bool = True) -> Param:
    return Param("concepts", required, reads)


_TEXT, _DAYS, _NUMBER, _INT = Param("text"), Param("days"), Param("number"), Param("integer")
_WINDOWED_QUANTITY = {"concept": _concept("fact", kinds=("quantity",)), "label": _TEXT, "window_days": _DAYS,
                      "comparator": Param("comparator")}


def _check_format(p: Params, where: str) -> list[Issue]:
    text = p.get("review_reason")
    issues = []
    if "review" in p and text is None:
        issues.append(Issue("invalid", "review needs review_reason", (f"{where}.review_reason",)))
    if isinstance(text, str):
        try:
            text.format(code="X")
        except (KeyError, IndexError, ValueError):
            issues.append(Issue("invalid", "review_reason may use only the placeholder {code}",
                                (f"{where}.review_reason",)))
    return issues


def _check_threshold(p: Params, where: str) -> list[Issue]:
    value, multiple = "value" in p, "uln_multiple" in p
    if value == multiple:
        return [Issue("invalid", "give either value (with unit) or uln_multiple", (where,))]
    if value and "unit" not in p:
        return [Issue("invalid", "a value needs its unit", (f"{where}.unit",))]
    if multiple and "unit" in p:
        return [Issue("invalid", "a multiple of the ULN has no unit", (f"{where}.unit",))]
    return []


def _check_range(p: Params, where: str) -> list[Issue]:
    lo, hi = p.get("min"), p.get("max")
    if isinstance(lo, int | float) and isinstance(hi, int | float) and lo > hi:
        return [Issue("invalid", "min is above max", (f"{where}.min",))]
    return []


def _check_limits(p: Params, where: str) -> list[Issue]:
    if not p.get("uln_limits") and not p.get("absolute_limits"):
        return [Issue("invalid", "needs uln_limits or absolute_limits", (where,))]
    return []


BLOCKS: dict[str, Block] = {b.name: b for b in (
    Block("age-between", {"min": _INT, "max": _INT}, age_between, _check_range),
    Block("score-in-range", {"concept": _concept("fact", kinds=("score",)), "label": _TEXT, "window_days": _DAYS,
                             "min": _INT, "max": _INT}, score_in_range, _check_range),
    Block("quantity-threshold", {**_WINDOWED_QUANTITY, "value": Param("number", False),
                                 "unit": Param("unit", False), "uln_multiple": Param("number", False)},
          quantity_threshold, _check_threshold),
    Block("any-of", {"of": Param("blocks")}, any_of),
    Block("all-of", {"of": Param("blocks")}, all_of),
    Block("diagnosis-among", {"concepts": _concepts("condition"), "what": _TEXT,
                              "review": _concepts("condition", required=False),
                              "review_reason": Param("text", False)}, diagnosis_among, _check_format),
    Block("finding-or-diagnosis", {"concept": _concept("any-age", "condition"), "what": _TEXT,
                                   "finding_label": _TEXT}, finding_or_diagnosis),
    Block("qualitative-test", {"diagnosis": _concepts("condition", required=False),
                               "diagnosis_status": Param("choice", False, choices=("current", "valid")),
                               "what": _TEXT, "test": _concept("any-age", kinds=("qualitative",)),
                               "test_label": _TEXT, "window_days": _DAYS}, qualitative_test),
    Block("relapsed-refractory-diagnosis", {
        "diagnosis": _concepts("condition", "gate"), "refractory": _concept("any-age", "condition"),
        "relapse_statuses": Param("texts"), "what": _TEXT, "absent": _TEXT}, relapsed_refractory_diagnosis),
    Block("organ-function", {
        "window_days": _DAYS,
        "uln_limits": Param("records", False, fields={
            "concept": _concept("fact", kinds=("quantity",)), "label": _TEXT, "max_uln": Param("number")}),
        "absolute_limits": Param("records", False, fields={
            "concept": _concept("fact", kinds=("quantity",)), "label": _TEXT, "short": Param("text", False),
            "max": Param("number"), "unit": Param("unit")})}, organ_function, _check_limits),
    Block("pregnancy", {"conditions": _concepts("condition"), "findings": _concepts("any-age"),
                        "test": _concept("any-age", kinds=("qualitative",)), "window_days": _DAYS,
                        "exempt_sex": Param("choice", False, choices=("male", "female"))}, pregnancy),
    Block("infection", {
        "met": _concepts("condition"), "met_what": _TEXT, "infections": _concepts("condition"),
        "window_days": _DAYS, "neutropenia": _concepts("condition"), "fever": _concepts("condition"),
        "fever_temperature": Param("record", fields={
            "concept": _concept("fact", kinds=("quantity",)), "comparator": Param("comparator"),
            "value": Param("number"), "unit": Param("unit")})}, infection),
    Block("hepatitis", {
        "active": _concepts("condition"), "hbsag": _concept("any-age", kinds=("qualitative",)),
        "hbv_dna": _concept("any-age", kinds=("quantity",)),
        "hbv_dna_above": Param("record", fields={"value": Param("number"), "unit": Param("unit")}, unit_of="hbv_dna"),
        "hcv_antibody": _concept("any-age", kinds=("qualitative",)),
        "hcv_rna": _concept("any-age", kinds=("qualitative",)), "window_days": _DAYS}, hepatitis),
    Block("cardiac-event", {"events": _concepts("condition"), "dated_only": _concepts("condition", required=False),
                            "what": _TEXT, "window_days": _DAYS, "window_label": _TEXT}, cardiac_event),
    Block("investigator-judgement", {}, investigator_judgement),
)}


def run_block(name: str, pf: PatientFacts, ctx: Context, params: Params) -> Outcome:
    return BLOCKS[name].run(pf, ctx, params)


# ---------------------------------------------------------------------------------------------- reads
def _param_reads(param: Param, value: Any) -> Reads:
    if param.kind == "blocks":
        out = Reads()
        for b in value:
            out = out | block_reads(b["block"], b["params"])
        return out
    if param.kind in ("record", "records"):
        out = Reads()
        for rec in ([value] if param.kind == "record" else value):
            out = out | _reads_of(param.fields, rec)
        return out
    if param.kind not in ("concept", "concepts") or not param.reads:
        return Reads()
    keys = frozenset([value] if param.kind == "concept" else value)
    facts = keys if {"fact", "any-age"} & set(param.reads) else frozenset()
    return Reads(facts, keys if "any-age" in param.reads else frozenset(),
                 keys if "condition" in param.reads else frozenset(), keys if "gate" in param.reads else frozenset())


def _reads_of(spec: Mapping[str, Param], params: Params) -> Reads:
    out = Reads()
    for name, param in spec.items():
        if name in params:
            out = out | _param_reads(param, params[name])
    return out


def block_reads(name: str, params: Params) -> Reads:
    """The concepts a block reads with these (already checked) parameters."""
    return _reads_of(BLOCKS[name].params, params)


# ---------------------------------------------------------------------------------------------- checks
def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _concept_issue(key: Any, param: Param, where: str, catalogue: Mapping[str, ConceptInfo]) -> list[Issue]:
    if not isinstance(key, str) or not key:
        return [Issue("invalid", "must be a concept key", (where,))]
    if key not in catalogue:
        return [Issue("invalid", f"unknown concept key {key!r}", (where,))]
    if param.concept_kinds and catalogue[key].kind not in param.concept_kinds:
        wanted = " or ".join(param.concept_kinds)
        return [Issue("invalid", f"concept {key!r} is a {catalogue[key].kind}, not a {wanted}", (where,))]
    return []


def _simple_issue(param: Param, value: Any) -> str | None:
    kind = param.kind
    checks: dict[str, Callable[[Any], bool]] = {
        "days": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "number": _is_number,
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "text": lambda v: isinstance(v, str) and v.strip() != "",
        "unit": lambda v: isinstance(v, str) and v.strip() != "",
        "texts": lambda v: isinstance(v, list) and bool(v) and all(isinstance(t, str) and t for t in v),
        "comparator": lambda v: v in COMPARATORS,
        "choice": lambda v: v in param.choices,
    }
    if checks[kind](value):
        return None
    return {"days": "must be a whole number of days (0 or more)", "number": "must be a number",
            "integer": "must be an integer", "text": "must be a non-empty text", "unit": "must be a UCUM unit",
            "texts": "must be a non-empty list of texts", "comparator": f"must be one of {', '.join(COMPARATORS)}",
            "choice": f"must be one of {', '.join(param.choices)}"}[kind]


def _value_issues(param: Param, value: Any, where: str, catalogue: Mapping[str, ConceptInfo]) -> list[Issue]:
    if param.kind == "concept":
        return _concept_issue(value, param, where, catalogue)
    if param.kind == "concepts":
        if not isinstance(value, list) or not value:
            return [Issue("invalid", "must be a non-empty list of concept keys", (where,))]
        return [i for n, key in enumerate(value) for i in _concept_issue(key, param, f"{where}[{n}]", catalogue)]
    if param.kind == "blocks":
        if not isinstance(value, list) or not value:
            return [Issue("invalid", "must be a non-empty list of blocks", (where,))]
        return [i for n, b in enumerate(value) for i in _nested_issues(b, f"{where}[{n}]", catalogue)]
    if param.kind == "record":
        return _record_issues(param, value, where, catalogue)
    if param.kind == "records":
        if not isinstance(value, list) or not value:
            return [Issue("invalid", "must be a non-empty list", (where,))]
        return [i for n, rec in enumerate(value) for i in _record_issues(param, rec, f"{where}[{n}]", catalogue)]
    problem = _simple_issue(param, value)
    return [Issue("invalid", problem, (where,))] if problem else []


def _record_issues(param: Param, rec: Any, where: str, catalogue: Mapping[str, ConceptInfo]) -> list[Issue]:
    if not isinstance(rec, dict):
        return [Issue("invalid", "must be a mapping", (where,))]
    issues = _params_issues(param.fields, rec, where, catalogue)
    concept = rec.get("concept")
    if "unit" in rec and isinstance(concept, str):
        issues += _unit_issues(concept, rec["unit"], f"{where}.unit", catalogue)
    return issues


def _unit_issues(concept: str, unit: Any, where: str, catalogue: Mapping[str, ConceptInfo]) -> list[Issue]:
    info = catalogue.get(concept)
    if info is None or not isinstance(unit, str) or info.unit == unit:
        return []
    return [Issue("invalid", f"unit {unit!r} is not the canonical unit {info.unit!r} of {concept!r} "
                  "(thresholds are compared in it)", (where,))]


def _params_issues(spec: Mapping[str, Param], params: dict[str, Any], where: str,
                   catalogue: Mapping[str, ConceptInfo]) -> list[Issue]:
    issues = [Issue("invalid", f"unknown parameter {name!r}", (f"{where}.{name}",))
              for name in params if name not in spec]
    issues += [Issue("invalid", f"missing parameter {name!r}", (f"{where}.{name}",))
               for name, p in spec.items() if p.required and name not in params]
    for name, param in spec.items():
        if name in params:
            issues += _value_issues(param, params[name], f"{where}.{name}", catalogue)
            if param.unit_of and isinstance(params[name], dict) and isinstance(params.get(param.unit_of), str):
                issues += _unit_issues(params[param.unit_of], params[name].get("unit"), f"{where}.{name}.unit",
                                       catalogue)
    return issues


def _nested_issues(b: Any, where: str, catalogue: Mapping[str, ConceptInfo]) -> list[Issue]:
    if not isinstance(b, dict):
        return [Issue("invalid", "must be a mapping with block and params", (where,))]
    unknown = [Issue("invalid", f"unknown key {k!r}", (f"{where}.{k}",)) for k in b if k not in ("block", "params")]
    return unknown + param_issues(b.get("block"), b.get("params", {}), where, catalogue)


def param_issues(block: Any, params: Any, where: str, catalogue: Mapping[str, ConceptInfo]) -> list[Issue]:
    """Every problem of a block reference: an unknown block, unknown or missing parameters, values of the wrong
    kind, unknown concept keys, units that are not the concept's canonical unit. ``where`` is the path of the
    mapping holding ``block`` and ``params``."""
    if not isinstance(block, str) or block not in BLOCKS:
        known = ", ".join(sorted(BLOCKS))
        return [Issue("invalid", f"unknown block {block!r} (known: {known})", (f"{where}.block",))]
    if not isinstance(params, dict):
        return [Issue("invalid", "params must be a mapping", (f"{where}.params",))]
    spec = BLOCKS[block]
    issues = _params_issues(spec.params, params, f"{where}.params", catalogue)
    if "unit" in params and isinstance(params.get("concept"), str):
        issues += _unit_issues(params["concept"], params["unit"], f"{where}.params.unit", catalogue)
    if not issues and spec.check is not None:
        issues += spec.check(params, f"{where}.params")
    return issues


def windows(block: str, params: Params) -> list[int]:
    """Every ``window_days`` of a block and of the blocks it holds (the pull's look-back must outlast them)."""
    found = [params["window_days"]] if "window_days" in params else []
    if "of" in BLOCKS[block].params:
        for b in params["of"]:
            found += windows(b["block"], b["params"])
    return found


__all__ = ["BLOCKS", "COMPARATORS", "Block", "Context", "Outcome", "Param", "Params", "Reads", "block_reads",
           "completed_years", "number_text", "param_issues", "run_block", "unit_text", "windows"]
