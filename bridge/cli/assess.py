"""``bridge assess``: post-infusion assessment (dose, response, AEs, kinetics) and the cohort summary.

The wiring (source -> normalize -> evaluate) is ``bridge.pipeline.assess``, shared with ``bridge report`` and
``bridge registry export``: it returns an ``AssessRun`` holding the patients' facts, their assessments, the
patients whose assessment failed, and the read report.

Nothing about one patient stops the others (issue #12): a patient whose assessment raises an unexpected exception
(a bug) is left out, every other patient is assessed, printed (and published with ``--publish``), that patient
is named on stderr with the exception type only (never a message, which could carry a value), and the command
exits 1. Every patient with a completed infusion is assessed, deceased ones included: a death ends follow-up
(CIR) as before; RULES.md §2 "Who is screened" governs the pre-screen.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, cast

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
    print_json,
    progress,
    settings_from,
    trial_from,
)
from bridge.cli.prescreen import check_trial_version, report_problems
from bridge.config import RuleOptions, Settings
from bridge.evaluate.assessment import PatientAssessment, cohort
from bridge.evaluate.grading import CRS_TERM, ICANS_TERM
from bridge.evaluate.logic import fmt
from bridge.model import Failed
from bridge.normalize.mappings import load_code_map
from bridge.pipeline import AssessRun, assess
from bridge.publish.publisher import Written, publish_assessment

HELP = """Assess infused patients of a trial (default NCT04762485): day 0, dose per kg, response, AEs, CAR-T kinetics.

SOURCE is a Bundle file, '-' for a Bundle on stdin, a directory of Bulk Data NDJSON files, or the base URL
of a FHIR server (then the patients with a CAR-T administration, or those named with --patient, are fetched).
Patients without a completed infusion of the CAR-T product on or before the as-of date are left out. The
response thresholds, dose range and windows are those of --trial (default: the shipped NCT04762485 file); the
JSON names the trial ("study") and its "rulesetVersion".

Examples:

\b
    bridge assess samples/treated/bundle.json --as-of 2026-12-31 --site-map samples/site-map.yaml --format json
    bridge assess https://ehr.example/fhir --site-map site.yaml --publish https://ehr.example/fhir

--save records, built as --publish would write them, the ResearchStudy, the response Observations, the
AdverseEvents and the lifecycle status of ResearchSubjects the store holds, with Provenance, under stable local ids
in the local state store (db_path): 'bridge serve' on the same db_path serves them at /fhir. --publish records what
the EHR returned (its ids and versions) there.

