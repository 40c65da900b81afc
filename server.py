"""Start the cd7-bridge pre-screening service (issue #4) with uvicorn, configured from settings.

    python server.py [--config settings.yaml]

Settings come from the file (or ``BRIDGE_CONFIG``) and ``BRIDGE_*`` environment variables
(``bridge.config.load_settings``): ``ehr_base_url`` and the EHR credentials, ``db_path`` (the SQLite state
store), ``webhook_secret`` (notifications), ``api_token`` (the read-only FHIR API), ``listen_host`` /
``listen_port`` (loopback 127.0.0.1:8080 by default), ``workers``, ``max_body_bytes``,
``heartbeat_grace_seconds``, ``log_level``. Logs are JSON lines on stderr; secrets are never logged.
The FastAPI app itself lives in ``bridge.service.app``.
"""

from __future__ import annotations

import argparse
import sys

from bridge.config import load_settings
from bridge.errors import BridgeError
from bridge.service.app import run
from bridge.service.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the cd7-bridge pre-screening service.")
    parser.add_argument("--config", help="settings file (YAML or JSON); default: $BRIDGE_CONFIG")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
        configure_logging(settings.log_level)
        run(settings)
    except BridgeError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
