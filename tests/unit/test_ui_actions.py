"""The study team on the coordinator page (issue #17 part A), over a real SQLite state: named users sign in,
each role sees and may use only its actions (403 otherwise, nothing recorded), every POST needs the session's
CSRF token, a form sent twice records once, undo, the audit trail (escaped), 'changed since review', the
write-back hook (a failure leaves the action recorded and pending) and sessions and throttling shared by two
states on one file (two replicas)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bridge.config import Settings
from bridge.service.app import install_error_handlers
from bridge.service.ui import COOKIE, FREE_FAILURES, ui_router
from bridge.service.users import User, Users, token_digest
from bridge.state import ScreeningRecord
from bridge.state.sqlite_state import SqliteState
from bridge.trial import load_trial

TRIAL = load_trial()
NOW = 1_781_500_000.0
API_TOKEN = "machine-api-token-0123456789abcdefghijkl"
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
ANA_PW, IVO_TOKEN = "ana-password-1", "ivo-token-0123456789"
USERS = Users([User("ana", "coordinator", CHEAP.hash(ANA_PW)),
               User("ivo", "investigator", token_sha256=token_digest(IVO_TOKEN))])
FORM = {"content-type": "application/x-www-form-urlencoded"}


def _verdicts(**changed: str) -> list[dict[str, Any]]:
    results = {cid: "unknown" if cid == "exc-investigator" else "met" if cid.startswith("inc-") else "not-met"
               for cid in TRIAL.criterion_ids}
    results.update(changed)
    return [{"criterion": cid, "result": r, "evidence": [], "reason": "r"} for cid, r in results.items()]


class Recorder:
    """The write-back stand-in: remembers the seqs and, like ``decision_writer``, marks each written back, or
    marks it failed and raises when told to."""

    def __init__(self, state: SqliteState) -> None:
        self.state, self.fail = state, False
        self.seqs: list[int] = []

    def __call__(self, seq: int) -> None:
        self.seqs.append(seq)
        if self.fail:
            self.state.mark_writeback_failed(seq, "ConnectionError")
            raise ConnectionError("EHR down")
        self.state.mark_written_back(seq, NOW)


@pytest.fixture
def state(tmp_path: Path) -> Iterator[SqliteState]:
    s = SqliteState(tmp_path / "state.sqlite3")
    s.save_screening(ScreeningRecord("p01", "potential-candidate", _verdicts(), "2026-06-15", NOW - 10, TRIAL.id))
    s.save_screening(ScreeningRecord("p02", "candidate", _verdicts(), "2026-06-15", NOW - 5, TRIAL.id))
    yield s
    s.close()


def _app(state: SqliteState, write_back: Any = None, users: Users | None = USERS,
         screening_log: Any = None) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(ui_router(Settings(api_token=API_TOKEN), state, lambda: NOW, users=users,
                                 write_back=write_back, screening_log=screening_log))
    return app


@pytest.fixture
def recorder(state: SqliteState) -> Recorder:
    return Recorder(state)


@pytest.fixture
def app(state: SqliteState, recorder: Recorder) -> FastAPI:
    return _app(state, recorder)


def _signed_in(app: FastAPI, name: str, secret: str) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    answer = client.post("/ui/login", data={"name": name, "password": secret})
    assert answer.status_code == 303, answer.text
    return client


@pytest.fixture
def ana(app: FastAPI) -> TestClient:
    return _signed_in(app, "ana", ANA_PW)


@pytest.fixture
def ivo(app: FastAPI) -> TestClient:
    return _signed_in(app, "ivo", IVO_TOKEN)


def _forms(page: str) -> dict[str, dict[str, str]]:
    """Each action form of a patient page: its hidden fields, by the form's id."""
    found = {}
    for form_id, body in re.findall(r'<form method="post" action="/ui/patients/[^"]+/actions" class="action" '
                                    r'id="action-([a-z-]+)">(.*?)</form>', page, re.S):
        found[form_id] = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', body))
    return found


