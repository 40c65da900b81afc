"""HTTP to the registry: OAuth2 token, package submission with an idempotency key, CRID assignment.

* **Token** (``TokenSource``): OAuth2 client-credentials grant (``registry_client_id`` +
  ``registry_client_secret``, HTTP Basic) or, when ``registry_username`` is set, the resource-owner password
  grant (client authenticated the same way when it has a secret, else ``client_id`` in the form). The access
  token is kept in memory and fetched again ``REFRESH_MARGIN`` seconds (at most half its lifetime) before it
  expires, and at once after a 401. It is never written anywhere.
* **Origins**: the bearer token is attached only to requests whose scheme, host and port are those of
  ``registry_url``; the client secret and password go only to ``registry_token_url``. Both URLs must be https
  (plain http is accepted for a loopback host only). Redirects are not followed.
* **Retries**: connection errors, 429, 502, 503 and 504 are retried with exponential backoff (0.5 s, doubling,
  at most 30 s), honouring ``Retry-After``, at most ``Settings.retries`` times and within
  ``Settings.retry_total_seconds``; the ``sleep`` and clocks are injected. A package POST may be retried safely
  because it carries an ``Idempotency-Key`` header (its content hash) the registry de-duplicates on.
* **Answers**: 200/201/202 -> a ``Receipt``; 409 -> a ``Receipt`` with ``duplicate`` (already received);
  401 -> one new token and one retry, then ``AuthError``; 403 -> ``AuthError``; other 4xx -> ``ServerRejected``
  (the package is at fault: permanent); 5xx and exhausted retries -> ``RemoteError`` / ``TransportError``
  (transient). Messages carry the method, path and status — never a body, a token or a secret.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from bridge.client import origin_of, outcome_issues, retry_delay
from bridge.config import Settings
from bridge.errors import AuthError, ConfigError, NotFHIR, RemoteError, ServerRejected, TransportError
from bridge.registry.resources import PSEUDONYM_SYSTEM

log = logging.getLogger("bridge.registry")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
REFRESH_MARGIN = 60.0
DEFAULT_EXPIRES_IN = 300
MAX_RECEIPT_BYTES = 1_000_000
FHIR_JSON = "application/fhir+json"
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_OAUTH_ERROR = re.compile(r"^[a-z_]{1,40}$")
_LOOPBACK_NAMES = frozenset({"localhost"})

Json = dict[str, Any]
Outcome = requests.Response | requests.RequestException


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


# ---------------------------------------------------------------------------------------------- sending


@dataclass
class Sender:
    """One request with timeouts, retries, backoff and Retry-After; redirects never followed."""

    settings: Settings
    session: requests.Session
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time

    def send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        started, attempt = self.clock(), 0
        while True:
            outcome = self._attempt(method, url, kwargs)
            if not self._retryable(outcome):
                return self._response(outcome, method, url)
            delay = self._delay(outcome, attempt)
            if attempt >= self.settings.retries or self.clock() - started + delay > self.settings.retry_total_seconds:
                raise self._exhausted(outcome, method, url, attempt + 1)
            log.warning("%s %s: %s, retry %d in %.1f s", method, _path(url), _what(outcome), attempt + 1, delay)
            self.sleep(delay)
            attempt += 1

    def _attempt(self, method: str, url: str, kwargs: Mapping[str, Any]) -> Outcome:
        timeout = (self.settings.timeout_connect, self.settings.timeout_read)
        try:
            resp = self.session.request(method, url, **kwargs, timeout=timeout, allow_redirects=False)
        except requests.RequestException as exc:
            log.warning("%s %s: %s", method, _path(url), type(exc).__name__)
            return exc
        log.info("%s %s -> %d", method, _path(url), resp.status_code)
        return resp

    @staticmethod
    def _retryable(outcome: Outcome) -> bool:
        if isinstance(outcome, requests.Response):
            return outcome.status_code in RETRY_STATUSES
        return isinstance(outcome, requests.ConnectionError | requests.Timeout)

    def _delay(self, outcome: Outcome, attempt: int) -> float:
        return retry_delay(outcome, attempt, self.wall_clock())

    @staticmethod
    def _response(outcome: Outcome, method: str, url: str) -> requests.Response:
        if isinstance(outcome, requests.Response):
            return outcome
        raise TransportError(f"{method} {_path(url)}: {type(outcome).__name__}")

    @staticmethod
    def _exhausted(outcome: Outcome, method: str, url: str, attempts: int) -> TransportError:
        status = outcome.status_code if isinstance(outcome, requests.Response) else None
        return TransportError(f"{method} {_path(url)}: {_what(outcome)} after {attempts} attempt(s), giving up",
                              status=status)


def _what(outcome: Outcome) -> str:
    return str(outcome.status_code) if isinstance(outcome, requests.Response) else type(outcome).__name__


def _path(url: str) -> str:
    return urlsplit(url).path or "/"


# ---------------------------------------------------------------------------------------------- token


@dataclass(repr=False)
class TokenSource:
    """OAuth2 access tokens for the registry (client credentials or password grant), cached in memory."""

    settings: Settings
    sender: Sender
    clock: Callable[[], float] = time.monotonic
    _token: str | None = field(default=None, init=False)
    _refresh_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.url = checked_url(self.settings.registry_token_url, "registry_token_url")
        s = self.settings
        if s.registry_username and not s.registry_password:
            raise ConfigError("registry_username is set but registry_password is not")
        if not s.registry_username and not (s.registry_client_id and s.registry_client_secret):
            raise ConfigError("registry_client_id and registry_client_secret are needed (or registry_username "
                              "and registry_password for the password grant)")

    def __repr__(self) -> str:
        return f"TokenSource(url={self.url!r}, grant={self.grant!r})"

    @property
    def grant(self) -> str:
        return "password" if self.settings.registry_username else "client_credentials"

    def token(self) -> str:
        """The cached access token, fetched again when missing or about to expire."""
        if self._token is None or self.clock() >= self._refresh_at:
            return self._fetch()
        return self._token

    def invalidate(self) -> None:
        self._token = None

    def _form(self) -> tuple[dict[str, str], tuple[str, str] | None]:
        s = self.settings
        form = {"grant_type": self.grant}
        if s.registry_username:
            form.update(username=s.registry_username, password=s.registry_password or "")
        if s.registry_scope:
            form["scope"] = s.registry_scope
        if s.registry_client_id and s.registry_client_secret:
            return form, (s.registry_client_id, s.registry_client_secret)
        if s.registry_client_id:
            form["client_id"] = s.registry_client_id
        return form, None

    def _fetch(self) -> str:
        form, basic = self._form()
        started = self.clock()
        resp = self.sender.send("POST", self.url, data=form, auth=basic, headers={"Accept": "application/json"})
        token, expires_in = parse_token(resp)
        self._token = token
        self._refresh_at = started + expires_in - min(REFRESH_MARGIN, expires_in / 2)
        log.info("registry access token obtained (%s grant), valid %d s", self.grant, expires_in)
        return token


def parse_token(resp: requests.Response) -> tuple[str, int]:
    """(access token, lifetime in seconds) from a token endpoint answer, or ``AuthError``."""
    body = _json(resp)
    body = body if isinstance(body, dict) else {}
    if resp.status_code != 200:
        code = body.get("error")
        detail = f" ({code})" if isinstance(code, str) and _OAUTH_ERROR.match(code) else ""
        raise AuthError(f"registry token endpoint refused us: {resp.status_code}{detail}", status=resp.status_code)
    token = body.get("access_token")
    if not isinstance(token, str) or not token or str(body.get("token_type", "bearer")).lower() != "bearer":
        raise AuthError("registry token endpoint answer has no bearer access_token", status=resp.status_code)
    expires_in = body.get("expires_in", DEFAULT_EXPIRES_IN)
    if not isinstance(expires_in, int | float) or isinstance(expires_in, bool) or expires_in <= 0:
        expires_in = DEFAULT_EXPIRES_IN
    return token, int(expires_in)


# ---------------------------------------------------------------------------------------------- client


class RegistryClient:
    """The registry endpoint: ``submit(bundle, key)`` and ``assign_crid(patient, ccn)``."""

    def __init__(self, settings: Settings, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.base = checked_url(settings.registry_url, "registry_url")
        self.origin = origin_of(self.base)
        self.settings = settings
        self._own_session = session is None
        self.sender = Sender(settings, session or requests.Session(), sleep, clock, wall_clock)
        self.tokens = TokenSource(settings, self.sender, clock)
        self.wall_clock = wall_clock

    def close(self) -> None:
        if self._own_session:
            self.sender.session.close()

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

    def _post(self, url: str, body: Json, headers: Mapping[str, str]) -> requests.Response:
        """POST with the bearer token (registry origin only); one new token and one retry after a 401."""
        if origin_of(url) != self.origin:
            raise ConfigError("the bearer token is only ever sent to the origin of registry_url")
        resp = self._send_authorised(url, body, headers)
        if resp.status_code == 401:
            log.info("POST %s: 401, fetching a new registry token and retrying once", _path(url))
            self.tokens.invalidate()
            resp = self._send_authorised(url, body, headers)
        return resp

    def _send_authorised(self, url: str, body: Json, headers: Mapping[str, str]) -> requests.Response:
        all_headers = {"Content-Type": f"{FHIR_JSON}; charset=utf-8", "Accept": FHIR_JSON, **headers,
                       "Authorization": f"Bearer {self.tokens.token()}"}
        return self.sender.send("POST", url, json=body, headers=all_headers)

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
        where = f"POST {_path(url)}: {status}"
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
        resp = self._post(url, params, {})
        if resp.status_code != 200:
            raise self._error(resp, url)
        crid = crid_from(_json(resp))
        if crid is None:
            raise NotFHIR(f"POST {_path(url)}: the answer holds no registry patient id", status=resp.status_code)
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


__all__ = ["RETRY_STATUSES", "Receipt", "RegistryClient", "Sender", "TokenSource", "checked_url", "crid_from",
           "parse_token"]
