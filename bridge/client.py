"""The FHIR R4 REST client: FHIR interactions over the one HTTP transport (``bridge.http.Transport``).

The transport holds every safeguard — connect and read timeouts, retries honouring ``Retry-After`` within a time
budget, the idempotency rule, the origin guard, one re-authentication on 401 — so this module is only FHIR:

* URLs are built from checked resource types and ids; search follows ``next`` links, each checked to be on the
  base URL's origin (``ForeignHost`` otherwise, before a byte is sent) and never visited twice.
* Writes say whether they may be resent: a plain POST create is not idempotent, a conditional create carries
  ``If-None-Exist`` and is; a transaction is only when every entry is (PUT, DELETE, GET, conditional POST).
* Authentication is the ``bridge.auth`` token source the settings describe (none, a static bearer token, SMART
  Backend Services), its discovery and token requests sent through the same transport without a token.
* Answers become ``FhirResult`` or an error of ``bridge.errors``: an OperationOutcome becomes
  ``ServerRejected`` / ``AuthError`` (401, 403) / ``Conflict`` (409, 412) with its issues; a redirect is not
  followed; anything that is not FHIR JSON becomes ``NotFHIR`` carrying only the status and content type.
* Logs (``bridge.client``) and messages name the method, the resource path and the status — never a body
  and never a query string, which may hold an identifier.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests

from bridge.auth import Auth, auth_from_settings
from bridge.config import Settings
from bridge.errors import (
    AuthError,
    ConfigError,
    Conflict,
    InputError,
    Issue,
    NotFHIR,
    RemoteError,
    ServerRejected,
)
from bridge.http import IDEMPOTENT_METHODS, Limits, Transport, origin_of, retry_after_seconds, retry_delay

log = logging.getLogger("bridge.client")

FHIR_JSON = "application/fhir+json"
FHIR_JSON_UTF8 = f"{FHIR_JSON}; charset=utf-8"
JSON_MEDIA_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
_RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_ETAG = re.compile(r'^(?:W/)?"?([^"]*)"?$')
_SCHEMES = ("http", "https")

QueryParams = Mapping[str, Any] | Sequence[tuple[str, Any]]
Criteria = str | Mapping[str, str] | Sequence[tuple[str, str]]


@dataclass(frozen=True)
class FhirResult:
    """A parsed FHIR answer plus the version information of its headers."""

    resource: dict[str, Any]
    status: int
    etag: str | None = None
    location: str | None = None

    @property
    def created(self) -> bool:
        """True when the server made a new resource (201), False when it matched or updated one."""
        return self.status == 201

    @property
    def version_id(self) -> str | None:
        """The version from the ETag, else from ``meta.versionId``."""
        meta = self.resource.get("meta")
        from_meta = meta.get("versionId") if isinstance(meta, dict) else None
        return parse_etag(self.etag) or (str(from_meta) if from_meta else None)

    @property
    def id(self) -> str | None:
        """The logical id from the body, else from the Location header (``Type/id/_history/v``)."""
        if self.resource.get("id"):
            return str(self.resource["id"])
        return location_id(self.location)


def parse_etag(etag: str | None) -> str | None:
    """``W/"3"`` (or ``"3"``, or ``3``) -> ``"3"``."""
    match = _ETAG.match(etag.strip()) if etag else None
    return (match.group(1) or None) if match else None


def weak_etag(version: str) -> str:
    """A version id as the weak ETag FHIR expects in If-Match: ``W/"3"``; an ETag is passed through."""
    return version if version.startswith(('W/"', '"')) else f'W/"{version}"'


def location_id(location: str | None) -> str | None:
    """The logical id in a Location header ``[base]/Type/id[/_history/vid]``."""
    if not location:
        return None
    parts = urlsplit(location).path.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        return parts[-3]
    return parts[-1] if len(parts) >= 2 else None


def outcome_issues(body: Any) -> list[Issue] | None:
    """The issues of an OperationOutcome as ``Issue``; None when ``body`` is not an OperationOutcome."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None
    return [_issue(raw) for raw in body.get("issue") or [] if isinstance(raw, dict)]


