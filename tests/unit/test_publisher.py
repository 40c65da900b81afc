"""The publisher against a faked FHIR server (``responses``): every write path, the skip, Provenance, validation.

Paths: conditional update on the identifier (the primary path), the fallback when the server answers
``not-supported`` (update by id with If-Match, or create), unchanged fingerprint -> no write, lifecycle status
kept, a Provenance after each write naming the bridge version and the rule set, invalid output -> nothing
sent at all. ``FakeServer`` is a tiny in-memory FHIR server (the peer's quirks: searches on ResearchSubject
ignore their parameters and answer with everything plus an outcome entry) for the property tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from responses import matchers

from bridge import __version__
from bridge.client import FhirClient
from bridge.config import RuleOptions, Settings
from bridge.errors import AuthError, ServerRejected, ValidationFailed
from bridge.evaluate.eligibility import Screening
from bridge.model import Verdict
from bridge.normalize.mappings import load_code_map
from bridge.pipeline import prescreen
from bridge.publish import publisher
from bridge.publish.provenance import AGENT_DISPLAY, ruleset_policy
from bridge.publish.publisher import Written, find_subject, publish_screenings, publish_study, publish_subject
from bridge.publish.study import research_study, study_logical_id
from bridge.publish.subject import (
    SUBJECT_ID_SYSTEM,
    research_subject,
    subject_fingerprint,
    verdicts_from_subject,
)
from bridge.publish.validate import REPO_ROOT, validate_output
from bridge.trial import load_trial

TRIAL = load_trial()  # the shipped trial: the published content must stay what it was
STUDY_LOGICAL_ID = study_logical_id(TRIAL)
RULESET_POLICY = ruleset_policy(TRIAL)
BASE = "https://ehr.example.org/fhir"
FHIR = {"Content-Type": "application/fhir+json"}
AS_OF = date(2026, 6, 15)
OPTIONS = RuleOptions(as_of=AS_OF)
RECORDED = datetime(2026, 6, 15, 9, 30, tzinfo=timezone(timedelta(hours=8)))
IDENT_P1 = f"{SUBJECT_ID_SYSTEM}|NCT04762485-p1"
SUBJECTS = f"{BASE}/ResearchSubject"
PROVENANCE = f"{BASE}/Provenance"
STUDY_URL = f"{BASE}/ResearchStudy/{STUDY_LOGICAL_ID}"
LIFECYCLE = ("pending-on-study", "screening", "on-study", "on-study-intervention", "on-study-observation",
             "follow-up", "withdrawn", "off-study")  # R4 research-subject-status codes past pre-screening


def clock() -> datetime:
    return RECORDED


def verdicts(**results: str) -> tuple[Verdict, ...]:
    """A clean candidate's 15 verdicts, with ``results`` overriding some (``inc_ecog="unknown"``)."""
    out = []
    for cid in TRIAL.criterion_ids:
        default = "unknown" if cid == "exc-investigator" else ("met" if cid.startswith("inc") else "not-met")
        result = results.get(cid.replace("-", "_"), default)
        evidence = ("Patient/p1",) if cid == "inc-age" else ()
        out.append(Verdict(cid, result, f"{cid} is {result}", evidence))  # type: ignore[arg-type]
    return tuple(out)


def screening(status: str = "candidate", patient: str = "Patient/p1", **results: str) -> Screening:
    return Screening(patient, status, verdicts(**results))


def stored_subject(rid: str = "rs-1", version: str = "3", status: str = "candidate", patient: str = "p1",
                   as_of: date = AS_OF, **results: str) -> dict[str, Any]:
    """What a server holds after an earlier publication: the builder's output plus id and meta."""
    body = research_subject(patient, status, list(verdicts(**results)), as_of, "organ-function")
    return {**body, "id": rid, "meta": {"versionId": version, "lastUpdated": "2026-06-14T08:00:00Z"}}


def searchset(*resources: dict[str, Any], outcome: bool = False, next_url: str | None = None) -> dict[str, Any]:
    entries: list[dict[str, Any]] = [{"resource": r, "search": {"mode": "match"}} for r in resources]
    if outcome:
        issue = {"severity": "warning", "code": "not-supported", "diagnostics": "Unknown search parameter"}
        entries.append({"resource": {"resourceType": "OperationOutcome", "issue": [issue]},
                        "search": {"mode": "outcome"}})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def outcome(code: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code,
                                                            "diagnostics": "rejected"}]}


def sent(call: Any) -> dict[str, Any]:
    body = call.request.body
    return dict(json.loads(body.decode("utf-8") if isinstance(body, bytes) else body))


def query(call: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(str(call.request.url)).query)


def methods(rsps: responses.RequestsMock) -> list[tuple[str, str]]:
    return [(str(c.request.method), urlsplit(str(c.request.url)).path.removeprefix("/fhir/")) for c in rsps.calls]


