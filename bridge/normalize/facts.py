"""Normalize: one FHIR resource (JSON dict) -> typed facts about its patient.

This is the only layer that reads FHIR codings. Codings are chosen by system through the ``CodeMap``;
quantities are converted to the concept's canonical UCUM unit; a value that cannot be used becomes a fact
with ``value=None`` and a ``problem`` naming the element path and units (never the value).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any

from bridge.errors import UnitError
from bridge.model import Diagnosis, Fact, Infusion, PartialDate, Quantity, Span, Stay
from bridge.normalize.fhirpath import codings, effective, local_date, partial_date, ref_id, status_code
from bridge.normalize.mappings import ICD10_CM, CodeMap, icd_key
from bridge.normalize.units import convert

IGNORED_STATUS = frozenset({"entered-in-error", "cancelled", "registered"})
_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4}
_POSITIVE = {"positive", "pos", "detected", "reactive", "present", "yes", "true"}
_NEGATIVE = {"negative", "neg", "not detected", "undetected", "non-reactive", "nonreactive", "absent", "no", "false"}
_RELAPSE_BLOCKS = ("C91", "C92", "C93", "C94", "C95")
_GRADED = {"D8983": "crs", "G920": "icans"}


@dataclass
class Normalized:
    """What one resource contributes to its patient."""

    patient_id: str | None
    facts: list[Fact] = field(default_factory=list)
    diagnoses: list[Diagnosis] = field(default_factory=list)
    infusions: list[Infusion] = field(default_factory=list)
    stays: list[Stay] = field(default_factory=list)
    activity: date | None = None
    problems: list[str] = field(default_factory=list)
    demographics: dict[str, Any] | None = None


def _subject(resource: dict[str, Any], aliases: dict[str, str] | None) -> str | None:
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    return ref_id(resource.get("subject"), "Patient", aliases) or ref_id(resource.get("patient"), "Patient", aliases)


def source_ref(resource: dict[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id', '?')}"


# ---------------------------------------------------------------- Patient
ANIMAL_EXTENSION = "http://hl7.org/fhir/StructureDefinition/patient-animal"


def patient(resource: dict[str, Any]) -> Normalized:
    out = Normalized(_subject(resource, None))
    deceased_dt = partial_date(resource.get("deceasedDateTime"))
    extension = resource.get("extension")
    extensions = extension if isinstance(extension, list) else []
    out.demographics = {
        "birth_date": partial_date(resource.get("birthDate")),
        "sex": resource.get("gender") if isinstance(resource.get("gender"), str) else None,
        "deceased": resource.get("deceasedBoolean") is True or deceased_dt is not None,
        # a partial death date (year or year-month) is taken at its earliest day
        "deceased_date": deceased_dt.earliest() if deceased_dt else None,
        "animal": any(isinstance(e, dict) and e.get("url") == ANIMAL_EXTENSION for e in extensions),
    }
    return out


# ---------------------------------------------------------------- Observation
def _concept_of(cmap: CodeMap, concept: Any) -> tuple[str | None, str | None]:
    """(concept key, 'system|code') for the first coding that the map knows, whatever its position."""
    for system, code in codings(concept):
        key = cmap.observation_concept(system, code)
        if key:
            return key, f"{(system or '').strip()}|{(code or '').strip().upper()}"
    return None, None


_UNIT_DIGITS = re.compile(r"10[*^]-?\d+|(?<=[A-Za-z])\d")


def shown_unit(unit: str) -> str:
    """A unit as it may appear in a message: a unit-looking string, else a placeholder. A free-text unit field
    can hold anything a clerk typed (an MRN, a name), so digits outside powers of ten and exponents hide it."""
    text = unit.strip()
    if len(text) > 24 or re.search(r"\d", _UNIT_DIGITS.sub("", text)) or re.search(r"[A-Za-z]{9,}", text):
        return "(unit not shown)"
    return repr(text)


_SEROLOGY = frozenset({"hbsag", "hcv-antibody", "hiv-test"})
_INDEX_UNITS = frozenset({"", "1", "{INDEX}", "{COI}", "{S_CO_RATIO}", "{RATIO}", "{S/CO}"})
_BARE_IU = re.compile(r"(?<![\[A-Za-z])([munk]?)IU(?![A-Za-z\]])")
HCG_UNIT = "[IU]/L"
HCG_NEGATIVE_BELOW, HCG_POSITIVE_FROM = 5.0, 25.0  # RULES.md §3: < 5 negative, >= 25 positive, between equivocal


def _arbitrary_iu(unit: str) -> str:
    """``IU`` and ``mIU`` written as text spell the international unit ``[IU]`` / ``m[IU]`` (RULES.md §3) where the
    canonical unit is ``[IU]``-based; enzyme activity (AST, ALT in IU/L) keeps pint's enzyme ``IU``."""
    return _BARE_IU.sub(lambda m: f"{m.group(1)}[IU]", unit)


