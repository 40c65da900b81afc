"""Package validation: the registry profile, the R4 JSON Schema and the guard, every error at once with its path."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from bridge.errors import ValidationFailed
from bridge.registry.package import build_packages, check_packages
from bridge.registry.validate import PROFILE, package_issues, profile_issues
from tests.unit.test_registry_fixtures import CONTEXT, assessment, records

Json = dict[str, Any]


def good() -> dict[str, Json]:
    built = build_packages(assessment(), records(), CONTEXT)
    return {p.timepoint: copy.deepcopy(p.bundle) for p in built.packages}


def paths(issues: list[Any]) -> list[str]:
    return [i.expression[0] for i in issues]


def test_the_profile_is_a_valid_2020_12_schema() -> None:
    schema = json.loads(PROFILE.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_good_packages_have_no_issue() -> None:
    for bundle in good().values():
        assert package_issues(bundle) == []


def test_every_error_is_listed_at_once_with_its_path() -> None:
    bundle = good()["day100"]
    bundle["type"] = "searchset"
    del bundle["meta"]["security"]
    patient = bundle["entry"][0]["resource"]
    patient["name"] = [{"family": "Doe"}]
    patient["birthDate"] = "2009-03-14"
    patient["address"] = [{"city": "Springfield", "state": "MA"}]
    del bundle["entry"][1]["resource"]["status"]
    bundle["entry"][2]["resource"]["meta"]["security"][0]["code"] = "12345"
    bundle["entry"][2]["resource"]["_effectiveDateTime"]["extension"] = []
    bundle["entry"][3]["resource"]["status"] = "done"
    bundle["entry"][4]["fullUrl"] = "Observation/1"
    issues = package_issues(bundle)
    found = paths(issues)
    for expected in ("Bundle.type", "Bundle.meta.security", "Bundle.entry[0].resource.name",
                     "Bundle.entry[0].resource.birthDate", "Bundle.entry[0].resource.address[0].city",
                     "Bundle.entry[1].resource.status", "Bundle.entry[2].resource.meta.security",
                     "Bundle.entry[2].resource._effectiveDateTime.extension", "Bundle.entry[3].resource.status",
                     "Bundle.entry[4].fullUrl"):
        assert expected in found, expected
    # messages name the rule, never the value
    text = " ".join(i.diagnostics for i in issues)
    assert "Doe" not in text and "Springfield" not in text and "2009-03-14" not in text


def test_time_point_content_is_required() -> None:
    built = good()
    follow_up = built["month6"]
    follow_up["entry"] = [e for e in follow_up["entry"]
                          if e["resource"].get("code", {}).get("coding", [{}])[0].get("code") != "survival-status"]
    issues = profile_issues(follow_up)
    assert [(i.expression[0], i.diagnostics) for i in issues] == [
        ("Bundle.entry", "must hold exactly one Observation 'survival-status'")]
    infusion = built["infusion-1"]
    infusion["entry"] = [e for e in infusion["entry"] if e["resource"]["resourceType"] != "MedicationAdministration"]
    assert [i.diagnostics for i in profile_issues(infusion)] == [
        "an infusion package must hold exactly one MedicationAdministration"]


def test_exactly_one_patient() -> None:
    bundle = good()["day100"]
    bundle["entry"].append(copy.deepcopy(bundle["entry"][0]))
    assert [(i.expression[0], i.diagnostics) for i in profile_issues(bundle)] == [
        ("Bundle.entry", "must hold exactly one Patient")]


def test_only_the_pseudonym_and_registry_id_may_identify() -> None:
    bundle = good()["day100"]
    bundle["entry"][0]["resource"]["identifier"].append({"system": "http://st-brigid.example/mrn", "value": "M-1"})
    assert paths(profile_issues(bundle)) == ["Bundle.entry[0].resource.identifier[1].system"]


def test_foreign_resource_types_are_refused() -> None:
    bundle = good()["day100"]
    bundle["entry"].append({"fullUrl": "urn:uuid:00000000-0000-4000-8000-000000000000",
                            "resource": {"resourceType": "Condition", "id": "x",
                                         "meta": bundle["entry"][0]["resource"]["meta"],
                                         "subject": {"reference": "urn:uuid:x"}}})
    assert "Bundle.entry[8].resource.resourceType" in paths(package_issues(bundle))


def test_the_r4_schema_is_applied_too() -> None:
    bundle = good()["day100"]
    bundle["entry"][2]["resource"]["flavour"] = "x"
    assert "Bundle.entry[2].resource.flavour" in paths(package_issues(bundle))


def test_check_packages_reports_every_package_at_once() -> None:
    built = build_packages(assessment(), records(), CONTEXT)
    built.packages[0].bundle["type"] = "batch"
    built.packages[2].bundle["entry"][0]["resource"]["telecom"] = [{"system": "phone", "value": "1"}]
    with pytest.raises(ValidationFailed) as exc:
        check_packages(built.packages)
    assert exc.value.exit_code == 6
    assert exc.value.message.startswith("2 registry package(s) fail validation")
    by_package = {i.diagnostics.split(":", 1)[0] for i in exc.value.issues}
    assert by_package == {built.packages[0].id, built.packages[2].id}
