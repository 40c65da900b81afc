"""Normalize: one FHIR resource (JSON dict) -> typed facts about its patient.

This is the only layer that reads FHIR codings. Codings are chosen by system through the ``CodeMap``;
quantities are converted to the concept's canonical UCUM unit; a value that cannot be used becomes a fact
with ``value=None`` and a ``problem`` naming the element path and units (never the value).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from bridge.errors import UnitError
from bridge.model import Diagnosis, Fact, Infusion, PartialDate, Quantity, Stay
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
    extensions = resource.get("extension") if isinstance(resource.get("extension"), list) else []
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


def _quantity(cmap: CodeMap, concept: str, q: Any, path: str,
              site_code: str | None) -> tuple[Quantity | None, str | None]:
    info = cmap.concepts[concept]
    if not isinstance(q, dict) or not isinstance(q.get("value"), int | float):
        return None, f"{path}: no numeric value"
    unit = q.get("code") or q.get("unit") or (cmap.site_units.get(site_code or "") if site_code else None)
    if not isinstance(unit, str) or not info.unit:
        return None, f"{path}: no unit"
    try:
        value = convert(float(q["value"]), unit, info.unit, info.molar)
    except UnitError:
        return None, f"{path}.code: unit {shown_unit(unit)} cannot be converted to {info.unit!r}"
    return Quantity(value, info.unit, q.get("comparator")), None


def _qualitative(cmap: CodeMap, resource: dict[str, Any]) -> bool | None:
    if isinstance(resource.get("valueBoolean"), bool):
        return bool(resource["valueBoolean"])
    for system, code in codings(resource.get("valueCodeableConcept")):
        answer = cmap.answer(system, code)
        if answer is not None:
            return answer
    text = resource.get("valueString") or (resource.get("valueCodeableConcept") or {}).get("text")
    if isinstance(text, str) and text.strip().lower() in _POSITIVE | _NEGATIVE:
        return text.strip().lower() in _POSITIVE
    q = resource.get("valueQuantity")
    if isinstance(q, dict) and isinstance(q.get("value"), int | float):
        return q.get("comparator") not in ("<", "<=") and q["value"] > 0
    for interp in resource.get("interpretation") or []:
        for system, code in codings(interp):
            answer = cmap.answer(system, code)
            if answer is not None:
                return answer
    return None


def _score(cmap: CodeMap, concept: str, resource: dict[str, Any]) -> int | None:
    if isinstance(resource.get("valueInteger"), int):
        return int(resource["valueInteger"])
    q = resource.get("valueQuantity")
    if isinstance(q, dict) and isinstance(q.get("value"), int | float) and float(q["value"]).is_integer():
        return int(q["value"])
    for system, code in codings(resource.get("valueCodeableConcept")):
        hit = cmap.score(system, code)
        if hit and hit[0] == concept:
            return hit[1]
    text = resource.get("valueString") or (resource.get("valueCodeableConcept") or {}).get("text")
    return _score_text(text)


def _score_text(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    m = re.fullmatch(r"\s*(?:class|grade|nyha|ecog)?\s*([0-5]|IV|III|II|I)\s*", text, flags=re.IGNORECASE)
    if not m:
        return None
    token = m.group(1).upper()
    return int(token) if token.isdigit() else _ROMAN[token]


def _ref_quantity(cmap: CodeMap, concept: str, rng: Any, bound: str) -> Quantity | None:
    if not isinstance(rng, dict) or not isinstance(rng.get(bound), dict):
        return None
    q, _ = _quantity(cmap, concept, rng[bound], bound, None)
    return q


def _value(cmap: CodeMap, concept: str, node: dict[str, Any], path: str, site: str | None) -> tuple[Any, str | None]:
    kind = cmap.concepts[concept].kind
    if kind == "quantity":
        return _quantity(cmap, concept, node.get("valueQuantity"), f"{path}.valueQuantity", site)
    if kind == "score":
        score = _score(cmap, concept, node)
        return score, None if score is not None else f"{path}.value[x]: no usable score"
    value = _qualitative(cmap, node)
    if value is None and kind == "finding" and not any(k.startswith("value") for k in node):
        value = True  # a finding recorded without a value is a finding present
    return value, None if value is not None else f"{path}.value[x]: no usable result"


def _observation_fact(cmap: CodeMap, node: dict[str, Any], parent: dict[str, Any], path: str) -> Fact | None:
    concept, site = _concept_of(cmap, node.get("code"))
    if concept is None:
        return None
    value, problem = _value(cmap, concept, node, path, site)
    rng = next(iter(node.get("referenceRange") or parent.get("referenceRange") or []), None)
    when = effective(parent, "effectiveDateTime", "effectivePeriod", "effectiveInstant") or local_date(
        parent.get("issued"))
    return Fact(concept, value, when, source_ref(parent), status=str(parent.get("status") or "unknown"),
                ref_low=_ref_quantity(cmap, concept, rng, "low"), ref_high=_ref_quantity(cmap, concept, rng, "high"),
                problem=problem)


def observation(resource: dict[str, Any], cmap: CodeMap, aliases: dict[str, str] | None = None) -> Normalized:
    out = Normalized(_subject(resource, aliases))
    out.activity = effective(resource, "effectiveDateTime", "effectivePeriod", "effectiveInstant")
    if resource.get("status") in IGNORED_STATUS:
        return out
    top = _observation_fact(cmap, resource, resource, "Observation")
    if top:
        out.facts.append(top)
    for i, comp in enumerate(resource.get("component") or []):
        if isinstance(comp, dict):
            fact = _observation_fact(cmap, comp, resource, f"Observation.component[{i}]")
            if fact:
                out.facts.append(fact)
    out.problems = [f"{f.source} {f.problem}" for f in out.facts if f.problem]
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
    if isinstance(dose, dict) and isinstance(dose.get("value"), int | float):
        unit = dose.get("code") or dose.get("unit") or "{cells}"
        try:
            cells = convert(float(dose["value"]), str(unit), "{cells}")
        except UnitError:
            problem = f"MedicationAdministration.dosage.dose.code: unit {shown_unit(str(unit))} is not a cell count"
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
