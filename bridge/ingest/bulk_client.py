"""Bulk Data export client (FHIR Bulk Data Access, ``$export``): kick-off, poll, resumable NDJSON download.

1. **Kick-off** ``GET {base}/$export`` (or ``{base}/Patient/$export``) with ``Accept: application/fhir+json``,
   ``Prefer: respond-async``, ``_type`` and ``_since``. The server answers 202 with the status URL in
   ``Content-Location``; a 4xx/5xx OperationOutcome becomes ``ServerRejected`` with its issues.
2. **Poll** the status URL: 202 while in progress (``X-Progress`` is handed to a progress callback, shown on a
   terminal only), waiting as long as ``Retry-After`` says (seconds or an HTTP date; else a growing back-off),
   until 200 with the manifest (``output[]`` with ``type`` and ``url``, ``error[]``, ``requiresAccessToken``).
3. **Download** each file streamed to ``<DIR>/<Type>.ndjson`` (``<Type>.<n>.ndjson`` when a type has several),
   through ``<name>.part``: a partial file is resumed with a ``Range`` header when the server answers 206, and
   restarted when it answers 200. Completed files are skipped on a rerun. OperationOutcome files listed in
   ``error[]`` go to ``<DIR>/errors/``; only their issue counts are reported, never their text.

Every request goes through the FHIR client's one transport (``bridge.http.Transport``): timeouts, retries
honouring ``Retry-After``, and the bearer token only ever sent to the configured origin. The status URL must be
on that origin (``ForeignHost`` otherwise). Output files may live elsewhere (a storage bucket): when the
manifest says ``requiresAccessToken: true`` a file is fetched with the token only from the configured origin
and a file on another host is refused with ``ForeignHost``; with ``requiresAccessToken: false`` files are
fetched without any credentials (``Transport.send``), wherever they are. Polling a 202 is not a retry: it
waits as the server asks for as long as ``max_wait_seconds`` allows.

A small state file, ``<DIR>/.bulk-export.json`` (mode 0600: the manifest's URLs may carry signatures), keeps
the request, the status URL, the manifest and which files are complete, so a rerun resumes polling or
downloading instead of starting again; a rerun with other parameters is refused (``ConfigError``).
``KeyboardInterrupt`` cancels the export (``DELETE`` on the status URL, best effort), marks the state
cancelled — the next run starts a new export — and is re-raised (the CLI exits 130).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin

import requests

from bridge.client import FhirClient
from bridge.errors import ConfigError, ForeignHost, NotFHIR, RemoteError, TransportError
from bridge.http import retry_after_seconds

log = logging.getLogger("bridge.bulk")

DEFAULT_TYPES = ("Patient", "Encounter", "Condition", "Observation", "MedicationAdministration")
STATE_FILE = ".bulk-export.json"
NDJSON = "application/fhir+ndjson"
BLOCK = 1 << 20
POLL_FIRST, POLL_GROWTH, POLL_CAP = 1.0, 1.5, 60.0
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-\d+/(?:\d+|\*)$")

Level = Literal["system", "patient"]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ExportRequest:
    """What to export: system level or all patients (``Patient/$export``), which types, since when."""

    level: Level = "system"
    types: tuple[str, ...] = DEFAULT_TYPES
    since: str | None = None  # a FHIR instant

    def __post_init__(self) -> None:
        bad = [t for t in self.types if not _TYPE.match(t)]
        if bad or not self.types:
            raise ConfigError("--type takes FHIR resource type names, e.g. Observation")

    def url(self, base: str) -> str:
        return f"{base}/Patient/$export" if self.level == "patient" else f"{base}/$export"

    def params(self) -> list[tuple[str, str]]:
        out = [("_type", ",".join(self.types))]
        return out + ([("_since", self.since)] if self.since else [])

    def as_json(self) -> dict[str, Any]:
        return {"level": self.level, "types": list(self.types), "since": self.since}


@dataclass(frozen=True)
class FileRef:
    type: str
    url: str


@dataclass(frozen=True)
class Manifest:
    """The completed export's manifest (the parts the bridge uses)."""

    requires_access_token: bool
    outputs: tuple[FileRef, ...]
    errors: tuple[FileRef, ...] = ()
    transaction_time: str | None = None

    @classmethod
    def from_json(cls, doc: Any) -> Manifest:
        if not isinstance(doc, dict) or not isinstance(doc.get("output"), list):
            raise NotFHIR("export status: the 200 answer is not a Bulk Data manifest (no output array)")
        token = doc.get("requiresAccessToken", True)  # absent: assume the token is needed (the safe side)
        return cls(token is not False, _file_refs(doc["output"], "output"), _file_refs(doc.get("error") or [], "error"),
                   doc.get("transactionTime") if isinstance(doc.get("transactionTime"), str) else None)

    def as_json(self) -> dict[str, Any]:
        return {"requiresAccessToken": self.requires_access_token, "transactionTime": self.transaction_time,
                "output": [asdict(f) for f in self.outputs], "error": [asdict(f) for f in self.errors]}


