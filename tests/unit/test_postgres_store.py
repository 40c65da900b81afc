"""The PostgreSQL backend's own behaviour (the behaviour both backends share is in test_store.py and the other
state tests, run on both): versioned migrations under an advisory lock, the same tables as SQLite, errors that
name neither a row nor the password, and ``leader`` between processes."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from bridge.config import Settings, load_settings
from bridge.errors import StoreError
from bridge.state import Delivery, InboxEvent, State, open_state
from bridge.state.postgres import PostgresDatabase, describe
from bridge.state.postgres_migrations import MIGRATIONS, Migration
from bridge.state.postgres_state import PostgresState
from bridge.state.sqlite_state import SqliteState

T0 = 1_780_000_000.0
LATEST = [m.version for m in MIGRATIONS]


def columns_pg(url: str) -> dict[str, list[str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT table_name, column_name FROM information_schema.columns "
                            "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position").fetchall()
    out: dict[str, list[str]] = {}
    for table, column in rows:
        out.setdefault(table, []).append(column)
    return out


def columns_sqlite(path: Path) -> dict[str, list[str]]:
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                           "AND name NOT LIKE 'sqlite_%'")]
        return {t: [c[1] for c in db.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        db.close()


def test_a_fresh_database_records_every_migration(pg_database: str) -> None:
    state = PostgresState(pg_database)
    try:
        assert state.schema_versions() == LATEST == list(range(1, len(MIGRATIONS) + 1))
    finally:
        state.close()
    with psycopg.connect(pg_database) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY version")]
    assert names == [m.name for m in MIGRATIONS]


def test_the_tables_and_columns_are_those_of_the_sqlite_schema(pg_url: str, tmp_path: Path) -> None:
    """A table or column added to one backend's migrations and not the other's fails here (issue #17's tables
    included): the two backends hold the same state. PostgreSQL's ``registry_outbox.seq`` is its ``rowid``."""
    PostgresState(pg_url).close()
    SqliteState(tmp_path / "s.sqlite3").close()
    pg, lite = columns_pg(pg_url), columns_sqlite(tmp_path / "s.sqlite3")
    pg["registry_outbox"].remove("seq")
    assert sorted(pg) == sorted(lite)
    for table, names in lite.items():
        assert sorted(pg[table]) == sorted(names), table


