"""Which trial definitions the state has seen: one content digest per (trial id, ruleset version).

A protocol amendment must come with a new ``ruleset_version``; otherwise screenings saved under the old and the
new content would carry the same version and could not be told apart. ``record_trial`` keeps the first digest
seen for a version and refuses any other content under it with one line (``StoreError``, exit 8).
"""

from __future__ import annotations

from typing import Protocol

from bridge.errors import StoreError


def check_same_content(trial_id: str, ruleset_version: str, recorded: str, digest: str) -> None:
    """Raise the one-line refusal when ``digest`` differs from the ``recorded`` one (shared by every backend)."""
    if recorded != digest:
        raise StoreError(f"trial {trial_id} ruleset {ruleset_version} is already recorded with different content: "
                         "an amendment must bump ruleset_version")


class TrialVersions(Protocol):
    """The registry of trial versions the state has been used with."""

    def record_trial(self, trial_id: str, ruleset_version: str, digest: str) -> None:
        """Remember ``digest`` as the content of (``trial_id``, ``ruleset_version``) the first time; the same
        digest again is a no-op; another digest raises ``StoreError``."""
        ...

    def trial_digest(self, trial_id: str, ruleset_version: str) -> str | None:
        """The digest recorded for (``trial_id``, ``ruleset_version``), if any."""
        ...


__all__ = ["TrialVersions", "check_same_content"]
