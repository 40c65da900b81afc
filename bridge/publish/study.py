"""The ResearchStudy the bridge publishes for NCT04762485, and its enrollment Group (RULES.md §6).

Everything is built through the R4B model (``bridge.fhirmodels.build``) and is valid FHIR R4 4.0.1 on the wire
(``bridge.publish.validate.validate_output``). The choices made here — ``active`` for the registry's "Unknown"
status, the identifier systems, the criterion code system, contained sponsor/site/enrollment — are explained
in ``docs/published-resources.md``. The bridge's own canonical URLs (code systems, extensions, naming systems)
all live under ``BRIDGE_BASE`` and are defined in this module.
"""

from __future__ import annotations

from typing import Any

from bridge import STUDY_ID
from bridge.fhirmodels import build
from bridge.publish.criteria import CRITERIA, CriterionText

CTGOV_SYSTEM = "https://clinicaltrials.gov"
BRIDGE_BASE = "https://cd7-bridge.example.org/fhir"
CRITERIA_SYSTEM = f"{BRIDGE_BASE}/CodeSystem/nct04762485-criteria"
REGISTRY_STATUS_EXTENSION = f"{BRIDGE_BASE}/StructureDefinition/registry-status"
STUDY_LOGICAL_ID = "nct04762485"
SECONDARY_ID = "PGSDFYY 202101"
REGISTRY_STATUS = "UNKNOWN"
TARGET_ENROLLMENT = 20

TITLE = "Humanized CD7 CAR T-cell Therapy for r/r CD7+ Acute Leukemia"
SPONSOR_NAME = "The First Affiliated Hospital of Soochow University"
ARM_NAME = "CD7 positive relapsed or refractory acute leukemia"
REGISTRY_ARM_LABEL = "CD38 positive relapsed or refractory acute leukemia"
BRIEF_SUMMARY = (
    "This is a prospective,open-label, single center and single arm phase 1/2 study to evaluate the efficacy "
    "and safety of T cells expressing humanized CD7 chimeric antigen receptors treatment for patients with "
    "refractory/relapsed CD7 positive acute leukemia."
)
INTERVENTION = (
    "Biological: Humanized CD7 CAR-T cells. Split intravenous infusion of CD7 CAR-T cells (dose escalating "
    "infusion of (0.5-10)x10^6 CD7 CAR-T cells/kg)."
)

_SNOMED = "http://snomed.info/sct"
_ICD10 = "http://hl7.org/fhir/sid/icd-10"
_ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
_TERMINOLOGY = "http://terminology.hl7.org/CodeSystem"
_ARM_TYPE = "http://hl7.org/fhir/research-study-arm-type"  # R5's code system; no required binding in R4

_ACCEPTED_CTGOV = {"clinicaltrials.gov", "www.clinicaltrials.gov"}

NOTES: tuple[str, ...] = (
    "Registry overall status: UNKNOWN (ClinicalTrials.gov 'Unknown status': the last known status was not "
    "verified recently). FHIR R4 research-study-status has no such code; the bridge publishes 'active' "
    "because it pre-screens patients for the study. The registry value is kept in the registry-status "
    "extension.",
    "Phase: the record's header says Phase 1, its brief summary 'phase 1/2', and the registry lists Phase 1 "
    "and Phase 2; published as phase-1-phase-2.",
    f"Arm: the registry labels the arm '{REGISTRY_ARM_LABEL}', a typo for CD7 (RULES.md §1.2); published as "
    f"'{ARM_NAME}'.",
    f"Target recruitment: {TARGET_ENROLLMENT} patients (carried as the enrollment Group's quantity).",
    *(f"Criterion {c.id}: {c.note}" for c in CRITERIA if c.note),
)


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


CONDITIONS: tuple[dict[str, Any], ...] = (
    {"coding": [_coding(_SNOMED, "91861009", "Acute myeloid leukemia"),
                _coding(_ICD10, "C92.0", "Acute myeloblastic leukaemia"),
                _coding(_ICDO3, "9861/3", "Acute myeloid leukemia, NOS")],
     "text": "Acute Myeloid Leukemia"},
    {"coding": [_coding(_ICD10, "C95.0", "Acute leukaemia of unspecified cell type")],
     "text": "Mixed Phenotype Acute Leukemia"},
    {"coding": [_coding(_ICDO3, "9837/3", "T lymphoblastic leukemia/lymphoma")],
     "text": "T Lymphoblastic Leukemia/Lymphoma"},
)


# ---------------------------------------------------------------------------------------------- identifiers


def study_identifier_query(system: str = CTGOV_SYSTEM) -> str:
    """The search / conditional-update query that finds the study: ``identifier=<system>|NCT04762485``."""
    return f"identifier={system}|{STUDY_ID}"


def is_study_identifier(system: str | None, value: str | None) -> bool:
    """NCT04762485 under any spelling of the ClinicalTrials.gov system (http/https, final slash)."""
    if not system or not value:
        return False
    host = system.strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/")
    return host in _ACCEPTED_CTGOV and value.strip().upper() == STUDY_ID