def _file_refs(items: Any, what: str) -> tuple[FileRef, ...]:
    if not isinstance(items, list):
        raise NotFHIR(f"export manifest: {what} is not an array")
    out = []
    for i, item in enumerate(items):
        ok = isinstance(item, dict) and isinstance(item.get("url"), str) and _TYPE.match(str(item.get("type")))
        if not ok:
            raise NotFHIR(f"export manifest: {what}[{i}] needs a resource type and a url")
        out.append(FileRef(item["type"], item["url"]))
    return tuple(out)


def file_names(refs: tuple[FileRef, ...], prefix: str = "") -> list[str]:
    """``<Type>.ndjson``, or ``<Type>.<n>.ndjson`` (n from 1) when the manifest lists several of a type."""
    totals = {t: sum(1 for r in refs if r.type == t) for t in {r.type for r in refs}}
    seen: dict[str, int] = {}
    names = []
    for ref in refs:
        seen[ref.type] = seen.get(ref.type, 0) + 1
        suffix = f".{seen[ref.type]:03d}" if totals[ref.type] > 1 else ""
        names.append(f"{prefix}{ref.type}{suffix}.ndjson")
    return names


@dataclass
class ExportState:
    """What ``<DIR>/.bulk-export.json`` remembers between runs."""

    base_url: str
    request: dict[str, Any]
    status_url: str | None = None
    manifest: dict[str, Any] | None = None
    done: list[str] = field(default_factory=list)
    cancelled: bool = False

    @classmethod
    def load(cls, path: Path) -> ExportState | None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            return cls(**doc)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            raise ConfigError(f"{path}: unreadable export state; delete it to start a new export") from None

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(self), handle, indent=2)
        tmp.replace(path)


@dataclass(frozen=True)
class Downloaded:
    name: str
    type: str
    bytes: int
    resumed: bool = False
    skipped: bool = False


@dataclass
class ExportResult:
    directory: Path
    files: list[Downloaded]
    error_files: list[Downloaded]
    issues: dict[str, int]  # OperationOutcome issue counts by severity, from the error files

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)


