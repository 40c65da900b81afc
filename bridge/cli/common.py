"""What every command shares: error -> one line + exit code, JSON/table output, progress on a terminal only."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from bridge.config import Settings, load_settings
from bridge.errors import BridgeError

if TYPE_CHECKING:
    from bridge.client import FhirClient
    from bridge.trial import Trial

class Format(StrEnum):
    """``--format``: a table to read, or JSON to parse."""

    table = "table"
    json = "json"


# The options several commands share, spelled once.
ConfigOption = Annotated[Path | None, typer.Option("--config", help="Settings file (YAML/JSON); BRIDGE_* env wins")]
SiteMapOption = Annotated[Path | None, typer.Option("--site-map", help="Site map (YAML/JSON) of local codes")]
TrialOption = Annotated[Path | None, typer.Option(
    "--trial", help="Trial definition file (YAML/JSON; default: the 'trial' setting, else the shipped NCT04762485 "
                    "file); check one with 'bridge trial check FILE'")]
PatientOption = Annotated[list[str] | None, typer.Option("--patient", help="Patient id to pull (URL source only)")]

P = ParamSpec("P")
R = TypeVar("R")
err_console = Console(stderr=True)
out_console = Console(width=None if Console().is_terminal else 160)


def fail(exc: BridgeError) -> typer.Exit:
    """One actionable line on stderr (plus one line per further issue, max 20) and the documented exit code."""
    err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
    extra = [i for i in exc.issues if i.diagnostics != exc.message]
    for issue in extra[:20]:
        where = f" at {', '.join(issue.expression)}" if issue.expression else ""
        err_console.print(f"  - {issue.diagnostics}{where}", highlight=False, soft_wrap=True)
    if len(extra) > 20:
        err_console.print(f"  ... and {len(extra) - 20} more", highlight=False)
    return typer.Exit(exc.exit_code)


def handles_errors(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except BridgeError as exc:
            raise fail(exc) from None
    return wrapper


def parse_as_of(value: str | None) -> date:
    if value is None:
        return date.today()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("use YYYY-MM-DD, e.g. 2026-06-15", param_hint="--as-of") from None


def check_patients(source: str, patients: list[str] | None) -> None:
    """``--patient`` names patients to pull: only a FHIR base URL as SOURCE is pulled (checked before reading)."""
    from bridge.ingest.sources import is_url

    if patients and not is_url(source):
        raise typer.BadParameter("--patient needs a FHIR base URL as SOURCE", param_hint="--patient")


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


@contextmanager
def progress(label: str) -> Iterator[Callable[[int], None] | None]:
    """A progress spinner on stderr when it is a terminal; nothing at all when piped."""
    if not err_console.is_terminal:
        yield None
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  TextColumn("{task.completed} resources"), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda n: bar.advance(task, n)


def settings_from(path: Any) -> Settings:
    """Settings from ``--config`` (or ``BRIDGE_CONFIG``) and ``BRIDGE_*`` environment variables."""
    return load_settings(path)


def trial_from(path: Path | None, settings: Settings) -> Trial:
    """The trial of ``--trial``, else of the ``trial`` setting (``BRIDGE_TRIAL``), else the shipped default."""
    from bridge.trial import load_trial

    return load_trial(path or settings.trial)


def client_for(base_url: str, settings: Settings) -> FhirClient:
    """A client for ``base_url`` with the configured authentication (token only ever sent to that origin)."""
    from bridge.client import FhirClient  # here: requests, JWT and crypto load only in commands that talk HTTP

    return FhirClient(base_url, settings)


def setup_logging(level: str = "WARNING") -> None:
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter("use DEBUG, INFO, WARNING or ERROR", param_hint="--log-level")
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")


__all__ = ["ConfigOption", "Format", "PatientOption", "SiteMapOption", "TrialOption", "check_patients", "client_for",
           "err_console", "fail", "handles_errors", "out_console", "parse_as_of", "print_json", "progress",
           "settings_from", "setup_logging", "trial_from"]
