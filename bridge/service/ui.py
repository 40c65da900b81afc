"""The coordinator page at ``/ui``: the pre-screen queue and one page per patient (issue #7).

Server-rendered HTML (Jinja2, autoescape on), one inline stylesheet, no script at all — it works on a hospital
network without any CDN. Mount it on the service with ``app.include_router(ui_router(settings, store))``.

Authentication (the service's bearer token, ``Settings.api_token``):

- a browser signs in once at ``GET/POST /ui/login`` with the token in a form body (never in a URL). The answer
  sets the cookie ``bridge_ui`` = ``<issued epoch>.<HMAC-SHA256(key=token, "bridge-ui|<issued>")>``: HttpOnly,
  SameSite=Strict, Path=/ui, Secure when the request came over HTTPS, valid ``SESSION_SECONDS``. Changing the
  token ends every session. ``POST /ui/logout`` clears it.
- a client may instead send ``Authorization: Bearer <token>`` on every request.
- without a configured token the page is disabled (503): there is nothing to check a visitor against.

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
import time
from collections.abc import Callable
from functools import cache
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment

from bridge import RULESET_VERSION, STUDY_ID
from bridge.config import Settings
from bridge.report import coordinator as view
from bridge.report.render import environment
from bridge.state import Screenings

PREFIX = "/ui"
COOKIE = "bridge_ui"
SESSION_SECONDS = 12 * 3600
MAX_FORM_BYTES = 4096
_SIGNING_CONTEXT = "bridge-ui|"


# ------------------------------------------------------------------ session cookie
def session_value(token: str, issued: int) -> str:
    """The cookie value for a session issued at ``issued`` (epoch seconds)."""
    mac = hmac.new(token.encode("utf-8"), f"{_SIGNING_CONTEXT}{issued}".encode(), hashlib.sha256).hexdigest()
    return f"{issued}.{mac}"


def session_valid(value: str | None, token: str, now: float, max_age: int = SESSION_SECONDS) -> bool:
    """A cookie signed with ``token``, issued no more than ``max_age`` seconds ago (and not in the future)."""
    issued_text, _, _mac = (value or "").partition(".")
    if not issued_text.isdigit() or len(issued_text) > 12:
        return False
    issued = int(issued_text)
    if not issued - 60 <= now <= issued + max_age:
        return False
    return hmac.compare_digest(session_value(token, issued), value or "")


def bearer_valid(header: str | None, token: str) -> bool:
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


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


def _page(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    html = _env().get_template(template).render(study=STUDY_ID, base=PREFIX, ruleset=RULESET_VERSION, **values)
    return HTMLResponse(html, status_code=status, headers=security_headers())


def _redirect(to: str) -> RedirectResponse:
    return RedirectResponse(to, status_code=303, headers=security_headers())


async def _form_token(request: Request) -> str:
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return ""
    values = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=5)
    return (values.get("token") or [""])[0]


# ------------------------------------------------------------------ the router
class _Pages:
    """The route handlers, sharing settings, data and the clock."""

    def __init__(self, settings: Settings, data: view.CoordinatorData, clock: Callable[[], float]) -> None:
        self.settings, self.data, self.clock = settings, data, clock

    def signed_in(self, request: Request) -> bool:
        token = self.settings.api_token
        if not token:
            return False
        return bearer_valid(request.headers.get("authorization"), token) or session_valid(
            request.cookies.get(COOKIE), token, self.clock())

    def gate(self, request: Request) -> Response | None:
        """None when the visitor may see the page; else the answer to give instead."""
        if not self.settings.api_token:
            return _page("ui_message.html.j2", 503, signed_in=False, heading="Coordinator page disabled",
                         message="No access token (api_token) is configured for this service.")
        return None if self.signed_in(request) else _redirect(f"{PREFIX}/login")

    def login_form(self, request: Request) -> Response:
        if not self.settings.api_token:
            return self.gate(request) or _redirect(PREFIX)
        return _page("ui_login.html.j2", signed_in=False, error=None)

    async def login(self, request: Request) -> Response:
        token = self.settings.api_token
        if not token:
            return self.gate(request) or _redirect(PREFIX)
        given = await _form_token(request)
        if not given or not hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8")):
            return _page("ui_login.html.j2", 401, signed_in=False, error="That token was not accepted.")
        response = _redirect(PREFIX)
        response.set_cookie(COOKIE, session_value(token, int(self.clock())), max_age=SESSION_SECONDS, path=PREFIX,
                            httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return response

    def logout(self, request: Request) -> Response:
        response = _redirect(f"{PREFIX}/login")
        response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict",
                               secure=request.url.scheme == "https")
        return response

    def queue(self, request: Request) -> Response:
        denied = self.gate(request)
        if denied:
            return denied
        wanted = request.query_params.get("status")
        selected = wanted if wanted in view.STATUS_ORDER else None
        excluded = view.not_screened_of(self.data)
        screenings = view.screened_only(self.data.list_screenings(), excluded)
        return _page("ui_queue.html.j2", signed_in=True, groups=view.queue(screenings, selected),
                     statuses=view.STATUS_ORDER[:3], selected=selected, total=len(screenings),
                     not_screened=view.not_screened_summary(excluded), not_screened_total=len(excluded))

    def patient(self, request: Request, patient_id: str) -> Response:
        denied = self.gate(request)
        if denied:
            return denied
        screening = self.data.get_screening(patient_id) if view.is_resource_id(patient_id) else None
        excluded = next((n for n in view.not_screened_of(self.data) if n.get("patient") == patient_id), None)
        if excluded is not None:
            label = view.NOT_SCREENED_LABELS.get(str(excluded.get("reason")), str(excluded.get("reason")))
            return _page("ui_message.html.j2", 404, signed_in=True, heading="Not screened",
                         message=f"This patient is not pre-screened ({label}, RULES.md §2 \"Who is screened\").")
        if screening is None:
            return _page("ui_message.html.j2", 404, signed_in=True, heading="Not found",
                         message="No screening is stored for that patient id.")
        base_url = self.settings.ehr_base_url
        assessment = self.data.get_assessment(patient_id)
        return _page("ui_patient.html.j2", signed_in=True, s=screening, ehr_linked=bool(base_url),
                     rows=view.criterion_rows(screening, base_url), assessment=assessment,
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
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    router.add_api_route("", pages.queue, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/", pages.queue, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/login", pages.login_form, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/login", pages.login, methods=["POST"], response_class=HTMLResponse)
    router.add_api_route("/logout", pages.logout, methods=["POST"], response_class=HTMLResponse)
    router.add_api_route("/patients/{patient_id}", pages.patient, methods=["GET"], response_class=HTMLResponse)
    return router


__all__ = ["COOKIE", "PREFIX", "SESSION_SECONDS", "bearer_valid", "security_headers", "session_valid",
           "session_value", "ui_router"]
