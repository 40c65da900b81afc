"""The study team's actions written back to the real peer EHR (issue #17), and their shapes through Medplum's
validator.

On a fresh sekmet-fhir: the study and the sample subjects are published as the service would; a coordinator
records consent for one patient, the investigator a judgement and a screen failure for another; each action is
written back through ``decision_writer`` with the EHR client. The peer then holds the updated ResearchSubjects
(status, the study-team-decision extension, the judgement as ``exc-investigator``) and one Provenance per action
naming the person (``agent.who.identifier`` = the user name) and targeting the subject version written.
Writing an action again, and an automated re-screen, change nothing; an undo takes the subject back to the
pre-screen status. The subjects and Provenance read back from the peer pass Medplum's validator against the
bridge's profiles, and the validator refuses a decision extension that breaks its definition.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.client import FhirClient
from bridge.config import RuleOptions, Settings
from bridge.decisions import verdicts_digest
from bridge.normalize.mappings import load_code_map
from bridge.pipeline import PrescreenRun, prescreen
from bridge.publish import conformance
from bridge.publish.decision import USER_SYSTEM, decision_writer, provenance_id
from bridge.publish.publisher import publish_screenings, publish_study
from bridge.publish.study import criteria_system
from bridge.publish.subject import DECISION_EXTENSION, SUBJECT_ID_SYSTEM, decision_from_subject, verdicts_from_subject
from bridge.publish.validate import REPO_ROOT
from bridge.state import save_prescreen
from bridge.state.sqlite_state import SqliteState
from bridge.trial import load_trial
from tests.unit.decision_fakes import FakeActions, Store, act
from tests.validator import FhirValidator, fhir_validator  # noqa: F401

from .loading import all_resources
from .peer import PeerServer

BUNDLE = REPO_ROOT / "samples" / "prescreen" / "bundle.json"
OPTIONS = RuleOptions(as_of=date(2026, 6, 15))
TRIAL = load_trial()
AT = datetime(2026, 6, 16, 9, 30, tzinfo=UTC).timestamp()
Json = dict[str, Any]


def clock() -> datetime:
    return datetime(2026, 6, 15, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def run() -> PrescreenRun:
    return prescreen(str(BUNDLE), OPTIONS, load_code_map(REPO_ROOT / "samples" / "site-map.yaml"))


@pytest.fixture(scope="module")
def client(sekmet_executable: Path) -> Iterator[FhirClient]:
    with PeerServer(sekmet_executable) as srv, FhirClient(srv.base_url) as fhir:
        yield fhir


@pytest.fixture(scope="module")
def store(client: FhirClient, run: PrescreenRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    publish_study(client, clock=clock)
    publish_screenings(client, run.screenings, OPTIONS, clock)
    state = SqliteState(tmp_path_factory.mktemp("decision") / "state.sqlite3")
    save_prescreen(state, run.screenings, run.not_screened, OPTIONS.as_of, AT, trial=TRIAL.id,
                   ruleset_version=TRIAL.ruleset_version)
    yield Store(state, FakeActions())
    state.close()


def pid_of(run: PrescreenRun, status: str, nth: int = 0) -> str:
    return [s.patient for s in run.screenings if s.status == status][nth].removeprefix("Patient/")


def subject_on_peer(client: FhirClient, pid: str) -> Json:
    value = f"{TRIAL.id}-{pid}"
    (found,) = [s for s in all_resources(client, "ResearchSubject")
                if any(i.get("system") == SUBJECT_ID_SYSTEM and i.get("value") == value for i in s["identifier"])]
    return found


def digest(store: Store, pid: str) -> str:
    record = store.screening(pid)
    assert record is not None
    return verdicts_digest(record.verdicts)


@pytest.fixture(scope="module")
def written(client: FhirClient, store: Store, run: PrescreenRun) -> dict[str, Any]:
    write = decision_writer(Settings(ehr_base_url=client.base_url), store, TRIAL, lambda: AT, client=client)
    consented, judged = pid_of(run, "candidate"), pid_of(run, "potential-candidate")
    a = act(store.acts, TRIAL.id, consented, "consented", role="coordinator", user="c.jones", note="ICF v3 signed",
            digest=digest(store, consented), at=AT)
    b = act(store.acts, TRIAL.id, judged, "judgement", user="dr.house", value="met", note="frailty",
            digest=digest(store, judged), at=AT + 60)
    c = act(store.acts, TRIAL.id, judged, "screen-failure", user="dr.house", reason="exc-investigator",
            criteria=TRIAL.criterion_ids, digest=digest(store, judged), at=AT + 120)
    for action in (a, b, c):
        write(action.seq)
    return {"write": write, "consented": consented, "judged": judged, "actions": (a, b, c)}


def test_the_peer_holds_the_updated_subject_and_a_provenance_naming_the_person(client: FhirClient, store: Store,
                                                                              written: dict[str, Any]) -> None:
    subject = subject_on_peer(client, written["consented"])
    team = decision_from_subject(subject)
    assert subject["status"] == "screening"
    assert team is not None and (team.action, team.by, team.status, team.note) == (
        "consented", "c.jones", "screening", "ICF v3 signed")
    a = written["actions"][0]
    prov = client.read("Provenance", provenance_id(a)).resource
    assert prov["agent"][0]["who"]["identifier"] == {"system": USER_SYSTEM, "value": "c.jones"}
    assert prov["agent"][0]["type"]["coding"][0]["code"] == "author"
    assert prov["activity"]["coding"][0]["code"] == "team-consented"
    assert prov["target"] == [{"reference": f"ResearchSubject/{subject['id']}/_history/"
                                            f"{subject['meta']['versionId']}"}]
    assert store.acts.writeback(a.seq).written_back_at == AT  # type: ignore[union-attr]


def test_the_judgement_and_the_screen_failure_are_on_the_peer(client: FhirClient, written: dict[str, Any]) -> None:
    subject = subject_on_peer(client, written["judged"])
    team = decision_from_subject(subject)
    assert subject["status"] == "ineligible"
    assert team is not None and (team.action, team.judgement, team.reason) == (
        "screen-failure", "met", (criteria_system(), "exc-investigator"))
    _, _, verdicts = verdicts_from_subject(subject)
    assert next(v for v in verdicts if v.criterion == "exc-investigator").result == "met"
    people = {client.read("Provenance", provenance_id(x)).resource["agent"][0]["who"]["identifier"]["value"]
              for x in written["actions"][1:]}
    assert people == {"dr.house"}


def test_writing_again_and_a_rescreen_change_nothing_then_undo_goes_back(client: FhirClient, store: Store,
                                                                         run: PrescreenRun,
                                                                         written: dict[str, Any]) -> None:
    before = subject_on_peer(client, written["consented"])
    provs = len(all_resources(client, "Provenance"))
    written["write"](written["actions"][0].seq)
    publish_screenings(client, run.screenings, OPTIONS, clock)
    after = subject_on_peer(client, written["consented"])
    assert after["meta"]["versionId"] == before["meta"]["versionId"] and after["status"] == "screening"
    assert len(all_resources(client, "Provenance")) == provs
    u = act(store.acts, TRIAL.id, written["consented"], "undo", role="coordinator", user="c.jones",
            digest=digest(store, written["consented"]), at=AT + 300)
    written["write"](u.seq)
    undone = subject_on_peer(client, written["consented"])
    assert undone["status"] == "candidate" and all(e["url"] != DECISION_EXTENSION for e in undone["extension"])
    assert client.read("Provenance", provenance_id(u)).resource["activity"]["coding"][0]["code"] == "team-undo"


# ---------------------------------------------------------------------------------------------- validator


def test_the_written_back_shapes_pass_medplums_validator(client: FhirClient, written: dict[str, Any],
                                                         fhir_validator: FhirValidator) -> None:  # noqa: F811
    resources = [subject_on_peer(client, written["judged"])]
    resources += [client.read("Provenance", provenance_id(a)).resource for a in written["actions"]]
    verdicts = fhir_validator.validate(resources)
    assert conformance.profile_for(resources[0]) == conformance.SUBJECT_PROFILE
    failures = {f"{r['resourceType']}/{r['id']}": v.text() for r, v in zip(resources, verdicts, strict=True)
                if v.errors}
    assert not failures, failures


def test_the_validator_refuses_a_broken_decision(client: FhirClient, written: dict[str, Any],
                                                 fhir_validator: FhirValidator) -> None:  # noqa: F811
    subject = subject_on_peer(client, written["judged"])
    index = next(i for i, e in enumerate(subject["extension"]) if e["url"] == DECISION_EXTENSION)
    no_by = copy.deepcopy(subject)
    no_by["extension"][index]["extension"] = [p for p in no_by["extension"][index]["extension"] if p["url"] != "by"]
    unknown = copy.deepcopy(subject)
    for part in unknown["extension"][index]["extension"]:
        if part["url"] == "judgement":
            part["valueCode"] = "unknown"  # in the criterion-result value set, but not a judgement (cd7-td-2)
    verdicts = fhir_validator.validate([no_by, unknown])
    assert all(v.errors for v in verdicts), [v.text() for v in verdicts]