def _issue(raw: dict[str, Any]) -> Issue:
    details = raw.get("details")
    text = raw.get("diagnostics") or (details.get("text") if isinstance(details, dict) else None) or ""
    paths = raw.get("expression") or raw.get("location") or []
    return Issue(
        code=str(raw.get("code") or "processing"),
        diagnostics=str(text),
        expression=tuple(str(p) for p in paths if isinstance(p, str)),
        severity=str(raw.get("severity") or "error"),
    )


def _transaction_is_idempotent(bundle: Mapping[str, Any]) -> bool:
    """A transaction may be resent when every entry is idempotent (PUT/DELETE/GET or conditional POST)."""
    for entry in bundle.get("entry") or []:
        request = (entry.get("request") or {}) if isinstance(entry, dict) else {}
        method = str(request.get("method", "")).upper()
        if method not in IDEMPOTENT_METHODS and not (method == "POST" and request.get("ifNoneExist")):
            return False
    return True


def _criteria_pairs(criteria: Criteria) -> list[tuple[str, str]]:
    if isinstance(criteria, str):
        return parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
    if isinstance(criteria, Mapping):
        return [(str(k), str(v)) for k, v in criteria.items()]
    return [(str(k), str(v)) for k, v in criteria]


def _query_string(criteria: Criteria) -> str:
    """Search criteria as a query string, readable (``identifier=sys|val``) yet safe in a header."""
    return urlencode(_criteria_pairs(criteria), safe=":/|,$")


def _media_type(resp: requests.Response) -> str:
    return resp.headers.get("Content-Type", "").split(";")[0].strip().lower()[:80]


