"""``bridge trial``: the trial definition files — ``check`` validates one and prints its criteria."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bridge.cli.common import handles_errors, out_console

app = typer.Typer(name="trial", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="Trial definition files (trials/*.yaml): the study, its criteria and the assessment numbers "
                       "as validated data; check one before using it with --trial.")


CHECK_HELP = """Validate a trial definition file and print a summary of its criteria.

The file is checked against profiles/trial.schema.json and the rule building blocks (block names and
parameters, concepts, units, unique criterion ids); every error is listed at once, each naming the element
path. A file that passes can be given to prescreen, assess, report, publish-study and registry export with
--trial FILE (or to the service as the 'trial' setting, BRIDGE_TRIAL).

Example:

\b
    bridge trial check trials/nct04762485.yaml

Exit codes: 0 valid, 3 unreadable file, 4 the file fails its schema or checks (every error is listed).
"""


@app.command("check", help=CHECK_HELP)
@handles_errors
def check_command(
    path: Annotated[Path, typer.Argument(help="Trial definition file (YAML or JSON)")],
) -> None:
    from bridge.trial import load_trial

    trial = load_trial(path)
    out_console.print(trial.summary(), highlight=False, markup=False, soft_wrap=True)


__all__ = ["app"]
