"""The one HTTP transport (``bridge.http``) against a faked network (``responses``): timeouts, retries with
Retry-After inside the budget, the idempotency rule, the origin guard, re-authentication on 401 — and that the
FHIR, bulk and registry clients all stand on it with one token cache."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from cryptography.hazmat.primitives.asymmetric import ec
from responses import matchers

from bridge.auth import (
    BearerAuth,
    CachedTokenSource,
    NoAuth,
    OAuth2Auth,
    SmartBackendAuth,
    TokenCache,
    parse_token_response,
)
from bridge.client import FhirClient
from bridge.config import Settings
from bridge.errors import AuthError, ConfigError, ForeignHost, TransportError
from bridge.http import Limits, Transport, is_idempotent, path_label, retry_delay
from bridge.ingest.bulk_client import BulkExporter
from bridge.registry.transport import RegistryClient, registry_tokens

BASE = "https://ehr.example.org/fhir"
OTHER = "https://files.example.net/bucket/o1.ndjson"
NOW_EPOCH = 1773476813.0  # 2026-03-14T09:26:53+01:00: a fixed, non-UTC "now" for HTTP-date Retry-After


class FakeTime:
    """A monotonic clock that only moves when the transport sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Tokens:
    """A token source that hands out tok-1, tok-2, ... and counts invalidations."""

    def __init__(self, refreshable: bool = True) -> None:
        self.refreshable = refreshable
        self.issued = 0
        self.current: str | None = None
        self.invalidated = 0

    def headers(self) -> dict[str, str]:
        if self.current is None:
            self.issued += 1
            self.current = f"tok-{self.issued}"
        return {"Authorization": f"Bearer {self.current}"}

    def invalidate(self) -> None:
        self.invalidated += 1
        self.current = None


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


def transport(fake: FakeTime, tokens: Any = None, session: requests.Session | None = None, **limits: Any) -> Transport:
    return Transport(BASE, Limits(**{"retries": 3, "total_seconds": 60.0, **limits}), session=session,
                     tokens=tokens, sleep=fake.sleep, clock=fake.clock, wall_clock=lambda: NOW_EPOCH)


def auth_of(call: Any) -> str | None:
    return call.request.headers.get("Authorization")


# ---------------------------------------------------------------- timeouts


def test_every_request_and_every_send_has_both_timeouts_and_follows_no_redirect(fake: FakeTime) -> None:
    seen: list[dict[str, Any]] = []

    class Recording(requests.Session):
        def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
            seen.append(kwargs)
            return super().request(method, url, *args, **kwargs)

    http = transport(fake, session=Recording(), connect=2.5, read=17.0)
    with responses.RequestsMock() as mock:
        mock.get(f"{BASE}/Patient/p1")
        mock.get(OTHER)
        mock.post("https://auth.example.org/token", json={})
        http.request("GET", f"{BASE}/Patient/p1")
        http.send("GET", OTHER)
        http.plain("POST", "https://auth.example.org/token", data={"grant_type": "client_credentials"})
    assert [(k["timeout"], k["allow_redirects"]) for k in seen] == [((2.5, 17.0), False)] * 3


def test_limits_come_from_the_settings() -> None:
    settings = Settings(timeout_connect=1.5, timeout_read=9.0, retries=2, retry_total_seconds=12.0)
    assert Limits.from_settings(settings) == Limits(1.5, 9.0, 2, 12.0)


# ---------------------------------------------------------------- retries and Retry-After


def test_retry_after_seconds_then_http_date_then_backoff(rsps: responses.RequestsMock, fake: FakeTime) -> None:
    rsps.get(f"{BASE}/x", status=429, headers={"Retry-After": "7"})
    rsps.get(f"{BASE}/x", status=503, headers={"Retry-After": "Sat, 14 Mar 2026 08:27:05 GMT"})  # now + 12 s
    rsps.get(f"{BASE}/x", status=502)  # no Retry-After: backoff 0.5 * 2**2
    rsps.get(f"{BASE}/x", status=200)
    assert transport(fake).request("GET", f"{BASE}/x").status_code == 200
    assert fake.sleeps == [7.0, 12.0, 2.0]


