"""``bridge bulk-export``: download a Bulk Data ``$export`` as NDJSON files, resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bridge.cli.common import (
    ConfigOption,
    client_for,
    err_console,
    handles_errors,
    out_console,
    print_json,
    settings_from,
)
from bridge.ingest.bulk_client import DEFAULT_TYPES, BulkExporter, ExportRequest, ExportResult, since_instant

HELP = """Export NDJSON from a FHIR server with Bulk Data $export, into a directory `bridge prescreen` reads.

Kick-off, polling (honouring Retry-After) and streamed downloads; a rerun resumes where the last run
stopped (a small state file in DIR). The bearer token is only sent to the server's own origin: files on
another host are fetched without it when the manifest says requiresAccessToken false, and refused
otherwise. Ctrl-C cancels the export on the server.

Example:

\b
    bridge bulk-export https://ehr.example/fhir --out /data/export --since 2026-01-01 --type Observation,Condition
    bridge prescreen /data/export --site-map site-map.yaml

Exit codes: 0 ok, 5 configuration, 7 remote server error (or a file the token must not follow), 130 cancelled.
"""


def _types(values: list[str] | None) -> tuple[str, ...]:
    if not values:
        return DEFAULT_TYPES
    return tuple(t.strip() for v in values for t in v.split(",") if t.strip())


def _progress(text: str) -> None:
    if err_console.is_terminal:
        err_console.print(f"export: {text}", highlight=False, markup=False)


def _summary(result: ExportResult) -> dict[str, object]:
    return {"directory": str(result.directory), "bytes": result.total_bytes,
            "files": [{"name": f.name, "type": f.type, "bytes": f.bytes, "resumed": f.resumed, "skipped": f.skipped}
                      for f in result.files],
            "errorFiles": [f.name for f in result.error_files], "issues": result.issues}


@handles_errors
def command(
    base_url: Annotated[str, typer.Argument(help="FHIR base URL of the server to export from")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the NDJSON files (created if missing)")],
    since: Annotated[str | None, typer.Option("--since", help="Only resources changed since this date/instant")
                     ] = None,
    types: Annotated[list[str] | None, typer.Option("--type", help="Resource type(s) to export, repeatable or "
                                                    "comma-separated (default: the types the bridge reads)")] = None,
    patient_level: Annotated[bool, typer.Option("--patient-level", help="Patient/$export instead of the "
                                                "system-level $export")] = False,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the outcome as JSON")] = False,
) -> None:
    request = ExportRequest("patient" if patient_level else "system", _types(types),
                            since_instant(since) if since else None)
    settings = settings_from(config)
    with client_for(base_url, settings) as client:
        try:
            result = BulkExporter(client, out, request, progress=_progress).run()
        except KeyboardInterrupt:
            err_console.print("interrupted: the export was cancelled on the server", highlight=False)
            raise typer.Exit(130) from None
    if as_json:
        print_json(_summary(result))
        return
    fresh = [f for f in result.files if not f.skipped]
    out_console.print(f"{len(result.files)} file(s), {result.total_bytes:,} bytes in {out} "
                      f"({len(fresh)} downloaded, {len(result.files) - len(fresh)} already complete)", highlight=False)
    if result.issues:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(result.issues.items()))
        err_console.print(f"the server reported issues in {len(result.error_files)} error file(s): {counts}",
                          highlight=False)


__all__ = ["HELP", "command"]
