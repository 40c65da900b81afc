"""Issue #12 item 4: versions of one resource (RULES.md §2) and resources that cannot be read.

The newest version is decided by ``meta.versionId`` (numerically), then ``meta.lastUpdated`` as an instant
(offsets honoured), then status (corrected = amended > final > registered = preliminary), then arrival; only it
contributes; identity conflicts are warned about by identity, never by value; a resource whose normalization
raises is a skipped resource, not a crash.
"""

from __future__ import annotations

import itertools
import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bridge.normalize.patients as patients_module
from bridge.ingest.readers import Entry, read_bundle_bytes
from bridge.model import PatientFacts, Quantity
from bridge.normalize.mappings import load_code_map
from bridge.normalize.patients import STATUS_RANK, ReadReport, assemble, instant_ns, version_key

CMAP = load_code_map()
LOINC = "http://loinc.org"


def obs(oid: str, value: float, pid: str | None = "p1", status: str = "final", meta: dict[str, Any] | None = None,
        when: str = "2026-06-10") -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Observation", "id": oid, "status": status,
        "code": {"coding": [{"system": LOINC, "code": "1920-8"}]}, "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": "U/L", "system": "http://unitsofmeasure.org", "code": "U/L"}}
    if pid is not None:
        res["subject"] = {"reference": f"Patient/{pid}"}
    if meta is not None:
        res["meta"] = meta
    return res


