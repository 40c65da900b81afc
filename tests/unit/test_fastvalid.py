"""``bridge.normalize.fastvalid.certainly_valid`` never says valid where the R4B model says invalid.

Checked on every resource of the samples, of a generated lab-dense population, of the shared corpora (HL7 R4
examples, Synthea bundles, mCODE data: every resource and Bundle entry of every type), and on many thousands
of random mutations of them — dropped, duplicated and renamed keys, wrong JSON types, impossible dates,
empty strings, whitespace, unknown keys, arrays for scalars and scalars for arrays, nested garbage, huge and
non-finite numbers, unicode, a second ``value[x]``, nulls in lists. The fast path must also accept the common
shapes (else it would save nothing), which these tests check too.
"""

from __future__ import annotations

import copy
import json
import math
import random
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import InvalidResource
from bridge.fhirmodels import parse_resource
from bridge.normalize import fastvalid
from bridge.normalize.fastvalid import certainly_valid
from samplegen.population import write_population
from tests import jsonpaths
from tests.shared import FHIR_DATA

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


def r4b(resource: dict[str, Any]) -> bool:
    try:
        parse_resource(copy.deepcopy(resource))
    except InvalidResource:
        return False
    except Exception:  # noqa: BLE001 - whatever the model raises is "not valid"
        return False
    return True


def _resources(node: Any) -> list[dict[str, Any]]:
    """A JSON document's resources: itself and, for a Bundle, its entries' (recursively)."""
    out: list[dict[str, Any]] = []
    if isinstance(node, dict) and isinstance(node.get("resourceType"), str):
        out.append(node)
        for entry in node.get("entry", []) if node["resourceType"] == "Bundle" else []:
            if isinstance(entry, dict):
                out += _resources(entry.get("resource"))
    return out


