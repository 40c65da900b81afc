"""Structured logs of the service: JSON lines that carry ids, never names, identifier values or results.

Safe by construction rather than by redaction after the fact:

* the service logs through ``event(logger, name, **fields)`` only; ``name`` is a constant
  (``notification.accepted``, ``rescreen.done`` ...), ``fields`` must be from ``FIELDS`` (ids, counts,
  states, durations) and every string value must look like an id (``SAFE_VALUE``: letters, digits and
  ``-._:/|@``, at most 200 characters) — anything else is replaced by ``"<redacted>"``;
* ``error`` is the one free-text field; it is only ever fed with a ``BridgeError`` message (free of patient
  data by contract) or an exception's type name, and is cut at 300 characters;
* other loggers (``bridge.client``: method, path, status) are formatted as they are — their messages are data
  free by the same contract — and uvicorn's access log is replaced by ``http.request`` lines with the path
  and without the query string.

``JsonFormatter`` turns a record into one JSON object per line: ``ts`` (UTC, ISO 8601), ``level``,
``logger``, ``event`` (the message) and the fields. ``configure_logging`` makes it the only way out: Python
warnings (pint's, a library's deprecation) go through logging (``logging.captureWarnings``, logger
``py.warnings``), and an exception that escapes a thread or the main program is one ``uncaught`` line with its
type only — nothing on stderr is plain text.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from datetime import UTC, datetime
from types import TracebackType
from typing import IO, Any

SAFE_VALUE = re.compile(r"^[A-Za-z0-9\-._:/|@]{1,200}$")
REDACTED = "<redacted>"
FIELDS = frozenset({
    "attempts", "channel", "count", "delay_s", "duplicates", "duration_ms", "error", "event_number", "first",
    "http_status", "inbox_id", "kind", "last", "latency_ms", "method", "new", "notification", "patient_id",
    "path", "reason", "resource_id", "resource_type", "since", "state", "status", "subscription", "topic",
    "types", "version", "worker", "written", "failed",
})
_EXTRA = "bridge_fields"


def _clean_value(key: str, value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if key == "error":
        return str(value)[:300]
    if isinstance(value, list | tuple):
        return [_clean_value(key, v) for v in value]
    text = str(value)
    return text if SAFE_VALUE.match(text) else REDACTED


def clean(fields: dict[str, Any]) -> dict[str, Any]:
    """Only known keys, only id-like string values."""
    out = {k: _clean_value(k, v) for k, v in fields.items() if k in FIELDS}
    dropped = sorted(k for k in fields if k not in FIELDS)
    if dropped:
        out["dropped_fields"] = len(dropped)
    return out


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event (see the module docstring for what may be in it)."""
    if not logger.isEnabledFor(level):
        return
    safe = clean(fields)
    text = " ".join([name, *(f"{k}={v}" for k, v in safe.items() if v is not None)])
    logger.log(level, "%s", text, extra={_EXTRA: {"event": name, **safe}})


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        doc: dict[str, Any] = {"ts": ts, "level": record.levelname.lower(), "logger": record.name}
        fields = getattr(record, _EXTRA, None)
        if isinstance(fields, dict):
            doc.update(fields)
        else:
            doc["event"] = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            doc["exception"] = record.exc_info[0].__name__  # the type only: a message may hold data
        return json.dumps(doc, ensure_ascii=False, default=str)


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """Route every logger (bridge, uvicorn) to one JSON-lines handler on ``stream`` (stderr by default)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # replaced by http.request events without queries
    for name in ("urllib3", "httpx", "httpcore"):  # their debug/info lines carry full URLs, queries included
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.captureWarnings(True)  # warnings.warn -> logger "py.warnings" -> this handler
    sys.excepthook = _uncaught
    threading.excepthook = _uncaught_in_thread
    return handler


def _uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    event(logging.getLogger("bridge"), "uncaught", logging.CRITICAL, error=kind.__name__)


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is not SystemExit:
        event(logging.getLogger("bridge"), "uncaught", logging.CRITICAL, error=args.exc_type.__name__,
              worker=args.thread.name if args.thread else None)


__all__ = ["FIELDS", "REDACTED", "SAFE_VALUE", "JsonFormatter", "clean", "configure_logging", "event"]