def patient(pid: str = "p1", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1990-01-02", **extra}


def load(*resources: dict[str, Any]) -> tuple[dict[str, PatientFacts], ReadReport]:
    doc = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
    found, report = assemble(read_bundle_bytes(json.dumps(doc).encode(), "b.json"), CMAP)
    return {p.patient_id: p for p in found}, report


def ast_values(pf: PatientFacts) -> list[float]:
    return [f.value.value for f in pf.of("ast") if isinstance(f.value, Quantity)]


# ---------------------------------------------------------------------------------------------- instants
@pytest.mark.parametrize(("earlier", "later"), [
    ("2026-06-01T18:00:00+08:00", "2026-06-01T11:00:00Z"),  # 10:00Z before 11:00Z (text order says otherwise)
    ("2026-06-01T11:00:00Z", "2026-06-01T07:30:00-04:00"),
    ("2026-06-01T11:00:00.1Z", "2026-06-01T11:00:00.100000001Z"),
    ("2026-06-01T11:00:00.999999999Z", "2026-06-01T11:00:01Z"),
    ("2026-12-31T23:59:59-14:00", "2027-01-01T14:00:00+00:00"),
])
def test_instants_are_compared_as_instants(earlier: str, later: str) -> None:
    a, b = instant_ns(earlier), instant_ns(later)
    assert a is not None and b is not None and a < b


def test_instant_agrees_with_datetime() -> None:
    for text in ("2026-06-01T18:00:00+08:00", "1969-07-20T20:17:40Z", "2000-02-29T00:00:00.5-05:30"):
        ns = instant_ns(text)
        assert ns is not None and ns // 1000 == int(datetime.fromisoformat(text).timestamp() * 1_000_000)


@pytest.mark.parametrize("text", ["2026-06-01T10:00:00", "2026-06-01", "junk", "2026-13-01T10:00:00Z",
                                  "2026-02-30T10:00:00Z", "2026-06-01T24:00:00Z", "2026-06-01T10:00:00+15:00", ""])
def test_a_stamp_that_is_not_an_instant_counts_as_absent(text: str) -> None:
    assert instant_ns(text) is None
    assert version_key(obs("a", 1, meta={"lastUpdated": text}), 0)[1] == version_key(obs("a", 1), 0)[1]
    assert version_key(obs("a", 1, meta={"lastUpdated": text}), 0) < \
        version_key(obs("a", 1, meta={"lastUpdated": "1900-01-01T00:00:00Z"}), 0)


def test_version_key_order() -> None:
    def key(order: int = 0, **meta: Any) -> tuple[int, int, int, int]:
        status = meta.pop("status", "final")
        return version_key(obs("a", 1, status=status, meta=meta or None), order)

    assert key(versionId="10") > key(versionId="9")  # numerically, not as text
    assert key(versionId="1") > key(versionId="x") == key(versionId=" ") == key()  # non-integers carry no order
    assert key(versionId="2", lastUpdated="2020-01-01T00:00:00Z") > key(versionId="1",
                                                                        lastUpdated="2026-01-01T00:00:00Z")
    assert key(status="preliminary", lastUpdated="2026-01-02T00:00:00Z") > key(status="amended",
                                                                               lastUpdated="2026-01-01T00:00:00Z")
    assert key(status="amended") > key(status="final") > key(status="preliminary") > key(status="unknown")
    assert key(status="corrected")[:3] == key(status="amended")[:3]
    assert key(status="registered")[:3] == key(status="preliminary")[:3]
    assert key(1) > key(0)  # full tie: the later arrival
    assert STATUS_RANK["entered-in-error"] > STATUS_RANK["amended"]


# ---------------------------------------------------------------------------------------------- the assembler
@pytest.mark.parametrize("order", [0, 1])
def test_amended_beats_preliminary_without_meta_in_either_order(order: int) -> None:
    versions = [obs("o1", 50, status="amended"), obs("o1", 500, status="preliminary")]
    found, report = load(patient(), *(versions if order == 0 else versions[::-1]))
    assert ast_values(found["p1"]) == [50]
    assert [f.status for f in found["p1"].of("ast")] == ["amended"]
    assert report.warnings == []  # versions of one resource, one subject: no conflict


@pytest.mark.parametrize("order", [0, 1])
def test_last_updated_offsets_are_honoured(order: int) -> None:
    older = obs("o1", 500, meta={"lastUpdated": "2026-06-01T18:00:00+08:00"})  # 10:00Z
    newer = obs("o1", 50, meta={"lastUpdated": "2026-06-01T11:00:00Z"})
    found, _ = load(patient(), *((older, newer) if order == 0 else (newer, older)))
    assert ast_values(found["p1"]) == [50]


def test_version_id_decides_before_last_updated_and_status() -> None:
    v2 = obs("o1", 50, status="preliminary", meta={"versionId": "2", "lastUpdated": "2026-06-01T00:00:00Z"})
    v10 = obs("o1", 70, status="preliminary", meta={"versionId": "10", "lastUpdated": "2025-01-01T00:00:00Z"})
    v1 = obs("o1", 500, status="corrected", meta={"versionId": "1", "lastUpdated": "2026-06-02T00:00:00Z"})
    for perm in itertools.permutations((v2, v10, v1)):
        found, _ = load(patient(), *perm)
        assert ast_values(found["p1"]) == [70]


def test_a_superseded_version_contributes_nothing_not_even_activity() -> None:
    old = obs("o1", 50, when="2026-06-10", meta={"versionId": "1"})
    new = obs("o1", 50, status="entered-in-error", when="2026-06-12", meta={"versionId": "2"})
    found, _ = load(patient(), new, old)
    assert found["p1"].of("ast") == []
    assert date(2026, 6, 10) not in found["p1"].activity


def test_a_newest_version_without_subject_supersedes_and_gives_nothing() -> None:
    found, report = load(patient(), obs("o1", 50, meta={"versionId": "1"}),
                         obs("o1", 60, pid=None, meta={"versionId": "2"}))
    assert found["p1"].of("ast") == [] and report.no_patient == 1


def test_a_newest_version_that_fails_the_model_supersedes_and_is_reported() -> None:
    bad = obs("o1", 60, meta={"versionId": "2"})
    bad["status"] = 42  # not a code
    found, report = load(patient(), obs("o1", 50, meta={"versionId": "1"}), bad)
    assert found["p1"].of("ast") == []
    (skip,) = report.skipped
    assert "Observation/o1 fails the R4B model" in skip.reason and skip.where == "b.json entry 2"


def test_an_invalid_resource_alone_creates_no_patient() -> None:
    bad = obs("o1", 60, pid="ghost")
    bad["status"] = 42
    found, report = load(patient(), bad)
    assert set(found) == {"p1"} and len(report.skipped) == 1


def test_versions_naming_different_patients_warn_by_identity_and_the_newest_wins() -> None:
    old = obs("o1", 123.25, pid="p1", meta={"versionId": "1"})
    new = obs("o1", 45.5, pid="p2", meta={"versionId": "2"})
    for perm in ((old, new), (new, old)):
        found, report = load(patient("p1"), patient("p2"), *perm)
        assert ast_values(found["p1"]) == [] and ast_values(found["p2"]) == [45.5]
        assert report.warnings == ["Observation/o1: its versions name different patients; the newest is used"]
        assert "123" not in " ".join(report.warnings) and "45" not in " ".join(report.warnings)


def test_two_patients_sharing_an_id_warn_and_the_newest_wins() -> None:
    alive = patient("p1", name=[{"family": "Zeta-Surname"}], meta={"lastUpdated": "2026-01-01T00:00:00Z"})
    dead = patient("p1", deceasedBoolean=True, meta={"lastUpdated": "2026-03-01T00:00:00+01:00"})
    for perm in ((alive, dead), (dead, alive)):
        found, report = load(*perm)
        assert found["p1"].deceased is True
        assert report.warnings == ["Patient/p1: several Patient resources share this id; the newest is used"]
        assert "Zeta" not in " ".join(report.lines())


def test_a_normalizer_exception_is_a_skipped_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    real = patients_module.normalize

    def flaky(resource: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if resource.get("id") == "boom":
            raise ZeroDivisionError("value 77.7 of Zeta-Surname")
        return real(resource, *args, **kwargs)

    monkeypatch.setattr(patients_module, "normalize", flaky)
    found, report = load(patient(), obs("boom", 77.7), obs("fine", 20))
    assert ast_values(found["p1"]) == [20]
    (skip,) = report.skipped
    assert skip.where == "b.json entry 1"
    assert skip.reason.startswith("Observation/boom could not be read (ZeroDivisionError at test_h1_versions.py:")
    assert "77.7" not in skip.reason and "Zeta" not in skip.reason


def test_a_validator_exception_is_a_skipped_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(resource: dict[str, Any], where: str) -> None:
        if resource.get("id") == "boom":
            raise RecursionError("deep")

    monkeypatch.setattr(patients_module, "parse_resource", broken)
    monkeypatch.setattr(patients_module, "certainly_valid", lambda resource: False)  # the model decides
    found, report = load(patient(), obs("boom", 77.7), obs("fine", 20))
    assert ast_values(found["p1"]) == [20]
    assert [s.reason.split(" (")[0] for s in report.skipped] == ["Observation/boom could not be validated"]


def test_a_fast_path_exception_leaves_the_decision_to_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(resource: dict[str, Any]) -> bool:
        raise RecursionError("deep")

    asked: list[str] = []
    real = patients_module.parse_resource

    def model(resource: dict[str, Any], where: str) -> Any:
        asked.append(str(resource.get("id")))
        return real(resource, where)

    monkeypatch.setattr(patients_module, "certainly_valid", broken)
    monkeypatch.setattr(patients_module, "parse_resource", model)
    found, report = load(patient(), obs("boom", 77.7), obs("fine", 20))
    assert sorted(ast_values(found["p1"])) == [20, 77.7] and report.skipped == []
    assert {"boom", "fine"} <= set(asked)


# ---------------------------------------------------------------------------------------------- properties
VERSION_IDS = st.sampled_from([None, "1", "2", "10", "x", "02"])
NO_OFFSET = "2026-06-01T10:00:00"
STAMPS = st.sampled_from([None, "2026-06-01T18:00:00+08:00", "2026-06-01T11:00:00Z", "2026-06-01T10:00:00Z",
                          "2026-06-01T06:00:00-04:00", NO_OFFSET, "2026-06-01T11:00:00.5Z"])
STATUSES = st.sampled_from(["preliminary", "registered", "final", "amended", "corrected", "unknown"])


def _reference_key(res: dict[str, Any]) -> tuple[int, float, int]:
    """An independent reading of RULES.md §2 (without arrival): datetime for instants, a dict for statuses."""
    meta = res.get("meta") or {}
    vid = meta.get("versionId")
    stamp = meta.get("lastUpdated")
    when = float("-inf")
    if isinstance(stamp, str) and "T" in stamp and (stamp.endswith("Z") or stamp[-6] in "+-"):
        when = datetime.fromisoformat(stamp).timestamp()
    rank = {"corrected": 3, "amended": 3, "final": 2, "registered": 1, "preliminary": 1}.get(res["status"], 0)
    return (int(vid) if isinstance(vid, str) and vid.isdigit() else -1, when, rank)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(VERSION_IDS, STAMPS, STATUSES), min_size=1, max_size=5), st.randoms())
