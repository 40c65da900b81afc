"""``bridge serve``: run the subscription-driven pre-screening service (the FastAPI app under uvicorn)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from bridge.cli.common import ConfigOption, handles_errors, settings_from

HELP = """Run the pre-screening service: EHR notifications in, ResearchSubjects out, read-only FHIR at /fhir.

Notifications are accepted on /notify (see `bridge subscribe`), written to the durable inbox before the answer,
and processed by the worker threads (Settings.workers). Logs are JSON lines on stderr carrying ids only.
Same as `python server.py`.

Example:

\b
    bridge serve --config bridge.yaml --port 8080

Exit codes: 0 stopped, 5 configuration error, 8 state store unusable.
"""


@handles_errors
def command(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option("--host", help="listen address (default: listen_host, 127.0.0.1)")
                    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="listen port (default: listen_port, 8080)")] = None,
) -> None:
    settings = settings_from(config)
    settings = replace(settings, listen_host=host or settings.listen_host, listen_port=port or settings.listen_port)
    from bridge.service.app import run  # FastAPI and uvicorn load only for this command
    from bridge.service.logs import configure_logging

    configure_logging(settings.log_level)
    run(settings)


__all__ = ["HELP", "command"]
