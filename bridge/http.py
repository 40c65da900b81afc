"""The one HTTP transport: every request the bridge makes — to the EHR's FHIR server, its SMART token endpoint,
a bulk-export file store, the registry and its OAuth2 token endpoint — goes through ``Transport``.

One place for the rules, so a client cannot forget one and two clients cannot drift apart:

* **Timeouts.** Every request has a connect and a read timeout (``Limits``, from ``Settings.timeout_connect`` /
  ``timeout_read``).
* **Retries.** Connection errors, timeouts, 429 and 502/503/504 are retried with exponential backoff (0.5 s,
  doubling, at most 30 s), or after the server's ``Retry-After`` (delta-seconds or an HTTP date), at most
  ``Limits.retries`` times and only while the waits stay within ``Limits.total_seconds``.
* **Idempotency.** GET, HEAD, OPTIONS, PUT and DELETE are idempotent; a POST is only when it carries an
  ``Idempotency-Key`` or ``If-None-Exist`` header (the server de-duplicates or matches it); a caller that knows
  better says so (``idempotent=``: a transaction of idempotent entries, a token request). A request that is not
  idempotent is resent only when the server cannot have acted on it: the connection was never made, or it
  answered 429 or 503.
* **Origin guard.** ``request`` carries the token source's credentials and goes only to the origin (scheme, host,
  port) of the base URL: any other URL — a paging ``next`` link, a status URL — raises ``ForeignHost`` before a
  byte is sent. ``send`` goes anywhere and never carries credentials: an ``Authorization`` header from the
  session, a session ``auth`` or a ``~/.netrc`` entry is stripped. Redirects are never followed, so nothing is
  carried to the origin a ``Location`` names; the client turns a 3xx into an error.
* **Re-authentication.** After a 401 to ``request``, a token source that can refresh (``TokenSource.refreshable``)
  forgets its token and the request is sent once more with a fresh one; a second 401 is the caller's answer.

The transport returns ``requests.Response`` (or raises ``TransportError`` / ``ForeignHost``); what an answer
means — FHIR resource, OperationOutcome, registry receipt — is the client's business. Logs name the method,
the path and the status (``-> 200 in 35 ms``), never a query string, a body or a header value; messages the
same. Sleeps and clocks are injected.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase
from urllib3.exceptions import MaxRetryError, NewConnectionError

from bridge.config import Settings
from bridge.errors import ForeignHost, TransportError

log = logging.getLogger("bridge.http")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
UNPROCESSED_STATUSES = frozenset({429, 503})  # the server did not act: safe to resend even a plain POST
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
IDEMPOTENCY_HEADERS = ("idempotency-key", "if-none-exist")
BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0
_DEFAULT_PORTS = {"http": 80, "https": 443}

Outcome = requests.Response | requests.RequestException
Origin = tuple[str, str, int | None]


class TokenSource(Protocol):
    """What the transport asks of a way to authenticate (``bridge.auth``: none, a static bearer token, SMART
    Backend Services, OAuth2 client credentials or password)."""

    refreshable: bool  # can a 401 be cured by fetching a new token?

    def headers(self) -> dict[str, str]: ...

    def invalidate(self) -> None: ...


@dataclass(frozen=True)
class Limits:
    """Timeouts (seconds), the number of retries and the retry time budget of every request."""

    connect: float = 5.0
    read: float = 30.0
    retries: int = 4
    total_seconds: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(settings.timeout_connect, settings.timeout_read, settings.retries, settings.retry_total_seconds)


class _NoCredentials(AuthBase):
    """Stands in for "no auth" so neither a session's ``auth`` nor a ``~/.netrc`` entry adds credentials."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        return r


_NO_CREDENTIALS = _NoCredentials()