def test_the_winner_does_not_depend_on_arrival_except_for_full_ties(versions: list[tuple[str | None, str | None, str]],
                                                                    rnd: Any) -> None:
    resources = []
    for i, (vid, stamp, status) in enumerate(versions):
        meta = {k: v for k, v in (("versionId", vid), ("lastUpdated", stamp)) if v is not None}
        resources.append(obs("o1", float(i + 1), status=status, meta=meta or None))
    best = max(_reference_key(r) for r in resources)
    shuffled = resources[:]
    rnd.shuffle(shuffled)
    for order in (resources, shuffled, resources[::-1]):
        winner = [r for r in order if _reference_key(r) == best][-1]  # one, or on a full tie the later arrival
        found, _ = load(patient(), *order)
        # a registered result has no value; a stamp without offset fails the R4B model: skipped, yet it supersedes
        silent = winner["status"] == "registered" or (winner.get("meta") or {}).get("lastUpdated") == NO_OFFSET
        want = [] if silent else [winner["valueQuantity"]["value"]]
        assert ast_values(found["p1"]) == want


def test_positioned_entries_keep_the_rule() -> None:
    """The population path's assembler (arrival = position in the directory) applies the same key."""
    from bridge.population.assembler import PositionedAssembler

    asm = PositionedAssembler(CMAP)
    asm.add_at(Entry(obs("o1", 50, status="amended"), "x"), order=100)
    asm.add_at(Entry(obs("o1", 500, status="preliminary"), "x"), order=200)
    (pf,) = asm.patients()
    assert ast_values(pf) == [50]


def test_the_cli_prints_conflicts_by_identity(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bridge.cli import app

    doc = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in (
        patient("p1", name=[{"family": "Zeta-Surname"}]), patient("p1"), patient("p2"),
        obs("o1", 123.25, pid="p1", meta={"versionId": "1"}), obs("o1", 45.5, pid="p2", meta={"versionId": "2"}))]}
    source = tmp_path / "b.json"
    source.write_text(json.dumps(doc))
    result = CliRunner().invoke(app, ["prescreen", str(source), "--as-of", "2026-06-15", "--strict"])
    assert result.exit_code == 0, result.output  # a warning, not a skip
    assert "0 resource(s) skipped, 0 value(s) not usable, 2 identity conflict(s):" in result.stderr
    assert "warning Observation/o1: its versions name different patients; the newest is used" in result.stderr
    assert "warning Patient/p1: several Patient resources share this id; the newest is used" in result.stderr
    assert "Zeta" not in result.output and "123.25" not in result.output and "45.5" not in result.stderr
