"""``UiSessions`` on SQLite: sessions by id hash with expiry, sign-in failures per client, shared by every
``SqliteState`` opened on the same file (the replicas of one service)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.state import State, UiSession, open_state


@pytest.fixture
def two(state_location: str) -> Iterator[tuple[State, State]]:
    """Two states on one database, on each backend (SQLite file, PostgreSQL schema)."""
    a, b = open_state(state_location), open_state(state_location)
    yield a, b
    a.close()
    b.close()


def test_a_session_opened_on_one_state_is_found_on_another_until_it_expires(two: tuple[State, State]
                                                                            ) -> None:
    a, b = two
    a.open_session("h1", UiSession("ana", "coordinator", "csrf1", 100.0, 200.0))
    assert b.find_session("h1", 150.0) == UiSession("ana", "coordinator", "csrf1", 100.0, 200.0)
    assert b.find_session("h1", 200.0) is not None and b.find_session("h1", 200.5) is None
    assert b.find_session("h2", 150.0) is None
    assert b.find_session("h1", 30.0) is None  # issued in the future (beyond a minute of clock skew)
    b.close_session("h1")
    assert a.find_session("h1", 150.0) is None


def test_opening_a_session_drops_expired_ones(two: tuple[State, State]) -> None:
    a, _ = two
    a.open_session("old", UiSession("ana", "coordinator", "c", 0.0, 10.0))
    a.open_session("new", UiSession("ivo", "investigator", "c", 50.0, 100.0))
    assert a.find_session("old", 5.0) is None  # deleted: at 5.0 it would still be valid
    assert a.find_session("new", 60.0) is not None


def test_sign_in_failures_are_counted_across_states_and_cleared(two: tuple[State, State]) -> None:
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
