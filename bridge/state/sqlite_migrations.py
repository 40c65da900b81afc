"""The SQLite schema, as numbered migrations recorded in ``schema_migrations`` (applied by ``sqlite.py``).

A migration is applied in one transaction together with its row in ``schema_migrations``, so a process killed
mid-way leaves it either applied or not. Never edit a migration that has shipped: add the next number.

Migrations 1–3 also *adopt* a database made before this table existed (the service's tables from
``bridge/store.py``, the outbox's from ``bridge/registry/outbox.py``, with or without the ``withdrawn`` state):
their statements are ``IF NOT EXISTS`` and the ``withdrawn`` rebuild looks before it acts. From 4 on they are
plain, because every database reaching them has the same tables.

Tables::

    inbox           one row per accepted event; dedupe_key UNIQUE makes a second delivery a no-op.
                    state pending -> claimed (lease: claimed_at + lease seconds) -> done | failed;
                    an expired claim is claimable again (a crashed worker loses nothing).
                    payload holds only what processing needs (ids, codes, statuses — never a value) and is
                    cleared when the entry is done.
    rescreens       one row per patient (PRIMARY KEY): many events for one patient coalesce into one re-screen.
                    ``generation`` counts requests; a request that arrives while the re-screen runs sends the
                    row back to pending when that run finishes, so no change is ever missed.
    seen_versions   resource version keys already resolved (the same version from two channels acts once).
    known_patients  patients the bridge has seen admitted or has screened: their results trigger re-screens.
    subscriptions   per subscription: channel, topic/criteria, heartbeat period, event numbers seen/covered,
                    last notification / heartbeat / query times — what gap and heartbeat checks need.
    published       what the bridge wrote to the EHR: key, fingerprint, version, the body as published (served
                    read-only at /fhir), plus study / patient / status columns for search; version_id and
                    last_updated: the index's own version of the resource (7).
    published_history every version of each published Type/id (version_id 1, 2, ...), for vread and _history.
    screenings      the latest pre-screen per patient (status, verdicts, as-of, trial, ruleset version).
    not_screened    patients the latest pre-screen did not screen, with the reason and as-of.
    registry_outbox registry packages and their delivery state; registry_crid the registry's patient ids.
    trial_versions  the content digest first seen for each (trial id, ruleset version).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from bridge.state.schema import Step


@dataclass(frozen=True)
class Migration(Step):
    """One schema step: ``statements`` run in order, then ``apply`` (for a step that must look first)."""

    statements: tuple[str, ...] = ()
    apply: Callable[[sqlite3.Connection], None] | None = None

    def run(self, db: sqlite3.Connection) -> None:
        for statement in self.statements:
            db.execute(statement)
        if self.apply is not None:
            self.apply(db)


SERVICE_TABLES = (
    """CREATE TABLE IF NOT EXISTS inbox(
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
)""",
    "CREATE INDEX IF NOT EXISTS inbox_due ON inbox(state, not_before)",
    "CREATE INDEX IF NOT EXISTS inbox_events ON inbox(subscription, event_number)",
    """CREATE TABLE IF NOT EXISTS rescreens(
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
)""",
    "CREATE INDEX IF NOT EXISTS rescreens_due ON rescreens(state, not_before)",
    "CREATE TABLE IF NOT EXISTS seen_versions(key TEXT PRIMARY KEY, seen_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS known_patients(patient_id TEXT PRIMARY KEY, since REAL NOT NULL, reason TEXT)",
    """CREATE TABLE IF NOT EXISTS subscriptions(
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
)""",
    """CREATE TABLE IF NOT EXISTS published(
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
)""",
    "CREATE INDEX IF NOT EXISTS published_type ON published(resource_type, resource_id)",
    """CREATE TABLE IF NOT EXISTS screenings(
    patient_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    verdicts TEXT NOT NULL,
    as_of TEXT NOT NULL,
    updated_at REAL NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS not_screened(
    patient_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    as_of TEXT NOT NULL,
    updated_at REAL NOT NULL
)""",
)

OUTBOX_TABLE = """CREATE TABLE IF NOT EXISTS registry_outbox (
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
)"""
OUTBOX_INDEXES = (
    "CREATE INDEX IF NOT EXISTS registry_outbox_state ON registry_outbox (state)",
    "CREATE INDEX IF NOT EXISTS registry_outbox_package ON registry_outbox (package_id)",
)
OUTBOX_TABLES = (
    OUTBOX_TABLE,
    *OUTBOX_INDEXES,
    """CREATE TABLE IF NOT EXISTS registry_crid (
    pseudonym   TEXT PRIMARY KEY,
    crid        TEXT NOT NULL,
    obtained_at TEXT NOT NULL
)""",
)


def _outbox_withdrawn_state(db: sqlite3.Connection) -> None:
    """An outbox made before the 'withdrawn' state: the table is rebuilt with the new CHECK, rows kept."""
    found = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'registry_outbox'").fetchone()
    if found is None or "'withdrawn'" in found[0]:
        return
    db.execute("ALTER TABLE registry_outbox RENAME TO registry_outbox_before_withdrawn")
    db.execute(OUTBOX_TABLE)
    db.execute("INSERT INTO registry_outbox SELECT * FROM registry_outbox_before_withdrawn")
    db.execute("DROP TABLE registry_outbox_before_withdrawn")
    for statement in OUTBOX_INDEXES:  # the indexes went with the old table
        db.execute(statement)


PUBLISHED_VERSIONS = (
    "ALTER TABLE published ADD COLUMN version_id INTEGER",
    "ALTER TABLE published ADD COLUMN last_updated REAL",
    """CREATE TABLE published_history(
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    version_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    resource TEXT NOT NULL,
    last_updated REAL NOT NULL,
    PRIMARY KEY (resource_type, resource_id, version_id)
)""",
    "CREATE INDEX published_history_updated ON published_history(resource_type, last_updated)",
)


# issue #17: never updated or deleted, but for the write-back columns (bridge/state/actions.py)
ACTION_TABLES = (
    """CREATE TABLE actions(
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    trial TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('judgement', 'reviewed', 'contacted', 'consented', 'eligible',
                                       'screen-failure', 'undo')),
    user_name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('coordinator', 'investigator')),
    at REAL NOT NULL,
    request_key TEXT NOT NULL UNIQUE,
    verdicts_digest TEXT NOT NULL,
    note TEXT,
    value TEXT,
    reason TEXT,
    undoes INTEGER REFERENCES actions(seq),
    written_back_at REAL,
    writeback_error TEXT,
    writeback_attempts INTEGER NOT NULL DEFAULT 0
)""",
    "CREATE INDEX actions_patient ON actions(trial, patient_id, seq)",
    "CREATE INDEX actions_pending ON actions(seq) WHERE written_back_at IS NULL",
)

# issue #17 / #15: sessions by the SHA-256 of their id (the cookie value itself is never stored)
SESSION_TABLES = (
    """CREATE TABLE ui_sessions(
    id_hash TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    role TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
)""",
    "CREATE INDEX ui_sessions_expiry ON ui_sessions(expires_at)",
    """CREATE TABLE login_failures(
    client TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_at REAL NOT NULL
)""",
)

def _published_first_versions(db: sqlite3.Connection) -> None:
    """Every resource already in the index becomes its version 1, last updated when it was recorded."""
    rows = db.execute("SELECT key, resource_type, resource_id, resource, updated_at FROM published").fetchall()
    for key, rtype, rid, resource, updated_at in rows:
        served = rid or json.loads(resource).get("id")
        if isinstance(served, str) and served:
            db.execute("INSERT OR IGNORE INTO published_history VALUES (?, ?, 1, ?, ?, ?)",
                       (rtype, served, key, resource, updated_at))
    db.execute("UPDATE published SET version_id = 1, last_updated = updated_at")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "service state: inbox, re-screens, subscriptions, published index, screenings", SERVICE_TABLES),
    Migration(2, "registry outbox and registry patient ids", OUTBOX_TABLES),
    Migration(3, "registry outbox: the withdrawn state", apply=_outbox_withdrawn_state),
    Migration(4, "screenings name their trial and ruleset version", (
        "ALTER TABLE screenings ADD COLUMN trial TEXT",
        "ALTER TABLE screenings ADD COLUMN ruleset_version TEXT",
    )),
    Migration(5, "trial versions", ("""CREATE TABLE trial_versions(
    trial_id TEXT NOT NULL,
    ruleset_version TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (trial_id, ruleset_version)
)""",)),
    Migration(6, "drop meta (its schema_version 1 is now schema_migrations)", ("DROP TABLE IF EXISTS meta",)),
    Migration(7, "published index: versions, last updated, kept history", PUBLISHED_VERSIONS,
              apply=_published_first_versions),
    Migration(8, "write probe: one row /readyz rewrites to learn that the store takes a committed write", (
        "CREATE TABLE write_probe(id INTEGER PRIMARY KEY CHECK (id = 1), at REAL NOT NULL)",)),
    Migration(9, "study-team actions: the append-only audit trail and each action's write-back", ACTION_TABLES),
    Migration(10, "coordinator page sessions and login throttle, shared by every replica", SESSION_TABLES),
    Migration(11, "screenings: when first screened, and age and sex at screening (the screening log)", (
        "ALTER TABLE screenings ADD COLUMN first_screened_at REAL",
        "ALTER TABLE screenings ADD COLUMN age INTEGER",
        "ALTER TABLE screenings ADD COLUMN sex TEXT",
        "UPDATE screenings SET first_screened_at = updated_at",
    )),
    Migration(12, "screening numbers: the screening log's pseudonym of each patient ever screened", (
        """CREATE TABLE screening_numbers(
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    patient_id TEXT NOT NULL UNIQUE,
    assigned_at REAL NOT NULL
)""",
        """INSERT INTO screening_numbers(patient_id, assigned_at)
SELECT patient_id, COALESCE(first_screened_at, updated_at) FROM screenings
ORDER BY COALESCE(first_screened_at, updated_at), patient_id""",
    )),
)

__all__ = ["MIGRATIONS", "Migration"]
