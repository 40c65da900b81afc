"""The bridge's own published resources, served read-only as FHIR R4 under ``/fhir`` (GET and HEAD alike).

::

    GET /fhir/metadata                          CapabilityStatement (public, as FHIR servers do)
    GET /fhir/{type}?params                     search (fhir_params: tokens, references, _lastUpdated,
                                                _count, _offset, _sort, _summary, _elements, _total, ...)
    GET /fhir/{type}/_history                   every version of every resource of the type, newest first
    GET /fhir/{type}/{id}                       read: ETag W/"<versionId>", Last-Modified; If-None-Match /
                                                If-Modified-Since -> 304
    GET /fhir/{type}/{id}/_history              every version of one resource
    GET /fhir/{type}/{id}/_history/{vid}        vread

for each type of ``fhir_params.SERVED_TYPES``. Everything but ``metadata`` needs
``Authorization: Bearer <Settings.api_token>`` (constant-time check; without a configured token the API refuses
every request). The resources are those the store's published index holds, each version numbered by the
index (``bridge.state.published``); ``id`` is the EHR's id.

Absolute URLs (``fullUrl``, paging links, ``implementation.url``) start with ``Settings.public_base_url``
(default ``http://listen_host:listen_port``), never with the request's ``Host``. ``_format`` and ``Accept``
are negotiated before anything else: JSON (``application/fhir+json``, or ``application/json`` when only that
is accepted) or 406 with an OperationOutcome. Bad parameters are 400 OperationOutcomes naming the parameter
(raised as ``InputError`` and answered by the app's error handler).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from email.utils import formatdate, parsedate_to_datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from bridge.config import Settings
from bridge.errors import Issue
from bridge.service.channels import bearer, token_matches
from bridge.service.fhir_capability import capability_statement
from bridge.service.fhir_params import (
    RESULT_PARAMS,
    SERVED_TYPES,
    Items,
    SearchQuery,
    negotiate,
    parse_history,
    parse_metadata,
    parse_read,
    parse_search,
    pretty,
    problem,
    search_params,
)
from bridge.service.fhir_search import Hit, history, prune, search, searchset, served, shape
from bridge.state import PublishedIndex, PublishedRecord
from bridge.state.published import PublishedVersion

FHIR_JSON = "application/fhir+json"
_VERSION_ID = re.compile(r"[0-9]{1,18}", re.ASCII)
Json = dict[str, Any]
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON


def public_base(settings: Settings) -> str:
    """The service's public base URL (no trailing slash): ``public_base_url``, else ``http://host:port``."""
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    host = settings.listen_host
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.listen_port}"


# ------------------------------------------------------------------------------------------ HTTP