@pytest.fixture
def client() -> Iterator[FhirClient]:
    with FhirClient(BASE, Settings(retries=0), sleep=lambda _s: None) as fhir:
        yield fhir


def search_answers(rsps: responses.RequestsMock, bundle: dict[str, Any]) -> None:
    rsps.get(SUBJECTS, json=bundle, headers=FHIR)


def provenance_created(rsps: responses.RequestsMock) -> None:
    rsps.post(PROVENANCE, json={"resourceType": "Provenance", "id": "prov-1"}, status=201, headers=FHIR)


def created(rid: str, version: str, body: dict[str, Any] | None = None, status: int = 201) -> dict[str, Any]:
    """The keyword arguments of a write's answer: the resource with its id and version, and the ETag."""
    rtype = "ResearchStudy" if rid == STUDY_LOGICAL_ID else "ResearchSubject"
    return {"json": {"resourceType": rtype, **(body or {}), "id": rid, "meta": {"versionId": version}},
            "status": status,
            "headers": {**FHIR, "ETag": f'W/"{version}"'}}


# ---------------------------------------------------------------------------------------------- primary path


def test_a_new_subject_is_written_by_conditional_update_on_its_identifier(rsps: Any, client: FhirClient) -> None:
    search_answers(rsps, searchset())
    expected = research_subject("p1", "candidate", list(verdicts()), AS_OF, "organ-function")
    rsps.put(SUBJECTS, **created("rs-1", "1", expected),
             match=[matchers.query_param_matcher({"identifier": IDENT_P1})])
    provenance_created(rsps)

    written = publish_subject(client, screening(), OPTIONS, clock)

    assert written == Written("ResearchSubject/rs-1", "created", "1")
    assert methods(rsps) == [("GET", "ResearchSubject"), ("PUT", "ResearchSubject"), ("POST", "Provenance")]
    assert query(rsps.calls[0]) == {"identifier": [IDENT_P1], "patient": ["p1"]}
    assert sent(rsps.calls[1]) == expected  # exactly what the builder produces, no id
    assert rsps.calls[1].request.headers["Content-Type"].startswith("application/fhir+json")


def test_changed_verdicts_update_the_one_subject_by_its_identifier(rsps: Any, client: FhirClient) -> None:
    search_answers(rsps, searchset(stored_subject(inc_ecog="unknown", status="potential-candidate")))
    rsps.put(SUBJECTS, **created("rs-1", "4", status=200),
             match=[matchers.query_param_matcher({"identifier": IDENT_P1})])
    provenance_created(rsps)

    written = publish_subject(client, screening(), OPTIONS, clock)

    assert written == Written("ResearchSubject/rs-1", "updated", "4")
    body = sent(rsps.calls[1])
    assert body["status"] == "candidate"
    assert [v.result for v in verdicts_from_subject(body)[2]] == [v.result for v in verdicts()]
    assert sent(rsps.calls[2])["target"] == [{"reference": "ResearchSubject/rs-1/_history/4"}]


# ---------------------------------------------------------------------------------------------- fallback


def test_not_supported_falls_back_to_update_by_id_with_if_match(rsps: Any, client: FhirClient) -> None:
    search_answers(rsps, searchset(stored_subject(version="3", inc_ecog="unknown"), outcome=True))
    rsps.put(SUBJECTS, json=outcome("not-supported"), status=400, headers=FHIR,
             match=[matchers.query_param_matcher({"identifier": IDENT_P1})])
    rsps.put(f"{SUBJECTS}/rs-1", **created("rs-1", "4", status=200),
             match=[matchers.header_matcher({"If-Match": 'W/"3"'})])
    provenance_created(rsps)

    written = publish_subject(client, screening(), OPTIONS, clock)

    assert written == Written("ResearchSubject/rs-1", "updated", "4")
    assert methods(rsps) == [("GET", "ResearchSubject"), ("PUT", "ResearchSubject"), ("PUT", "ResearchSubject/rs-1"),
                             ("POST", "Provenance")]
    body = sent(rsps.calls[2])
    assert body["id"] == "rs-1"
    assert {k: v for k, v in body.items() if k != "id"} == sent(rsps.calls[1])  # same content, now by id


def test_not_supported_without_a_subject_falls_back_to_create(rsps: Any, client: FhirClient) -> None:
    search_answers(rsps, searchset(stored_subject(rid="rs-9", patient="p9"), outcome=True))  # someone else's
    rsps.put(SUBJECTS, json=outcome("not-supported"), status=400, headers=FHIR)
    rsps.post(SUBJECTS, status=201, body=b"",
              headers={"Location": f"{SUBJECTS}/new-1/_history/1", "ETag": 'W/"1"'})
    provenance_created(rsps)

    written = publish_subject(client, screening(), OPTIONS, clock)

    assert written == Written("ResearchSubject/new-1", "created", "1")  # id and version from the headers
    assert methods(rsps)[2] == ("POST", "ResearchSubject")
    assert "id" not in sent(rsps.calls[2])
    assert sent(rsps.calls[3])["target"] == [{"reference": "ResearchSubject/new-1/_history/1"}]