@dataclass(eq=False)
class FhirClient:
    """A synchronous FHIR R4 client bound to one base URL.

    ``FhirClient(base_url, settings, session, sleep, clock)``; ``auth`` overrides the token source the settings
    describe, ``wall_clock`` (epoch seconds) is used for JWT claims and HTTP-date Retry-After values. Every
    request goes through ``transport`` (``bridge.http.Transport``).
    """

    base_url: str
    settings: Settings = field(default_factory=Settings, repr=False)
    session: requests.Session | None = None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    auth: Auth | None = field(default=None, repr=False)
    wall_clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.base_url = self._checked_base(self.base_url)
        self.transport = Transport(
            self.base_url,
            Limits.from_settings(self.settings),
            session=self.session,
            sleep=self.sleep,
            clock=self.clock,
            wall_clock=self.wall_clock,
            logger=log,
            server="the configured FHIR server",
        )
        if self.auth is None:
            plain = self.transport.plain
            self.auth = auth_from_settings(self.settings, self.base_url, plain, self.clock, self.wall_clock)
        self.transport.tokens = self.auth

    @property
    def http(self) -> requests.Session:
        """The ``requests`` session under the transport."""
        return self.transport.session

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> FhirClient:
        """A client for ``settings.ehr_base_url`` with the authentication the settings describe."""
        if not settings.ehr_base_url:
            raise ConfigError("ehr_base_url is not configured")
        return cls(settings.ehr_base_url, settings, **kwargs)

    @staticmethod
    def _checked_base(url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES or not parts.hostname or parts.query or parts.fragment:
            raise ConfigError("the FHIR base URL must be an http(s) URL without query or fragment")
        return url.rstrip("/")

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ interactions

    def capabilities(self) -> dict[str, Any]:
        """The server's CapabilityStatement (``GET [base]/metadata``)."""
        return self._get(f"{self.base_url}/metadata").resource

    def read(self, resource_type: str, resource_id: str) -> FhirResult:
        return self._get(self._url(resource_type, resource_id))

    def vread(self, resource_type: str, resource_id: str, version_id: str) -> FhirResult:
        return self._get(self._url(resource_type, resource_id, "_history", version_id))

    def delete(self, resource_type: str, resource_id: str) -> FhirResult:
        url = self._url(resource_type, resource_id)
        return self._result(self._request("DELETE", url), "DELETE", url)

    def create(self, resource: Mapping[str, Any], *, if_none_exist: Criteria | None = None) -> FhirResult:
        """POST a resource; with ``if_none_exist`` a conditional create (200 + the match when one exists)."""
        headers = {"If-None-Exist": _query_string(if_none_exist)} if if_none_exist else {}
        url = self._url(self._type_of(resource))
        return self._write("POST", url, resource, headers)  # resent after a failure only with If-None-Exist

    def update(self, resource: Mapping[str, Any], *, if_match: str | None = None) -> FhirResult:
        """PUT a resource by its id; ``if_match`` (a version id or ETag) makes it a version-aware update."""
        url = self._url(self._type_of(resource), self._id_of(resource))
        headers = {"If-Match": weak_etag(if_match)} if if_match else {}
        return self._write("PUT", url, resource, headers)

    def conditional_update(self, resource: Mapping[str, Any], criteria: Criteria) -> FhirResult:
        """``PUT [base]/Type?criteria``: update the one match, or create when there is none."""
        pairs = _criteria_pairs(criteria)
        if not pairs:
            raise InputError("a conditional update needs search criteria")
        url = self._url(self._type_of(resource))
        return self._write("PUT", url, resource, {}, params=pairs)

    def update_with_retry(
        self, resource_type: str, resource_id: str, mutate: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> FhirResult:
        """Read, ``mutate``, update with If-Match; on a version conflict re-read and re-apply once."""
        try:
            return self._read_mutate_update(resource_type, resource_id, mutate)
        except Conflict:
            log.info("PUT %s/%s: version conflict, re-reading once", resource_type, resource_id)
            return self._read_mutate_update(resource_type, resource_id, mutate)

    def transaction(self, bundle: Mapping[str, Any]) -> FhirResult:
        """POST a transaction (or batch) Bundle to the base; the result holds the response Bundle."""
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") not in ("transaction", "batch"):
            raise InputError("transaction() needs a Bundle of type transaction or batch")
        result = self._write("POST", self.base_url, bundle, {}, idempotent=_transaction_is_idempotent(bundle))
        self._expect_type(result, "Bundle", "POST", self.base_url)
        return result

    def search(
        self, resource_type: str, params: QueryParams | None = None, *, matches_only: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Every resource of every page (matches and includes, or only matches), following ``next`` links."""
        url: str | None = self._url(resource_type)
        seen: set[str] = set()
        while url is not None:
            page = self._get(url, params)
            self._expect_type(page, "Bundle", "GET", url)
            yield from self._page_resources(page.resource, resource_type, matches_only)
            url, params = self._next_page(page.resource, seen), None

    # ------------------------------------------------------------------ helpers of the interactions

    def _read_mutate_update(
        self, resource_type: str, resource_id: str, mutate: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> FhirResult:
        current = self.read(resource_type, resource_id)
        changed = mutate(copy.deepcopy(current.resource))
        if changed.get("id") != resource_id or changed.get("resourceType") != resource_type:
            raise InputError(f"the update of {resource_type}/{resource_id} changed its type or id")
        return self.update(changed, if_match=current.version_id)

    def _page_resources(
        self, bundle: Mapping[str, Any], resource_type: str, matches_only: bool
    ) -> Iterator[dict[str, Any]]:
        wanted = ("match",) if matches_only else ("match", "include")
        for entry in bundle.get("entry") or []:
            mode = (entry.get("search") or {}).get("mode", "match")
            if mode == "outcome":
                issues = outcome_issues(entry.get("resource")) or []
                log.debug("search %s: the server reported %d issue(s) with the search", resource_type, len(issues))
            elif mode in wanted and isinstance(entry.get("resource"), dict):
                yield entry["resource"]

    def _next_page(self, bundle: Mapping[str, Any], seen: set[str]) -> str | None:
        links = [link for link in bundle.get("link") or [] if isinstance(link, dict)]
        target = next((link.get("url") for link in links if link.get("relation") == "next"), None)
        if not target:
            return None
        url = urljoin(self.base_url + "/", str(target))
        self._check_origin(url, "a search 'next' link")
        url = urlunsplit(urlsplit(url)._replace(netloc=urlsplit(self.base_url).netloc))  # same origin, same spelling
        if url in seen:
            raise RemoteError("search paging loops: a 'next' link repeats", status=None)
        seen.add(url)
        return url

    def _get(self, url: str, params: QueryParams | None = None) -> FhirResult:
        return self._result(self._request("GET", url, params=params), "GET", url)

    def _write(
        self,
        method: str,
        url: str,
        resource: Mapping[str, Any],
        headers: dict[str, str],
        *,
        idempotent: bool | None = None,
        params: QueryParams | None = None,
    ) -> FhirResult:
        body = json.dumps(resource, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": FHIR_JSON_UTF8, "Prefer": "return=representation", **headers}
        resp = self._request(method, url, params=params, data=body, headers=headers, idempotent=idempotent)
        return self._result(resp, method, url)

    def _url(self, resource_type: str, *parts: str) -> str:
        if not _RESOURCE_TYPE.match(resource_type):
            raise InputError("not a FHIR resource type name")
        for part in parts:
            if part != "_history" and not _ID.match(part):
                raise InputError(f"{resource_type}: not a valid FHIR id or version id")
        return "/".join([self.base_url, resource_type, *parts])

    @staticmethod
    def _type_of(resource: Mapping[str, Any]) -> str:
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            raise InputError("the resource has no resourceType")
        return rtype

    def _id_of(self, resource: Mapping[str, Any]) -> str:
        rid = resource.get("id")
        if not isinstance(rid, str) or not rid:
            raise InputError(f"{self._type_of(resource)}: an update needs the resource id")
        return rid

    # ------------------------------------------------------------------ through the transport

    def _request(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """One authenticated FHIR request to the base origin (the transport's rules; FHIR JSON accepted)."""
        headers = {"Accept": FHIR_JSON, **(headers or {})}
        return self.transport.request(method, url, idempotent=idempotent, headers=headers, **kwargs)

    def _check_origin(self, url: str, what: str) -> None:
        self.transport.check_origin(url, what)

    def _label(self, url: str) -> str:
        return self.transport.label(url)

    # ------------------------------------------------------------------ answers

    def _result(self, resp: requests.Response, method: str, url: str) -> FhirResult:
        if resp.status_code >= 300:
            raise self.error(resp, method, url)
        body = self._body(resp, method, url)
        return FhirResult(body, resp.status_code, resp.headers.get("ETag"), resp.headers.get("Location"))

    def _body(self, resp: requests.Response, method: str, url: str) -> dict[str, Any]:
        """The JSON resource of a success answer ({} when empty); NotFHIR for anything else."""
        if not resp.content:
            return {}
        body = self._json(resp)
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise self._not_fhir(resp, method, url)
        return body

    @staticmethod
    def _json(resp: requests.Response) -> Any:
        if _media_type(resp) not in JSON_MEDIA_TYPES | {""}:
            return None
        try:
            return resp.json()
        except ValueError:
            return None

    def error(self, resp: requests.Response, method: str, url: str) -> RemoteError:
        """The bridge error for an answer that is not a success (3xx-5xx), by status and OperationOutcome."""
        status = resp.status_code
        issues = outcome_issues(self._json(resp))
        where = f"{method} {self._label(url)}: {status}"
        if status < 400:
            return RemoteError(f"{where} redirect not followed; set the final base URL", status=status)
        if status in (401, 403):
            return AuthError(f"{where} not authorised", issues=issues or [], status=status)
        if status in (409, 412):
            return Conflict(f"{where} conflict (stale version or ambiguous match)", issues=issues or [], status=status)
        if issues is None:
            return self._not_fhir(resp, method, url)
        return ServerRejected(f"{where} rejected with {len(issues)} issue(s)", issues=issues, status=status)

    def _not_fhir(self, resp: requests.Response, method: str, url: str) -> NotFHIR:
        kind = _media_type(resp) or "no content type"
        return NotFHIR(
            f"{method} {self._label(url)}: {resp.status_code} answer is {kind}, not FHIR JSON",
            status=resp.status_code,
        )

    def _expect_type(self, result: FhirResult, resource_type: str, method: str, url: str) -> None:
        if result.resource.get("resourceType") != resource_type:
            raise NotFHIR(f"{method} {self._label(url)}: expected a {resource_type}", status=result.status)


__all__ = [  # origin_of, retry_after_seconds and retry_delay live in bridge.http; re-exported for callers
    "FHIR_JSON",
    "FhirClient",
    "FhirResult",
    "location_id",
    "origin_of",
    "outcome_issues",
    "parse_etag",
    "retry_after_seconds",
    "retry_delay",
    "weak_etag",
]
