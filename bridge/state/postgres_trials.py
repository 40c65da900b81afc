"""``TrialVersions`` on PostgreSQL: ``trial_versions``, first digest per (trial id, ruleset version) wins."""

from __future__ import annotations

from bridge.state.postgres import PostgresBackend
from bridge.state.trials import check_same_content


class PostgresTrialVersions(PostgresBackend):
    """``TrialVersions`` over a ``PostgresDatabase``."""

    def record_trial(self, trial_id: str, ruleset_version: str, digest: str) -> None:
        with self._db.write("record trial version") as cur:
            cur.execute("INSERT INTO trial_versions(trial_id, ruleset_version, digest) VALUES (%s, %s, %s) "
                        "ON CONFLICT (trial_id, ruleset_version) DO NOTHING", (trial_id, ruleset_version, digest))
            row = cur.execute("SELECT digest FROM trial_versions WHERE trial_id = %s AND ruleset_version = %s",
                              (trial_id, ruleset_version)).fetchone()
        check_same_content(trial_id, ruleset_version, row["digest"] if row else digest, digest)

    def trial_digest(self, trial_id: str, ruleset_version: str) -> str | None:
        with self._db.read("read trial version") as cur:
            row = cur.execute("SELECT digest FROM trial_versions WHERE trial_id = %s AND ruleset_version = %s",
                              (trial_id, ruleset_version)).fetchone()
        return str(row["digest"]) if row else None


__all__ = ["PostgresTrialVersions"]
