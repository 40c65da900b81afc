"""``bridge.population.validation``: remembering complex elements never changes an R4B validation's answer.

The population paths trust ``valid(resource)`` only when it says valid; it must never say so of a resource the
R4B model rejects. Checked on every resource of the samples and of a generated population, and on random
mutations of them (nulls, empty objects, wrong types, unknown keys, bad dates, a second value[x], a null in a
list) — each validated twice, so that the second time its elements come from the memory.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import InvalidResource
from bridge.fhirmodels import parse_resource
from bridge.population import validation
from samplegen.population import write_population
from tests import jsonpaths

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples" / "prescreen" / "ndjson"
BAD_VALUES: list[Any] = [None, {}, [], "", " ", 0, 1.5, True, "2026-13-45", "x" * 3, [None], {"unknown": 1},
                         {"reference": 12}, {"coding": [{"system": 5}]}, {"value": "abc"}]


def full(resource: dict[str, Any]) -> bool:
    try:
        parse_resource(copy.deepcopy(resource))
    except InvalidResource:
        return False
    return True


@cache
def corpus() -> list[dict[str, Any]]:
    lines = [line for path in sorted(SAMPLES.glob("*.ndjson")) for line in path.read_bytes().splitlines()]
    return [r for r in (orjson.loads(line) for line in lines if line.strip())
            if r.get("resourceType") in ("Patient", "Observation", "Condition", "Encounter")]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("validation")
    write_population(40, directory, seed=3, leukemia_rate=0.4, results_per_candidate=30)
    out = []
    for name in ("Patient", "Condition", "Observation"):
        for line in (directory / f"{name}.ndjson").read_bytes().splitlines():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue  # the generator's truncated lines
    return out


def test_every_sample_resource_gets_the_models_answer_twice() -> None:
    resources = corpus()
    assert len(resources) > 500
    for _ in range(2):  # the second time, the elements come from the memory
        for res in resources:
            assert validation.valid(res) == full(res), res.get("id")


def test_a_generated_population_gets_the_models_answer(generated: list[dict[str, Any]]) -> None:
    observations = [r for r in generated if r["resourceType"] == "Observation"][:50]
    broken = [{**r, "effectiveDateTime": "2026-13-45"} for r in observations[:10]]  # its elements remembered
    broken += [{**r, "subject": {"reference": 12}} for r in observations[10:20]]
    broken += [{**r, "referenceRange": [*r.get("referenceRange", []), None]} for r in observations[20:30]]
    answers = [(validation.valid(r), full(r)) for r in generated + broken + generated + broken]
    assert all(fast == slow for fast, slow in answers)
    assert sum(1 for _, slow in answers if not slow) == 2 * len(broken)




@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutations_never_pass_where_the_model_fails(data: st.DataObject) -> None:
    resources = corpus()
    res = copy.deepcopy(resources[data.draw(st.integers(0, len(resources) - 1))])
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(["replace", "add", "second-value", "list-null"]))
        paths = jsonpaths.paths(res)
        if kind == "replace" and paths:
            jsonpaths.put(res, data.draw(st.sampled_from(paths)), data.draw(st.sampled_from(BAD_VALUES)))
        elif kind == "add":
            targets = [p for p in paths if isinstance(jsonpaths.get(res, p), dict)] + [()]
            target = data.draw(st.sampled_from(targets))
            key = data.draw(st.sampled_from(["unknown", "extension", "_status", "id", "display", "valueString"]))
            node = jsonpaths.get(res, target)
            node[key] = copy.deepcopy(data.draw(st.sampled_from([*BAD_VALUES, "ok"])))
        elif kind == "second-value":
            res["valueString"] = "also"
        else:
            lists = [p for p in paths if isinstance(jsonpaths.get(res, p), list)]
            if lists:
                jsonpaths.get(res, data.draw(st.sampled_from(lists))).append(None)
    answer = full(res)
    assert validation.valid(res) == answer
    assert validation.valid(res) == answer  # again, from the memory



def test_the_memory_tells_exact_json_apart() -> None:
    """``1``, ``1.0`` and ``true`` are equal in Python, not in the memory: a remembered valid element never
    stands in for a different JSON value."""
    base = next(r for r in corpus() if r.get("resourceType") == "Observation" and "valueQuantity" in r)
    good = copy.deepcopy(base)
    good["valueQuantity"] = {"value": 1, "unit": "g"}
    bad = copy.deepcopy(base)
    bad["valueQuantity"] = {"value": True, "unit": "g"}
    assert validation.valid(good) and full(good)
    assert validation.valid(bad) == full(bad)
    assert not full(bad)


def test_the_memory_stays_bounded() -> None:
    base = next(r for r in corpus() if r.get("resourceType") == "Observation")
    for i in range(validation.MEMO_SIZE + 10):
        res = copy.deepcopy(base)
        res["meta"] = {"versionId": str(i)}
        validation.valid(res)
    assert 0 < len(validation._MEMO) <= validation.MEMO_SIZE