def _act(client: TestClient, kind: str, patient: str = "p01", **fields: str) -> Any:
    hidden = _forms(client.get(f"/ui/patients/{patient}").text)[kind]
    return client.post(f"/ui/patients/{patient}/actions", data={**hidden, **fields})


def _kinds(state: SqliteState, patient: str = "p01") -> list[str]:
    return [a.kind for a in state.actions(TRIAL.id, patient)]


# ------------------------------------------------------------------------------------------ signing in


def test_named_users_sign_in_and_the_page_names_them(ana: TestClient, ivo: TestClient) -> None:
    assert 'id="signed-in-as">ana (coordinator)' in ana.get("/ui").text
    assert 'id="signed-in-as">ivo (investigator)' in ivo.get("/ui/patients/p01").text


def test_a_refused_sign_in_never_says_whether_the_name_exists(app: FastAPI) -> None:
    client = TestClient(app, follow_redirects=False)
    wrong_password = client.post("/ui/login", data={"name": "ana", "password": "nope"})
    unknown_name = client.post("/ui/login", data={"name": "zoe", "password": "nope"})
    assert wrong_password.status_code == unknown_name.status_code == 401
    assert wrong_password.text == unknown_name.text and "zoe" not in unknown_name.text


def test_the_shared_api_token_does_not_open_the_page_when_users_are_named(app: FastAPI) -> None:
    client = TestClient(app, follow_redirects=False)
    assert client.get("/ui", headers={"authorization": f"Bearer {API_TOKEN}"}).status_code == 303
    assert client.post("/ui/login", data={"token": API_TOKEN}).status_code == 401
    assert client.post("/ui/login", data={"name": "ana", "password": API_TOKEN}).status_code == 401


def test_the_session_id_is_rotated_at_every_sign_in(ana: TestClient) -> None:
    first = ana.cookies[COOKIE]
    assert ana.post("/ui/login", data={"name": "ana", "password": ANA_PW}).status_code == 303
    second = ana.cookies[COOKIE]
    assert second != first
    stale = TestClient(ana.app, follow_redirects=False)
    stale.cookies.set(COOKIE, first, path="/ui")
    assert stale.get("/ui").status_code == 303  # the previous session was closed


# ------------------------------------------------------------------------------------------ roles


def test_a_coordinator_sees_no_investigator_form_and_is_refused_403(ana: TestClient, ivo: TestClient,
                                                                   state: SqliteState) -> None:
    forms = _forms(ana.get("/ui/patients/p01").text)
    assert set(forms) == {"reviewed", "contacted", "consented", "screen-failure"}
    assert set(_forms(ivo.get("/ui/patients/p01").text)) == {"judgement", "reviewed", "contacted", "consented",
                                                              "eligible", "screen-failure"}
    hidden = forms["reviewed"]
    for kind, extra in (("judgement", {"value": "met", "note": "I judge"}), ("eligible", {})):
        forged = ana.post("/ui/patients/p01/actions", data={**hidden, "kind": kind, **extra})
        assert forged.status_code == 403
    assert _kinds(state) == []


def test_the_investigators_judgement_needs_a_note_and_is_shown_escaped(ivo: TestClient, state: SqliteState,
                                                                      recorder: Recorder) -> None:
    form = re.search(r'<form[^>]*id="action-judgement".*?</form>', ivo.get("/ui/patients/p01").text, re.S)
    assert form and '<option value="" selected disabled>' in form.group(0)  # no judgement chosen for the user
    assert _act(ivo, "judgement", value="met", note="  ").status_code == 422
    assert _act(ivo, "judgement", value="maybe", note="x").status_code == 422
    assert _act(ivo, "judgement", value="", note="x").status_code == 422
    assert _kinds(state) == []
    note = "<script>alert(1)</script> saw the marrow"
    done = _act(ivo, "judgement", value="not-met", note=note)
    assert (done.status_code, done.headers["location"]) == (303, "/ui/patients/p01")
    (action,) = state.actions(TRIAL.id, "p01")
    assert (action.kind, action.value, action.note, action.user, action.role) == (
        "judgement", "not-met", note, "ivo", "investigator")
    assert recorder.seqs == [action.seq]
    page = ivo.get("/ui/patients/p01").text
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; saw the marrow" in page
    assert re.search(r'id="judgement">not-met — ivo: ', page)
    row = re.search(r'<tr data-seq="\d+" data-kind="judgement">(.*?)</tr>', page, re.S)
    assert row and "ivo" in row.group(1) and "investigator" in row.group(1) and ">written<" in row.group(1)
    assert 'id="writeback-pending"' not in page


