"""Schema migrations: numbered in ``schema_migrations``, and databases made before them open and migrate.

The legacy DDL below is copied verbatim from the code before ``bridge/state/`` (``bridge/store.py`` at 74616d1
and ``bridge/registry/outbox.py`` at 74616d1 and, before the ``withdrawn`` state, at 336fdfb): each test builds a
file exactly as that code left it, with rows in it, and opens it with today's code.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from bridge.errors import StoreError
from bridge.state import Delivery, InboxEvent, NotScreenedRecord, PublishedRecord, ScreeningRecord
from bridge.state.sqlite import SqliteDatabase
from bridge.state.sqlite_migrations import MIGRATIONS, Migration
from bridge.state.sqlite_outbox import SqliteOutbox as Outbox
from bridge.state.sqlite_state import SqliteState

T0 = 1_780_000_000.0

# bridge/store.py _SCHEMA at 74616d1 (its meta row said schema_version 1)
STORE_DDL_74616D1 = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbox(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('resource', 'query', 'catch-up')),
    channel TEXT NOT NULL,
    subscription TEXT,
    event_number INTEGER,
    resource_type TEXT,
    resource_id TEXT,
    patient_id TEXT,
    payload TEXT,
    received_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'claimed', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    claimed_at REAL,
    claimed_by TEXT,
    done_at REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS inbox_due ON inbox(state, not_before);
CREATE INDEX IF NOT EXISTS inbox_events ON inbox(subscription, event_number);
CREATE TABLE IF NOT EXISTS rescreens(
    patient_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('pending', 'claimed', 'done', 'failed')),
    generation INTEGER NOT NULL,
    claimed_generation INTEGER NOT NULL DEFAULT 0,
    requested_at REAL NOT NULL,
    oldest_request_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    claimed_at REAL,
    claimed_by TEXT,
    done_at REAL,
    last_status TEXT,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS rescreens_due ON rescreens(state, not_before);
CREATE TABLE IF NOT EXISTS seen_versions(key TEXT PRIMARY KEY, seen_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS known_patients(patient_id TEXT PRIMARY KEY, since REAL NOT NULL, reason TEXT);
CREATE TABLE IF NOT EXISTS subscriptions(
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    kind TEXT NOT NULL,
    topic TEXT,
    criteria TEXT,
    ehr_id TEXT,
    heartbeat_seconds REAL,
    resource_types TEXT,
    status TEXT,
    max_event_number INTEGER,
    reported_events INTEGER,
    reported_at REAL,
    covered_through INTEGER,
    created_at REAL,
    last_seen_at REAL,
    last_heartbeat_at REAL,
    last_query_at REAL,
    last_catch_up_at REAL
);
CREATE TABLE IF NOT EXISTS published(
    key TEXT PRIMARY KEY,
    resource_type TEXT NOT NULL,
    resource_id TEXT,
    fingerprint TEXT NOT NULL,
    version TEXT,
    resource TEXT NOT NULL,
    study TEXT,
    patient TEXT,
    status TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS published_type ON published(resource_type, resource_id);
CREATE TABLE IF NOT EXISTS screenings(
    patient_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    verdicts TEXT NOT NULL,
    as_of TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS not_screened(
    patient_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    as_of TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""

# bridge/registry/outbox.py _SCHEMA at 74616d1 (with the 'withdrawn' state)
OUTBOX_DDL_74616D1 = """
CREATE TABLE IF NOT EXISTS registry_outbox (
    key         TEXT PRIMARY KEY,
    package_id  TEXT NOT NULL,
    timepoint   TEXT NOT NULL,
    pseudonym   TEXT NOT NULL,
    body        TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'superseded', 'withdrawn')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    enqueued_at TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    owner       TEXT,
    lease_until REAL,
    last_status INTEGER,
    last_error  TEXT,
    receipt     TEXT,
    sent_at     TEXT
);
CREATE INDEX IF NOT EXISTS registry_outbox_state ON registry_outbox (state);
CREATE INDEX IF NOT EXISTS registry_outbox_package ON registry_outbox (package_id);
CREATE TABLE IF NOT EXISTS registry_crid (
    pseudonym   TEXT PRIMARY KEY,
    crid        TEXT NOT NULL,
    obtained_at TEXT NOT NULL
);
"""

# bridge/registry/outbox.py _SCHEMA at 336fdfb (before the 'withdrawn' state)
OUTBOX_DDL_336FDFB = """
CREATE TABLE IF NOT EXISTS registry_outbox (
    key         TEXT PRIMARY KEY,
    package_id  TEXT NOT NULL,
    timepoint   TEXT NOT NULL,
    pseudonym   TEXT NOT NULL,
    body        TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'superseded')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    enqueued_at TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    owner       TEXT,
    lease_until REAL,
    last_status INTEGER,
    last_error  TEXT,
    receipt     TEXT,
    sent_at     TEXT
);
CREATE INDEX IF NOT EXISTS registry_outbox_state ON registry_outbox (state);
CREATE INDEX IF NOT EXISTS registry_outbox_package ON registry_outbox (package_id);
CREATE TABLE IF NOT EXISTS registry_crid (
    pseudonym   TEXT PRIMARY KEY,
    crid        TEXT NOT NULL,
    obtained_at TEXT NOT NULL
);
"""

LATEST = [m.version for m in MIGRATIONS]


def legacy_file(path: Path, outbox_ddl: str | None, store: bool = True) -> Path:
    """A state file as the code before ``bridge/state/`` left it, with one row in each table."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    if store:
        db.executescript(STORE_DDL_74616D1)
        db.execute("INSERT INTO meta(key, value) VALUES ('schema_version', '1')")
        db.execute("INSERT INTO inbox(dedupe_key, kind, channel, subscription, resource_type, resource_id, payload, "
                   "received_at) VALUES ('res:Encounter/e1/_history/1', 'resource', 'c1', 'channel/c1', "
                   "'Encounter', 'e1', ?, ?)", ('{"digest":{"id":"e1"}}', T0))
        db.execute("INSERT INTO rescreens(patient_id, state, generation, requested_at, oldest_request_at) "
                   "VALUES ('p1', 'pending', 2, ?, ?)", (T0, T0))
        db.execute("INSERT INTO subscriptions(id, channel, kind, covered_through, created_at, last_seen_at) "
                   "VALUES ('channel/c1', 'c1', 'classic', NULL, ?, ?)", (T0, T0))
        db.execute("INSERT INTO known_patients VALUES ('p1', ?, 'admission')", (T0,))
        db.execute("INSERT INTO seen_versions VALUES ('Encounter/e1/_history/1', ?)", (T0,))
        db.execute("INSERT INTO published VALUES ('ResearchSubject|s|p1', 'ResearchSubject', 'rs1', 'f', '1', ?, "
                   "'ResearchStudy/x', 'Patient/p1', 'candidate', ?)", ('{"resourceType":"ResearchSubject"}', T0))
        db.execute("INSERT INTO screenings VALUES ('p1', 'candidate', '[]', '2026-06-15', ?)", (T0,))
        db.execute("INSERT INTO not_screened VALUES ('d1', 'deceased', '2026-06-15', ?)", (T0,))
    if outbox_ddl is not None:
        db.executescript(outbox_ddl)
        db.execute("INSERT INTO registry_outbox (key, package_id, timepoint, pseudonym, body, state, enqueued_at, "
                   "updated_at) VALUES ('k1', 'pkg-1', 'infusion-1', 'ps1', '{}', 'pending', 'x', 'x')")
        db.execute("INSERT INTO registry_crid VALUES ('ps1', 'CRID-1', 'x')")
    db.commit()
    db.close()
    return path


