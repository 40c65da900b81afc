"""The FHIR R4 resources of a registry package, built from an allow-list of de-identified items.

Every resource carries the centre's security label in ``meta.security`` and references the package's
``Patient`` by its ``urn:uuid`` full URL. Ids are version-5 UUIDs derived from the pseudonym (Patient and
ResearchSubject: the same in every package of a patient) or from the package id (the rest), so a package
rebuilt from the same data is byte-for-byte the same. The study referenced is the ``Frame``'s trial (None: the
shipped one), by its registry id.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

from bridge.evaluate.grading import (
    AE_GRADE_EXTENSION,
    GRADING_SYSTEM,
    NCIT_SYSTEM,
    SEVERITY_SYSTEM,
    grade_code,
    severity_for,
)
from bridge.publish.study import BRIDGE_BASE
from bridge.registry.deid import age_quantity, birth_year, dated, generalised_address
from bridge.trial import Trial, load_trial

CENTRE_SYSTEM = "http://terminology.cibmtr.org/codesystem/transplant-center"
PSEUDONYM_SYSTEM = f"{BRIDGE_BASE}/NamingSystem/registry-pseudonym"
CRID_SYSTEM = f"{BRIDGE_BASE}/NamingSystem/registry-crid"
PACKAGE_SYSTEM = f"{BRIDGE_BASE}/NamingSystem/registry-package"
TIMEPOINT_SYSTEM = f"{BRIDGE_BASE}/CodeSystem/registry-timepoint"
ITEM_SYSTEM = f"{BRIDGE_BASE}/CodeSystem/registry-item"
RESPONSE_SYSTEM = f"{BRIDGE_BASE}/CodeSystem/aml-response"
SURVIVAL_SYSTEM = f"{BRIDGE_BASE}/CodeSystem/survival-status"
CELLS_PER_KG = f"{BRIDGE_BASE}/StructureDefinition/cells-per-kg"
GRADING_SYSTEM_EXT = f"{BRIDGE_BASE}/StructureDefinition/ae-grading-system"
STUDY_SYSTEM = "https://clinicaltrials.gov"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
PRODUCT_TEXT = "CD7 CAR-T cells"
OTHER_AE_TEXT = "Other adverse event (term outside the bridge's list)"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, f"{BRIDGE_BASE}/registry")
GENDERS = frozenset({"male", "female", "other", "unknown"})

RESPONSE_DISPLAY = {"CR": "Complete remission", "CRi": "CR with incomplete hematologic recovery",
                    "MLFS": "Morphologic leukemia-free state", "PR": "Partial remission", "NR": "No response",
                    "NE": "Not evaluable"}
ITEM_DISPLAY = {"age-at-infusion": "Age at infusion", "best-response": "Best response since infusion",
                "relapse": "Relapse since infusion", "survival-status": "Survival status"}
SURVIVAL_DISPLAY = {"alive": "Alive", "dead": "Dead", "unknown": "Unknown"}

Json = dict[str, Any]


@dataclass(frozen=True)
class Frame:
    """What every resource of one package shares: who (pseudonym), where (centre), when (day 0), which, and for
    which trial (None: the shipped one)."""

    pseudonym: str
    centre: str
    day0: date
    package_id: str
    trial: Trial | None = None

    def uid(self, name: str, per_patient: bool = False) -> str:
        base = self.pseudonym if per_patient else self.package_id
        return str(uuid.uuid5(_NAMESPACE, f"{base}/{name}"))

    @property
    def patient_url(self) -> str:
        return f"urn:uuid:{self.uid('Patient', per_patient=True)}"

    def head(self, resource_type: str, uid: str) -> Json:
        return {"resourceType": resource_type, "id": uid,
                "meta": {"security": [{"system": CENTRE_SYSTEM, "code": self.centre}]}}

    def subject(self) -> Json:
        return {"reference": self.patient_url}


def study_reference(trial: Trial | None = None) -> Json:
    """The trial's ResearchStudy, by its registry id (the package holds no ResearchStudy)."""
    study = (trial or load_trial()).id
    return {"identifier": {"system": STUDY_SYSTEM, "value": study}, "display": study}


def pseudonym_identifier(pseudonym: str) -> Json:
    return {"system": PSEUDONYM_SYSTEM, "value": pseudonym}


def patient(frame: Frame, source: Json | None, as_of: date, dead: bool) -> Json:
    """The de-identified Patient: pseudonym, gender, birth year (not over 89), deceased flag, state/country."""
    out = frame.head("Patient", frame.uid("Patient", per_patient=True))
    out["identifier"] = [pseudonym_identifier(frame.pseudonym)]
    gender = (source or {}).get("gender")
    if gender in GENDERS:
        out["gender"] = gender
    year = birth_year(source, as_of)
    if year is not None:
        out["birthDate"] = year
    out["deceasedBoolean"] = dead
    address = generalised_address(source)
    if address:
        out["address"] = address
    return out


