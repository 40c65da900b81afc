"""``bridge registry``: de-identified, consent-gated registry packages — export, submit, status."""

from __future__ import annotations

import os
import signal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bridge.cli.common import (
    ConfigOption,
    Format,
    SiteMapOption,
    TrialOption,
    err_console,
    handles_errors,
    out_console,
    parse_as_of,
    print_json,
    settings_from,
    trial_from,
)
from bridge.config import RuleOptions, Settings
from bridge.errors import ConfigError, InputError
from bridge.ingest.sources import is_url, open_source
from bridge.model import Item
from bridge.normalize.mappings import CodeMap, load_code_map
from bridge.registry.export import assessment_for, export, load_assessment, write_packages
from bridge.registry.package import BuildResult, Context
from bridge.registry.pseudonym import centre_label, site_secret
from bridge.registry.submit import EventHook, SubmitReport, submit_pending, sync_directory
from bridge.registry.timepoints import KINDS
from bridge.registry.transport import RegistryClient
from bridge.state import STATES, OutboxRow, open_outbox
from bridge.trial import Trial

KILL_AFTER_ENV = "BRIDGE_TEST_REGISTRY_KILL_AFTER"
KILL_AT_ENV = "BRIDGE_TEST_REGISTRY_KILL_AT"

app = typer.Typer(name="registry", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Registry submissions (CIBMTR-style): de-identified packages per patient and time point, "
                       "only for patients with an active research Consent; export, submit, status.")



class Kind(StrEnum):
    infusion = "infusion"
    day100 = "day100"
    month6 = "month6"
    yearly = "yearly"


# ---------------------------------------------------------------------------------------------- export


EXPORT_HELP = """Build the registry packages of every consenting, infused patient and write them to --out.

SOURCE is a Bundle file, '-' (stdin) or an NDJSON directory with the patients' resources (Patient, Consent,
MedicationAdministration, and everything the assessment needs). The assessment is computed from SOURCE, or
read from --assessment (a saved 'bridge assess --format json' document, of the same trial and ruleset version).
The rules are those of --trial (default: the shipped NCT04762485 file). Nothing leaves the site: every
package is de-identified and checked (registry profile, R4 schema, no identifying value, no precise date).
--out then holds exactly the packages of this export; send them with 'bridge registry submit DIR'.

Examples:

\b
    bridge registry export samples/treated/bundle.json --out out/registry --as-of 2026-12-31 \\
        --site-map samples/site-map.yaml --config bridge.yaml
    bridge registry export bundle.json --assessment assess.json --out out/registry --timepoint day100

Exit codes: 0 ok, 2 bad input, 3 unreadable source, 4 invalid site map, 5 configuration (pseudonym_secret,
registry_centre), 6 a package failed its checks (nothing written).
"""


def _context(settings: Settings, trial: Trial | None = None) -> Context:
    return Context(site_secret(settings), centre_label(settings.registry_centre), trial)


def _assessment(items: list[Item], assessment: Path | None, as_of: str | None, options: RuleOptions,
                cmap: CodeMap, trial: Trial) -> dict[str, Any]:
    if assessment is not None:
        doc = load_assessment(assessment)
        if as_of is not None and doc.get("asOf") != as_of:
            raise InputError(f"--as-of {as_of} differs from the asOf of {assessment.name}")
        _same_trial(doc, trial, assessment.name)
        return doc
    try:
        return assessment_for(items, options, cmap, trial)
    except ImportError:
        raise ConfigError("the assessment engine is not available here; pass --assessment FILE.json") from None


def _same_trial(doc: dict[str, Any], trial: Trial, name: str) -> None:
    """A saved assessment must be of the trial and ruleset version exported for (a document saved before the
    version was named carries none, and is taken as it is)."""
    found = (doc.get("study"), doc.get("rulesetVersion", trial.ruleset_version))
    if found != (trial.id, trial.ruleset_version):
        raise InputError(f"{name} is an assessment of {found[0]} ruleset {found[1]}, not of the trial {trial.id} "
                         f"ruleset {trial.ruleset_version} (--trial)")


