"""The FastAPI app of the pre-screening service (issue #4): notifications in, health, read-only FHIR out.

Routes (OpenAPI at ``/openapi.json``; ``/docs`` only with ``Settings.docs_assets_url``, a site-hosted swagger-ui —
no public CDN)::

    POST /notify                                  default channel: empty ping | topic Bundle | resource
    POST /notify/{channel}                        the same on a named channel (one per subscription)
    PUT  /notify/{type}/{id}                      classic rest-hook with the resource (default channel)
    PUT  /notify/{channel}/{type}/{id}            the same on a named channel   (POST is accepted too)
    GET  /healthz                                 the process is up
    GET  /readyz                                  ready / not ready; with the API token: store, inbox, EHR, worker
    GET  /fhir/...                                see ``fhir_api``
    GET  /ui/...                                  the coordinator page, see ``ui``

A notification is checked in this order, and nothing is stored unless every check passes: the channel name,
the channel secret (``Authorization: Bearer``, constant time — 401), the declared and then the actual body
size while reading (``Settings.max_body_bytes`` — 413), the media type (a body needs a JSON Content-Type — 415),
a whitespace-only body (400), JSON and FHIR shape through the declared models of ``edges`` (400 with the element
path). Then the events are written to the durable inbox and committed *before* the 200 answer. The OpenAPI
describes the bodies with the same models, so schema-driven clients reach the parsers.

Every error leaves as an ``OperationOutcome``: one exception handler maps ``bridge.errors`` to a status —
``InputError`` by its issue code (security 401, not-found 404, too-costly 413, not-supported 415, else 400),
``StoreError`` 503 (the EHR will retry), ``RemoteError`` 502, anything else 500 without details.

``/readyz`` is ready when the store takes a write (a write transaction that changes nothing, at most every
``STORE_PROBE_SECONDS``), the EHR is not known unreachable and the worker, if any, runs. Anonymous callers learn
only ``ready`` / ``not-ready``; the counts, times and reachability need ``Authorization: Bearer <api_token>``.
Start-up (binding the port first, then the state and a replica slot) is ``bridge.service.startup``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from enum import Enum
from typing import Annotated, Any, Protocol, cast

from fastapi import FastAPI, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from bridge import __version__
from bridge.client import FhirClient
from bridge.config import Settings
from bridge.errors import BridgeError, InputError, Issue, RemoteError, StoreError
from bridge.normalize.mappings import load_code_map
from bridge.publish.decision import decision_writer, write_back_pending
from bridge.service.channels import CHANNEL, DEFAULT_CHANNEL, bearer, check_channel, secret_matches, token_matches
from bridge.service.edges import FHIR_ID, RESOURCE_TYPE, openapi_schemas, request_body
from bridge.service.fhir_api import FhirResponse, fhir_router
from bridge.service.logs import event
from bridge.service.notifications import parse_post, parse_put
from bridge.service.replicas import Election
from bridge.service.rescreen import PublishingRescreen
from bridge.service.ui import ui_router
from bridge.service.worker import ClientEhr, Worker, WorkerConfig
from bridge.state import Delivery, Intake, PublishedIndex, Screenings, State, open_state

log = logging.getLogger("bridge.service")
STATUS_BY_CODE = {"security": 401, "forbidden": 403, "not-found": 404, "too-costly": 413, "not-supported": 415}
HTTP_ISSUE_CODES = {400: "invalid", 401: "security", 403: "forbidden", 404: "not-found", 405: "not-supported",
                    413: "too-costly", 415: "not-supported"}
CONTENT_LENGTH = re.compile(r"^[0-9]{1,19}$")  # ASCII digits only: '²'.isdigit() is true, int('²') fails
STORE_PROBE_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 5.0
ChannelPath = Annotated[str, Path(pattern=CHANNEL.pattern, description="the subscription's channel")]
TypePath = Annotated[str, Path(pattern=RESOURCE_TYPE.pattern, description="the resource type")]
IdPath = Annotated[str, Path(pattern=FHIR_ID.pattern, description="the resource id")]
AuthorizationHeader = Annotated[str | None, Header(description="Bearer <api_token> for the details")]


class AppState(Intake, PublishedIndex, Screenings, Protocol):
    """What the routes use of the state: notifications in and ``/readyz`` (``Intake``: its write probe), the read
    API (``PublishedIndex``) and the coordinator page (``Screenings``)."""


# ------------------------------------------------------------------------------------------ errors


def status_for(exc: BridgeError) -> int:
    """The HTTP status of a bridge error (see the module docstring)."""
    if isinstance(exc, InputError):
        for code in (exc.issue_code, *(i.code for i in exc.issues)):
            if code in STATUS_BY_CODE:
                return STATUS_BY_CODE[code]
        return 400
    if isinstance(exc, StoreError):
        return 503
    if isinstance(exc, RemoteError):
        return 502
    return 500


def outcome_response(status: int, outcome: dict[str, Any]) -> FhirResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="cd7-bridge"'} if status == 401 else None
    return FhirResponse(outcome, status_code=status, headers=headers)


def _simple_outcome(code: str, message: str, where: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [Issue(code, message, where).as_fhir()]}


def _validation_paths(exc: RequestValidationError) -> tuple[str, ...]:
    return tuple(".".join(str(p) for p in err.get("loc", ()) if p not in ("path", "query", "body", "cookie", "header"))
                 for err in exc.errors())


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BridgeError)
    async def bridge_error(request: Request, exc: BridgeError) -> Response:
        status = status_for(exc)
        level = logging.WARNING if status < 500 else logging.ERROR
        event(log, "http.error", level, method=request.method, path=request.url.path, http_status=status,
              error=exc.message)
        return outcome_response(status, exc.operation_outcome())

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        return outcome_response(400, _simple_outcome("invalid", "the request is malformed", _validation_paths(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = HTTP_ISSUE_CODES.get(exc.status_code, "processing")
        return outcome_response(exc.status_code, _simple_outcome(code, str(exc.detail)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        event(log, "http.error", logging.ERROR, method=request.method, path=request.url.path, http_status=500,
              error=type(exc).__name__)
        return outcome_response(500, _simple_outcome("exception", "internal error"))


# ------------------------------------------------------------------------------------------ helpers


def _too_large(limit: int) -> InputError:
    message = f"the body exceeds the limit of {limit} bytes"
    return InputError(message, issue_code="too-costly", issues=[Issue("too-costly", message, ("body",))])


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and CONTENT_LENGTH.fullmatch(declared) and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class CachedProbe:
    """Runs ``probe`` (is the EHR reachable?) at most once per ``ttl`` seconds; exceptions mean unreachable."""

    def __init__(self, probe: Callable[[], bool], ttl: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.probe, self.ttl, self.clock = probe, ttl, clock
        self._lock = threading.Lock()
        self._state: str | None = None
        self._at = 0.0

    def state(self) -> str:
        with self._lock:
            if self._state is None or self.clock() - self._at >= self.ttl:
                self._state = "reachable" if self._run() else "unreachable"
                self._at = self.clock()
            return self._state

    def _run(self) -> bool:
        try:
            return bool(self.probe())
        except Exception:  # noqa: BLE001 - any failure of the probe means "not reachable"
            return False


def _accepted_outcome(delivery: Delivery, new: int, duplicates: int) -> dict[str, Any]:
    text = f"{delivery.notification} accepted: {new} new event(s), {duplicates} duplicate(s)"
    return {"resourceType": "OperationOutcome",
            "issue": [Issue("informational", text, severity="information").as_fhir()]}


# ------------------------------------------------------------------------------------------ the app


def create_app(settings: Settings, store: AppState, worker: Worker | None = None, *,
               ehr_probe: Callable[[], bool] | None = None, clock: Callable[[], float] = time.time) -> FastAPI:
    """The service over ``store``; ``worker`` (optional) is started and stopped with the app."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.webhook_secret:
            event(log, "config.warning", logging.WARNING, reason="no-webhook-secret")
        if worker is not None:
            worker.start()
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()

    app = FastAPI(title="cd7-bridge pre-screening service", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,
                  redirect_slashes=False,  # a trailing-slash redirect would be built from the Host header
                  description="Receives EHR subscription notifications, pre-screens patients for NCT04762485 "
                              "and serves the published ResearchStudy / ResearchSubject read-only.")
    install_error_handlers(app)
    _install_access_log(app)
    _install_notify_routes(app, settings, store, clock)
    readiness = Readiness(store, worker, CachedProbe(ehr_probe) if ehr_probe else None)
    _install_health_routes(app, settings, readiness)
    app.include_router(fhir_router(store, settings))
    app.include_router(ui_router(settings, store, clock, **team_wiring(settings, store, clock)))
    _install_openapi(app)
    if settings.docs_assets_url:
        _install_docs(app, settings.docs_assets_url.rstrip("/"))
    app.state.store, app.state.worker, app.state.settings = store, worker, settings
    return app