class BulkExporter:
    """Runs one export into ``out``: ``BulkExporter(client, out, request).run()``."""

    def __init__(self, client: FhirClient, out: Path, request: ExportRequest | None = None,
                 progress: Progress | None = None, max_wait_seconds: float | None = None) -> None:
        self.client, self.out, self.request = client, out, request or ExportRequest()
        self.http = client.transport
        self.progress = progress
        self.max_wait = max_wait_seconds
        self.state_path = out / STATE_FILE

    # ------------------------------------------------------------------ the run
    def run(self) -> ExportResult:
        self.out.mkdir(parents=True, exist_ok=True)
        state = self._state()
        try:
            if state.manifest is None:
                if state.status_url is None:
                    state.status_url = self.kick_off()
                    state.save(self.state_path)
                state.manifest = self.poll(state.status_url).as_json()
                state.save(self.state_path)
            return self.download_all(state)
        except KeyboardInterrupt:
            self.cancel(state)
            raise

    def _state(self) -> ExportState:
        fresh = ExportState(self.client.base_url, self.request.as_json())
        state = ExportState.load(self.state_path)
        if state is None or state.cancelled:
            return fresh
        if state.base_url != fresh.base_url or state.request != fresh.request:
            raise ConfigError(f"{self.out} holds an export of other parameters; use another --out directory or "
                              f"delete {STATE_FILE} there to start over")
        return state

    # ------------------------------------------------------------------ kick-off and status
    def kick_off(self) -> str:
        """Start the export; returns the absolute status URL (on the configured origin)."""
        url = self.request.url(self.client.base_url)
        headers = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
        resp = self.http.request("GET", url, headers=headers, params=self.request.params())
        if resp.status_code >= 400:
            raise self.client.error(resp, "GET", url)
        location = resp.headers.get("Content-Location")
        if resp.status_code != 202 or not location:
            raise RemoteError(f"$export kick-off: expected 202 with Content-Location, got {resp.status_code}",
                              status=resp.status_code)
        status_url = urljoin(self.client.base_url + "/", location)
        if not self.http.same_origin(status_url):
            raise ForeignHost("$export kick-off: the status URL is not on the configured FHIR server")
        return status_url

    def poll(self, status_url: str) -> Manifest:
        """Wait for the export to complete; the manifest, or the server's error."""
        delay, waited = POLL_FIRST, 0.0
        while True:
            resp = self.http.request("GET", status_url, headers={"Accept": "application/json"})
            if resp.status_code == 200:
                return Manifest.from_json(_json(resp, "export status"))
            if resp.status_code >= 400:
                raise self.client.error(resp, "GET", status_url)
            if resp.status_code != 202:
                raise RemoteError(f"export status: unexpected {resp.status_code}", status=resp.status_code)
            self._report(resp.headers.get("X-Progress"))
            asked = retry_after_seconds(resp.headers.get("Retry-After"), self.http.wall_clock())
            wait = asked if asked is not None else delay
            if self.max_wait is not None and waited + wait > self.max_wait:
                raise TransportError(f"export status: not complete after {waited:.0f} s, giving up (the export "
                                     "keeps running; rerun to resume polling)")
            self.http.sleep(wait)
            waited += wait
            if asked is None:  # the server gave no hint: back off further next time
                delay = min(POLL_CAP, delay * POLL_GROWTH)

    def _report(self, progress: str | None) -> None:
        if self.progress is not None:
            text = "".join(ch for ch in (progress or "in progress") if ch.isprintable())[:80]
            self.progress(text)

    def cancel(self, state: ExportState) -> None:
        """Best effort ``DELETE`` of the status URL; the state is marked cancelled whatever the answer."""
        state.cancelled = True
        state.save(self.state_path)
        if not state.status_url:
            return
        try:
            resp = self.http.request("DELETE", state.status_url, headers={"Accept": "application/fhir+json"})
            log.info("export cancelled: DELETE status -> %d", resp.status_code)
        except (RemoteError, requests.RequestException) as exc:
            log.warning("export cancel: DELETE status failed (%s)", type(exc).__name__)

    # ------------------------------------------------------------------ downloads
    def download_all(self, state: ExportState) -> ExportResult:
        assert state.manifest is not None
        manifest = Manifest.from_json(state.manifest)
        files = [self._fetch(state, manifest, ref, name)
                 for ref, name in zip(manifest.outputs, file_names(manifest.outputs), strict=True)]
        errors = [self._fetch(state, manifest, ref, name)
                  for ref, name in zip(manifest.errors, file_names(manifest.errors, "errors/"), strict=True)]
        return ExportResult(self.out, files, errors, _issue_counts([self.out / e.name for e in errors]))

    def _fetch(self, state: ExportState, manifest: Manifest, ref: FileRef, name: str) -> Downloaded:
        final = self.out / name
        if name in state.done and final.exists():
            return Downloaded(name, ref.type, final.stat().st_size, skipped=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        resumed = self.download(ref.url, final, manifest.requires_access_token)
        state.done.append(name)
        state.save(self.state_path)
        return Downloaded(name, ref.type, final.stat().st_size, resumed=resumed)

    def download(self, url: str, final: Path, requires_token: bool) -> bool:
        """Stream ``url`` to ``final`` through ``final.part``; True when a partial file was resumed."""
        part = final.with_name(final.name + ".part")
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Accept": NDJSON, **({"Range": f"bytes={offset}-"} if offset else {})}
        resp = self._get_file(url, headers, requires_token)
        start = _range_start(resp) if resp.status_code == 206 else 0
        if offset and (resp.status_code == 416 or (resp.status_code == 206 and start != offset)):
            resp.close()  # the server cannot continue this partial file: start it again
            part.unlink()
            return self.download(url, final, requires_token)
        if resp.status_code not in (200, 206) or start != (offset if resp.status_code == 206 else 0):
            resp.close()
            raise self.client.error(resp, "GET", url) if resp.status_code >= 300 else \
                RemoteError(f"download of {final.name}: unexpected {resp.status_code}", status=resp.status_code)
        resumed = resp.status_code == 206 and offset > 0
        self._stream(resp, part, "ab" if resumed else "wb", final.name)
        part.replace(final)
        return resumed

    def _get_file(self, url: str, headers: dict[str, str], requires_token: bool) -> requests.Response:
        if not requires_token:
            return self.http.send("GET", url, headers=headers, stream=True)
        if not self.http.same_origin(url):
            raise ForeignHost("export file: on another host, and the manifest requires the access token; "
                              "the token is only ever sent to the configured FHIR server")
        return self.http.request("GET", url, headers=headers, stream=True)

    @staticmethod
    def _stream(resp: requests.Response, part: Path, mode: str, name: str) -> None:
        try:
            with resp, part.open(mode) as handle:
                for block in resp.iter_content(BLOCK):
                    handle.write(block)
        except requests.RequestException as exc:
            raise TransportError(f"download of {name} interrupted ({type(exc).__name__}); rerun to resume") from None


def _range_start(resp: requests.Response) -> int | None:
    m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", "").strip())
    return int(m.group(1)) if m else None


def _json(resp: requests.Response, what: str) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise NotFHIR(f"{what}: {resp.status_code} answer is not JSON", status=resp.status_code) from None


def _issue_counts(paths: list[Path]) -> dict[str, int]:
    """OperationOutcome issues by severity across NDJSON error files (their text is never read out)."""
    counts: dict[str, int] = {}
    for path in paths:
        with path.open("rb") as handle:
            for line in handle:
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                issues = doc.get("issue") if isinstance(doc, dict) else None
                for issue in issues if isinstance(issues, list) else []:
                    severity = str(issue.get("severity") or "error") if isinstance(issue, dict) else "error"
                    counts[severity] = counts.get(severity, 0) + 1
    return counts


def since_instant(value: str) -> str:
    """``--since``: a date (midnight UTC) or an instant with a time zone -> a FHIR instant."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return f"{value}T00:00:00Z"
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", value):
        return value
    raise ConfigError("--since takes a date (YYYY-MM-DD, midnight UTC) or an instant with a time zone")


__all__ = ["DEFAULT_TYPES", "STATE_FILE", "BulkExporter", "Downloaded", "ExportRequest", "ExportResult",
           "ExportState", "FileRef", "Manifest", "file_names", "since_instant"]