def test_another_rejection_is_not_taken_for_not_supported(rsps: Any, client: FhirClient) -> None:
    search_answers(rsps, searchset())
    rsps.put(SUBJECTS, json=outcome("invalid"), status=400, headers=FHIR)

    with pytest.raises(ServerRejected) as err:
        publish_subject(client, screening(), OPTIONS, clock)

    assert err.value.status == 400
    assert methods(rsps) == [("GET", "ResearchSubject"), ("PUT", "ResearchSubject")]  # no fallback, no Provenance


# ---------------------------------------------------------------------------------------------- skip


def test_an_unchanged_fingerprint_sends_no_write(rsps: Any, client: FhirClient) -> None:
    search_answers(rsps, searchset(stored_subject(version="7", as_of=date(2026, 6, 1))))  # only as-of differs

    written = publish_subject(client, screening(), OPTIONS, clock)

    assert written == Written("ResearchSubject/rs-1", "unchanged", "7")
    assert methods(rsps) == [("GET", "ResearchSubject")]


def test_a_changed_reading_is_a_change(rsps: Any, client: FhirClient) -> None:
    search_answers(rsps, searchset(stored_subject()))
    rsps.put(SUBJECTS, **created("rs-1", "4", status=200))
    provenance_created(rsps)

    written = publish_subject(client, screening(), RuleOptions(as_of=AS_OF, organ_function_reading="literal"), clock)

    assert written.outcome == "updated"
    assert verdicts_from_subject(sent(rsps.calls[1]))[1] == "literal"


def test_a_server_ignoring_the_identifier_cannot_make_us_touch_someone_else(rsps: Any, client: FhirClient) -> None:
    others = [stored_subject(rid=f"rs-{n}", patient=f"p{n}") for n in (2, 3, 10, 11)]  # p10, p11: prefix traps
    search_answers(rsps, searchset(*others, outcome=True))
    rsps.put(SUBJECTS, **created("rs-new", "1"))
    provenance_created(rsps)

    written = publish_subject(client, screening(), OPTIONS, clock)

    assert written == Written("ResearchSubject/rs-new", "created", "1")


def test_the_subject_is_found_on_a_later_search_page(rsps: Any, client: FhirClient) -> None:
    page2 = f"{SUBJECTS}?_page=2"
    rsps.get(SUBJECTS, json=searchset(stored_subject(rid="rs-2", patient="p2"), next_url=page2), headers=FHIR,
             match=[matchers.query_param_matcher({"identifier": IDENT_P1, "patient": "p1"})])
    rsps.get(SUBJECTS, json=searchset(stored_subject(rid="rs-1")), headers=FHIR,
             match=[matchers.query_param_matcher({"_page": "2"})])

    assert find_subject(client, "p1")["id"] == "rs-1"  # type: ignore[index]
    assert publish_subject(client, screening(), OPTIONS, clock).outcome == "unchanged"


# ---------------------------------------------------------------------------------------------- lifecycle


@pytest.mark.parametrize("status", LIFECYCLE)
def test_a_subject_past_pre_screening_keeps_its_status(status: str, rsps: Any, client: FhirClient) -> None:
    search_answers(rsps, searchset(stored_subject(status=status, inc_ecog="unknown")))
    rsps.put(SUBJECTS, **created("rs-1", "4", status=200))
    provenance_created(rsps)

    written = publish_subject(client, screening("ineligible", inc_ecog="not-met"), OPTIONS, clock)

    assert written.outcome == "updated"
    body = sent(rsps.calls[1])
    assert body["status"] == status
    assert verdicts_from_subject(body)[2][2].result == "not-met"  # inc-ecog refreshed


def test_a_subject_past_pre_screening_with_the_same_verdicts_is_not_rewritten(rsps: Any, client: FhirClient) -> None:
    search_answers(rsps, searchset(stored_subject(status="on-study-intervention")))

    written = publish_subject(client, screening("candidate"), OPTIONS, clock)

    assert written == Written("ResearchSubject/rs-1", "unchanged", "3")
    assert len(rsps.calls) == 1


@pytest.mark.parametrize("earlier", ["candidate", "potential-candidate", "ineligible"])
def test_a_pre_screen_status_is_replaced_by_the_new_one(earlier: str, rsps: Any, client: FhirClient) -> None:
    search_answers(rsps, searchset(stored_subject(status=earlier, exc_hiv="met")))
    rsps.put(SUBJECTS, **created("rs-1", "4", status=200))
    provenance_created(rsps)

    publish_subject(client, screening("candidate"), OPTIONS, clock)

    assert sent(rsps.calls[1])["status"] == "candidate"


# ---------------------------------------------------------------------------------------------- provenance


