"""The registry endpoint over the one HTTP transport: package submission with an idempotency key, CRID assignment.

Timeouts, retries honouring ``Retry-After`` within ``Settings.retry_total_seconds``, the origin guard and the
one re-authentication after a 401 are ``bridge.http.Transport``'s; the token is ``bridge.auth.OAuth2Auth``'s.
What is the registry's own:

* **Token**: OAuth2 client-credentials grant (``registry_client_id`` + ``registry_client_secret``, HTTP Basic)
  or, when ``registry_username`` is set, the resource-owner password grant (client authenticated the same way
  when it has a secret, else ``client_id`` in the form). Kept in memory only, fetched again 60 s (at most half
  its lifetime) before it expires and once after a 401.
* **Origins**: the bearer token goes only to the scheme, host and port of ``registry_url``; the client secret
  and password only to ``registry_token_url``. Both URLs must be https (plain http for a loopback host only);
  paths are checked to stay on the registry origin. Redirects are not followed.
* **Resending**: a package POST carries ``Idempotency-Key`` (its content hash), which the registry
  de-duplicates on, so the transport may resend it; the CRID assignment is resent as well (it looks up or
  assigns the id of one de-identified patient, and the bridge keeps whichever answer arrives).
* **Answers**: 200/201/202 -> a ``Receipt``; 409 -> a ``Receipt`` with ``duplicate`` (already received);
  a second 401 or a 403 -> ``AuthError``; other 4xx -> ``ServerRejected`` (the package is at fault:
  permanent); 5xx and exhausted retries -> ``RemoteError`` / ``TransportError`` (transient). Logs
  (``bridge.registry``) and messages carry the method, path and status — never a body, a token or a secret.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from bridge.auth import OAuth2Auth, Requester
from bridge.client import outcome_issues
from bridge.config import Settings
from bridge.errors import AuthError, ConfigError, NotFHIR, RemoteError, ServerRejected
from bridge.http import Limits, Transport, origin_of, path_label
from bridge.registry.resources import PSEUDONYM_SYSTEM

log = logging.getLogger("bridge.registry")

MAX_RECEIPT_BYTES = 1_000_000
FHIR_JSON = "application/fhir+json"
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_LOOPBACK_NAMES = frozenset({"localhost"})

Json = dict[str, Any]


@dataclass(frozen=True)
class Receipt:
    """The registry's answer to one package."""

    status: int
    duplicate: bool
    received_at: str
    location: str | None = None
    id: str | None = None
    body: Json | None = None

    def as_json(self) -> Json:
        return {"status": self.status, "duplicate": self.duplicate, "receivedAt": self.received_at,
                "location": self.location, "id": self.id, "body": self.body}


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def checked_url(url: str | None, name: str) -> str:
    """An https URL (http only for a loopback host) without query or fragment; ``ConfigError`` otherwise."""
    if not url:
        raise ConfigError(f"{name} is not configured")
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host or parts.query or parts.fragment:
        raise ConfigError(f"{name} must be an http(s) URL without query or fragment")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ConfigError(f"{name} must use https (plain http only for a loopback host)")
    return url.rstrip("/")


def _json(resp: requests.Response) -> Any:
    if len(resp.content) > MAX_RECEIPT_BYTES:
        return None
    try:
        return resp.json()
    except ValueError:
        return None


