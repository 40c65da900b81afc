"""The coordinator page at ``/ui``: the pre-screen queue, one page per patient (issue #7) and the study team's
actions on it (issue #17).

Server-rendered HTML (Jinja2, autoescape on), one inline stylesheet, no script at all — it works on a hospital
network without any CDN. Mount it on the service with ``app.include_router(ui_router(settings, store))``.

Who may open it depends on the configuration:

- **named users** (``Settings.users_file``, ``bridge.service.users``): a person signs in at ``GET/POST
  /ui/login`` with a name and a password (or a per-user token in the same field); the session carries the name
  and the role (``coordinator`` / ``investigator``), and the patient page offers the actions that role may take
  (``bridge.service.ui_actions``). The service's shared ``api_token`` does *not* open the page then: it is for
  the machine API only.
- **no users file, an ``api_token``**: the page is read only (as before issue #17): signing in with the token,
  or ``Authorization: Bearer <token>`` on every request, shows the queue and the patients but no action (an
  action needs a named person). The service logs ``config.warning reason=coordinator-page-read-only`` at start.
- **neither**: the page is disabled (503).

Sessions (``bridge.service.ui_auth``): the cookie ``bridge_ui`` is a random session id (256 bits) kept by the
state store as its SHA-256 (``UiSessions``, shared by every replica), with the user, the role, the session's
CSRF token and its expiry: HttpOnly, SameSite=Strict, Path=/ui, Secure when the request came over HTTPS, valid
``SESSION_SECONDS``. Every sign-in opens a new session (the id is rotated; the visitor's previous one is
closed). Every POST form carries the session's CSRF token (a hidden field) and is refused (403, nothing
changes) without it; ``POST /ui/logout`` deletes the session on the server, so a copied cookie no longer works.
Failed sign-ins are throttled per client address, in the store too (``LoginThrottle``): ``FREE_FAILURES``
free, then 1, 2, 4 … up to ``MAX_WAIT_SECONDS`` seconds after each further failure — 429 with ``Retry-After``
until then, even for the right secret. A refused sign-in never says whether the name exists.

Actions (``POST /ui/patients/{id}/actions``): one small form per action, each with the CSRF token and a
``request_key`` of its own (a form sent twice records one action); the answer is a redirect back to the
patient page (POST-redirect-GET). A role that may not take the action gets 403 (a coordinator recording the
investigator's judgement or confirming eligibility), a form missing a required note or reason 422, a stale
undo 409. ``GET /ui/screening-log.csv`` downloads the screening log when the service provides one.

Inputs are declared: the ``bridge_ui`` cookie must look like a session id (anything else — ``\xb2.abc`` — is no
session: the visitor is sent to sign in), ``?status=`` is a short string (an unknown status shows every
patient), form bodies are capped at ``MAX_FORM_BYTES`` and ``MAX_FORM_FIELDS``.

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
import logging
import time
from collections.abc import Callable
from functools import cache
from typing import Annotated, Any, cast
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Cookie, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment

from bridge.config import Settings
from bridge.decisions import ROLES, ActionRefused
from bridge.report import coordinator as view
from bridge.report.render import environment
from bridge.service.logs import event
from bridge.service.ui_actions import ActionConflict, TeamDesk, WriteBackCall
from bridge.service.ui_auth import (
    FREE_FAILURES,
    MAX_WAIT_SECONDS,
    SESSION_SECONDS,
    LoginThrottle,
    MemoryUiSessions,
    Sessions,
    same,
)
from bridge.service.users import Users, load_users
from bridge.state import Screenings
from bridge.state.actions import Actions
from bridge.state.sessions import UiSession, UiSessions
from bridge.trial import Trial, load_trial

log = logging.getLogger("bridge.service")
PREFIX = "/ui"
COOKIE = "bridge_ui"
MAX_FORM_BYTES = 16_384  # a note of MAX_NOTE characters, percent-encoded, fits
MAX_FORM_FIELDS = 8
READ_ONLY = "read-only"  # the role of a session opened with the shared api_token (no users file)
StatusQuery = Annotated[str | None, Query(max_length=40, description="only patients with this overall status")]
SessionCookie = Annotated[str | None, Cookie(description="the session id set by POST /ui/login")]
ScreeningLog = Callable[[], str]


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
    ``MAX_FORM_FIELDS`` fields, or not a form at all)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            return {}
        chunks.append(chunk)
    try:
        values = parse_qs(b"".join(chunks).decode("utf-8", errors="replace"), max_num_fields=MAX_FORM_FIELDS)
    except ValueError:
        return {}
    return {name: found[0] for name, found in values.items() if found}


def _form_body(*names: str) -> dict[str, Any]:
    properties = {name: {"type": "string"} for name in names}
    return {"requestBody": {"required": False, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "properties": properties}}}}}


FORM_BODY = _form_body("name", "password", "token", "csrf")
ACTION_BODY = _form_body("csrf", "request_key", "kind", "note", "value", "reason", "undoes")


# ------------------------------------------------------------------ the router
class _Pages:
    """The route handlers, sharing settings, data, the clock, the sessions, the sign-in throttle, the users, the
    team's desk (None: read only) and the trial (the ``trial`` setting, else the shipped one) the pages name."""

    def __init__(self, settings: Settings, data: view.CoordinatorData, clock: Callable[[], float],
                 users: Users | None, sessions: UiSessions, desk: TeamDesk | None,
                 screening_log: ScreeningLog | None) -> None:
        self.settings, self.data, self.clock, self.users = settings, data, clock, users
        self.sessions, self.throttle = Sessions(sessions, clock), LoginThrottle(sessions, clock)
        self.trial = desk.trial if desk else load_trial(settings.trial)
        self.desk = desk if users else None
        self.screening_log = screening_log

    @property
    def mode(self) -> str:
        """``users`` (named users), ``token`` (read only behind api_token) or ``off``."""
        return "users" if self.users else ("token" if self.settings.api_token else "off")

    def page(self, template: str, status: int = 200, session: UiSession | None = None, **values: Any
             ) -> HTMLResponse:
        named = session is not None and session.role in ROLES
        return _page(template, status, self.trial, csrf=session.csrf if session else None,
                     user=session.user if named and session else None, role=session.role if named and session
                     else None, **values)

    def visitor(self, request: Request, cookie: str | None) -> tuple[Response | None, UiSession | None]:
        """(the answer to give instead of the page, or None; the visitor's session, if it has one)."""
        if self.mode == "off":
            return self.disabled(), None
        session = self._session(cookie)
        if session is not None:
            return None, session
        header = request.headers.get("authorization")
        if header is None or self.mode != "token":  # with named users, the shared token opens nothing here
            return _redirect(f"{PREFIX}/login"), None
        wait = self.throttle.retry_after(_client(request))
        if wait:
            return _too_many(wait, self.trial), None
        if bearer_valid(header, str(self.settings.api_token)):
            return None, None
        self.throttle.failed(_client(request))
        return _redirect(f"{PREFIX}/login"), None

    def _session(self, cookie: str | None) -> UiSession | None:
        """The cookie's session, when it fits the mode (a token session means nothing once users are named)."""
        session = self.sessions.find(cookie)
        if session is None or (self.mode == "users") != (session.role in ROLES):
            return None
        return session

    def disabled(self) -> Response:
        return self.page("ui_message.html.j2", 503, signed_in=False, heading="Coordinator page disabled",
                         message="No users file (users_file) and no access token (api_token) are configured "
                                 "for this service.")

    def _who(self, form: dict[str, str]) -> tuple[str, str] | None:
        """(user name, role) the sign-in form proves, or None."""
        if self.users:
            user = self.users.authenticate(form.get("name", ""), form.get("password", ""))
            return (user.name, user.role) if user else None
        given = form.get("token", "")
        if given and same(given, str(self.settings.api_token)):
            return "api-token", READ_ONLY
        return None

    async def login(self, request: Request, bridge_ui: SessionCookie = None) -> Response:
        if self.mode == "off":
            return self.disabled()
        client = _client(request)
        wait = await run_in_threadpool(self.throttle.retry_after, client)
        if wait:
            return _too_many(wait, self.trial)
        who = await run_in_threadpool(self._who, await _form(request))
        if who is None:
            await run_in_threadpool(self.throttle.failed, client)
            error = "That name and password were not accepted." if self.users else "That token was not accepted."
            return self.page("ui_login.html.j2", 401, signed_in=False, error=error, named=bool(self.users))
        await run_in_threadpool(self.throttle.succeeded, client)
        await run_in_threadpool(self.sessions.close, bridge_ui)  # a new id at every sign-in
        session_id, _ = await run_in_threadpool(self.sessions.open, *who)
        response = _redirect(PREFIX)
        response.set_cookie(COOKIE, session_id, max_age=SESSION_SECONDS, path=PREFIX, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https")
        return response

    def login_form(self) -> Response:
        if self.mode == "off":
            return self.disabled()
        return self.page("ui_login.html.j2", signed_in=False, error=None, named=bool(self.users))

    async def logout(self, request: Request, bridge_ui: SessionCookie = None) -> Response:
        session = await run_in_threadpool(self.sessions.find, bridge_ui)
        if session is not None:
            if not same((await _form(request)).get("csrf", ""), session.csrf):
                return self.page("ui_message.html.j2", 403, signed_in=False, heading="Not signed out",
                                 message="The sign-out form was not this session's: reload the page and sign out "
                                         "again.")
            await run_in_threadpool(self.sessions.close, bridge_ui)
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
        return self.page("ui_queue.html.j2", session=session, signed_in=True,
                         groups=view.queue(screenings, selected, self.trial), statuses=view.STATUS_ORDER[:3],
                         selected=selected, team=self.desk.statuses() if self.desk else None,
                         screening_log=self.screening_log is not None, total=len(screenings),
                         not_screened=view.not_screened_summary(excluded), not_screened_total=len(excluded))

    def _screening(self, patient_id: str, session: UiSession | None) -> tuple[Response | None, dict[str, Any]]:
        """(a 404 page, or None; the patient's screening)."""
        screening = self.data.get_screening(patient_id) if view.is_resource_id(patient_id) else None
        excluded = next((n for n in view.not_screened_of(self.data) if n.get("patient") == patient_id), None)
        if excluded is not None:
            label = view.NOT_SCREENED_LABELS.get(str(excluded.get("reason")), str(excluded.get("reason")))
            return self.page("ui_message.html.j2", 404, session, signed_in=True, heading="Not screened",
                             message=f"This patient is not pre-screened ({label}, RULES.md §2 \"Who is "
                                     "screened\")."), {}
        if screening is None:
            return self.page("ui_message.html.j2", 404, session, signed_in=True, heading="Not found",
                             message="No screening is stored for that patient id."), {}
        return None, screening

    def patient(self, request: Request, patient_id: str, bridge_ui: SessionCookie = None) -> Response:
        denied, session = self.visitor(request, bridge_ui)
        if denied:
            return denied
        missing, screening = self._screening(patient_id, session)
        if missing:
            return missing
        base_url = self.settings.ehr_base_url
        assessment = self.data.get_assessment(patient_id)
        role = session.role if session is not None and session.role in ROLES else None
        team = self.desk.view(patient_id, screening, role) if self.desk else None
        return self.page("ui_patient.html.j2", session=session, signed_in=True, s=screening,
                         ehr_linked=bool(base_url), rows=view.criterion_rows(screening, base_url, self.trial),
                         assessment=assessment, events=view.timeline(assessment, base_url) if assessment else [],
                         dose=_dose_text(assessment) if assessment else "", team=team)

    async def act(self, request: Request, patient_id: str, bridge_ui: SessionCookie = None) -> Response:
        session = await run_in_threadpool(self._session, bridge_ui)
        if self.desk is None or session is None:
            return self.refused(403, None, "Not allowed", "Recording an action needs a named user's session: "
                                                          "sign in with your name.")
        form = await _form(request)
        if not same(form.get("csrf", ""), session.csrf):
            return self.refused(403, session, "Not recorded", "The form was not this session's: reload the page "
                                                              "and try again.")
        missing, screening = await run_in_threadpool(self._screening, patient_id, session)
        if missing:
            return missing
        try:
            await run_in_threadpool(self.desk.record, patient_id, screening, session.user, session.role, form)
        except ActionRefused as exc:
            status = 403 if exc.forbidden else 409 if isinstance(exc, ActionConflict) else 422
            return self.refused(status, session, "Not recorded", str(exc))
        return _redirect(f"{PREFIX}/patients/{quote(patient_id)}")

    def refused(self, status: int, session: UiSession | None, heading: str, message: str) -> HTMLResponse:
        return self.page("ui_message.html.j2", status, session, signed_in=session is not None, heading=heading,
                         message=message)

    def download_log(self, request: Request, bridge_ui: SessionCookie = None) -> Response:
        denied, session = self.visitor(request, bridge_ui)
        if denied:
            return denied
        if self.screening_log is None:
            return self.refused(404, session, "Not found", "This service offers no screening log.")
        headers = {**security_headers(), "Content-Disposition":
                   f'attachment; filename="screening-log-{self.trial.id}.csv"'}
        return Response(self.screening_log(), media_type="text/csv; charset=utf-8", headers=headers)


def _dose_text(assessment: dict[str, Any]) -> str:
    per_kg = assessment.get("cellsPerKg")
    if not isinstance(per_kg, int | float):
        return "unknown"
    within = assessment.get("doseWithinProtocol")
    flag = "" if within is None else ("within protocol" if within else "OUTSIDE protocol 0.5–10")
    return f"{per_kg / 1e6:.3g} ×10⁶ cells/kg" + (f" ({flag})" if flag else "")


def _announce(settings: Settings, users: Users | None) -> None:
    """One start-up line saying who may open the page (never a name)."""
    if users:
        event(log, "ui.users", count=len(users))
    elif settings.api_token:
        event(log, "config.warning", logging.WARNING, reason="coordinator-page-read-only-no-users-file")
    else:
        event(log, "config.warning", logging.WARNING, reason="coordinator-page-disabled")


def ui_router(settings: Settings, store: Screenings | view.CoordinatorData,
              clock: Callable[[], float] = time.time, *, users: Users | None = None,
              sessions: UiSessions | None = None, actions: Actions | None = None,
              write_back: WriteBackCall | None = None, screening_log: ScreeningLog | None = None) -> APIRouter:
    """The ``/ui`` routes over ``store`` (the state's ``Screenings`` or any ``CoordinatorData``).

    ``users`` defaults to the ``users_file`` setting's; ``sessions`` and ``actions`` to ``store`` when it is the
    state (else sessions in memory and no actions); ``write_back(seq)`` writes a recorded action to the EHR
    (``bridge.publish.decision``); ``screening_log()`` is the CSV offered at ``/ui/screening-log.csv``."""
    users = users if users is not None else (load_users(settings.users_file) if settings.users_file else None)
    if sessions is None:
        sessions = cast(UiSessions, store) if hasattr(store, "open_session") else MemoryUiSessions()
    if actions is None and hasattr(store, "record_action"):
        actions = cast(Actions, store)
    trial = load_trial(settings.trial)
    desk = TeamDesk(actions, trial, clock, write_back) if actions is not None else None
    _announce(settings, users)
    pages = _Pages(settings, view.as_data(store), clock, users, sessions, desk, screening_log)
    router = APIRouter(prefix=PREFIX, tags=["coordinator page"])
    html: dict[str, Any] = {"response_class": HTMLResponse}
    router.add_api_route("", pages.queue, methods=["GET"], summary="The pre-screen queue", **html)
    router.add_api_route("/", pages.queue, methods=["GET"], include_in_schema=False, **html)
    router.add_api_route("/login", pages.login_form, methods=["GET"], summary="The sign-in form", **html)
    router.add_api_route("/login", pages.login, methods=["POST"], summary="Sign in (name and password)",
                         openapi_extra=FORM_BODY, **html)
    router.add_api_route("/logout", pages.logout, methods=["POST"], summary="Sign out (the session's CSRF token)",
                         openapi_extra=FORM_BODY, **html)
    router.add_api_route("/screening-log.csv", pages.download_log, methods=["GET"],
                         summary="The screening log (CSV, no identifiers)", response_class=Response)
    router.add_api_route("/patients/{patient_id}", pages.patient, methods=["GET"], summary="One patient's verdicts",
                         **html)
    router.add_api_route("/patients/{patient_id}/actions", pages.act, methods=["POST"],
                         summary="Record a study-team action (CSRF token, request key)", openapi_extra=ACTION_BODY,
                         **html)
    return router


__all__ = ["COOKIE", "FREE_FAILURES", "MAX_WAIT_SECONDS", "PREFIX", "READ_ONLY", "SESSION_SECONDS", "LoginThrottle",
           "MemoryUiSessions", "Sessions", "bearer_valid", "security_headers", "ui_router"]
