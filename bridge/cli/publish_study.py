"""``bridge publish-study``: create or update the ResearchStudy for NCT04762485 on a FHIR server."""

from __future__ import annotations

from typing import Annotated

import typer

from bridge.cli.common import ConfigOption, client_for, handles_errors, out_console, print_json, settings_from
from bridge.publish.publisher import publish_study

HELP = """Create or update the ResearchStudy NCT04762485 (with its eligibility Group) on a FHIR server.

Idempotent: running it again changes nothing unless the study's content changed.

Example:

\b
    bridge publish-study https://ehr.example/fhir --config bridge.yaml

Exit codes: 0 ok, 5 configuration, 6 own output invalid (nothing sent), 7 remote server error.
"""


@handles_errors
def command(
    base_url: Annotated[str, typer.Argument(help="FHIR base URL of the EHR")],
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the outcome as JSON")] = False,
) -> None:
    settings = settings_from(config)
    with client_for(base_url, settings) as client:
        written = publish_study(client)
    if as_json:
        print_json({"reference": written.reference, "outcome": written.outcome, "version": written.version})
    else:
        out_console.print(f"{written.reference} {written.outcome} (version {written.version})", highlight=False)


__all__ = ["HELP", "command"]