def _identifiers(base: str) -> list[dict[str, Any]]:
    return [
        {"use": "official", "system": CTGOV_SYSTEM, "value": STUDY_ID},
        {"use": "secondary", "type": {"text": "Sponsor protocol number (registry: other study ID)"},
         "system": f"{base.rstrip('/')}/NamingSystem/sponsor-protocol-id", "value": SECONDARY_ID,
         "assigner": {"reference": "#sponsor", "display": SPONSOR_NAME}},
    ]


# ---------------------------------------------------------------------------------------------- enrollment


def _characteristic(c: CriterionText, organ_reading: str) -> dict[str, Any]:
    return {
        "code": {"coding": [_coding(CRITERIA_SYSTEM, c.id, c.text)], "text": c.applied_text(organ_reading)},
        "valueBoolean": True,
        "exclude": c.exclude,
    }


def _group_data(group_id: str, organ_reading: str) -> dict[str, Any]:
    return {
        "id": group_id,
        "type": "person",
        "actual": False,
        "name": f"Eligibility criteria of {STUDY_ID}",
        "quantity": TARGET_ENROLLMENT,
        "characteristic": [_characteristic(c, organ_reading) for c in CRITERIA],
    }


def enrollment_group(group_id: str = "enrollment", organ_reading: str = "organ-function") -> dict[str, Any]:
    """The definitional Group of eligible persons: a characteristic per criterion, exclusions ``exclude``."""
    return build("Group", _group_data(group_id, organ_reading))


# ---------------------------------------------------------------------------------------------- study


def _contained(organ_reading: str) -> list[dict[str, Any]]:
    address = [{"city": "Suzhou", "country": "CN"}]
    return [
        {"resourceType": "Organization", "id": "sponsor", "name": SPONSOR_NAME, "address": address},
        {"resourceType": "Location", "id": "site", "name": SPONSOR_NAME, "address": address[0],
         "managingOrganization": {"reference": "#sponsor"}},
        {"resourceType": "Group", **_group_data("enrollment", organ_reading)},
    ]


def _arm() -> dict[str, Any]:
    return {
        "name": ARM_NAME,
        "type": {"coding": [_coding(_ARM_TYPE, "experimental", "Experimental")], "text": "Experimental"},
        "description": INTERVENTION,
    }


def _objective(kind: str, name: str) -> dict[str, Any]:
    return {"name": name, "type": {"coding": [
        _coding(f"{_TERMINOLOGY}/research-study-objective-type", kind, kind.capitalize())]}}


def _objectives() -> list[dict[str, Any]]:
    return [
        _objective("primary", "Number of adverse events (CTCAE v5.0), 12 months"),
        _objective("secondary", "Duration of CAR T-cells in vivo (persistence and copies), 2 years"),
        _objective("secondary", "Overall response rate (CR, CRi, MLFS, PR), 2 years"),
        _objective("secondary", "Cumulative incidence of relapse, 2 years"),
    ]


def _classifiers() -> dict[str, Any]:
    return {
        "primaryPurposeType": {"coding": [
            _coding(f"{_TERMINOLOGY}/research-study-prim-purp-type", "treatment", "Treatment")]},
        "phase": {"coding": [_coding(f"{_TERMINOLOGY}/research-study-phase", "phase-1-phase-2",
                                     "Phase 1/Phase 2")], "text": "Phase 1/2"},
        "focus": [{"text": "Humanized CD7 CAR-T cells"}],
        "condition": [dict(c) for c in CONDITIONS],
        "location": [{"coding": [_coding("urn:iso:std:iso:3166", "CN", "China")]}],
    }


def research_study(base_identifier_system: str = BRIDGE_BASE, status: str = "active",
                   organ_reading: str = "organ-function") -> dict[str, Any]:
    """The ResearchStudy for NCT04762485 (logical id ``nct04762485``) as R4 JSON.

    ``base_identifier_system`` is the base of the bridge-assigned identifier systems (the secondary id's
    system is ``<base>/NamingSystem/sponsor-protocol-id``); the official identifier is always
    ``https://clinicaltrials.gov|NCT04762485``. ``status`` is an R4 research-study-status code (checked by
    ``validate_output``); ``organ_reading`` picks the enrollment text of ``inc-organ-function``.
    """
    data = {
        "id": STUDY_LOGICAL_ID,
        "contained": _contained(organ_reading),
        "extension": [{"url": REGISTRY_STATUS_EXTENSION, "valueString": REGISTRY_STATUS}],
        "identifier": _identifiers(base_identifier_system),
        "title": TITLE,
        "status": status,
        **_classifiers(),
        "description": BRIEF_SUMMARY,
        "enrollment": [{"reference": "#enrollment", "display": f"Eligibility criteria of {STUDY_ID}"}],
        "sponsor": {"reference": "#sponsor", "display": SPONSOR_NAME},
        "site": [{"reference": "#site", "display": f"{SPONSOR_NAME}, Suzhou, China"}],
        "note": [{"text": n} for n in NOTES],
        "arm": [_arm()],
        "objective": _objectives(),
    }
    return build("ResearchStudy", data)


__all__ = [
    "BRIDGE_BASE",
    "CONDITIONS",
    "CRITERIA_SYSTEM",
    "CTGOV_SYSTEM",
    "REGISTRY_STATUS_EXTENSION",
    "SECONDARY_ID",
    "STUDY_LOGICAL_ID",
    "enrollment_group",
    "is_study_identifier",
    "research_study",
    "study_identifier_query",
]
