"""``bridge publish-study``: create or update a trial's ResearchStudy on a FHIR server, and record it locally.

The trial is ``--trial FILE``, else the ``trial`` setting, else the shipped NCT04762485 file. What the EHR holds
afterwards (the ResearchStudy and its Provenance, as the EHR returned them) is recorded in the local state store
(``db_path``) for ``bridge serve``'s ``/fhir`` — as ``prescreen --publish`` records its subjects — when
``--save`` is given (the store is created if needed) or when the store already exists (a store someone keeps is
kept in step with the EHR; a user who only publishes gets no stray database file). Before anything is sent, a
store that holds the trial's ruleset version with other content refuses the file (exit 8).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bridge.cli.common import (
    ConfigOption,
    TrialOption,
    client_for,
    err_console,
    handles_errors,
    out_console,
    print_json,
    settings_from,
    trial_from,
)
from bridge.publish.publisher import Written, publish_study

if TYPE_CHECKING:
    from bridge.config import Settings
    from bridge.trial import Trial

HELP = """Create or update a trial's ResearchStudy (with its eligibility Group) on a FHIR server.

The trial is --trial FILE, else the 'trial' setting, else the shipped NCT04762485 file. Idempotent: running it
again changes nothing unless the study's content changed.

With --save, or when the local state store (db_path) already exists, the ResearchStudy and its Provenance are
recorded there as the EHR returned them ('bridge serve' serves them at /fhir); a store that already holds the
trial's ruleset version with other content refuses the file before anything is sent.

Example:

\b
    bridge publish-study https://ehr.example/fhir --config bridge.yaml
    bridge publish-study https://ehr.example/fhir --trial my-trial.yaml --save

Exit codes: 0 ok, 3 trial file unreadable, 4 trial file invalid, 5 configuration, 6 own output invalid (nothing
sent), 7 remote server error, 8 state store error.
"""

RECORDED_TYPES = ("ResearchStudy", "Provenance")  # the conformance resources are not served at /fhir from here


def records_locally(settings: Settings, save: bool) -> bool:
    """``--save``, a PostgreSQL ``db_url`` (it always exists), or a SQLite state store already at ``db_path``."""
    return save or settings.db_url is not None or Path(settings.db_path).exists()


def publish_recorded(base_url: str, settings: Settings, trial: Trial) -> tuple[Written, int]:
    """Publish the trial's study through a ``RecordingClient``, then record the ResearchStudy and its Provenance
    as the EHR returned them (``record_publication``). The store is opened, and the trial version recorded
    (refused when changed), before anything is sent."""
    from bridge.localfhir.remote import RecordingClient, record_publication
    from bridge.state import open_state

    state = open_state(settings.state_location())
    try:
        state.record_trial(trial.id, trial.ruleset_version, trial.digest)
        written: list[Written] = []
        with RecordingClient(base_url, settings) as client:
            try:
                written.append(publish_study(client, trial=trial))
            finally:
                client.writes[:] = [w for w in client.writes if w.sent.get("resourceType") in RECORDED_TYPES]
                count = record_publication(state, client, written)
    finally:
        state.close()
    return written[0], count


@handles_errors
def command(
    base_url: Annotated[str, typer.Argument(help="FHIR base URL of the EHR")],
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the outcome as JSON")] = False,
    trial_file: TrialOption = None,
    save: Annotated[bool, typer.Option(
        "--save", help="record the ResearchStudy and its Provenance, as the EHR returned them, in the local state "
                       "store (db_path) for /fhir; without --save they are recorded when the store exists")]
    = False,
) -> None:
    settings = settings_from(config)
    trial = trial_from(trial_file, settings)
    count = None
    if records_locally(settings, save):
        written, count = publish_recorded(base_url, settings, trial)
    else:
        with client_for(base_url, settings) as client:
            written = publish_study(client, trial=trial)
    if as_json:
        print_json({"reference": written.reference, "outcome": written.outcome, "version": written.version})
    else:
        out_console.print(f"{written.reference} {written.outcome} (version {written.version})", highlight=False)
    if count is not None:
        err_console.print(f"recorded for /fhir: {count} resources as the EHR returned them, in "
                          f"{settings.state_display()}", highlight=False, soft_wrap=True)


__all__ = ["HELP", "command", "publish_recorded", "records_locally"]
