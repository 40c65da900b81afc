"""``bridge prescreen``: evaluate every criterion for every patient of a source, optionally publish."""

from __future__ import annotations

import sys
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from bridge.cli.common import (
    ConfigOption,
    Format,
    PatientOption,
    SiteMapOption,
    TrialOption,
    check_patients,
    err_console,
    handles_errors,
    out_console,
    parse_as_of,
    progress,
    settings_from,
    trial_from,
)
from bridge.config import RuleOptions, Settings
from bridge.evaluate.eligibility import Screening
from bridge.model import NotScreened
from bridge.normalize.mappings import load_code_map
from bridge.normalize.patients import ReadReport
from bridge.pipeline import PrescreenRun, prescreen, write_prescreen_json
from bridge.trial import Trial

if TYPE_CHECKING:  # HTTP, publishing and the store load only when --publish, a URL or --save asks for them
    from bridge.publish.publisher import Written
    from bridge.state import State

HELP = """Pre-screen patients for a trial (default NCT04762485): every criterion met / not-met / unknown, with evidence.

SOURCE is a Bundle file, '-' for a Bundle on stdin, a directory of Bulk Data NDJSON files, or the base URL of
a FHIR server (then the admitted patients, or those named with --patient, are fetched by search).

Examples:

\b
    bridge prescreen samples/prescreen/bundle.json --as-of 2026-06-15 --site-map samples/site-map.yaml
    bridge prescreen https://ehr.example/fhir --patient 123 --publish https://ehr.example/fhir

Patients without a valid Patient resource, non-human or deceased are not screened: the JSON lists them in
"notScreened", the table counts them. The criteria are those of --trial (default: the shipped NCT04762485
file); the JSON names the trial ("study") and its "rulesetVersion".

Exit codes: 0 ok, 1 a patient's evaluation failed (a bug; the others are printed), 2 bad input (or skipped
resources with --strict), 3 unreadable source, 4 invalid site map, 5 configuration, 6 own output invalid,
7 remote server error, 8 state store error (--save, --publish; e.g. the trial file changed under the same
ruleset version).

--save records the screenings (coordinator page) and, built as --publish would write them, the ResearchStudy
and the ResearchSubjects the publication policy allows, with Provenance, under stable local ids: 'bridge serve'
on the same db_path serves them at /fhir. --publish records what the EHR returned (its ids and versions).
"""


class Reading(StrEnum):
    organ_function = "organ-function"
    literal = "literal"


STATUS_STYLE = {"candidate": "bold green", "potential-candidate": "yellow", "ineligible": "red"}


def _blockers(s: Screening, trial: Trial) -> tuple[list[str], list[str]]:
    failing = [v.criterion for v in s.verdicts if trial.blocking(v.criterion, v.result)]
    unknown = [v.criterion for v in s.verdicts if trial.counted(v.criterion) and v.result == "unknown"]
    return failing, unknown


def render_table(screenings: list[Screening], options: RuleOptions, trial: Trial) -> Table:
    table = Table(title=f"{trial.id} pre-screen as of {options.as_of} ({options.organ_function_reading} reading)",
                  title_justify="left")
    table.add_column("Status", no_wrap=True)
    table.add_column("Patient", no_wrap=True)
    table.add_column("Failing criteria")
    table.add_column("Unknown criteria")
    order = {"candidate": 0, "potential-candidate": 1, "ineligible": 2}
    for s in sorted(screenings, key=lambda s: (order[s.status], s.patient)):
        failing, unknown = _blockers(s, trial)
        table.add_row(f"[{STATUS_STYLE[s.status]}]{s.status}[/]", s.patient, ", ".join(failing) or "-",
                      ", ".join(unknown) or "-")
    return table


NOT_SCREENED_REASONS = ("deceased", "non-human", "no-patient-resource")


def summary(screenings: list[Screening], not_screened: list[NotScreened] | None = None) -> str:
    """``N patients: a candidate, b potential-candidate, c ineligible`` and, when some were not screened,
    ``; M not screened (deceased 1, non-human 1, no-patient-resource 1)``."""
    counts = {k: sum(1 for s in screenings if s.status == k) for k in STATUS_STYLE}
    line = f"{len(screenings)} patients: " + ", ".join(f"{v} {k}" for k, v in counts.items())
    if not_screened:
        reasons = {k: sum(1 for n in not_screened if n.reason == k) for k in NOT_SCREENED_REASONS}
        line += f"; {len(not_screened)} not screened (" + ", ".join(f"{k} {v}" for k, v in reasons.items() if v) + ")"
    return line


