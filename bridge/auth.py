"""Token sources for ``bridge.http.Transport``: none, a static bearer token, SMART Backend Services (the EHR)
and OAuth2 client credentials or password (the registry) — one ``TokenSource`` protocol, one token cache.

SMART Backend Services (https://hl7.org/fhir/smart-app-launch/backend-services.html): the client signs a
short-lived JWT (RS384 or ES384; ``iss`` = ``sub`` = client id, ``aud`` = token URL, ``exp`` at most five
minutes ahead, a fresh ``jti`` each time) and trades it at the token endpoint for an access token with the
``client_credentials`` grant. The token URL is configured or discovered from
``{base}/.well-known/smart-configuration``. The token request is never resent once the server may have seen
it: its ``jti`` must not be replayed.

OAuth2 (``OAuth2Auth``): the ``client_credentials`` grant with the client authenticated by HTTP Basic, or, when
a username is set, the ``password`` grant (Basic when the client has a secret, else ``client_id`` in the form).
Its token request may be resent like any idempotent request.

Both keep their access token in a ``TokenCache`` (memory only) until ``refresh_margin`` seconds — at most half
its lifetime — before it expires, and forget it when the transport reports a 401 (``invalidate``); the
transport then asks once more. Token requests go through a ``Requester`` (``Transport.plain``): same timeouts
and retries, never a bearer token, credentials only to the token URL itself.

Keys, tokens and secrets come only from files or the environment through ``bridge.config.Settings``. Neither a
key, a token, a secret nor a token-endpoint answer ever appears in a log line, a repr or an exception message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bridge.config import Settings
from bridge.errors import AuthError, ConfigError
from bridge.http import TokenSource

log = logging.getLogger("bridge.auth")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SUPPORTED_ALGS = ("RS384", "ES384")
MAX_ASSERTION_SECONDS = 300
DEFAULT_EXPIRES_IN = 300
REFRESH_MARGIN = 60.0
MAX_TOKEN_ANSWER_BYTES = 1_000_000
_OAUTH_ERROR = re.compile(r"^[a-z_]{1,40}$")

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
_JWK_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


class Requester(Protocol):
    """Sends one request without a bearer token (``bridge.http.Transport.plain``: timeouts and retries included);
    ``basic`` is the client's HTTP Basic credentials for a token endpoint."""

    def __call__(
        self,
        method: str,
        url: str,
        *,
        data: Mapping[str, str] | None = None,
        idempotent: bool = True,
        basic: tuple[str, str] | None = None,
    ) -> requests.Response: ...


Auth = TokenSource  # the name the FHIR client has always used


@dataclass
class TokenCache:
    """One access token in memory, fetched again ``margin`` seconds (at most half its lifetime) before it
    expires, or at once after ``clear``."""

    margin: float = REFRESH_MARGIN
    _token: str | None = field(default=None, init=False, repr=False)
    _refresh_at: float = field(default=0.0, init=False)

    def get(self, clock: Callable[[], float], fetch: Callable[[], tuple[str, int]]) -> str:
        """The cached token, or the one ``fetch`` returns (with its lifetime in seconds) when none is fresh."""
        if self._token is not None and clock() < self._refresh_at:
            return self._token
        started = clock()
        token, expires_in = fetch()
        self._token = token
        self._refresh_at = started + expires_in - min(self.margin, expires_in / 2)
        return token

    def clear(self) -> None:
        self._token = None


class CachedTokenSource:
    """A ``TokenSource`` whose bearer token comes from a token endpoint through a ``TokenCache``; subclasses
    say how to fetch one (``_fetch``: the token and its lifetime)."""

    refreshable: bool = True
    clock: Callable[[], float]
    _cache: TokenCache

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token()}"}

    def invalidate(self) -> None:
        """Forget the cached token (the server said 401)."""
        self._cache.clear()

    def access_token(self) -> str:
        """The cached access token, fetched anew when missing or about to expire."""
        return self._cache.get(self.clock, self._fetch)

    def token(self) -> str:
        """Same as ``access_token`` (the registry client's name for it)."""
        return self.access_token()

    def _fetch(self) -> tuple[str, int]:
        raise NotImplementedError


class NoAuth:
    """No credentials at all (a test server, or a network-level trust arrangement)."""

    refreshable = False

    def headers(self) -> dict[str, str]:
        return {}

    def invalidate(self) -> None:
        return None


@dataclass(repr=False)
class BearerAuth:
    """A static bearer token; a 401 cannot be cured by asking again."""

    token: str
    refreshable: bool = False

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def invalidate(self) -> None:
        return None

    def __repr__(self) -> str:
        return "BearerAuth(token=***)"