def test_the_provenance_names_the_write_the_bridge_version_and_the_rule_set(rsps: Any, client: FhirClient) -> None:
    search_answers(rsps, searchset())
    rsps.put(SUBJECTS, **created("rs-1", "1"))
    provenance_created(rsps)

    publish_subject(client, screening(), OPTIONS, clock)

    prov = sent(rsps.calls[2])
    validate_output(prov)
    assert prov["target"] == [{"reference": "ResearchSubject/rs-1/_history/1"}]
    assert prov["recorded"] == RECORDED.isoformat()
    assert prov["policy"] == [RULESET_POLICY] and RULESET_POLICY.endswith(TRIAL.ruleset_version)
    assert prov["agent"][0]["who"] == {"display": AGENT_DISPLAY} and AGENT_DISPLAY.endswith(__version__)
    assert prov["activity"]["coding"][0]["code"] == "prescreen"
    assert prov["reason"][0]["coding"][0]["code"] == "CLINTRCH"
    assert prov["entity"] == [{"role": "source", "what": {"reference": "Patient/p1"}}]


def test_one_provenance_per_write_and_none_for_an_unchanged_subject(rsps: Any, client: FhirClient) -> None:
    stored = {"p1": stored_subject(rid="rs-1"), "p2": stored_subject(rid="rs-2", patient="p2", inc_ecog="unknown")}
    search_answers(rsps, searchset(*stored.values(), outcome=True))
    rsps.put(SUBJECTS, **created("rs-x", "2", status=200))
    provenance_created(rsps)
    batch = [screening(), screening(patient="Patient/p2"), screening(patient="Patient/p3")]

    written = publish_screenings(client, batch, OPTIONS, clock)

    assert [w.outcome for w in written] == ["unchanged", "updated", "created"]
    provs = [sent(c) for c in rsps.calls if c.request.method == "POST"]
    assert [p["entity"][0]["what"]["reference"] for p in provs] == ["Patient/p2", "Patient/p3"]


# ---------------------------------------------------------------------------------------------- validation


def test_an_invalid_status_sends_nothing(rsps: Any, client: FhirClient) -> None:
    with pytest.raises(ValidationFailed) as err:
        publish_subject(client, screening("bogus"), OPTIONS, clock)
    assert "ResearchSubject.status" in err.value.issues[0].expression
    assert len(rsps.calls) == 0  # not even the search


def test_an_unknown_criterion_sends_nothing(rsps: Any, client: FhirClient) -> None:
    bad = Screening("Patient/p1", "candidate", (*verdicts(), Verdict("inc-invented", "met", "")))
    with pytest.raises(ValidationFailed):
        publish_subject(client, bad, OPTIONS, clock)
    assert len(rsps.calls) == 0


def test_a_bad_patient_id_sends_nothing(rsps: Any, client: FhirClient) -> None:
    with pytest.raises(Exception) as err:  # InputError: the id is not a FHIR id (and is not echoed)
        publish_subject(client, screening(patient="Patient/has space"), OPTIONS, clock)
    assert "has space" not in str(err.value)
    assert len(rsps.calls) == 0


def test_a_kept_lifecycle_status_that_is_invalid_stops_before_the_write(rsps: Any, client: FhirClient) -> None:
    search_answers(rsps, searchset({**stored_subject(inc_ecog="unknown"), "status": "on-hold-ish"}))
    with pytest.raises(ValidationFailed):
        publish_subject(client, screening(), OPTIONS, clock)
    assert methods(rsps) == [("GET", "ResearchSubject")]


# ---------------------------------------------------------------------------------------------- the study


def study_on_server(version: str = "1", **changes: Any) -> dict[str, Any]:
    return {**research_study(), "id": STUDY_LOGICAL_ID, "meta": {"versionId": version}, **changes}


def test_the_study_is_created_by_id_when_absent(rsps: Any, client: FhirClient) -> None:
    rsps.get(STUDY_URL, json=outcome("not-found"), status=404, headers=FHIR)
    rsps.put(STUDY_URL, **created(STUDY_LOGICAL_ID, "1"))
    provenance_created(rsps)

    written = publish_study(client, clock=clock, conformance=False)

    assert written == Written(f"ResearchStudy/{STUDY_LOGICAL_ID}", "created", "1")
    assert sent(rsps.calls[1]) == {**research_study(), "id": STUDY_LOGICAL_ID}
    prov = sent(rsps.calls[2])
    assert prov["target"] == [{"reference": f"ResearchStudy/{STUDY_LOGICAL_ID}/_history/1"}]
    assert prov["activity"]["coding"][0]["code"] == "study-publication"
    assert prov["policy"] == [RULESET_POLICY]


def test_a_deleted_study_is_written_again(rsps: Any, client: FhirClient) -> None:
    rsps.get(STUDY_URL, json=outcome("deleted"), status=410, headers=FHIR)
    rsps.put(STUDY_URL, **created(STUDY_LOGICAL_ID, "3"))
    provenance_created(rsps)

    assert publish_study(client, clock=clock, conformance=False).outcome == "created"