def _export_table(result: BuildResult, out: Path) -> None:
    table = Table(title=f"registry packages written to {out}", title_justify="left")
    for column in ("Patient (local)", "Time point", "Package"):
        table.add_column(column, no_wrap=True)
    for p in result.packages:
        table.add_row(p.patient, p.timepoint, p.id)
    out_console.print(table)
    out_console.print(f"{len(result.packages)} package(s), {len(result.skipped)} patient(s) skipped",
                      highlight=False)


def _export_json(result: BuildResult, out: Path) -> dict[str, Any]:
    return {"out": str(out), "packages": [{"patient": p.patient, "timepoint": p.timepoint, "id": p.id,
                                           "key": p.key, "file": f"{p.id}.json"} for p in result.packages],
            "skipped": [{"patient": s.patient, "reason": s.reason} for s in result.skipped]}


@app.command("export", help=EXPORT_HELP)
@handles_errors
def export_command(
    source: Annotated[str, typer.Argument(help="Bundle file, '-' (stdin) or NDJSON directory")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the packages to")],
    as_of: Annotated[str | None, typer.Option("--as-of", help="Assessment date YYYY-MM-DD (default: today)")
                     ] = None,
    site_map: SiteMapOption = None,
    timepoints: Annotated[list[Kind] | None, typer.Option("--timepoint", help="Only these kinds (repeatable)")
                          ] = None,
    assessment: Annotated[Path | None, typer.Option("--assessment", help="A saved 'bridge assess --format json'")
                          ] = None,
    fmt: Annotated[Format, typer.Option("--format", help="table or json")] = Format.table,
    config: ConfigOption = None,
    trial_file: TrialOption = None,
) -> None:
    settings = settings_from(config)
    trial = trial_from(trial_file, settings)
    context = _context(settings, trial)
    if is_url(source):  # a pull fetches no Consent: every patient would be skipped
        raise typer.BadParameter("registry export reads a Bundle file, '-' or an NDJSON directory (a pull does not "
                                 "fetch the Consent resources it needs)", param_hint="SOURCE")
    options = RuleOptions.for_trial(trial, parse_as_of(as_of))
    cmap = load_code_map(site_map or settings.site_map)
    items = list(open_source(source, cmap, options.as_of, settings))
    doc = _assessment(items, assessment, as_of, options, cmap, trial)
    kinds = [k.value for k in timepoints] if timepoints else list(KINDS)
    result = export(items, doc, context, kinds)
    write_packages(out, result.packages)
    if fmt is Format.json:
        print_json(_export_json(result, out))
    else:
        _export_table(result, out)
    for s in result.skipped:
        err_console.print(f"skipped {s.patient}: {s.reason}", highlight=False)


# ---------------------------------------------------------------------------------------------- submit


SUBMIT_HELP = """Send the queued registry packages (and those of DIR, queued first) to registry_url.

Each package is POSTed once with its idempotency key; the registry's receipt is stored in the outbox (the state
database, db_path). A run that dies resumes where it stopped; a 409 means the registry has the package already.
A package the registry rejects becomes 'failed' (--retry-failed queues those again); a transient or
authorisation problem stops the run with exit 7 and leaves the package pending. DIR is taken as the latest
export: an unsent package it no longer holds (its patient withdrew consent) is withdrawn and never sent.

Example:

\b
    bridge registry submit out/registry --config bridge.yaml

Exit codes: 0 all sent, 2/3 a bad package file, 5 configuration, 6 a package failed its checks, 7 registry
error (run stopped, or packages rejected), 8 state store error.
"""


def _kill_hook() -> EventHook | None:
    """Test hook: SIGKILL this process after the Nth 'sent' (or $BRIDGE_TEST_REGISTRY_KILL_AT) event."""
    after = os.environ.get(KILL_AFTER_ENV)
    if not after or not after.isdigit():
        return None
    at, seen = os.environ.get(KILL_AT_ENV, "sent"), [0]

    def hook(event: str, _package: str) -> None:
        if event == at:
            seen[0] += 1
            if seen[0] >= int(after):
                os.kill(os.getpid(), signal.SIGKILL)
    return hook


def _submit_summary(report: SubmitReport, counts: dict[str, int]) -> None:
    out_console.print(f"sent {len(report.sent)}, already received {len(report.duplicates)}, "
                      f"failed {len(report.failed)}; outbox: " +
                      ", ".join(f"{n} {s}" for s, n in counts.items() if n), highlight=False)
    for package, error in report.failed:
        err_console.print(f"failed {package}: {error}", highlight=False, soft_wrap=True)
    if report.stopped:
        err_console.print(f"[bold red]stopped:[/] {report.stopped}", highlight=False, soft_wrap=True)


@app.command("submit", help=SUBMIT_HELP)
@handles_errors
def submit_command(
    directory: Annotated[Path | None, typer.Argument(help="Directory written by 'bridge registry export'")] = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Queue failed packages again")] = False,
    no_crid: Annotated[bool, typer.Option("--no-crid", help="Do not ask the registry for patient ids")] = False,
    fmt: Annotated[Format, typer.Option("--format", help="table or json")] = Format.table,
    config: ConfigOption = None,
) -> None:
    settings = settings_from(config)
    centre = centre_label(settings.registry_centre)
    withdrawn = 0
    with open_outbox(settings.state_location()) as outbox, RegistryClient(settings) as client:
        if directory is not None:
            _, _, withdrawn = sync_directory(outbox, directory)
        if withdrawn:
            err_console.print(f"withdrew {withdrawn} queued package(s) that {directory} no longer holds (consent "
                              "withdrawn, or no longer due): they will not be sent", highlight=False)
        if retry_failed:
            outbox.requeue_failed()
        use_crid = bool(settings.registry_crid_path) and not no_crid
        report = submit_pending(outbox, client, centre, use_crid=use_crid, on_event=_kill_hook())
        counts = outbox.counts()
    if fmt is Format.json:
        print_json({**report.as_json(), "withdrawn": withdrawn, "outbox": counts})
    else:
        _submit_summary(report, counts)
    if report.stopped or report.failed:
        raise typer.Exit(7)


# ---------------------------------------------------------------------------------------------- status


STATUS_HELP = """List the registry packages of the outbox: sent (with the receipt), pending, failed.

Example:

\b
    bridge registry status --config bridge.yaml --state failed

Exit codes: 0 ok, 5 configuration, 8 state store error.
"""


class State(StrEnum):
    pending = "pending"
    sending = "sending"
    sent = "sent"
    failed = "failed"
    superseded = "superseded"
    withdrawn = "withdrawn"


def _status_table(rows: list[OutboxRow], counts: dict[str, int]) -> None:
    table = Table(title="registry outbox", title_justify="left")
    for column in ("State", "Package", "Attempts", "Last status", "Receipt / error", "Updated"):
        table.add_column(column, no_wrap=column != "Receipt / error")
    for r in rows:
        detail = (r.receipt or {}).get("id") or (r.receipt or {}).get("location") or r.last_error or "-"
        table.add_row(r.state, r.package_id, str(r.attempts), str(r.last_status or "-"), str(detail), r.updated_at)
    out_console.print(table)
    out_console.print(", ".join(f"{n} {s}" for s, n in counts.items()), highlight=False)


@app.command("status", help=STATUS_HELP)
@handles_errors
def status_command(
    states: Annotated[list[State] | None, typer.Option("--state", help="Only these states (repeatable)")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="table or json")] = Format.table,
    config: ConfigOption = None,
) -> None:
    settings = settings_from(config)
    wanted = tuple(s.value for s in states) if states else STATES
    with open_outbox(settings.state_location()) as outbox:
        rows, counts = outbox.rows(wanted), outbox.counts()
    if fmt is Format.json:
        print_json({"counts": counts, "packages": [r.as_json() for r in rows]})
    else:
        _status_table(rows, counts)


__all__ = ["KILL_AFTER_ENV", "KILL_AT_ENV", "app"]