def origin_of(url: str) -> Origin:
    """(scheme, host, port) with the scheme's default port filled in; host lower-cased."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        port = -1  # an unparsable port never equals the base's
    return scheme, (parts.hostname or "").lower(), port


def path_label(url: str) -> str:
    """The path of ``url`` (no host, no query): how a request is named in logs and messages."""
    return urlsplit(url).path or "/"


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def retry_delay(outcome: Outcome, attempt: int, now: float) -> float:
    """How long to wait before retry ``attempt`` (0-based): the server's ``Retry-After`` when it gave one,
    else exponential backoff from ``BACKOFF_FIRST`` capped at ``BACKOFF_CAP`` seconds."""
    if isinstance(outcome, requests.Response):
        asked = retry_after_seconds(outcome.headers.get("Retry-After"), now)
        if asked is not None:
            return asked
    return float(min(BACKOFF_CAP, BACKOFF_FIRST * 2**attempt))


def is_idempotent(method: str, headers: Mapping[str, str] | None = None) -> bool:
    """The idempotency rule: the safe methods, PUT and DELETE, and a POST the server de-duplicates or matches."""
    method = method.upper()
    if method in IDEMPOTENT_METHODS:
        return True
    names = {name.lower() for name, value in (headers or {}).items() if value}
    return method == "POST" and any(name in names for name in IDEMPOTENCY_HEADERS)


def never_sent(exc: requests.RequestException) -> bool:
    """True when the connection was never established, so the server cannot have seen the request."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    return isinstance(reason, MaxRetryError) and isinstance(reason.reason, NewConnectionError)


def retryable(outcome: Outcome, idempotent: bool) -> bool:
    """Whether ``outcome`` may be retried under the idempotency rule."""
    if isinstance(outcome, requests.Response):
        return outcome.status_code in (RETRY_STATUSES if idempotent else UNPROCESSED_STATUSES)
    if not isinstance(outcome, requests.ConnectionError | requests.Timeout):
        return False
    return idempotent or never_sent(outcome)


def _what(outcome: Outcome) -> str:
    return str(outcome.status_code) if isinstance(outcome, requests.Response) else type(outcome).__name__


