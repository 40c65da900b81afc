"""PostgreSQL for tests: the throw-away server ``scripts/pg-server`` starts (``scripts/test`` exports its URL as
``BRIDGE_TEST_PG_URL``), fresh databases and schemas on it, and the fixtures that run a state test on both
backends.

Fixtures (imported by ``tests/unit/conftest.py``; an integration ``conftest`` can import them the same way):

* ``pg_url``         a fresh, empty schema for one test, as a URL (``options=-csearch_path=…``) — cheap; dropped after
* ``pg_database``    a fresh, empty database for one test, as a URL — for what is per database (advisory locks,
                     migrations racing); dropped after
* ``state_location`` parametrized ``sqlite`` / ``postgres``: a new SQLite file path, or ``pg_url``
* ``state``          ``open_state(state_location)``, closed after

Without ``BRIDGE_TEST_PG_URL`` the PostgreSQL cases skip, saying so; ``scripts/test`` always sets it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from bridge.state import State, open_state

PG_URL_VAR = "BRIDGE_TEST_PG_URL"
SKIP_REASON = (f"{PG_URL_VAR} is not set: run scripts/test, or export {PG_URL_VAR}=\"$(scripts/pg-server)\" "
               "(a throw-away PostgreSQL 15)")


def base_url() -> str:
    """The test server's URL, or skip the test (with the reason) when there is none."""
    url = os.environ.get(PG_URL_VAR)
    if not url:
        pytest.skip(SKIP_REASON)
    return url


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def with_schema(url: str, schema: str) -> str:
    """``url`` whose sessions use ``schema`` (libpq ``options=-csearch_path=<schema>``)."""
    parts = urlsplit(url)
    option = "options=" + quote(f"-csearch_path={schema}")
    query = f"{parts.query}&{option}" if parts.query else option
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


@contextmanager
def temporary_database(url: str | None = None, prefix: str = "bridge_test") -> Iterator[str]:
    """A new empty database on the test server (``url`` or ``$BRIDGE_TEST_PG_URL``), dropped afterwards even
    when connections to it are still open."""
    import psycopg  # here: importing this module needs no driver unless PostgreSQL is used

    url = url or base_url()
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    try:
        yield with_database(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)".encode())


@contextmanager
def temporary_schema(url: str) -> Iterator[str]:
    """A new empty schema in the database of ``url``, as a URL whose sessions use it; dropped afterwards."""
    import psycopg

    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        yield with_schema(url, schema)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())


@pytest.fixture(scope="session")
def pg_session_database() -> Iterator[str]:
    """One database for this test session, holding the per-test schemas of ``pg_url``."""
    with temporary_database(prefix="bridge_session") as url:
        yield url


@pytest.fixture
def pg_url(pg_session_database: str) -> Iterator[str]:
    with temporary_schema(pg_session_database) as url:
        yield url


@pytest.fixture
def pg_database() -> Iterator[str]:
    with temporary_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def state_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a state test keeps its state: a new SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "state.sqlite3")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def state(state_location: str) -> Iterator[State]:
    opened = open_state(state_location)
    try:
        yield opened
    finally:
        opened.close()


__all__ = ["PG_URL_VAR", "SKIP_REASON", "base_url", "pg_database", "pg_session_database", "pg_url", "state",
           "state_location", "temporary_database", "temporary_schema", "with_database", "with_schema"]
