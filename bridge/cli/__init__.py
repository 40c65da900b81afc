"""The ``bridge`` command line: thin wiring over the pipeline; one module per command.

A command's module — and what it imports — loads only when that command runs (``main`` reads the command name
from the arguments); ``bridge --help`` and ``bridge.cli.app`` load them all. Start-up matters: ``bridge
prescreen DIR`` on a small directory is mostly start-up.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

from bridge import __version__
from bridge.cli.common import setup_logging

# name -> module; each module has HELP and command, or (a group) app
COMMANDS = {
    "prescreen": "bridge.cli.prescreen",
    "assess": "bridge.cli.assess",
    "publish-study": "bridge.cli.publish_study",
    "registry": "bridge.cli.registry",
    "report": "bridge.cli.report",
    "serve": "bridge.cli.serve",
    "subscribe": "bridge.cli.subscribe",
    "watch": "bridge.cli.watch",
    "bulk-export": "bridge.cli.bulk_export",
    "trial": "bridge.cli.trial",
    "users": "bridge.cli.users",
    "screening-log": "bridge.cli.screening_log",
}
_GLOBAL_WITH_VALUE = ("--log-level",)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bridge {__version__}")
        raise typer.Exit(0)


def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    log_level: Annotated[str, typer.Option("--log-level", envvar="BRIDGE_LOG_LEVEL",
                                           help="DEBUG, INFO, WARNING (default) or ERROR; logs go to stderr and "
                                                "carry ids, never names, identifiers or values")] = "WARNING",
) -> None:
    """FHIR R4 bridge between a hospital EHR and the CD7 CAR-T trial NCT04762485."""
    setup_logging(log_level.upper())


def build_app(only: str | None = None) -> typer.Typer:
    """The command line with every command, or with ``only`` that one (the others' modules are not imported)."""
    app = typer.Typer(
        name="bridge",
        help="FHIR R4 bridge between a hospital EHR and the CD7 CAR-T trial NCT04762485.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )
    app.callback()(root)
    for name, path in COMMANDS.items():
        if only is not None and name != only:
            continue
        module = importlib.import_module(path)
        if hasattr(module, "command"):
            app.command(name, help=module.HELP)(module.command)
        else:
            app.add_typer(module.app, name=name)
    return app


def command_in(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (after the global options), or None when there is none or it is unknown."""
    args = iter(argv)
    for arg in args:
        if arg in _GLOBAL_WITH_VALUE:
            next(args, None)
        elif not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def __getattr__(name: str) -> Any:
    if name == "app":  # every command, built on first use (tests, documentation tools)
        globals()["app"] = built = build_app()
        return built
    raise AttributeError(name)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    build_app(command_in(args))(args, prog_name="bridge")


__all__ = ["COMMANDS", "build_app", "command_in", "main"]
