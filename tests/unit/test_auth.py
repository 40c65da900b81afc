"""SMART Backend Services and static-token authentication against small real HTTP servers on loopback.

Two ``http.server`` instances run in threads on free 127.0.0.1 ports: an authorisation server whose token
endpoint verifies the client assertion (signature with the public key, iss, sub, aud, exp, unique jti) and
a FHIR server that accepts only the access tokens the authorisation server issued and publishes
``.well-known/smart-configuration``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bridge.auth import (
    ASSERTION_TYPE,
    BearerAuth,
    NoAuth,
    SmartBackendAuth,
    auth_from_settings,
    jwk_thumbprint,
    load_private_key,
)
from bridge.client import FhirClient
from bridge.config import Settings
from bridge.errors import AuthError, ConfigError

CLIENT_ID = "cd7-bridge-test"
SCOPE = "system/Patient.read system/ResearchSubject.write"


# ---------------------------------------------------------------- keys


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def rsa_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "rsa.pem"
    path.write_bytes(_pem(rsa_key))
    return path


@pytest.fixture
def ec_file(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> Path:
    path = tmp_path / "ec.pem"
    path.write_bytes(_pem(ec_key))
    return path


# ---------------------------------------------------------------- the two servers


@dataclass
class World:
    """What the servers saw and decide; shared by both handlers."""

    public_key: Any = None
    alg: str = "RS384"
    token_url: str = ""
    expires_in: int = 300
    issued: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    jtis: list[str] = field(default_factory=list)
    assertions: list[dict[str, Any]] = field(default_factory=list)
    headers_of_assertions: list[dict[str, Any]] = field(default_factory=list)
    forms: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    hits: list[tuple[str, str, str | None]] = field(default_factory=list)  # (server, path, Authorization)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self, server: str) -> list[str]:
        return [p for s, p, _ in self.hits if s == server]


def _verify_assertion(world: World, form: dict[str, str]) -> str | None:
    """None when the token request is acceptable, else the reason it is not."""
    for key, want in (("grant_type", "client_credentials"), ("client_assertion_type", ASSERTION_TYPE)):
        if form.get(key) != want:
            return f"{key} is {form.get(key)!r}"
    if form.get("scope") != SCOPE:
        return "scope"
    token = form.get("client_assertion", "")
    try:
        claims = jwt.decode(
            token,
            world.public_key,
            algorithms=[world.alg],
            audience=world.token_url,
            options={"require": ["iss", "sub", "aud", "exp", "jti"]},
        )
    except (jwt.PyJWTError, TypeError, ValueError) as exc:
        return f"assertion: {type(exc).__name__}"
    header = jwt.get_unverified_header(token)
    world.assertions.append(claims)
    world.headers_of_assertions.append(header)
    if claims["iss"] != CLIENT_ID or claims["sub"] != CLIENT_ID:
        return "iss/sub"
    if not 0 < claims["exp"] - time.time() <= 301:  # one second of slack for the clock tick
        return "exp more than 300 s ahead"
    if claims["jti"] in world.jtis:
        return "jti replayed"
    world.jtis.append(claims["jti"])
    return None


def make_handler(world: World, server_name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — the stdlib's parameter name
            return None

        def _reply(self, status: int, body: dict[str, Any], ctype: str = "application/json") -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> str:
            path = urlsplit(self.path).path
            with world.lock:
                world.hits.append((server_name, path, self.headers.get("Authorization")))
            return path

        def do_GET(self) -> None:
            path = self._record()
            if path == "/fhir/.well-known/smart-configuration" and server_name == "fhir":
                self._reply(200, {"token_endpoint": world.token_url, "grant_types_supported": ["client_credentials"]})
            elif path.startswith("/fhir/Patient/") and server_name == "fhir":
                self._fhir_read(path.rsplit("/", 1)[-1])
            else:
                self._reply(404, {"error": "not_found"})

        def _fhir_read(self, pid: str) -> None:
            auth = self.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ")
            if not auth.startswith("Bearer ") or token not in world.issued or token in world.revoked:
                outcome = {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "login"}],
                }
                self._reply(401, outcome, "application/fhir+json")
                return
            self._reply(200, {"resourceType": "Patient", "id": pid}, "application/fhir+json")

        def do_POST(self) -> None:
            path = self._record()
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if path != "/auth/token" or server_name != "auth":
                self._reply(404, {"error": "not_found"})
                return
            with world.lock:
                world.forms.append(form)
                problem = _verify_assertion(world, form)
                if problem:
                    world.errors.append(problem)
                    self._reply(401, {"error": "invalid_client", "error_description": problem})
                    return
                token = f"access-{len(world.issued) + 1}"
                world.issued.append(token)
            self._reply(
                200,
                {
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": world.expires_in,
                    "scope": form["scope"],
                },
            )

    return Handler


@dataclass
class Servers:
    world: World
    fhir_base: str
    token_url: str


def _start(world: World, name: str) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(world, name))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def servers() -> Iterator[Servers]:
    world = World()
    auth_server, auth_root = _start(world, "auth")
    fhir_server, fhir_root = _start(world, "fhir")
    world.token_url = f"{auth_root}/auth/token"
    try:
        yield Servers(world, f"{fhir_root}/fhir", world.token_url)
    finally:
        for server in (auth_server, fhir_server):
            server.shutdown()
            server.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def smart_client(
    servers: Servers, key_file: Path, alg: str = "RS384", clock: Clock | None = None, **extra: Any
) -> FhirClient:
    settings = Settings(
        smart_client_id=CLIENT_ID,
        smart_key_file=str(key_file),
        smart_alg=alg,
        smart_scope=SCOPE,
        retries=1,
        **extra,
    )
    return FhirClient(servers.fhir_base, settings, sleep=lambda s: None, clock=clock or Clock())


# ---------------------------------------------------------------- SMART end to end


def test_rs384_with_discovery_caches_one_token_for_several_calls(
    servers: Servers, rsa_file: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    servers.world.public_key = rsa_key.public_key()
    fhir = smart_client(servers, rsa_file)
    ids = [fhir.read("Patient", f"p{i}").resource["id"] for i in range(3)]
    world = servers.world
    assert ids == ["p0", "p1", "p2"]
    assert world.errors == []
    assert world.issued == ["access-1"]
    assert world.paths("fhir").count("/fhir/.well-known/smart-configuration") == 1
    assert world.paths("auth") == ["/auth/token"]
    fhir_reads = [a for s, p, a in world.hits if s == "fhir" and p.startswith("/fhir/Patient/")]
    assert fhir_reads == ["Bearer access-1"] * 3
    # the token endpoint (another origin) and discovery never see an Authorization header
    assert [a for s, p, a in world.hits if s == "auth" or "well-known" in p] == [None, None]


def test_assertion_claims_and_header(servers: Servers, rsa_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    servers.world.public_key = rsa_key.public_key()
    smart_client(servers, rsa_file).read("Patient", "p1")
    claims = servers.world.assertions[0]
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == servers.token_url
    assert claims["exp"] - claims["iat"] == 300
    header = servers.world.headers_of_assertions[0]
    assert header["alg"] == "RS384" and header["typ"] == "JWT"
    assert header["kid"] == jwk_thumbprint(rsa_key)
    form = servers.world.forms[0]
    assert form["grant_type"] == "client_credentials" and form["client_assertion_type"] == ASSERTION_TYPE


def test_es384_with_configured_token_url_and_kid_skips_discovery(
    servers: Servers, ec_file: Path, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    servers.world.public_key, servers.world.alg = ec_key.public_key(), "ES384"
    fhir = smart_client(servers, ec_file, alg="ES384", smart_token_url=servers.token_url, smart_key_id="key-2026")
    assert fhir.read("Patient", "p1").resource["id"] == "p1"
    assert servers.world.errors == []
    assert "/fhir/.well-known/smart-configuration" not in servers.world.paths("fhir")
    assert servers.world.headers_of_assertions[0]["kid"] == "key-2026"


def test_token_is_refreshed_shortly_before_expiry_with_a_new_jti(
    servers: Servers, rsa_file: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    servers.world.public_key = rsa_key.public_key()
    clock = Clock()
    fhir = smart_client(servers, rsa_file, clock=clock)
    fhir.read("Patient", "a")
    clock.now += 200  # well inside the 300 s lifetime
    fhir.read("Patient", "b")
    assert servers.world.issued == ["access-1"]
    clock.now += 45  # 245 s: within the last minute of the token's life
    fhir.read("Patient", "c")
    world = servers.world
    assert world.issued == ["access-1", "access-2"]
    assert world.errors == []
    assert len(set(world.jtis)) == 2
    last_read = [a for s, p, a in world.hits if p == "/fhir/Patient/c"]
    assert last_read == ["Bearer access-2"]


def test_a_401_drops_the_cached_token_and_retries_once(
    servers: Servers, rsa_file: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    servers.world.public_key = rsa_key.public_key()
    fhir = smart_client(servers, rsa_file)
    fhir.read("Patient", "a")
    servers.world.revoked.add("access-1")
    assert fhir.read("Patient", "b").resource["id"] == "b"
    reads_of_b = [a for s, p, a in servers.world.hits if p == "/fhir/Patient/b"]
    assert reads_of_b == ["Bearer access-1", "Bearer access-2"]


def test_a_second_401_is_an_auth_error(servers: Servers, rsa_file: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    servers.world.public_key = rsa_key.public_key()
    fhir = smart_client(servers, rsa_file)
    servers.world.revoked.update({"access-1", "access-2", "access-3"})
    with pytest.raises(AuthError) as info:
        fhir.read("Patient", "a")
    assert info.value.status == 401
    assert servers.world.issued == ["access-1", "access-2"]
    assert "access-" not in info.value.message


def test_token_endpoint_refusal_is_an_auth_error_without_secrets(servers: Servers, rsa_file: Path) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    servers.world.public_key = other.public_key()  # the server knows another key: the signature fails
    fhir = smart_client(servers, rsa_file)
    with pytest.raises(AuthError) as info:
        fhir.read("Patient", "a")
    assert info.value.status == 401
    assert info.value.message == "SMART token endpoint refused the client: 401 (invalid_client)"
    assert servers.world.paths("auth") == ["/auth/token"]  # a refused assertion is not resent
    assert not [p for p in servers.world.paths("fhir") if p.startswith("/fhir/Patient")]


def test_discovery_without_token_endpoint_is_an_auth_error(rsa_file: Path) -> None:
    base = "https://ehr.example.org/fhir"
    settings = Settings(smart_client_id=CLIENT_ID, smart_key_file=str(rsa_file), retries=0)
    fhir = FhirClient(base, settings, sleep=lambda s: None)
    with responses.RequestsMock() as mock:
        mock.get(
            f"{base}/.well-known/smart-configuration",
            status=404,
            body="<html>no</html>",
            content_type="text/html",
        )
        with pytest.raises(AuthError, match="no token_endpoint"):
            fhir.read("Patient", "a")
        assert len(mock.calls) == 1


def test_token_answer_without_access_token_is_an_auth_error(rsa_file: Path) -> None:
    token_url = "https://auth.example.org/token"
    settings = Settings(smart_client_id=CLIENT_ID, smart_key_file=str(rsa_file), smart_token_url=token_url)
    fhir = FhirClient("https://ehr.example.org/fhir", settings, sleep=lambda s: None)
    with responses.RequestsMock() as mock:
        mock.post(token_url, json={"token_type": "bearer", "expires_in": 300})
        with pytest.raises(AuthError, match="no bearer access_token"):
            fhir.read("Patient", "a")


def test_token_request_is_retried_on_503_only_before_the_server_acted(rsa_file: Path) -> None:
    token_url = "https://auth.example.org/token"
    base = "https://ehr.example.org/fhir"
    settings = Settings(smart_client_id=CLIENT_ID, smart_key_file=str(rsa_file), smart_token_url=token_url)
    fhir = FhirClient(base, settings, sleep=lambda s: None)
    with responses.RequestsMock() as mock:
        mock.post(token_url, status=503)
        mock.post(token_url, json={"access_token": "t-1", "token_type": "bearer", "expires_in": 60})
        mock.get(
            f"{base}/Patient/a",
            json={"resourceType": "Patient", "id": "a"},
            content_type="application/fhir+json",
        )
        fhir.read("Patient", "a")
        assert mock.calls[-1].request.headers["Authorization"] == "Bearer t-1"
        assert "Authorization" not in mock.calls[0].request.headers


# ---------------------------------------------------------------- configuration


def _settings(**kw: Any) -> Settings:
    return Settings(smart_client_id=CLIENT_ID, **kw)


def _no_http(method: str, url: str, *, data: Any = None, idempotent: bool = True) -> requests.Response:
    raise AssertionError(f"no HTTP expected, got {method} {url}")


def _build(settings: Settings) -> Any:
    return auth_from_settings(settings, "https://ehr.example.org/fhir", _no_http)


def test_smart_without_key_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="smart_key_file"):
        _build(_settings())


def test_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        _build(_settings(smart_key_file=str(tmp_path / "absent.pem")))


def test_a_file_that_is_not_a_private_key_is_a_config_error(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    public = tmp_path / "public.pem"
    public.write_bytes(
        rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key") as info:
        load_private_key(str(public))
    assert "BEGIN" not in info.value.message


@pytest.mark.parametrize(("alg", "key"), [("RS384", "ec"), ("ES384", "rsa"), ("HS256", "rsa"), ("RS256", "rsa")])
def test_alg_must_match_key_and_be_rs384_or_es384(alg: str, key: str, rsa_file: Path, ec_file: Path) -> None:
    path = rsa_file if key == "rsa" else ec_file
    with pytest.raises(ConfigError):
        _build(_settings(smart_key_file=str(path), smart_alg=alg))


def test_es384_needs_the_p384_curve(tmp_path: Path) -> None:
    p256 = tmp_path / "p256.pem"
    p256.write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(ConfigError, match="P-384"):
        _build(_settings(smart_key_file=str(p256), smart_alg="ES384"))


def test_assertion_lifetime_cannot_exceed_five_minutes(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ConfigError):
        SmartBackendAuth(CLIENT_ID, rsa_key, "https://x.example/fhir", _no_http, assertion_seconds=301)


def test_repr_hides_secrets(rsa_key: rsa.RSAPrivateKey) -> None:
    smart = SmartBackendAuth(CLIENT_ID, rsa_key, "https://x.example/fhir", _no_http)
    assert "PRIVATE" not in repr(smart) and "RSAPrivateKey" not in repr(smart)
    assert "tok-9" not in repr(BearerAuth("tok-9"))


def test_static_token_from_file_is_sent(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token-42\n", encoding="utf-8")
    auth = _build(Settings(ehr_token_file=str(token_file)))
    assert isinstance(auth, BearerAuth)
    assert auth.headers() == {"Authorization": "Bearer file-token-42"}


def test_nothing_configured_means_no_auth() -> None:
    auth = _build(Settings())
    assert isinstance(auth, NoAuth) and auth.headers() == {}


def test_jwk_thumbprint_matches_rfc7638_example() -> None:
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3"
        "oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgd"
        "AZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur"
        "-kEgU8awapJzKnqDKgw"
    )
    modulus = int.from_bytes(jwt.utils.base64url_decode(n), "big")
    public = rsa.RSAPublicNumbers(65537, modulus).public_key()
    assert jwk_thumbprint(public) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
