"""Package contents per time point, the time point windows, determinism and input errors."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pytest

from bridge.errors import InputError
from bridge.publish.validate import validate_output
from bridge.registry.package import build_packages, check_packages, package_key
from bridge.registry.timepoints import Death, due_follow_ups, follow_up_windows
from tests.unit.test_registry_fixtures import (
    CONTEXT,
    administration,
    assessment,
    consent,
    patient_doc,
    records,
    rich_patient,
)

Json = dict[str, Any]
DAY0 = date(2026, 1, 10)
RELATIVE_DAY = "https://cd7-bridge.example.org/fhir/StructureDefinition/relative-day"


def of_type(bundle: Json, rtype: str) -> list[Json]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def item(bundle: Json, code: str) -> Json:
    (found,) = [o for o in of_type(bundle, "Observation") if o["code"]["coding"][0]["code"] == code]
    return found


def rel(resource: Json, element: str) -> int:
    return int(resource[f"_{element}"]["extension"][0]["valueInteger"])


def packages(doc: Json | None = None, as_of: str = "2027-02-01", res: tuple[Json, ...] = (),
             kinds: tuple[str, ...] = ("infusion", "day100", "month6", "yearly")) -> dict[str, Json]:
    built = build_packages(assessment(doc or patient_doc(), as_of=as_of), records(*res), CONTEXT, kinds)
    check_packages(built.packages)
    return {p.timepoint: p.bundle for p in built.packages}


# ---------------------------------------------------------------------------------------------- windows


def test_windows() -> None:
    windows = follow_up_windows()
    got = [next(windows) for _ in range(5)]
    assert [(w.code, w.first_day, w.last_day) for w in got] == [
        ("day100", 0, 100), ("month6", 101, 183), ("yearly-1", 184, 365), ("yearly-2", 366, 730),
        ("yearly-3", 731, 1095)]


@pytest.mark.parametrize(("day", "codes"), [
    (99, []), (100, ["day100"]), (182, ["day100"]), (183, ["day100", "month6"]),
    (365, ["day100", "month6", "yearly-1"]), (730, ["day100", "month6", "yearly-1", "yearly-2"]),
])
def test_due_when_the_window_is_complete(day: int, codes: list[str]) -> None:
    assert [t.code for t in due_follow_ups(DAY0, DAY0 + timedelta(days=day), Death())] == codes


def test_a_death_makes_its_window_due_and_ends_the_follow_up() -> None:
    assert [t.code for t in due_follow_ups(DAY0, DAY0 + timedelta(days=60), Death(True, 50))] == ["day100"]
    assert [t.code for t in due_follow_ups(DAY0, DAY0 + timedelta(days=900), Death(True, 150))] == [
        "day100", "month6"]
    assert [t.code for t in due_follow_ups(DAY0, DAY0 + timedelta(days=900), Death(True, 101))] == [
        "day100", "month6"]


# ---------------------------------------------------------------------------------------------- contents


def test_time_points_and_schema() -> None:
    built = packages()
    assert list(built) == ["infusion-1", "day100", "month6", "yearly-1"]
    for bundle in built.values():
        validate_output(bundle)
        assert bundle["type"] == "collection"
        assert [e["fullUrl"] for e in bundle["entry"]] == [f"urn:uuid:{e['resource']['id']}" for e in bundle["entry"]]
        (subject,) = of_type(bundle, "ResearchSubject")
        assert subject["study"]["identifier"] == {"system": "https://clinicaltrials.gov", "value": "NCT04762485"}
        assert subject["individual"]["reference"] == bundle["entry"][0]["fullUrl"]


def test_infusion_package() -> None:
    bundle = packages()["infusion-1"]
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == [
        "Patient", "ResearchSubject", "MedicationAdministration", "Observation"]
    (ma,) = of_type(bundle, "MedicationAdministration")
    assert ma["dosage"]["dose"] == {"value": 250000000, "unit": "cells", "system": "http://unitsofmeasure.org",
                                    "code": "{cells}"}
    assert ma["extension"][0]["valueQuantity"]["value"] == 5000000
    assert ma["extension"][0]["valueQuantity"]["code"] == "{cells}/kg"
    assert ma["medicationCodeableConcept"] == {
        "coding": [{"system": "http://st-brigid.example/formulary", "code": "CD7-CART"}], "text": "CD7 CAR-T cells"}
    assert (ma["status"], ma["effectiveDateTime"], rel(ma, "effectiveDateTime")) == ("completed", "2026", 0)
    age = item(bundle, "age-at-infusion")
    assert age["valueQuantity"]["value"] == 16  # born 2009-03-14, infused 2026-01-10
    assert of_type(bundle, "ResearchSubject")[0]["status"] == "on-study-intervention"


def test_day100_package() -> None:
    bundle = packages()["day100"]
    best = item(bundle, "best-response")
    assert best["valueCodeableConcept"]["coding"][0]["code"] == "CR" and rel(best, "effectiveDateTime") == 28
    relapse = item(bundle, "relapse")
    assert relapse["valueBoolean"] is False and rel(relapse, "effectiveDateTime") == 100
    aes = of_type(bundle, "AdverseEvent")
    assert [(a["event"]["text"], rel(a, "date")) for a in aes] == [
        ("Cytokine release syndrome", 2), ("Immune effector cell-associated neurotoxicity syndrome", 5)]
    crs = aes[0]
    assert crs["extension"] == [
        {"url": "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition/ae-grade",
         "valueCodeableConcept": {"coding": [{"system": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl",
                                              "code": "C41340", "display": "Grade 3 Severe Adverse Event"}]}},
        {"url": "https://cd7-bridge.example.org/fhir/StructureDefinition/ae-grading-system",
         "valueString": "ASTCT 2019"}]
    assert crs["severity"]["coding"][0]["code"] == "severe" and crs["actuality"] == "actual"
    survival = item(bundle, "survival-status")
    assert survival["valueCodeableConcept"]["coding"][0]["code"] == "alive"
    assert rel(survival, "effectiveDateTime") == 100
    assert of_type(bundle, "ResearchSubject")[0]["status"] == "follow-up"
    assert len(of_type(bundle, "MedicationAdministration")) == 1


def test_month6_and_yearly_windows_split_the_events() -> None:
    built = packages()
    month6, yearly = built["month6"], built["yearly-1"]
    assert [(a["event"]["text"], rel(a, "date")) for a in of_type(month6, "AdverseEvent")] == [
        ("Neutrophil count decreased", 101)]
    assert of_type(yearly, "AdverseEvent") == []
    assert item(month6, "relapse")["valueBoolean"] is False
    relapse = item(yearly, "relapse")
    assert relapse["valueBoolean"] is True and rel(relapse, "effectiveDateTime") == 234
    assert item(yearly, "best-response")["valueCodeableConcept"]["coding"][0]["code"] == "CR"


def test_best_response_is_as_of_the_window_end() -> None:
    doc = patient_doc(assessments=[
        {"date": "2026-01-27", "day": 17, "response": "PR", "evidence": []},
        {"date": "2026-05-01", "day": 111, "response": "CR", "evidence": []}])
    built = packages(doc)
    assert item(built["day100"], "best-response")["valueCodeableConcept"]["coding"][0]["code"] == "PR"
    assert item(built["month6"], "best-response")["valueCodeableConcept"]["coding"][0]["code"] == "CR"


def test_no_assessment_is_not_evaluable() -> None:
    built = packages(patient_doc(assessments=[], relapseDate=None), as_of="2026-04-30")
    best = item(built["day100"], "best-response")
    assert best["valueCodeableConcept"]["coding"][0]["code"] == "NE" and rel(best, "effectiveDateTime") == 100


def test_death_in_a_window() -> None:
    dead = {**rich_patient(), "deceasedDateTime": "2026-03-01"}
    built = packages(as_of="2027-02-01", res=(dead, consent(), administration()))
    assert list(built) == ["infusion-1", "day100"]
    survival = item(built["day100"], "survival-status")
    assert survival["valueCodeableConcept"]["coding"][0]["code"] == "dead"
    assert rel(survival, "effectiveDateTime") == 50
    assert of_type(built["day100"], "Patient")[0]["deceasedBoolean"] is True
    assert of_type(built["day100"], "ResearchSubject")[0]["status"] == "off-study"
    assert of_type(built["infusion-1"], "Patient")[0]["deceasedBoolean"] is False


def test_death_without_a_date_is_reported_in_the_latest_window_only() -> None:
    dead = {**rich_patient(), "deceasedBoolean": True}
    built = packages(as_of="2026-08-01", res=(dead, consent(), administration()))
    codes = {tp: item(b, "survival-status")["valueCodeableConcept"]["coding"][0]["code"]
             for tp, b in built.items() if tp != "infusion-1"}
    assert codes == {"day100": "unknown", "month6": "dead"}
    assert "effectiveDateTime" not in item(built["month6"], "survival-status")


def test_a_death_after_the_as_of_date_is_not_known_yet() -> None:
    dead = {**rich_patient(), "deceasedDateTime": "2026-06-01"}
    built = packages(as_of="2026-05-01", res=(dead, consent(), administration()))
    assert item(built["day100"], "survival-status")["valueCodeableConcept"]["coding"][0]["code"] == "alive"


def test_several_infusions() -> None:
    second = administration(mid="ma-zel-0117", when="2026-01-17T10:00:00+08:00")
    doc = patient_doc(infusions=[
        {"date": "2026-01-17", "cells": 100000000, "evidence": "MedicationAdministration/ma-zel-0117"},
        {"date": "2026-01-10", "cells": 150000000, "evidence": "MedicationAdministration/ma-zel-0110"}])
    built = packages(doc, res=(rich_patient(), consent(), administration(), second))
    first_ma, = of_type(built["infusion-1"], "MedicationAdministration")
    second_ma, = of_type(built["infusion-2"], "MedicationAdministration")
    assert (rel(first_ma, "effectiveDateTime"), first_ma["dosage"]["dose"]["value"]) == (0, 150000000)
    assert (rel(second_ma, "effectiveDateTime"), second_ma["extension"][0]["valueQuantity"]["value"]) == (7, 2000000)
    assert len(of_type(built["day100"], "MedicationAdministration")) == 2


def test_timepoint_filter() -> None:
    assert list(packages(kinds=("day100", "yearly"))) == ["day100", "yearly-1"]
    with pytest.raises(InputError, match="unknown time point kind"):
        build_packages(assessment(), records(), CONTEXT, ["weekly"])


def test_unknown_ae_term_is_not_copied() -> None:
    doc = patient_doc(adverseEvents=[{"term": "Fall at home of Aurelia", "grade": 2, "onset": "2026-02-01"}])
    (ae,) = of_type(packages(doc)["day100"], "AdverseEvent")
    assert ae["event"] == {"text": "Other adverse event (term outside the bridge's list)"}
    assert [e["url"] for e in ae["extension"]] == [
        "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition/ae-grade"]


def test_ungraded_syndrome_has_no_grade_nor_severity() -> None:
    doc = patient_doc(adverseEvents=[{"term": "Cytokine release syndrome", "grade": None, "onset": "2026-01-12"}])
    (ae,) = of_type(packages(doc)["day100"], "AdverseEvent")
    assert "severity" not in ae and [e["url"].rsplit("/", 1)[1] for e in ae["extension"]] == ["ae-grading-system"]


# ---------------------------------------------------------------------------------------------- identity


def test_packages_are_deterministic_and_keys_follow_content() -> None:
    a = build_packages(assessment(), records(), CONTEXT)
    b = build_packages(assessment(), records(), CONTEXT)
    assert [p.key for p in a.packages] == [p.key for p in b.packages]
    assert len({p.key for p in a.packages}) == len(a.packages)
    changed = build_packages(assessment(patient_doc(weightKg=40.0)), records(), CONTEXT)
    assert changed.packages[0].id == a.packages[0].id and changed.packages[0].key != a.packages[0].key
    assert package_key({"b": 1, "a": 2}) == package_key({"a": 2, "b": 1})


def test_patient_and_subject_ids_are_shared_by_the_packages_of_a_patient() -> None:
    built = list(packages().values())
    assert len({of_type(b, "Patient")[0]["id"] for b in built}) == 1
    assert len({of_type(b, "ResearchSubject")[0]["id"] for b in built}) == 1
    assert len({of_type(b, "MedicationAdministration")[0]["id"] for b in built}) == len(built)


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("change", "path"), [
    ({"dayZero": "10/01/2026"}, "patients[0].dayZero"),
    ({"patient": "pt-zel-001"}, "patients[0].patient"),
    ({"relapseDate": "soon"}, "patients[0].relapseDate"),
    ({"adverseEvents": [{"term": "Anemia", "grade": 2}]}, "patients[0].adverseEvents[0].onset"),
])
def test_a_malformed_assessment_names_the_path(change: Json, path: str) -> None:
    with pytest.raises(InputError) as exc:
        build_packages(assessment(patient_doc(**change)), records(), CONTEXT)
    assert exc.value.issues[0].expression == (path,)


def test_as_of_is_required() -> None:
    doc = assessment()
    del doc["asOf"]
    with pytest.raises(InputError) as exc:
        build_packages(doc, records(), CONTEXT)
    assert exc.value.issues[0].expression == ("asOf",)