def render(request: Request, body: Json, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``body`` (pruned) in the negotiated media type, indented when ``_pretty=true``."""
    state = request.scope.get("state", {})
    indent = 2 if state.get("fhir_pretty") else None
    text = json.dumps(prune(body), ensure_ascii=False, indent=indent, separators=None if indent else (",", ":"))
    return Response(text.encode("utf-8"), status, headers, state.get("fhir_media", FHIR_JSON))


def _not_acceptable(where: str) -> Response:
    message = "this server writes FHIR JSON only (application/fhir+json or application/json, FHIR 4.0)"
    outcome = {"resourceType": "OperationOutcome", "issue": [Issue("not-supported", message, (where,)).as_fhir()]}
    return FhirResponse(outcome, status_code=406)


class FhirRoute(APIRoute):
    """A ``/fhir`` route: content negotiation first (406), ``_pretty``, and HEAD answered without a body."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            items = request.query_params.multi_items()
            asked = _single(items, "_format")
            media = negotiate(asked, request.headers.get("accept"))
            if media is None:
                return _without_body(request, _not_acceptable("_format" if asked is not None else "Accept"))
            request.scope.setdefault("state", {}).update(fhir_media=media, fhir_pretty=pretty(items))
            return _without_body(request, await handler(request))

        return route


def _single(items: Items, name: str) -> str | None:
    values = [v for k, v in items if k == name]
    if len(values) > 1:
        raise problem(name, f"give the {name} parameter at most once")
    return values[0] if values else None


def _without_body(request: Request, response: Response) -> Response:
    if request.method != "HEAD":
        return response
    headers = dict(response.headers)
    return Response(b"", response.status_code, headers)


def _http_date(epoch: float) -> str:
    return formatdate(epoch, usegmt=True)


def _not_modified(request: Request, etag: str, last_updated: float) -> bool:
    """If-None-Match (weak comparison, ``*``) decides when present; else If-Modified-Since (to the second)."""
    none_match = request.headers.get("if-none-match")
    if none_match is not None:
        tags = {t.strip().removeprefix("W/") for t in none_match.split(",")}
        return "*" in tags or etag.removeprefix("W/") in tags
    since = request.headers.get("if-modified-since")
    if since is None:
        return False
    try:
        return int(last_updated) <= parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False  # an unparsable date is ignored (RFC 9110 §13.1.3)


def _version_response(request: Request, hit: Hit, items: Items) -> Response:
    """A read or vread: the resource, shaped, with ETag and Last-Modified, or 304."""
    how = parse_read(hit.resource["resourceType"], items)
    headers = {"ETag": f'W/"{hit.version_id}"', "Last-Modified": _http_date(hit.last_updated)}
    if _not_modified(request, headers["ETag"], hit.last_updated):
        return Response(status_code=304, headers=headers)
    return render(request, shape(hit.resource, how), headers=headers)


# ------------------------------------------------------------------------------------------ the store


def _hit(version: PublishedVersion) -> Hit:
    return served(version.resource, version.resource_id, version.version_id, version.last_updated)


def _current(record: PublishedRecord) -> Hit | None:
    """The current version of a record as served (None when it has no id to be served under)."""
    rid, vid = record.served_id, record.version_id
    if rid is None or vid is None:
        return None
    return served(record.resource, rid, vid, record.updated_at if record.last_updated is None else record.last_updated)


def _narrowing(query: SearchQuery) -> dict[str, str]:
    """Columns the store can filter on for criteria with one value (the full match is done afterwards)."""
    out: dict[str, str] = {}
    for criterion in query.criteria:
        param, values = criterion.param, criterion.values
        if len(values) != 1:
            continue
        if param.type == "reference" and param.path in ("study", "individual"):
            out.setdefault("study" if param.path == "study" else "patient", values[0])
        elif param.name == "status" and values[0][0] in (None, param.system) and values[0][1]:
            out.setdefault("status", values[0][1])
    return out


CONFORMANCE_TYPES = ("StructureDefinition", "CodeSystem", "ValueSet")
CONFORMANCE_UPDATED = 1767225600.0  # 2026-01-01T00:00:00Z: the packaged definitions are one version, read-only


class Conformance:
    """The bridge's own conformance resources (``bridge.publish.conformance``, generated for the service's
    trial): served read-only as version 1, straight from the package — they are definitions, not records."""

    def __init__(self, trial_file: str | None) -> None:
        from bridge.publish.conformance import load_resources  # loaded when the API is built, not at import
        from bridge.trial import load_trial

        resources = load_resources(load_trial(trial_file))
        self.hits = {(r["resourceType"], r["id"]): served(r, r["id"], 1, CONFORMANCE_UPDATED) for r in resources}

    def of(self, resource_type: str, resource_id: str | None = None) -> list[Hit]:
        return [h for (rtype, rid), h in sorted(self.hits.items())
                if rtype == resource_type and resource_id in (None, rid)]


class Reader:
    """Reads ``store`` for the routes (blocking: called in the thread pool); the conformance resources come
    from the package."""

    def __init__(self, store: PublishedIndex, conformance: Conformance) -> None:
        self.store = store
        self.conformance = conformance

    def current(self, resource_type: str, query: SearchQuery) -> list[Hit]:
        if resource_type in CONFORMANCE_TYPES:
            return self.conformance.of(resource_type)
        records = self.store.find_published(resource_type, **_narrowing(query))
        return [hit for hit in map(_current, records) if hit is not None]

    def versions(self, resource_type: str, resource_id: str | None, since: float | None) -> list[Hit]:
        if resource_type in CONFORMANCE_TYPES:
            return [h for h in self.conformance.of(resource_type, resource_id)
                    if since is None or h.last_updated >= since]
        return [_hit(v) for v in self.store.published_history(resource_type, resource_id, since)]

    def version(self, resource_type: str, resource_id: str, version_id: str | None) -> Hit:
        if resource_type in CONFORMANCE_TYPES:
            packaged = self.conformance.of(resource_type, resource_id)
            if packaged and version_id in (None, "1"):
                return packaged[0]
        elif version_id is None:
            found = self.store.published_history(resource_type, resource_id)
            if found:
                return _hit(found[0])
        elif _VERSION_ID.fullmatch(version_id):
            version = self.store.published_version(resource_type, resource_id, int(version_id))
            if version is not None:
                return _hit(version)
        label = f"{resource_type}/{resource_id}" + (f"/_history/{version_id}" if version_id else "")
        raise problem(f"{resource_type}.id", f"{label} is not known", "not-found")


# ------------------------------------------------------------------------------------------ routes


def _query_parameters(names: list[tuple[str, str, str]]) -> dict[str, Any]:
    """OpenAPI ``parameters`` for query parameters read from the request (not declared as arguments)."""
    def schema(kind: str) -> Json:
        return {"type": "integer", "minimum": 0} if kind == "number" else {"type": "string"}

    return {"parameters": [{"name": n, "in": "query", "required": False, "description": doc, "schema": schema(k)}
                           for n, k, doc in names]}


def _search_openapi(resource_type: str) -> dict[str, Any]:
    params = [(p.name, p.type, p.documentation) for p in search_params(resource_type).values()]
    return _query_parameters(params + list(RESULT_PARAMS))


FORMAT_OPENAPI = [(n, k, d) for n, k, d in RESULT_PARAMS if n in ("_format", "_pretty")]
READ_OPENAPI = _query_parameters([(n, k, d) for n, k, d in RESULT_PARAMS if n in ("_summary", "_elements")]
                                 + FORMAT_OPENAPI)
HISTORY_OPENAPI = _query_parameters([(n, k, d) for n, k, d in RESULT_PARAMS if n in ("_count", "_offset")]
                                    + [("_since", "date", "versions last updated at or after this instant")]
                                    + FORMAT_OPENAPI)
METADATA_OPENAPI = _query_parameters([("mode", "token", "full (the only mode served)"), *FORMAT_OPENAPI])


def fhir_router(store: PublishedIndex, settings: Settings) -> APIRouter:
    """The ``/fhir`` routes over ``store``, guarded by ``settings.api_token``."""
    base = public_base(settings) + "/fhir"
    reader = Reader(store, Conformance(settings.trial))

    def authorised(request: Request) -> None:
        if not settings.api_token:
            raise problem("Authorization", "the FHIR API is disabled: no api_token is configured", "security")
        if not token_matches(settings.api_token, bearer(request.headers.get("authorization"))):
            raise problem("Authorization", "a valid bearer token is required", "security")

    router = APIRouter(prefix="/fhir", tags=["FHIR (read-only)"], route_class=FhirRoute)

    def route(path: str, endpoint: Callable[..., Any], summary: str, openapi: dict[str, Any],
              guarded: bool = True) -> None:
        for method in ("GET", "HEAD"):
            router.add_api_route(path, endpoint, methods=[method], response_class=FhirResponse, summary=summary,
                                 dependencies=[Depends(authorised)] if guarded else None, openapi_extra=openapi,
                                 operation_id=f"{method.lower()}_{endpoint.__name__}")

    async def metadata(request: Request) -> Response:
        parse_metadata(request.query_params.multi_items())
        return render(request, capability_statement(base))

    route("/metadata", metadata, "CapabilityStatement (no authentication)", METADATA_OPENAPI, guarded=False)
    for resource_type in SERVED_TYPES:
        _install_type(route, reader, base, resource_type)
    return router


def _install_type(route: Callable[..., None], reader: Reader, base: str, resource_type: str) -> None:
    async def search_type(request: Request) -> Response:
        items = request.query_params.multi_items()
        query = parse_search(resource_type, items)
        hits = await run_in_threadpool(reader.current, resource_type, query)
        found = search(hits, query, search_params(resource_type))
        return render(request, searchset(base, resource_type, found, query, items))

    async def history_type(request: Request) -> Response:
        items = request.query_params.multi_items()
        paging, since = parse_history(items)
        hits = await run_in_threadpool(reader.versions, resource_type, None, since)
        return render(request, history(base, f"{base}/{resource_type}/_history", hits, paging, items))

    async def read(request: Request, resource_id: str) -> Response:
        hit = await run_in_threadpool(reader.version, resource_type, resource_id, None)
        return _version_response(request, hit, request.query_params.multi_items())

    async def history_instance(request: Request, resource_id: str) -> Response:
        items = request.query_params.multi_items()
        paging, since = parse_history(items)
        await run_in_threadpool(reader.version, resource_type, resource_id, None)  # 404 when never published
        hits = await run_in_threadpool(reader.versions, resource_type, resource_id, since)
        url = f"{base}/{resource_type}/{resource_id}/_history"
        return render(request, history(base, url, hits, paging, items))

    async def vread(request: Request, resource_id: str, version_id: str) -> Response:
        hit = await run_in_threadpool(reader.version, resource_type, resource_id, version_id)
        return _version_response(request, hit, request.query_params.multi_items())

    name = resource_type.lower()
    for endpoint in (search_type, history_type, read, history_instance, vread):
        endpoint.__name__ = f"{name}_{endpoint.__name__}"  # unique OpenAPI operation ids per type
    prefix = f"/{resource_type}"
    route(prefix, search_type, f"Search {resource_type}", _search_openapi(resource_type))
    route(f"{prefix}/_history", history_type, f"History of every {resource_type}", HISTORY_OPENAPI)
    route(f"{prefix}/{{resource_id}}", read, f"Read a {resource_type}", READ_OPENAPI)
    route(f"{prefix}/{{resource_id}}/_history", history_instance, f"History of a {resource_type}", HISTORY_OPENAPI)
    route(f"{prefix}/{{resource_id}}/_history/{{version_id}}", vread, f"Read a version of a {resource_type}",
          READ_OPENAPI)


__all__ = ["FHIR_JSON", "FhirResponse", "FhirRoute", "Reader", "capability_statement", "fhir_router", "public_base",
           "render"]