def test_the_same_study_is_not_written_again(rsps: Any, client: FhirClient) -> None:
    rsps.get(STUDY_URL, json=study_on_server("2", text={"status": "generated", "div": "<div>x</div>"}),
             headers=FHIR)

    assert publish_study(client, clock=clock, conformance=False) == Written(
        f"ResearchStudy/{STUDY_LOGICAL_ID}", "unchanged", "2")
    assert len(rsps.calls) == 1


def test_a_different_study_is_updated(rsps: Any, client: FhirClient) -> None:
    rsps.get(STUDY_URL, json=study_on_server("2", status="closed-to-accrual"), headers=FHIR)
    rsps.put(STUDY_URL, **created(STUDY_LOGICAL_ID, "3", status=200))
    provenance_created(rsps)

    assert publish_study(client, clock=clock, conformance=False) == Written(
        f"ResearchStudy/{STUDY_LOGICAL_ID}", "updated", "3")
    assert sent(rsps.calls[1])["status"] == "active"


@pytest.mark.parametrize(("status", "error"), [(500, ServerRejected), (403, AuthError)])
def test_a_failed_read_of_the_study_is_not_taken_for_absent(status: int, error: type, rsps: Any,
                                                            client: FhirClient) -> None:
    rsps.get(STUDY_URL, json=outcome("exception"), status=status, headers=FHIR)
    with pytest.raises(error):
        publish_study(client, clock=clock, conformance=False)
    assert len(rsps.calls) == 1  # no blind PUT


def test_an_invalid_study_sends_nothing(rsps: Any, client: FhirClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher, "research_study", lambda **_: {**research_study(), "status": "bogus"})
    with pytest.raises(ValidationFailed):
        publish_study(client, clock=clock, conformance=False)
    assert len(rsps.calls) == 0


# ---------------------------------------------------------------------------------------------- property


class FakeServer:
    """ResearchSubject + Provenance in memory, with the peer's quirks: a ResearchSubject search ignores its
    parameters (everything + an outcome entry) and a conditional update on it is ``not-supported``."""

    def __init__(self, rsps: responses.RequestsMock) -> None:
        self.subjects: dict[str, dict[str, Any]] = {}
        self.provenance: list[dict[str, Any]] = []
        rsps.add_callback("GET", SUBJECTS, self._search)
        rsps.add_callback("PUT", SUBJECTS, lambda _r: (400, FHIR, json.dumps(outcome("not-supported"))))
        rsps.add_callback("POST", SUBJECTS, self._create)
        rsps.add_callback("PUT", re.compile(rf"{re.escape(SUBJECTS)}/[^/?]+$"), self._update)
        rsps.add_callback("POST", PROVENANCE, self._provenance)

    def _search(self, _req: Any) -> tuple[int, dict[str, str], str]:
        return 200, FHIR, json.dumps(searchset(*self.subjects.values(), outcome=True))

    def _store(self, body: dict[str, Any], rid: str, status: int) -> tuple[int, dict[str, str], str]:
        version = str(int(self.subjects.get(rid, {}).get("meta", {}).get("versionId", "0")) + 1)
        self.subjects[rid] = {**body, "id": rid, "meta": {"versionId": version}}
        return status, {**FHIR, "ETag": f'W/"{version}"'}, json.dumps(self.subjects[rid])

    def _create(self, req: Any) -> tuple[int, dict[str, str], str]:
        return self._store(json.loads(req.body), f"rs-{len(self.subjects) + 1}", 201)

    def _update(self, req: Any) -> tuple[int, dict[str, str], str]:
        rid = urlsplit(req.url).path.rsplit("/", 1)[-1]
        if req.headers.get("If-Match") != f'W/"{self.subjects[rid]["meta"]["versionId"]}"':
            return 412, FHIR, json.dumps(outcome("conflict"))
        return self._store(json.loads(req.body), rid, 200)

    def _provenance(self, req: Any) -> tuple[int, dict[str, str], str]:
        self.provenance.append(json.loads(req.body))
        return 201, FHIR, json.dumps({**self.provenance[-1], "id": f"prov-{len(self.provenance)}"})


