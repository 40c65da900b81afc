"""The study team's actions written back (issue #17 items 2-3): the ResearchSubject's status and decision
extension, a Provenance naming the person, idempotence, undo, the pending retries, and a re-screen that never
overwrites the decision — through the local store and through an EHR client."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.client import FhirResult
from bridge.config import RuleOptions, Settings
from bridge.decisions import ActionRefused, verdicts_digest
from bridge.errors import RemoteError, TransportError
from bridge.evaluate.eligibility import Screening
from bridge.localfhir.record import LocalRecorder
from bridge.normalize.mappings import load_code_map
from bridge.pipeline import prescreen
from bridge.publish.decision import USER_SYSTEM, decision_writer, provenance_id, write_back_pending
from bridge.publish.publisher import publish_subject
from bridge.publish.study import criteria_system
from bridge.publish.subject import (
    DECISION_EXTENSION,
    FAILURE_REASON_SYSTEM,
    decision_from_subject,
    verdicts_from_subject,
)
from bridge.state import save_prescreen
from bridge.state.sqlite_state import SqliteState
from bridge.trial import load_trial
from tests.unit.decision_fakes import FakeActions, Store, act

ROOT = Path(__file__).resolve().parents[2]
AS_OF = date(2026, 6, 15)
TRIAL = load_trial()
OPTIONS = RuleOptions.for_trial(TRIAL, AS_OF)
NOW = datetime(2026, 6, 16, 9, 30, tzinfo=UTC).timestamp()
Json = dict[str, Any]


@pytest.fixture(scope="module")
def run() -> Any:
    return prescreen(str(ROOT / "samples" / "prescreen" / "bundle.json"), OPTIONS,
                     load_code_map(ROOT / "samples" / "site-map.yaml"))


@pytest.fixture
def store(tmp_path: Path, run: Any) -> Iterator[Store]:
    state = SqliteState(tmp_path / "state.sqlite3")
    save_prescreen(state, run.screenings, run.not_screened, AS_OF, NOW, trial=TRIAL.id,
                   ruleset_version=TRIAL.ruleset_version)
    LocalRecorder(state, TRIAL).screenings(run.screenings, OPTIONS, run.not_screened)
    yield Store(state, FakeActions())
    state.close()


def _subject(store: Store, pid: str) -> Json:
    held = store.get_published(f"ResearchSubject|https://cd7-bridge.example.org/fhir/NamingSystem/research-subject|"
                               f"{TRIAL.id}-{pid}")
    assert held is not None
    return held.resource


def _digest(store: Store, pid: str) -> str:
    record = store.screening(pid)
    assert record is not None
    return verdicts_digest(record.verdicts)


def _pid(run: Any, status: str) -> str:
    return str(next(s.patient for s in run.screenings if s.status == status)).removeprefix("Patient/")


def _local(store: Store) -> Any:
    return decision_writer(Settings(), store, TRIAL, clock=lambda: NOW)


def test_consent_sets_screening_with_the_decision_and_a_provenance_naming_the_person(store: Store, run: Any) -> None:
    pid = _pid(run, "candidate")
    a = act(store.acts, TRIAL.id, pid, "consented", role="coordinator", user="c.jones", note="signed ICF v3",
            digest=_digest(store, pid))
    _local(store)(a.seq)
    subject = _subject(store, pid)
    assert subject["status"] == "screening"
    team = decision_from_subject(subject)
    assert team is not None and (team.action, team.status, team.by, team.note, team.changed) == (
        "consented", "screening", "c.jones", "signed ICF v3", False)
    prov = store.get_published(f"Provenance|{provenance_id(a)}")
    assert prov is not None
    person = prov.resource["agent"][0]
    assert person["who"]["identifier"] == {"system": USER_SYSTEM, "value": "c.jones"}
    assert person["type"]["coding"][0]["code"] == "author" and person["role"] == [{"text": "coordinator"}]
    assert prov.resource["activity"]["coding"][0]["code"] == "team-consented"
    assert prov.resource["reason"][-1] == {"text": "signed ICF v3"}
    assert prov.resource["target"][0]["reference"].startswith(f"ResearchSubject/{subject['id']}/_history/")
    wb = store.acts.writeback(a.seq)
    assert wb is not None and wb.written_back_at == NOW and wb.error is None


def test_writing_the_same_action_twice_changes_nothing(store: Store, run: Any) -> None:
    pid = _pid(run, "candidate")
    a = act(store.acts, TRIAL.id, pid, "eligible", digest=_digest(store, pid))
    write = _local(store)
    write(a.seq)
    before = store.get_published(f"ResearchSubject|{_subject(store, pid)['identifier'][0]['system']}|"
                                 f"{TRIAL.id}-{pid}")
    write(a.seq)
    after = store.get_published(f"ResearchSubject|{_subject(store, pid)['identifier'][0]['system']}|"
                                f"{TRIAL.id}-{pid}")
    assert before is not None and after is not None and before.version_id == after.version_id
    assert after.resource["status"] == "eligible"


@pytest.mark.parametrize(("reason", "status", "system"), [("inc-ecog", "ineligible", None),
                                                          ("declined", "not-registered", FAILURE_REASON_SYSTEM),
                                                          ("lost-to-contact", "ineligible", FAILURE_REASON_SYSTEM)])
def test_a_screen_failure_codes_its_reason(store: Store, run: Any, reason: str, status: str,
                                           system: str | None) -> None:
    pid = _pid(run, "candidate")
    a = act(store.acts, TRIAL.id, pid, "screen-failure", reason=reason, criteria=TRIAL.criterion_ids,
            digest=_digest(store, pid))
    _local(store)(a.seq)
    subject = _subject(store, pid)
    team = decision_from_subject(subject)
    assert subject["status"] == status
    assert team is not None and team.reason == (system or criteria_system(TRIAL), reason)


def test_the_investigators_judgement_is_the_verdict_and_counts_in_the_status(store: Store, run: Any) -> None:
    pid = _pid(run, "candidate")
    a = act(store.acts, TRIAL.id, pid, "judgement", value="met", note="severe COPD", digest=_digest(store, pid))
    _local(store)(a.seq)
    subject = _subject(store, pid)
    _, _, verdicts = verdicts_from_subject(subject)
    judged = next(v for v in verdicts if v.criterion == "exc-investigator")
    assert (judged.result, judged.reason) == ("met", "investigator's judgement recorded 2027-01-15")
    assert subject["status"] == "ineligible"  # an exclusion met by the investigator's judgement
    b = act(store.acts, TRIAL.id, pid, "judgement", value="not-met", note="fit", digest=_digest(store, pid))
    _local(store)(b.seq)
    assert _subject(store, pid)["status"] == "candidate"


def test_undo_takes_the_subject_back_to_the_pre_screen(store: Store, run: Any) -> None:
    pid = _pid(run, "potential-candidate")
    write = _local(store)
    a = act(store.acts, TRIAL.id, pid, "consented", digest=_digest(store, pid))
    write(a.seq)
    assert _subject(store, pid)["status"] == "screening"
    u = act(store.acts, TRIAL.id, pid, "undo", note="wrong patient", digest=_digest(store, pid))
    write(u.seq)
    subject = _subject(store, pid)
    assert subject["status"] == "potential-candidate"
    assert all(e["url"] != DECISION_EXTENSION for e in subject["extension"])
    undo = store.get_published(f"Provenance|{provenance_id(u)}")
    assert undo is not None and undo.resource["activity"]["coding"][0]["code"] == "team-undo"


def test_a_rescreen_keeps_the_decision_and_says_when_the_verdicts_changed(store: Store, run: Any) -> None:
    pid = _pid(run, "candidate")
    a = act(store.acts, TRIAL.id, pid, "screen-failure", reason="declined", digest=_digest(store, pid))
    _local(store)(a.seq)
    screening = next(s for s in run.screenings if s.patient == f"Patient/{pid}")
    recorder = LocalRecorder(store.state, TRIAL)
    recorder.subject(screening, OPTIONS)  # the same verdicts again
    same = _subject(store, pid)
    assert same["status"] == "not-registered" and decision_from_subject(same).changed is False  # type: ignore[union-attr]
    changed = Screening(screening.patient, "ineligible", tuple(
        v if v.criterion != "inc-ecog" else type(v)("inc-ecog", "not-met", "ECOG 3", v.evidence)
        for v in screening.verdicts))
    recorder.subject(changed, OPTIONS)
    after = _subject(store, pid)
    team = decision_from_subject(after)
    assert after["status"] == "not-registered" and team is not None and team.changed is True
    assert team.action == "screen-failure" and team.reason == (FAILURE_REASON_SYSTEM, "declined")
    _, _, verdicts = verdicts_from_subject(after)
    assert next(v for v in verdicts if v.criterion == "inc-ecog").result == "not-met"  # the verdicts refreshed


def test_a_patient_withheld_by_the_publication_policy_gets_no_subject(store: Store, run: Any) -> None:
    pid = next(s.patient for s in run.screenings
               if s.verdict("inc-diagnosis").result == "not-met").removeprefix("Patient/")
    a = act(store.acts, TRIAL.id, pid, "reviewed", digest=_digest(store, pid))
    _local(store)(a.seq)
    key = f"ResearchSubject|https://cd7-bridge.example.org/fhir/NamingSystem/research-subject|{TRIAL.id}-{pid}"
    assert store.get_published(key) is None
    assert store.acts.writeback(a.seq).written_back_at == NOW  # type: ignore[union-attr]


def test_a_coordinator_cannot_record_a_judgement(store: Store, run: Any) -> None:
    with pytest.raises(ActionRefused) as refused:
        act(store.acts, TRIAL.id, _pid(run, "candidate"), "judgement", role="coordinator", value="met", note="x")
    assert refused.value.forbidden and store.acts.rows == []


# ---------------------------------------------------------------------------------------------- through an EHR


class MemoryEhr:
    """The few client calls the write-back makes, on resources kept in memory (versions, If-Match, 404)."""

    base_url = "https://ehr.example.org/fhir"

    def __init__(self, fail: int = 0) -> None:
        self.resources: dict[tuple[str, str], Json] = {}
        self.fail, self.writes = fail, 0

    def search(self, rtype: str, params: Mapping[str, str] | None = None, *, matches_only: bool = False
               ) -> Iterator[Json]:
        return iter([r for (t, _), r in sorted(self.resources.items()) if t == rtype])

    def read(self, rtype: str, rid: str) -> FhirResult:
        if (rtype, rid) not in self.resources:
            raise RemoteError("not found", status=404)
        found = self.resources[(rtype, rid)]
        return FhirResult(found, 200, f'W/"{found["meta"]["versionId"]}"')

    def _store(self, body: Json, rid: str) -> FhirResult:
        if self.fail:
            self.fail -= 1
            raise TransportError("connection refused")
        self.writes += 1
        old = self.resources.get((body["resourceType"], rid))
        version = str(int(old["meta"]["versionId"]) + 1) if old else "1"
        stored = {**body, "id": rid, "meta": {"versionId": version}}
        self.resources[(body["resourceType"], rid)] = stored
        return FhirResult(stored, 201 if old is None else 200, f'W/"{version}"',
                          f"{self.base_url}/{body['resourceType']}/{rid}/_history/{version}")

    def update(self, resource: Mapping[str, Any], *, if_match: str | None = None) -> FhirResult:
        return self._store(dict(resource), str(resource["id"]))

    def create(self, resource: Mapping[str, Any], **_: Any) -> FhirResult:
        return self._store(dict(resource), f"srv-{len(self.resources) + 1}")

    def conditional_update(self, resource: Mapping[str, Any], criteria: Any) -> FhirResult:
        wanted = str(criteria).removeprefix("identifier=")
        for (t, rid), held in self.resources.items():
            if t == resource["resourceType"] and any(f"{i.get('system')}|{i.get('value')}" == wanted
                                                     for i in held.get("identifier") or []):
                return self._store(dict(resource), rid)
        return self.create(resource)

    def capabilities(self) -> Json:
        return {}


def test_through_an_ehr_a_failure_is_recorded_and_retried_by_write_back_pending(store: Store, run: Any) -> None:
    ehr = MemoryEhr()
    pid = _pid(run, "candidate")
    screening = next(s for s in run.screenings if s.patient == f"Patient/{pid}")
    publish_subject(ehr, screening, OPTIONS, trial=TRIAL)  # type: ignore[arg-type]
    a = act(store.acts, TRIAL.id, pid, "consented", user="c.jones", digest=_digest(store, pid))
    ehr.fail = 1
    with pytest.raises(TransportError):
        decision_writer(Settings(), store, TRIAL, lambda: NOW, client=ehr)(a.seq)  # type: ignore[arg-type]
    wb = store.acts.writeback(a.seq)
    assert wb is not None and (wb.written_back_at, wb.error, wb.attempts) == (None, "TransportError", 1)
    assert write_back_pending(Settings(), store, TRIAL, lambda: NOW, client=ehr) == (1, 0)  # type: ignore[arg-type]
    subjects = [r for (t, _), r in ehr.resources.items() if t == "ResearchSubject"]
    provs = [r for (t, _), r in ehr.resources.items() if t == "Provenance" and r.get("id") == provenance_id(a)]
    assert [s["status"] for s in subjects] == ["screening"] and len(provs) == 1
    assert provs[0]["agent"][0]["who"]["identifier"]["value"] == "c.jones"
    assert provs[0]["target"] == [{"reference": f"ResearchSubject/{subjects[0]['id']}/_history/2"}]
    writes = ehr.writes
    assert write_back_pending(Settings(), store, TRIAL, lambda: NOW, client=ehr) == (0, 0)  # type: ignore[arg-type]
    decision_writer(Settings(), store, TRIAL, lambda: NOW, client=ehr)(a.seq)  # type: ignore[arg-type]
    assert ehr.writes == writes
    # a re-screen with the same verdicts leaves the team's status and decision as they are
    publish_subject(ehr, screening, OPTIONS, trial=TRIAL)  # type: ignore[arg-type]
    assert ehr.writes == writes and subjects[0]["status"] == "screening"
    held = store.get_published(f"ResearchSubject|https://cd7-bridge.example.org/fhir/NamingSystem/research-subject|"
                               f"{TRIAL.id}-{pid}")
    assert held is not None and held.version == "2" and held.resource["status"] == "screening"


def test_write_back_pending_opens_an_ehr_client_only_when_needed_and_closes_it(store: Store, run: Any,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.publish import decision as module

    opened: list[Any] = []

    class Opened(MemoryEhr):
        closed = False

        def __init__(self, base_url: str, settings: Settings) -> None:
            super().__init__()
            assert base_url == "https://ehr.example.org/fhir"
            opened.append(self)

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(module, "FhirClient", Opened)
    settings = Settings(ehr_base_url="https://ehr.example.org/fhir")
    assert write_back_pending(settings, store, TRIAL, lambda: NOW) == (0, 0)
    assert opened == []
    pid = _pid(run, "candidate")
    a = act(store.acts, TRIAL.id, pid, "contacted", role="coordinator", user="c.jones", digest=_digest(store, pid))
    assert write_back_pending(settings, store, TRIAL, lambda: NOW) == (1, 0)
    assert len(opened) == 1 and opened[0].closed
    subject = next(r for (t, _), r in opened[0].resources.items() if t == "ResearchSubject")
    assert decision_from_subject(subject).action == "contacted"  # type: ignore[union-attr]
    assert ("Provenance", provenance_id(a)) in opened[0].resources