def test_the_time_budget_stops_retries_before_a_wait_that_would_pass_it(rsps: responses.RequestsMock,
                                                                       fake: FakeTime) -> None:
    rsps.get(f"{BASE}/x", status=503, headers={"Retry-After": "8"})
    with pytest.raises(TransportError) as info:
        transport(fake, retries=10, total_seconds=20.0).request("GET", f"{BASE}/x")
    assert fake.sleeps == [8.0, 8.0] and len(rsps.calls) == 3
    assert (info.value.status, info.value.message) == (503, "GET x: 503 after 3 attempt(s), giving up")


def test_a_404_is_the_caller_s_answer_not_a_retry(rsps: responses.RequestsMock, fake: FakeTime) -> None:
    rsps.get(f"{BASE}/x", status=404)
    assert transport(fake).request("GET", f"{BASE}/x").status_code == 404
    assert len(rsps.calls) == 1 and fake.sleeps == []


def test_an_error_that_is_no_connection_problem_is_not_retried(rsps: responses.RequestsMock, fake: FakeTime) -> None:
    rsps.get(f"{BASE}/x", body=requests.exceptions.InvalidHeader("bad header"))
    with pytest.raises(TransportError, match="GET x: InvalidHeader"):
        transport(fake).request("GET", f"{BASE}/x")
    assert len(rsps.calls) == 1


@pytest.mark.parametrize(("status", "after"), [(503, None), (429, "3")])
def test_retry_delay(status: int, after: str | None) -> None:
    resp = requests.Response()
    resp.status_code = status
    if after:
        resp.headers["Retry-After"] = after
    assert retry_delay(resp, 0, NOW_EPOCH) == (3.0 if after else 0.5)
    assert retry_delay(requests.ConnectionError(), 10, NOW_EPOCH) == 30.0  # the cap


# ---------------------------------------------------------------- the idempotency rule


@pytest.mark.parametrize(("method", "headers", "expected"), [
    ("GET", {}, True), ("head", {}, True), ("PUT", {}, True), ("DELETE", {}, True), ("OPTIONS", {}, True),
    ("POST", {}, False), ("PATCH", {}, False),
    ("POST", {"Idempotency-Key": "abc"}, True), ("POST", {"if-none-exist": "identifier=a|b"}, True),
    ("POST", {"Idempotency-Key": ""}, False), ("PATCH", {"Idempotency-Key": "abc"}, False),
])
def test_is_idempotent(method: str, headers: dict[str, str], expected: bool) -> None:
    assert is_idempotent(method, headers) is expected


def test_a_plain_post_is_not_resent_after_a_reset_nor_a_502(rsps: responses.RequestsMock, fake: FakeTime) -> None:
    rsps.post(f"{BASE}/a", body=requests.ConnectionError("reset"))
    rsps.post(f"{BASE}/b", status=502)
    http = transport(fake)
    with pytest.raises(TransportError):
        http.request("POST", f"{BASE}/a", data=b"{}")
    assert http.request("POST", f"{BASE}/b", data=b"{}").status_code == 502
    assert len(rsps.calls) == 2 and fake.sleeps == []


def test_a_plain_post_is_resent_when_the_server_cannot_have_acted(rsps: responses.RequestsMock,
                                                                  fake: FakeTime) -> None:
    rsps.post(f"{BASE}/a", status=429)
    rsps.post(f"{BASE}/a", body=requests.ConnectTimeout("no route"))
    rsps.post(f"{BASE}/a", status=503)
    rsps.post(f"{BASE}/a", status=201)
    assert transport(fake).request("POST", f"{BASE}/a", data=b"{}").status_code == 201
    assert len(rsps.calls) == 4


