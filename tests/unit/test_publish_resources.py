"""The resources the bridge publishes: ResearchStudy (+ enrollment Group), ResearchSubject, Provenance."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import __version__
from bridge.errors import InputError, InvalidResource, ValidationFailed
from bridge.fhirmodels import parse_resource
from bridge.model import Tri, Verdict
from bridge.publish import criteria, provenance, study, subject
from bridge.publish.validate import validate_output
from bridge.trial import load_trial
from tests.shared import TRIAL

RECORD = TRIAL / "NCT04762485-record.txt"
AS_OF = date(2026, 6, 15)
RECORDED = datetime(2026, 6, 15, 9, 30, tzinfo=timezone(timedelta(hours=8)))

RULES_ORDER = ("inc-diagnosis", "inc-age", "inc-ecog", "inc-cd7-expression", "inc-cardiac",
               "inc-organ-function", "exc-pregnancy", "exc-congenital-immunodeficiency", "exc-cns-leukemia",
               "exc-active-infection", "exc-hepatitis", "exc-hiv", "exc-thrombosis", "exc-cardiac-event",
               "exc-investigator")


def verdicts(**overrides: str) -> list[Verdict]:
    out = []
    for i, cid in enumerate(RULES_ORDER):
        result = overrides.get(cid, "met" if cid.startswith("inc") else "not-met")
        out.append(Verdict(cid, result, f"reason {i}", (f"Observation/o{i}",) if i % 2 else ()))  # type: ignore[arg-type]
    out[-1] = Verdict("exc-investigator", "unknown", "investigator judgement")
    return out


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, val in node.items():
            yield k
            yield from strings(val)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


# ------------------------------------------------------------------------------------------ criteria


def test_criteria_are_the_15_of_rules_in_order() -> None:
    assert tuple(c.id for c in criteria.criteria()) == RULES_ORDER
    assert [c.kind for c in criteria.criteria()] == ["inclusion"] * 6 + ["exclusion"] * 9
    assert [c.number for c in criteria.criteria()] == list(range(1, 7)) + list(range(1, 10))


def test_criterion_texts_are_the_record_verbatim() -> None:
    if not RECORD.is_file():
        pytest.skip("shared trial record not present")
    record = RECORD.read_text(encoding="utf-8")
    for c in criteria.criteria():
        assert f"{c.number}. {c.text}" in record, c.id


def test_errata_have_notes_and_applied_texts() -> None:
    organ = criteria.criterion("inc-organ-function")
    assert "> 3x upper limit" in organ.text
    assert "≤ 3x upper limit" in organ.applied_text() and "≤ 2.0 mg/dL" in organ.applied_text()
    assert organ.applied_text("literal") == organ.text
    assert organ.note and "RULES.md §1.1" in organ.note
    thrombosis = criteria.criterion("exc-thrombosis")
    assert "atrial" in thrombosis.text and "arterial" in thrombosis.applied_text("literal")
    assert [c.id for c in criteria.criteria() if c.note] == ["inc-organ-function", "exc-thrombosis"]
    assert criteria.criterion("inc-age").applied_text() == "Age 12-65 years."


# ------------------------------------------------------------------------------------------ study


@pytest.fixture(scope="module")
def rs() -> dict[str, Any]:
    return study.research_study()


def test_study_validates_and_round_trips_the_r4b_model(rs: dict[str, Any]) -> None:
    validate_output(rs)
    parse_resource(rs)
    assert rs["id"] == "nct04762485" and rs["status"] == "active"


def test_study_identifiers(rs: dict[str, Any]) -> None:
    official, secondary = rs["identifier"]
    assert official == {"use": "official", "system": "https://clinicaltrials.gov", "value": "NCT04762485"}
    assert secondary["use"] == "secondary" and secondary["value"] == "PGSDFYY 202101"
    assert secondary["system"] == "https://cd7-bridge.example.org/fhir/NamingSystem/sponsor-protocol-id"
    other = study.research_study(base_identifier_system="https://site.example.net/ids/")
    assert other["identifier"][1]["system"] == "https://site.example.net/ids/NamingSystem/sponsor-protocol-id"
    assert other["identifier"][0] == official


def test_study_identifier_helpers() -> None:
    assert study.study_identifier_query() == "identifier=https://clinicaltrials.gov|NCT04762485"
    for system in ("https://clinicaltrials.gov", "http://clinicaltrials.gov/", "HTTPS://ClinicalTrials.gov/"):
        assert study.is_study_identifier(system, "NCT04762485")
    assert study.is_study_identifier("http://clinicaltrials.gov/", " nct04762485 ")
    assert not study.is_study_identifier("https://clinicaltrials.gov", "NCT04762486")
    assert not study.is_study_identifier("https://clinicaltrials.gov.evil.org", "NCT04762485")
    assert not study.is_study_identifier(None, "NCT04762485")
    assert not study.is_study_identifier("urn:oid:1.2.3", "NCT04762485")


def test_study_status_registry_value_and_phase(rs: dict[str, Any]) -> None:
    assert rs["extension"] == [{"url": study.REGISTRY_STATUS_EXTENSION, "valueString": "UNKNOWN"}]
    assert rs["phase"]["coding"][0]["system"] == "http://terminology.hl7.org/CodeSystem/research-study-phase"
    assert rs["phase"]["coding"][0]["code"] == "phase-1-phase-2"
    notes = " ".join(n["text"] for n in rs["note"])
    assert "header says Phase 1" in notes and "UNKNOWN" in notes and "CD38 positive" in notes


def test_study_status_is_checked(rs: dict[str, Any]) -> None:
    validate_output(study.research_study(status="closed-to-accrual"))
    with pytest.raises(ValidationFailed) as info:
        validate_output(study.research_study(status="unknown"))
    assert [i.expression for i in info.value.issues] == [("ResearchStudy.status",)]


def test_study_arm_conditions_and_title(rs: dict[str, Any]) -> None:
    assert rs["title"] == "Humanized CD7 CAR T-cell Therapy for r/r CD7+ Acute Leukemia"
    (arm,) = rs["arm"]
    assert arm["name"] == "CD7 positive relapsed or refractory acute leukemia"
    assert arm["type"]["coding"][0]["code"] == "experimental"
    assert [c["text"] for c in rs["condition"]] == [
        "Acute Myeloid Leukemia", "Mixed Phenotype Acute Leukemia", "T Lymphoblastic Leukemia/Lymphoma"]
    aml = {(c["system"], c["code"]) for c in rs["condition"][0]["coding"]}
    assert ("http://snomed.info/sct", "91861009") in aml
    assert ("http://hl7.org/fhir/sid/icd-10", "C92.0") in aml
    assert rs["description"].startswith("This is a prospective,open-label")


def test_study_contained_sponsor_site_enrollment_resolve(rs: dict[str, Any]) -> None:
    contained = {c["id"]: c for c in rs["contained"]}
    assert rs["sponsor"]["reference"] == "#sponsor" and contained["sponsor"]["resourceType"] == "Organization"
    assert rs["site"][0]["reference"] == "#site" and contained["site"]["resourceType"] == "Location"
    assert contained["site"]["address"] == {"city": "Suzhou", "country": "CN"}
    assert rs["enrollment"][0]["reference"] == "#enrollment"
    assert contained["enrollment"]["resourceType"] == "Group"
    local_refs = {s[1:] for s in strings(rs) if s.startswith("#")}
    assert local_refs == set(contained)  # each contained resource is referenced (dom-3), each #ref resolves


def test_enrollment_group_has_one_characteristic_per_criterion(rs: dict[str, Any]) -> None:
    group = next(c for c in rs["contained"] if c["id"] == "enrollment")
    assert group["type"] == "person" and group["actual"] is False and group["quantity"] == 20
    chars = group["characteristic"]
    assert [c["code"]["coding"][0]["code"] for c in chars] == list(RULES_ORDER)
    assert {c["code"]["coding"][0]["system"] for c in chars} == {study.criteria_system()}
    assert [c["exclude"] for c in chars] == [cid.startswith("exc") for cid in RULES_ORDER]
    assert all(c["valueBoolean"] is True for c in chars)
    assert [c["code"]["coding"][0]["display"] for c in chars] == [c.text for c in criteria.criteria()]
    organ = chars[RULES_ORDER.index("inc-organ-function")]["code"]["text"]
    assert organ == criteria.criterion("inc-organ-function").applied_text()


def test_standalone_enrollment_group_and_literal_reading() -> None:
    group = study.enrollment_group("nct04762485-criteria", organ_reading="literal")
    validate_output(group)
    assert group["id"] == "nct04762485-criteria" and len(group["characteristic"]) == 15
    organ = group["characteristic"][RULES_ORDER.index("inc-organ-function")]["code"]["text"]
    assert organ == criteria.criterion("inc-organ-function").text


# ------------------------------------------------------------------------------------------ subject


def test_subject_validates_with_all_15_verdicts() -> None:
    res = subject.research_subject("p1", "candidate", verdicts(), AS_OF, "organ-function")
    validate_output(res)
    parse_resource(res)
    assert res["status"] == "candidate"
    assert res["study"] == {"reference": "ResearchStudy/nct04762485"}
    assert res["individual"] == {"reference": "Patient/p1"}
    assert res["identifier"] == [
        {"use": "usual", "system": subject.SUBJECT_ID_SYSTEM, "value": "NCT04762485-p1"}]
    assert "id" not in res


@pytest.mark.parametrize("status", ["candidate", "potential-candidate", "ineligible", "screening",
                                    "on-study-intervention", "follow-up", "withdrawn", "off-study"])
def test_subject_statuses_of_rules_are_valid(status: str) -> None:
    validate_output(subject.research_subject("p1", status, verdicts(), AS_OF, "organ-function"))


def test_subject_bad_status_fails_validation() -> None:
    res = subject.research_subject("p1", "eligible-ish", verdicts(), AS_OF, "organ-function")
    with pytest.raises(ValidationFailed) as info:
        validate_output(res)
    assert [i.expression for i in info.value.issues] == [("ResearchSubject.status",)]


def test_subject_identifier_query() -> None:
    assert subject.identifier_query("p-1.a") == (
        "identifier=https://cd7-bridge.example.org/fhir/NamingSystem/research-subject|NCT04762485-p-1.a")
    assert subject.subject_identifier("p1") == (subject.SUBJECT_ID_SYSTEM, "NCT04762485-p1")


@pytest.mark.parametrize("bad", ["", "a b", "x" * 65, "Patient/p1", "名字"])
def test_subject_rejects_a_malformed_patient_id_without_echoing_it(bad: str) -> None:
    with pytest.raises(InputError) as info:
        subject.research_subject(bad, "candidate", verdicts(), AS_OF, "organ-function")
    assert not bad or bad not in str(info.value)


def test_subject_verdicts_round_trip_in_rules_order() -> None:
    given_verdicts = list(reversed(verdicts(**{"inc-ecog": "unknown", "exc-hiv": "met"})))
    res = subject.research_subject("p1", "ineligible", given_verdicts, AS_OF, "literal")
    as_of, reading, back = subject.verdicts_from_subject(res)
    assert (as_of, reading) == (AS_OF, "literal")
    assert back == sorted(given_verdicts, key=lambda x: RULES_ORDER.index(x.criterion))
    assert back[0].evidence == () and back[1].evidence == ("Observation/o1",)


def test_subject_round_trip_survives_the_wire() -> None:
    res = subject.research_subject("p1", "candidate", verdicts(), AS_OF, "organ-function")
    wire = json.loads(json.dumps(res))
    assert subject.verdicts_from_subject(wire) == subject.verdicts_from_subject(res)


_results: st.SearchStrategy[Tri] = st.sampled_from(["met", "not-met", "unknown"])
_reasons = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF, blacklist_categories=("Cs", "Zs", "Cc")),
                   max_size=40)
_refs = st.lists(st.from_regex(r"\A(Observation|Condition|Patient)/[A-Za-z0-9]{1,8}\Z"), max_size=3)


@settings(max_examples=40, deadline=None)
@given(picked=st.lists(st.sampled_from(RULES_ORDER), unique=True, max_size=15), data=st.data())
def test_subject_round_trip_property(picked: list[str], data: st.DataObject) -> None:
    given_verdicts = [Verdict(c, data.draw(_results), data.draw(_reasons), tuple(data.draw(_refs)))
                      for c in picked]
    res = subject.research_subject("p1", "potential-candidate", given_verdicts, AS_OF, "organ-function")
    _, _, back = subject.verdicts_from_subject(res)
    assert back == sorted(given_verdicts, key=lambda x: RULES_ORDER.index(x.criterion))


@pytest.mark.parametrize("bad", [
    [Verdict("inc-age", "met", "r"), Verdict("inc-age", "met", "r")],
    [Verdict("inc-nonsense", "met", "r")],
    [Verdict("inc-age", "maybe", "r")],  # type: ignore[arg-type]
])
def test_subject_rejects_inconsistent_verdicts(bad: list[Verdict]) -> None:
    with pytest.raises(ValidationFailed) as info:
        subject.research_subject("p1", "candidate", bad, AS_OF, "organ-function")
    assert info.value.issues[0].expression[0].startswith("ResearchSubject.extension[prescreen].criterion[")


def test_subject_rejects_an_unknown_reading() -> None:
    with pytest.raises(ValidationFailed):
        subject.research_subject("p1", "candidate", verdicts(), AS_OF, "lenient")


def test_reading_back_a_subject_without_the_extension_is_invalid() -> None:
    with pytest.raises(InvalidResource):
        subject.verdicts_from_subject({"resourceType": "ResearchSubject", "id": "x", "status": "candidate"})
    res = subject.research_subject("p1", "candidate", verdicts(), AS_OF, "organ-function")
    res["extension"][0]["extension"][0]["valueDate"] = "2026-06"
    with pytest.raises(InvalidResource):
        subject.verdicts_from_subject(res)


def test_fingerprint_ignores_the_as_of_date_only() -> None:
    def fp(status: str = "candidate", as_of: date = AS_OF, reading: str = "organ-function",
           over: dict[str, str] | None = None) -> str:
        built = subject.research_subject("p1", status, verdicts(**(over or {})), as_of, reading)
        return subject.subject_fingerprint(built)

    base = fp()
    assert fp(as_of=date(2026, 7, 1)) == base == fp()
    assert fp(over={"inc-ecog": "unknown"}) != base
    assert fp(status="potential-candidate") != base
    assert fp(reading="literal") != base
    changed_reason = verdicts()
    changed_reason[2] = Verdict("inc-ecog", "met", "a different reason")
    other = subject.research_subject("p1", "candidate", changed_reason, AS_OF, "organ-function")
    assert subject.subject_fingerprint(other) != base
    assert len(base) == 64 and int(base, 16) >= 0


# ------------------------------------------------------------------------------------------ provenance


def test_provenance_names_bridge_version_and_rule_set() -> None:
    evidence = ["Observation/o1", "Condition/c1"]
    prov = provenance.provenance(["ResearchSubject/rs1"], "prescreen", RECORDED, evidence)
    validate_output(prov)
    parse_resource(prov)
    assert prov["target"] == [{"reference": "ResearchSubject/rs1"}]
    assert prov["recorded"] == "2026-06-15T09:30:00+08:00"
    assert prov["agent"][0]["who"] == {"display": f"cd7-bridge {__version__}"}
    assert prov["agent"][0]["type"]["coding"][0]["code"] == "assembler"
    version = load_trial().ruleset_version
    assert prov["policy"] == [f"https://cd7-bridge.example.org/fhir/ruleset/{version}"]
    assert version == "NCT04762485-rules/2026-11"  # the trial file's version: it names the trial and its rules
    assert prov["activity"]["coding"][0]["code"] == "prescreen"
    assert prov["reason"][0]["coding"][0]["code"] == "CLINTRCH"
    assert [e["what"]["reference"] for e in prov["entity"]] == ["Observation/o1", "Condition/c1"]
    assert {e["role"] for e in prov["entity"]} == {"source"}


def test_provenance_without_entities_and_with_an_unlisted_activity() -> None:
    target = "urn:uuid:8f7e6d5c-0000-4000-8000-000000000001"
    prov = provenance.provenance([target], "registry-export", RECORDED)
    validate_output(prov)
    assert "entity" not in prov and prov["activity"]["text"] == "registry-export"


@pytest.mark.parametrize("targets, activity, recorded, path", [
    ([], "prescreen", RECORDED, "Provenance.target"),
    (["ResearchSubject/1"], "prescreen", datetime(2026, 6, 15, 9, 30), "Provenance.recorded"),
    (["ResearchSubject/1"], "pre screen", RECORDED, "Provenance.activity"),
])
def test_provenance_rejects_bad_arguments(targets: list[str], activity: str, recorded: datetime,
                                          path: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        provenance.provenance(targets, activity, recorded)
    assert info.value.issues[0].expression == (path,)


# ------------------------------------------------------------------------------------------ no patient data


FORBIDDEN_KEYS = {"name", "birthDate", "gender", "telecom", "deceasedBoolean", "deceasedDateTime", "photo",
                  "valueQuantity", "valueHumanName", "valueAddress"}


def test_subject_and_provenance_hold_nothing_of_the_patient_but_ids() -> None:
    res = subject.research_subject("pat-77", "candidate", verdicts(), AS_OF, "organ-function")
    prov = provenance.provenance(["ResearchSubject/rs1"], "prescreen", RECORDED, ["Patient/pat-77"])
    for resource in (res, prov):
        keys = {s for s in strings(resource)}
        assert not keys & FORBIDDEN_KEYS
        with_id = [s for s in strings(resource) if "pat-77" in s]
        assert set(with_id) <= {"Patient/pat-77", "NCT04762485-pat-77"}


def test_study_holds_no_patient_data(rs: dict[str, Any]) -> None:
    people = {"Patient", "RelatedPerson", "Practitioner"}
    assert not [c for c in rs["contained"] if c["resourceType"] in people]
    assert not [s for s in strings(rs) if s.startswith("Patient/")]
