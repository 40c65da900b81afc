"""The ResearchStudy the bridge publishes for a trial, and its enrollment Group (RULES.md §6).

Everything comes from the trial file (``bridge.trial``: its ``study`` section and its criteria) and is built
through the R4B model (``bridge.fhirmodels.build``): valid FHIR R4 4.0.1 on the wire
(``bridge.publish.validate.validate_output``). The choices made here — ``active`` for a registry status FHIR has
no code for, the identifier systems, the criterion code system, contained sponsor/site/enrollment — are
explained in ``docs/published-resources.md``. The bridge's own canonical URLs (code systems, extensions, naming
systems) all live under ``BRIDGE_BASE`` and are defined in this module; a trial's criterion code system is
``<BRIDGE_BASE>/CodeSystem/<logical id>-criteria``. Every function takes the ``Trial`` (None: the shipped one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.fhirmodels import build
from bridge.trial import Criterion, Trial, load_trial

CTGOV_SYSTEM = "https://clinicaltrials.gov"
BRIDGE_BASE = "https://cd7-bridge.example.org/fhir"
REGISTRY_STATUS_EXTENSION = f"{BRIDGE_BASE}/StructureDefinition/registry-status"

_TERMINOLOGY = "http://terminology.hl7.org/CodeSystem"
_ARM_TYPE = "http://hl7.org/fhir/research-study-arm-type"  # R5's code system; no required binding in R4

_ACCEPTED_CTGOV = {"clinicaltrials.gov", "www.clinicaltrials.gov"}


def _t(trial: Trial | None) -> Trial:
    return trial or load_trial()


def study_logical_id(trial: Trial | None = None) -> str:
    """The ResearchStudy's logical id (the trial file's ``study.logical_id``)."""
    return str(_t(trial).study["logical_id"])


def criteria_system(trial: Trial | None = None) -> str:
    """The code system of the trial's criterion ids."""
    return f"{BRIDGE_BASE}/CodeSystem/{study_logical_id(trial)}-criteria"


def notes(trial: Trial | None = None) -> tuple[str, ...]:
    """ResearchStudy.note: the file's notes, the target recruitment, then each criterion's erratum note."""
    t = _t(trial)
    return (*t.study.get("notes", ()),
            f"Target recruitment: {t.study['target_enrollment']} patients (carried as the enrollment Group's "
            "quantity).",
            *(f"Criterion {c.id}: {c.note}" for c in t.criteria if c.note))


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def conditions(trial: Trial | None = None) -> tuple[dict[str, Any], ...]:
    """ResearchStudy.condition: one CodeableConcept per condition of the trial file."""
    return tuple({"coding": [_coding(c["system"], c["code"], c["display"]) for c in cond["coding"]],
                  "text": cond["text"]} for cond in _t(trial).study["conditions"])


# ---------------------------------------------------------------------------------------------- identifiers


def study_identifier_query(system: str = CTGOV_SYSTEM, trial: Trial | None = None) -> str:
    """The search / conditional-update query that finds the study: ``identifier=<system>|<trial id>``."""
    return f"identifier={system}|{_t(trial).id}"


def is_study_identifier(system: str | None, value: str | None, trial: Trial | None = None) -> bool:
    """The trial's id under any spelling of the ClinicalTrials.gov system (http/https, final slash)."""
    if not system or not value:
        return False
    host = system.strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/")
    return host in _ACCEPTED_CTGOV and value.strip().upper() == _t(trial).id.upper()


def _identifiers(base: str, t: Trial) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"use": "official", "system": CTGOV_SYSTEM, "value": t.id}]
    secondary = t.study.get("secondary_identifier")
    if secondary:
        out.append({"use": "secondary", "type": {"text": secondary["type"]},
                    "system": f"{base.rstrip('/')}/NamingSystem/sponsor-protocol-id", "value": secondary["value"],
                    "assigner": {"reference": "#sponsor", "display": t.study["sponsor"]["name"]}})
    return out


# ---------------------------------------------------------------------------------------------- enrollment


def _characteristic(c: Criterion, organ_reading: str, system: str) -> dict[str, Any]:
    return {
        "code": {"coding": [_coding(system, c.id, c.text)], "text": c.applied_text(organ_reading)},
        "valueBoolean": True,
        "exclude": c.exclude,
    }


def _group_data(group_id: str, organ_reading: str, t: Trial) -> dict[str, Any]:
    system = criteria_system(t)
    return {
        "id": group_id,
        "type": "person",
        "actual": False,
        "name": f"Eligibility criteria of {t.id}",
        "quantity": t.study["target_enrollment"],
        "characteristic": [_characteristic(c, organ_reading, system) for c in t.criteria],
    }


