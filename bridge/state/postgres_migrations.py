"""The PostgreSQL schema, as numbered migrations recorded in ``schema_migrations`` (applied by ``postgres.py``).

The same tables and meaning as the SQLite schema (``sqlite_migrations.py`` describes each), numbered on their
own: the PostgreSQL backend starts at today's SQLite schema (its migrations 1–12) as its migration 1, because
no PostgreSQL database predates it. Never edit a migration that has shipped: add the next number, here and —
when both backends gain a table — in ``sqlite_migrations.py``.

Differences from the SQLite tables, each for a reason:

* times stay epoch seconds (``DOUBLE PRECISION``) and JSON stays text, so both backends hand back identical
  records (``jsonb`` would reorder a published resource's keys);
* ``inbox.id`` / ``actions.seq`` / ``screening_numbers.number`` are identity columns, and ``registry_outbox``
  gains ``seq`` for the oldest-first order SQLite takes from ``rowid``;
* the claim queries use partial indexes on the rows still waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from bridge.state.schema import Step


@dataclass(frozen=True)
class Migration(Step):
    """One schema step: ``statements`` run in order, then ``apply`` (for a step that must look first)."""

    statements: tuple[str, ...] = ()
    apply: Callable[[psycopg.Cursor[Any]], None] | None = None

    def run(self, cur: psycopg.Cursor[Any]) -> None:
        for statement in self.statements:
            cur.execute(statement.encode())  # bytes: a constant statement, not a template
        if self.apply is not None:
            self.apply(cur)


SERVICE_TABLES = (
    """CREATE TABLE inbox(
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dedupe_key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('resource', 'query', 'catch-up')),
    channel TEXT NOT NULL,
    subscription TEXT,
    event_number BIGINT,
    resource_type TEXT,
    resource_id TEXT,
    patient_id TEXT,
    payload TEXT,
    received_at DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'claimed', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before DOUBLE PRECISION NOT NULL DEFAULT 0,
    claimed_at DOUBLE PRECISION,
    claimed_by TEXT,
    done_at DOUBLE PRECISION,
    last_error TEXT
)""",
    "CREATE INDEX inbox_waiting ON inbox(id) WHERE state IN ('pending', 'claimed')",
    "CREATE INDEX inbox_events ON inbox(subscription, event_number)",
    "CREATE INDEX inbox_done ON inbox(done_at) WHERE state = 'done'",
    """CREATE TABLE rescreens(
    patient_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('pending', 'claimed', 'done', 'failed')),
    generation INTEGER NOT NULL,
    claimed_generation INTEGER NOT NULL DEFAULT 0,
    requested_at DOUBLE PRECISION NOT NULL,
    oldest_request_at DOUBLE PRECISION,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before DOUBLE PRECISION NOT NULL DEFAULT 0,
    claimed_at DOUBLE PRECISION,
    claimed_by TEXT,
    done_at DOUBLE PRECISION,
    last_status TEXT,
    last_error TEXT
)""",
    "CREATE INDEX rescreens_waiting ON rescreens(not_before, patient_id) WHERE state IN ('pending', 'claimed')",
    "CREATE TABLE seen_versions(key TEXT PRIMARY KEY, seen_at DOUBLE PRECISION NOT NULL)",
    "CREATE TABLE known_patients(patient_id TEXT PRIMARY KEY, since DOUBLE PRECISION NOT NULL, reason TEXT)",
    """CREATE TABLE subscriptions(
    id TEXT PRIMARY KEY,
    channel TEXT NOT NULL,
    kind TEXT NOT NULL,
    topic TEXT,
    criteria TEXT,
    ehr_id TEXT,
    heartbeat_seconds DOUBLE PRECISION,
    resource_types TEXT,
    status TEXT,
    max_event_number BIGINT,
    reported_events BIGINT,
    reported_at DOUBLE PRECISION,
    covered_through BIGINT,
    created_at DOUBLE PRECISION,
    last_seen_at DOUBLE PRECISION,
    last_heartbeat_at DOUBLE PRECISION,
    last_query_at DOUBLE PRECISION,
    last_catch_up_at DOUBLE PRECISION
)""",
    """CREATE TABLE published(
    key TEXT PRIMARY KEY,
    resource_type TEXT NOT NULL,
    resource_id TEXT,
    fingerprint TEXT NOT NULL,
    version TEXT,
    resource TEXT NOT NULL,
    study TEXT,
    patient TEXT,
    status TEXT,
    updated_at DOUBLE PRECISION NOT NULL,
    version_id INTEGER,
    last_updated DOUBLE PRECISION
)""",
    "CREATE INDEX published_type ON published(resource_type, resource_id)",
    """CREATE TABLE published_history(
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    version_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    resource TEXT NOT NULL,
    last_updated DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (resource_type, resource_id, version_id)
)""",
    "CREATE INDEX published_history_updated ON published_history(resource_type, last_updated)",
    """CREATE TABLE screenings(
    patient_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    verdicts TEXT NOT NULL,
    as_of TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    trial TEXT,
    ruleset_version TEXT,
    first_screened_at DOUBLE PRECISION,
    age INTEGER,
    sex TEXT
)""",
    """CREATE TABLE screening_numbers(
    number BIGINT PRIMARY KEY,
    patient_id TEXT NOT NULL UNIQUE,
    assigned_at DOUBLE PRECISION NOT NULL
)""",
    """CREATE TABLE not_screened(
    patient_id TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    as_of TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
)""",
    """CREATE TABLE trial_versions(
    trial_id TEXT NOT NULL,
    ruleset_version TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (trial_id, ruleset_version)
)""",
    "CREATE TABLE write_probe(id INTEGER PRIMARY KEY CHECK (id = 1), at DOUBLE PRECISION NOT NULL)",
)

OUTBOX_TABLES = (
    """CREATE TABLE registry_outbox (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
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
    lease_until DOUBLE PRECISION,
    last_status INTEGER,
    last_error  TEXT,
    receipt     TEXT,
    sent_at     TEXT
)""",
    "CREATE INDEX registry_outbox_state ON registry_outbox (state)",
    "CREATE INDEX registry_outbox_package ON registry_outbox (package_id)",
    """CREATE TABLE registry_crid (
    pseudonym   TEXT PRIMARY KEY,
    crid        TEXT NOT NULL,
    obtained_at TEXT NOT NULL
)""",
)

# issue #17: never updated or deleted, but for the write-back columns (bridge/state/actions.py)
ACTION_TABLES = (
    """CREATE TABLE actions(
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    trial TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('judgement', 'reviewed', 'contacted', 'consented', 'eligible',
                                       'screen-failure', 'undo')),
    user_name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('coordinator', 'investigator')),
    at DOUBLE PRECISION NOT NULL,
    request_key TEXT NOT NULL UNIQUE,
    verdicts_digest TEXT NOT NULL,
    note TEXT,
    value TEXT,
    reason TEXT,
    undoes BIGINT REFERENCES actions(seq),
    written_back_at DOUBLE PRECISION,
    writeback_error TEXT,
    writeback_attempts INTEGER NOT NULL DEFAULT 0
)""",
    "CREATE INDEX actions_patient ON actions(trial, patient_id, seq)",
    "CREATE INDEX actions_pending ON actions(seq) WHERE written_back_at IS NULL",
)

# sessions by the SHA-256 of their id (the cookie value itself is never stored)
SESSION_TABLES = (
    """CREATE TABLE ui_sessions(
    id_hash TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    role TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
)""",
    "CREATE INDEX ui_sessions_expiry ON ui_sessions(expires_at)",
    """CREATE TABLE login_failures(
    client TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_at DOUBLE PRECISION NOT NULL
)""",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "the bridge's state as of SQLite migration 12: inbox, re-screens, subscriptions, published "
                 "index and history, screenings and screening numbers, trial versions, write probe, registry "
                 "outbox, study-team actions, coordinator page sessions",
              SERVICE_TABLES + OUTBOX_TABLES + ACTION_TABLES + SESSION_TABLES),
)

__all__ = ["MIGRATIONS", "Migration"]