def _now_iso(wall_clock: Callable[[], float]) -> str:
    return datetime.fromtimestamp(wall_clock(), UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------- token


def registry_tokens(settings: Settings, request: Requester, clock: Callable[[], float] = time.monotonic) -> OAuth2Auth:
    """The registry's token source from the ``registry_*`` settings; ``ConfigError`` naming what is missing."""
    url = checked_url(settings.registry_token_url, "registry_token_url")
    s = settings
    if s.registry_username and not s.registry_password:
        raise ConfigError("registry_username is set but registry_password is not")
    if not s.registry_username and not (s.registry_client_id and s.registry_client_secret):
        raise ConfigError("registry_client_id and registry_client_secret are needed (or registry_username "
                          "and registry_password for the password grant)")
    return OAuth2Auth(url, request, client_id=s.registry_client_id, client_secret=s.registry_client_secret,
                      username=s.registry_username, password=s.registry_password, scope=s.registry_scope,
                      name="registry", clock=clock)


# ---------------------------------------------------------------------------------------------- client


class RegistryClient:
    """The registry endpoint: ``submit(bundle, key)`` and ``assign_crid(patient, ccn)``."""

    def __init__(self, settings: Settings, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.base = checked_url(settings.registry_url, "registry_url")
        self.origin = origin_of(self.base)
        self.settings = settings
        self.transport = Transport(self.base, Limits.from_settings(settings), session=session, sleep=sleep,
                                   clock=clock, wall_clock=wall_clock, logger=log, label=path_label,
                                   server="the origin of registry_url")
        self.tokens = registry_tokens(settings, self.transport.plain, clock)
        self.transport.tokens = self.tokens
        self.wall_clock = wall_clock

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        """``base/path`` for a relative ``path``; ``ConfigError`` for anything that would leave the origin."""
        parts = urlsplit(path)
        if parts.scheme or parts.netloc or path.startswith("/") or ".." in path.split("/"):
            raise ConfigError("registry paths must be relative to registry_url")
        url = f"{self.base}/{path}"
        if origin_of(url) != self.origin:
            raise ConfigError("registry paths must stay on the origin of registry_url")
        return url

    def _post(self, url: str, body: Json, headers: Mapping[str, str], *,
              idempotent: bool | None = None) -> requests.Response:
        """POST JSON with the registry token (the transport: registry origin only, one new token after a 401)."""
        all_headers = {"Content-Type": f"{FHIR_JSON}; charset=utf-8", "Accept": FHIR_JSON, **headers}
        return self.transport.request("POST", url, json=body, headers=all_headers, idempotent=idempotent)

    def submit(self, bundle: Json, key: str) -> Receipt:
        """POST a package to ``registry_url/Bundle`` with ``Idempotency-Key: key``; its receipt, or an error."""
        url = self.url("Bundle")
        resp = self._post(url, bundle, {"Idempotency-Key": key})
        if resp.status_code in (200, 201, 202, 409):
            return self._receipt(resp)
        raise self._error(resp, url)

    def _receipt(self, resp: requests.Response) -> Receipt:
        body = _json(resp)
        body = body if isinstance(body, dict) else None
        location = resp.headers.get("Location") or resp.headers.get("Content-Location")
        rid = (body or {}).get("id") if isinstance((body or {}).get("id"), str) else None
        if location and not rid:
            rid = _location_id(location)
        return Receipt(resp.status_code, resp.status_code == 409, _now_iso(self.wall_clock), location, rid, body)

    def _error(self, resp: requests.Response, url: str) -> RemoteError:
        status = resp.status_code
        where = f"POST {path_label(url)}: {status}"
        issues = outcome_issues(_json(resp)) or []
        if status in (401, 403):
            return AuthError(f"{where} not authorised", issues=issues, status=status)
        if status < 400:
            return RemoteError(f"{where} redirect not followed; set the final registry_url", status=status)
        if status < 500:
            return ServerRejected(f"{where} rejected with {len(issues)} issue(s)", issues=issues, status=status)
        return RemoteError(f"{where} registry server error", issues=issues, status=status)

    def assign_crid(self, patient: Json, ccn: str) -> str:
        """The registry patient id for a de-identified Patient (``registry_crid_path``, a Parameters POST)."""
        url = self.url(self.settings.registry_crid_path)
        params = {"resourceType": "Parameters", "parameter": [{"name": "patient", "resource": patient},
                                                               {"name": "ccn", "valueString": ccn}]}
        resp = self._post(url, params, {}, idempotent=True)  # resendable: see the module docstring
        if resp.status_code != 200:
            raise self._error(resp, url)
        crid = crid_from(_json(resp))
        if crid is None:
            raise NotFHIR(f"POST {path_label(url)}: the answer holds no registry patient id", status=resp.status_code)
        return crid


def _location_id(location: str) -> str | None:
    parts = [p for p in urlsplit(location).path.split("/") if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    return parts[-1] if parts and _ID.match(parts[-1]) else None


def crid_from(body: Any) -> str | None:
    """The id in a ``Parameters`` answer (``identifier`` parameter) or a ``Patient`` answer (not the pseudonym)."""
    if not isinstance(body, dict):
        return None
    if body.get("resourceType") == "Parameters":
        values = [p.get("valueIdentifier") for p in body.get("parameter") or []
                  if isinstance(p, dict) and p.get("name") == "identifier"]
    elif body.get("resourceType") == "Patient":
        values = [i for i in body.get("identifier") or []
                  if isinstance(i, dict) and i.get("system") != PSEUDONYM_SYSTEM]
    else:
        return None
    found = [v.get("value") for v in values if isinstance(v, dict)]
    return next((str(v) for v in found if isinstance(v, str | int) and _ID.match(str(v))), None)


__all__ = ["Receipt", "RegistryClient", "checked_url", "crid_from", "registry_tokens"]
