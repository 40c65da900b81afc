"""The one SQLite module: connections, transactions and schema migrations for every ``sqlite_*`` backend.

* **Connections**: one per thread (``threading.local``), opened with a busy timeout, ``journal_mode=WAL`` (readers
  never block the writer) and ``synchronous=FULL`` (a commit survives power loss: the inbox answers 200 only
  after it). ``:memory:`` gets one shared connection — only for single-threaded scratch use (an outbox in a
  test); the service's state refuses it.
* **Transactions**: ``write`` is ``BEGIN IMMEDIATE`` (the write lock is taken up front, so two writers never
  deadlock upgrading a read lock) committed at the end of the block, rolled back on any exception; ``read`` is
  autocommit. Every ``sqlite3.Error`` becomes a ``StoreError`` naming the operation, never a row's content.
* **Migrations**: ``schema_migrations(version, name, applied_at)``; each missing migration of
  ``sqlite_migrations.MIGRATIONS`` runs in its own write transaction with its row, re-checked under the lock so
  two processes opening a new file apply each once. A file migrated by a newer bridge is refused.

Everything SQLite-specific lives in ``bridge/state/sqlite*.py``. The PostgreSQL backend (issue #15) goes beside
it as ``bridge/state/postgres*.py``: a connection pool and transactions in ``postgres.py``, the same Protocols
implemented over it, and its own numbered migrations in the same kind of table.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bridge.errors import StoreError
from bridge.state.schema import pending
from bridge.state.sqlite_migrations import MIGRATIONS, Migration

MEMORY = ":memory:"

_MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations(
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
)"""


class SqliteDatabase:
    """One SQLite file (WAL), migrated to ``migrations`` on open; connections per thread."""

    def __init__(self, path: str | os.PathLike[str], busy_timeout: float = 30.0,
                 migrations: Sequence[Migration] = MIGRATIONS) -> None:
        self.path = str(path)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._shared: sqlite3.Connection | None = None
        if self.path != MEMORY and not Path(self.path).resolve().parent.is_dir():
            raise StoreError(f"cannot open the state store {self.path}: its directory does not exist")
        if self.path == MEMORY:
            self._shared = self._connect()
        try:
            self.migrate(migrations)
        except BaseException:
            self.close()
            raise

    # connections and transactions -----------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                 check_same_thread=False)
            db.row_factory = sqlite3.Row
            self._wal(db)
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the state store {self.path}: {exc}") from None
        with self._lock:
            self._connections.append(db)
        return db

    def _wal(self, db: sqlite3.Connection) -> None:
        """Switch to WAL. Two processes opening a new file at once can see "database is locked" here without
        SQLite waiting on its busy handler (the switch needs an exclusive lock), so this waits itself."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.01)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        if self._closed:
            raise StoreError("the state store is closed")
        if self._shared is not None:
            return self._shared
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    @contextmanager
    def write(self, operation: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE), committed when the block ends, rolled back if it raises."""
        db = self.connection()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(db)
            raise StoreError(f"state store: {operation} failed: {exc}") from None
        except BaseException:
            self._rollback(db)
            raise

    @contextmanager
    def read(self, operation: str) -> Iterator[sqlite3.Connection]:
        db = self.connection()
        try:
            yield db
        except sqlite3.Error as exc:
            raise StoreError(f"state store: {operation} failed: {exc}") from None

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        if db.in_transaction:
            db.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for db in connections:
            db.close()

    # migrations -----------------------------------------------------------------------------------
    def applied(self) -> list[int]:
        """The migration versions recorded in this database, ascending."""
        with self.read("read schema version") as db:
            return [r[0] for r in db.execute("SELECT version FROM schema_migrations ORDER BY version")]

    def migrate(self, migrations: Sequence[Migration]) -> None:
        with self.write("create schema_migrations") as db:
            db.execute(_MIGRATIONS_TABLE)
        for migration in pending(self.applied(), migrations, self.path):
            self._apply(migration)

    def _apply(self, migration: Migration) -> None:
        with self.write(f"migration {migration.version} ({migration.name})") as db:
            if db.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)).fetchone():
                return  # another process applied it while this one waited for the lock
            migration.run(db)
            db.execute("INSERT INTO schema_migrations(version, name) VALUES (?, ?)",
                       (migration.version, migration.name))


class SqliteBackend:
    """Base of the ``sqlite_*`` implementations: they share one ``SqliteDatabase`` (so a composite of them
    works on one file, in one transaction where an operation spans concerns)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db


__all__ = ["MEMORY", "SqliteBackend", "SqliteDatabase"]