Exit codes: 0 ok, 1 a patient's assessment failed (a bug; the others are still printed), 2 bad input (or skipped
resources with --strict), 3 unreadable source, 4 invalid site map, 5 configuration, 6 own output invalid, 7 remote
server error, 8 state store error (--save, --publish; e.g. the trial file changed under the same ruleset version).
"""


class ComparatorsOpt(StrEnum):
    record = "record"
    eln = "eln"


class CriReadingOpt(StrEnum):
    operational = "operational"
    literal = "literal"


ComparatorsOption = Annotated[ComparatorsOpt, typer.Option(
    "--comparators", help="CR counts: record (ANC > 1.0, platelets > 100; default) or eln (>=)")]
CriReadingOption = Annotated[CriReadingOpt, typer.Option(
    "--cri-reading", help="both lineages below: operational (MLFS; default) or literal (CRi)")]


BEST_STYLE = {"CR": "bold green", "CRi": "green", "MLFS": "green", "PR": "yellow", "NR": "red", "NE": "dim"}


def _dose_cells(pa: PatientAssessment) -> tuple[str, str]:
    d = pa.dose
    per_kg = f"{d.cells_per_kg / 1e6:.3g}e6" if d.cells_per_kg is not None else "?"
    if d.within_protocol is None:
        return per_kg, "? (" + ", ".join(d.flags) + ")"
    return per_kg, "yes" if d.within_protocol else "[red]no[/]"


def _grade(pa: PatientAssessment, term: str) -> str:
    g = pa.worst_grade(term)
    return "-" if g == 0 else "?" if g is None else f"G{g}"


def render_table(assessments: list[PatientAssessment], options: RuleOptions, study: str = "NCT04762485") -> Table:
    table = Table(title=f"{study} assessment as of {options.as_of} ({options.comparators} comparators, "
                        f"{options.cri_reading} CRi reading)", title_justify="left")
    for name in ("Patient", "Day 0", "Cells/kg", "In range", "Best", "Remission", "Relapse", "CRS", "ICANS", "AEs"):
        table.add_column(name, no_wrap=name != "In range")
    for pa in sorted(assessments, key=lambda a: a.patient):
        r = pa.response
        per_kg, ok = _dose_cells(pa)
        table.add_row(pa.patient, str(pa.day0), per_kg, ok, f"[{BEST_STYLE[r.best_response]}]{r.best_response}[/]",
                      str(r.remission_date or "-"), str(r.relapse_date or "-"), _grade(pa, CRS_TERM),
                      _grade(pa, ICANS_TERM), str(len(pa.adverse_events)))
    return table


def _percent(x: float | None) -> str:
    return "n/a" if x is None else f"{fmt(100 * x)} %"


def summary(run: AssessRun) -> str:
    """One line: infused, ORR with its interval, best responses, AE counts, CIR at 12 months."""
    block: dict[str, Any] = cohort(run.assessments, run.patients, run.options)
    o, ae = block["orr"], block["adverseEvents"]
    ci = f" (95 % CI {fmt(100 * o['ci95'][0])}-{fmt(100 * o['ci95'][1])} %)" if o["ci95"] else ""
    best = ", ".join(f"{k} {v}" for k, v in block["bestResponse"].items())
    left_out = len(run.patients) - len(run.assessments)
    return (f"{block['infused']} infused ({left_out} without infusion left out): ORR {o['responders']}/{o['n']} = "
            f"{_percent(o['rate'])}{ci}; {best}; {ae['events']} AEs in {ae['patients']} patients; "
            f"CIR at 12 months {_percent(block['cir']['12months']['estimate'])}")


@handles_errors
def command(
    source: Annotated[str, typer.Argument(help="Bundle file, '-' (stdin), NDJSON directory, or a FHIR base URL")],
    as_of: Annotated[str | None, typer.Option("--as-of", help="Data cut-off date YYYY-MM-DD (default: today)")] = None,
    site_map: SiteMapOption = None,
    comparators: ComparatorsOption = ComparatorsOpt.record,
    cri_reading: CriReadingOption = CriReadingOpt.operational,
    fmt_: Annotated[Format, typer.Option("--format", help="table (readable) or json (the documented contract)")]
    = Format.table,
    strict: Annotated[bool, typer.Option("--strict", help="exit 2 when any resource was skipped")] = False,
    patients: PatientOption = None,
    publish: Annotated[str | None, typer.Option(
        "--publish", help="FHIR base URL to publish response Observations, AdverseEvents and subject status to")]
    = None,
    config: ConfigOption = None,
    trial_file: TrialOption = None,
    save: Annotated[bool, typer.Option(
        "--save", help="record the ResearchStudy, response Observations, AdverseEvents and subject status in the "
                       "local state store (db_path), where bridge serve's /fhir serves them")] = False,
) -> None:
    settings = settings_from(config)
    trial = trial_from(trial_file, settings)
    options = RuleOptions.for_trial(trial, parse_as_of(as_of), comparators=comparators.value,
                                    cri_reading=cri_reading.value)
    cmap = load_code_map(site_map or settings.site_map)
    check_patients(source, patients)
    if save:
        check_trial_version(settings, trial)
    with progress("reading and assessing") as tick:
        run = assess(source, options, cmap, tick, settings=settings, patients=patients, trial=trial)
    if fmt_ is Format.json:
        print_json(run.as_json())
    else:
        out_console.print(render_table(run.assessments, options, trial.id))
        out_console.print(summary(run), highlight=False)
    report_problems(run.report)
    if save and not publish:  # with --publish, the EHR's copies are recorded instead
        save_assessment(settings, run)
    if publish:
        _publish(publish, settings, run)
    if run.failures:
        report_failures(run.failures)
        raise typer.Exit(1)
    if strict and run.report.skipped:
        raise typer.Exit(2)


def report_failures(failures: list[Failed]) -> None:
    """Name each patient whose assessment failed (reference and exception type only): a bug to report."""
    err_console.print(f"{len(failures)} patient(s) could not be assessed (a bug: please report it); the others "
                      "were assessed:", highlight=False)
    for f in failures:
        err_console.print(f"  {f.patient}: {f.error}", highlight=False)


def _deceased(run: AssessRun) -> set[str]:
    return {p.ref for p in run.patients if p.deceased}


def save_assessment(settings: Settings, run: AssessRun) -> None:
    """``--save``: every assessed patient's resources built as ``--publish`` builds them and recorded in the
    store's published index under local ids, with the ResearchStudy they reference and a Provenance per new
    version (``bridge.localfhir``); the store first records the trial version (exit 8 for a changed file)."""
    from bridge.localfhir.record import LocalRecorder, summary
    from bridge.state import open_state

    doc = run.as_json()
    deceased = _deceased(run)
    state = open_state(settings.state_location())
    try:
        state.record_trial(run.trial.id, run.trial.ruleset_version, run.trial.digest)
        recorder = LocalRecorder(state, run.trial)
        recorded = [recorder.ensure_study()]
        for patient in cast(list[dict[str, Any]], doc["patients"]):
            recorded += recorder.assessment(patient, run.options.as_of, run.options.comparators,
                                            run.options.cri_reading, patient["patient"] in deceased)
    finally:
        state.close()
    err_console.print(f"recorded for /fhir in {settings.state_display()}: {summary(recorded, recorder.provenances)}",
                      highlight=False, soft_wrap=True)


def _publish(base_url: str, settings: Settings, run: AssessRun) -> None:
    """``--publish``: each patient's resources written to the EHR, then recorded in the store's published index
    as the EHR returned them (``bridge.localfhir.remote``); the store is opened before anything is written."""
    from bridge.localfhir.record import LocalRecorder
    from bridge.localfhir.remote import RecordingClient, record_publication
    from bridge.state import open_state

    doc = run.as_json()
    deceased = _deceased(run)
    written: list[Written] = []
    state = open_state(settings.state_location())
    try:
        with RecordingClient(base_url, settings) as client:
            try:
                for patient in cast(list[dict[str, Any]], doc["patients"]):
                    written += publish_assessment(client, patient, run.options.as_of, run.options.comparators,
                                                  run.options.cri_reading, patient["patient"] in deceased,
                                                  trial=run.trial)
            finally:
                count = record_publication(state, client, written)
        LocalRecorder(state, run.trial).ensure_study()
    finally:
        state.close()
    counts = {k: sum(1 for w in written if w.outcome == k) for k in ("created", "updated", "unchanged")}
    err_console.print("published assessment resources: " + ", ".join(f"{v} {k}" for k, v in counts.items()),
                      highlight=False)
    err_console.print(f"recorded for /fhir: {count} resources as the EHR returned them, in {settings.state_display()}",
                      highlight=False, soft_wrap=True)


__all__ = ["HELP", "AssessRun", "ComparatorsOpt", "ComparatorsOption", "CriReadingOpt", "CriReadingOption", "command",
           "render_table", "report_failures", "save_assessment", "summary"]