def team_wiring(settings: Settings, store: object, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """The coordinator page's ``write_back`` and ``screening_log`` (issue #17) when ``store`` is the whole state:
    ``bridge.publish.decision.decision_writer`` writes each recorded action to the EHR (or the local store) and
    marks it written back or failed, ``bridge.report.screening_log.screening_log_csv`` is the download."""
    if not (hasattr(store, "record_action") and hasattr(store, "screening_numbers")):
        return {}
    from bridge.report.screening_log import screening_log_csv
    from bridge.trial import load_trial

    state, trial = cast(State, store), load_trial(settings.trial)
    return {"screening_log": lambda: screening_log_csv(state, trial),
            "write_back": decision_writer(settings, state, trial, clock)}


def _install_openapi(app: FastAPI) -> None:
    """The generated OpenAPI plus the component schemas of the notification bodies (``edges``)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(openapi_schemas())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema


def _install_docs(app: FastAPI, assets: str) -> None:
    """``/docs`` with swagger-ui from the site's own copy at ``assets`` (``Settings.docs_assets_url``)."""

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - API",
                                   swagger_js_url=f"{assets}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{assets}/swagger-ui.css",
                                   swagger_favicon_url=f"{assets}/favicon-32x32.png")


def _install_access_log(app: FastAPI) -> None:
    @app.middleware("http")
    async def access_log(request: Request, call_next: Callable[[Request], Any]) -> Response:
        started = time.perf_counter()
        response: Response = await call_next(request)
        event(log, "http.request", method=request.method, path=request.url.path, http_status=response.status_code,
              duration_ms=round((time.perf_counter() - started) * 1000, 1))
        return response


