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

Several `bridge serve` processes on one database (PostgreSQL, db_url; or one SQLite file on one host) are
replicas of one service: each accepted event is processed once, re-screens are coalesced per patient in the
database, one replica at a time runs the catch-up and heartbeat checks, and the claims of a replica that dies
are taken over by the others within seconds. Put them behind one reverse proxy (docs/deployment.md).

The port is bound first, then the database opened and a replica slot taken; only then is the worker started.
A busy port, or every one of the 16 replica slots held, stops there with one line and exit 5.

Example:

\b
    bridge serve --config bridge.yaml --port 8080

\b
Exit codes:
  0  stopped (SIGINT / SIGTERM)
  1  unexpected error (a bug)
  3  the site map or the trial file cannot be read
  4  the site map or the trial file fails its schema
  5  configuration error: a secret shorter than 32 bytes, the port in use or not bindable, 16 replicas
     already on the database, a bad setting or key file
  8  state store unusable (cannot open, a schema newer than this bridge)
"""


@handles_errors
def command(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option("--host", help="listen address (default: listen_host, 127.0.0.1)")
                    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="listen port (default: listen_port, 8080)")] = None,
) -> None:
    from bridge.service.logs import configure_logging  # before anything else logs: every line is JSON

    configure_logging()
    settings = settings_from(config)
    settings = replace(settings, listen_host=host or settings.listen_host, listen_port=port or settings.listen_port)
    configure_logging(settings.log_level)
    from bridge.service.startup import run  # FastAPI and uvicorn load only for this command, after the port

    run(settings)


__all__ = ["HELP", "command"]
