"""The coordinator page's edges (issue #14 item 7): server-side sessions, sign-out with a CSRF token that ends the
session on the server (a copied cookie stops working), per-client throttling of failed sign-ins (429 with
Retry-After), and cookies or query values that do not fit their declared shapes (never a 500)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bridge.config import Settings
from bridge.report import coordinator
from bridge.service.app import install_error_handlers
from bridge.service.ui import COOKIE, FREE_FAILURES, LoginThrottle, MemoryUiSessions, Sessions, ui_router

TOKEN = "ui-edge-token-0123456789abcdefghijklmnop"
NOW = 1_781_500_000.0
FORM = {"content-type": "application/x-www-form-urlencoded"}


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def _app(clock: Clock, token: str | None = TOKEN) -> FastAPI:
    rows = [coordinator.screening_view("Patient/p1", "candidate", {}, "2026-06-15", NOW - 5, "rules-x")]
    app = FastAPI()
    install_error_handlers(app)  # as the service has them: a request that fails its declaration is a 400
    app.include_router(ui_router(Settings(api_token=token), coordinator.MemoryData(rows, {}), clock=clock))
    return app


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def client(clock: Clock) -> TestClient:
    return TestClient(_app(clock), follow_redirects=False)


def _login(client: TestClient, token: str = TOKEN) -> Any:
    return client.post("/ui/login", content=f"token={token}", headers=FORM)


def _csrf(page: str) -> str:
    found = re.search(r'<input type="hidden" name="csrf" value="([^"]+)">', page)
    assert found is not None, "the signed-in page has no sign-out form with a CSRF token"
    return found.group(1)


def _logout(client: TestClient, csrf: str | None) -> Any:
    return client.post("/ui/logout", content="" if csrf is None else f"csrf={csrf}", headers=FORM)


# ------------------------------------------------------------------------------------------ sessions


def test_the_cookie_is_a_random_session_id_not_a_signature(client: TestClient) -> None:
    first = _login(client).cookies[COOKIE]
    second = _login(TestClient(client.app, follow_redirects=False)).cookies[COOKIE]
    assert first != second and re.fullmatch(r"[A-Za-z0-9_-]{43}", first) and TOKEN not in first


def test_sign_out_ends_the_session_on_the_server(client: TestClient) -> None:
    _login(client)
    cookie = client.cookies[COOKIE]
    page = client.get("/ui")
    assert page.status_code == 200
    out = _logout(client, _csrf(page.text))
    assert (out.status_code, out.headers["location"]) == (303, "/ui/login") and "Max-Age=0" in out.headers["set-cookie"]
    copied = TestClient(client.app, follow_redirects=False)
    copied.cookies.set(COOKIE, cookie, path="/ui")  # the cookie copied before sign-out
    answer = copied.get("/ui")
    assert (answer.status_code, answer.headers["location"]) == (303, "/ui/login")


@pytest.mark.parametrize("csrf", [None, "", "wrong", "A" * 43])
def test_sign_out_without_the_sessions_csrf_token_changes_nothing(client: TestClient, csrf: str | None) -> None:
    _login(client)
    refused = _logout(client, csrf)
    assert refused.status_code == 403 and "set-cookie" not in refused.headers
    assert client.get("/ui").status_code == 200  # still signed in


def test_another_sessions_csrf_token_does_not_sign_this_one_out(client: TestClient) -> None:
    other = TestClient(client.app, follow_redirects=False)
    _login(other)
    _login(client)
    assert _logout(client, _csrf(other.get("/ui").text)).status_code == 403
    assert client.get("/ui").status_code == 200


def test_bearer_clients_get_no_sign_out_form(client: TestClient) -> None:
    page = client.get("/ui", headers={"authorization": f"Bearer {TOKEN}"})
    assert page.status_code == 200 and 'name="csrf"' not in page.text


def test_sessions_are_bounded_and_expire() -> None:
    clock = Clock()
    sessions = Sessions(MemoryUiSessions(limit=2), clock, max_age=100)
    a, _ = sessions.open("ana", "coordinator")
    b, _ = sessions.open("ana", "coordinator")
    c, opened = sessions.open("ivo", "investigator")
    assert sessions.find(a) is None and sessions.find(b) is not None and sessions.find(c) == opened
    assert (opened.user, opened.role, opened.expires_at) == ("ivo", "investigator", NOW + 100)
    clock.now += 101
    assert sessions.find(b) is None
    assert sessions.find(None) is None and sessions.find("\xb2.abc") is None


# ------------------------------------------------------------------------------------------ declared inputs


@pytest.mark.parametrize("cookie", ["\xb2.abc", "1.abc", "²", "x" * 43, "1700000000.deadbeef"])
def test_a_cookie_that_is_no_session_sends_the_visitor_to_sign_in(client: TestClient, cookie: str) -> None:
    for path in ("/ui", "/ui/patients/p1"):
        answer = client.get(path, headers={"cookie": f"{COOKIE}={cookie}".encode("latin-1")})
        assert (answer.status_code, answer.headers["location"]) == (303, "/ui/login")
    out = client.post("/ui/logout", headers={"cookie": f"{COOKIE}={cookie}".encode("latin-1"), **FORM})
    assert out.status_code == 303


def test_query_values_are_declared(client: TestClient) -> None:
    _login(client)
    assert client.get("/ui", params={"status": "candidate"}).status_code == 200
    assert client.get("/ui", params={"status": "²"}).status_code == 200  # an unknown status shows everyone
    too_long = client.get("/ui", params={"status": "x" * 41})
    assert too_long.status_code == 400 and too_long.json()["issue"][0]["expression"] == ["status"]


@pytest.mark.parametrize("body", [b"token=" + b"x" * 17000, b"a=1&b=2&c=3&d=4&e=5&f=6&g=7&h=8&token=" + TOKEN.encode(),
                                  b"\xff\xfe"])
def test_odd_sign_in_forms_are_refused_not_crashed(client: TestClient, body: bytes) -> None:
    assert client.post("/ui/login", content=body, headers=FORM).status_code == 401


# ------------------------------------------------------------------------------------------ throttling


def test_failed_sign_ins_are_throttled_per_client(client: TestClient, clock: Clock) -> None:
    for _ in range(FREE_FAILURES):
        assert _login(client, "wrong").status_code == 401
    assert _login(client, "wrong").status_code == 401  # the first failure past the free ones: wait 1 s
    throttled = _login(client)  # even the right token waits
    assert throttled.status_code == 429 and throttled.headers["retry-after"] == "1"
    assert client.get("/ui", headers={"authorization": "Bearer wrong"}).status_code == 429
    clock.now += 1.01
    assert _login(client, "wrong").status_code == 401  # wait 2 s now
    assert _login(client).headers["retry-after"] == "2"
    clock.now += 2.01
    assert _login(client).status_code == 303  # success forgets the failures
    assert _login(TestClient(client.app, follow_redirects=False), "wrong").status_code == 401


def test_wrong_bearer_tokens_count_as_failed_sign_ins(client: TestClient) -> None:
    for _ in range(FREE_FAILURES + 1):
        assert client.get("/ui", headers={"authorization": "Bearer wrong"}).status_code == 303
    assert client.get("/ui", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 429


def test_the_wait_doubles_up_to_the_cap_and_clients_are_bounded() -> None:
    clock = Clock()
    throttle = LoginThrottle(MemoryUiSessions(limit=2), clock, free=0, cap=8)
    waits = []
    for _ in range(6):
        throttle.failed("a")
        waits.append(throttle.retry_after("a"))
    assert waits == [1, 2, 4, 8, 8, 8]
    throttle.failed("b")
    throttle.failed("c")
    assert throttle.retry_after("a") == 0  # forgotten: at most two clients are remembered
    throttle.succeeded("c")
    assert throttle.retry_after("c") == 0 and throttle.retry_after("b") == 1


def test_200_wrong_tries_get_through_only_a_handful(client: TestClient) -> None:
    codes = [_login(client, f"guess-{i}").status_code for i in range(200)]
    assert codes.count(401) == FREE_FAILURES + 1 and codes.count(429) == 200 - FREE_FAILURES - 1
