"""The coordinator page at ``/ui``: the pre-screen queue and one page per patient (issue #7).

Server-rendered HTML (Jinja2, autoescape on), one inline stylesheet, no script at all — it works on a hospital
network without any CDN. Mount it on the service with ``app.include_router(ui_router(settings, store))``.

Authentication (the service's bearer token, ``Settings.api_token``):

- a browser signs in once at ``GET/POST /ui/login`` with the token in a form body (never in a URL). The answer
  sets the cookie ``bridge_ui`` = a random session id (256 bits) that the server keeps in ``Sessions``, with the
  session's issue time and its CSRF token: HttpOnly, SameSite=Strict, Path=/ui, Secure when the request came over
  HTTPS, valid ``SESSION_SECONDS``. The id means nothing without the server's table: no signing secret exists, and
  a restart (e.g. after changing the token) ends every session.
- ``POST /ui/logout`` carries the session's CSRF token (a hidden field of the sign-out form); it deletes the
  session on the server, so a copied cookie no longer works, and clears the cookie. Without the right CSRF token
  it is refused (403) and nothing changes.
- a client may instead send ``Authorization: Bearer <token>`` on every request (no session, no sign-out form).
- failed sign-ins (a wrong form token or bearer token) are throttled per client address (``LoginThrottle``):
  ``FREE_FAILURES`` free, then the client must wait 1, 2, 4 … up to ``MAX_WAIT_SECONDS`` seconds after each
  further failure — 429 with ``Retry-After`` until then, even for the right token. Behind a reverse proxy every
  client shares the proxy's address (and its budget).
- without a configured token the page is disabled (503): there is nothing to check a visitor against.

Inputs are declared: the ``bridge_ui`` cookie must look like a session id (anything else — ``\xb2.abc`` — is no
session: the visitor is sent to sign in), ``?status=`` is a short string (an unknown status shows every
patient), form bodies are capped at ``MAX_FORM_BYTES``.

Every answer carries ``Cache-Control: no-store``, ``Referrer-Policy: no-referrer`` and a CSP that allows only
the page's own stylesheet (by hash), ``data:`` images and form posts to itself. The only patient data in a URL
is a patient's resource id (``/ui/patients/{id}``); the status filter is ``?status=<code>``.

Patients the latest pre-screen did not screen (RULES.md §2: deceased, non-human, no valid Patient resource) are
never listed: the queue says only how many there are, by reason, and their page is a 404 "Not screened".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Cookie, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment

from bridge.config import Settings
from bridge.report import coordinator as view
from bridge.report.render import environment
from bridge.state import Screenings
from bridge.trial import Trial, load_trial

PREFIX = "/ui"
COOKIE = "bridge_ui"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000
MAX_FORM_BYTES = 4096
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)
FREE_FAILURES = 5
MAX_WAIT_SECONDS = 300
MAX_CLIENTS = 10_000
StatusQuery = Annotated[str | None, Query(max_length=40, description="only patients with this overall status")]
SessionCookie = Annotated[str | None, Cookie(description="the session id set by POST /ui/login")]


# ------------------------------------------------------------------ sessions
@dataclass(frozen=True)
class Session:
    issued: float
    csrf: str


class Sessions:
    """Server-side sessions by id (kept hashed), at most ``limit`` (the oldest goes first), each valid ``max_age``
    seconds from sign-in until signed out."""

    def __init__(self, clock: Callable[[], float], max_age: float = SESSION_SECONDS,
                 limit: int = MAX_SESSIONS) -> None:
        self.clock, self.max_age, self.limit = clock, max_age, limit
        self._by_hash: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(session_id: str) -> str:
        return hashlib.sha256(session_id.encode("ascii")).hexdigest()

    def open(self) -> tuple[str, Session]:
        """A new session: (the id for the cookie, the session)."""
        session_id, session = secrets.token_urlsafe(32), Session(self.clock(), secrets.token_urlsafe(32))
        with self._lock:
            self._by_hash[self._key(session_id)] = session
            while len(self._by_hash) > self.limit:
                self._by_hash.popitem(last=False)
        return session_id, session

    def find(self, session_id: str | None) -> Session | None:
        """The live session of a cookie value; None for anything else (malformed, unknown, expired, closed)."""
        if session_id is None or not SESSION_ID.fullmatch(session_id):
            return None
        key, now = self._key(session_id), self.clock()
        with self._lock:
            session = self._by_hash.get(key)
            if session is not None and not session.issued - 60 <= now <= session.issued + self.max_age:
                del self._by_hash[key]
                return None
            return session

    def close(self, session_id: str) -> None:
        with self._lock:
            self._by_hash.pop(self._key(session_id), None)


class LoginThrottle:
    """Failed sign-ins per client: ``free`` failures allowed, then a wait of 1, 2, 4 … ``cap`` seconds after each
    further one. A success forgets the client; at most ``limit`` clients are remembered (the oldest go first)."""

    def __init__(self, clock: Callable[[], float], free: int = FREE_FAILURES, cap: float = MAX_WAIT_SECONDS,
                 limit: int = MAX_CLIENTS) -> None:
        self.clock, self.free, self.cap, self.limit = clock, free, cap, limit
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # client -> (count, blocked until)
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> int:
        """Seconds the client must still wait before its next try (0: it may try now)."""
        with self._lock:
            _, until = self._failures.get(client, (0, 0.0))
        wait = until - self.clock()
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, client: str) -> None:
        with self._lock:
            count = self._failures.pop(client, (0, 0.0))[0] + 1
            extra = count - self.free
            wait = 0.0 if extra <= 0 else min(self.cap, 2.0 ** (extra - 1))
            self._failures[client] = (count, self.clock() + wait)
            while len(self._failures) > self.limit:
                self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


def bearer_valid(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# ------------------------------------------------------------------ page plumbing
@cache
def _css() -> str:
    """The stylesheet exactly as the pages inline it (``{% include "ui.css" %}``), for its CSP hash."""
    return _env().get_template("ui.css").render()


@cache
def _env() -> Environment:
    env = environment()
    env.filters["updated"] = view.updated_text
    return env


def security_headers() -> dict[str, str]:
    digest = base64.b64encode(hashlib.sha256(_css().encode("utf-8")).digest()).decode("ascii")
    csp = (f"default-src 'none'; style-src 'sha256-{digest}'; img-src 'self' data:; form-action 'self'; "
           "frame-ancestors 'none'; base-uri 'none'")
    return {"Content-Security-Policy": csp, "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}


def _page(template: str, status: int = 200, trial: Trial | None = None, **values: Any) -> HTMLResponse:
    """A page naming ``trial`` (None: the shipped one) and its ruleset version."""
    t = trial or load_trial()
    html = _env().get_template(template).render(study=t.id, base=PREFIX, ruleset=t.ruleset_version, **values)
    return HTMLResponse(html, status_code=status, headers=security_headers())


def _redirect(to: str) -> RedirectResponse:
    return RedirectResponse(to, status_code=303, headers=security_headers())


def _too_many(wait: int, trial: Trial | None = None) -> HTMLResponse:
    response = _page("ui_message.html.j2", 429, trial, signed_in=False, heading="Too many attempts",
                     message=f"Too many sign-in attempts from this address: try again in {wait} s.")
    response.headers["Retry-After"] = str(wait)
    return response


async def _form(request: Request) -> dict[str, str]:
    """The first value of each field of a small urlencoded form (nothing when over ``MAX_FORM_BYTES``, more than
    five fields, or not a form at all)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return {}
        chunks.append(chunk)
    try:
        values = parse_qs(b"".join(chunks).decode("utf-8", errors="replace"), max_num_fields=5)
    except ValueError:
        return {}
    return {name: found[0] for name, found in values.items() if found}


