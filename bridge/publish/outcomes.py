"""Assessment outcomes as FHIR R4: response Observations, AdverseEvents, and the subject's lifecycle status.

Built from the ``bridge assess --format json`` patient document (plain JSON), so the same contract feeds the
CLI, the registry and the publisher. Every resource carries a stable identifier (for conditional writes) and
is built through the R4B models; ``validate_output`` checks it before it is sent.

- Response assessment: ``Observation`` with ``subject`` the patient, ``focus`` the ResearchStudy, the category
  as ``valueCodeableConcept`` (bridge CodeSystem ``response``: CR, CRi, MLFS, PR, NR, NE, relapse), the marrow
  and count results used as ``derivedFrom``, and a note naming the comparators and CRi reading.
- Adverse event: ``AdverseEvent`` with the grade in the ``ae-grade`` extension (NCI Thesaurus), ``severity`` the
  nearest mild/moderate/severe, ``study`` the ResearchStudy, the CAR-T infusion as ``suspectEntity``, the
  grading system (CTCAE v5.0 or ASTCT 2019) named in ``event.text``, and the Conditions / results it was graded
  from as ``subjectMedicalHistory``.

Every builder takes the ``Trial`` (None: the shipped one): the identifiers begin with its id, the ResearchStudy
referenced is its, and the assessment codes name its protocol.
"""

from __future__ import annotations

import hashlib
import re
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
from bridge.fhirmodels import build
from bridge.publish.study import BRIDGE_BASE, study_logical_id
from bridge.trial import Trial, load_trial

Json = dict[str, Any]
RESPONSE_SYSTEM = f"{BRIDGE_BASE}/CodeSystem/response"
ASSESSMENT_SYSTEM = f"{BRIDGE_BASE}/CodeSystem/assessment"
OUTCOME_ID_SYSTEM = f"{BRIDGE_BASE}/NamingSystem/outcome"
AE_TERM_SYSTEM = f"{BRIDGE_BASE}/CodeSystem/ae-term"
RESPONSES = {"CR": "Complete remission", "CRi": "CR with incomplete hematologic recovery",
             "MLFS": "Morphologic leukemia-free state", "PR": "Partial remission", "NR": "No response",
             "NE": "Not evaluable", "relapse": "Relapse"}
ASSESSMENT_NAMES = {"response-assessment": "Leukemia response assessment",
                    "best-overall-response": "Best overall response"}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def assessment_display(code: str, trial: Trial | None = None) -> str:
    """The display of an assessment code for ``trial``: ``<name> (<trial id> protocol)``."""
    return f"{ASSESSMENT_NAMES[code]} ({(trial or load_trial()).id} protocol)"


def _study_ref(trial: Trial | None) -> Json:
    return {"reference": f"ResearchStudy/{study_logical_id(trial)}"}


def outcome_identifier(patient_id: str, kind: str, *parts: str, trial: Trial | None = None) -> Json:
    """A stable identifier: trial id, patient id, kind and key parts, hashed when it would grow too long."""
    study = (trial or load_trial()).id
    value = "-".join([study, patient_id, kind, *parts])
    if len(value) > 120:
        value = f"{study}-{kind}-" + hashlib.sha256(value.encode()).hexdigest()[:32]
    return {"system": OUTCOME_ID_SYSTEM, "value": value}


def identifier_query(identifier: Json) -> str:
    return f"identifier={identifier['system']}|{identifier['value']}"


