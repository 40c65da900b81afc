"""Queue packages in the outbox and send them to the registry, each exactly once.

``enqueue_packages`` puts packages in the outbox (a package already known by its idempotency key is not queued
again); ``sync_directory`` queues a directory's and withdraws the unsent packages it no longer holds (consent
withdrawn). ``submit_pending`` drains the outbox oldest first: it claims a package,
adds the registry patient id (``registry_crid_path``; asked once per pseudonym and cached), checks the
package again (registry profile, R4 schema, codes, no precise date), POSTs it with its idempotency key and
stores the receipt. A package the registry rejects (4xx) becomes ``failed`` and the run goes on; a transient
or authorisation problem puts the package back to ``pending`` and ends the run (the next run resumes).

``on_event(event, package_id)`` is told ``"posted"`` after the registry answered and ``"sent"`` after the
receipt is stored (tests use it to kill the process at either point).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.errors import (
    AuthError,
    BridgeError,
    InputError,
    RemoteError,
    ServerRejected,
    SourceUnreadable,
    ValidationFailed,
)
from bridge.registry.package import Package
from bridge.registry.pseudonym import centre_number
from bridge.registry.resources import CRID_SYSTEM, PSEUDONYM_SYSTEM, TIMEPOINT_SYSTEM
from bridge.registry.transport import RegistryClient
from bridge.registry.validate import package_issues
from bridge.state.outbox import OutboxRow, RegistryOutbox

log = logging.getLogger("bridge.registry")

Json = dict[str, Any]
EventHook = Callable[[str, str], None]


@dataclass
class SubmitReport:
    """What one ``submit_pending`` run did."""

    sent: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    stopped: str | None = None

    def as_json(self) -> Json:
        return {"sent": self.sent, "duplicates": self.duplicates,
                "failed": [{"package": p, "error": e} for p, e in self.failed], "stopped": self.stopped}


# ---------------------------------------------------------------------------------------------- enqueue


def enqueue_packages(outbox: RegistryOutbox, packages: Iterable[Package]) -> tuple[int, int]:
    """(queued, already known) after putting ``packages`` in the outbox."""
    queued = known = 0
    for p in packages:
        if outbox.enqueue(p.key, p.id, p.timepoint, p.pseudonym, p.bundle):
            queued += 1
        else:
            known += 1
    return queued, known


def read_package_file(path: Path) -> Package:
    """A package written by ``bridge registry export``; checked before it is queued."""
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise SourceUnreadable(f"{path.name}: not a readable JSON package") from None
    issues = package_issues(bundle) if isinstance(bundle, dict) else []
    if not isinstance(bundle, dict) or issues:
        raise ValidationFailed(f"{path.name} is not a valid registry package", issues)
    pseud = _pseudonym(bundle)
    tag = next(t["code"] for t in bundle["meta"]["tag"] if t.get("system") == TIMEPOINT_SYSTEM)
    return Package(bundle["id"], "", pseud, tag, bundle)


def _pseudonym(bundle: Json) -> str:
    for entry in bundle["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Patient":
            return str(next(i["value"] for i in res["identifier"] if i.get("system") == PSEUDONYM_SYSTEM))
    raise InputError("a registry package without a Patient pseudonym")


def sync_directory(outbox: RegistryOutbox, directory: Path) -> tuple[int, int, int]:
    """(queued, already known, withdrawn): ``directory`` is the latest export, so its ``*.json`` packages are
    queued (all are checked before any is) and every unsent package it no longer holds — its patient withdrew
    consent, or it is no longer due — is withdrawn and will not be sent (``RegistryOutbox.withdraw_except``)."""
    if not directory.is_dir():
        raise SourceUnreadable(f"{directory} is not a directory of registry packages")
    packages = [read_package_file(p) for p in sorted(directory.glob("*.json"))]
    queued, known = enqueue_packages(outbox, packages)
    return queued, known, outbox.withdraw_except({p.id for p in packages})


# ---------------------------------------------------------------------------------------------- CRID


def with_crid(bundle: Json, crid: str) -> Json:
    """The package with the registry patient id added to its Patient and ResearchSubject identifiers."""
    out = copy.deepcopy(bundle)
    ident = {"system": CRID_SYSTEM, "value": crid}
    for entry in out["entry"]:
        res = entry["resource"]
        if res["resourceType"] in ("Patient", "ResearchSubject") and ident not in res.setdefault("identifier", []):
            res["identifier"] = [i for i in res["identifier"] if i.get("system") != CRID_SYSTEM] + [ident]
    return out


def crid_for(outbox: RegistryOutbox, client: RegistryClient, row: OutboxRow, centre: str) -> str:
    """The cached registry patient id of the row's pseudonym, asked of the registry the first time."""
    cached = outbox.crid(row.pseudonym)
    if cached is not None:
        return cached
    body = row.body or {}
    patient = next(e["resource"] for e in body["entry"] if e["resource"]["resourceType"] == "Patient")
    crid = client.assign_crid(patient, centre_number(centre))
    outbox.remember_crid(row.pseudonym, crid)
    return crid


# ---------------------------------------------------------------------------------------------- drain


def _prepared(outbox: RegistryOutbox, client: RegistryClient, row: OutboxRow, centre: str, use_crid: bool) -> Json:
    body = row.body or {}
    if use_crid:
        body = with_crid(body, crid_for(outbox, client, row, centre))
    issues = package_issues(body)
    if issues:
        raise ValidationFailed(f"{row.package_id} fails validation before sending", issues)
    return body


def _send_one(outbox: RegistryOutbox, client: RegistryClient, row: OutboxRow, centre: str, use_crid: bool,
              on_event: EventHook | None) -> bool:
    """Send one claimed package; True when it is received (sent or duplicate)."""
    body = _prepared(outbox, client, row, centre, use_crid)
    receipt = client.submit(body, row.key)
    if on_event:
        on_event("posted", row.package_id)
    outbox.mark_sent(row.key, receipt.status, receipt.as_json())
    log.info("registry package %s %s (%d)", row.package_id, "already received" if receipt.duplicate else "sent",
             receipt.status)
    if on_event:
        on_event("sent", row.package_id)
    return receipt.duplicate


def submit_pending(outbox: RegistryOutbox, client: RegistryClient, centre: str, *, use_crid: bool = True,
                   on_event: EventHook | None = None) -> SubmitReport:
    """Send every pending package; stop at the first transient or authorisation problem."""
    report = SubmitReport()
    while (row := outbox.claim()) is not None:
        try:
            duplicate = _send_one(outbox, client, row, centre, use_crid, on_event)
        except (ServerRejected, ValidationFailed) as exc:
            outbox.mark_failed(row.key, getattr(exc, "status", None), exc.message)
            report.failed.append((row.package_id, exc.message))
            continue
        except (AuthError, RemoteError) as exc:
            outbox.mark_pending(row.key, exc.status, exc.message)
            report.stopped = exc.message
            break
        except BridgeError as exc:  # configuration or store trouble: leave the package to the next run
            outbox.mark_pending(row.key, None, exc.message)
            raise
        (report.duplicates if duplicate else report.sent).append(row.package_id)
    return report


__all__ = ["EventHook", "SubmitReport", "crid_for", "enqueue_packages", "read_package_file",
           "submit_pending", "sync_directory", "with_crid"]
