"""The pull source against a faked FHIR server (``responses``): the queries sent, what comes out, admissions.

Per patient: ``GET Patient/<id>``, ``Condition?patient``, ``Observation?patient&code=…&date=ge…`` for the
windowed codes and ``Observation?patient&code=…`` for the codes a rule reads at any age, ``Encounter?patient``.
Admitted patients come from inpatient Encounters, re-checked client-side: a server ignoring ``class``,
``status`` or ``date`` must not make an outpatient, or an old discharged stay, count. A guard test keeps the
trial's any-age declarations (``Trial.any_age_concepts``) in step with the rules: no fact older than the
look-back may change a verdict unless its concept is fetched without a date.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from hypothesis import given
from hypothesis import strategies as st
from responses import matchers

from bridge.client import FhirClient
from bridge.config import RuleOptions, Settings
from bridge.errors import RemoteError
from bridge.evaluate.eligibility import screen
from bridge.ingest import pull as pull_module
from bridge.ingest.pull import (
    CODES_PER_QUERY,
    LOOKBACK_DAYS,
    admission_queries,
    admitted_patients,
    fetch_patient,
    is_admission,
    observation_queries,
    pull,
)
from bridge.ingest.readers import Entry
from bridge.model import Diagnosis, Fact, PartialDate, PatientFacts, Quantity
from bridge.normalize.mappings import CodeMap, load_code_map
from bridge.publish.validate import REPO_ROOT
from bridge.trial import load_trial

BASE = "https://ehr.example.org/fhir"
FHIR = {"Content-Type": "application/fhir+json"}
AS_OF = date(2026, 6, 15)
SINCE = "2024-06-15"  # AS_OF - 730 days
SITE_MAP = REPO_ROOT / "samples" / "site-map.yaml"


@pytest.fixture(scope="module")
def cmap() -> CodeMap:
    return load_code_map(SITE_MAP)


@pytest.fixture
def client() -> Iterator[FhirClient]:
    with FhirClient(BASE, Settings(retries=0), sleep=lambda _s: None) as fhir:
        yield fhir


def searchset(*resources: dict[str, Any], include: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    entries = [{"resource": r, "search": {"mode": "match"}} for r in resources]
    entries += [{"resource": r, "search": {"mode": "include"}} for r in include]
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}


def obs(rid: str, code: str = "89247-1", system: str = "http://loinc.org") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final", "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": system, "code": code}]}, "effectiveDateTime": "2026-06-10"}


def encounter(rid: str, patient: str, klass: str = "IMP", status: str = "in-progress",
              start: str | None = "2026-06-03T10:00:00+08:00", subject: str | None = None) -> dict[str, Any]:
    enc: dict[str, Any] = {"resourceType": "Encounter", "id": rid, "status": status,
                           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": klass},
                           "subject": {"reference": subject or f"Patient/{patient}"}}
    if start:
        enc["period"] = {"start": start}
    return enc


def calls(rsps: responses.RequestsMock) -> list[tuple[str, dict[str, list[str]]]]:
    """(path below the base, decoded query) of every request, in order."""
    out = []
    for call in rsps.calls:
        parts = urlsplit(str(call.request.url))
        out.append((parts.path.removeprefix("/fhir/"), parse_qs(parts.query)))
    return out


def tokens(code_param: str) -> list[str]:
    return code_param.split(",")


def serve_patient(rsps: responses.RequestsMock, pid: str = "p1", observations: tuple[dict[str, Any], ...] = (),
                  ) -> None:
    rsps.get(f"{BASE}/Patient/{pid}", json={"resourceType": "Patient", "id": pid}, headers=FHIR)
    rsps.get(f"{BASE}/Condition", json=searchset({"resourceType": "Condition", "id": f"{pid}-dx"}), headers=FHIR)
    rsps.get(f"{BASE}/Observation", json=searchset(*observations), headers=FHIR)
    rsps.get(f"{BASE}/Encounter", json=searchset(encounter(f"{pid}-enc", pid)), headers=FHIR)


# ---------------------------------------------------------------------------------------------- one patient


@pytest.mark.parametrize("status", [404, 410])
def test_a_patient_without_a_patient_resource_is_still_read(rsps: Any, client: FhirClient, cmap: CodeMap,
                                                            status: int) -> None:
    """RULES.md §2: known only from subject references -> not screened (no-patient-resource), never a failed run."""
    serve_patient(rsps)
    rsps.replace(responses.GET, f"{BASE}/Patient/p1", status=status, headers=FHIR,
                 json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]})
    items = list(fetch_patient(client, "p1", cmap, AS_OF))
    assert [i.where for i in items] == ["Condition?patient=p1 #0", "Encounter?patient=p1 #0"]


def test_other_patient_read_errors_still_fail(rsps: Any, client: FhirClient, cmap: CodeMap) -> None:
    serve_patient(rsps)
    rsps.replace(responses.GET, f"{BASE}/Patient/p1", status=403, headers=FHIR,
                 json={"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "forbidden"}]})
    with pytest.raises(RemoteError):
        list(fetch_patient(client, "p1", cmap, AS_OF))



def test_the_queries_of_one_patient(rsps: Any, client: FhirClient, cmap: CodeMap) -> None:
    serve_patient(rsps)

    items = list(fetch_patient(client, "p1", cmap, AS_OF))

    sent = calls(rsps)
    assert sent[0] == ("Patient/p1", {})
    assert sent[1] == ("Condition", {"patient": ["p1"]})
    assert sent[-1] == ("Encounter", {"patient": ["p1"]})
    observations = sent[2:-1]
    assert observations and all(path == "Observation" and q["patient"] == ["p1"] for path, q in observations)
    windowed = [q for _, q in observations if "date" in q]
    any_age = [q for _, q in observations if "date" not in q]
    assert windowed and any_age
    assert all(q["date"] == [f"ge{SINCE}"] for q in windowed)
    assert [type(i) for i in items] == [Entry, Entry, Entry]  # Patient, Condition, Encounter (no Observations)
    assert [i.where for i in items] == ["Patient/p1", "Condition?patient=p1 #0", "Encounter?patient=p1 #0"]


def test_every_mapped_code_is_asked_once_with_the_right_date_rule(rsps: Any, client: FhirClient,
                                                                  cmap: CodeMap) -> None:
    serve_patient(rsps)
    list(fetch_patient(client, "p1", cmap, AS_OF))

    asked: dict[str, bool] = {}
    for path, q in calls(rsps):
        if path != "Observation":
            continue
        assert len(q["code"]) == 1 and len(tokens(q["code"][0])) <= CODES_PER_QUERY
        for token in tokens(q["code"][0]):
            assert token not in asked, "a code is asked twice"
            asked[token] = "date" in q
    any_age = load_trial().any_age_concepts()
    expected = {f"{s}|{c}": concept not in any_age for (s, c), concept in cmap.observations.items()}
    assert {t: w for t, w in asked.items() if t in expected} == expected
    extra = set(asked) - set(expected)  # only the lower-case spellings of codes with letters
    assert extra == {f"{s}|{c.lower()}" for (s, c) in cmap.observations if c.lower() != c}
    assert "http://hospital.example.org/lab|FC-CD7" in asked and "http://hospital.example.org/lab|fc-cd7" in asked
    assert asked["http://loinc.org|5196-1"] is False  # HBsAg: any age
    assert asked["http://loinc.org|89247-1"] is True  # ECOG: within the look-back


def test_codes_are_chunked(cmap: CodeMap, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pull_module, "CODES_PER_QUERY", 3)
    queries = observation_queries("p1", cmap, AS_OF)
    assert all(len(tokens(q["code"])) <= 3 for q in queries)
    assert sum(len(tokens(q["code"])) for q in queries) == len(
        {f"{s}|{v}" for (s, c) in cmap.observations for v in (c, c.lower())})


@pytest.mark.parametrize(("days", "since"), [(730, "2024-06-15"), (100, "2026-03-07"), (0, "2026-06-15")])
def test_the_look_back_is_counted_from_the_as_of_date(days: int, since: str, cmap: CodeMap) -> None:
    dates = {q.get("date") for q in observation_queries("p1", cmap, AS_OF, days)}
    assert dates == {f"ge{since}", None}


def test_the_look_back_outlasts_every_window() -> None:
    windows = load_trial().windows()
    assert windows and max(windows.values()) < LOOKBACK_DAYS == pull_module.prescreen_lookback()


def test_only_matches_come_out_and_each_resource_once(rsps: Any, client: FhirClient, cmap: CodeMap) -> None:
    # a server that ignores code and date: every Observation query answers the same two, plus an include
    serve_patient(rsps, observations=(obs("o1"), obs("o2", "5196-1")))
    rsps.replace(responses.GET, f"{BASE}/Observation", headers=FHIR,
                 json=searchset(obs("o1"), obs("o2", "5196-1"), include=({"resourceType": "Patient", "id": "p1"},)))

    items = list(fetch_patient(client, "p1", cmap, AS_OF))

    found = [i.resource["id"] for i in items if isinstance(i, Entry) and i.resource["resourceType"] == "Observation"]
    assert found == ["o1", "o2"]
    assert sum(1 for i in items if isinstance(i, Entry) and i.resource["resourceType"] == "Patient") == 1


def test_observation_pages_are_followed(rsps: Any, client: FhirClient) -> None:
    small = CodeMap(concepts={}, observations={("http://loinc.org", "89247-1"): "ecog"})
    page2 = f"{BASE}/Observation?page=2"
    serve_patient(rsps)
    rsps.replace(responses.GET, f"{BASE}/Observation", headers=FHIR,
                 json={**searchset(obs("o1")), "link": [{"relation": "next", "url": page2}]},
                 match=[matchers.query_param_matcher({"patient": "p1", "code": "http://loinc.org|89247-1",
                                                      "date": f"ge{SINCE}"})])
    rsps.get(page2, json=searchset(obs("o2")), headers=FHIR)

    items = list(fetch_patient(client, "p1", small, AS_OF))

    assert [i.resource["id"] for i in items if isinstance(i, Entry)][2:4] == ["o1", "o2"]


def test_medications_only_when_asked(rsps: Any, client: FhirClient, cmap: CodeMap) -> None:
    serve_patient(rsps)
    rsps.get(f"{BASE}/MedicationAdministration", json=searchset({"resourceType": "MedicationAdministration",
                                                                 "id": "ma1"}), headers=FHIR)
    list(fetch_patient(client, "p1", cmap, AS_OF))
    assert "MedicationAdministration" not in [p for p, _ in calls(rsps)]

    items = list(fetch_patient(client, "p1", cmap, AS_OF, medications=True))
    assert calls(rsps)[-1] == ("MedicationAdministration", {"patient": ["p1"]})
    assert items[-1].resource["id"] == "ma1"  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------- admissions


def test_the_admission_queries() -> None:
    assert admission_queries(AS_OF) == [
        {"class": "IMP,ACUTE,NONAC", "status": "in-progress,arrived"},
        {"class": "IMP,ACUTE,NONAC", "date": "ge2026-06-08"},
    ]


def test_admitted_patients_are_rechecked_client_side(rsps: Any, client: FhirClient) -> None:
    everything = searchset(  # a server that ignores class, status and date answers every query with all of these
        encounter("e1", "p1"),
        encounter("e2", "p2", klass="AMB"),  # outpatient in progress: not admitted
        encounter("e3", "p3", status="finished", start="2025-01-03T10:00:00+08:00"),  # old stay, discharged
        encounter("e4", "p4", status="finished", start="2026-06-10T10:00:00+08:00"),  # recent stay
        encounter("e5", "p5", status="arrived", klass="ACUTE"),
        encounter("e6", "p6", status="planned", start="2026-06-20T10:00:00+08:00"),  # after the as-of date
        encounter("e7", "p7", subject=f"{BASE}/Patient/p7"),  # an absolute reference
        encounter("e8", "p8", klass="NONAC", status="finished", start="2026-06-08"),  # first day of the 7
        encounter("e9", "p9", klass="IMP", status="finished", start="2026-06-07"),  # one day too early
        {**encounter("e10", "p10"), "subject": {"display": "no reference"}},
        encounter("e11", "p1"),  # a second stay of p1
    )
    rsps.get(f"{BASE}/Encounter", json=everything, headers=FHIR)

    assert admitted_patients(client, AS_OF) == ["p1", "p4", "p5", "p7", "p8"]
    assert [q for _, q in calls(rsps)] == [
        {"class": ["IMP,ACUTE,NONAC"], "status": ["in-progress,arrived"]},
        {"class": ["IMP,ACUTE,NONAC"], "date": ["ge2026-06-08"]},
    ]


@pytest.mark.parametrize(("enc", "expected"), [
    (encounter("e", "p", status="in-progress", start=None), True),
    (encounter("e", "p", status="finished", start="2026-06-15T23:59:00+08:00"), True),
    (encounter("e", "p", status="finished", start="2026-06-16"), False),
    (encounter("e", "p", status="cancelled", start="2026-06-08"), True),
    (encounter("e", "p", status="finished", start="2026-06"), False),  # partial date: not decidable
    (encounter("e", "p", klass="EMER"), False),
    (encounter("e", "p", klass="HH"), False),
    ({**encounter("e", "p"), "class": [{"code": "IMP"}]}, False),  # not the R4 shape
    ({k: v for k, v in encounter("e", "p").items() if k != "class"}, False),
])
def test_is_admission(enc: dict[str, Any], expected: bool) -> None:
    assert is_admission(enc, AS_OF) is expected


@given(st.integers(-30, 30))
def test_a_finished_stay_counts_exactly_within_the_recent_days(offset: int) -> None:
    start = AS_OF + timedelta(days=offset)
    enc = encounter("e", "p", status="finished", start=f"{start.isoformat()}T10:00:00+08:00")
    assert is_admission(enc, AS_OF, recent_days=7) is (-7 <= offset <= 0)


def test_pull_without_ids_fetches_the_admitted_patients(rsps: Any, client: FhirClient, cmap: CodeMap) -> None:
    serve_patient(rsps)
    rsps.replace(responses.GET, f"{BASE}/Encounter", json=searchset(encounter("e1", "p1")), headers=FHIR)

    items = list(pull(client, cmap, AS_OF))

    paths = [p for p, _ in calls(rsps)]
    assert paths[:3] == ["Encounter", "Encounter", "Patient/p1"]
    assert items[0].resource == {"resourceType": "Patient", "id": "p1"}  # type: ignore[union-attr]


def test_pull_with_ids_asks_for_no_admissions(rsps: Any, client: FhirClient, cmap: CodeMap) -> None:
    serve_patient(rsps, "p2")
    list(pull(client, cmap, AS_OF, ["p2"]))
    assert calls(rsps)[0] == ("Patient/p2", {})
    assert all("class" not in q for _, q in calls(rsps))


# ---------------------------------------------------------------------------------------------- the guard


def _baselines() -> list[PatientFacts]:
    """A woman with nothing recorded; a man with acute leukemia whose relapse status is undocumented."""
    leukemia = Diagnosis(frozenset({"acute-leukemia", "aml"}), "http://hl7.org/fhir/sid/icd-10-cm", "C92.00",
                         "Condition/dx", clinical_status="active", verification_status="confirmed",
                         onset=AS_OF - timedelta(days=60))
    woman = PatientFacts("p1", birth_date=PartialDate(1990, 1, 1), sex="female")
    man = PatientFacts("p2", birth_date=PartialDate(1990, 1, 1), sex="male", diagnoses=[leukemia])
    return [woman, man]


def _values(kind: str, unit: str | None) -> list[Any]:
    if kind in ("qualitative", "finding"):
        return [True, False, None]
    if kind == "score":
        return [0, 4]
    if kind == "quantity":
        return [Quantity(0.001, unit or "1"), Quantity(1e7, unit or "1")]
    return []


def test_no_fact_older_than_the_look_back_changes_a_verdict_unless_fetched_at_any_age(cmap: CodeMap) -> None:
    old = AS_OF - timedelta(days=LOOKBACK_DAYS + 1)
    options = RuleOptions(as_of=AS_OF)
    decisive = set()
    for concept in sorted(set(cmap.observations.values())):
        info = cmap.concepts[concept]
        for base in _baselines():
            for value in _values(info.kind, info.unit):
                with_old = copy.deepcopy(base)
                with_old.facts.append(Fact(concept, value, old, "Observation/old"))
                if screen(with_old, options, cmap.uln).verdicts != screen(base, options, cmap.uln).verdicts:
                    decisive.add(concept)
    any_age = load_trial().any_age_concepts()
    assert decisive <= any_age, f"fetch these without a date: {sorted(decisive - any_age)}"
    assert {"hbsag", "hiv-test", "cns-involvement", "refractory-disease"} <= decisive  # the guard does bite


def test_any_age_concepts_are_catalogue_concepts(cmap: CodeMap) -> None:
    assert set(cmap.concepts) >= load_trial().any_age_concepts()