@pytest.mark.parametrize("header", ["Idempotency-Key", "If-None-Exist"])
def test_a_post_with_a_key_or_if_none_exist_is_resent_after_a_reset(rsps: responses.RequestsMock, fake: FakeTime,
                                                                    header: str) -> None:
    rsps.post(f"{BASE}/a", body=requests.ConnectionError("reset"))
    rsps.post(f"{BASE}/a", status=502)
    rsps.post(f"{BASE}/a", status=201, match=[matchers.header_matcher({header: "k-1"})])
    assert transport(fake).request("POST", f"{BASE}/a", headers={header: "k-1"}).status_code == 201
    assert len(rsps.calls) == 3


def test_the_caller_may_declare_a_request_idempotent_or_not(rsps: responses.RequestsMock, fake: FakeTime) -> None:
    rsps.post(f"{BASE}/a", body=requests.ConnectionError("reset"))
    rsps.post(f"{BASE}/a", status=200)
    rsps.put(f"{BASE}/b", body=requests.ConnectionError("reset"))
    http = transport(fake)
    assert http.request("POST", f"{BASE}/a", idempotent=True).status_code == 200
    with pytest.raises(TransportError):
        http.request("PUT", f"{BASE}/b", idempotent=False)
    assert len(rsps.calls) == 3


# ---------------------------------------------------------------- the origin guard


@pytest.mark.parametrize("url", [
    "https://evil.example.com/fhir/Patient", "http://ehr.example.org/fhir/Patient",
    "https://ehr.example.org:8443/fhir/Patient", "https://ehr.example.org.evil.com/fhir/Patient",
])
def test_credentials_never_go_to_another_origin(fake: FakeTime, url: str) -> None:
    tokens = Tokens()
    with responses.RequestsMock() as mock, pytest.raises(ForeignHost) as info:
        transport(fake, tokens).request("GET", url + "?identifier=MRN-1")
    assert len(mock.calls) == 0 and tokens.issued == 0
    assert "MRN-1" not in info.value.message and "the configured server" in info.value.message


def test_the_same_origin_spelled_otherwise_is_the_same_origin(rsps: responses.RequestsMock, fake: FakeTime) -> None:
    rsps.get("https://EHR.example.org:443/fhir/Patient")
    transport(fake, Tokens()).request("GET", "https://EHR.example.org:443/fhir/Patient")
    assert auth_of(rsps.calls[0]) == "Bearer tok-1"


def test_send_carries_no_credentials_from_anywhere(rsps: responses.RequestsMock, fake: FakeTime, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine files.example.net login user password netrc-secret\n"
                     "machine ehr.example.org login user password netrc-secret\n", encoding="utf-8")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    session = requests.Session()
    session.headers["Authorization"] = "Bearer from-the-session"
    rsps.get(OTHER)
    rsps.get(f"{BASE}/files/o1")
    http = transport(fake, Tokens(), session=session)
    http.send("GET", OTHER)
    http.send("GET", f"{BASE}/files/o1")
    assert [auth_of(c) for c in rsps.calls] == [None, None]


def test_a_session_auth_never_reaches_another_origin(rsps: responses.RequestsMock, fake: FakeTime) -> None:
    session = requests.Session()
    session.auth = ("someone", "session-secret")
    rsps.get(OTHER)
    rsps.get(f"{BASE}/Patient")
    http = transport(fake, None, session=session)
    http.send("GET", OTHER)
    http.request("GET", f"{BASE}/Patient")
    assert [auth_of(c) for c in rsps.calls] == [None, None]


def test_basic_client_credentials_only_when_given(rsps: responses.RequestsMock, fake: FakeTime) -> None:
    token_url = "https://auth.example.org/token"
    rsps.post(token_url)
    rsps.post(token_url)
    http = transport(fake, Tokens())
    http.plain("POST", token_url, data={"grant_type": "client_credentials"}, basic=("id", "secret"))
    http.plain("POST", token_url, data={"grant_type": "client_credentials"})
    assert str(auth_of(rsps.calls[0])).startswith("Basic ") and auth_of(rsps.calls[1]) is None
    assert rsps.calls[0].request.headers["Accept"] == "application/json"