def response_observation(patient_id: str, item: Json, comparators: str, cri_reading: str = "operational",
                         trial: Trial | None = None) -> Json:
    """One response assessment (an ``assessments[]`` item of the assess JSON) as an Observation."""
    t = trial or load_trial()
    category = str(item["response"])
    data: Json = {
        "identifier": [outcome_identifier(patient_id, "response", str(item["date"]), trial=t)],
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "exam", "display": "Exam"}]}],
        "code": {"coding": [{"system": ASSESSMENT_SYSTEM, "code": "response-assessment",
                             "display": assessment_display("response-assessment", t)}],
                 "text": "Response assessment"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "focus": [_study_ref(t)],
        "effectiveDateTime": str(item["date"]),
        "valueCodeableConcept": {"coding": [{"system": RESPONSE_SYSTEM, "code": category,
                                             "display": RESPONSES[category]}], "text": category},
        "derivedFrom": [{"reference": ref} for ref in item.get("evidence") or [] if ref.startswith("Observation/")],
        "note": [{"text": f"Day {item.get('day')} after the first CAR-T infusion; comparators: {comparators}; "
                          f"CRi reading: {cri_reading}."}],
    }
    if not data["derivedFrom"]:
        del data["derivedFrom"]
    return build("Observation", data)


def best_response_observation(patient_id: str, doc: Json, as_of: date, trial: Trial | None = None) -> Json | None:
    best = doc.get("bestResponse")
    if not best:
        return None
    t = trial or load_trial()
    data: Json = {
        "identifier": [outcome_identifier(patient_id, "best-response", trial=t)],
        "status": "final",
        "code": {"coding": [{"system": ASSESSMENT_SYSTEM, "code": "best-overall-response",
                             "display": assessment_display("best-overall-response", t)}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "focus": [_study_ref(t)],
        "effectiveDateTime": as_of.isoformat(),
        "valueCodeableConcept": {"coding": [{"system": RESPONSE_SYSTEM, "code": best, "display": RESPONSES[best]}]},
    }
    return build("Observation", data)


def adverse_event(patient_id: str, ae: Json, suspect: str | None, trial: Trial | None = None) -> Json:
    """One graded AE episode (an ``adverseEvents[]`` item of the assess JSON) as an AdverseEvent."""
    term = str(ae["term"])
    system = GRADING_SYSTEM.get(term, "CTCAE v5.0")
    data: Json = {
        "identifier": outcome_identifier(patient_id, "ae", _slug(term), str(ae["onset"]), trial=trial),
        "actuality": "actual",
        "event": {"coding": [{"system": AE_TERM_SYSTEM, "code": _slug(term), "display": term}],
                  "text": f"{term} (graded by {system})"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": str(ae["onset"]),
        "study": [_study_ref(trial)],
    }
    if ae.get("grade") is None:  # e.g. D89.839 / G92.00: the episode is recorded, its grade is not
        data["event"]["text"] = f"{term} (grade not stated; {system})"
    else:
        grade = int(ae["grade"])
        code = grade_code(grade)
        data["extension"] = [{"url": AE_GRADE_EXTENSION, "valueCodeableConcept": {
            "coding": [{"system": NCIT_SYSTEM, "code": code.code, "display": code.display}],
            "text": f"{system} grade {grade}"}}]
        data["severity"] = {"coding": [{"system": SEVERITY_SYSTEM, "code": severity_for(grade)}]}
    if suspect:
        data["suspectEntity"] = [{"instance": {"reference": suspect}}]
    evidence = [r for r in ae.get("evidence") or [] if r.split("/")[0] in ("Condition", "Observation")]
    if evidence:  # the coded Condition or the graded results the AE was derived from
        data["subjectMedicalHistory"] = [{"reference": r} for r in evidence]
    return build("AdverseEvent", data)


def lifecycle_status(doc: Json, as_of: date, deceased: bool = False) -> str:
    """ResearchSubject status after infusion (RULES.md §2): on-study-intervention, then follow-up after day 28,
    off-study at death."""
    if deceased:
        return "off-study"
    day0 = date.fromisoformat(str(doc["dayZero"]))
    return "follow-up" if (as_of - day0).days > 28 else "on-study-intervention"


__all__ = ["ASSESSMENT_NAMES", "ASSESSMENT_SYSTEM", "OUTCOME_ID_SYSTEM", "RESPONSES", "RESPONSE_SYSTEM",
           "adverse_event", "assessment_display", "best_response_observation", "identifier_query",
           "lifecycle_status", "outcome_identifier", "response_observation"]
