"""Shared fixtures of the registry tests: a patient full of identifying data, consents, infusions and the
assessment document of issue #5 — plus the check that these inputs are themselves valid FHIR R4.

Every value is fixed (no clock). The identifying values are deliberately distinctive so that a substring
search over the packages can prove none of them leaves the site.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bridge.fhirmodels import parse_resource
from bridge.ingest.readers import Entry
from bridge.registry.package import Context
from bridge.registry.sources import PatientRecords, collect_records

Json = dict[str, Any]
SECRET = "site-secret-for-tests-0001"
OTHER_SECRET = "another-site-secret-0002"
CENTRE = "rc_10701"
CONTEXT = Context(SECRET, CENTRE)
AS_OF = "2027-02-01"
SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
CATEGORY = "http://terminology.hl7.org/CodeSystem/consentcategorycodes"


def rich_patient(pid: str = "pt-zel-001", birth: str = "2009-03-14") -> Json:
    """A Patient carrying every kind of Safe Harbor identifier."""
    return {
        "resourceType": "Patient", "id": pid,
        "text": {"status": "generated",
                 "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Aurelia Zelinskaya, MRN-778899</div>"},
        "identifier": [
            {"use": "usual", "system": "http://st-brigid.example/mrn", "value": "MRN-778899"},
            {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "987-65-4329"},
            {"system": "http://st-brigid.example/insurance", "value": "HPB-31415926"},
        ],
        "name": [{"use": "official", "family": "Zelinskaya", "given": ["Aurelia", "Quintessa"], "prefix": ["Ms"]},
                 {"use": "usual", "text": "Rella Zelinskaya"}],
        "telecom": [{"system": "phone", "value": "+1-555-0199", "use": "mobile"},
                    {"system": "email", "value": "aurelia.z@mailbox.example"},
                    {"system": "url", "value": "https://aurelia-zel.example/blog"}],
        "gender": "female", "birthDate": birth,
        "address": [{"use": "home", "line": ["42 Quillby Lane", "Apartment 7B"], "city": "Springfield",
                     "district": "Hampden", "postalCode": "01109", "state": "Massachusetts", "country": "US"}],
        "contact": [{"name": {"family": "Okonkwo-Zel", "given": ["Benedikt"]},
                     "telecom": [{"system": "phone", "value": "+1-555-0142"}]}],
        "photo": [{"url": "https://photos.st-brigid.example/aurelia-zel.jpg"}],
        "managingOrganization": {"reference": "Organization/st-brigid-hospital"},
    }


def consent(pid: str = "pt-zel-001", cid: str = "consent-zel-01", status: str = "active",
            when: str = "2025-12-20", **extra: Any) -> Json:
    """A research Consent (scope and category research)."""
    return {"resourceType": "Consent", "id": cid, "status": status,
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Signed by "
                                                   "Aurelia Zelinskaya in clinic</div>"},
            "scope": {"coding": [{"system": SCOPE, "code": "research"}]},
            "category": [{"coding": [{"system": CATEGORY, "code": "research"}]}],
            "patient": {"reference": f"Patient/{pid}"}, "dateTime": when,
            "policyRule": {"text": "Trial consent form v3"}, **extra}


def administration(pid: str = "pt-zel-001", mid: str = "ma-zel-0110",
                   when: str = "2026-01-10T09:30:00+08:00") -> Json:
    """A CAR-T infusion with a note, a performer, a device and identifiers that must not travel."""
    return {"resourceType": "MedicationAdministration", "id": mid, "status": "completed",
            "identifier": [{"system": "http://st-brigid.example/infusion", "value": "INFREC-ZZ91"}],
            "medicationCodeableConcept": {"coding": [{"system": "http://st-brigid.example/formulary",
                                                      "code": "CD7-CART", "display": "CD7 CAR-T lot LOT-55Q21"}],
                                          "text": "CD7 CAR-T lot LOT-55Q21"},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
            "performer": [{"actor": {"reference": "Practitioner/dr-fairweather",
                                     "display": "Dr Ignatius Fairweather"}}],
            "request": {"reference": "MedicationRequest/rx-zel-1"},
            "device": [{"reference": "Device/pump-SN-4471"}],
            "note": [{"text": "Infused by nurse Ysolde Marchbank at bed 12"}],
            "dosage": {"text": "250 million cells iv", "dose": {"value": 250000000, "unit": "cells"}}}


def patient_doc(pid: str = "pt-zel-001", mid: str = "ma-zel-0110", **changes: Any) -> Json:
    """A ``patients[i]`` entry of the ``bridge assess --format json`` document (issue #5 shape)."""
    doc: Json = {
        "patient": f"Patient/{pid}", "dayZero": "2026-01-10",
        "infusions": [{"date": "2026-01-10", "cells": 250000000, "evidence": f"MedicationAdministration/{mid}"}],
        "weightKg": 50.0, "cellsPerKg": 5000000.0, "doseWithinProtocol": True, "baselineMarrowBlasts": 20.0,
        "assessments": [
            {"date": "2026-01-27", "day": 17, "response": "MLFS", "evidence": ["Observation/obs-zel-marrow-17"]},
            {"date": "2026-02-07", "day": 28, "response": "CR", "evidence": ["Observation/obs-zel-marrow-28"]},
            {"date": "2026-09-01", "day": 234, "response": "relapse", "evidence": ["Observation/obs-zel-marrow-234"]},
        ],
        "bestResponse": "CR", "remissionDate": "2026-01-27", "relapseDate": "2026-09-01",
        "adverseEvents": [
            {"term": "Cytokine release syndrome", "grade": 3, "onset": "2026-01-12",
             "evidence": ["Condition/cond-zel-crs"], "gradingSystem": "ASTCT 2019"},
            {"term": "Immune effector cell-associated neurotoxicity syndrome", "grade": 1, "onset": "2026-01-15",
             "evidence": ["Observation/obs-zel-ice-5"], "gradingSystem": "ASTCT 2019"},
            {"term": "Neutrophil count decreased", "grade": 4, "onset": "2026-04-21",
             "evidence": ["Observation/obs-zel-anc-101"], "gradingSystem": "CTCAE v5.0"},
        ],
        "kinetics": {"car-t-copies": {"cmax": 120000.0, "tmax": 10, "auc0_28": 1500000.0, "lastDetectableDay": 90}},
    }
    doc.update(changes)
    return doc


def assessment(*patients: Json, as_of: str = AS_OF) -> Json:
    return {"study": "NCT04762485", "asOf": as_of, "comparators": "record",
            "patients": list(patients) or [patient_doc()], "cohort": {}}


def resources(*extra: Json) -> list[Json]:
    return [rich_patient(), consent(), administration(), *extra]


def records(*res: Json) -> dict[str, PatientRecords]:
    return collect_records(Entry(copy.deepcopy(r), f"fixture {i}") for i, r in enumerate(res or resources()))


@pytest.mark.parametrize("resource", [rich_patient(), consent(), administration()],
                         ids=lambda r: r["resourceType"])
def test_fixtures_are_valid_fhir(resource: Json) -> None:
    parse_resource(copy.deepcopy(resource), "fixture")