RESULTS = st.sampled_from(["met", "not-met", "unknown"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.lists(RESULTS, min_size=15, max_size=15), second=st.lists(RESULTS, min_size=15, max_size=15),
       days=st.integers(0, 400))
def test_publishing_twice_writes_only_what_changed(first: list[str], second: list[str], days: int) -> None:
    def scr(results: list[str]) -> Screening:
        return screening(**{c.replace("-", "_"): r for c, r in zip(TRIAL.criterion_ids, results, strict=True)})

    later = RuleOptions(as_of=AS_OF + timedelta(days=days))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps, FhirClient(BASE) as fhir:
        server = FakeServer(rsps)
        assert publish_subject(fhir, scr(first), OPTIONS, clock).outcome == "created"
        again = publish_subject(fhir, scr(first), later, clock)  # the as-of date alone is no change
        changed = publish_subject(fhir, scr(second), later, clock)

    assert again.outcome == "unchanged"
    assert changed.outcome == ("unchanged" if first == second else "updated")
    assert len(server.subjects) == 1  # never a duplicate
    assert len(server.provenance) == (1 if first == second else 2)
    (stored,) = server.subjects.values()
    assert [v.result for v in verdicts_from_subject(stored)[2]] == second
    assert subject_fingerprint(stored) == subject_fingerprint(
        research_subject("p1", "candidate", list(scr(second).verdicts), AS_OF, "organ-function"))


# ---------------------------------------------------------------------------------------------- daily re-screens


def test_a_later_as_of_alone_leaves_an_unchanged_sample_subject_alone() -> None:
    cmap = load_code_map(REPO_ROOT / "samples" / "site-map.yaml")
    bundle = str(REPO_ROOT / "samples" / "prescreen" / "bundle.json")
    runs = [prescreen(bundle, RuleOptions(as_of=d), cmap) for d in (AS_OF, AS_OF + timedelta(days=1))]
    p01 = [next(s for s in run.screenings if s.patient == "Patient/p01") for run in runs]
    assert [v.result for v in p01[0].verdicts] == [v.result for v in p01[1].verdicts]  # nothing decided changed
    subjects = [research_subject("p01", s.status, list(s.verdicts), r.options.as_of, "organ-function")
                for s, r in zip(p01, runs, strict=True)]
    assert subject_fingerprint(subjects[0]) == subject_fingerprint(subjects[1])


# ---------------------------------------------------------------------------------------------- transactions


def capability(transaction: bool = True, url_param: bool = False) -> dict[str, Any]:
    """A CapabilityStatement offering (or not) transactions and the ``url`` search on the canonical types."""
    resources = [{"type": t, "conditionalUpdate": True,
                  "searchParam": [{"name": "url", "type": "uri"}] if url_param else []}
                 for t in ("StructureDefinition", "CodeSystem", "ValueSet")]
    rest: dict[str, Any] = {"mode": "server", "resource": resources}
    if transaction:
        rest["interaction"] = [{"code": "transaction"}, {"code": "batch"}]
    return {"resourceType": "CapabilityStatement", "status": "active", "date": "2026-01-01", "kind": "instance",
            "fhirVersion": "4.0.1", "format": ["json"], "rest": [rest]}


def transaction_response(rid: str, version: str, status: str = "201 Created") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction-response", "entry": [
        {"response": {"status": status, "location": f"{SUBJECTS}/{rid}/_history/{version}",
                      "etag": f'W/"{version}"'}},
        {"response": {"status": "201 Created", "location": f"{PROVENANCE}/prov-1/_history/1"}}]}


def test_a_new_subject_and_its_provenance_travel_in_one_transaction(rsps: Any, client: FhirClient) -> None:
    search_answers(rsps, searchset())
    rsps.post(BASE, json=transaction_response("rs-1", "1"), headers=FHIR)

    written = publish_subject(client, screening(), OPTIONS, clock, transaction=True)

    assert written == Written("ResearchSubject/rs-1", "created", "1")
    assert methods(rsps) == [("GET", "ResearchSubject"), ("POST", "/fhir")]
    bundle = sent(rsps.calls[1])
    validate_output(bundle)
    subject_entry, prov_entry = bundle["entry"]
    assert bundle["type"] == "transaction"
    assert subject_entry["request"] == {"method": "PUT", "url": f"ResearchSubject?identifier={IDENT_P1}"}
    assert subject_entry["resource"] == research_subject("p1", "candidate", list(verdicts()), AS_OF, "organ-function")
    assert subject_entry["fullUrl"].startswith("urn:uuid:")
    assert prov_entry["request"] == {"method": "POST", "url": "Provenance"}
    assert prov_entry["resource"]["target"] == [{"reference": subject_entry["fullUrl"]}]
    assert prov_entry["resource"]["policy"] == [RULESET_POLICY]


def test_a_transaction_rejected_as_not_supported_is_sent_again_by_id(rsps: Any, client: FhirClient) -> None:
    search_answers(rsps, searchset(stored_subject(version="3", inc_ecog="unknown"), outcome=True))
    rsps.post(BASE, json=outcome("not-supported"), status=400, headers=FHIR)
    rsps.post(BASE, json=transaction_response("rs-1", "4", "200 OK"), headers=FHIR)

    written = publish_subject(client, screening(), OPTIONS, clock, transaction=True)

    assert written == Written("ResearchSubject/rs-1", "updated", "4")
    assert methods(rsps) == [("GET", "ResearchSubject"), ("POST", "/fhir"), ("POST", "/fhir")]
    by_id = sent(rsps.calls[2])
    validate_output(by_id)
    subject_entry, prov_entry = by_id["entry"]
    assert subject_entry["request"] == {"method": "PUT", "url": "ResearchSubject/rs-1", "ifMatch": 'W/"3"'}
    assert subject_entry["fullUrl"] == f"{SUBJECTS}/rs-1"
    assert subject_entry["resource"]["id"] == "rs-1"
    assert prov_entry["resource"]["target"] == [{"reference": "ResearchSubject/rs-1"}]