def report_problems(report: ReadReport) -> None:
    lines = report.lines()
    if not lines:
        return
    conflicts = report.conflicts
    err_console.print(f"{len(report.skipped)} resource(s) skipped, {len(report.warnings) - conflicts} value(s) not "
                      "usable" + (f", {conflicts} identity conflict(s)" if conflicts else "") + ":", highlight=False)
    for line in lines[:50]:
        err_console.print(f"  {line}", highlight=False, soft_wrap=True)
    if len(lines) > 50:
        err_console.print(f"  ... and {len(lines) - 50} more", highlight=False)


def save_screenings(settings: Settings, run: PrescreenRun, record: bool = True) -> None:
    """Record the run in the state store (``db_path``), as the service does (``save_prescreen``): each screening
    replaces the patient's older one, naming the trial and its ruleset version; a patient not screened (RULES.md
    §2) is marked so and its older screening deleted, so the coordinator page never lists it. A patient whose
    evaluation failed is left as it was. First the store records the trial version: it refuses a file whose
    ruleset version it already holds with other content (``StoreError``, exit 8), and nothing is saved.

    With ``record`` (no ``--publish``) the resources a publication would write are recorded for ``/fhir`` too
    (``record_locally``)."""
    from bridge.state import save_prescreen

    trial = run.trial
    state = _recorded(settings, trial)
    try:
        saved, excluded = save_prescreen(state, run.screenings, run.not_screened, run.options.as_of, time.time(),
                                         trial=trial.id, ruleset_version=trial.ruleset_version)
        recorded = record_locally(state, run) if record else None
    finally:
        state.close()
    extra = f" ({excluded} not screened)" if excluded else ""
    err_console.print(f"saved {saved} screenings to {settings.state_display()}{extra}", highlight=False)
    if recorded:
        err_console.print(f"recorded for /fhir: {recorded}", highlight=False, soft_wrap=True)


def record_locally(state: State, run: PrescreenRun) -> str:
    """The ResearchStudy and the ResearchSubjects the publication policy allows, built as ``--publish`` builds
    them and recorded in the store's published index under local ids, each new version with its Provenance
    (``bridge.localfhir``); returns the summary line."""
    from bridge.localfhir.record import LocalRecorder, summary

    recorder = LocalRecorder(state, run.trial)
    study = recorder.study(run.options.organ_function_reading)
    subjects = recorder.screenings(run.screenings, run.options, run.not_screened)
    withheld = ", ".join(f"{n} {reason}" for reason, n in sorted(subjects.withheld.items()))
    return summary([study, *subjects.recorded], recorder.provenances) + (
        f"; withheld by the publication policy: {withheld}" if withheld else "")


def publish_recorded(settings: Settings, base_url: str, run: PrescreenRun) -> None:
    """``--publish``: the ResearchSubjects written to the EHR (``publish_screenings``), then recorded in the
    store's published index as the EHR returned them (``bridge.localfhir.remote``), beside the ResearchStudy the
    subjects reference. The store is opened before anything is written (exit 8 when it cannot be)."""
    from bridge.localfhir.record import LocalRecorder
    from bridge.localfhir.remote import RecordingClient, record_publication
    from bridge.publish.publisher import publish_screenings
    from bridge.state import open_state

    state = open_state(settings.state_location())
    try:
        written: list[Written] = []
        with RecordingClient(base_url, settings) as client:
            try:
                written = publish_screenings(client, run.screenings, run.options, not_screened=run.not_screened,
                                                 trial=run.trial)
            finally:
                count = record_publication(state, client, written)
        LocalRecorder(state, run.trial).study(run.options.organ_function_reading)
    finally:
        state.close()
    report_published(written)
    err_console.print(f"recorded for /fhir: {count} resources as the EHR returned them, in {settings.state_display()}",
                      highlight=False, soft_wrap=True)


def _recorded(settings: Settings, trial: Trial) -> State:
    """The state store, once it has recorded (or already holds) this trial version with this content."""
    from bridge.state import open_state

    state = open_state(settings.state_location())
    try:
        state.record_trial(trial.id, trial.ruleset_version, trial.digest)
    except BaseException:
        state.close()
        raise
    return state


def check_trial_version(settings: Settings, trial: Trial) -> None:
    """Before a ``--save`` run reads anything: the store refuses a changed trial file under a ruleset version it
    already holds (one line, exit 8), so the run stops before it prints results it could not save."""
    _recorded(settings, trial).close()


