"""The study team: named users with roles, read from the ``users_file`` setting (issue #17).

The file is YAML (or JSON), a list of users, each with a ``name``, a ``role`` (``coordinator`` or
``investigator``) and exactly one secret, stored only as a hash::

    - name: ana.silva
      role: coordinator
      password_hash: "$argon2id$v=19$m=65536,t=3,p=4$..."   # `bridge users hash` makes one
    - name: dr.ivo
      role: investigator
      token_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08   # SHA-256 hex of a token

A person signs in on the coordinator page with the name and the password (or the token, in the same field).
``load_users`` checks the whole file and lists every problem at once (``ConfigError``, exit 5): unknown keys,
a missing or repeated name, an unknown role, no secret or two, a hash argon2 cannot read, a token digest that
is not 64 hex digits. The messages name the entry (its index) and the field, never a secret.

``Users.authenticate`` takes the same time whether or not the name exists (an unknown name is checked against
a dummy argon2 hash) and compares token digests with ``hmac.compare_digest``; the caller says only "not
accepted", never which part was wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from bridge import yamlload
from bridge.decisions import ROLES, Role
from bridge.errors import ConfigError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
MAX_SECRET_BYTES = 1024  # a longer password or token is refused before hashing (no hashing of megabytes)
_KEYS = {"name", "role", "password_hash", "token_sha256"}
_HASHER = PasswordHasher()


@dataclass(frozen=True)
class User:
    """One person of the study team; exactly one of ``password_hash`` / ``token_sha256`` is set."""

    name: str
    role: Role
    password_hash: str | None = field(default=None, repr=False)
    token_sha256: str | None = field(default=None, repr=False)


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (argon2-cffi's default parameters) for the users file."""
    return _HASHER.hash(password)


def token_digest(token: str) -> str:
    """The ``token_sha256`` of a per-user token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Users:
    """The configured users, by name."""

    def __init__(self, users: Iterable[User]) -> None:
        self._by_name = {u.name: u for u in users}
        self._dummy = hash_password("not a password: unknown names are checked against this")

    def __len__(self) -> int:
        return len(self._by_name)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def authenticate(self, name: str, secret: str) -> User | None:
        """The user when ``secret`` is that user's password or token, else None — in about the same time for an
        unknown name, a wrong secret or a secret of the wrong kind."""
        if not secret or len(secret.encode("utf-8")) > MAX_SECRET_BYTES:
            return None
        user = self._by_name.get(name)
        password_hash = user.password_hash if user and user.password_hash else self._dummy
        password_ok = _verify(password_hash, secret) and user is not None and user.password_hash is not None
        expected = user.token_sha256 if user and user.token_sha256 else "0" * 64
        token_ok = hmac.compare_digest(token_digest(secret), expected) and user is not None \
            and user.token_sha256 is not None
        return user if password_ok or token_ok else None


def _verify(password_hash: str, secret: str) -> bool:
    try:
        return _HASHER.verify(password_hash, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# ------------------------------------------------------------------ the file
def load_users(path: str | Path) -> Users:
    """The users of ``path``, or ``ConfigError`` listing every problem of the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        loaded = json.loads(text) if str(path).endswith(".json") else yamlload.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read users_file {path}: {type(exc).__name__}") from None
    if not isinstance(loaded, list) or not loaded:
        raise ConfigError(f"users_file {path} must hold a non-empty list of users")
    users, problems = parse_users(loaded)
    if problems:
        raise ConfigError(f"users_file {path} has {len(problems)} problem(s): " + "; ".join(problems))
    return Users(users)


def parse_users(entries: list[Any]) -> tuple[list[User], list[str]]:
    """(the valid users, every problem found) of a loaded users file."""
    users: list[User] = []
    problems: list[str] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        found = _entry_problems(i, entry, seen)
        problems.extend(found)
        if not found:
            users.append(User(entry["name"], cast(Role, entry["role"]), entry.get("password_hash"),
                              entry.get("token_sha256")))
    return users, problems


def _entry_problems(i: int, entry: Any, seen: set[str]) -> list[str]:
    at = f"users[{i}]"
    if not isinstance(entry, dict):
        return [f"{at}: must be a mapping with name, role and password_hash or token_sha256"]
    problems = [f"{at}.{key}: unknown key" for key in sorted(map(str, entry)) if key not in _KEYS]
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        problems.append(f"{at}.name: required, 1-64 letters, digits or . _ @ - (starting with a letter or digit)")
    elif name in seen:
        problems.append(f"{at}.name: the same name is already given to an earlier user")
    else:
        seen.add(name)
    if entry.get("role") not in ROLES:
        problems.append(f"{at}.role: must be coordinator or investigator")
    return problems + _secret_problems(at, entry)


def _secret_problems(at: str, entry: dict[str, Any]) -> list[str]:
    password_hash, token = entry.get("password_hash"), entry.get("token_sha256")
    if (password_hash is None) == (token is None):
        return [f"{at}: exactly one of password_hash and token_sha256"]
    if password_hash is not None and not (isinstance(password_hash, str) and _readable_hash(password_hash)):
        return [f"{at}.password_hash: not an argon2 hash (make one with `bridge users hash`)"]
    if token is not None and not (isinstance(token, str) and SHA256_HEX.fullmatch(token)):
        return [f"{at}.token_sha256: must be 64 lowercase hex digits (the SHA-256 of the token)"]
    return []


def _readable_hash(password_hash: str) -> bool:
    if not password_hash.startswith("$argon2"):
        return False
    try:
        _HASHER.check_needs_rehash(password_hash)  # parses the parameters; raises on a malformed hash
    except (InvalidHashError, ValueError):
        return False
    return True


__all__ = ["MAX_SECRET_BYTES", "User", "Users", "hash_password", "load_users", "parse_users", "token_digest"]