def test_a_transaction_without_a_subject_falls_back_to_create(rsps: Any, client: FhirClient) -> None:
    search_answers(rsps, searchset(outcome=True))
    rsps.post(BASE, json=outcome("not-supported"), status=400, headers=FHIR)
    rsps.post(BASE, json=transaction_response("new-1", "1"), headers=FHIR)

    assert publish_subject(client, screening(), OPTIONS, clock, transaction=True) == Written(
        "ResearchSubject/new-1", "created", "1")
    subject_entry, prov_entry = sent(rsps.calls[2])["entry"]
    assert subject_entry["request"] == {"method": "POST", "url": "ResearchSubject"}
    assert "id" not in subject_entry["resource"]
    assert prov_entry["resource"]["target"] == [{"reference": subject_entry["fullUrl"]}]


def test_another_rejection_of_the_transaction_is_raised(rsps: Any, client: FhirClient) -> None:
    search_answers(rsps, searchset())
    rsps.post(BASE, json=outcome("invalid"), status=400, headers=FHIR)

    with pytest.raises(ServerRejected):
        publish_subject(client, screening(), OPTIONS, clock, transaction=True)
    assert methods(rsps) == [("GET", "ResearchSubject"), ("POST", "/fhir")]  # no second try


def test_an_unchanged_subject_sends_no_transaction(rsps: Any, client: FhirClient) -> None:
    search_answers(rsps, searchset(stored_subject(version="7")))
    assert publish_subject(client, screening(), OPTIONS, clock, transaction=True).outcome == "unchanged"
    assert methods(rsps) == [("GET", "ResearchSubject")]


@pytest.mark.parametrize(("statement", "expected"), [
    (capability(transaction=True), [("GET", "metadata"), ("GET", "ResearchSubject"), ("POST", "/fhir")]),
    (capability(transaction=False), [("GET", "metadata"), ("GET", "ResearchSubject"), ("PUT", "ResearchSubject"),
                                     ("POST", "Provenance")]),
])
def test_the_capability_statement_decides_one_transaction_or_two_requests(
        statement: dict[str, Any], expected: list[tuple[str, str]], rsps: Any, client: FhirClient) -> None:
    rsps.get(f"{BASE}/metadata", json=statement, headers=FHIR)
    search_answers(rsps, searchset())
    rsps.post(BASE, json=transaction_response("rs-1", "1"), headers=FHIR)
    rsps.put(SUBJECTS, **created("rs-1", "1"))
    provenance_created(rsps)

    written = publish_screenings(client, [screening()], OPTIONS, clock)

    assert written == [Written("ResearchSubject/rs-1", "created", "1")]
    assert methods(rsps) == expected


def test_an_unreadable_capability_statement_means_two_requests(rsps: Any, client: FhirClient) -> None:
    rsps.get(f"{BASE}/metadata", json=outcome("forbidden"), status=404, headers=FHIR)
    search_answers(rsps, searchset())
    rsps.put(SUBJECTS, **created("rs-1", "1"))
    provenance_created(rsps)

    assert publish_screenings(client, [screening()], OPTIONS, clock)[0].outcome == "created"
    assert [m for m, _ in methods(rsps)] == ["GET", "GET", "PUT", "POST"]


def test_the_capability_statement_is_read_once_per_client(rsps: Any, client: FhirClient) -> None:
    rsps.get(f"{BASE}/metadata", json=capability(), headers=FHIR)
    assert publisher.offers_transaction(client) and publisher.offers_transaction(client)
    assert not publisher.offers_search_param(client, "CodeSystem", "url")
    assert len(rsps.calls) == 1


# ---------------------------------------------------------------------------------------------- conformance