def test_a_redirect_is_handed_back_not_followed(rsps: responses.RequestsMock, fake: FakeTime) -> None:
    rsps.get(f"{BASE}/Patient", status=307, headers={"Location": "https://evil.example.com/steal"})
    resp = transport(fake, Tokens()).request("GET", f"{BASE}/Patient")
    assert resp.status_code == 307 and len(rsps.calls) == 1


# ---------------------------------------------------------------- re-authentication


def test_a_401_gets_one_fresh_token_and_one_more_try(rsps: responses.RequestsMock, fake: FakeTime) -> None:
    rsps.get(f"{BASE}/x", status=401)
    rsps.get(f"{BASE}/x", status=200)
    tokens = Tokens()
    assert transport(fake, tokens).request("GET", f"{BASE}/x").status_code == 200
    assert [auth_of(c) for c in rsps.calls] == ["Bearer tok-1", "Bearer tok-2"]
    assert tokens.invalidated == 1 and fake.sleeps == []


def test_a_second_401_is_the_caller_s_answer(rsps: responses.RequestsMock, fake: FakeTime) -> None:
    rsps.get(f"{BASE}/x", status=401)
    assert transport(fake, Tokens()).request("GET", f"{BASE}/x").status_code == 401
    assert len(rsps.calls) == 2


def test_a_401_with_a_static_token_or_without_credentials_is_not_retried(rsps: responses.RequestsMock,
                                                                         fake: FakeTime) -> None:
    rsps.get(f"{BASE}/x", status=401)
    transport(fake, Tokens(refreshable=False)).request("GET", f"{BASE}/x")
    transport(fake, None).request("GET", f"{BASE}/x")
    transport(fake, Tokens()).send("GET", f"{BASE}/x")
    assert len(rsps.calls) == 3


def test_a_401_to_a_plain_post_is_retried_once_too(rsps: responses.RequestsMock, fake: FakeTime) -> None:
    """A 401 means the server refused before acting, so even a request that is not idempotent is resent."""
    rsps.post(f"{BASE}/a", status=401)
    rsps.post(f"{BASE}/a", status=201)
    assert transport(fake, Tokens()).request("POST", f"{BASE}/a", data=b"{}").status_code == 201


# ---------------------------------------------------------------- logs and labels


