"""De-identification: nothing identifying of the input appears anywhere in any package; pseudonyms behave."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.config import Settings
from bridge.errors import ConfigError, ValidationFailed
from bridge.fhirmodels import parse_resource
from bridge.model import PartialDate
from bridge.registry.deid import age_quantity, age_years, birth_year, identifying_values, leak_issues
from bridge.registry.package import Context, build_packages, check_packages
from bridge.registry.pseudonym import centre_label, centre_number, pseudonym, site_secret
from tests.unit.test_registry_fixtures import (
    CENTRE,
    CONTEXT,
    OTHER_SECRET,
    SECRET,
    administration,
    assessment,
    consent,
    patient_doc,
    records,
    resources,
    rich_patient,
)

Json = dict[str, Any]
IDENTIFYING_KEYS = {"family", "given", "text", "line", "city", "district", "postalCode", "value", "div", "url",
                    "display", "reference", "id", "evidence", "patient"}
KEPT = {"Massachusetts", "US"}  # state and country may travel (Safe Harbor)
DATE = re.compile(r"[0-9]{4}-[0-9]{2}(-[0-9]{2})?(T[0-9:.+\-Z]+)?")


def _walk(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)
    elif isinstance(node, str):
        yield key, node


def identifying_strings(*inputs: Json) -> set[str]:
    """Every name, identifier, telecom, address part, narrative, URL, display, reference, id and date."""
    found: set[str] = set()
    for doc in inputs:
        for key, value in _walk(doc):
            if key in IDENTIFYING_KEYS and value not in KEPT and not value.startswith("http://hl7.org/"):
                found.add(value)
                if "/" in value and not value.startswith("http"):
                    found.add(value.split("/", 1)[1])  # the id of a reference
            found.update(m.group(0) for m in DATE.finditer(value))
    return {v for v in found if len(v) >= 4}


def all_packages() -> list[Json]:
    result = build_packages(assessment(), records(), CONTEXT)
    assert [p.timepoint for p in result.packages] == ["infusion-1", "day100", "month6", "yearly-1"]
    check_packages(result.packages)
    return [p.bundle for p in result.packages]


def test_no_identifying_string_or_date_of_the_input_appears_in_any_package() -> None:
    inputs = [*resources(), assessment()]
    secret_values = identifying_strings(*inputs)
    # the collector itself found what the fixture planted
    for planted in ("Zelinskaya", "Aurelia", "MRN-778899", "987-65-4329", "+1-555-0199", "42 Quillby Lane",
                    "Springfield", "01109", "2009-03-14", "Okonkwo-Zel", "+1-555-0142", "Ysolde Marchbank",
                    "pt-zel-001", "ma-zel-0110", "obs-zel-marrow-17", "2026-01-10T09:30:00+08:00", "2026-01-12",
                    "https://photos.st-brigid.example/aurelia-zel.jpg", "pump-SN-4471", "INFREC-ZZ91"):
        assert any(planted in v for v in secret_values), planted
    for bundle in all_packages():
        text = json.dumps(bundle, ensure_ascii=False).lower()
        leaked = sorted(v for v in secret_values if v.lower() in text)
        assert leaked == [], f"{bundle['id']} leaks {leaked}"
        # no year-month anywhere (a UUID's digit groups are not dates: they are bounded by hex letters/digits)
        assert not re.search(r"(?<![0-9a-f])[0-9]{4}-[0-9]{2}(?![0-9a-f])", text), "a date below the year"


def test_only_state_country_gender_and_birth_year_remain_of_the_patient() -> None:
    for bundle in all_packages():
        (patient,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
        assert set(patient) == {"resourceType", "id", "meta", "identifier", "gender", "birthDate",
                                "deceasedBoolean", "address"}
        assert patient["address"] == [{"state": "Massachusetts", "country": "US"}]
        assert patient["birthDate"] == "2009" and patient["gender"] == "female"
        assert patient["identifier"] == [{"system": "https://cd7-bridge.example.org/fhir/NamingSystem/"
                                                    "registry-pseudonym", "value": pseudonym("pt-zel-001", SECRET)}]


def test_no_narrative_anywhere() -> None:
    for bundle in all_packages():
        assert '"text": {"status"' not in json.dumps(bundle)
        assert all("text" not in e["resource"] or e["resource"]["resourceType"] != "Patient" for e in bundle["entry"])
        assert '"div"' not in json.dumps(bundle) and '"note"' not in json.dumps(bundle)


def test_every_resource_carries_the_centre_label() -> None:
    label = [{"system": "http://terminology.cibmtr.org/codesystem/transplant-center", "code": CENTRE}]
    for bundle in all_packages():
        assert bundle["meta"]["security"] == label
        assert all(e["resource"]["meta"]["security"] == label for e in bundle["entry"])


def test_dates_travel_as_year_plus_relative_day() -> None:
    infusion, day100, *_ = all_packages()
    (ma,) = [e["resource"] for e in infusion["entry"] if e["resource"]["resourceType"] == "MedicationAdministration"]
    assert ma["effectiveDateTime"] == "2026"
    assert ma["_effectiveDateTime"]["extension"] == [
        {"url": "https://cd7-bridge.example.org/fhir/StructureDefinition/relative-day", "valueInteger": 0}]
    crs = next(e["resource"] for e in day100["entry"] if e["resource"]["resourceType"] == "AdverseEvent")
    assert (crs["date"], crs["_date"]["extension"][0]["valueInteger"]) == ("2026", 2)


def test_packages_parse_with_the_r4b_models() -> None:
    for bundle in all_packages():
        parse_resource(copy.deepcopy(bundle), "package")


# ---------------------------------------------------------------------------------------------- pseudonyms


def test_pseudonym_is_stable_across_runs_and_differs_across_secrets() -> None:
    first = build_packages(assessment(), records(), CONTEXT)
    again = build_packages(assessment(), records(), Context(SECRET, CENTRE))
    other = build_packages(assessment(), records(), Context(OTHER_SECRET, CENTRE))
    assert {p.pseudonym for p in first.packages} == {p.pseudonym for p in again.packages} == {
        pseudonym("pt-zel-001", SECRET)}
    assert [p.bundle for p in first.packages] == [p.bundle for p in again.packages]
    assert [p.key for p in first.packages] == [p.key for p in again.packages]
    assert {p.pseudonym for p in other.packages}.isdisjoint({p.pseudonym for p in first.packages})
    assert "pt-zel-001" not in pseudonym("pt-zel-001", SECRET)


@given(st.text(min_size=1, max_size=64), st.text(min_size=16, max_size=40))
def test_pseudonym_property(patient_id: str, secret: str) -> None:
    p = pseudonym(patient_id, secret)
    assert re.fullmatch(r"[0-9a-f]{32}", p)
    assert p == pseudonym(patient_id, secret)
    assert p != pseudonym(patient_id + "x", secret)
    assert p != pseudonym(patient_id, secret + "x")


@pytest.mark.parametrize("secret", [None, "", "too-short-secret"[:15]])
def test_missing_or_short_secret_is_a_config_error(secret: str | None) -> None:
    with pytest.raises(ConfigError) as exc:
        site_secret(Settings(pseudonym_secret=secret))
    assert exc.value.exit_code == 5


def test_sixteen_characters_are_enough() -> None:
    assert site_secret(Settings(pseudonym_secret="x" * 16)) == "x" * 16


@pytest.mark.parametrize("code", ["rc_12345", "rc_0"])
def test_centre_label(code: str) -> None:
    assert centre_label(code) == code and centre_number(code) == code[3:]


@pytest.mark.parametrize("code", ["12345", "rc_", "RC_12345", "rc_12a", "rc_12345 "])
def test_bad_centre_label(code: str) -> None:
    with pytest.raises(ConfigError):
        centre_label(code)


# ---------------------------------------------------------------------------------------------- ages


@pytest.mark.parametrize(("birth", "on", "years"), [
    (PartialDate(2000, 3, 14), date(2026, 3, 13), 25), (PartialDate(2000, 3, 14), date(2026, 3, 14), 26),
    (PartialDate(2000), date(2026, 1, 1), 26), (PartialDate(2000, 12), date(2026, 11, 30), 25),
])
def test_age_years(birth: PartialDate, on: date, years: int) -> None:
    assert age_years(birth, on) == years


def test_age_89_keeps_the_birth_year_and_90_drops_it() -> None:
    assert birth_year({"birthDate": "1937-01-01"}, date(2026, 12, 31)) == "1937"  # 89
    assert birth_year({"birthDate": "1936-12-31"}, date(2026, 12, 31)) is None  # 90
    assert age_quantity({"birthDate": "1937-01-01"}, date(2026, 12, 31)) == {
        "value": 89, "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"}
    assert age_quantity({"birthDate": "1930-05-05"}, date(2026, 1, 10)) == {
        "value": 89, "comparator": ">", "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"}


def test_a_patient_over_89_has_no_birth_year_and_a_capped_age() -> None:
    old = rich_patient(birth="1930-05-05")
    result = build_packages(assessment(), records(old, consent(), administration()), CONTEXT, ["infusion"])
    check_packages(result.packages)
    entries = [e["resource"] for e in result.packages[0].bundle["entry"]]
    (patient,) = [r for r in entries if r["resourceType"] == "Patient"]
    assert "birthDate" not in patient
    (age,) = [r for r in entries if r["resourceType"] == "Observation"]
    assert age["valueQuantity"]["comparator"] == ">" and age["valueQuantity"]["value"] == 89
    assert "1930" not in json.dumps(result.packages[0].bundle)


# ---------------------------------------------------------------------------------------------- the guard


def test_identifying_values_of_the_raw_resources() -> None:
    found = identifying_values([rich_patient(), administration()], allowed=["Massachusetts", "US"])
    for value in ("Zelinskaya", "Aurelia", "MRN-778899", "+1-555-0199", "42 Quillby Lane", "Springfield",
                  "01109", "2009-03-14", "pt-zel-001", "ma-zel-0110", "Okonkwo-Zel"):
        assert value in found, value
    assert "Massachusetts" not in found and "US" not in found


def test_the_guard_names_the_path_never_the_value() -> None:
    bundle = copy.deepcopy(all_packages()[1])
    bundle["entry"][2]["resource"]["medicationCodeableConcept"]["text"] = "for Aurelia Zelinskaya"
    bundle["entry"][3]["resource"]["effectiveDateTime"] = "2026-02-07"
    issues = leak_issues(bundle, identifying_values([rich_patient()]))
    assert [i.expression for i in issues] == [("Bundle.entry[2].resource.medicationCodeableConcept.text",),
                                              ("Bundle.entry[3].resource.effectiveDateTime",)]
    assert all("Zelinskaya" not in i.diagnostics and "2026" not in i.diagnostics for i in issues)


def test_the_guard_matches_whole_tokens_only() -> None:
    bundle = {"a": "Annabel", "b": "Ann", "c": "x-Ann-y", "system": "https://cd7-bridge.example.org/fhir/x"}
    paths = [i.expression[0] for i in leak_issues(bundle, ["Ann", "bridge"])]
    assert paths == ["Bundle.b", "Bundle.c"]


def test_check_packages_refuses_a_leaking_package() -> None:
    result = build_packages(assessment(), records(), CONTEXT, ["infusion"])
    result.packages[0].bundle["entry"][0]["resource"]["address"][0]["city"] = "Springfield"
    with pytest.raises(ValidationFailed) as exc:
        check_packages(result.packages)
    paths = [i.expression[0] for i in exc.value.issues]
    assert "Bundle.entry[0].resource.address[0].city" in paths
    assert "Springfield" not in str(exc.value) + " ".join(i.diagnostics for i in exc.value.issues)


def test_patient_doc_fixture_uses_the_issue_shape() -> None:
    assert set(patient_doc()) >= {"patient", "dayZero", "infusions", "weightKg", "cellsPerKg", "assessments",
                                  "bestResponse", "relapseDate", "adverseEvents"}
