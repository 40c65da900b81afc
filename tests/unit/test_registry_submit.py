"""Submission against a faked registry (``responses``): receipts, token refresh, retries, duplicates, outbox."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
import responses

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.registry.package import build_packages
from bridge.registry.resources import CRID_SYSTEM
from bridge.registry.submit import enqueue_packages, submit_pending, with_crid
from bridge.registry.transport import RegistryClient, crid_from
from bridge.state import DEFAULT_LEASE_SECONDS
from bridge.state.outbox import WITHDRAWN, owner_gone
from bridge.state.postgres_outbox import PostgresOutbox
from bridge.state.sqlite_outbox import SqliteOutbox as Outbox
from tests.unit.test_registry_fixtures import CENTRE, CONTEXT, assessment, patient_doc, records

Json = dict[str, Any]
BASE = "https://registry.example/fhir"
TOKEN_URL = "https://auth.example/oauth2/token"
BUNDLE_URL = f"{BASE}/Bundle"
CRID_URL = f"{BASE}/Patient/$crid-assignment"
SETTINGS = Settings(registry_url=BASE, registry_token_url=TOKEN_URL, registry_client_id="bridge-site",
                    registry_client_secret="client-secret-xyz", registry_centre=CENTRE, retries=3,
                    retry_total_seconds=60.0)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def outbox(tmp_path: Any, clock: Clock) -> Iterator[Outbox]:
    with Outbox(tmp_path / "state.sqlite3", clock=clock) as box:
        yield box


def open_box(location: str, clock: Clock, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> Any:
    """The outbox at ``location`` on its backend (a SQLite file or a PostgreSQL URL), with the test's clock."""
    if location.startswith("postgresql://"):
        return PostgresOutbox(location, clock=clock, lease_seconds=lease_seconds)
    return Outbox(location, clock=clock, lease_seconds=lease_seconds)


@pytest.fixture
def any_outbox(state_location: str, clock: Clock) -> Iterator[Any]:
    """An outbox on each backend (SQLite file, PostgreSQL schema): the store tests below run on both."""
    with open_box(state_location, clock) as box:
        yield box


def client(clock: Clock, settings: Settings = SETTINGS) -> RegistryClient:
    return RegistryClient(settings, sleep=clock.sleep, clock=clock, wall_clock=clock)


def queued(outbox: Outbox, kinds: tuple[str, ...] = ("infusion", "day100")) -> list[Any]:
    built = build_packages(assessment(), records(), CONTEXT, kinds)
    enqueue_packages(outbox, built.packages)
    return built.packages


def submit_one(outbox: Outbox, clock: Clock) -> None:
    """One infusion package sent to a registry that answers the token, the CRID and the Bundle."""
    queued(outbox, ("infusion",))
    responses.add(token_reply())
    responses.add(crid_reply())
    responses.add(created(1))
    with client(clock) as c:
        submit_pending(outbox, c, CENTRE)


def token_reply(token: str = "tok-1", expires_in: int = 3600) -> responses.Response:  # noqa: S107 - fake token
    return responses.Response("POST", TOKEN_URL, json={"access_token": token, "token_type": "Bearer",
                                                       "expires_in": expires_in})


def created(n: int) -> responses.Response:
    return responses.Response("POST", BUNDLE_URL, status=201, headers={"Location": f"{BASE}/Bundle/r{n}/_history/1"},
                              json={"resourceType": "OperationOutcome", "id": f"r{n}",
                                    "issue": [{"severity": "information", "code": "informational"}]})


def crid_reply(value: str = "CRID-0042") -> responses.Response:
    return responses.Response("POST", CRID_URL, json={"resourceType": "Parameters", "parameter": [
        {"name": "identifier", "valueIdentifier": {"system": "http://cibmtr.org/crid", "value": value}}]})


def posted(url: str) -> list[Any]:
    return [c for c in responses.calls if c.request.url == url]


# ---------------------------------------------------------------------------------------------- happy path


