"""The bridge's own published resources, served read-only as FHIR R4 under ``/fhir``.

* ``GET /fhir/metadata`` — the CapabilityStatement (public, as FHIR servers do);
* ``GET /fhir/ResearchStudy``, ``GET /fhir/ResearchStudy/{id}``;
* ``GET /fhir/ResearchSubject?study=&patient=&status=`` (``_count``, ``_offset`` for paging),
  ``GET /fhir/ResearchSubject/{id}``.

Everything but ``metadata`` needs ``Authorization: Bearer <Settings.api_token>`` (constant-time check;
without a configured token the API refuses every request). The resources are those the bridge wrote to the
EHR, as recorded in the store's ``published`` table (``PublishedIndex.put_published``); ``id`` is the EHR's id.
An unknown search parameter is an error (400), not silently ignored.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from bridge import __version__
from bridge.config import Settings
from bridge.errors import InputError, Issue
from bridge.service.channels import bearer, token_matches
from bridge.state import PublishedIndex, PublishedRecord

FHIR_JSON = "application/fhir+json"
SERVED_TYPES = ("ResearchStudy", "ResearchSubject")
SEARCH_PARAMS: dict[str, dict[str, str]] = {
    "ResearchStudy": {},
    "ResearchSubject": {"study": "ResearchStudy", "patient": "Patient", "status": ""},
}
CONTROL_PARAMS = frozenset({"_count", "_offset", "_format"})
DEFAULT_COUNT, MAX_COUNT = 100, 1000
CAPABILITY_DATE = "2026-01-01"
Json = dict[str, Any]


class FhirResponse(JSONResponse):
    media_type = FHIR_JSON


def _problem(code: str, message: str, where: str) -> InputError:
    return InputError(message, issue_code=code, issues=[Issue(code, message, (where,))])


def capability_statement(base_url: str) -> Json:
    searches = {"study": "reference", "patient": "reference", "status": "token"}
    resources = [{"type": rtype, "interaction": [{"code": "read"}, {"code": "search-type"}],
                  "searchParam": [{"name": n, "type": searches[n]} for n in SEARCH_PARAMS[rtype]]}
                 for rtype in SERVED_TYPES]
    for res in resources:
        if not res["searchParam"]:
            del res["searchParam"]
    return {
        "resourceType": "CapabilityStatement", "status": "active", "date": CAPABILITY_DATE, "kind": "instance",
        "software": {"name": "cd7-bridge", "version": __version__},
        "implementation": {"description": "cd7-bridge: published pre-screening results (read-only)",
                           "url": base_url},
        "fhirVersion": "4.0.1", "format": ["json"],
        "rest": [{"mode": "server", "security": {
            "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                     "code": "OAuth", "display": "OAuth"}]}],
            "description": "Bearer token (the bridge's api_token) on every request except metadata."},
            "resource": resources}],
    }


def _served(record: PublishedRecord) -> Json:
    resource = dict(record.resource)
    resource["id"] = record.resource_id or resource.get("id")
    return resource


def _reference_value(name: str, value: str, target: str) -> str:
    """``study=ResearchStudy/x`` or ``study=x`` -> ``ResearchStudy/x``."""
    parts = value.rstrip("/").split("/")
    if len(parts) == 1:
        return f"{target}/{parts[0]}"
    if parts[-2] != target:
        raise _problem("invalid", f"the {name} parameter must reference a {target}", name)
    return f"{target}/{parts[-1]}"


def _int_param(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise _problem("invalid", f"{name} must be a non-negative integer", name)
    return min(int(raw), maximum)


def _filters(request: Request, resource_type: str) -> dict[str, str]:
    allowed = SEARCH_PARAMS[resource_type]
    filters: dict[str, str] = {}
    for name in request.query_params:
        values = request.query_params.getlist(name)
        if name in CONTROL_PARAMS:
            continue
        if name not in allowed:
            raise _problem("invalid", f"unknown search parameter for {resource_type}: {name}", name)
        if len(values) != 1 or not values[0]:
            raise _problem("invalid", f"give the {name} parameter exactly once, with a value", name)
        target = allowed[name]
        filters[name] = _reference_value(name, values[0], target) if target else values[0]
    return filters


def _bundle(request: Request, resource_type: str, records: list[PublishedRecord], count: int,
            offset: int) -> Json:
    base = str(request.base_url).rstrip("/") + "/fhir"
    page = records[offset:offset + count]
    link = [{"relation": "self", "url": str(request.url)}]
    if offset + count < len(records):
        nxt = request.url.include_query_params(_offset=str(offset + count), _count=str(count))
        link.append({"relation": "next", "url": str(nxt)})
    entries = [{"fullUrl": f"{base}/{resource_type}/{r.resource_id}", "resource": _served(r),
                "search": {"mode": "match"}} for r in page]
    return {"resourceType": "Bundle", "type": "searchset", "total": len(records), "link": link, "entry": entries}


def fhir_router(store: PublishedIndex, settings: Settings) -> APIRouter:
    """The ``/fhir`` routes over ``store``, guarded by ``settings.api_token``."""

    def authorised(request: Request) -> None:
        if not settings.api_token:
            raise _problem("security", "the FHIR API is disabled: no api_token is configured", "Authorization")
        if not token_matches(settings.api_token, bearer(request.headers.get("authorization"))):
            raise _problem("security", "a valid bearer token is required", "Authorization")

    router = APIRouter(prefix="/fhir", tags=["FHIR (read-only)"])
    guarded = [Depends(authorised)]

    @router.get("/metadata", response_class=FhirResponse, summary="CapabilityStatement (no authentication)")
    def metadata(request: Request) -> FhirResponse:
        return FhirResponse(capability_statement(str(request.base_url).rstrip("/") + "/fhir"))

    async def search(request: Request, resource_type: str) -> FhirResponse:
        filters = _filters(request, resource_type)
        count = _int_param(request, "_count", DEFAULT_COUNT, MAX_COUNT)
        offset = _int_param(request, "_offset", 0, 10**9)
        records = await run_in_threadpool(store.find_published, resource_type, None, **filters)
        return FhirResponse(_bundle(request, resource_type, records, count, offset))

    async def read(resource_type: str, resource_id: str) -> FhirResponse:
        records = await run_in_threadpool(store.find_published, resource_type, resource_id)
        if not records:
            raise _problem("not-found", f"{resource_type}/{resource_id} is not known", f"{resource_type}.id")
        return FhirResponse(_served(records[0]))

    @router.get("/ResearchStudy", dependencies=guarded, response_class=FhirResponse, summary="Search studies")
    async def search_studies(request: Request) -> FhirResponse:
        return await search(request, "ResearchStudy")

    @router.get("/ResearchStudy/{resource_id}", dependencies=guarded, response_class=FhirResponse,
                summary="Read a study")
    async def read_study(resource_id: str) -> FhirResponse:
        return await read("ResearchStudy", resource_id)

    @router.get("/ResearchSubject", dependencies=guarded, response_class=FhirResponse,
                summary="Search subjects by study, patient, status")
    async def search_subjects(request: Request) -> FhirResponse:
        return await search(request, "ResearchSubject")

    @router.get("/ResearchSubject/{resource_id}", dependencies=guarded, response_class=FhirResponse,
                summary="Read a subject")
    async def read_subject(resource_id: str) -> FhirResponse:
        return await read("ResearchSubject", resource_id)

    return router


__all__ = ["FHIR_JSON", "FhirResponse", "capability_statement", "fhir_router"]
