"""Everything the bridge publishes passes an independent validator (issue #14 item 4): Medplum's, offline.

``tests/validator.py`` runs ``scripts/validate-fhir.mjs`` (Medplum's ``validateResource`` on the base R4
definitions, the bridge's profiles and extensions, FHIRPath invariants, required bindings) under Debian's
nodejs, many resources per process. Checked here, each built by the real builders from the samples:

- the conformance resources themselves (``profiles/StructureDefinition-*.json`` …);
- the ResearchStudy, its stand-alone enrollment Group, every sample patient's ResearchSubject (both readings),
  the Provenance of each activity, the transaction Bundle of a subject and its Provenance (both forms);
- the response Observations, best responses and AdverseEvents of the treated samples' assessment;
- the resources of a registry package;
- and the validator refuses broken ones (so these tests can fail): a bad status code, a missing extension,
  a wrong value type, a broken invariant, a code outside the bridge's own value sets, a duplicate criterion.

Each resource the bridge publishes under a profile is checked against it as well (``profile_for``). A
ValueSet the validator cannot expand offline (SNOMED CT, UCUM, mime types) is reported as unchecked, never
as passed; the test of ``/fhir`` responses is ``test_validator_fhir_api.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest

from bridge.client import FhirClient
from bridge.config import RuleOptions
from bridge.normalize.mappings import load_code_map
from bridge.pipeline import assess, prescreen
from bridge.publish import conformance, outcomes
from bridge.publish.provenance import ACTIVITIES, provenance
from bridge.publish.publisher import subject_transaction
from bridge.publish.study import enrollment_group, research_study
from bridge.publish.subject import research_subject
from bridge.publish.validate import REPO_ROOT
from tests.validator import FhirValidator, Verdict, fhir_validator  # noqa: F401

Json = dict[str, Any]
SITE_MAP = REPO_ROOT / "samples" / "site-map.yaml"
PRESCREEN = REPO_ROOT / "samples" / "prescreen" / "bundle.json"
TREATED = REPO_ROOT / "samples" / "treated" / "bundle.json"
RECORDED = datetime(2026, 6, 15, 9, 30, tzinfo=timezone(timedelta(hours=8)))
OPTIONS = RuleOptions(as_of=date(2026, 6, 15))
LITERAL = RuleOptions(as_of=date(2026, 6, 15), organ_function_reading="literal")
ASSESS = RuleOptions(as_of=date(2026, 12, 31))


def label(resource: Json) -> str:
    ident = resource.get("id") or (resource.get("identifier") or [{}])
    if isinstance(ident, list):
        ident = ident[0].get("value") if ident else None
    elif isinstance(ident, dict):
        ident = ident.get("value")
    return f"{resource['resourceType']}/{ident}"


def subjects() -> list[Json]:
    cmap = load_code_map(SITE_MAP)
    out = []
    for options in (OPTIONS, LITERAL):
        for s in prescreen(str(PRESCREEN), options, cmap).screenings:
            out.append(research_subject(s.patient.removeprefix("Patient/"), s.status, list(s.verdicts),
                                        options.as_of, options.organ_function_reading))
    return out


def assessment_resources() -> list[Json]:
    run = assess(str(TREATED), ASSESS, load_code_map(SITE_MAP))
    doc = run.as_json()
    out: list[Json] = []
    for patient in doc["patients"]:  # type: ignore[attr-defined]
        pid = str(patient["patient"]).removeprefix("Patient/")
        out += [outcomes.response_observation(pid, a, ASSESS.comparators, ASSESS.cri_reading)
                for a in patient.get("assessments") or []]
        best = outcomes.best_response_observation(pid, patient, ASSESS.as_of)
        out += [best] if best else []
        suspect = next((i.get("evidence") for i in patient.get("infusions") or []), None)
        out += [outcomes.adverse_event(pid, ae, suspect) for ae in patient.get("adverseEvents") or []]
    return out


def registry_resources() -> list[Json]:
    from tests.unit.test_registry_package import packages

    bundles = packages().values()
    return [*bundles, *(e["resource"] for b in bundles for e in b.get("entry") or [])]


def provenances() -> list[Json]:
    return [provenance([f"ResearchSubject/rs-1/_history/{n}"], activity, RECORDED, ["Patient/p01"])
            for n, activity in enumerate(ACTIVITIES, start=1)]


def transactions() -> list[Json]:
    subject = research_subject("p01", "candidate", [], OPTIONS.as_of, "organ-function")
    current = {**subject, "id": "rs-1", "meta": {"versionId": "2"}}
    with FhirClient("https://ehr.example.org/fhir") as client:
        return [subject_transaction(client, subject, "p01", None, ["Patient/p01"], RECORDED),
                subject_transaction(client, subject, "p01", current, ["Patient/p01"], RECORDED, conditional=False),
                subject_transaction(client, subject, "p01", None, ["Patient/p01"], RECORDED, conditional=False)]


GROUPS = {
    "conformance": lambda: conformance.load_resources(),
    "study": lambda: [research_study(), enrollment_group(group_id="enrollment-nct04762485"),
                      research_study(organ_reading="literal", status="closed-to-accrual")],
    "subjects": subjects,
    "provenance": provenances,
    "transactions": transactions,
    "assessment": assessment_resources,
    "registry": registry_resources,
}


@pytest.fixture(scope="module")
def verdicts(fhir_validator: FhirValidator) -> dict[str, list[tuple[Json, Verdict]]]:  # noqa: F811
    """Every group built and validated in one node process."""
    built = {name: make() for name, make in GROUPS.items()}
    flat = [r for resources in built.values() for r in resources]
    results = iter(fhir_validator.validate(flat))
    return {name: [(r, next(results)) for r in resources] for name, resources in built.items()}


@pytest.mark.parametrize("group", list(GROUPS))
def test_every_published_resource_passes_the_validator(group: str,
                                                       verdicts: dict[str, list[tuple[Json, Verdict]]]) -> None:
    checked = verdicts[group]
    assert checked, f"no {group} resources were built"
    failures = {label(r): v.text() for r, v in checked if v.errors}
    assert not failures, failures


def test_the_groups_cover_every_resource_type_the_bridge_publishes(
        verdicts: dict[str, list[tuple[Json, Verdict]]]) -> None:
    types = {r["resourceType"] for checked in verdicts.values() for r, _ in checked}
    assert {"ResearchStudy", "Group", "ResearchSubject", "Provenance", "Observation", "AdverseEvent", "Bundle",
            "StructureDefinition", "CodeSystem", "ValueSet", "Patient", "MedicationAdministration"} <= types


def test_the_bridge_profiles_were_applied(verdicts: dict[str, list[tuple[Json, Verdict]]]) -> None:
    profiled = {conformance.profile_for(r) for checked in verdicts.values() for r, _ in checked}
    assert {conformance.SUBJECT_PROFILE, conformance.RESPONSE_PROFILE, conformance.ADVERSE_EVENT_PROFILE} <= profiled


def test_the_bridge_own_bindings_are_checked_not_skipped(verdicts: dict[str, list[tuple[Json, Verdict]]]) -> None:
    unchecked = {u for checked in verdicts.values() for _, v in checked for u in v.unchecked}
    own = {u for u in unchecked if u.startswith(conformance.BRIDGE_BASE)}
    assert not own
    assert "http://hl7.org/fhir/ValueSet/research-subject-status" not in unchecked


# ---------------------------------------------------------------------------------------------- refusals


def subject() -> Json:
    return subjects()[0]


def broken() -> Iterator[tuple[str, Json, str, str]]:
    """(what, resource, expected issue code, a word of its expression); each is checked against the base
    definition and, for the resource types the bridge profiles, against its profile."""
    s = subject()
    yield "bad status code", {**s, "status": "enrolled"}, "code-invalid", "ResearchSubject.status"
    yield "no prescreen extension", {k: v for k, v in s.items() if k != "extension"}, "structure", "extension"
    dup = copy.deepcopy(s)
    dup["extension"][0]["extension"].append(dup["extension"][0]["extension"][3])
    yield "a criterion twice", dup, "invariant", "extension[0]"
    bad_result = copy.deepcopy(s)
    bad_result["extension"][0]["extension"][3]["extension"][1]["valueCode"] = "maybe"
    yield "a result outside the value set", bad_result, "code-invalid", "extension[3]"
    no_ident = {**s, "identifier": [{"system": "urn:example:other", "value": "x"}]}
    yield "no bridge identifier", no_ident, "invariant", "ResearchSubject"
    obs = outcomes.response_observation("p01", {"date": "2026-07-01", "response": "CR", "day": 17}, "record")
    yield "a response as a Quantity", {**{k: v for k, v in obs.items() if k != "valueCodeableConcept"},
                                        "valueQuantity": {"value": 1}}, "invariant", "Observation"
    yield "an unknown response", {**obs, "valueCodeableConcept": {"coding": [
        {"system": outcomes.RESPONSE_SYSTEM, "code": "cure"}]}}, "code-invalid", "Observation.value"
    yield "obs-6: a value and a dataAbsentReason", {**obs, "dataAbsentReason": {"text": "x"}}, "invariant", \
        "Observation"
    ae = outcomes.adverse_event("p01", {"term": "Cytokine release syndrome", "grade": 3, "onset": "2026-07-02"},
                                None)
    yield "a grade without severity", {k: v for k, v in ae.items() if k != "severity"}, "invariant", "AdverseEvent"
    yield "a wrong date", {**ae, "date": "2026-02-30"}, "structure", "AdverseEvent.date"
    prov = provenances()[0]
    yield "Provenance without an agent", {k: v for k, v in prov.items() if k != "agent"}, "structure", "agent"
    study = research_study()
    yield "a study status outside R4's", {**study, "status": "unknown"}, "code-invalid", "ResearchStudy.status"
    yield "an unknown criterion", {**s, "extension": [{**s["extension"][0], "extension": [
        *s["extension"][0]["extension"][:3], {"url": "criterion", "extension": [
            {"url": "id", "valueCoding": {"system": conformance.criteria_system(), "code": "inc-luck"}},
            {"url": "result", "valueCode": "met"}]}]}]}, "code-invalid", "extension[3]"


BROKEN = list(broken())
PROFILES = {"ResearchSubject": conformance.SUBJECT_PROFILE, "Observation": conformance.RESPONSE_PROFILE,
            "AdverseEvent": conformance.ADVERSE_EVENT_PROFILE}


@pytest.fixture(scope="module")
def refusals(fhir_validator: FhirValidator) -> list[Verdict]:  # noqa: F811
    items = [(resource, [p] if (p := PROFILES.get(resource["resourceType"])) else [])
             for _, resource, _, _ in BROKEN]
    return fhir_validator.validate(items)


@pytest.mark.parametrize("index", range(len(BROKEN)), ids=[what for what, _, _, _ in BROKEN])
def test_the_validator_refuses_a_broken_resource(index: int, refusals: list[Verdict]) -> None:
    _, _, code, where = BROKEN[index]
    errors = refusals[index].errors
    assert errors, "accepted"
    assert any(e["code"] == code and where in e["expression"] for e in errors), errors