@dataclass(repr=False)
class SmartBackendAuth(CachedTokenSource):
    """SMART Backend Services: a signed client assertion traded for a cached access token."""

    client_id: str
    private_key: PrivateKey
    base_url: str
    request: Requester
    alg: str = "RS384"
    kid: str | None = None
    scope: str = "system/*.read"
    token_url: str | None = None
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    refresh_margin: float = REFRESH_MARGIN
    assertion_seconds: int = MAX_ASSERTION_SECONDS
    refreshable: bool = True

    def __post_init__(self) -> None:
        check_key_matches_alg(self.private_key, self.alg)
        if not 0 < self.assertion_seconds <= MAX_ASSERTION_SECONDS:
            raise ConfigError(f"a SMART client assertion may live at most {MAX_ASSERTION_SECONDS} s")
        self.kid = self.kid or jwk_thumbprint(self.private_key)
        self._cache = TokenCache(self.refresh_margin)

    def __repr__(self) -> str:
        return f"SmartBackendAuth(client_id={self.client_id!r}, alg={self.alg!r}, kid={self.kid!r})"

    def client_assertion(self, audience: str) -> str:
        """A freshly signed client assertion JWT for ``audience`` (the token URL)."""
        now = int(self.wall_clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "iat": now,
            "exp": now + self.assertion_seconds,
            "jti": uuid.uuid4().hex,
        }
        headers = {"typ": "JWT", "kid": self.kid}
        return jwt.encode(claims, self.private_key, algorithm=self.alg, headers=headers)

    def token_endpoint(self) -> str:
        """The configured token URL, or the one the server's SMART configuration names (then cached)."""
        if not self.token_url:
            self.token_url = discover_token_url(self.base_url, self.request)
        return self.token_url

    def _fetch(self) -> tuple[str, int]:
        url = self.token_endpoint()
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.client_assertion(url),
        }
        # not idempotent: resent only when the server cannot have seen it, since its jti must not be replayed
        resp = self.request("POST", url, data=form, idempotent=False)
        token, expires_in = parse_token_response(resp)
        log.info("SMART access token obtained, valid %d s", expires_in)
        return token, expires_in


@dataclass(repr=False)
class OAuth2Auth(CachedTokenSource):
    """OAuth2 access tokens from ``token_url``: client credentials (HTTP Basic), or the password grant when
    ``username`` is set. ``name`` says whose token endpoint it is in messages (``registry``)."""

    token_url: str
    request: Requester
    client_id: str | None = None
    client_secret: str | None = None
    username: str | None = None
    password: str | None = None
    scope: str | None = None
    name: str = "OAuth2"
    clock: Callable[[], float] = time.monotonic
    refresh_margin: float = REFRESH_MARGIN
    refreshable: bool = True

    def __post_init__(self) -> None:
        if self.username and not self.password:
            raise ConfigError(f"{self.name}: a username is set but no password")
        if not self.username and not (self.client_id and self.client_secret):
            raise ConfigError(f"{self.name}: the client credentials grant needs a client id and secret")
        self._cache = TokenCache(self.refresh_margin)

    def __repr__(self) -> str:
        return f"OAuth2Auth(url={self.token_url!r}, grant={self.grant!r})"

    @property
    def grant(self) -> str:
        return "password" if self.username else "client_credentials"

    def form(self) -> tuple[dict[str, str], tuple[str, str] | None]:
        """The token request's form and the HTTP Basic client credentials (None: the client id is in the form)."""
        form = {"grant_type": self.grant}
        if self.username:
            form.update(username=self.username, password=self.password or "")
        if self.scope:
            form["scope"] = self.scope
        if self.client_id and self.client_secret:
            return form, (self.client_id, self.client_secret)
        if self.client_id:
            form["client_id"] = self.client_id
        return form, None

    def _fetch(self) -> tuple[str, int]:
        form, basic = self.form()
        # idempotent: a client-credentials or password grant has no nonce, asking twice only gives two tokens
        resp = self.request("POST", self.token_url, data=form, idempotent=True, basic=basic)
        token, expires_in = parse_token_response(resp, f"{self.name} token endpoint", "refused us")
        log.info("%s access token obtained (%s grant), valid %d s", self.name, self.grant, expires_in)
        return token, expires_in