@responses.activate
def test_success_stores_the_receipt(outbox: Outbox, clock: Clock) -> None:
    packages = queued(outbox)
    responses.add(token_reply())
    responses.add(crid_reply())
    responses.add(created(1))
    responses.add(created(2))
    with client(clock) as c:
        report = submit_pending(outbox, c, CENTRE)
    assert report.sent == [p.id for p in packages] and report.failed == [] and report.stopped is None
    rows = outbox.rows()
    assert [r.state for r in rows] == ["sent", "sent"]
    assert rows[0].receipt is not None and rows[0].receipt["id"] == "r1" and rows[0].receipt["status"] == 201
    assert rows[0].receipt["location"] == f"{BASE}/Bundle/r1/_history/1"
    assert rows[0].sent_at == "2027-01-15T08:00:00Z"
    sent = posted(BUNDLE_URL)
    assert [c.request.headers["Idempotency-Key"] for c in sent] == [p.key for p in packages]
    assert all(c.request.headers["Authorization"] == "Bearer tok-1" for c in sent)
    assert len(posted(TOKEN_URL)) == 1 and len(posted(CRID_URL)) == 1  # token and CRID cached
    body = json.loads(sent[0].request.body)
    patient = body["entry"][0]["resource"]
    assert {"system": CRID_SYSTEM, "value": "CRID-0042"} in patient["identifier"]
    assert outbox.crid(packages[0].pseudonym) == "CRID-0042"


@responses.activate
def test_secrets_go_only_to_their_own_origin(outbox: Outbox, clock: Clock) -> None:
    submit_one(outbox, clock)
    (token_call,) = posted(TOKEN_URL)
    assert token_call.request.headers["Authorization"] == "Basic " + base64.b64encode(
        b"bridge-site:client-secret-xyz").decode()
    assert parse_qs(token_call.request.body) == {"grant_type": ["client_credentials"]}
    for call in responses.calls:
        if call.request.url != TOKEN_URL:
            assert call.request.headers["Authorization"] == "Bearer tok-1"
            assert b"client-secret-xyz" not in (call.request.body or b"")


@responses.activate
def test_crid_request_is_de_identified(outbox: Outbox, clock: Clock) -> None:
    submit_one(outbox, clock)
    params = json.loads(posted(CRID_URL)[0].request.body)
    assert params["parameter"][1] == {"name": "ccn", "valueString": "10701"}
    patient = params["parameter"][0]["resource"]
    assert set(patient) == {"resourceType", "id", "meta", "identifier", "gender", "birthDate", "deceasedBoolean",
                            "address"}


# ---------------------------------------------------------------------------------------------- failures


@responses.activate
def test_401_fetches_a_new_token_and_retries_once(outbox: Outbox, clock: Clock) -> None:
    queued(outbox, ("infusion",))
    responses.add(token_reply("tok-old"))
    responses.add(token_reply("tok-new"))
    responses.add(responses.Response("POST", BUNDLE_URL, status=401))
    responses.add(created(1))
    with client(clock) as c:
        report = submit_pending(outbox, c, CENTRE, use_crid=False)
    assert len(report.sent) == 1
    assert [c.request.headers["Authorization"] for c in posted(BUNDLE_URL)] == ["Bearer tok-old", "Bearer tok-new"]
    assert len(posted(TOKEN_URL)) == 2


@responses.activate
def test_401_twice_stops_the_run_and_keeps_the_package(outbox: Outbox, clock: Clock) -> None:
    queued(outbox, ("infusion",))
    responses.add(token_reply("a"))
    responses.add(token_reply("b"))
    responses.add(responses.Response("POST", BUNDLE_URL, status=401))
    responses.add(responses.Response("POST", BUNDLE_URL, status=401))
    with client(clock) as c:
        report = submit_pending(outbox, c, CENTRE, use_crid=False)
    assert report.stopped == "POST /fhir/Bundle: 401 not authorised"
    (row,) = outbox.rows()
    assert (row.state, row.last_status, row.attempts) == ("pending", 401, 1)


@responses.activate
def test_503_is_retried_after_the_asked_delay(outbox: Outbox, clock: Clock) -> None:
    queued(outbox, ("infusion",))
    responses.add(token_reply())
    responses.add(responses.Response("POST", BUNDLE_URL, status=503, headers={"Retry-After": "7"}))
    responses.add(responses.Response("POST", BUNDLE_URL, status=503))
    responses.add(created(1))
    with client(clock) as c:
        report = submit_pending(outbox, c, CENTRE, use_crid=False)
    assert len(report.sent) == 1 and clock.slept == [7.0, 1.0]
    keys = {c.request.headers["Idempotency-Key"] for c in posted(BUNDLE_URL)}
    assert len(keys) == 1  # the same key on every retry


@responses.activate
def test_connection_errors_are_retried(outbox: Outbox, clock: Clock) -> None:
    queued(outbox, ("infusion",))
    responses.add(token_reply())
    responses.add(responses.Response("POST", BUNDLE_URL, body=requests.ConnectionError("reset")))
    responses.add(created(1))
    with client(clock) as c:
        assert len(submit_pending(outbox, c, CENTRE, use_crid=False).sent) == 1
    assert clock.slept == [0.5]