def _install_notify_routes(app: FastAPI, settings: Settings, store: Intake, clock: Callable[[], float]) -> None:
    async def accept(request: Request, channel: str, resource_type: str | None = None,
                     resource_id: str | None = None) -> FhirResponse:
        check_channel(channel)
        if not secret_matches(settings.webhook_secret, channel, bearer(request.headers.get("authorization"))):
            message = "wrong or missing subscription secret"
            raise InputError(message, issue_code="security", issues=[Issue("security", message, ("Authorization",))])
        body = await read_body(request, settings.max_body_bytes)
        content_type = request.headers.get("content-type")
        if resource_type is not None and resource_id is not None:
            delivery = parse_put(channel, resource_type, resource_id, body, content_type)
        else:
            delivery = parse_post(channel, body, content_type)
        result = await run_in_threadpool(store.accept, delivery, clock())
        event(log, "notification.accepted", channel=channel, subscription=delivery.subscription,
              notification=delivery.notification, new=result.new, duplicates=result.duplicates,
              count=len(delivery.events))
        return FhirResponse(_accepted_outcome(delivery, result.new, result.duplicates))

    tags: list[str | Enum] = ["notifications"]
    posted = request_body("NotificationBundle", "EncounterResource", "CodedResource")
    put = request_body("EncounterResource", "CodedResource", "Resource")

    @app.post("/notify", tags=tags, response_class=FhirResponse, summary="Notification on the default channel",
              openapi_extra=posted)
    async def notify_default(request: Request) -> FhirResponse:
        return await accept(request, DEFAULT_CHANNEL)

    @app.post("/notify/{channel}", tags=tags, response_class=FhirResponse, summary="Notification on a channel",
              openapi_extra=posted)
    async def notify_channel(request: Request, channel: ChannelPath) -> FhirResponse:
        return await accept(request, channel)

    async def notify_resource(request: Request, resource_type: TypePath, resource_id: IdPath) -> FhirResponse:
        return await accept(request, DEFAULT_CHANNEL, resource_type, resource_id)

    async def notify_channel_resource(request: Request, channel: ChannelPath, resource_type: TypePath,
                                      resource_id: IdPath) -> FhirResponse:
        return await accept(request, channel, resource_type, resource_id)

    for method in ("PUT", "POST"):
        app.add_api_route("/notify/{resource_type}/{resource_id}", notify_resource, methods=[method], tags=tags,
                          response_class=FhirResponse, operation_id=f"notify_resource_{method.lower()}",
                          summary="Classic rest-hook with the resource (default channel)", openapi_extra=put)
        app.add_api_route("/notify/{channel}/{resource_type}/{resource_id}", notify_channel_resource,
                          methods=[method], tags=tags, response_class=FhirResponse,
                          operation_id=f"notify_channel_resource_{method.lower()}",
                          summary="Classic rest-hook with the resource on a channel", openapi_extra=put)


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class Readiness:
    """Is the service ready: the store takes a write, the EHR is not known unreachable, the worker runs."""

    def __init__(self, store: AppState, worker: Worker | None, ehr: CachedProbe | None) -> None:
        self.store, self.worker, self.ehr = store, worker, ehr
        self.writable = CachedProbe(self._store_takes_a_write, ttl=STORE_PROBE_SECONDS)

    def _store_takes_a_write(self) -> bool:
        self.store.probe_write(time.time())  # a committed write; any exception means "cannot write" (CachedProbe)
        return True

    async def _state(self, probe: CachedProbe) -> str:
        try:
            return await asyncio.wait_for(run_in_threadpool(probe.state), PROBE_TIMEOUT_SECONDS)
        except TimeoutError:
            return "unreachable"

    async def check(self, details: bool) -> tuple[bool, dict[str, Any]]:
        store = "ok" if await self._state(self.writable) == "reachable" else "unavailable"
        body: dict[str, Any] = {"store": store}
        body["ehr"] = await self._state(self.ehr) if self.ehr else "not-configured"
        body["worker"] = "none" if self.worker is None else ("running" if self.worker.alive else "stopped")
        ready = store == "ok" and body["ehr"] != "unreachable" and body["worker"] != "stopped"
        if details and store == "ok":
            body.update(await self._counts())
        return ready, body

    async def _counts(self) -> dict[str, Any]:
        try:
            stats = await run_in_threadpool(self.store.stats)
        except StoreError:
            return {}
        return {"depth": stats.depth, "inbox": stats.inbox, "rescreens": stats.rescreens,
                "failed": stats.inbox.get("failed", 0) + stats.rescreens.get("failed", 0),
                "lastEventAt": _iso(stats.last_event_at), "lastNotificationAt": _iso(stats.last_notification_at)}


