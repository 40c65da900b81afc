"""Authentication for the FHIR client: none, a static bearer token, or SMART Backend Services.

SMART Backend Services (https://hl7.org/fhir/smart-app-launch/backend-services.html): the client signs a
short-lived JWT (RS384 or ES384; ``iss`` = ``sub`` = client id, ``aud`` = token URL, ``exp`` at most five
minutes ahead, a fresh ``jti`` each time) and trades it at the token endpoint for an access token with the
``client_credentials`` grant. The token URL is configured or discovered from
``{base}/.well-known/smart-configuration``; the access token is cached until shortly before it expires.

Keys and tokens come only from files or the environment through ``bridge.config.Settings``. Neither a key,
a token nor a token-endpoint answer ever appears in a log line or an exception message.
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

log = logging.getLogger("bridge.auth")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SUPPORTED_ALGS = ("RS384", "ES384")
MAX_ASSERTION_SECONDS = 300
DEFAULT_EXPIRES_IN = 300
_OAUTH_ERROR = re.compile(r"^[a-z_]{1,40}$")

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
_JWK_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


class Requester(Protocol):
    """Sends one unauthenticated request (timeouts and retries are the caller's business)."""

    def __call__(
        self, method: str, url: str, *, data: Mapping[str, str] | None = None, idempotent: bool = True
    ) -> requests.Response: ...


class Auth(Protocol):
    """What the FHIR client asks of an authentication scheme."""

    refreshable: bool

    def headers(self) -> dict[str, str]: ...

    def invalidate(self) -> None: ...


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
class SmartBackendAuth:
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
    refresh_margin: float = 60.0
    assertion_seconds: int = MAX_ASSERTION_SECONDS
    refreshable: bool = True
    _token: str | None = field(default=None, init=False)
    _refresh_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        check_key_matches_alg(self.private_key, self.alg)
        if not 0 < self.assertion_seconds <= MAX_ASSERTION_SECONDS:
            raise ConfigError(f"a SMART client assertion may live at most {MAX_ASSERTION_SECONDS} s")
        self.kid = self.kid or jwk_thumbprint(self.private_key)

    def __repr__(self) -> str:
        return f"SmartBackendAuth(client_id={self.client_id!r}, alg={self.alg!r}, kid={self.kid!r})"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token()}"}

    def invalidate(self) -> None:
        """Forget the cached token (the FHIR server said 401)."""
        self._token = None

    def access_token(self) -> str:
        """The cached access token, fetched anew when missing or about to expire."""
        if self._token is None or self.clock() >= self._refresh_at:
            return self._fetch_token()
        return self._token

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

    def _fetch_token(self) -> str:
        url = self.token_endpoint()
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.client_assertion(url),
        }
        started = self.clock()
        # not idempotent: resent only when the server cannot have seen it, since its jti must not be replayed
        resp = self.request("POST", url, data=form, idempotent=False)
        token, expires_in = parse_token_response(resp)
        self._token = token
        self._refresh_at = started + expires_in - min(self.refresh_margin, expires_in / 2)
        log.info("SMART access token obtained, valid %d s", expires_in)
        return token


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


def parse_token_response(resp: requests.Response) -> tuple[str, int]:
    """(access token, lifetime in seconds) from a token endpoint answer, or AuthError."""
    body = _json_object(resp)
    if resp.status_code != 200:
        code = body.get("error")
        detail = f" ({code})" if isinstance(code, str) and _OAUTH_ERROR.match(code) else ""
        raise AuthError(f"SMART token endpoint refused the client: {resp.status_code}{detail}", status=resp.status_code)
    token = body.get("access_token")
    scheme = str(body.get("token_type", "bearer")).lower()
    if not isinstance(token, str) or not token or scheme != "bearer":
        raise AuthError("SMART token endpoint answer has no bearer access_token", status=resp.status_code)
    expires_in = body.get("expires_in", DEFAULT_EXPIRES_IN)
    if not isinstance(expires_in, int | float) or expires_in <= 0:
        expires_in = DEFAULT_EXPIRES_IN
    return token, int(expires_in)


def _json_object(resp: requests.Response) -> dict[str, Any]:
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
    "SUPPORTED_ALGS",
    "Auth",
    "BearerAuth",
    "NoAuth",
    "Requester",
    "SmartBackendAuth",
    "auth_from_settings",
    "check_key_matches_alg",
    "discover_token_url",
    "jwk_thumbprint",
    "load_private_key",
    "parse_token_response",
]