def discover_token_url(base_url: str, request: Requester) -> str:
    """``token_endpoint`` from ``{base}/.well-known/smart-configuration``."""
    resp = request("GET", f"{base_url.rstrip('/')}/.well-known/smart-configuration")
    body = _json_object(resp)
    url = body.get("token_endpoint") if resp.status_code == 200 else None
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise AuthError(
            f"SMART discovery: .well-known/smart-configuration gave no token_endpoint ({resp.status_code})",
            status=resp.status_code,
        )
    return url


def parse_token_response(
    resp: requests.Response, endpoint: str = "SMART token endpoint", refusal: str = "refused the client"
) -> tuple[str, int]:
    """(access token, lifetime in seconds) from a token endpoint answer, or AuthError naming ``endpoint``
    (with the OAuth2 error code when it is one, never its description)."""
    body = _json_object(resp)
    if resp.status_code != 200:
        code = body.get("error")
        detail = f" ({code})" if isinstance(code, str) and _OAUTH_ERROR.match(code) else ""
        raise AuthError(f"{endpoint} {refusal}: {resp.status_code}{detail}", status=resp.status_code)
    token = body.get("access_token")
    scheme = str(body.get("token_type", "bearer")).lower()
    if not isinstance(token, str) or not token or scheme != "bearer":
        raise AuthError(f"{endpoint} answer has no bearer access_token", status=resp.status_code)
    expires_in = body.get("expires_in", DEFAULT_EXPIRES_IN)
    if not isinstance(expires_in, int | float) or isinstance(expires_in, bool) or expires_in <= 0:
        expires_in = DEFAULT_EXPIRES_IN
    return token, int(expires_in)


def _json_object(resp: requests.Response) -> dict[str, Any]:
    if len(resp.content) > MAX_TOKEN_ANSWER_BYTES:
        return {}
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def check_key_matches_alg(key: PrivateKey, alg: str) -> None:
    """RS384 needs an RSA key, ES384 a P-384 EC key; anything else is a configuration error."""
    if alg not in SUPPORTED_ALGS:
        raise ConfigError(f"smart_alg must be one of {', '.join(SUPPORTED_ALGS)}, not {alg!r}")
    if alg == "RS384" and not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError("smart_alg RS384 needs an RSA private key in smart_key_file")
    if alg == "ES384" and not (isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"):
        raise ConfigError("smart_alg ES384 needs a P-384 EC private key in smart_key_file")


def load_private_key(path: str) -> PrivateKey:
    """A PEM (PKCS#8 or traditional) RSA or EC private key, unencrypted, from a file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read smart_key_file {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"smart_key_file {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ConfigError(f"smart_key_file {path} holds neither an RSA nor an EC key")
    return key


def jwk_thumbprint(key: PrivateKey | PublicKey) -> str:
    """RFC 7638 thumbprint of the public key: the default ``kid`` when none is configured."""
    public = key.public_key() if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) else key
    if isinstance(public, rsa.RSAPublicKey):
        nums = public.public_numbers()
        members = {"e": _b64uint(nums.e), "kty": "RSA", "n": _b64uint(nums.n)}
    else:
        point = public.public_numbers()
        size = (public.curve.key_size + 7) // 8
        crv = _JWK_CURVES.get(public.curve.name, public.curve.name)
        members = {"crv": crv, "kty": "EC", "x": _b64uint(point.x, size), "y": _b64uint(point.y, size)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def _b64uint(value: int, size: int | None = None) -> str:
    raw = value.to_bytes(size or max(1, (value.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def auth_from_settings(
    settings: Settings,
    base_url: str,
    request: Requester,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> Auth:
    """SMART when a client id is configured, else a static bearer token when one is, else none."""
    if settings.smart_client_id:
        if not settings.smart_key_file:
            raise ConfigError("smart_client_id is set but smart_key_file is not")
        return SmartBackendAuth(
            client_id=settings.smart_client_id,
            private_key=load_private_key(settings.smart_key_file),
            base_url=base_url,
            request=request,
            alg=settings.smart_alg,
            kid=settings.smart_key_id,
            scope=settings.smart_scope,
            token_url=settings.smart_token_url,
            clock=clock,
            wall_clock=wall_clock,
        )
    token = settings.bearer_token()
    return BearerAuth(token) if token else NoAuth()


__all__ = [
    "ASSERTION_TYPE",
    "REFRESH_MARGIN",
    "SUPPORTED_ALGS",
    "Auth",
    "BearerAuth",
    "CachedTokenSource",
    "NoAuth",
    "OAuth2Auth",
    "Requester",
    "SmartBackendAuth",
    "TokenCache",
    "TokenSource",
    "auth_from_settings",
    "check_key_matches_alg",
    "discover_token_url",
    "jwk_thumbprint",
    "load_private_key",
    "parse_token_response",
]
