"""bridge.publish.validate: the official R4 JSON Schema and the bridge's own code checks."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft6Validator

from bridge.errors import ConfigError, ValidationFailed
from bridge.publish import validate as v
from tests.shared import EXAMPLES

SECRET = "Zhang-San-13812345678"  # a stand-in for patient data that must never reach a message


def subject(**changes: Any) -> dict[str, Any]:
    base = {"resourceType": "ResearchSubject", "id": "rs1", "status": "candidate",
            "identifier": [{"system": "urn:x", "value": "v"}],
            "study": {"reference": "ResearchStudy/nct04762485"}, "individual": {"reference": "Patient/p1"}}
    base.update(changes)
    return base


def issues_of(fn: Any, resource: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as info:
        fn(resource)
    return [(i.expression[0], i.code) for i in info.value.issues]


# ------------------------------------------------------------------------------------------ schema location


def test_default_schema_is_the_official_r4_file() -> None:
    schema = json.loads(v.schema_path().read_text(encoding="utf-8"))
    assert schema["id"] == "http://hl7.org/fhir/json-schema/4.0"
    assert schema["$schema"] == "http://json-schema.org/draft-06/schema#"


def test_env_var_overrides_and_a_missing_file_is_a_config_error(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setenv(v.SCHEMA_ENV, str(tmp_path / "nope.json"))
    with pytest.raises(ConfigError) as info:
        v.validate_r4(subject())
    assert v.SCHEMA_ENV in info.value.message and "nope.json" in info.value.message


def test_a_file_that_is_not_the_schema_is_a_config_error(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    bogus = tmp_path / "schema.json"
    bogus.write_text('{"type": "object"}', encoding="utf-8")
    monkeypatch.setenv(v.SCHEMA_ENV, str(bogus))
    with pytest.raises(ConfigError, match="definitions"):
        v.validate_r4(subject())


def test_schema_and_validators_are_built_once() -> None:
    path = str(v.schema_path())
    v.validate_r4(subject())
    before = v._load_schema.cache_info().misses
    for _ in range(5):
        v.validate_r4(subject())
    assert v._load_schema.cache_info().misses == before
    assert v._validator(path, "ResearchSubject") is v._validator(path, "ResearchSubject")


# ------------------------------------------------------------------------------------------ valid input


@pytest.mark.parametrize("name", ["researchstudy-example.json", "researchsubject-example.json",
                                  "provenance-example.json", "group-example.json", "observation-example.json",
                                  "adverseevent-example.json", "bundle-transaction.json"])
def test_official_r4_examples_pass(name: str) -> None:
    path = EXAMPLES / name
    if not path.is_file():
        pytest.skip("shared R4 examples not present")
    v.validate_r4(json.loads(path.read_text(encoding="utf-8")))


def test_valid_subject_passes_both_checks() -> None:
    v.validate_output(subject())
    assert v.schema_issues(subject()) == [] and v.code_issues(subject()) == []


# ------------------------------------------------------------------------------------------ broken input


def test_one_issue_per_error_with_element_paths() -> None:
    broken = subject(status="bogus", bogusElement=1, identifier=[{"system": 5, "value": "v"}])
    found = issues_of(v.validate_r4, broken)
    assert sorted(found) == [("ResearchSubject.bogusElement", "structure"),
                             ("ResearchSubject.identifier[0].system", "structure"),
                             ("ResearchSubject.status", "code-invalid")]


def test_validate_output_does_not_report_a_bad_code_twice() -> None:
    found = issues_of(v.validate_output, subject(status="bogus"))
    assert found == [("ResearchSubject.status", "code-invalid")]


def test_missing_required_elements_are_named() -> None:
    broken = subject()
    del broken["study"], broken["individual"]
    found = issues_of(v.validate_r4, broken)
    assert sorted(found) == [("ResearchSubject.individual", "required"),
                             ("ResearchSubject.study", "required")]


def test_each_unknown_element_is_its_own_issue() -> None:
    found = issues_of(v.validate_r4, subject(foo=1, bar=2))
    assert sorted(found) == [("ResearchSubject.bar", "structure"), ("ResearchSubject.foo", "structure")]


def test_bad_primitive_format_points_at_the_element() -> None:
    prov = {"resourceType": "Provenance", "target": [{"reference": "ResearchSubject/1"}],
            "recorded": "2026-13-01T10:00:00+08:00", "agent": [{"who": {"display": "x"}}]}
    assert issues_of(v.validate_r4, prov) == [("Provenance.recorded", "value")]


def test_messages_never_repeat_values() -> None:
    broken = subject(status=SECRET, identifier=[{"system": 5, "value": SECRET, SECRET: 1}])
    with pytest.raises(ValidationFailed) as info:
        v.validate_output(broken)
    text = str(info.value) + json.dumps(info.value.operation_outcome())
    assert "Zhang" not in text.replace(f"identifier[0].{SECRET}", "")  # an unknown element's *name* is a path
    assert len(info.value.issues) == 3


@pytest.mark.parametrize("resource, path, code", [
    ({"status": "active"}, "Resource.resourceType", "required"),
    ({"resourceType": "Foo"}, "Foo.resourceType", "not-supported"),
    ({"resourceType": "HumanName"}, "HumanName.resourceType", "not-supported"),
])
def test_resource_type_must_be_an_r4_resource(resource: dict[str, Any], path: str, code: str) -> None:
    assert issues_of(v.validate_r4, resource) == [(path, code)]


def study_with_contained(*contained: Any) -> dict[str, Any]:
    return {"resourceType": "ResearchStudy", "id": "s", "status": "active", "contained": list(contained),
            "enrollment": [{"reference": "#g"}]}


GROUP = {"resourceType": "Group", "id": "g", "type": "person", "actual": False,
         "characteristic": [{"code": {"text": "c"}, "valueBoolean": True, "exclude": False}]}


def test_errors_inside_contained_resources_keep_their_path() -> None:
    bad_group = {**GROUP, "type": "persn", "extra": 1}
    resource = study_with_contained(bad_group, {"resourceType": "Nope"}, {"id": "x"}, 5)
    found = issues_of(v.validate_r4, resource)
    assert sorted(found) == [("ResearchStudy.contained[0].extra", "structure"),
                             ("ResearchStudy.contained[0].type", "code-invalid"),
                             ("ResearchStudy.contained[1].resourceType", "not-supported"),
                             ("ResearchStudy.contained[2]", "structure"),
                             ("ResearchStudy.contained[3]", "structure")]


def test_errors_inside_bundle_entries_keep_their_path() -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": subject(status="bogus"), "request": {"method": "PUT", "url": "x"}}]}
    assert issues_of(v.validate_output, bundle) == [("Bundle.entry[0].resource.status", "code-invalid")]


@pytest.mark.parametrize("contained", [
    [GROUP],
    [{**GROUP, "type": "persn"}],
    [{**GROUP, "extra": True}],
    [{"resourceType": "Nope"}],
    [{"id": "x"}],
    [GROUP, {"resourceType": "Organization", "id": "o", "name": 5}],
])
def test_resource_dispatch_agrees_with_the_plain_one_of(contained: list[Any]) -> None:
    schema = v._load_schema(str(v.schema_path()))
    plain = Draft6Validator({**schema, "$ref": "#/definitions/ResearchStudy"})
    resource = study_with_contained(*copy.deepcopy(contained))
    assert plain.is_valid(resource) == (v.schema_issues(resource) == [])
    plain_paths = {tuple(e.absolute_path)[:2] for e in plain.iter_errors(resource)}
    dispatching = v._validator(str(v.schema_path()), "ResearchStudy")
    ours = {tuple(e.absolute_path)[:2] for e in dispatching.iter_errors(resource)}
    assert plain_paths == ours  # same failing contained entries


# ------------------------------------------------------------------------------------------ own code checks


def adverse_event(severity: dict[str, Any] | None) -> dict[str, Any]:
    ae: dict[str, Any] = {"resourceType": "AdverseEvent", "actuality": "actual",
                          "subject": {"reference": "Patient/p1"}}
    if severity is not None:
        ae["severity"] = severity
    return ae


SEVERITY = "http://terminology.hl7.org/CodeSystem/adverse-event-severity"


def test_adverse_event_severity_binding() -> None:
    v.validate_output(adverse_event({"coding": [{"system": SEVERITY, "code": "severe"}]}))
    v.validate_output(adverse_event(None))
    wrong = adverse_event({"coding": [{"system": "urn:other", "code": "x"},
                                      {"system": SEVERITY, "code": "grave"}]})
    assert issues_of(v.check_codes, wrong) == [("AdverseEvent.severity.coding[1].code", "code-invalid")]
    text_only = adverse_event({"text": "severe"})
    assert issues_of(v.check_codes, text_only) == [("AdverseEvent.severity", "code-invalid")]


def test_adverse_event_actuality_must_be_present() -> None:
    ae = adverse_event(None)
    del ae["actuality"]
    assert issues_of(v.validate_output, ae) == [("AdverseEvent.actuality", "required")]


def test_status_elements_must_be_present() -> None:
    rs = subject()
    del rs["status"]
    assert issues_of(v.validate_output, rs) == [("ResearchSubject.status", "required")]
    found = issues_of(v.check_codes, {"resourceType": "ResearchStudy"})
    assert found == [("ResearchStudy.status", "required")]
    obs = {"resourceType": "Observation", "code": {"text": "x"}}
    assert issues_of(v.check_codes, obs) == [("Observation.status", "required")]


def test_provenance_needs_recorded_and_non_empty_target_and_agent() -> None:
    prov = {"resourceType": "Provenance", "target": [], "agent": []}
    assert sorted(issues_of(v.validate_output, prov)) == [("Provenance.agent", "required"),
                                                          ("Provenance.recorded", "required"),
                                                          ("Provenance.target", "required")]


def test_group_type_actual_and_characteristic_cardinality() -> None:
    group = {"resourceType": "Group", "characteristic": [{"code": {"text": "c"}}]}
    assert sorted(issues_of(v.check_codes, group)) == [("Group.actual", "required"),
                                                       ("Group.characteristic[0].exclude", "required"),
                                                       ("Group.characteristic[0].value[x]", "required"),
                                                       ("Group.type", "required")]


def test_code_checks_reach_contained_resources() -> None:
    found = issues_of(v.check_codes, study_with_contained({**GROUP, "type": "herd"}))
    assert found == [("ResearchStudy.contained[0].type", "code-invalid")]


def test_research_study_phase_code() -> None:
    system = "http://terminology.hl7.org/CodeSystem/research-study-phase"
    phase = {"coding": [{"system": system, "code": "phase-5"}]}
    found = issues_of(v.check_codes, {"resourceType": "ResearchStudy", "status": "active", "phase": phase})
    assert found == [("ResearchStudy.phase.coding[0].code", "code-invalid")]


def test_code_table_agrees_with_the_official_schema_enums() -> None:
    definitions = v._load_schema(str(v.schema_path()))["definitions"]
    checked = 0
    for element, rule in v.codes_table()["bindings"].items():
        rtype, name = element.split(".")
        enum = definitions[rtype]["properties"][name].get("enum")
        if enum is not None:  # a code element: our list must be R4's list exactly
            assert sorted(rule["codes"]) == sorted(enum), element
            checked += 1
    assert checked == 5


def test_presence_checks_do_not_repeat_the_schema_required_lists() -> None:
    definitions = v._load_schema(str(v.schema_path()))["definitions"]
    for rtype, elements in v.codes_table()["present"].items():
        top = {e for e in elements if "." not in e}
        assert not top & set(definitions[rtype].get("required", [])), rtype


CHECKED_TYPES = {"ResearchStudy", "ResearchSubject", "Observation", "AdverseEvent", "Group", "Provenance", "Bundle"}


def test_every_official_example_of_the_published_types_passes_both_checks() -> None:
    """The own code checks must not reject valid R4: the HL7 examples of every type we check pass them."""
    files = sorted(EXAMPLES.glob("*.json"))
    if not files:
        pytest.skip("shared R4 examples not present")
    checked = []
    for path in files:
        resource = json.loads(path.read_text(encoding="utf-8"))
        if resource.get("resourceType") in CHECKED_TYPES:
            assert v.schema_issues(resource) == [] and v.code_issues(resource) == [], path.name
            checked.append(path.name)
    assert len(checked) > 50