def test_eligibility_and_screen_failures_set_the_team_status(ivo: TestClient, ana: TestClient,
                                                             state: SqliteState) -> None:
    assert _act(ivo, "eligible").status_code == 303
    assert 'id="team-status">eligible<' in ivo.get("/ui/patients/p01").text
    assert _act(ana, "screen-failure", reason="other", note="").status_code == 422
    assert _act(ana, "screen-failure", reason="not-a-reason").status_code == 422
    assert _act(ana, "screen-failure", reason="inc-age").status_code == 303
    assert 'id="team-status">ineligible<' in ana.get("/ui/patients/p01").text
    assert _act(ana, "screen-failure", reason="declined", note="does not wish").status_code == 303
    page = ana.get("/ui/patients/p01").text
    assert 'id="team-status">not-registered<' in page and 'id="failure-reason">declined — does not wish' in page
    assert _kinds(state) == ["eligible", "screen-failure", "screen-failure"]
    queue = ana.get("/ui").text
    assert re.search(r'<tr data-patient="p01">.*?<td class="team-status">not-registered</td>', queue, re.S)
    assert re.search(r'<tr data-patient="p02">.*?<td class="team-status">–</td>', queue, re.S)


# ------------------------------------------------------------------------------------------ forged and repeated forms


@pytest.mark.parametrize("csrf", [None, "", "wrong", "A" * 43])
def test_a_forged_form_without_the_sessions_csrf_token_records_nothing(ana: TestClient, state: SqliteState,
                                                                        csrf: str | None) -> None:
    hidden = _forms(ana.get("/ui/patients/p01").text)["reviewed"]
    body = {k: v for k, v in hidden.items() if k != "csrf"} | ({} if csrf is None else {"csrf": csrf})
    assert ana.post("/ui/patients/p01/actions", data=body).status_code == 403
    assert _kinds(state) == []


def test_another_sessions_csrf_token_records_nothing(ana: TestClient, ivo: TestClient, state: SqliteState) -> None:
    theirs = _forms(ivo.get("/ui/patients/p01").text)["reviewed"]
    assert ana.post("/ui/patients/p01/actions", data=theirs).status_code == 403
    anonymous = TestClient(ana.app, follow_redirects=False)
    assert anonymous.post("/ui/patients/p01/actions", data=theirs).status_code == 403
    assert _kinds(state) == []


def test_a_form_sent_twice_records_one_action(ana: TestClient, state: SqliteState, recorder: Recorder) -> None:
    hidden = _forms(ana.get("/ui/patients/p01").text)["contacted"]
    first = ana.post("/ui/patients/p01/actions", data={**hidden, "note": "phoned"})
    again = ana.post("/ui/patients/p01/actions", data={**hidden, "note": "phoned"})
    assert first.status_code == again.status_code == 303
    assert _kinds(state) == ["contacted"] and len(recorder.seqs) == 1
    other_patient = ana.post("/ui/patients/p02/actions", data={**hidden, "note": "phoned"})
    assert other_patient.status_code == 409 and _kinds(state, "p02") == []
    bad_key = ana.post("/ui/patients/p01/actions", data={**hidden, "request_key": "short"})
    assert bad_key.status_code == 422 and len(_kinds(state)) == 1