def test_reopening_applies_nothing_again(pg_url: str) -> None:
    PostgresState(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        before = conn.execute("SELECT version, applied_at FROM schema_migrations ORDER BY version").fetchall()
    PostgresState(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        after = conn.execute("SELECT version, applied_at FROM schema_migrations ORDER BY version").fetchall()
    assert after == before and [v for v, _ in after] == LATEST


def test_a_database_migrated_by_a_newer_bridge_is_refused(pg_url: str) -> None:
    PostgresState(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO schema_migrations(version, name) VALUES (99, 'from the future')")
    with pytest.raises(StoreError, match="schema version 99, newer than this bridge knows") as caught:
        PostgresState(pg_url)
    assert caught.value.exit_code == 8


def test_a_failing_migration_is_rolled_back_whole(pg_url: str) -> None:
    broken = Migration(len(MIGRATIONS) + 1, "broken", ("CREATE TABLE half_done(x INTEGER)",
                                                       "INSERT INTO nowhere VALUES (1)"))
    with pytest.raises(StoreError, match=rf"migration {broken.version} \(broken\) failed: UndefinedTable"):
        PostgresDatabase(pg_url, migrations=(*MIGRATIONS, broken))
    assert "half_done" not in columns_pg(pg_url)
    state = PostgresState(pg_url)
    try:
        assert state.schema_versions() == LATEST
    finally:
        state.close()


def test_replicas_opening_a_new_database_at_once_migrate_it_once(pg_database: str) -> None:
    """Six openers, each with its own connections as six replicas would have, race on an empty database."""
    start, errors = threading.Barrier(6), []

    def opener() -> None:
        start.wait()
        try:
            PostgresDatabase(pg_database, max_size=1).close()
        except StoreError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with psycopg.connect(pg_database) as conn:
        assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")] == LATEST


def test_a_database_error_names_the_operation_not_the_row(pg_url: str) -> None:
    """The server's DETAIL would quote the duplicate key (a patient's resource id here): it never reaches the
    message."""
    state = PostgresState(pg_url)
    try:
        with pytest.raises(StoreError) as caught, state._db.write("test insert") as cur:
            for _ in range(2):
                cur.execute("INSERT INTO known_patients(patient_id, since) VALUES ('Patient/secret-id-42', 0)")
        assert str(caught.value) == "state store: test insert failed: UniqueViolation (SQLSTATE 23505)"
        assert state.known(["Patient/secret-id-42"]) == set()  # rolled back
    finally:
        state.close()


def test_the_password_is_in_no_repr_message_or_setting_display(tmp_path: Path) -> None:
    url = f"postgresql://bridge:hunter2-pw@/bridge?host={tmp_path}&port=5432"
    settings = load_settings(env={"BRIDGE_DB_URL": url})
    assert settings.state_location() == url and Settings().state_location() == "bridge-state.sqlite3"
    assert "hunter2" not in repr(settings)
    assert settings.redacted()["db_url"] == f"postgresql://bridge:***@/bridge?host={tmp_path}&port=5432"
    assert settings.state_display() == settings.redacted()["db_url"]
    assert Settings().state_display() == "bridge-state.sqlite3"
    assert describe(url) == f"database bridge on {tmp_path}:5432"
    with pytest.raises(StoreError) as caught:
        open_state(url)  # nothing listens in tmp_path
    message = str(caught.value)
    assert "hunter2" not in message and "\n" not in message and caught.value.exit_code == 8
    assert message.startswith(f"cannot connect to the state store, database bridge on {tmp_path}:5432: ")


def test_an_open_state_shows_where_it_is_without_the_password(pg_url: str) -> None:
    with_password = pg_url.replace("bridge@", "bridge:hunter2-pw@", 1)  # the test server trusts local users
    state = PostgresState(with_password)
    try:
        assert "hunter2" not in repr(state) and "hunter2" not in state.path
        state.accept(Delivery("c1", "channel/c1", "rest-hook", (InboxEvent("k", "query", "c1"),)), T0)
        assert state.stats().depth == 1
    finally:
        state.close()


# ------------------------------------------------------------------------------------------ leader


def test_one_leader_at_a_time_and_the_lock_is_released_at_the_end_of_the_block(pg_url: str) -> None:
    one, two = PostgresState(pg_url), PostgresState(pg_url)
    try:
        with one.leader("monitor") as first:
            with two.leader("monitor") as second, one.leader("monitor") as again:
                assert (first, second, again) == (True, False, False)  # a second block of one process too
            with two.leader("replica-slot:0") as other:
                assert other  # another name is another lock
        with two.leader("monitor") as now:
            assert now
    finally:
        one.close()
        two.close()


LEADER = """
import sys, time
from bridge.state import open_state
state = open_state(sys.argv[1])
with state.leader("monitor") as leading:
    print("leading" if leading else "not leading", flush=True)
    time.sleep(600)
"""


def eventually_leads(state: State, seconds: float = 10.0) -> bool:
    """The server ends a dead client's session when it sees the socket close: a moment, not at once."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with state.leader("monitor") as leading:
            if leading:
                return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_leader_that_dies_stops_leading(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    location = str(tmp_path / "s.sqlite3") if backend == "sqlite" else str(request.getfixturevalue("pg_url"))
    open_state(location).close()  # migrated before the child starts
    child = subprocess.Popen([sys.executable, "-c", LEADER, location], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "leading"
        state = open_state(location)
        try:
            with state.leader("monitor") as leading:
                assert not leading
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            assert eventually_leads(state)  # the kernel / the server dropped the dead process's lock
        finally:
            state.close()
    finally:
        child.kill()
        child.wait(timeout=30)
