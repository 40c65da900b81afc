"""How a row of the state's tables becomes its record, the same in both backends (``sqlite_*.py``,
``postgres_*.py``): the tables have the same columns, JSON columns are text (``dumps`` / ``loads``), and both
drivers give rows that are read by column name (``sqlite3.Row``, psycopg's dict rows)."""

from __future__ import annotations

import json
from typing import Any, cast

from bridge.decisions import ActionKind, ActionRecord, NewAction, Role
from bridge.state.inbox import InboxEntry, InboxEvent
from bridge.state.published import PublishedRecord, PublishedVersion
from bridge.state.screenings import NotScreenedRecord, ScreeningRecord
from bridge.state.sessions import UiSession


def dumps(value: Any) -> str | None:
    """A JSON column value (compact, UTF-8 kept); None stays NULL."""
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def claim_args(worker: str, now: float, lease: float, limit: int, max_attempts: int) -> dict[str, Any]:
    """The named parameters of both backends' claim statements (inbox and re-screens)."""
    return {"now": now, "worker": worker, "expired": now - lease, "limit": limit, "max_attempts": max_attempts}


def entry_from_row(row: Any) -> InboxEntry:
    event = InboxEvent(row["dedupe_key"], row["kind"], row["channel"], row["subscription"], row["event_number"],
                       row["resource_type"], row["resource_id"], row["patient_id"], loads(row["payload"]))
    return InboxEntry(row["id"], event, row["received_at"], row["state"], row["attempts"], row["claimed_at"],
                      row["last_error"])


def published_from_row(row: Any) -> PublishedRecord:
    return PublishedRecord(row["key"], row["resource_type"], row["resource_id"], row["fingerprint"],
                           row["version"], loads(row["resource"]), row["updated_at"], row["version_id"],
                           row["last_updated"])


def version_from_row(row: Any) -> PublishedVersion:
    return PublishedVersion(row["resource_type"], row["resource_id"], row["version_id"], loads(row["resource"]),
                            row["last_updated"])


def screening_from_row(row: Any) -> ScreeningRecord:
    return ScreeningRecord(row["patient_id"], row["status"], loads(row["verdicts"]), row["as_of"],
                           row["updated_at"], row["trial"], row["ruleset_version"], row["first_screened_at"],
                           row["age"], row["sex"])


def not_screened_from_row(row: Any) -> NotScreenedRecord:
    return NotScreenedRecord(row["patient_id"], row["reason"], row["as_of"], row["updated_at"])


def session_from_row(row: Any) -> UiSession:
    return UiSession(row["user_name"], row["role"], row["csrf"], row["created_at"], row["expires_at"])


def action_from_row(row: Any) -> ActionRecord:
    """A stored action from its ``actions`` row (an ``sqlite3.Row`` or a psycopg dict row: same columns)."""
    return NewAction(row["trial"], row["patient_id"], cast(ActionKind, row["kind"]), row["user_name"],
                     cast(Role, row["role"]), row["at"], row["request_key"], row["verdicts_digest"], row["note"],
                     row["value"], row["reason"], row["undoes"]).stored(row["seq"])


__all__ = ["action_from_row", "claim_args", "dumps", "entry_from_row", "loads", "not_screened_from_row",
           "published_from_row", "screening_from_row", "session_from_row", "version_from_row"]
