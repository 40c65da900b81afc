"""The bridge's conformance resources (issue #14 item 3): generated, committed, complete and consistent.

The committed ``profiles/<Type>-<id>.json`` files are exactly what ``bridge.publish.conformance`` generates for
the shipped trial (regenerate with ``python -m bridge.publish.conformance``); the criteria CodeSystem follows
the trial file; every canonical URL the builders write under the bridge's base has its definition; every
snapshot is complete; all of them are valid R4 JSON. Whether Medplum's validator accepts them, and accepts or
refuses what the builders produce, is ``tests/integration/test_validator.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from bridge.decisions import ACTION_KINDS, FAILURE_REASONS
from bridge.errors import ConfigError
from bridge.publish import conformance as c
from bridge.publish.outcomes import AE_TERM_SYSTEM, ASSESSMENT_SYSTEM, RESPONSE_SYSTEM, RESPONSES
from bridge.publish.provenance import ACTIVITIES, ACTIVITY_SYSTEM
from bridge.publish.study import REGISTRY_STATUS_EXTENSION, criteria_system
from bridge.publish.subject import (
    DECISION_EXTENSION,
    FAILURE_REASON_SYSTEM,
    PRESCREEN_EXTENSION,
    READINGS,
    RESULTS,
    TEAM_ACTION_SYSTEM,
)
from bridge.publish.validate import validate_output
from bridge.registry.deid import RELATIVE_DAY
from bridge.registry.resources import CELLS_PER_KG, GRADING_SYSTEM_EXT
from bridge.trial import load_trial

ROOT = Path(__file__).resolve().parents[2]
SECOND = ROOT / "tests" / "data" / "trials" / "second.yaml"
Json = dict[str, Any]


@pytest.fixture(scope="module")
def generated() -> list[Json]:
    try:
        return c.conformance_resources()
    except ConfigError as exc:  # the snapshots need the base R4 definitions of scripts/validator-setup
        if os.environ.get("CI"):
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def committed() -> dict[str, Json]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in c.committed_files()}


def by_url(resources: list[Json]) -> dict[str, Json]:
    return {r["url"]: r for r in resources}


def test_the_committed_files_are_the_generated_ones(generated: list[Json], committed: dict[str, Json]) -> None:
    assert sorted(committed) == sorted(c.file_name(r) for r in generated), "run python -m bridge.publish.conformance"
    for resource in generated:
        path = ROOT / "profiles" / c.file_name(resource)
        assert path.read_text(encoding="utf-8") == c.dumps(resource), f"{path.name} is stale"


def test_every_canonical_url_the_bridge_writes_has_its_definition(committed: dict[str, Json]) -> None:
    urls = {r["url"]: r["resourceType"] for r in committed.values()}
    for ext in (PRESCREEN_EXTENSION, DECISION_EXTENSION, REGISTRY_STATUS_EXTENSION, CELLS_PER_KG, GRADING_SYSTEM_EXT,
                RELATIVE_DAY):
        assert urls.get(ext) == "StructureDefinition", ext
    for system in (criteria_system(), ACTIVITY_SYSTEM, RESPONSE_SYSTEM, ASSESSMENT_SYSTEM, AE_TERM_SYSTEM,
                   c.RESULT_SYSTEM, c.READING_SYSTEM, TEAM_ACTION_SYSTEM, FAILURE_REASON_SYSTEM):
        assert urls.get(system) == "CodeSystem", system
    for profile in (c.SUBJECT_PROFILE, c.RESPONSE_PROFILE, c.ADVERSE_EVENT_PROFILE):
        assert urls.get(profile) == "StructureDefinition", profile


def codes(system: Json) -> list[str]:
    return [concept["code"] for concept in system["concept"]]


def test_the_criteria_code_system_is_the_trial_file() -> None:
    trial = load_trial()
    system = c.criteria_code_system()
    assert system["url"] == criteria_system()
    assert system["version"] == trial.ruleset_version
    assert codes(system) == list(trial.criterion_ids)
    assert [x["display"] for x in system["concept"]] == [k.text for k in trial.criteria]  # as the Group codes it
    organ = next(x for x in system["concept"] if x["code"] == "inc-organ-function")
    assert organ["definition"] == trial.criterion("inc-organ-function").applied_text() != organ["display"]
    kinds = {x["code"]: x["property"][0]["valueCode"] for x in system["concept"]}
    assert {k for k, v in kinds.items() if v == "exclusion"} == set(trial.exclusions)
    assert system["count"] == len(trial.criteria)


def test_another_trial_publishes_its_own_criteria_instead_of_the_shipped_ones(committed: dict[str, Json]) -> None:
    second = load_trial(SECOND)
    published = by_url(c.load_resources(second))
    assert criteria_system(second) in published and criteria_system() not in published
    assert codes(published[criteria_system(second)]) == list(second.criterion_ids)
    assert published[criteria_system(second)]["valueSet"] in published
    assert by_url(c.load_resources()) == by_url(list(committed.values()))  # the shipped trial: the files


def test_the_code_systems_hold_the_codes_the_builders_write(committed: dict[str, Json]) -> None:
    urls = by_url(list(committed.values()))
    assert codes(urls[ACTIVITY_SYSTEM]) == list(ACTIVITIES)
    assert codes(urls[RESPONSE_SYSTEM]) == list(RESPONSES)
    assert codes(urls[c.RESULT_SYSTEM]) == list(RESULTS)
    assert codes(urls[c.READING_SYSTEM]) == list(READINGS)
    assert codes(urls[ASSESSMENT_SYSTEM]) == ["response-assessment", "best-overall-response"]
    assert codes(urls[TEAM_ACTION_SYSTEM]) == list(ACTION_KINDS)
    assert codes(urls[FAILURE_REASON_SYSTEM]) == list(FAILURE_REASONS)


def test_each_code_system_has_the_value_set_of_all_its_codes(committed: dict[str, Json]) -> None:
    urls = by_url(list(committed.values()))
    systems = [r for r in committed.values() if r["resourceType"] == "CodeSystem"]
    assert len([r for r in committed.values() if r["resourceType"] == "ValueSet"]) == len(systems)
    for system in systems:
        vs = urls[system["valueSet"]]
        assert vs["compose"] == {"include": [{"system": system["url"], "version": system["version"]}]}
        assert system["content"] == "complete" and system["count"] == len(system["concept"])


def test_the_snapshots_are_complete_and_hold_the_differential(generated: list[Json]) -> None:
    for sd in (r for r in generated if r["resourceType"] == "StructureDefinition"):
        snapshot = [e["id"] for e in sd["snapshot"]["element"]]
        assert len(snapshot) == len(set(snapshot)), sd["id"]
        base = [e["id"] for e in c.base_definition(sd["type"])["snapshot"]["element"]]
        assert set(base) <= set(snapshot), sd["id"]  # every base element is there
        assert {e["id"] for e in sd["differential"]["element"]} <= set(snapshot), sd["id"]
        fixed = {e["id"]: e["fixedUri"] for e in sd["snapshot"]["element"] if "fixedUri" in e}
        if sd["type"] == "Extension":
            assert fixed["Extension.url"] == sd["url"]


def test_the_prescreen_extension_describes_what_the_builder_writes(committed: dict[str, Json]) -> None:
    sd = by_url(list(committed.values()))[PRESCREEN_EXTENSION]
    slices = {e["id"]: (e["min"], e["max"]) for e in sd["snapshot"]["element"] if "sliceName" in e}
    assert slices == {
        "Extension.extension:asOf": (1, "1"), "Extension.extension:reading": (1, "1"),
        "Extension.extension:ruleset": (1, "1"), "Extension.extension:criterion": (0, "*"),
        "Extension.extension:criterion.extension:id": (1, "1"),
        "Extension.extension:criterion.extension:result": (1, "1"),
        "Extension.extension:criterion.extension:reason": (0, "1"),
        "Extension.extension:criterion.extension:evidence": (0, "*"),
    }
    assert sd["context"] == [{"type": "element", "expression": "ResearchSubject"}]


def test_the_decision_extension_describes_what_the_builder_writes(committed: dict[str, Json]) -> None:
    sd = by_url(list(committed.values()))[DECISION_EXTENSION]
    slices = {e["id"].removeprefix("Extension.extension:"): (e["min"], e["max"]) for e in sd["snapshot"]["element"]
              if "sliceName" in e}
    assert slices == {"action": (1, "1"), "status": (0, "1"), "judgement": (0, "1"), "reason": (0, "1"),
                      "note": (0, "1"), "decidedAt": (1, "1"), "by": (1, "1"), "reviewedVerdicts": (1, "1"),
                      "changedSinceReview": (1, "1")}
    assert sd["context"] == [{"type": "element", "expression": "ResearchSubject"}]
    profile = by_url(list(committed.values()))[c.SUBJECT_PROFILE]
    decision = next(e for e in profile["snapshot"]["element"] if e["id"] == "ResearchSubject.extension:decision")
    assert (decision["min"], decision["max"], decision["type"][0]["profile"]) == (0, "1", [DECISION_EXTENSION])


def test_every_conformance_resource_is_valid_r4_json(committed: dict[str, Json]) -> None:
    for resource in committed.values():
        validate_output(resource)


def test_profile_for_picks_the_bridge_profile() -> None:
    from bridge.publish.subject import SUBJECT_ID_SYSTEM

    assert c.profile_for({"resourceType": "ResearchSubject", "identifier": [{"system": SUBJECT_ID_SYSTEM}]}) \
        == c.SUBJECT_PROFILE
    assert c.profile_for({"resourceType": "ResearchSubject", "identifier": [{"system": "urn:x"}]}) is None
    assert c.profile_for({"resourceType": "Observation", "code": {"coding": [{"system": ASSESSMENT_SYSTEM}]}}) \
        == c.RESPONSE_PROFILE
    assert c.profile_for({"resourceType": "Observation", "code": "bad"}) is None
    assert c.profile_for({"resourceType": "AdverseEvent", "identifier": {"value": "x"}, "study": [{}]}) \
        == c.ADVERSE_EVENT_PROFILE
    assert c.profile_for({"resourceType": "AdverseEvent"}) is None
