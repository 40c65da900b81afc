"""``TrialVersions`` on SQLite: ``trial_versions``, first digest per (trial id, ruleset version) wins."""

from __future__ import annotations

from bridge.state.sqlite import SqliteBackend
from bridge.state.trials import check_same_content


class SqliteTrialVersions(SqliteBackend):
    """``TrialVersions`` over a ``SqliteDatabase``."""

    def record_trial(self, trial_id: str, ruleset_version: str, digest: str) -> None:
        with self._db.write("record trial version") as db:
            db.execute("INSERT INTO trial_versions(trial_id, ruleset_version, digest) VALUES (?, ?, ?) "
                       "ON CONFLICT(trial_id, ruleset_version) DO NOTHING", (trial_id, ruleset_version, digest))
            recorded = db.execute("SELECT digest FROM trial_versions WHERE trial_id = ? AND ruleset_version = ?",
                                  (trial_id, ruleset_version)).fetchone()[0]
        check_same_content(trial_id, ruleset_version, recorded, digest)

    def trial_digest(self, trial_id: str, ruleset_version: str) -> str | None:
        with self._db.read("read trial version") as db:
            row = db.execute("SELECT digest FROM trial_versions WHERE trial_id = ? AND ruleset_version = ?",
                             (trial_id, ruleset_version)).fetchone()
        return str(row[0]) if row else None


__all__ = ["SqliteTrialVersions"]