def enrollment_group(group_id: str = "enrollment", organ_reading: str = "organ-function",
                     trial: Trial | None = None) -> dict[str, Any]:
    """The definitional Group of eligible persons: a characteristic per criterion, exclusions ``exclude``."""
    return build("Group", _group_data(group_id, organ_reading, _t(trial)))


# ---------------------------------------------------------------------------------------------- study


def _address(place: Mapping[str, Any]) -> dict[str, str]:
    return {"city": place["city"], "country": place["country"]}


def _contained(organ_reading: str, t: Trial) -> list[dict[str, Any]]:
    sponsor, site = t.study["sponsor"], t.study["site"]
    return [
        {"resourceType": "Organization", "id": "sponsor", "name": sponsor["name"], "address": [_address(sponsor)]},
        {"resourceType": "Location", "id": "site", "name": site["name"], "address": _address(site),
         "managingOrganization": {"reference": "#sponsor"}},
        {"resourceType": "Group", **_group_data("enrollment", organ_reading, t)},
    ]


def _arm(arm: Mapping[str, Any]) -> dict[str, Any]:
    kind = arm["type"]
    return {
        "name": arm["name"],
        "type": {"coding": [_coding(_ARM_TYPE, kind["code"], kind["display"])], "text": kind["display"]},
        "description": arm["description"],
    }


def _objective(kind: str, name: str) -> dict[str, Any]:
    return {"name": name, "type": {"coding": [
        _coding(f"{_TERMINOLOGY}/research-study-objective-type", kind, kind.capitalize())]}}


def _classifiers(t: Trial) -> dict[str, Any]:
    s = t.study
    phase, purpose = s["phase"], s["primary_purpose"]
    out: dict[str, Any] = {
        "primaryPurposeType": {"coding": [
            _coding(f"{_TERMINOLOGY}/research-study-prim-purp-type", purpose["code"], purpose["display"])]},
        "phase": {"coding": [_coding(f"{_TERMINOLOGY}/research-study-phase", phase["code"], phase["display"])],
                  "text": phase.get("text", phase["display"])},
        "condition": list(conditions(t)),
    }
    if s.get("focus"):
        out["focus"] = [{"text": s["focus"]}]
    if s.get("location"):
        loc = s["location"]
        out["location"] = [{"coding": [_coding(loc["system"], loc["code"], loc["display"])]}]
    return out


def research_study(base_identifier_system: str = BRIDGE_BASE, status: str = "active",
                   organ_reading: str = "organ-function", trial: Trial | None = None) -> dict[str, Any]:
    """The ResearchStudy of ``trial`` (default: the shipped one; logical id from its file) as R4 JSON.

    ``base_identifier_system`` is the base of the bridge-assigned identifier systems (the secondary id's
    system is ``<base>/NamingSystem/sponsor-protocol-id``); the official identifier is always
    ``https://clinicaltrials.gov|<trial id>``. ``status`` is an R4 research-study-status code (checked by
    ``validate_output``); ``organ_reading`` picks the enrollment text of a switchable criterion.
    """
    t = _t(trial)
    s = t.study
    data = {
        "id": study_logical_id(t),
        "contained": _contained(organ_reading, t),
        "extension": [{"url": REGISTRY_STATUS_EXTENSION, "valueString": s["registry_status"]}],
        "identifier": _identifiers(base_identifier_system, t),
        "title": s["title"],
        "status": status,
        **_classifiers(t),
        "description": s["description"],
        "enrollment": [{"reference": "#enrollment", "display": f"Eligibility criteria of {t.id}"}],
        "sponsor": {"reference": "#sponsor", "display": s["sponsor"]["name"]},
        "site": [{"reference": "#site", "display": s["site"].get("display", s["site"]["name"])}],
        "note": [{"text": n} for n in notes(t)],
        "arm": [_arm(a) for a in s["arms"]],
        "objective": [_objective(o["type"], o["name"]) for o in s.get("objectives", ())],
    }
    return build("ResearchStudy", data)


__all__ = [
    "BRIDGE_BASE",
    "CTGOV_SYSTEM",
    "REGISTRY_STATUS_EXTENSION",
    "conditions",
    "criteria_system",
    "enrollment_group",
    "is_study_identifier",
    "notes",
    "research_study",
    "study_identifier_query",
    "study_logical_id",
]
