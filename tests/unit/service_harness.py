"""A real service process for tests: the FastAPI app over a SQLite store, a worker whose re-screen is a
recorder, uvicorn on a loopback port. No EHR: notifications must carry their resources.

    python -m tests.unit.service_harness --db state.sqlite3 --calls calls.sqlite3 --port 8123 --secret s

The recorder writes every call to ``calls(patient, at)`` and its *effect* — what publishing would do,
idempotently — to ``effects(patient PRIMARY KEY, writes)``, in its own SQLite file, committed before it
returns, so a test can count calls and effects after killing the process.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import uvicorn

from bridge.config import Settings
from bridge.normalize.mappings import load_code_map
from bridge.service.app import create_app
from bridge.service.logs import configure_logging
from bridge.service.worker import Worker, WorkerConfig
from bridge.state.sqlite_state import SqliteState as SqliteStore


class NoEhr:
    def fetch(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        return None

    def changed_since(self, resource_types: Sequence[str], since: datetime) -> Iterator[dict[str, Any]]:
        return iter(())


class Recorder:
    def __init__(self, path: str, delay: float) -> None:
        self.path, self.delay = path, delay
        db = self._db()
        db.execute("CREATE TABLE IF NOT EXISTS calls(patient TEXT, at REAL)")
        db.execute("CREATE TABLE IF NOT EXISTS effects(patient TEXT PRIMARY KEY, writes INTEGER)")
        db.close()

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def __call__(self, patient_id: str) -> str:
        db = self._db()
        db.execute("INSERT INTO calls VALUES (?, ?)", (patient_id, time.time()))
        time.sleep(self.delay)  # the pull + screen + publish a real re-screen would spend
        db.execute("INSERT INTO effects VALUES (?, 1) ON CONFLICT(patient) DO UPDATE SET writes = writes + 1",
                   (patient_id,))
        db.close()
        return "candidate"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True)
    p.add_argument("--calls", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--delay", type=float, default=0.05)
    p.add_argument("--max-body", type=int, default=100_000)
    args = p.parse_args(argv)
    configure_logging("WARNING")
    store = SqliteStore(args.db)
    config = WorkerConfig(coalesce_seconds=0.05, idle_seconds=0.01, lease_seconds=30, catch_up_on_start=False)
    worker = Worker(store, Recorder(args.calls, args.delay), NoEhr(), load_code_map(), config, name="harness",
                    threads=2)
    settings = Settings(webhook_secret=args.secret, api_token="api-token", max_body_bytes=args.max_body)
    app = create_app(settings, store, worker)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