@responses.activate
def test_retries_exhausted_leave_it_pending_and_stop(outbox: Outbox, clock: Clock) -> None:
    queued(outbox)
    responses.add(token_reply())
    for _ in range(4):
        responses.add(responses.Response("POST", BUNDLE_URL, status=503))
    with client(clock) as c:
        report = submit_pending(outbox, c, CENTRE, use_crid=False)
    assert report.stopped == "POST /fhir/Bundle: 503 after 4 attempt(s), giving up"
    assert clock.slept == [0.5, 1.0, 2.0]
    assert [r.state for r in outbox.rows()] == ["pending", "pending"]
    assert len(posted(BUNDLE_URL)) == 4  # the second package was not tried


@responses.activate
def test_409_means_already_received(outbox: Outbox, clock: Clock) -> None:
    queued(outbox, ("infusion",))
    responses.add(token_reply())
    responses.add(responses.Response("POST", BUNDLE_URL, status=409, json={
        "resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "duplicate"}]}))
    with client(clock) as c:
        report = submit_pending(outbox, c, CENTRE, use_crid=False)
    assert report.sent == [] and len(report.duplicates) == 1
    (row,) = outbox.rows()
    assert row.state == "sent" and row.receipt is not None and row.receipt["duplicate"] is True
    assert row.receipt["status"] == 409


@responses.activate
def test_a_rejected_package_fails_and_the_run_goes_on(outbox: Outbox, clock: Clock) -> None:
    packages = queued(outbox)
    responses.add(token_reply())
    responses.add(responses.Response("POST", BUNDLE_URL, status=422, json={
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "invalid", "expression": ["Bundle.entry[2]"]}]}))
    responses.add(created(2))
    with client(clock) as c:
        report = submit_pending(outbox, c, CENTRE, use_crid=False)
    assert report.failed == [(packages[0].id, "POST /fhir/Bundle: 422 rejected with 1 issue(s)")]
    assert report.sent == [packages[1].id]
    assert [r.state for r in outbox.rows()] == ["failed", "sent"]
    assert outbox.requeue_failed() == 1 and outbox.counts()["pending"] == 1


@responses.activate
def test_token_endpoint_refusal_is_an_auth_error(outbox: Outbox, clock: Clock) -> None:
    queued(outbox, ("infusion",))
    responses.add(responses.Response("POST", TOKEN_URL, status=401, json={"error": "invalid_client",
                                                                          "error_description": "bad secret xyz"}))
    with client(clock) as c:
        report = submit_pending(outbox, c, CENTRE, use_crid=False)
    assert report.stopped == "registry token endpoint refused us: 401 (invalid_client)"
    assert outbox.rows()[0].state == "pending" and posted(BUNDLE_URL) == []


@responses.activate
def test_token_is_refreshed_before_it_expires(outbox: Outbox, clock: Clock) -> None:
    responses.add(token_reply("first", expires_in=300))
    responses.add(token_reply("second", expires_in=300))
    with client(clock) as c:
        assert c.tokens.token() == "first"
        clock.now += 239
        assert c.tokens.token() == "first"
        clock.now += 1  # 60 s before expiry
        assert c.tokens.token() == "second"


@responses.activate
def test_password_grant(clock: Clock) -> None:
    settings = Settings(registry_url=BASE, registry_token_url=TOKEN_URL, registry_client_id="public-app",
                        registry_username="site-user", registry_password="pw-123", registry_scope="submit")
    responses.add(token_reply())
    with client(clock, settings) as c:
        assert c.tokens.token() == "tok-1"
    (call,) = responses.calls
    assert "Authorization" not in call.request.headers
    assert parse_qs(call.request.body) == {"grant_type": ["password"], "username": ["site-user"],
                                           "password": ["pw-123"], "scope": ["submit"], "client_id": ["public-app"]}


# ---------------------------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(("changes", "message"), [
    ({"registry_url": None}, "registry_url is not configured"),
    ({"registry_url": "http://registry.example/fhir"}, "registry_url must use https"),
    ({"registry_token_url": "ftp://auth.example/token"}, "registry_token_url must be an http(s) URL"),
    ({"registry_client_secret": None}, "registry_client_id and registry_client_secret are needed"),
    ({"registry_username": "u"}, "registry_username is set but registry_password is not"),
])
def test_configuration_errors(changes: Json, message: str) -> None:
    settings = Settings(**{**SETTINGS.__dict__, **changes})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RegistryClient(settings)


def test_loopback_may_use_http() -> None:
    settings = Settings(**{**SETTINGS.__dict__, "registry_url": "http://127.0.0.1:8080/fhir",
                           "registry_token_url": "http://localhost:8080/token"})
    RegistryClient(settings).close()