def _number(q: Any) -> float | None:
    """The numeric ``value`` of a FHIR Quantity (JSON number, not a boolean), else None."""
    if not isinstance(q, dict) or isinstance(q.get("value"), bool) or not isinstance(q.get("value"), int | float):
        return None
    return float(q["value"])


def _to_unit(value: float, unit: str, target: str, molar: float | None = None) -> float | None:
    """``value`` in ``unit`` converted to ``target`` (``IU`` as text meaning ``[IU]`` where the target is
    ``[IU]``-based); None when the unit cannot be converted."""
    try:
        return convert(value, _arbitrary_iu(unit) if "[IU]" in target else unit, target, molar)
    except (UnitError, ArithmeticError, ValueError):
        return None


def _convert_value(cmap: CodeMap, concept: str, q: Any, path: str, site_code: str | None, target: str,
                   molar: float | None = None) -> tuple[Quantity | None, str | None]:
    """A FHIR Quantity converted to ``target``, checked against the concept's plausible range."""
    number = _number(q)
    if number is None:
        return None, f"{path}: no numeric value"
    unit = q.get("code") or q.get("unit") or (cmap.site_units.get(site_code or "") if site_code else None)
    if not isinstance(unit, str) or not target:
        return None, f"{path}: no unit"
    value = _to_unit(number, unit, target, molar)
    if value is None:
        shown = _arbitrary_iu(unit) if "[IU]" in target else unit
        return None, f"{path}.code: unit {shown_unit(shown)} cannot be converted to {target!r}"
    return _plausible(cmap, concept, Quantity(value, target, _comparator(q)), path)


def _comparator(q: dict[str, Any]) -> str | None:
    comparator = q.get("comparator")
    return comparator if comparator in ("<", "<=", ">=", ">") else None


def _plausible(cmap: CodeMap, concept: str, q: Quantity, path: str) -> tuple[Quantity | None, str | None]:
    rng = cmap.plausible.get(concept)
    if not math.isfinite(q.value) or (rng is not None and not rng.holds(q.value)):
        shown = f" ({rng.describe()} {q.unit})" if rng is not None else ""
        return None, f"{path}.value: outside the plausible range of {concept}{shown}"
    return q, None


def _quantity(cmap: CodeMap, concept: str, q: Any, path: str,
              site_code: str | None) -> tuple[Quantity | None, str | None]:
    info = cmap.concepts[concept]
    return _convert_value(cmap, concept, q, path, site_code, info.unit or "", info.molar)


def _interpretation(cmap: CodeMap, node: dict[str, Any]) -> tuple[bool, bool | None]:
    """(found, reading) from ``Observation.interpretation``: the first code the table knows."""
    interps = node.get("interpretation")
    for interp in interps if isinstance(interps, list) else []:
        for system, code in codings(interp):
            known, reading = cmap.interpretation(system, code)
            if known:
                return True, reading
    return False, None


def _answer(cmap: CodeMap, node: dict[str, Any]) -> bool | None:
    """A coded or written answer: valueBoolean, a known valueCodeableConcept code, or its text."""
    if isinstance(node.get("valueBoolean"), bool):
        return bool(node["valueBoolean"])
    for system, code in codings(node.get("valueCodeableConcept")):
        answer = cmap.answer(system, code)
        if answer is not None:
            return answer
    cc = node.get("valueCodeableConcept")
    text = node.get("valueString") or (cc.get("text") if isinstance(cc, dict) else None)
    if isinstance(text, str) and text.strip().lower() in _POSITIVE | _NEGATIVE:
        return text.strip().lower() in _POSITIVE
    return None