def report_no_patient_data(source: str, report: ReadReport) -> None:
    """One line when the source held nothing a patient's data could be in (RULES.md §2)."""
    if report.no_patient_data:
        err_console.print(f"{source}: no patient data (0 Patient, Observation, Condition, Encounter, "
                          "MedicationAdministration resources)", highlight=False, soft_wrap=True)


def report_failed(run: PrescreenRun) -> None:
    """The patients whose evaluation raised (a bug): reference and exception type, never data."""
    if run.failed:
        err_console.print(f"{len(run.failed)} patient(s) could not be evaluated:", highlight=False)
        for failed in run.failed:
            err_console.print(f"  {failed.line()}", highlight=False, soft_wrap=True)


def report_published(written: list[Written]) -> None:
    counts = {k: sum(1 for w in written if w.outcome == k) for k in ("created", "updated", "unchanged")}
    err_console.print("published ResearchSubjects: " + ", ".join(f"{v} {k}" for k, v in counts.items()),
                      highlight=False)


@handles_errors
def command(
    source: Annotated[str, typer.Argument(help="Bundle file, '-' (stdin), NDJSON directory, or a FHIR base URL")],
    as_of: Annotated[str | None, typer.Option("--as-of", help="Evaluation date YYYY-MM-DD (default: today)")] = None,
    site_map: SiteMapOption = None,
    fmt: Annotated[Format, typer.Option("--format", help="table (readable) or json (the documented contract)")
                   ] = Format.table,
    reading: Annotated[Reading, typer.Option("--organ-function-reading",
                                             help="inclusion 6: organ-function (default) or literal record text")]
    = Reading.organ_function,
    patients: PatientOption = None,
    publish: Annotated[str | None, typer.Option(
        "--publish", help="FHIR base URL to publish ResearchSubjects to; what the EHR returns is recorded in the "
                          "local state store (db_path) for /fhir")] = None,
    config: ConfigOption = None,
    strict: Annotated[bool, typer.Option("--strict", help="exit 2 when any resource was skipped")] = False,
    all_patients: Annotated[bool, typer.Option(
        "--all-patients", help="NDJSON directory: evaluate every patient, not only those with an acute-leukaemia "
                               "Condition (population mode, the fast default); in bounded memory, partitioned by "
                               "patient (docs/population.md)")] = False,
    save: Annotated[bool, typer.Option("--save", help="record the results in the local state store (db_path): the "
                                                      "screenings for the coordinator page (bridge serve, /ui), "
                                                      "the ResearchStudy and ResearchSubjects for /fhir")]
    = False,
    trial_file: TrialOption = None,
) -> None:
    settings = settings_from(config)
    trial = trial_from(trial_file, settings)
    options = RuleOptions.for_trial(trial, parse_as_of(as_of), organ_function_reading=reading.value)
    cmap = load_code_map(site_map or settings.site_map)
    check_patients(source, patients)
    if save:
        check_trial_version(settings, trial)
    with progress("reading and screening") as tick:
        lazy = fmt is Format.json and not save and not publish
        run = prescreen(source, options, cmap, tick, all_patients=all_patients, lazy=lazy, rendered=lazy,
                        settings=settings, patients=patients, trial=trial)
    if fmt is Format.json:
        reported = write_prescreen_json(sys.stdout, run.stream or run.screenings, options, run.not_screened, trial)
    else:
        reported = len(run.screenings)
        out_console.print(render_table(run.screenings, options, trial))
        out_console.print(summary(run.screenings, run.not_screened), highlight=False)
    report_problems(run.report)
    report_no_patient_data(source, run.report)
    if run.population:
        reported += len(run.not_screened) + len(run.failed)
        err_console.print(f"population mode: the {reported} patients with an acute-leukaemia Condition "
                          "are reported; --all-patients evaluates every patient", highlight=False)
    report_failed(run)
    if save:  # the screened patients only: never those not screened or failed
        save_screenings(settings, run, record=not publish)  # with --publish, the EHR's copies are recorded
    if publish:
        publish_recorded(settings, publish, run)
    if run.failed:
        raise typer.Exit(1)
    if strict and run.report.skipped:
        raise typer.Exit(2)


__all__ = ["HELP", "NOT_SCREENED_REASONS", "check_trial_version", "command", "publish_recorded", "record_locally",
           "render_table", "report_failed", "report_no_patient_data", "report_problems", "report_published",
           "save_screenings", "summary"]
