"""Eligibility for NCT04762485 (RULES.md §2): 15 criteria, each met / not-met / unknown with evidence.

Pure: ``PatientFacts`` and ``RuleOptions`` in, ``Verdict``s out. No FHIR, no I/O, no clock. For an exclusion,
``met`` means the excluding condition is present.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

from bridge.config import RuleOptions
from bridge.evaluate.logic import compare, fmt, in_window, latest, show, tri_and, tri_or
from bridge.evaluate.unknowns import decide
from bridge.model import Diagnosis, Fact, PatientFacts, Quantity, Tri, Verdict

INCLUSIONS = ("inc-diagnosis", "inc-age", "inc-ecog", "inc-cd7-expression", "inc-cardiac", "inc-organ-function")
EXCLUSIONS = ("exc-pregnancy", "exc-congenital-immunodeficiency", "exc-cns-leukemia", "exc-active-infection",
              "exc-hepatitis", "exc-hiv", "exc-thrombosis", "exc-cardiac-event", "exc-investigator")
CRITERIA = INCLUSIONS + EXCLUSIONS
ADVISORY = frozenset({"exc-investigator"})


@dataclass(frozen=True)
class Screening:
    patient: str
    status: str
    verdicts: tuple[Verdict, ...]

    def verdict(self, criterion: str) -> Verdict:
        return next(v for v in self.verdicts if v.criterion == criterion)


def _v(cid: str, result: Tri, reason: str, *evidence: str) -> Verdict:
    return Verdict(cid, result, reason, tuple(dict.fromkeys(e for e in evidence if e)))


def _current(pf: PatientFacts, concept: str, as_of: date) -> list[Diagnosis]:
    return [d for d in pf.diagnosed(concept) if d.is_current and (d.when is None or d.when <= as_of)]


def _positive_finding(pf: PatientFacts, concept: str, as_of: date, days: int | None = None) -> Fact | None:
    fact = latest(pf.of(concept), as_of, days)
    return fact if fact is not None and fact.value is True else None


# ------------------------------------------------------------------ inclusions
def inc_diagnosis(pf: PatientFacts, o: RuleOptions) -> Verdict:
    leukemia = _current(pf, "acute-leukemia", o.as_of)
    if not leukemia:
        return _v("inc-diagnosis", "not-met", "no acute leukemia (AML, MPAL, T-ALL/T-LBL) recorded")
    refs = [d.source for d in leukemia]
    relapsed = [d for d in leukemia if d.in_relapse or d.clinical_status in ("relapse", "recurrence")]
    if relapsed:
        first = relapsed[0]
        how = "ICD-10-CM 'in relapse' code" if first.in_relapse else f"clinical status {first.clinical_status}"
        return _v("inc-diagnosis", "met", f"relapsed acute leukemia ({how})", *[d.source for d in relapsed])
    refractory = _positive_finding(pf, "refractory-disease", o.as_of) or next(
        iter(_current(pf, "refractory-disease", o.as_of)), None)
    if refractory is not None:
        return _v("inc-diagnosis", "met", "refractory acute leukemia (refractory-disease finding)",
                  *refs, refractory.source)
    return _v("inc-diagnosis", "unknown", "acute leukemia recorded; relapsed/refractory status not documented", *refs)


def completed_years(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def inc_age(pf: PatientFacts, o: RuleOptions) -> Verdict:
    if pf.birth_date is None:
        return _v("inc-age", "unknown", "no birth date", pf.ref)
    low, high = completed_years(pf.birth_date.latest(), o.as_of), completed_years(pf.birth_date.earliest(), o.as_of)
    oks = {12 <= a <= 65 for a in (low, high)}
    age = f"age {low}" if low == high else f"age {low}-{high} (partial birth date)"
    if oks == {True} and (low >= 12 and high <= 65):
        return _v("inc-age", "met", f"{age} on {o.as_of}", pf.ref)
    if oks == {False} and (high < 12 or low > 65):
        return _v("inc-age", "not-met", f"{age} on {o.as_of}, outside 12-65", pf.ref)
    return _v("inc-age", "unknown", f"{age} on {o.as_of}: the 12-65 bound cannot be decided", pf.ref)


def _score_rule(pf: PatientFacts, o: RuleOptions, concept: str, days: int, ok: Callable[[int], bool],
                label: str) -> tuple[Tri, str, str | None]:
    fact = latest(pf.of(concept), o.as_of, days)
    if fact is None:
        return "unknown", f"no {label} within {days} days", None
    if not isinstance(fact.value, int) or isinstance(fact.value, bool):
        return "unknown", f"{label} on {fact.when} has no usable score", fact.source
    result: Tri = "met" if ok(fact.value) else "not-met"
    return result, f"{label} {fact.value} on {fact.when}", fact.source


def inc_ecog(pf: PatientFacts, o: RuleOptions) -> Verdict:
    result, reason, src = _score_rule(pf, o, "ecog", o.windows.ecog, lambda s: 0 <= s <= 2, "ECOG")
    return _v("inc-ecog", result, reason, src or "")


def _quantity_rule(pf: PatientFacts, o: RuleOptions, concept: str, days: int, op: str, threshold: float,
                   label: str) -> tuple[Tri, str, str | None]:
    fact = latest(pf.of(concept), o.as_of, days)
    if fact is None:
        return "unknown", f"no {label} within {days} days", None
    if fact.value is None or isinstance(fact.value, bool | int):
        return "unknown", f"{label} on {fact.when} not usable ({fact.problem or 'no value'})", fact.source
    result = compare(fact.value, op, threshold)
    return result, f"{label} {show(fact.value)} on {fact.when} ({op} {fmt(threshold)} needed)", fact.source


def inc_cd7(pf: PatientFacts, o: RuleOptions) -> Verdict:
    result, reason, src = _quantity_rule(pf, o, "cd7-blast-percent", o.windows.cd7, ">", 30.0, "CD7+ blasts")
    return _v("inc-cd7-expression", result, reason, src or "")


def inc_cardiac(pf: PatientFacts, o: RuleOptions) -> Verdict:
    lvef, r1, s1 = _quantity_rule(pf, o, "lvef", o.windows.cardiac, ">=", 50.0, "LVEF")
    nyha, r2, s2 = _score_rule(pf, o, "nyha-class", o.windows.cardiac, lambda s: s in (1, 2), "NYHA class")
    result = tri_or(lvef, nyha)
    return _v("inc-cardiac", result, f"{r1}; {r2}", s1 or "", s2 or "")


def _uln(pf: PatientFacts, o: RuleOptions, fact: Fact, concept: str, site_uln: dict[str, float]) -> tuple[float, str]:
    if fact.ref_high is not None:
        return fact.ref_high.value, "ULN from the reference range"
    unusable = " (its reference range is not usable)" if fact.ref_problem else ""
    if concept in site_uln:
        return site_uln[concept], f"ULN from the site default{unusable}"
    return o.default_uln[concept], f"ULN from the configured default{unusable}"


def _liver(pf: PatientFacts, o: RuleOptions, concept: str, label: str, site_uln: dict[str, float]
           ) -> tuple[Fact | None, float | None, str]:
    fact = latest(pf.of(concept), o.as_of, o.windows.organ)
    if fact is None:
        return None, None, f"no {label} within {o.windows.organ} days"
    if fact.value is None or isinstance(fact.value, bool | int):
        return fact, None, f"{label} on {fact.when} not usable ({fact.problem or 'no value'})"
    uln, how = _uln(pf, o, fact, concept, site_uln)
    return fact, fact.value.value / uln if fact.value.comparator is None else None, \
        f"{label} {show(fact.value)} = {fmt(fact.value.value / uln)}x ULN ({how})"


def inc_organ_function(pf: PatientFacts, o: RuleOptions, site_uln: dict[str, float] | None = None) -> Verdict:
    site_uln = site_uln or {}
    parts: list[Tri] = []
    literal_parts: list[Tri] = []
    reasons, refs = [], []
    for concept, label in (("ast", "AST"), ("alt", "ALT")):
        fact, _ratio, why = _liver(pf, o, concept, label, site_uln)
        reasons.append(why)
        if fact is None or fact.value is None or isinstance(fact.value, bool | int):
            parts.append("unknown")
            literal_parts.append("unknown")
            refs.append(fact.source if fact else "")
            continue
        uln, _ = _uln(pf, o, fact, concept, site_uln)
        parts.append(compare(fact.value, "<=", 3 * uln))
        literal_parts.append(compare(fact.value, ">", 3 * uln))
        refs.append(fact.source)
    bili = latest(pf.of("bilirubin-total"), o.as_of, o.windows.organ)
    if bili is None or bili.value is None or isinstance(bili.value, bool | int):
        parts.append("unknown")
        literal_parts.append("unknown")
        reasons.append(f"no usable total bilirubin within {o.windows.organ} days" if bili is None else
                       f"total bilirubin on {bili.when} not usable ({bili.problem or 'no value'})")
        refs.append(bili.source if bili else "")
    else:
        parts.append(compare(bili.value, "<=", 2.0))
        literal_parts.append(compare(bili.value, ">", 2.0))
        reasons.append(f"total bilirubin {show(bili.value)}")
        refs.append(bili.source)
    if o.organ_function_reading == "literal":
        result = tri_or(*literal_parts)
        head = "literal reading (AST or ALT > 3x ULN or bilirubin > 2.0 mg/dL)"
    else:
        result = tri_and(*parts)
        head = "organ-function reading (AST, ALT <= 3x ULN; bilirubin <= 2.0 mg/dL)"
    return _v("inc-organ-function", result, f"{head}: " + "; ".join(reasons), *refs)


# ------------------------------------------------------------------ exclusions
def _dx_or_none(cid: str, hits: list[Diagnosis], what: str) -> Verdict:
    if hits:
        return _v(cid, "met", f"{what} recorded ({hits[0].code})", *[d.source for d in hits])
    return _v(cid, "not-met", "no record")


def exc_pregnancy(pf: PatientFacts, o: RuleOptions) -> Verdict:
    cid = "exc-pregnancy"
    if pf.sex == "male":
        return _v(cid, "not-met", "male sex", pf.ref)
    recorded = _current(pf, "pregnancy", o.as_of) + _current(pf, "lactation", o.as_of)
    if recorded:
        return _v(cid, "met", "pregnancy or lactation recorded as current", *[d.source for d in recorded])
    status = [f for f in (_positive_finding(pf, "pregnancy-status", o.as_of),
                          _positive_finding(pf, "lactation-status", o.as_of)) if f]
    if status:
        return _v(cid, "met", "pregnancy or lactation recorded as current", *[f.source for f in status])
    test = latest(pf.of("pregnancy-test"), o.as_of, o.windows.pregnancy)
    if test is not None and test.value is True:
        return _v(cid, "met", f"positive pregnancy test on {test.when}", test.source)
    if test is not None and test.value is False:
        return _v(cid, "not-met", f"negative pregnancy test on {test.when}", test.source)
    older = latest(pf.of("pregnancy-test"), o.as_of)
    return _v(cid, "unknown", f"no pregnancy test result within {o.windows.pregnancy} days",
              older.source if older else pf.ref)


def exc_immunodeficiency(pf: PatientFacts, o: RuleOptions) -> Verdict:
    cid = "exc-congenital-immunodeficiency"
    primary = _current(pf, "primary-immunodeficiency", o.as_of)
    if primary:
        return _dx_or_none(cid, primary, "primary immunodeficiency")
    review = _current(pf, "immunodeficiency-review", o.as_of)
    if review:
        return _v(cid, "unknown", f"other immunodeficiency ({review[0].code}): congenital or acquired needs review",
                  *[d.source for d in review])
    return _v(cid, "not-met", "no record")


def exc_cns(pf: PatientFacts, o: RuleOptions) -> Verdict:
    cid = "exc-cns-leukemia"
    dx = _current(pf, "cns-involvement", o.as_of)
    if dx:
        return _dx_or_none(cid, dx, "CNS involvement")
    finding = latest(pf.of("cns-involvement"), o.as_of)
    if finding is not None and finding.value is True:
        return _v(cid, "met", f"CNS involvement finding on {finding.when}", finding.source)
    if finding is not None and finding.value is False:
        return _v(cid, "not-met", f"CNS involvement negative on {finding.when}", finding.source)
    if finding is not None:
        return _v(cid, "unknown", f"CNS finding on {finding.when} has no usable result", finding.source)
    return _v(cid, "not-met", "no record")


def _recent(dxs: list[Diagnosis], as_of: date, days: int) -> list[Diagnosis]:
    return [d for d in dxs if d.when is None or in_window(d.when, as_of, days)]


def exc_infection(pf: PatientFacts, o: RuleOptions) -> Verdict:
    cid = "exc-active-infection"
    sepsis = _current(pf, "sepsis", o.as_of)
    if sepsis:
        return _v(cid, "met", f"active sepsis/septic shock ({sepsis[0].code})", *[d.source for d in sepsis])
    days = o.windows.infection
    recent = _recent(_current(pf, "infection", o.as_of), o.as_of, days)
    neutropenia = _recent(_current(pf, "neutropenia", o.as_of), o.as_of, days)
    febrile = _recent(_current(pf, "fever", o.as_of), o.as_of, days) + [
        f for f in pf.of("body-temperature") if in_window(f.when, o.as_of, days)
        and f.value is not None and not isinstance(f.value, bool | int) and f.value.value >= 38.0]
    if neutropenia and febrile:
        recent = recent + neutropenia
    if recent:
        codes = ", ".join(sorted({d.code for d in recent}))
        return _v(cid, "unknown", f"active infection with onset in the last {days} days ({codes}): control status "
                  "needs review", *[d.source for d in recent], *[f.source for f in febrile if isinstance(f, Fact)])
    older = _current(pf, "infection", o.as_of)
    if older:
        return _v(cid, "not-met", f"no infection with onset in the last {days} days (older: "
                  f"{', '.join(sorted({d.code for d in older}))})", *[d.source for d in older])
    return _v(cid, "not-met", "no record")


def _test(pf: PatientFacts, concept: str, as_of: date) -> Fact | None:
    """The latest usable result of a test (not-usable ones are weighed by ``decide``)."""
    return latest([f for f in pf.of(concept) if f.usable], as_of)


def exc_hepatitis(pf: PatientFacts, o: RuleOptions) -> Verdict:
    cid, days = "exc-hepatitis", o.windows.hepatitis
    hbsag, hbv_dna = _test(pf, "hbsag", o.as_of), _test(pf, "hbv-dna", o.as_of)
    hcv_ab, hcv_rna = _test(pf, "hcv-antibody", o.as_of), _test(pf, "hcv-rna", o.as_of)
    active = _current(pf, "hepatitis-active", o.as_of)
    if active:
        return _dx_or_none(cid, active, "active viral hepatitis")
    if hbsag and hbsag.value is True:
        return _v(cid, "met", f"HBsAg positive on {hbsag.when}", hbsag.source)
    threshold = o.hbv_dna_threshold_iu_ml
    dna = compare(hbv_dna.value, ">", threshold) if hbv_dna and isinstance(hbv_dna.value, Quantity) else None
    if hbv_dna and isinstance(hbv_dna.value, Quantity) and dna == "met":
        return _v(cid, "met", f"HBV DNA {show(hbv_dna.value)} above {fmt(threshold)} IU/mL", hbv_dna.source)
    if hcv_rna and hcv_rna.value is True:
        return _v(cid, "met", f"HCV RNA detectable on {hcv_rna.when}", hcv_rna.source)
    if hcv_ab and hcv_ab.value is True and hcv_rna is None:
        return _v(cid, "unknown", f"HCV antibody positive on {hcv_ab.when}, no HCV RNA result", hcv_ab.source)
    if hbv_dna and dna == "unknown":
        return _v(cid, "unknown", f"HBV DNA on {hbv_dna.when} detected but not quantified against "
                  f"{fmt(threshold)} IU/mL", hbv_dna.source)
    hbv_ok = hbsag is not None and hbsag.value is False and in_window(hbsag.when, o.as_of, days)
    hcv_ok = hcv_ab is not None and in_window(hcv_ab.when, o.as_of, days) and (
        hcv_ab.value is False or (hcv_rna is not None and hcv_rna.value is False))
    refs = [t.source for t in (hbsag, hcv_ab, hcv_rna, hbv_dna) if t]
    if hbv_ok and hcv_ok:
        return _v(cid, "not-met", f"HBsAg and HCV negative within {days} days", *refs)
    if not refs:
        return _v(cid, "unknown", "no hepatitis B/C tests")
    missing = [n for n, ok in (("HBsAg", hbv_ok), ("HCV antibody", hcv_ok)) if not ok]
    return _v(cid, "unknown", f"no negative {' and '.join(missing)} within {days} days", *refs)


def exc_hiv(pf: PatientFacts, o: RuleOptions) -> Verdict:
    cid = "exc-hiv"
    dx = [d for d in pf.diagnosed("hiv-infection") if d.is_valid and (d.when is None or d.when <= o.as_of)]
    if dx:
        return _dx_or_none(cid, dx, "HIV infection")
    test = _test(pf, "hiv-test", o.as_of)
    if test and test.value is True:
        return _v(cid, "met", f"HIV test positive on {test.when}", test.source)
    if test and test.value is False and in_window(test.when, o.as_of, o.windows.hiv):
        return _v(cid, "not-met", f"HIV test negative on {test.when}", test.source)
    return _v(cid, "unknown", f"no HIV test within {o.windows.hiv} days", *([test.source] if test else []))


def exc_thrombosis(pf: PatientFacts, o: RuleOptions) -> Verdict:
    return _dx_or_none("exc-thrombosis", _current(pf, "thrombosis", o.as_of), "active arterial/venous thrombosis")


def exc_cardiac_event(pf: PatientFacts, o: RuleOptions) -> Verdict:
    cid, days = "exc-cardiac-event", o.windows.cardiac_event
    since = o.as_of - timedelta(days=days)
    events = [d for c in ("myocardial-infarction", "severe-arrhythmia") for d in pf.diagnosed(c) if d.is_valid]
    events += [d for d in pf.diagnosed("old-myocardial-infarction") if d.is_valid and d.onset is not None]
    recent = [d for d in events if d.when is not None and since <= d.when <= o.as_of]
    if recent:
        return _v(cid, "met", f"myocardial infarction or severe arrhythmia ({recent[0].code}) on {recent[0].when}, "
                  "within 6 months", *[d.source for d in recent])
    undated = [d for d in events if d.when is None]
    if undated:
        return _v(cid, "unknown", f"myocardial infarction or severe arrhythmia ({undated[0].code}) without a date",
                  *[d.source for d in undated])
    return _v(cid, "not-met", "no record" if not events else "no event within 6 months",
              *[d.source for d in events])


def exc_investigator(pf: PatientFacts, o: RuleOptions) -> Verdict:
    return _v("exc-investigator", "unknown", "investigator judgement")


RULES: dict[str, Callable[[PatientFacts, RuleOptions], Verdict]] = {
    "inc-diagnosis": inc_diagnosis, "inc-age": inc_age, "inc-ecog": inc_ecog, "inc-cd7-expression": inc_cd7,
    "inc-cardiac": inc_cardiac, "inc-organ-function": inc_organ_function, "exc-pregnancy": exc_pregnancy,
    "exc-congenital-immunodeficiency": exc_immunodeficiency, "exc-cns-leukemia": exc_cns,
    "exc-active-infection": exc_infection, "exc-hepatitis": exc_hepatitis, "exc-hiv": exc_hiv,
    "exc-thrombosis": exc_thrombosis, "exc-cardiac-event": exc_cardiac_event, "exc-investigator": exc_investigator,
}


def overall_status(verdicts: tuple[Verdict, ...]) -> str:
    """ineligible / candidate / potential-candidate (RULES.md §2), ignoring exc-investigator."""
    counted = [v for v in verdicts if v.criterion not in ADVISORY]
    inc = [v.result for v in counted if v.criterion.startswith("inc-")]
    exc = [v.result for v in counted if v.criterion.startswith("exc-")]
    if "not-met" in inc or "met" in exc:
        return "ineligible"
    if all(r == "met" for r in inc) and all(r == "not-met" for r in exc):
        return "candidate"
    return "potential-candidate"


#: The fact concepts each rule reads: ``decide`` weighs their not-usable values (RULES.md §3).
RULE_CONCEPTS: dict[str, tuple[str, ...]] = {
    "inc-diagnosis": ("refractory-disease",), "inc-ecog": ("ecog",), "inc-cd7-expression": ("cd7-blast-percent",),
    "inc-cardiac": ("lvef", "nyha-class"), "inc-organ-function": ("ast", "alt", "bilirubin-total"),
    "exc-pregnancy": ("pregnancy-test", "pregnancy-status", "lactation-status"),
    "exc-cns-leukemia": ("cns-involvement",), "exc-active-infection": ("body-temperature",),
    "exc-hepatitis": ("hbsag", "hbv-dna", "hcv-antibody", "hcv-rna"), "exc-hiv": ("hiv-test",),
}


def _bound(cid: str, options: RuleOptions, site_uln: dict[str, float] | None) -> Callable[[PatientFacts], Verdict]:
    if cid == "inc-organ-function":
        return lambda pf: inc_organ_function(pf, options, site_uln)
    rule = RULES[cid]
    return lambda pf: rule(pf, options)


def screen(pf: PatientFacts, options: RuleOptions, site_uln: dict[str, float] | None = None) -> Screening:
    vs = tuple(decide(_bound(cid, options, site_uln), pf, RULE_CONCEPTS.get(cid, ()), options.as_of)
               for cid in CRITERIA)
    return Screening(pf.ref, overall_status(vs), vs)


__all__ = ["ADVISORY", "CRITERIA", "EXCLUSIONS", "INCLUSIONS", "RULES", "RULE_CONCEPTS", "Screening",
           "completed_years", "overall_status", "screen"]