class Transport:
    """One ``requests`` session bound to the origin of ``base_url``, with every rule of the module docstring.

    ``request`` (credentials, this origin only, one re-authentication on 401) and ``send`` (no credentials, any
    origin) both time out, retry and log the same way; ``plain`` is ``send`` shaped for a token source
    (``bridge.auth.Requester``). ``logger`` and ``label`` let each client keep its own log name and the way it
    names paths; ``server`` names the configured server in a ``ForeignHost`` message.
    """

    def __init__(
        self,
        base_url: str,
        limits: Limits | None = None,
        *,
        session: requests.Session | None = None,
        tokens: TokenSource | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        logger: logging.Logger = log,
        label: Callable[[str], str] | None = None,
        server: str = "the configured server",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.origin = origin_of(self.base_url)
        self.limits = limits or Limits()
        self.tokens = tokens
        self.sleep, self.clock, self.wall_clock = sleep, clock, wall_clock
        self.log = logger
        self.server = server
        self._label = label
        self._base_path = urlsplit(self.base_url).path.rstrip("/")
        self._own_session = session is None
        self.session = session or requests.Session()

    def close(self) -> None:
        """Close the session when the transport made it (a session handed in belongs to the caller)."""
        if self._own_session:
            self.session.close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the three ways to send

    def request(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """A request with the token source's credentials to the configured origin (``ForeignHost`` otherwise);
        after a 401, one fresh token and one more try when the source can refresh."""
        self.check_origin(url, "a request")
        once = is_idempotent(method, headers) if idempotent is None else idempotent
        resp = self._send(method, url, True, once, dict(headers or {}), kwargs)
        if resp.status_code == 401 and self.tokens is not None and self.tokens.refreshable:
            self.log.info("%s %s: 401, fetching a new access token and retrying once", method, self.label(url))
            self.tokens.invalidate()
            resp = self._send(method, url, True, once, dict(headers or {}), kwargs)
        return resp

    def send(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool | None = None,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """A request without credentials to any origin (a token endpoint, a file store), same limits and retries.
        Only an explicit ``auth=`` (HTTP Basic client credentials for a token endpoint) is sent."""
        once = is_idempotent(method, headers) if idempotent is None else idempotent
        return self._send(method, url, False, once, dict(headers or {}), kwargs)

    def plain(
        self,
        method: str,
        url: str,
        *,
        data: Mapping[str, str] | None = None,
        idempotent: bool = True,
        basic: tuple[str, str] | None = None,
    ) -> requests.Response:
        """``send`` for SMART discovery and token endpoints: JSON accepted, a form body, Basic client credentials
        when given (``bridge.auth.Requester``)."""
        headers = {"Accept": "application/json"}
        return self.send(method, url, idempotent=idempotent, headers=headers, data=data, auth=basic)

    # ------------------------------------------------------------------ origins and labels

    def same_origin(self, url: str) -> bool:
        return origin_of(url) == self.origin

    def check_origin(self, url: str, what: str) -> None:
        """Raise ``ForeignHost`` unless ``url`` is on the base URL's scheme, host and port."""
        if not self.same_origin(url):
            scheme, host, port = origin_of(url)
            raise ForeignHost(f"{what} points to {scheme}://{host}:{port}, not to {self.server}")

    def label(self, url: str) -> str:
        """How ``url`` is named in logs and messages: by default its path relative to the base (``[base]`` for
        the base itself), never its host or query."""
        if self._label is not None:
            return self._label(url)
        path = urlsplit(url).path
        if self.same_origin(url) and path.startswith(self._base_path):
            path = path[len(self._base_path) :]
        return path.strip("/") or "[base]"

    # ------------------------------------------------------------------ retries

    def _send(
        self, method: str, url: str, authenticated: bool, idempotent: bool, headers: dict[str, str],
        kwargs: Mapping[str, Any],
    ) -> requests.Response:
        started, attempt = self.clock(), 0
        while True:
            outcome = self._attempt(method, url, authenticated, headers, kwargs)
            if not retryable(outcome, idempotent):
                return self._response_or_raise(outcome, method, url)
            delay = retry_delay(outcome, attempt, self.wall_clock())
            spent = self.clock() - started
            if attempt >= self.limits.retries or spent + delay > self.limits.total_seconds:
                raise self._exhausted(outcome, method, url, attempt + 1)
            self.log.warning(
                "%s %s: %s, retry %d in %.1f s", method, self.label(url), _what(outcome), attempt + 1, delay
            )
            self.sleep(delay)
            attempt += 1

    def _attempt(
        self, method: str, url: str, authenticated: bool, headers: dict[str, str], kwargs: Mapping[str, Any]
    ) -> Outcome:
        sent: dict[str, str | None] = {**headers, "Authorization": None}  # None: drop the session's, if any
        if authenticated and self.tokens is not None and self.same_origin(url):
            sent.update(self.tokens.headers())
        options = {**kwargs, "auth": kwargs.get("auth") or _NO_CREDENTIALS}
        timeout = (self.limits.connect, self.limits.read)
        started = self.clock()
        try:
            resp = self.session.request(method, url, headers=sent, timeout=timeout, allow_redirects=False, **options)
        except requests.RequestException as exc:
            self.log.warning("%s %s: %s", method, self.label(url), type(exc).__name__)
            return exc
        elapsed_ms = (self.clock() - started) * 1000
        self.log.info("%s %s -> %d in %.0f ms", method, self.label(url), resp.status_code, elapsed_ms)
        return resp

    def _response_or_raise(self, outcome: Outcome, method: str, url: str) -> requests.Response:
        if isinstance(outcome, requests.Response):
            return outcome
        raise TransportError(f"{method} {self.label(url)}: {type(outcome).__name__}")

    def _exhausted(self, outcome: Outcome, method: str, url: str, attempts: int) -> TransportError:
        status = outcome.status_code if isinstance(outcome, requests.Response) else None
        return TransportError(
            f"{method} {self.label(url)}: {_what(outcome)} after {attempts} attempt(s), giving up", status=status
        )


__all__ = [
    "BACKOFF_CAP",
    "BACKOFF_FIRST",
    "IDEMPOTENT_METHODS",
    "RETRY_STATUSES",
    "UNPROCESSED_STATUSES",
    "Limits",
    "TokenSource",
    "Transport",
    "is_idempotent",
    "never_sent",
    "origin_of",
    "path_label",
    "retry_after_seconds",
    "retry_delay",
    "retryable",
]