# ------------------------------------------------------------------------------------------ undo


def test_undo_takes_back_the_last_action_and_is_recorded(ana: TestClient, state: SqliteState) -> None:
    assert _act(ana, "consented").status_code == 303
    page = ana.get("/ui/patients/p01").text
    assert 'id="team-status">screening<' in page
    stale = _forms(page)["undo"]
    assert _act(ana, "undo", note="wrong patient").status_code == 303
    page = ana.get("/ui/patients/p01").text
    assert 'id="team-status">none' in page and "action-undo" not in page
    assert re.search(r'<tr data-seq="\d+" data-kind="consented" class="taken-back">', page)
    undo = state.actions(TRIAL.id, "p01")[-1]
    assert (undo.kind, undo.undoes, undo.note) == ("undo", state.actions(TRIAL.id, "p01")[0].seq, "wrong patient")
    assert ana.post("/ui/patients/p01/actions", data={**stale, "request_key": "r" * 22}).status_code == 422


def test_a_stale_undo_is_refused_409(ana: TestClient, state: SqliteState) -> None:
    assert _act(ana, "reviewed").status_code == 303
    stale = _forms(ana.get("/ui/patients/p01").text)["undo"]
    assert _act(ana, "contacted").status_code == 303
    assert ana.post("/ui/patients/p01/actions", data=stale).status_code == 409
    assert _kinds(state) == ["reviewed", "contacted"]


def test_a_coordinator_cannot_undo_the_investigators_eligibility(ana: TestClient, ivo: TestClient,
                                                                state: SqliteState) -> None:
    assert _act(ivo, "eligible").status_code == 303
    assert "action-undo" not in ana.get("/ui/patients/p01").text
    undo = _forms(ivo.get("/ui/patients/p01").text)["undo"]
    mine = _forms(ana.get("/ui/patients/p01").text)["reviewed"]
    forged = ana.post("/ui/patients/p01/actions", data={**mine, "kind": "undo", "undoes": undo["undoes"]})
    assert forged.status_code == 403 and _kinds(state) == ["eligible"]


# ------------------------------------------------------------------------------------------ write-back, review