def research_subject(frame: Frame, status: str) -> Json:
    out = frame.head("ResearchSubject", frame.uid("ResearchSubject", per_patient=True))
    out.update({"identifier": [pseudonym_identifier(frame.pseudonym)], "status": status,
                "study": study_reference(frame.trial), "individual": frame.subject()})
    return out


def _number(x: float) -> float | int:
    return int(x) if math.isfinite(x) and float(x).is_integer() else round(x, 3)


def medication_administration(frame: Frame, n: int, when: date, cells: float | None, cells_per_kg: float | None,
                              codings: list[Json]) -> Json:
    """An infusion: product codes (system and code only), year + relative day, cells and cells/kg."""
    out = frame.head("MedicationAdministration", frame.uid(f"MedicationAdministration/{n}"))
    out["status"] = "completed"
    out["medicationCodeableConcept"] = {**({"coding": codings} if codings else {}), "text": PRODUCT_TEXT}
    out["subject"] = frame.subject()
    out.update(dated("effectiveDateTime", when, frame.day0))
    if cells is not None:
        out["dosage"] = {"dose": {"value": _number(cells), "unit": "cells", "system": UCUM, "code": "{cells}"}}
    if cells_per_kg is not None:
        q = {"value": _number(cells_per_kg), "unit": "cells/kg", "system": UCUM, "code": "{cells}/kg"}
        out["extension"] = [{"url": CELLS_PER_KG, "valueQuantity": q}]
    return out


def _item(code: str) -> Json:
    return {"coding": [{"system": ITEM_SYSTEM, "code": code, "display": ITEM_DISPLAY[code]}],
            "text": ITEM_DISPLAY[code]}


def observation(frame: Frame, name: str, item: str, when: date | None, value: Json) -> Json:
    out = frame.head("Observation", frame.uid(f"Observation/{name}"))
    out.update({"status": "final", "code": _item(item), "subject": frame.subject()})
    if when is not None:
        out.update(dated("effectiveDateTime", when, frame.day0))
    out.update(value)
    return out


def age_at_infusion(frame: Frame, n: int, source: Json | None, when: date) -> Json | None:
    q = age_quantity(source, when)
    if q is None:
        return None
    out = observation(frame, f"age-{n}", "age-at-infusion", when, {"valueQuantity": q})
    out["code"]["coding"].append({"system": LOINC, "code": "30525-0", "display": "Age"})
    return out


def best_response(frame: Frame, category: str, when: date | None) -> Json:
    value = {"coding": [{"system": RESPONSE_SYSTEM, "code": category, "display": RESPONSE_DISPLAY[category]}]}
    return observation(frame, "best-response", "best-response", when, {"valueCodeableConcept": value})


def relapse(frame: Frame, relapsed: bool, when: date | None) -> Json:
    return observation(frame, "relapse", "relapse", when, {"valueBoolean": relapsed})


def survival(frame: Frame, status: str, when: date | None) -> Json:
    value = {"coding": [{"system": SURVIVAL_SYSTEM, "code": status, "display": SURVIVAL_DISPLAY[status]}]}
    return observation(frame, "survival", "survival-status", when, {"valueCodeableConcept": value})


def adverse_event(frame: Frame, n: int, term: str, grade: int | None, onset: date) -> Json:
    """An AE of the course: a term of the bridge's list (else a generic text), grade, severity, onset day."""
    out = frame.head("AdverseEvent", frame.uid(f"AdverseEvent/{n}"))
    known = term in GRADING_SYSTEM
    out.update({"actuality": "actual", "event": {"text": term if known else OTHER_AE_TEXT},
                "subject": frame.subject()})
    out.update(dated("date", onset, frame.day0))
    extensions: list[Json] = []
    if grade is not None:
        gc = grade_code(grade)
        coding = {"system": NCIT_SYSTEM, "code": gc.code, "display": gc.display}
        extensions.append({"url": AE_GRADE_EXTENSION, "valueCodeableConcept": {"coding": [coding]}})
        out["severity"] = {"coding": [{"system": SEVERITY_SYSTEM, "code": severity_for(grade)}]}
    if known:
        extensions.append({"url": GRADING_SYSTEM_EXT, "valueString": GRADING_SYSTEM[term]})
    if extensions:
        out["extension"] = extensions
    out["study"] = [study_reference(frame.trial)]
    return out


__all__ = ["CELLS_PER_KG", "CENTRE_SYSTEM", "CRID_SYSTEM", "GRADING_SYSTEM_EXT", "ITEM_SYSTEM", "PACKAGE_SYSTEM",
           "PSEUDONYM_SYSTEM", "RESPONSE_SYSTEM", "STUDY_SYSTEM", "SURVIVAL_SYSTEM", "TIMEPOINT_SYSTEM", "Frame",
           "adverse_event", "age_at_infusion", "best_response", "medication_administration", "observation",
           "patient", "pseudonym_identifier", "relapse", "research_subject", "study_reference", "survival"]
