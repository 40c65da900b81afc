"""PostgreSQL down and back: at start-up one line and exit 8 naming host and database (never the password);
while it is down every store call is a ``StoreError`` (which the HTTP layer answers with 503) within the pool
timeout; once it is back the same state object works again without being reopened.

The outage test stops and starts a server of its own (``scripts/pg-server`` with its own ``PG_SERVER_FILE``),
never the shared one other tests use.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.errors import StoreError
from bridge.state import Delivery, InboxEvent, ScreeningRecord
from bridge.state.postgres_state import PostgresState
from bridge.trial import load_trial
from tests.pg import base_url

REPO = Path(__file__).resolve().parents[2]
PG_SERVER = REPO / "scripts" / "pg-server"
T0 = 1_780_000_000.0


def pg_server(pointer: Path, *args: str) -> str:
    env = {**os.environ, "PG_SERVER_FILE": str(pointer)}
    done = subprocess.run([str(PG_SERVER), *args], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A PostgreSQL of this test's own (URL, pointer file), removed afterwards."""
    base_url()  # skip, with the reason, where there is no test server (and so no PostgreSQL set-up)
    pointer = tmp_path / "pg-server"
    url = pg_server(pointer)
    try:
        yield url, pointer
    finally:
        pg_server(pointer, "stop")


def delivery(n: int) -> Delivery:
    return Delivery("c1", "channel/c1", "rest-hook", (InboxEvent(f"k{n}", "query", "c1"),))


def test_the_store_fails_fast_while_postgres_is_down_and_recovers_when_it_is_back(
        own_server: tuple[str, Path]) -> None:
    url, pointer = own_server
    state = PostgresState(url, pool_size=3, timeout=2.0)
    try:
        assert state.accept(delivery(1), T0).new == 1
        pg_server(pointer, "down")
        for call in (lambda: state.accept(delivery(2), T0), state.stats, lambda: state.probe_write(T0),
                     lambda: state.leader("monitor").__enter__()):
            started = time.monotonic()
            with pytest.raises(StoreError, match=r"^state store: .* failed: ") as caught:
                call()
            assert time.monotonic() - started < 10  # the pool timeout, not a hang
            assert "\n" not in str(caught.value)
        assert pg_server(pointer, "up") == url  # the same server, the same URL
        deadline, answered = time.monotonic() + 30, False
        while time.monotonic() < deadline and not answered:
            try:
                answered = state.accept(delivery(3), T0 + 1).new == 1
            except StoreError:
                time.sleep(0.2)
        assert answered, "the pool did not reconnect within 30 s"
        assert state.stats().inbox == {"pending": 2}  # the first and the third; the second was refused
        with state.leader("monitor") as leading:
            assert leading
    finally:
        state.close()


def test_an_unreachable_database_at_start_up_is_one_line_and_exit_8(tmp_path: Path) -> None:
    """``bridge registry status`` (any command opening the state) with BRIDGE_DB_URL where nothing listens."""
    url = f"postgresql://bridge:hunter2-pw@/bridge?host={tmp_path}&port=5432"
    env = {**os.environ, "BRIDGE_DB_URL": url}
    done = subprocess.run([sys.executable, "-m", "bridge", "registry", "status"], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 8, done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"database bridge on {tmp_path}:5432" in lines[0], done.stderr


def test_the_same_command_works_on_a_reachable_database(pg_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "BRIDGE_DB_URL": pg_url}
    done = subprocess.run([sys.executable, "-m", "bridge", "registry", "status", "--format", "json"], env=env,
                          capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert '"pending": 0' in done.stdout
    assert not (tmp_path / "bridge-state.sqlite3").exists()  # db_url, not the default SQLite file


def test_screening_log_reads_the_postgres_state(pg_url: str, tmp_path: Path) -> None:
    """With db_url set, the screening log reads PostgreSQL: no SQLite file needs to exist at db_path."""
    state = PostgresState(pg_url)
    try:
        state.save_screening(ScreeningRecord("p1", "candidate", [], "2026-06-15", T0, "NCT04762485",
                                             load_trial().ruleset_version, age=36, sex="female"))
    finally:
        state.close()
    env = {**os.environ, "BRIDGE_DB_URL": pg_url}
    out = tmp_path / "log.csv"
    done = subprocess.run([sys.executable, "-m", "bridge", "screening-log", "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = out.read_text(encoding="utf-8").splitlines()
    assert len(rows) == 2 and rows[1].startswith("S00001,") and "p1" not in rows[1]


def test_prescreen_save_names_the_postgres_state_without_its_password(pg_url: str, tmp_path: Path) -> None:
    """``prescreen --save`` with db_url records in PostgreSQL and says so with the password as ``***`` (the test
    server trusts its socket, so the password given is never checked — and must never be printed)."""
    url = pg_url.replace("bridge@", "bridge:hunter2-pw@", 1)
    assert "hunter2-pw" in url
    env = {**os.environ, "BRIDGE_DB_URL": url, "COLUMNS": "1000"}  # one line per message, not wrapped
    bundle = Path(__file__).resolve().parents[2] / "samples" / "prescreen" / "bundle.json"
    done = subprocess.run([sys.executable, "-m", "bridge", "prescreen", str(bundle), "--as-of", "2026-06-15",
                           "--save", "--format", "json"], env=env, capture_output=True, text=True, timeout=300,
                          check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "hunter2" not in done.stderr + done.stdout
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("saved ")]
    assert line.startswith("saved 56 screenings to postgresql://bridge:***@/")
    assert not (tmp_path / "bridge-state.sqlite3").exists()
    state = PostgresState(pg_url)
    try:
        assert len(state.screenings()) > 10
    finally:
        state.close()