def test_logs_name_method_path_and_status_never_query_or_token(rsps: responses.RequestsMock, fake: FakeTime,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    rsps.get(f"{BASE}/Patient", status=503)
    rsps.get(f"{BASE}/Patient", status=401)
    rsps.get(f"{BASE}/Patient", status=200)
    caplog.set_level(logging.DEBUG, logger="bridge")
    transport(fake, Tokens()).request("GET", f"{BASE}/Patient", params={"identifier": "urn:mrn|SECRET-998877"})
    assert "GET Patient: 503, retry 1 in 0.5 s" in caplog.text and "GET Patient -> 200" in caplog.text
    assert "SECRET-998877" not in caplog.text and "tok-" not in caplog.text
    assert all(r.name == "bridge.http" for r in caplog.records)


def test_labels() -> None:
    http = Transport(BASE)
    assert (http.label(BASE), http.label(f"{BASE}/Patient/p1?x=1"), http.label(OTHER)) == (
        "[base]", "Patient/p1", "bucket/o1.ndjson")
    assert path_label("https://registry.example/fhir/Bundle?x=1") == "/fhir/Bundle"
    assert Transport(BASE, label=path_label).label(f"{BASE}/Bundle") == "/fhir/Bundle"


def test_a_session_handed_in_is_the_caller_s_to_close() -> None:
    class Counting(requests.Session):
        closed = 0

        def close(self) -> None:
            Counting.closed += 1
            super().close()

    with Transport(BASE, session=Counting()):
        pass
    assert Counting.closed == 0


# ---------------------------------------------------------------- every client on the one transport


def test_the_fhir_bulk_and_registry_clients_share_the_transport(tmp_path: Path) -> None:
    fhir = FhirClient(BASE, Settings(ehr_token="t"))
    assert isinstance(fhir.transport, Transport) and fhir.transport.tokens is fhir.auth
    assert isinstance(fhir.auth, BearerAuth) and fhir.http is fhir.transport.session
    assert BulkExporter(fhir, tmp_path).http is fhir.transport
    registry = RegistryClient(Settings(registry_url="https://registry.example/fhir",
                                       registry_token_url="https://auth.example/token",
                                       registry_client_id="c", registry_client_secret="s"))
    assert isinstance(registry.transport, Transport) and registry.transport.tokens is registry.tokens
    assert isinstance(registry.tokens, OAuth2Auth)
    assert isinstance(FhirClient(BASE).auth, NoAuth)


def test_one_token_cache_for_smart_and_oauth2() -> None:
    plain = Transport(BASE).plain
    smart = SmartBackendAuth("c", ec.generate_private_key(ec.SECP384R1()), BASE, plain, alg="ES384")
    oauth = OAuth2Auth("https://auth.example/token", plain, client_id="c", client_secret="s")
    for source in (smart, oauth):
        assert isinstance(source, CachedTokenSource) and source.refreshable
        assert isinstance(source._cache, TokenCache)


def test_token_cache_refreshes_at_most_half_way_and_after_clear() -> None:
    now = [0.0]
    fetched: list[int] = []

    def fetch() -> tuple[str, int]:
        fetched.append(1)
        return f"t{len(fetched)}", 100  # 100 s: refreshed after 50 s (half), not after 40 s (lifetime - margin)

    cache = TokenCache(margin=60.0)
    assert cache.get(lambda: now[0], fetch) == "t1"
    now[0] = 49.0
    assert cache.get(lambda: now[0], fetch) == "t1"
    now[0] = 50.0
    assert cache.get(lambda: now[0], fetch) == "t2"
    cache.clear()
    assert cache.get(lambda: now[0], fetch) == "t3"


@responses.activate
def test_oauth2_token_goes_through_the_transport_with_its_retries() -> None:
    fake = FakeTime()
    http = transport(fake)
    token_url = "https://auth.example/token"
    responses.add(responses.Response("POST", token_url, status=502))
    responses.add(responses.Response("POST", token_url, json={"access_token": "a1", "token_type": "Bearer"}))
    tokens = OAuth2Auth(token_url, http.plain, client_id="c", client_secret="client-secret-xyz", clock=fake.clock)
    assert tokens.headers() == {"Authorization": "Bearer a1"} and fake.sleeps == [0.5]
    assert "client-secret-xyz" not in repr(tokens) and "a1" not in repr(tokens)


def test_registry_tokens_need_complete_credentials() -> None:
    settings = Settings(registry_token_url="https://auth.example/token", registry_client_id="c")
    with pytest.raises(ConfigError, match="registry_client_secret"):
        registry_tokens(settings, Transport(BASE).plain)


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"error": "invalid_client", "error_description": "secret xyz wrong"}, 401, "X refused: 401 (invalid_client)"),
    ({"error": "Not A Code <b>", "access_token": "t"}, 400, "X refused: 400"),
    ({"token_type": "bearer"}, 200, "X answer has no bearer access_token"),
    ({"access_token": "t", "token_type": "mac"}, 200, "X answer has no bearer access_token"),
])
def test_token_answers_that_give_no_token(body: dict[str, Any], status: int, message: str) -> None:
    resp = requests.Response()
    resp.status_code, resp._content = status, json.dumps(body).encode()
    with pytest.raises(AuthError) as info:
        parse_token_response(resp, "X", "refused")
    assert info.value.message == message and "xyz" not in info.value.message


@pytest.mark.parametrize(("expires_in", "lifetime"), [(120, 120), (True, 300), (0, 300), ("600", 300), (None, 300)])
def test_token_lifetime(expires_in: Any, lifetime: int) -> None:
    resp = requests.Response()
    body = {"access_token": "t", "token_type": "Bearer", **({} if expires_in is None else {"expires_in": expires_in})}
    resp.status_code, resp._content = 200, json.dumps(body).encode()
    assert parse_token_response(resp) == ("t", lifetime)
