"""``bridge report``: the cohort report (issue #7) as one self-contained HTML file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bridge.cli.assess import ComparatorsOpt, ComparatorsOption, CriReadingOpt, CriReadingOption
from bridge.cli.common import (
    ConfigOption,
    PatientOption,
    SiteMapOption,
    TrialOption,
    check_patients,
    err_console,
    handles_errors,
    parse_as_of,
    progress,
    settings_from,
    trial_from,
)
from bridge.cli.prescreen import report_problems
from bridge.config import RuleOptions, Settings
from bridge.ingest.sources import is_url, open_source
from bridge.normalize.mappings import CodeMap, load_code_map
from bridge.pipeline import load_patients

if TYPE_CHECKING:
    from bridge.report.data import Json
    from bridge.trial import Trial

HELP = """Write the cohort report: pre-screen funnel, doses, swimmer plot, AEs, CIR, ORR and CAR-T kinetics.

SOURCE is a Bundle file, '-' for a Bundle on stdin, a directory of Bulk Data NDJSON files, or the base URL of a
FHIR server (then the admitted patients, or those named with --patient, are fetched with their infusions).
The report is one HTML file with its plots embedded; it opens and prints without a network. The criteria and
assessment numbers are those of --trial (default: the shipped NCT04762485 file), named in the report.

Example:

\b
    bridge report samples/treated/bundle.json --out report.html --as-of 2026-12-31 --site-map samples/site-map.yaml

Exit codes: 0 ok, 1 a patient's evaluation failed (a bug; the report holds the others), 2 bad input (or --out
not writable), 3 unreadable source, 4 invalid site map,
5 configuration, 7 remote server error.
"""


@handles_errors
def command(
    source: Annotated[str, typer.Argument(help="Bundle file, '-' (stdin), NDJSON directory, or a FHIR base URL")],
    out: Annotated[Path, typer.Option("--out", help="HTML file to write")],
    as_of: Annotated[str | None, typer.Option("--as-of", help="Evaluation date YYYY-MM-DD (default: today)")] = None,
    site_map: SiteMapOption = None,
    patients: PatientOption = None,
    comparators: ComparatorsOption = ComparatorsOpt.record,
    cri_reading: CriReadingOption = CriReadingOpt.operational,
    config: ConfigOption = None,
    trial_file: TrialOption = None,
) -> None:
    settings = settings_from(config)
    trial = trial_from(trial_file, settings)
    options = RuleOptions.for_trial(trial, parse_as_of(as_of), comparators=comparators.value,
                                    cri_reading=cri_reading.value)
    cmap = load_code_map(site_map or settings.site_map)
    check_patients(source, patients)
    with progress("reading and assessing"):
        doc = _gather(source, options, cmap, settings, patients, trial)
    from bridge.report.render import write_report  # matplotlib loads only when a report is written

    written = write_report(doc, out)
    err_console.print(f"report written to {written}", highlight=False)
    failed = doc.get("failed")
    if isinstance(failed, list) and failed:  # one patient's bug left it out; the others are in the report
        err_console.print(f"{len(failed)} patient(s) could not be evaluated:", highlight=False)
        for line in failed:
            err_console.print(f"  {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _gather(source: str, options: RuleOptions, cmap: CodeMap, settings: Settings, patients: list[str] | None,
            trial: Trial) -> Json:
    """The report document; skipped resources and unusable values are listed on stderr, as ``prescreen`` does."""
    from bridge.report.data import gather_patients

    items = open_source(source, cmap, options.as_of, settings, patients, medications=True)
    loaded, problems = load_patients(items, cmap)
    report_problems(problems)
    return gather_patients(loaded, options, cmap, source if is_url(source) else Path(source).name, trial)


__all__ = ["HELP", "command"]