def test_a_failed_write_back_leaves_the_action_recorded_and_pending(ana: TestClient, state: SqliteState,
                                                                    recorder: Recorder,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    recorder.fail = True
    with caplog.at_level(logging.DEBUG):
        assert _act(ana, "contacted", note="left a message for Mrs Example").status_code == 303
    (action,) = state.actions(TRIAL.id, "p01")
    wb = state.writeback(action.seq)
    assert wb is not None and (wb.written_back_at, wb.error, wb.attempts) == (None, "ConnectionError", 1)
    assert [a.seq for a in state.pending_writebacks()] == [action.seq]
    page = ana.get("/ui/patients/p01").text
    assert 'id="writeback-pending"' in page and ">pending<" in page
    logged = "\n".join(r.getMessage() + str(r.__dict__.get("bridge_fields")) for r in caplog.records
                        if r.name.startswith("bridge"))
    assert "ui.writeback-pending kind=contacted error=ConnectionError" in logged
    assert "Mrs Example" not in logged and "p01" not in logged and "ana" not in logged


def test_without_a_write_back_actions_stay_pending(state: SqliteState) -> None:
    client = _signed_in(_app(state, None), "ana", ANA_PW)
    assert _act(client, "reviewed").status_code == 303
    assert 'id="writeback-pending"' in client.get("/ui/patients/p01").text


def test_changed_since_review_when_the_verdicts_change(ana: TestClient, state: SqliteState) -> None:
    assert _act(ana, "reviewed").status_code == 303
    assert 'id="changed-since-review"' not in ana.get("/ui/patients/p01").text
    state.save_screening(ScreeningRecord("p01", "potential-candidate", _verdicts(**{"inc-age": "unknown"}),
                                         "2026-06-16", NOW, TRIAL.id))
    page = ana.get("/ui/patients/p01").text
    assert 'id="changed-since-review"' in page and 'data-kind="reviewed"' in page


# ------------------------------------------------------------------------------------------ replicas, modes


def test_sessions_and_the_throttle_are_shared_by_two_states_on_one_file(state: SqliteState) -> None:
    other = SqliteState(state.path)
    try:
        one, two = TestClient(_app(state), follow_redirects=False), TestClient(_app(other), follow_redirects=False)
        for _ in range(FREE_FAILURES + 1):
            assert one.post("/ui/login", data={"name": "ana", "password": "guess"}).status_code == 401
        throttled = two.post("/ui/login", data={"name": "ana", "password": ANA_PW})
        assert throttled.status_code == 429 and throttled.headers["retry-after"] == "1"
        state.clear_login_failures("testclient")
        signed = _signed_in(_app(state), "ana", ANA_PW)
        two.cookies.set(COOKIE, signed.cookies[COOKIE], path="/ui")
        assert two.get("/ui").status_code == 200  # signed in on one replica, signed in on the other
        csrf = re.search(r'name="csrf" value="([^"]+)"', two.get("/ui").text)
        assert csrf and two.post("/ui/logout", data={"csrf": csrf.group(1)}).status_code == 303
        assert signed.get("/ui").status_code == 303
    finally:
        other.close()


def test_without_users_the_page_is_read_only_behind_the_api_token(state: SqliteState) -> None:
    client = TestClient(_app(state, users=None), follow_redirects=False)
    assert client.post("/ui/login", data={"token": API_TOKEN}).status_code == 303
    page = client.get("/ui/patients/p01").text
    assert "action-" not in page and 'id="decision"' not in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    forged = client.post("/ui/patients/p01/actions", data={"csrf": csrf.group(1), "kind": "reviewed",
                                                           "request_key": "k" * 22})
    assert forged.status_code == 403 and _kinds(state) == []


def test_the_screening_log_download(state: SqliteState) -> None:
    client = _signed_in(_app(state, screening_log=lambda: "screening_number\r\nS00001\r\n"), "ana", ANA_PW)
    assert 'id="screening-log"' in client.get("/ui").text
    answer = client.get("/ui/screening-log.csv")
    assert answer.status_code == 200 and answer.text == "screening_number\r\nS00001\r\n"
    assert answer.headers["content-type"].startswith("text/csv") and "attachment" in answer.headers[
        "content-disposition"]
    assert TestClient(client.app, follow_redirects=False).get("/ui/screening-log.csv").status_code == 303
    without = _signed_in(_app(state), "ana", ANA_PW)
    assert without.get("/ui/screening-log.csv").status_code == 404 and 'id="screening-log"' not in without.get(
        "/ui").text


@pytest.mark.parametrize("body", [b"csrf=x&note=" + b"n" * 17_000, b"a=1&b=2&c=3&d=4&e=5&f=6&g=7&h=8&i=9",
                                  b"\xff\xfe", b""])
def test_odd_action_bodies_are_refused_not_crashed(ana: TestClient, state: SqliteState, body: bytes) -> None:
    assert ana.post("/ui/patients/p01/actions", content=body, headers=FORM).status_code == 403
    assert _kinds(state) == []


def test_actions_on_unknown_patients_are_404(ana: TestClient, state: SqliteState) -> None:
    hidden = _forms(ana.get("/ui/patients/p01").text)["reviewed"]
    for patient in ("p99", "bad%20id"):
        assert ana.post(f"/ui/patients/{patient}/actions", data=hidden).status_code == 404
    assert state.all_actions(TRIAL.id) == []


def test_a_note_of_the_longest_kind_fits_and_a_longer_one_is_refused(ana: TestClient, state: SqliteState) -> None:
    assert _act(ana, "reviewed", note="é" * 2000).status_code == 303  # 12,000 bytes percent-encoded
    assert _act(ana, "contacted", note="x" * 2001).status_code == 422
    assert _kinds(state) == ["reviewed"]
