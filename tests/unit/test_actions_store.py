"""The study team's actions on SQLite (``bridge.state.sqlite_actions``): append-only, idempotent on the request
key, write-back columns the only ones ever updated, and the decision the stored actions add up to."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.decisions import decision
from bridge.state import NewAction, State, open_state
from bridge.state.sqlite_state import SqliteState

TRIAL = "NCT04762485"
WRITEBACK_COLUMNS = {"written_back_at", "writeback_error", "writeback_attempts"}


# ``state``: the conftest fixture, a fresh state on each backend (SQLite file, PostgreSQL schema)


@pytest.fixture
def sqlite_state(tmp_path: Path) -> Iterator[SqliteState]:
    s = SqliteState(tmp_path / "state.sqlite3")
    yield s
    s.close()


def _new(kind: str = "reviewed", key: str = "k1", patient: str = "p01", at: float = 100.0, **more: object) -> NewAction:
    return NewAction(TRIAL, patient, kind, "ana", "coordinator", at, key, "d1", **more)  # type: ignore[arg-type]


def test_record_assigns_increasing_seq_and_reads_back_every_field(state: State) -> None:
    first, added = state.record_action(_new(note="called <b>twice</b>"))
    second, _ = state.record_action(_new("screen-failure", "k2", at=101.0, reason="declined"))
    assert added and second.seq > first.seq
    assert (first.kind, first.user, first.role, first.at, first.note, first.verdicts_digest) == (
        "reviewed", "ana", "coordinator", 100.0, "called <b>twice</b>", "d1")
    assert (second.reason, second.value, second.undoes) == ("declined", None, None)
    assert state.actions(TRIAL, "p01") == [first, second]
    assert state.actions(TRIAL, "p02") == [] and state.actions("other-trial", "p01") == []


def test_the_same_request_key_records_one_action(state: State) -> None:
    first, added = state.record_action(_new(note="one"))
    again, added_again = state.record_action(_new(note="two", at=200.0))
    assert (added, added_again) == (True, False)
    assert again == first and len(state.actions(TRIAL, "p01")) == 1


def test_all_actions_by_time_window(state: State) -> None:
    for i, at in enumerate((10.0, 20.0, 30.0)):
        state.record_action(_new(key=f"k{i}", patient=f"p{i}", at=at))
    assert [a.at for a in state.all_actions(TRIAL)] == [10.0, 20.0, 30.0]
    assert [a.at for a in state.all_actions(TRIAL, since=20.0)] == [20.0, 30.0]
    assert [a.at for a in state.all_actions(TRIAL, since=10.0, until=30.0)] == [10.0, 20.0]


def test_write_back_columns_and_pending(state: State) -> None:
    a, _ = state.record_action(_new(key="a"))
    b, _ = state.record_action(_new(key="b"))
    assert [x.seq for x in state.pending_writebacks()] == [a.seq, b.seq]
    state.mark_writeback_failed(a.seq, "RemoteError")
    state.mark_writeback_failed(a.seq, "Timeout")
    wb = state.writeback(a.seq)
    assert wb is not None and (wb.written_back_at, wb.error, wb.attempts) == (None, "Timeout", 2)
    state.mark_written_back(a.seq, 500.0)
    wb = state.writeback(a.seq)
    assert wb is not None and (wb.written_back_at, wb.error, wb.attempts) == (500.0, None, 3)
    assert [x.seq for x in state.pending_writebacks()] == [b.seq]
    assert [x.seq for x in state.pending_writebacks(limit=0)] == []
    assert state.writeback(9999) is None
    assert state.actions(TRIAL, "p01")[0] == a  # the action itself unchanged


def test_undo_rows_fold_into_the_decision(state: State) -> None:
    consented, _ = state.record_action(_new("consented", "c"))
    failed, _ = state.record_action(_new("screen-failure", "f", reason="lost-to-contact"))
    assert decision(state.actions(TRIAL, "p01")).status == "ineligible"
    state.record_action(_new("undo", "u", undoes=failed.seq))
    d = decision(state.actions(TRIAL, "p01"))
    assert (d.status, d.status_action) == ("screening", consented)
    assert len(state.actions(TRIAL, "p01")) == 3  # the undone action stays in the trail


def test_no_method_updates_or_deletes_anything_but_write_back_columns(sqlite_state: SqliteState) -> None:
    """Every statement the store runs while every Actions method is used: only INSERTs into ``actions``, and
    UPDATEs of ``actions`` that set write-back columns alone; no DELETE of ``actions`` rows."""
    state = sqlite_state
    statements: list[str] = []
    state._conn().set_trace_callback(statements.append)
    a, _ = state.record_action(_new())
    state.record_action(_new())
    state.record_action(_new("undo", "u", undoes=a.seq))
    state.actions(TRIAL, "p01")
    state.all_actions(TRIAL, 0.0, 1e12)
    state.writeback(a.seq)
    state.mark_writeback_failed(a.seq, "x")
    state.mark_written_back(a.seq, 1.0)
    state.pending_writebacks()
    state._conn().set_trace_callback(None)
    touching = [s for s in statements if re.search(r"\bactions\b", s)]
    updates = [s for s in touching if s.lstrip().upper().startswith("UPDATE")]
    assert len(updates) == 2
    for sql in updates:
        assigned = set(re.findall(r"(\w+)\s*=", sql.split("WHERE")[0].split("SET", 1)[1]))
        assert assigned <= WRITEBACK_COLUMNS, sql
    assert not [s for s in touching if "DELETE" in s.upper()]
    before = [tuple(r) for r in state._conn().execute("SELECT seq, kind, user_name, note FROM actions")]
    assert len(before) == 2


def test_actions_survive_a_second_state_on_the_same_file(state_location: str) -> None:
    one, two = open_state(state_location), open_state(state_location)
    try:
        recorded, _ = one.record_action(_new())
        assert two.actions(TRIAL, "p01") == [recorded]
        assert two.record_action(_new(note="resent")) == (recorded, False)
    finally:
        one.close()
        two.close()