def _index_reading(cmap: CodeMap, concept: str, q: dict[str, Any], path: str) -> tuple[bool | None, str | None]:
    """Serology as a signal-to-cut-off index: < 1.0 negative, >= 1.0 positive (RULES.md §3)."""
    unit = str(q.get("code") or q.get("unit") or "").strip().upper()
    if unit not in _INDEX_UNITS:
        return None, f"{path}.code: unit {shown_unit(unit)} is not a signal-to-cut-off index"
    value, problem = _plausible(cmap, concept, Quantity(float(q["value"]), "{index}", _comparator(q)), path)
    if value is None:
        return None, problem
    return _side(value, 1.0, 1.0, path)


def _side(q: Quantity, negative_below: float, positive_from: float, path: str) -> tuple[bool | None, str | None]:
    """Negative below one cut-off, positive from the other; a reported bound that straddles them is unknown."""
    low = q.value if q.comparator in (None, ">", ">=") else -math.inf
    high = q.value if q.comparator in (None, "<", "<=") else math.inf
    strict_high = q.comparator == "<"
    if high < negative_below or (strict_high and high <= negative_below):
        return False, None
    if low >= positive_from:
        return True, None
    return None, f"{path}.value: equivocal against the cut-offs ({negative_below:g} / {positive_from:g})"


def _number_reading(cmap: CodeMap, concept: str, node: dict[str, Any], path: str) -> tuple[bool | None, str | None]:
    q = node.get("valueQuantity")
    if concept in _SEROLOGY and isinstance(q, dict):
        return _index_reading(cmap, concept, q, path)
    if concept == "pregnancy-test":
        hcg, problem = _convert_value(cmap, concept, q, path, None, HCG_UNIT)
        return (None, problem) if hcg is None else _side(hcg, HCG_NEGATIVE_BELOW, HCG_POSITIVE_FROM, path)
    return None, f"{path}: a number is not read as a {concept} result"


def _qualitative(cmap: CodeMap, concept: str, node: dict[str, Any], path: str) -> tuple[bool | None, str | None]:
    """RULES.md §3 "Qualitative tests": (1) interpretation, (2) a coded answer, (3) a number against its cut-off."""
    found, reading = _interpretation(cmap, node)
    if found:
        return reading, None if reading is not None else f"{path}.interpretation: indeterminate or equivocal"
    answer = _answer(cmap, node)
    if answer is not None:
        return answer, None
    if _number(node.get("valueQuantity")) is not None:
        return _number_reading(cmap, concept, node, f"{path}.valueQuantity")
    return None, f"{path}.value[x]: no usable result"


def _finding(cmap: CodeMap, node: dict[str, Any], path: str) -> tuple[bool | None, str | None]:
    """A finding: recorded without a value is present; else interpretation, then a coded answer."""
    if not any(k.startswith("value") for k in node):
        found, reading = _interpretation(cmap, node)
        return (reading if found else True), None if not found or reading is not None else \
            f"{path}.interpretation: indeterminate"
    found, reading = _interpretation(cmap, node)
    if found:
        return reading, None if reading is not None else f"{path}.interpretation: indeterminate or equivocal"
    answer = _answer(cmap, node)
    return answer, None if answer is not None else f"{path}.value[x]: no usable result"


def _viral_load(cmap: CodeMap, concept: str, node: dict[str, Any], path: str,
                site: str | None) -> tuple[Quantity | None, str | None]:
    """HBV DNA: a number in [IU]/mL; *not detected* is below any threshold (0), *detected* alone is known only to
    be above 0 (unknown against a threshold); ``copies/mL`` is assay-dependent and not usable (RULES.md §3)."""
    unit = cmap.concepts[concept].unit or ""
    found, reading = _interpretation(cmap, node)
    answer = reading if found else _answer(cmap, node)
    if answer is False:
        return Quantity(0.0, unit), None
    if isinstance(node.get("valueQuantity"), dict):
        return _quantity(cmap, concept, node["valueQuantity"], f"{path}.valueQuantity", site)
    if answer is True:
        return Quantity(0.0, unit, ">"), None
    if found:
        return None, f"{path}.interpretation: indeterminate or equivocal"
    return None, f"{path}.value[x]: no usable result"


