"""The ``bridge/state/`` seam: Protocols, their SQLite and PostgreSQL implementations, and who depends on what."""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

import pytest

from bridge.state import (
    Actions,
    ClosingOutbox,
    Inbox,
    Intake,
    Leadership,
    PublishedIndex,
    RegistryOutbox,
    Screenings,
    State,
    Subscriptions,
    TrialVersions,
    UiSessions,
    open_outbox,
    open_state,
)
from bridge.state.postgres_outbox import PostgresOutbox
from bridge.state.postgres_state import PostgresState
from bridge.state.sqlite_outbox import SqliteOutbox
from bridge.state.sqlite_state import SqliteState

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / "bridge" / "state"


def protocol_members(protocol: type) -> list[str]:
    names = set()
    for klass in protocol.__mro__:
        if klass in (object, typing.Protocol, typing.Generic) or not getattr(klass, "_is_protocol", False):
            continue
        names |= {n for n, v in vars(klass).items() if callable(v) and not n.startswith("_")}
    return sorted(names)


def assert_implements(implementation: type, protocol: type) -> None:
    """Every method of ``protocol`` exists on ``implementation`` with the same parameters and defaults."""
    for name in protocol_members(protocol):
        assert hasattr(implementation, name), f"{implementation.__name__} lacks {name}"
        want = inspect.signature(getattr(protocol, name)).parameters
        got = inspect.signature(getattr(implementation, name)).parameters
        assert [(p.name, p.kind, p.default) for p in got.values()] == [
            (p.name, p.kind, p.default) for p in want.values()], f"{implementation.__name__}.{name}"


PROTOCOLS = [Intake, Inbox, Subscriptions, PublishedIndex, Screenings, TrialVersions, Actions, UiSessions,
             Leadership, State]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("backend", [SqliteState, PostgresState])
def test_each_state_backend_implements(backend: type, protocol: type) -> None:
    assert protocol_members(protocol)
    assert_implements(backend, protocol)


def test_every_protocol_of_the_state_package_is_part_of_the_state() -> None:
    """A Protocol added under bridge/state/ (by another issue) is part of ``State`` (so both backends must
    implement it: the test above) or is the registry outbox's."""
    import importlib

    declared = set()
    for path in STATE.glob("*.py"):
        module = importlib.import_module(f"bridge.state.{path.stem}" if path.stem != "__init__" else "bridge.state")
        declared |= {v for v in vars(module).values() if isinstance(v, type) and v.__module__ == module.__name__
                     and getattr(v, "_is_protocol", False)}
    assert declared and Actions in declared and UiSessions in declared
    outbox = {RegistryOutbox, ClosingOutbox}
    assert {p.__name__ for p in declared - outbox if p not in State.__mro__} == set()


@pytest.mark.parametrize("outbox", [SqliteOutbox, PostgresOutbox])
def test_each_outbox_implements_the_registry_outbox(outbox: type) -> None:
    assert_implements(outbox, RegistryOutbox)


def test_open_state_and_open_outbox_pick_the_backend_by_location(tmp_path: Path, pg_url: str) -> None:
    for location, state_type, outbox_type in ((str(tmp_path / "s.sqlite3"), SqliteState, SqliteOutbox),
                                              (pg_url, PostgresState, PostgresOutbox)):
        state = open_state(location)
        try:
            assert type(state) is state_type
        finally:
            state.close()
        with open_outbox(location) as outbox:
            assert type(outbox) is outbox_type


def test_the_outbox_of_an_open_state_shares_its_database(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "state.sqlite3")
    try:
        with state.registry_outbox(clock=lambda: 0.0) as box:
            assert box.enqueue("k", "pkg", "infusion-1", "ps", {"resourceType": "Bundle"})
        assert state.stats().depth == 0  # closing the outbox left the state's database open
        with SqliteOutbox(state.path) as other:  # another process's view of the same file
            assert other.counts()["pending"] == 1
    finally:
        state.close()


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_only_the_sqlite_modules_know_sqlite() -> None:
    for path in STATE.glob("*.py"):
        imports = _imports(path)
        if not path.name.startswith("sqlite"):
            openers = {"bridge.state.sqlite_state", "bridge.state.sqlite_outbox"}  # open_state / open_outbox
            assert not any("sqlite" in name for name in imports - openers), path.name


def test_only_the_postgres_modules_know_postgres() -> None:
    for path in STATE.glob("*.py"):
        imports = _imports(path)
        if not path.name.startswith("postgres"):
            openers = {"bridge.state.postgres_state", "bridge.state.postgres_outbox"}  # open_state / open_outbox
            assert not any("postgres" in n or "psycopg" in n for n in imports - openers), path.name
    users = {p.relative_to(ROOT).as_posix() for p in (ROOT / "bridge").rglob("*.py")
             if not p.is_relative_to(STATE) and any("postgres" in n or "psycopg" in n for n in _imports(p))}
    assert users == set()
    sqlite_users = {p.relative_to(ROOT).as_posix() for p in (ROOT / "bridge").rglob("*.py")
                    if not p.is_relative_to(STATE) and any("sqlite" in n for n in _imports(p))}
    assert sqlite_users == set()


def test_the_transitional_modules_are_gone() -> None:
    """bridge/store.py, bridge/registry/outbox.py and bridge/bulk.py were re-exports while the seam moved in."""
    for old in ("store.py", "registry/outbox.py", "bulk.py"):
        assert not (ROOT / "bridge" / old).exists(), old


def test_callers_name_only_the_protocols_they_use() -> None:
    from bridge.cli.watch import queue_poll, register_poll
    from bridge.registry.submit import submit_pending
    from bridge.service.app import AppState, create_app
    from bridge.service.fhir_api import fhir_router
    from bridge.service.subscriptions import Subscriber
    from bridge.service.worker import Worker, WorkerState

    def store_type(function: typing.Any, parameter: str = "store") -> typing.Any:
        return typing.get_type_hints(function)[parameter]

    assert set(WorkerState.__mro__) >= {Inbox, Subscriptions} and PublishedIndex not in WorkerState.__mro__
    assert set(AppState.__mro__) >= {Intake, PublishedIndex, Screenings} and Inbox not in AppState.__mro__
    assert store_type(Worker.__init__) is WorkerState
    assert store_type(create_app) is AppState
    assert store_type(fhir_router) is PublishedIndex
    assert store_type(Subscriber.__init__) is Subscriptions
    assert store_type(queue_poll) is Inbox and store_type(register_poll) is Subscriptions
    assert store_type(submit_pending, "outbox") is RegistryOutbox