def _install_health_routes(app: FastAPI, settings: Settings, readiness: Readiness) -> None:
    @app.get("/healthz", tags=["health"], summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness (details with the API token)")
    async def readyz(authorization: AuthorizationHeader = None) -> JSONResponse:
        details = token_matches(settings.api_token, bearer(authorization))
        ready, body = await readiness.check(details)
        status = {"status": "ready" if ready else "not-ready"}
        return JSONResponse({**status, **body} if details else status, status_code=200 if ready else 503)


# ------------------------------------------------------------------------------------------ wiring


def ehr_probe(settings: Settings) -> Callable[[], bool]:
    """``GET [base]/metadata`` with short timeouts and no retries: is the EHR reachable?"""
    quick = replace(settings, retries=0, timeout_connect=2.0, timeout_read=5.0)
    client = FhirClient.from_settings(quick)
    return lambda: client.capabilities().get("resourceType") == "CapabilityStatement"


def build_worker(settings: Settings, name: str, worker_config: WorkerConfig | None = None,
                 store: State | None = None, election: Election | None = None, slot: int | None = None) -> Worker:
    """The worker from settings: EHR client, code map (with the site map), the state (``Settings.state_location``),
    publishing re-screen of the ``trial`` setting's trial; ``election`` and ``slot`` make it one replica of
    several (``bridge.service.replicas``)."""
    client = FhirClient.from_settings(settings)
    cmap = load_code_map(settings.site_map)
    store = store or open_state(settings.state_location())
    config = worker_config or WorkerConfig.from_settings(settings)
    rescreen = PublishingRescreen.from_settings(client, cmap, store, settings)  # the ``trial`` setting's trial
    election = election or store  # the state's leader(): `bridge watch` beside replicas, one monitor
    state = store

    def retry_writebacks() -> tuple[int, int]:  # the study team's actions the EHR has not taken yet (issue #17)
        return write_back_pending(settings, state, rescreen.trial, client=client)

    return Worker(store, rescreen, ClientEhr(client), cmap, config, name=name, threads=settings.workers,
                  election=election, slot=slot, retry_writebacks=retry_writebacks)


def build_app(settings: Settings, worker_config: WorkerConfig | None = None, name: str | None = None,
              state: State | None = None, election: Election | None = None, slot: int | None = None) -> FastAPI:
    """The whole service from settings (what ``bridge.service.startup.run`` serves); ``name`` is the worker's,
    ``state`` the opened store (else opened here), ``election`` / ``slot`` the replica's (``startup``).

    Without ``ehr_base_url`` (the embedded default) there is no worker: the coordinator page and the read
    API serve the local store, and notifications are kept in the inbox until an EHR is configured."""
    state = state or open_state(settings.state_location())
    if not settings.ehr_base_url:
        event(log, "config.warning", logging.WARNING, reason="no-ehr-configured-worker-not-started")
        return create_app(settings, state)
    worker = build_worker(settings, name or f"serve@{socket.gethostname()}", worker_config, state, election, slot)
    return create_app(settings, state, worker, ehr_probe=ehr_probe(settings))


__all__ = ["AppState", "CachedProbe", "Readiness", "build_app", "build_worker", "create_app", "ehr_probe",
           "install_error_handlers", "outcome_response", "read_body", "status_for", "team_wiring"]
