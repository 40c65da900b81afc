"""Start the cd7-bridge pre-screening service (issue #4) with uvicorn, configured from settings.

    python server.py [--config settings.yaml]

Settings come from the file (or ``BRIDGE_CONFIG``) and ``BRIDGE_*`` environment variables
(``bridge.config.load_settings``): ``ehr_base_url`` and the EHR credentials, ``db_path`` (the SQLite state
store), ``webhook_secret`` (notifications) and ``api_token`` (the read-only FHIR API, ``/ui``), each at least 32
bytes, ``listen_host`` / ``listen_port`` (loopback 127.0.0.1:8080 by default), ``workers``, ``max_body_bytes``,
``heartbeat_grace_seconds``, ``log_level``, ``docs_assets_url``. Logs are JSON lines on stderr; secrets are never
logged. Start-up (the port first, then the worker's identity, then the database) is ``bridge.service.startup``;
the exit codes are those of ``bridge serve --help``.
"""

from __future__ import annotations

import argparse
import sys

from bridge.config import load_settings
from bridge.errors import BridgeError
from bridge.service.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the cd7-bridge pre-screening service.")
    parser.add_argument("--config", help="settings file (YAML or JSON); default: $BRIDGE_CONFIG")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        settings = load_settings(args.config)
        configure_logging(settings.log_level)
        from bridge.service.startup import run  # the service's modules load after the port is bound

        run(settings)
    except BridgeError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
