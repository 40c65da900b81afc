"""Assessment outcomes as FHIR R4: each builder's output passes the official schema and our code checks."""

from __future__ import annotations

from datetime import date

import pytest

from bridge.publish import outcomes
from bridge.publish.validate import validate_output

ITEM = {"date": "2026-01-27", "day": 17, "response": "MLFS", "evidence": ["Observation/m1", "Observation/a1"]}
CRS = {"term": "Cytokine release syndrome", "grade": 3, "onset": "2026-01-12", "evidence": ["Condition/c1"]}


@pytest.mark.parametrize("category", sorted(outcomes.RESPONSES))
def test_response_observation(category: str) -> None:
    obs = outcomes.response_observation("p1", {**ITEM, "response": category}, "record")
    validate_output(obs)
    assert obs["valueCodeableConcept"]["coding"][0] == {
        "system": outcomes.RESPONSE_SYSTEM, "code": category, "display": outcomes.RESPONSES[category]}
    assert obs["focus"] == [{"reference": "ResearchStudy/nct04762485"}]
    assert obs["derivedFrom"] == [{"reference": "Observation/m1"}, {"reference": "Observation/a1"}]
    assert obs["effectiveDateTime"] == "2026-01-27" and "comparators: record" in obs["note"][0]["text"]


@pytest.mark.parametrize(("grade", "code", "severity"), [(1, "C41338", "mild"), (2, "C41339", "moderate"),
                                                         (3, "C41340", "severe"), (4, "C41337", "severe"),
                                                         (5, "C48275", "severe")])
def test_adverse_event_grade_and_severity(grade: int, code: str, severity: str) -> None:
    ae = outcomes.adverse_event("p1", {**CRS, "grade": grade}, "MedicationAdministration/i1")
    validate_output(ae)
    (ext,) = ae["extension"]
    assert ext["url"] == "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition/ae-grade"
    assert ext["valueCodeableConcept"]["coding"][0]["code"] == code
    assert ae["severity"]["coding"][0]["code"] == severity
    assert ae["study"] == [{"reference": "ResearchStudy/nct04762485"}]
    assert ae["suspectEntity"] == [{"instance": {"reference": "MedicationAdministration/i1"}}]
    assert "ASTCT 2019" in ae["event"]["text"]


def test_lab_ae_names_ctcae_and_its_results() -> None:
    ae = outcomes.adverse_event("p1", {"term": "Neutrophil count decreased", "grade": 4, "onset": "2026-01-14",
                                       "evidence": ["Observation/n1", "Observation/n2"]}, None)
    validate_output(ae)
    assert "CTCAE v5.0" in ae["event"]["text"] and "suspectEntity" not in ae
    assert ae["subjectMedicalHistory"] == [{"reference": "Observation/n1"}, {"reference": "Observation/n2"}]


def test_identifiers_are_stable_and_distinct() -> None:
    a = outcomes.adverse_event("p1", CRS, None)["identifier"]
    assert a == outcomes.adverse_event("p1", CRS, None)["identifier"]
    assert a != outcomes.adverse_event("p2", CRS, None)["identifier"]
    long_id = outcomes.outcome_identifier("x" * 64, "ae", "y" * 80, "2026-01-01")
    assert len(long_id["value"]) <= 120


@pytest.mark.parametrize(("as_of", "deceased", "status"), [
    (date(2026, 1, 20), False, "on-study-intervention"), (date(2026, 2, 7), False, "on-study-intervention"),
    (date(2026, 2, 8), False, "follow-up"), (date(2026, 2, 8), True, "off-study")])
def test_lifecycle(as_of: date, deceased: bool, status: str) -> None:
    assert outcomes.lifecycle_status({"dayZero": "2026-01-10"}, as_of, deceased) == status


def test_ungraded_episode_is_published_without_a_grade() -> None:
    ae = outcomes.adverse_event("p1", {**CRS, "grade": None}, None)
    validate_output(ae)
    assert "extension" not in ae and "severity" not in ae and "grade not stated" in ae["event"]["text"]