@pytest.mark.parametrize("path", ["https://evil.example/crid", "//evil.example/x", "/abs/path", "../up"])
def test_paths_cannot_leave_the_registry_origin(path: str) -> None:
    with RegistryClient(SETTINGS) as c, pytest.raises(ConfigError):
        c.url(path)


@responses.activate
def test_redirects_are_not_followed(outbox: Outbox, clock: Clock) -> None:
    queued(outbox, ("infusion",))
    responses.add(token_reply())
    responses.add(responses.Response("POST", BUNDLE_URL, status=307, headers={"Location": "https://evil.example/"}))
    with client(clock) as c:
        report = submit_pending(outbox, c, CENTRE, use_crid=False)
    assert report.stopped is not None and "redirect not followed" in report.stopped
    assert all("evil.example" not in str(call.request.url) for call in responses.calls)


# ---------------------------------------------------------------------------------------------- outbox


def test_enqueue_is_idempotent_and_a_new_version_supersedes(any_outbox: Any) -> None:
    outbox = any_outbox
    built = build_packages(assessment(), records(), CONTEXT, ("infusion",))
    assert enqueue_packages(outbox, built.packages) == (1, 0)
    assert enqueue_packages(outbox, built.packages) == (0, 1)
    newer = build_packages(assessment(patient_doc(weightKg=60.0)), records(), CONTEXT, ("infusion",))
    assert enqueue_packages(outbox, newer.packages) == (1, 0)
    assert [r.state for r in outbox.rows()] == ["superseded", "pending"]


def test_a_claim_is_leased(state_location: str, clock: Clock) -> None:
    path = state_location
    with open_box(path, clock, lease_seconds=300) as first, open_box(path, clock) as second:
        queued(first, ("infusion",))
        second.owner = f"{second.host}:1"  # pid 1 is alive: a live owner on this host
        first.owner = second.owner
        assert first.claim() is not None
        assert second.claim() is None  # leased by a live process
        clock.now += 301
        row = second.claim()
        assert row is not None and row.attempts == 2 and row.body is not None


def test_a_claim_of_a_dead_process_is_taken_over(state_location: str, clock: Clock) -> None:
    with open_box(state_location, clock) as box:
        queued(box, ("infusion",))
        box.owner = f"{box.host}:999999999"  # no such process
        assert box.claim() is not None
        box.owner = f"{box.host}:1"
        assert box.claim() is not None


def test_owner_gone() -> None:
    assert owner_gone(None, "h") and owner_gone("h:999999999", "h")
    assert not owner_gone("h:1", "h") and not owner_gone("other:999999999", "h")


def test_status_rows_and_counts(any_outbox: Any) -> None:
    outbox = any_outbox
    queued(outbox)
    row = outbox.claim()
    assert row is not None
    outbox.mark_sent(row.key, 201, {"id": "r1"})
    assert outbox.counts() == {"pending": 1, "sending": 0, "sent": 1, "failed": 0, "superseded": 0, "withdrawn": 0}
    (sent,) = outbox.rows(("sent",))
    assert sent.as_json()["receipt"] == {"id": "r1"} and sent.as_json()["state"] == "sent"


def _bodies(outbox: Any) -> dict[str, str]:
    sql = "SELECT state || ':' || key AS k, body FROM registry_outbox"
    if isinstance(outbox, PostgresOutbox):
        with outbox._db.read("test: bodies") as cur:
            return {r["k"]: r["body"] for r in cur.execute(sql).fetchall()}
    return dict(outbox._db.connection().execute(sql).fetchall())


def test_withdrawn_packages_are_never_sent_nor_kept_and_come_back_with_consent(any_outbox: Any) -> None:
    outbox = any_outbox
    infusion, day100 = queued(outbox)
    row = outbox.claim()
    assert row is not None and row.package_id == infusion.id
    outbox.mark_sent(row.key, 201, {"id": "r1"})
    assert outbox.withdraw_except({infusion.id}) == 1  # day100 is no longer in the export
    assert outbox.counts() == {"pending": 0, "sending": 0, "sent": 1, "failed": 0, "superseded": 0, "withdrawn": 1}
    (gone,) = outbox.rows(("withdrawn",))
    assert gone.package_id == day100.id and gone.last_error == WITHDRAWN
    assert _bodies(outbox)[f"withdrawn:{day100.key}"] == "{}"  # its content is not kept
    assert outbox.claim() is None
    assert outbox.requeue_failed() == 0 and outbox.claim() is None
    assert outbox.withdraw_except(set()) == 0  # a sent package is not recalled
    assert enqueue_packages(outbox, [day100]) == (1, 0)  # consent given again: the same package
    again = outbox.claim()
    assert again is not None and again.key == day100.key and again.body == day100.bundle