FORM_BODY = {"requestBody": {"required": False, "content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "properties": {"token": {"type": "string"}, "csrf": {"type": "string"}}}}}}}


# ------------------------------------------------------------------ the router
class _Pages:
    """The route handlers, sharing settings, data, the clock, the sessions, the sign-in throttle and the trial
    (the ``trial`` setting, else the shipped one) the pages name."""

    def __init__(self, settings: Settings, data: view.CoordinatorData, clock: Callable[[], float]) -> None:
        self.settings, self.data, self.clock = settings, data, clock
        self.sessions, self.throttle = Sessions(clock), LoginThrottle(clock)
        self.trial = load_trial(settings.trial)

    def page(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        return _page(template, status, self.trial, **values)

    def visitor(self, request: Request, cookie: str | None) -> tuple[Response | None, Session | None]:
        """(the answer to give instead of the page, or None; the visitor's session, if it has one)."""
        token = self.settings.api_token
        if not token:
            return self.disabled(), None
        session = self.sessions.find(cookie)
        if session is not None:
            return None, session
        header = request.headers.get("authorization")
        if header is None:
            return _redirect(f"{PREFIX}/login"), None
        wait = self.throttle.retry_after(_client(request))
        if wait:
            return _too_many(wait, self.trial), None
        if bearer_valid(header, token):
            return None, None
        self.throttle.failed(_client(request))
        return _redirect(f"{PREFIX}/login"), None

    def disabled(self) -> Response:
        return self.page("ui_message.html.j2", 503, signed_in=False, heading="Coordinator page disabled",
                          message="No access token (api_token) is configured for this service.")

    async def login(self, request: Request) -> Response:
        token = self.settings.api_token
        if not token:
            return self.disabled()
        client = _client(request)
        wait = self.throttle.retry_after(client)
        if wait:
            return _too_many(wait, self.trial)
        given = (await _form(request)).get("token", "")
        if not given or not hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8")):
            self.throttle.failed(client)
            return self.page("ui_login.html.j2", 401, signed_in=False, error="That token was not accepted.")
        self.throttle.succeeded(client)
        session_id, _ = self.sessions.open()
        response = _redirect(PREFIX)
        response.set_cookie(COOKIE, session_id, max_age=SESSION_SECONDS, path=PREFIX, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    def login_form(self) -> Response:
        if not self.settings.api_token:
            return self.disabled()
        return self.page("ui_login.html.j2", signed_in=False, error=None)

    async def logout(self, request: Request, bridge_ui: SessionCookie = None) -> Response:
        session = self.sessions.find(bridge_ui)
        if session is not None:
            given = (await _form(request)).get("csrf", "")
            if not hmac.compare_digest(given.encode("utf-8"), session.csrf.encode("ascii")):
                return self.page("ui_message.html.j2", 403, signed_in=False, heading="Not signed out",
                                  message="The sign-out form was not this session's: reload the page and sign out "
                                          "again.")
            self.sessions.close(str(bridge_ui))
        response = _redirect(f"{PREFIX}/login")
        response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")
        return response

    def queue(self, request: Request, status: StatusQuery = None, bridge_ui: SessionCookie = None) -> Response:
        denied, session = self.visitor(request, bridge_ui)
        if denied:
            return denied
        selected = status if status in view.STATUS_ORDER else None
        excluded = view.not_screened_of(self.data)
        screenings = view.screened_only(self.data.list_screenings(), excluded)
        return self.page("ui_queue.html.j2", signed_in=True, csrf=session.csrf if session else None,
                          groups=view.queue(screenings, selected, self.trial), statuses=view.STATUS_ORDER[:3],
                          selected=selected,
                          total=len(screenings), not_screened=view.not_screened_summary(excluded),
                          not_screened_total=len(excluded))

    def patient(self, request: Request, patient_id: str, bridge_ui: SessionCookie = None) -> Response:
        denied, session = self.visitor(request, bridge_ui)
        if denied:
            return denied
        csrf = session.csrf if session else None
        screening = self.data.get_screening(patient_id) if view.is_resource_id(patient_id) else None
        excluded = next((n for n in view.not_screened_of(self.data) if n.get("patient") == patient_id), None)
        if excluded is not None:
            label = view.NOT_SCREENED_LABELS.get(str(excluded.get("reason")), str(excluded.get("reason")))
            return self.page("ui_message.html.j2", 404, signed_in=True, csrf=csrf, heading="Not screened",
                              message=f"This patient is not pre-screened ({label}, RULES.md §2 \"Who is screened\").")
        if screening is None:
            return self.page("ui_message.html.j2", 404, signed_in=True, csrf=csrf, heading="Not found",
                              message="No screening is stored for that patient id.")
        base_url = self.settings.ehr_base_url
        assessment = self.data.get_assessment(patient_id)
        return self.page("ui_patient.html.j2", signed_in=True, csrf=csrf, s=screening, ehr_linked=bool(base_url),
                          rows=view.criterion_rows(screening, base_url, self.trial), assessment=assessment,
                          events=view.timeline(assessment, base_url) if assessment else [],
                          dose=_dose_text(assessment) if assessment else "")


def _dose_text(assessment: dict[str, Any]) -> str:
    per_kg = assessment.get("cellsPerKg")
    if not isinstance(per_kg, int | float):
        return "unknown"
    within = assessment.get("doseWithinProtocol")
    flag = "" if within is None else ("within protocol" if within else "OUTSIDE protocol 0.5–10")
    return f"{per_kg / 1e6:.3g} ×10⁶ cells/kg" + (f" ({flag})" if flag else "")


def ui_router(settings: Settings, store: Screenings | view.CoordinatorData,
              clock: Callable[[], float] = time.time) -> APIRouter:
    """The ``/ui`` routes over ``store`` (the state's ``Screenings`` or any ``CoordinatorData``)."""
    pages = _Pages(settings, view.as_data(store), clock)
    router = APIRouter(prefix=PREFIX, tags=["coordinator page"])
    html: dict[str, Any] = {"response_class": HTMLResponse}
    router.add_api_route("", pages.queue, methods=["GET"], summary="The pre-screen queue", **html)
    router.add_api_route("/", pages.queue, methods=["GET"], include_in_schema=False, **html)
    router.add_api_route("/login", pages.login_form, methods=["GET"], summary="The sign-in form", **html)
    router.add_api_route("/login", pages.login, methods=["POST"], summary="Sign in with the access token",
                         openapi_extra=FORM_BODY, **html)
    router.add_api_route("/logout", pages.logout, methods=["POST"], summary="Sign out (the session's CSRF token)",
                         openapi_extra=FORM_BODY, **html)
    router.add_api_route("/patients/{patient_id}", pages.patient, methods=["GET"], summary="One patient's verdicts",
                         **html)
    return router


__all__ = ["COOKIE", "FREE_FAILURES", "PREFIX", "SESSION_SECONDS", "LoginThrottle", "Session", "Sessions",
           "bearer_valid", "security_headers", "ui_router"]
