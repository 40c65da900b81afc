"""``UiSessions`` on SQLite: sessions by id hash with expiry, sign-in failures per client, shared by every
``SqliteState`` opened on the same file (the replicas of one service)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.state import UiSession
from bridge.state.sqlite_state import SqliteState


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[SqliteState, SqliteState]]:
    a, b = SqliteState(tmp_path / "s.sqlite3"), SqliteState(tmp_path / "s.sqlite3")
    yield a, b
    a.close()
    b.close()


def test_a_session_opened_on_one_state_is_found_on_another_until_it_expires(two: tuple[SqliteState, SqliteState]
                                                                            ) -> None:
    a, b = two
    a.open_session("h1", UiSession("ana", "coordinator", "csrf1", 100.0, 200.0))
    assert b.find_session("h1", 150.0) == UiSession("ana", "coordinator", "csrf1", 100.0, 200.0)
    assert b.find_session("h1", 200.0) is not None and b.find_session("h1", 200.5) is None and b.find_session("h2", 150.0) is None
    assert b.find_session("h1", 30.0) is None  # issued in the future (beyond a minute of clock skew)
    b.close_session("h1")
    assert a.find_session("h1", 150.0) is None


def test_opening_a_session_drops_expired_ones(two: tuple[SqliteState, SqliteState]) -> None:
    a, _ = two
    a.open_session("old", UiSession("ana", "coordinator", "c", 0.0, 10.0))
    a.open_session("new", UiSession("ivo", "investigator", "c", 50.0, 100.0))
    assert [r[0] for r in a._conn().execute("SELECT id_hash FROM ui_sessions")] == ["new"]


def test_sign_in_failures_are_counted_across_states_and_cleared(two: tuple[SqliteState, SqliteState]) -> None:
    a, b = two
    assert a.login_failures("10.0.0.1") is None
    a.record_login_failure("10.0.0.1", 100.0, forget_before=0.0)
    counted = b.record_login_failure("10.0.0.1", 101.0, forget_before=0.0)
    assert (counted.count, counted.last_at) == (2, 101.0)
    assert a.login_failures("10.0.0.1") == counted
    b.record_login_failure("10.0.0.2", 5000.0, forget_before=1000.0)  # forgets 10.0.0.1 (last at 101)
    assert a.login_failures("10.0.0.1") is None
    a.clear_login_failures("10.0.0.2")
    assert b.login_failures("10.0.0.2") is None