def test_withdrawal_spares_a_live_send_and_empties_superseded_versions(state_location: str, clock: Clock) -> None:
    with open_box(state_location, clock, lease_seconds=300) as box:
        old = queued(box)
        newer = build_packages(assessment(patient_doc(weightKg=60.0)), records(), CONTEXT, ("infusion", "day100"))
        enqueue_packages(box, newer.packages)
        box.owner = f"{box.host}:1"  # pid 1 is alive
        sending = box.claim()
        assert sending is not None and sending.key == newer.packages[0].key
        assert box.withdraw_except(set()) == 1  # the pending day100; the live send is left alone
        bodies = _bodies(box)
        assert all(bodies[f"superseded:{p.key}"] == "{}" for p in old)
        assert f"sending:{sending.key}" in bodies and bodies[f"withdrawn:{newer.packages[1].key}"] == "{}"
        clock.now += 301  # the sender's lease ran out: it would be claimed again, so it is withdrawn now
        assert box.withdraw_except(set()) == 1 and box.claim() is None


def test_an_outbox_from_before_withdrawal_is_migrated(tmp_path: Any, clock: Clock) -> None:
    import sqlite3

    from tests.unit.test_state_migrations import OUTBOX_DDL_336FDFB  # the outbox's DDL before 'withdrawn'

    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(OUTBOX_DDL_336FDFB)
    with Outbox(":memory:", clock=clock) as scratch:
        (package, _) = queued(scratch)
    old.execute("INSERT INTO registry_outbox (key, package_id, timepoint, pseudonym, body, state, enqueued_at, "
                "updated_at) VALUES (?, ?, ?, ?, '{}', 'pending', 'x', 'x')",
                (package.key, package.id, package.timepoint, package.pseudonym))
    old.commit()
    old.close()
    with Outbox(path, clock=clock) as box:
        assert box.counts()["pending"] == 1
        assert box.withdraw_except(set()) == 1 and box.counts()["withdrawn"] == 1
        names = {n for (n,) in box._db.connection().execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"registry_outbox_state", "registry_outbox_package"} <= names


# ---------------------------------------------------------------------------------------------- helpers


def test_with_crid_is_idempotent() -> None:
    bundle = build_packages(assessment(), records(), CONTEXT, ("infusion",)).packages[0].bundle
    once = with_crid(bundle, "C1")
    assert with_crid(once, "C1") == once
    assert "C1" not in json.dumps(bundle)
    subject = once["entry"][1]["resource"]
    assert subject["identifier"][-1] == {"system": CRID_SYSTEM, "value": "C1"}


@pytest.mark.parametrize(("body", "crid"), [
    ({"resourceType": "Parameters", "parameter": [{"name": "identifier", "valueIdentifier": {"value": "A-1"}}]},
     "A-1"),
    ({"resourceType": "Patient", "identifier": [{"system": "x", "value": "P.2"}]}, "P.2"),
    ({"resourceType": "Parameters", "parameter": [{"name": "identifier", "valueIdentifier": {"value": "a b"}}]},
     None),
    ({"resourceType": "OperationOutcome"}, None), ([], None),
])
def test_crid_from(body: Any, crid: str | None) -> None:
    assert crid_from(body) == crid


@responses.activate
def test_logs_carry_no_token_secret_or_patient_data(outbox: Outbox, clock: Clock,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    queued(outbox)
    responses.add(token_reply("tok-very-secret"))
    responses.add(responses.Response("POST", CRID_URL, status=401))
    responses.add(token_reply("tok-very-secret-2"))
    responses.add(crid_reply())
    responses.add(responses.Response("POST", BUNDLE_URL, status=503))
    responses.add(created(1))
    responses.add(created(2))
    with client(clock) as c:
        assert len(submit_pending(outbox, c, CENTRE).sent) == 2
    text = caplog.text
    assert "POST /fhir/Bundle" in text and "503" in text
    for secret in ("tok-very-secret", "client-secret-xyz", "Zelinskaya", "MRN-778899", "CRID-0042"):
        assert secret not in text


def test_registry_secrets_are_hidden_in_settings() -> None:
    settings = Settings(registry_client_secret="cs-1", registry_password="pw-1", pseudonym_secret="ps-1" * 5)
    shown = settings.redacted()
    assert (shown["registry_client_secret"], shown["registry_password"], shown["pseudonym_secret"]) == (
        "***", "***", "***")
    assert "pw-1" not in repr(settings) and "cs-1" not in repr(settings)