def shape(path: Path) -> dict[str, object]:
    """Tables with their columns (name, type, not null, default, key), indexes, and the outbox's CHECK."""
    db = sqlite3.connect(path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                           "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        columns = {t: [tuple(c[1:]) for c in db.execute(f"PRAGMA table_info({t})")] for t in tables}
        indexes = sorted(tuple(r) for r in db.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' "
                                                       "AND name NOT LIKE 'sqlite_%'"))
        (outbox_sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'registry_outbox'").fetchone()
    finally:
        db.close()
    return {"columns": columns, "indexes": indexes, "withdrawn": "'withdrawn'" in outbox_sql}


def fresh_shape(tmp_path: Path) -> dict[str, object]:
    SqliteState(tmp_path / "fresh.sqlite3").close()
    return shape(tmp_path / "fresh.sqlite3")


def test_a_fresh_file_records_every_migration(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "state.sqlite3")
    try:
        assert state.schema_versions() == LATEST == list(range(1, len(MIGRATIONS) + 1))
        names = [r[0] for r in state._conn().execute("SELECT name FROM schema_migrations ORDER BY version")]
        assert names == [m.name for m in MIGRATIONS]
    finally:
        state.close()
    got = shape(tmp_path / "state.sqlite3")
    assert "meta" not in got["columns"]  # type: ignore[operator]
    assert [c[0] for c in got["columns"]["screenings"]][-5:] == [  # type: ignore[index]
        "trial", "ruleset_version", "first_screened_at", "age", "sex"]
    assert {"actions", "ui_sessions", "login_failures"} <= set(got["columns"])  # type: ignore[arg-type]


@pytest.mark.parametrize("outbox_ddl", [OUTBOX_DDL_336FDFB, OUTBOX_DDL_74616D1, None],
                         ids=["outbox-before-withdrawn", "outbox-with-withdrawn", "no-outbox"])
def test_a_state_file_from_before_migrations_opens_with_its_rows(tmp_path: Path, outbox_ddl: str | None) -> None:
    path = legacy_file(tmp_path / "old.sqlite3", outbox_ddl)
    state = SqliteState(path)
    try:
        assert state.schema_versions() == LATEST
        [entry] = state.inbox_entries()
        assert (entry.event.dedupe_key, entry.state, entry.event.payload) == (
            "res:Encounter/e1/_history/1", "pending", {"digest": {"id": "e1"}})
        assert state.rescreen_state("p1")["generation"] == 2  # type: ignore[index]
        assert state.known(["p1", "p2"]) == {"p1"} and state.seen_versions(["Encounter/e1/_history/1"])
        assert state.subscription("channel/c1").last_seen_at == T0  # type: ignore[union-attr]
        assert state.get_published("ResearchSubject|s|p1").resource_id == "rs1"  # type: ignore[union-attr]
        # migration 11: a screening from before it was first screened when it was last saved
        assert state.screenings() == [ScreeningRecord("p1", "candidate", [], "2026-06-15", T0, None, None, T0)]
        assert state.not_screened() == [NotScreenedRecord("d1", "deceased", "2026-06-15", T0)]
        state.save_screening(ScreeningRecord("p1", "ineligible", [], "2026-06-16", T0 + 1, "NCT04762485", "r2"))
        assert state.screening("p1") == ScreeningRecord("p1", "ineligible", [], "2026-06-16", T0 + 1,
                                                        "NCT04762485", "r2", T0)  # still first screened at T0
        state.accept(Delivery("c1", "channel/c1", "rest-hook", (InboxEvent("k2", "query", "c1"),)), T0 + 2)
        box = state.registry_outbox(clock=lambda: T0)
        if outbox_ddl is not None:
            assert box.counts()["pending"] == 1 and box.crid("ps1") == "CRID-1"
            assert box.withdraw_except(set()) == 1 and box.counts()["withdrawn"] == 1  # the new state is allowed
        else:
            assert box.counts()["pending"] == 0
    finally:
        state.close()
    assert shape(path) == fresh_shape(tmp_path)


def test_an_outbox_file_from_before_migrations_opens_through_the_outbox(tmp_path: Path) -> None:
    """``bridge registry submit`` run before the service ever opened the file: only the outbox's tables."""
    path = legacy_file(tmp_path / "old.sqlite3", OUTBOX_DDL_336FDFB, store=False)
    with Outbox(path, clock=lambda: T0) as box:
        assert box.counts()["pending"] == 1
        assert box.withdraw_except(set()) == 1
    assert shape(path) == fresh_shape(tmp_path)


def test_reopening_applies_nothing_again(tmp_path: Path) -> None:
    path = legacy_file(tmp_path / "old.sqlite3", OUTBOX_DDL_336FDFB)
    SqliteState(path).close()
    before = sqlite3.connect(path).execute("SELECT * FROM schema_migrations ORDER BY version").fetchall()
    SqliteState(path).close()
    with Outbox(path) as box:
        assert box.counts()["withdrawn"] == 0
    after = sqlite3.connect(path).execute("SELECT * FROM schema_migrations ORDER BY version").fetchall()
    assert after == before and [r[0] for r in after] == LATEST


def test_a_file_from_a_newer_bridge_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    SqliteState(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_migrations(version, name) VALUES (99, 'from the future')")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema version 99, newer than this bridge knows"):
        SqliteState(path)


def test_a_failing_migration_is_rolled_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    broken = Migration(len(MIGRATIONS) + 1, "broken", ("CREATE TABLE half_done(x)", "INSERT INTO nowhere VALUES (1)"))
    with pytest.raises(StoreError, match=rf"migration {broken.version} \(broken\) failed: no such table: nowhere"):
        SqliteDatabase(path, migrations=(*MIGRATIONS, broken))
    assert "half_done" not in shape(path)["columns"]  # type: ignore[operator]
    state = SqliteState(path)
    try:
        assert state.schema_versions() == LATEST
    finally:
        state.close()


def test_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    """Six openers race on a new file, five times (the switch to WAL used to fail with "database is locked")."""
    for attempt in range(5):
        path, start, errors = tmp_path / f"state-{attempt}.sqlite3", threading.Barrier(6), []

        def opener(path: Path = path, start: threading.Barrier = start, errors: list[StoreError] = errors) -> None:
            start.wait()
            try:
                SqliteDatabase(path).close()  # its own connection, as another process would have
            except StoreError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=opener) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        versions = sqlite3.connect(path).execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
        assert [v for (v,) in versions] == LATEST


def test_published_rows_written_before_keep_their_search_columns(tmp_path: Path) -> None:
    path = legacy_file(tmp_path / "old.sqlite3", None)
    state = SqliteState(path)
    try:
        [found] = state.find_published("ResearchSubject", patient="Patient/p1", status="candidate")
        assert found == PublishedRecord("ResearchSubject|s|p1", "ResearchSubject", "rs1", "f", "1",
                                        {"resourceType": "ResearchSubject"}, T0)
    finally:
        state.close()
