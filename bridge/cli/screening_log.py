"""``bridge screening-log``: the ICH E6 subject screening log of a trial, as CSV, from the local state store."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from bridge.cli.common import ConfigOption, TrialOption, err_console, handles_errors, settings_from, trial_from
from bridge.errors import InputError, StoreError

HELP = """Write the subject screening log (ICH E6 essential document) of a trial as CSV.

Reads the local state store (the db_path setting: what 'bridge prescreen --save' and the service saved) and
writes one row per patient screened for the trial: a pseudonymous screening number (S00001, stable across runs,
never the patient id), the date first screened, age and sex, each criterion's result (exc-investigator: the
investigator's judgement when recorded), the pre-screen status and the status in effect, the study team's
decision and its reason, enrolled yes/no (consented or confirmed eligible) and whether the verdicts changed since
the last review. No names or identifiers. --from/--to select by the date first screened (inclusive).
--identification-list writes the subject identification list (screening number -> patient id) to its own file:
keep it apart from the log.

Example:

\b
    bridge screening-log --from 2026-01-01 --to 2026-12-31 --out screening-log.csv \\
        --identification-list identification-list.csv

Exit codes: 0 ok, 2 bad dates or an output file that cannot be written, 4 invalid trial file, 5 configuration,
8 no state store at db_path (or it cannot be read).
"""


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("use YYYY-MM-DD, e.g. 2026-06-15", param_hint=option) from None


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        raise InputError(f"cannot write {path} ({type(exc).__name__}); check the folder exists and is "
                         "writable") from None


@handles_errors
def command(
    out: Annotated[Path, typer.Option("--out", help="CSV file to write the screening log to")],
    since: Annotated[str | None, typer.Option("--from", help="First date first screened, YYYY-MM-DD")] = None,
    until: Annotated[str | None, typer.Option("--to", help="Last date first screened, YYYY-MM-DD")] = None,
    identification_list: Annotated[Path | None, typer.Option(
        "--identification-list", help="Also write the subject identification list (screening number -> patient "
                                      "id) to this CSV file; it identifies patients, keep it apart")] = None,
    config: ConfigOption = None,
    trial_file: TrialOption = None,
) -> None:
    first, last = _day(since, "--from"), _day(until, "--to")
    if first is not None and last is not None and first > last:
        raise typer.BadParameter("--from is after --to", param_hint="--from")
    settings = settings_from(config)
    trial = trial_from(trial_file, settings)
    if settings.db_url is None and not Path(settings.db_path).is_file():
        raise StoreError(f"no state store at {settings.db_path}; run 'bridge prescreen --save' or the service "
                         "first, or set db_path (--config or BRIDGE_DB_PATH)")
    from bridge.report.screening_log import identification_list_csv, log_rows, screening_log_csv, summary
    from bridge.state import open_state

    state = open_state(settings.state_location())
    try:
        _write(out, screening_log_csv(state, trial, first, last))
        if identification_list is not None:
            _write(identification_list, identification_list_csv(state, trial, first, last))
        counts = summary(log_rows(state, trial, first, last), trial)
    finally:
        state.close()
    err_console.print(f"screening log of {trial.id} written to {out}: "
                      + ", ".join(f"{n} {what}" for what, n in counts.items()), highlight=False)


__all__ = ["HELP", "command"]