class CanonicalServer:
    """StructureDefinition / CodeSystem / ValueSet in memory, searched like the peer (the ``url`` parameter is
    ignored: everything comes back), plus Provenance; a conditional update on ``url`` where ``url_param``."""

    TYPES = ("StructureDefinition", "CodeSystem", "ValueSet")

    def __init__(self, rsps: responses.RequestsMock, url_param: bool = False) -> None:
        self.held: dict[str, dict[str, Any]] = {}
        self.provenance: list[dict[str, Any]] = []
        self.writes: list[str] = []
        rsps.get(f"{BASE}/metadata", json=capability(url_param=url_param), headers=FHIR)
        for rtype in self.TYPES:
            rsps.add_callback("GET", f"{BASE}/{rtype}", self._search)
            rsps.add_callback("PUT", re.compile(rf"{re.escape(BASE)}/{rtype}/[^/?]+$"), self._put)
            rsps.add_callback("PUT", f"{BASE}/{rtype}", self._conditional)
        rsps.add_callback("POST", PROVENANCE, self._provenance)

    def _search(self, req: Any) -> tuple[int, dict[str, str], str]:
        rtype = urlsplit(req.url).path.rsplit("/", 1)[-1]
        found = [r for key, r in self.held.items() if key.startswith(f"{rtype}/")]
        return 200, FHIR, json.dumps(searchset(*found, outcome=True))

    def _store(self, key: str, body: dict[str, Any], status: int) -> tuple[int, dict[str, str], str]:
        version = str(int(self.held.get(key, {}).get("meta", {}).get("versionId", "0")) + 1)
        self.held[key] = {**body, "id": key.split("/")[1], "meta": {"versionId": version}}
        self.writes.append(key)
        return status, {**FHIR, "ETag": f'W/"{version}"'}, json.dumps(self.held[key])

    def _put(self, req: Any) -> tuple[int, dict[str, str], str]:
        key = "/".join(urlsplit(req.url).path.split("/")[-2:])
        if key in self.held and req.headers.get("If-Match") != f'W/"{self.held[key]["meta"]["versionId"]}"':
            return 412, FHIR, json.dumps(outcome("conflict"))
        return self._store(key, json.loads(req.body), 200 if key in self.held else 201)

    def _conditional(self, req: Any) -> tuple[int, dict[str, str], str]:
        rtype = urlsplit(req.url).path.rsplit("/", 1)[-1]
        url = query(type("C", (), {"request": req})())["url"][0]
        match = [k for k, r in self.held.items() if k.startswith(f"{rtype}/") and r["url"] == url]
        key = match[0] if match else f"{rtype}/srv-{len(self.held) + 1}"
        return self._store(key, json.loads(req.body), 200 if match else 201)

    def _provenance(self, req: Any) -> tuple[int, dict[str, str], str]:
        self.provenance.append(json.loads(req.body))
        return 201, FHIR, json.dumps({**self.provenance[-1], "id": f"prov-{len(self.provenance)}"})


def test_the_conformance_resources_are_written_once_then_left_alone(rsps: Any, client: FhirClient) -> None:
    from bridge.publish.conformance import load_resources

    server = CanonicalServer(rsps)
    expected = load_resources()

    first = publisher.publish_conformance(client)
    second = publisher.publish_conformance(client)

    assert [w.outcome for w in first] == ["created"] * len(expected)
    assert [w.outcome for w in second] == ["unchanged"] * len(expected)
    assert sorted(server.writes) == sorted(f"{r['resourceType']}/{r['id']}" for r in expected)  # own stable ids
    assert {r["url"] for r in server.held.values()} == {r["url"] for r in expected}  # never a duplicate
    assert server.provenance == []  # versioned and dated definitions, no Provenance of their own


def test_a_changed_conformance_resource_is_updated_by_the_id_it_was_found_under(rsps: Any,
                                                                                 client: FhirClient) -> None:
    from bridge.publish.conformance import load_resources

    server = CanonicalServer(rsps)
    publisher.publish_conformance(client)
    activity = next(r for r in load_resources() if r["id"] == "activity")
    key = "CodeSystem/activity"
    server.held["CodeSystem/elsewhere"] = {**server.held.pop(key), "id": "elsewhere", "title": "old"}
    server.writes.clear()

    written = publisher.publish_conformance(client)

    assert server.writes == ["CodeSystem/elsewhere"]
    assert [w.reference for w in written if w.outcome == "updated"] == ["CodeSystem/elsewhere"]
    assert {k: v for k, v in server.held["CodeSystem/elsewhere"].items() if k not in ("id", "meta")} == {
        k: v for k, v in activity.items() if k != "id"}


def test_a_server_with_the_url_search_gets_conditional_updates(rsps: Any, client: FhirClient) -> None:
    server = CanonicalServer(rsps, url_param=True)
    publisher.publish_conformance(client)
    assert all(key.split("/")[1].startswith("srv-") for key in server.writes)  # the server chose the ids
    puts = [c for c in rsps.calls if c.request.method == "PUT"]
    assert puts and all(query(c)["url"] for c in puts)


def test_publish_study_writes_the_conformance_resources_first(rsps: Any, client: FhirClient) -> None:
    server = CanonicalServer(rsps)
    rsps.get(STUDY_URL, json=outcome("not-found"), status=404, headers=FHIR)
    rsps.put(STUDY_URL, **created(STUDY_LOGICAL_ID, "1"))

    assert publish_study(client, clock=clock).outcome == "created"
    assert server.held and len(server.provenance) == 1  # the study's
