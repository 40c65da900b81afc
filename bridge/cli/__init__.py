"""The ``bridge`` command line: thin wiring over the pipeline; one module per command."""

from __future__ import annotations

from typing import Annotated

import typer

from bridge import __version__
from bridge.cli import assess, bulk_export, prescreen, publish_study, registry, report, serve, subscribe, watch
from bridge.cli.common import setup_logging

app = typer.Typer(
    name="bridge",
    help="FHIR R4 bridge between a hospital EHR and the CD7 CAR-T trial NCT04762485.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bridge {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    log_level: Annotated[str, typer.Option("--log-level", envvar="BRIDGE_LOG_LEVEL",
                                           help="DEBUG, INFO, WARNING (default) or ERROR; logs go to stderr and "
                                                "carry ids, never names, identifiers or values")] = "WARNING",
) -> None:
    """FHIR R4 bridge between a hospital EHR and the CD7 CAR-T trial NCT04762485."""
    setup_logging(log_level.upper())


app.command("prescreen", help=prescreen.HELP)(prescreen.command)
app.command("assess", help=assess.HELP)(assess.command)
app.command("publish-study", help=publish_study.HELP)(publish_study.command)
app.add_typer(registry.app, name="registry")
app.command("report", help=report.HELP)(report.command)
app.command("serve", help=serve.HELP)(serve.command)
app.command("subscribe", help=subscribe.HELP)(subscribe.command)
app.command("watch", help=watch.HELP)(watch.command)
app.command("bulk-export", help=bulk_export.HELP)(bulk_export.command)


def main() -> None:
    app()


__all__ = ["app", "main"]