@cache
def samples() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(SAMPLES.rglob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            try:
                out += _resources(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue  # the samples' deliberately broken lines
    for path in sorted(SAMPLES.rglob("*.json")):
        try:
            out += _resources(orjson.loads(path.read_bytes()))
        except orjson.JSONDecodeError:
            continue
    return out


@cache
def corpora() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(FHIR_DATA.rglob("*.json")):
        try:
            out += _resources(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, UnicodeDecodeError):
            continue
    return out


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("fastvalid")
    write_population(60, directory, seed=11, leukemia_rate=0.3, results_per_candidate=40)
    out = []
    for path in sorted(directory.glob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            try:
                out += _resources(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue  # the generator's truncated lines
    return out


def _check_all(resources: list[dict[str, Any]]) -> tuple[int, int]:
    """Asserts fast ⇒ R4B on each; returns (fast-path accepted, R4B valid)."""
    fast_n = slow_n = 0
    for res in resources:
        fast, slow = certainly_valid(res), r4b(res)
        assert slow or not fast, (res.get("resourceType"), res.get("id"))
        fast_n += fast
        slow_n += slow
    return fast_n, slow_n


def test_every_sample_resource() -> None:
    resources = samples()
    assert len(resources) > 500
    fast, slow = _check_all(resources)
    assert fast >= 0.9 * slow  # the samples' shapes are fast-pathed


def test_every_generated_resource(generated: list[dict[str, Any]]) -> None:
    fast, slow = _check_all(generated)
    assert len(generated) > 1000
    assert fast == slow  # every valid generated line takes the fast path


def test_every_corpus_resource() -> None:
    resources = corpora()
    assert len(resources) > 2000
    fast, slow = _check_all(resources)
    assert fast > 0
    synthea = [r for r in resources if r.get("resourceType") in ("Observation", "Condition")
               and str(r.get("subject", {}).get("reference", "")).startswith("urn:uuid:")]
    accepted = sum(1 for r in synthea if certainly_valid(r))
    assert synthea and accepted >= 0.9 * len(synthea)  # Synthea's results and conditions are fast-pathed


# ----------------------------------------------------------------------------------------------- mutations
BAD: list[Any] = [None, {}, [], "", " ", "\t", "\n", "a\n", " x ", "x  y", "\u00a0", "\x0b", "\u2028", "é",
                  "\U0001f600", "\ud800", 0, -1, 1, 2**31, 2**31 - 1, -(2**31) - 1, 10**15, 10**400, 1.5, -0.0,
                  1e308, math.inf, math.nan, True, False, "true", "1", "1.5", "1e5", "2024", "2024-13-01",
                  "2024-02-30", "2023-02-29",
                  "2024-02-29", "2024-00-10", "0000-01-01", "2024-01-01T10:00:00", "2024-01-01T24:00:00Z",
                  "2024-01-01T10:00:60Z", "2024-01-01T10:00:00+14:01", "2024-01-01T10:00:00+15:00",
                  "2024-01-01T10:00:00.1234567890Z", "2024-01-01T10:00Z", "2024-01-01 10:00:00Z",
                  "2024-01-01T10:00:00z", "2024-1-1", "24-01-01", "2024-01-01T10:00:00+0100", "x" * 256, "a b",
                  "a..b", "-", "urn:uuid:x", "http://x y", [None], [1], ["x"], [{}], [[]], {"unknown": 1},
                  {"extension": []}, {"id": "x"}, {"extension": [{"url": "u"}]}, {"extension": [{"valueString": "v"}]},
                  {"reference": 12}, {"coding": [{"system": 5}]}, {"value": "abc"}, {"value": True},
                  {"value": 1, "comparator": "<"}, {"resourceType": "Patient"}, {"fhir_comments": "x"},
                  {"div": "<div/>", "status": "generated"}, {"start": "2024-01-01", "end": "2023"}]
GOOD_DATES = ["2024", "2024-02", "2024-02-29", "2024-01-01T00:00:00Z", "2024-12-31T23:59:59.999+14:00",
              "1900-01-01T00:00:00-12:00", "2024-06-30T12:00:00.123456789+05:30"]
KEYS = ["unknown", "extension", "modifierExtension", "_status", "_id", "id", "display", "valueString",
        "valueQuantity", "valueInteger", "effectivePeriod", "text", "resourceType", "resource_type", "status__ext",
        "class_fhir", "fhir_comments", "url", "system", "code", "value", "coding", "_value", "_code", "div"]




def _garbage(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 2 or roll < 0.5:
        return copy.deepcopy(rng.choice(BAD + GOOD_DATES))
    if roll < 0.75:
        return [_garbage(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(KEYS): _garbage(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def mutate(res: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    res = copy.deepcopy(res)
    for _ in range(rng.randint(1, 3)):
        paths = jsonpaths.paths(res)
        if not paths:
            break
        path = rng.choice(paths)
        parent = jsonpaths.get(res, path[:-1])
        key = path[-1]
        value = parent[key]
        kind = rng.randrange(12)
        if kind == 0:  # drop
            del parent[key]
        elif kind == 1 and isinstance(parent, list):  # duplicate an item
            parent.append(copy.deepcopy(value))
        elif kind == 1 and isinstance(parent, dict):  # the same value under another known key
            parent[rng.choice(KEYS)] = copy.deepcopy(value)
        elif kind == 2:
            parent[key] = copy.deepcopy(rng.choice(BAD))
        elif kind == 3:
            parent[key] = rng.choice(GOOD_DATES)
        elif kind == 4:  # array for a scalar, scalar for an array
            parent[key] = value[0] if isinstance(value, list) and value else [value]
        elif kind == 5:
            parent[key] = _garbage(rng)
        elif kind == 6 and isinstance(value, str):  # whitespace, unicode, case
            parent[key] = rng.choice([value + " ", " " + value, value.upper(), value + "\u00e9", value[:-1],
                                      value.replace("-", "+"), value.replace(":", ""), value + "\n",
                                      value.replace("T", " ")])
        elif kind == 7 and isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 1e300:
            parent[key] = rng.choice([-value, value * 10**20, str(value), float(value), int(value) if
                                      math.isfinite(value) else 0, value + 0.5, True])
        elif kind == 8 and isinstance(value, dict):  # an unknown or a known key, nested garbage
            value[rng.choice(KEYS)] = _garbage(rng)
        elif kind == 9 and isinstance(value, dict):
            value.clear()
        elif kind == 10:  # a second value[x], or the value moved into its _element
            res[rng.choice(["valueString", "valueBoolean", "valueInteger", "valueQuantity"])] = rng.choice(
                ["x", True, 3, {"value": 1}])
        elif kind == 11 and isinstance(value, list):
            value.append(rng.choice([None, {}, [], "x"]))
    return res


def test_random_mutations_never_pass_where_the_model_fails() -> None:
    rng = random.Random(20261205)
    bases = [r for r in samples() + corpora() if certainly_valid(r)]
    assert len(bases) > 1000
    checked = accepted = 0
    for _ in range(12000):
        res = mutate(rng.choice(bases), rng)
        fast = certainly_valid(res)
        assert not fast or r4b(res), orjson.dumps(res)[:2000]
        assert certainly_valid(res) == fast  # again, its elements from the memory
        checked += 1
        accepted += fast
    assert 0 < accepted < checked  # the mutations reach both answers


def test_random_mutations_of_generated_lines(generated: list[dict[str, Any]]) -> None:
    rng = random.Random(7)
    accepted = 0
    for _ in range(6000):
        res = mutate(rng.choice(generated), rng)
        fast = certainly_valid(res)
        assert not fast or r4b(res), orjson.dumps(res)[:2000]
        accepted += fast
    assert accepted > 0


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_hypothesis_mutations(data: st.DataObject) -> None:
    bases = [r for r in samples() if certainly_valid(r)]
    res = copy.deepcopy(bases[data.draw(st.integers(0, len(bases) - 1))])
    paths = jsonpaths.paths(res)
    for _ in range(data.draw(st.integers(1, 2))):
        path = data.draw(st.sampled_from(paths))
        parent = jsonpaths.get(res, path[:-1])
        value: Any = data.draw(st.one_of(
            st.sampled_from(BAD + GOOD_DATES), st.text(max_size=8), st.integers(), st.floats(),
            st.booleans(), st.none(), st.lists(st.sampled_from(BAD), max_size=2),
            st.dictionaries(st.sampled_from(KEYS), st.sampled_from(BAD + GOOD_DATES), max_size=2)))
        try:
            parent[path[-1]] = copy.deepcopy(value)
        except (IndexError, KeyError, TypeError):
            continue
        paths = jsonpaths.paths(res)
        if not paths:
            break
    fast = certainly_valid(res)
    assert not fast or r4b(res)
    assert certainly_valid(res) == fast


@pytest.mark.parametrize("text", ["2024-02-30", "2023-02-29", "2024-13-01", "2024-01-01T10:00:60Z",
                                  "2024-01-01T10:00:00", "2024-01-01T24:00:00Z", "", " 2024-01-01"])
def test_impossible_dates_are_not_fast_pathed(text: str) -> None:
    base = next(r for r in samples() if r.get("resourceType") == "Observation" and "effectiveDateTime" in r
                and certainly_valid(r))
    assert not certainly_valid({**base, "effectiveDateTime": text})


def test_a_choice_group_takes_one_member() -> None:
    base = next(r for r in samples() if r.get("resourceType") == "Observation" and "valueQuantity" in r
                and certainly_valid(r))
    assert not certainly_valid({**base, "valueString": "x"})
    assert not r4b({**base, "valueString": "x"})


def test_an_extension_needs_its_url() -> None:
    base = next(r for r in samples() if r.get("resourceType") == "Patient" and certainly_valid(r))
    assert certainly_valid({**base, "extension": [{"url": "http://x", "valueString": "y"}]})
    assert not certainly_valid({**base, "extension": [{"valueString": "y"}]})
    assert not certainly_valid({**base, "_gender": {}})
    assert certainly_valid({**base, "_gender": {"extension": [{"url": "http://x", "valueCode": "y"}]}})


def test_the_memory_tells_exact_json_apart() -> None:
    """``1``, ``1.0`` and ``true`` are equal in Python, not in the memory: a remembered element never stands in
    for a different JSON value; the memory stays bounded."""
    base = next(r for r in samples() if r.get("resourceType") == "Observation" and "valueQuantity" in r
                and certainly_valid(r))
    good = {**base, "valueQuantity": {"value": 1, "unit": "g"}}
    assert certainly_valid(good) and certainly_valid(good)
    assert certainly_valid({**base, "valueQuantity": {"value": 1.0, "unit": "g"}})
    assert not certainly_valid({**base, "valueQuantity": {"value": True, "unit": "g"}})
    assert not r4b({**base, "valueQuantity": {"value": True, "unit": "g"}})
    assert not certainly_valid({**base, "valueQuantity": {"value": math.nan, "unit": "g"}})
    for i in range(fastvalid.MEMO_SIZE + 10):
        assert certainly_valid({**base, "meta": {"versionId": str(i)}})
    assert 0 < len(fastvalid._MEMO) <= fastvalid.MEMO_SIZE


def test_prepare_builds_every_rule_a_resource_needs() -> None:
    """After ``prepare`` (before a fork), checking those types builds nothing more in the workers."""
    types = ("Observation", "Condition", "Patient")
    fastvalid.prepare(types)
    before = fastvalid._schema.cache_info().currsize
    checked = [res for res in samples() + corpora() if res.get("resourceType") in types and certainly_valid(res)]
    assert len(checked) > 500
    assert fastvalid._schema.cache_info().currsize == before


def test_a_repeating_primitive_takes_no_null_and_no_bad_item() -> None:
    base = next(r for r in corpora() if r.get("resourceType") == "Patient" and certainly_valid(r)
                and any("given" in n for n in r.get("name", [])))
    name = next(n for n in base["name"] if "given" in n)
    for names, fast in ((["Ann", "Lee"], True), (["Ann", None], False), ([""], False), ([], False),
                        ("Ann", False), ([1], False), ([["Ann"]], False)):
        res = {**base, "name": [{**name, "given": names}]}
        assert certainly_valid(res) is fast
        assert r4b(res) or not fast
    assert not certainly_valid({**base, "name": [{**name, "_given": [None, {"id": "x"}]}]})