def _score(cmap: CodeMap, concept: str, resource: dict[str, Any]) -> int | float | None:
    if isinstance(resource.get("valueInteger"), int) and not isinstance(resource.get("valueInteger"), bool):
        return int(resource["valueInteger"])
    value = _number(resource.get("valueQuantity"))
    if value is not None:
        return int(value) if value.is_integer() else value
    for system, code in codings(resource.get("valueCodeableConcept")):
        hit = cmap.score(system, code)
        if hit and hit[0] == concept:
            return hit[1]
    cc = resource.get("valueCodeableConcept")
    text = resource.get("valueString") or (cc.get("text") if isinstance(cc, dict) else None)
    return _score_text(text)


def _score_value(cmap: CodeMap, concept: str, node: dict[str, Any], path: str) -> tuple[int | None, str | None]:
    score = _score(cmap, concept, node)
    if score is None:
        return None, f"{path}.value[x]: no usable score"
    rng = cmap.plausible.get(concept)
    if isinstance(score, float) or (rng is not None and not rng.holds(score)):
        shown = f" ({rng.describe()})" if rng is not None else ""
        return None, f"{path}.value[x]: outside the plausible range of {concept}{shown}"
    return score, None
def _score_text(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    m = re.fullmatch(r"\s*(?:class|grade|nyha|ecog)?\s*([0-5]|IV|III|II|I)\s*", text, flags=re.IGNORECASE)
    if not m:
        return None
    token = m.group(1).upper()
    return int(token) if token.isdigit() else _ROMAN[token]


_DEFAULT_LIMIT = "the configured default limit applies"


def _ref_limit(cmap: CodeMap, concept: str, rng: Any, bound: str, path: str) -> tuple[Quantity | None, str | None]:
    """A reference range bound in the canonical unit; one that is not usable (unconvertible, negative, or a
    ``high`` of zero or below) is None with why (the configured default limit then applies)."""
    if not isinstance(rng, dict) or bound not in rng:
        return None, None
    info = cmap.concepts[concept]
    q = rng[bound]
    number = _number(q)
    if number is None:
        return None, f"{path}.{bound}: no numeric value; {_DEFAULT_LIMIT}"
    unit = str(q.get("code") or q.get("unit") or info.unit)
    bound_of = _ref_bound if number else _ref_bound.__wrapped__  # 0.0 and -0.0 would share one key: not cached
    return bound_of(number, unit, info.unit or "", info.molar, bound, path)


@lru_cache(maxsize=4096)
def _ref_bound(number: float, unit: str, target: str, molar: float | None, bound: str,
               path: str) -> tuple[Quantity | None, str | None]:
    """``_ref_limit`` once the bound is read: a function of these values alone, remembered (a laboratory sends
    the same reference range with every result of a test; ``Quantity`` is frozen)."""
    value = _to_unit(number, unit, target, molar)
    if value is None:
        return None, f"{path}.{bound}.code: unit {shown_unit(unit)} cannot be converted; {_DEFAULT_LIMIT}"
    if not math.isfinite(value) or value < 0 or (bound == "high" and value <= 0):
        return None, f"{path}.{bound}: {'zero or negative' if bound == 'high' else 'negative'}; {_DEFAULT_LIMIT}"
    return Quantity(value, target), None


def _value(cmap: CodeMap, concept: str, node: dict[str, Any], path: str, site: str | None) -> tuple[Any, str | None]:
    kind = cmap.concepts[concept].kind
    if concept == "hbv-dna":
        return _viral_load(cmap, concept, node, path, site)
    if kind == "quantity":
        return _quantity(cmap, concept, node.get("valueQuantity"), f"{path}.valueQuantity", site)
    if kind == "score":
        return _score_value(cmap, concept, node, path)
    if kind == "finding":
        return _finding(cmap, node, path)
    return _qualitative(cmap, concept, node, path)


def _observation_fact(cmap: CodeMap, node: dict[str, Any], parent: dict[str, Any], path: str,
                      effective_date: date | None) -> Fact | None:
    """The fact of ``node`` (the Observation or one of its components); ``effective_date`` is the parent's
    ``effective[x]`` date (``observation`` reads it once for every node)."""
    concept, site = _concept_of(cmap, node.get("code"))
    if concept is None:
        return None
    value, problem = _value(cmap, concept, node, path, site)
    ranges = node.get("referenceRange") or parent.get("referenceRange")
    rng = next(iter(ranges), None) if isinstance(ranges, list) else None
    rpath = "Observation.referenceRange[0]"
    low, low_problem = _ref_limit(cmap, concept, rng, "low", rpath)
    high, high_problem = _ref_limit(cmap, concept, rng, "high", rpath)
    when = effective_date or local_date(parent.get("issued"))
    if when is None and problem is None:
        problem = "Observation.effective[x]: no date (effective[x] and issued absent)"
    if problem is not None:
        value = None
    return Fact(concept, value, when, source_ref(parent), status=str(parent.get("status") or "unknown"),
                ref_low=low, ref_high=high, problem=problem, ref_problem=high_problem or low_problem,
                span=None if problem is None else span_of(cmap, concept))


_UNBOUNDED = 1e12  # stands for "no upper bound" when a not-usable quantity's concept has none


def span_of(cmap: CodeMap, concept: str) -> Span:
    """Where a not-usable value of ``concept`` may lie: its plausible range (RULES.md §3)."""
    info, rng = cmap.concepts[concept], cmap.plausible.get(concept)
    low = rng.low if rng is not None and rng.low is not None else 0.0
    high = rng.high if rng is not None and rng.high is not None else _UNBOUNDED
    if info.kind == "score":
        return Span("score", low, high if high < _UNBOUNDED else 10)
    if info.kind == "quantity":
        return Span("quantity", low, high, info.unit or "")
    return Span("bool")


def observation(resource: dict[str, Any], cmap: CodeMap, aliases: dict[str, str] | None = None) -> Normalized:
    out = Normalized(_subject(resource, aliases))
    out.activity = effective(resource, "effectiveDateTime", "effectivePeriod", "effectiveInstant")
    if resource.get("status") in IGNORED_STATUS:
        return out
    top = _observation_fact(cmap, resource, resource, "Observation", out.activity)
    if top:
        out.facts.append(top)
    for i, comp in enumerate(resource.get("component") or []):
        if isinstance(comp, dict):
            fact = _observation_fact(cmap, comp, resource, f"Observation.component[{i}]", out.activity)
            if fact:
                out.facts.append(fact)
    out.problems = [f"{f.source} {f.problem}" for f in out.facts if f.problem]
    out.problems += [f"{f.source} {f.ref_problem}" for f in out.facts if f.ref_problem]
    return out


# ---------------------------------------------------------------- Condition
def _relapse_and_grade(system: str | None, code: str | None) -> tuple[bool, int | None]:
    """ICD-10-CM "in relapse" fifth character for C91-C95, and the CRS/ICANS grade in D89.83x / G92.0x."""
    if not code:
        return False, None
    key = icd_key(code)
    relapse = (system or "").strip() == ICD10_CM and key.startswith(_RELAPSE_BLOCKS) and len(key) >= 5 \
        and key[4] == "2"
    for prefix in _GRADED:
        digit = key[len(prefix):]
        if key.startswith(prefix) and len(digit) == 1 and digit in "12345":
            return relapse, int(digit)
    return relapse, None


def condition(resource: dict[str, Any], cmap: CodeMap, aliases: dict[str, str] | None = None) -> Normalized:
    out = Normalized(_subject(resource, aliases))
    onset = effective(resource, "onsetDateTime", "onsetPeriod")
    recorded = local_date(resource.get("recordedDate"))
    out.activity = onset or recorded
    concepts: set[str] = set()
    relapse, grade = False, None
    chosen: tuple[str | None, str | None] = (None, None)
    for system, code in codings(resource.get("code")):
        found = cmap.condition_concepts(system, code)
        if found:
            concepts |= found
            r, g = _relapse_and_grade(system, code)
            relapse, grade = relapse or r, grade if grade is not None else g
            chosen = chosen if chosen[0] else (system, code)
    if not concepts:
        return out
    out.diagnoses.append(Diagnosis(
        frozenset(concepts), (chosen[0] or "").strip(), (chosen[1] or "").strip(), source_ref(resource),
        clinical_status=status_code(resource.get("clinicalStatus"), "condition-clinical"),
        verification_status=status_code(resource.get("verificationStatus"), "condition-ver-status"),
        onset=onset, recorded=recorded, abatement=effective(resource, "abatementDateTime", "abatementPeriod"),
        in_relapse=relapse, grade=grade))
    return out


# ---------------------------------------------------------------- Encounter
def encounter(resource: dict[str, Any], aliases: dict[str, str] | None = None) -> Normalized:
    out = Normalized(_subject(resource, aliases))
    klass = resource.get("class")
    code = klass.get("code") if isinstance(klass, dict) else None
    period: dict[str, Any] = resource["period"] if isinstance(resource.get("period"), dict) else {}
    start, end = local_date(period.get("start")), local_date(period.get("end"))
    out.activity = end or start
    out.stays.append(Stay(source_ref(resource), code if isinstance(code, str) else None,
                          resource.get("status") if isinstance(resource.get("status"), str) else None, start, end))
    return out


# ---------------------------------------------------------------- MedicationAdministration
def _medication_concept(cmap: CodeMap, resource: dict[str, Any]) -> str | None:
    concept, _ = _concept_of(cmap, resource.get("medicationCodeableConcept"))
    if concept:
        return concept
    ref = (resource.get("medicationReference") or {}).get("reference")
    for contained in resource.get("contained") or []:
        if isinstance(contained, dict) and f"#{contained.get('id')}" == ref:
            concept, _ = _concept_of(cmap, contained.get("code"))
    return concept


def medication_administration(resource: dict[str, Any], cmap: CodeMap,
                              aliases: dict[str, str] | None = None) -> Normalized:
    out = Normalized(_subject(resource, aliases))
    when = effective(resource, "effectiveDateTime", "effectivePeriod")
    out.activity = when
    concept = _medication_concept(cmap, resource)
    if concept is None or cmap.concepts[concept].kind != "product":
        return out
    dosage = resource.get("dosage")
    dose = dosage.get("dose") if isinstance(dosage, dict) else None
    cells, problem = None, None
    number = _number(dose)
    if isinstance(dose, dict) and number is not None:
        unit = str(dose.get("code") or dose.get("unit") or "{cells}")
        cells = _to_unit(number, unit, "{cells}")
        if cells is None:
            problem = f"MedicationAdministration.dosage.dose.code: unit {shown_unit(unit)} is not a cell count"
        rng = cmap.plausible.get(concept)
        if cells is not None and (not math.isfinite(cells) or (rng is not None and not rng.holds(cells))):
            cells = None
            problem = f"MedicationAdministration.dosage.dose.value: outside the plausible range of infused cells " \
                      f"({rng.describe() if rng else 'finite'})"
    else:
        problem = "MedicationAdministration.dosage.dose: no cell count"
    out.infusions.append(Infusion(concept, when, str(resource.get("status") or "unknown"), cells,
                                  source_ref(resource), problem))
    if problem:
        out.problems.append(f"{source_ref(resource)} {problem}")
    return out


def normalize(resource: dict[str, Any], cmap: CodeMap, aliases: dict[str, str] | None = None) -> Normalized | None:
    """Dispatch by resourceType; ``None`` for types the bridge does not read."""
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        return patient(resource)
    if rtype == "Observation":
        return observation(resource, cmap, aliases)
    if rtype == "Condition":
        return condition(resource, cmap, aliases)
    if rtype == "Encounter":
        return encounter(resource, aliases)
    if rtype == "MedicationAdministration":
        return medication_administration(resource, cmap, aliases)
    return None


READ_TYPES = frozenset({"Patient", "Observation", "Condition", "Encounter", "MedicationAdministration"})

__all__ = ["READ_TYPES", "Normalized", "PartialDate", "normalize", "source_ref"]
