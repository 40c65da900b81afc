"""Write what the bridge computed to the EHR, idempotently, validated first, with Provenance.

- The ResearchStudy is written by id (``PUT ResearchStudy/nct04762485``, update-as-create).
- One ResearchSubject per (study, patient), found again by its stable identifier: the current one is looked
  up by identifier (results are re-checked client-side, so a server that ignores the parameter cannot fool
  us), skipped when its fingerprint (status + verdicts + reading, not the as-of date) is unchanged, else
  written by conditional update on the identifier — never a duplicate.
- A pre-screen never moves a subject back: once a subject is past pre-screening (screening, on-study, …) its
  lifecycle status is kept and only the verdicts are refreshed.
- Every written resource is accompanied by a Provenance naming the bridge version and the rule set.
- Nothing is sent that fails the official R4 JSON Schema or our own code checks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.client import FhirClient, FhirResult
from bridge.config import RuleOptions
from bridge.errors import ServerRejected
from bridge.evaluate.eligibility import Screening
from bridge.publish.provenance import provenance
from bridge.publish.study import STUDY_LOGICAL_ID, research_study
from bridge.publish.subject import identifier_query, research_subject, subject_fingerprint, subject_identifier
from bridge.publish.validate import validate_output

log = logging.getLogger("bridge.publish")
PRESCREEN_STATUSES = frozenset({"candidate", "potential-candidate", "ineligible", "eligible", "not-registered"})
Json = dict[str, Any]


@dataclass(frozen=True)
class Written:
    """What happened to one resource: created, updated or unchanged (with the server's id and version)."""

    reference: str
    outcome: str
    version: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def publish_study(client: FhirClient, organ_reading: str = "organ-function",
                  clock: Callable[[], datetime] = _now) -> Written:
    study = research_study(organ_reading=organ_reading)
    study["id"] = STUDY_LOGICAL_ID
    validate_output(study)
    try:
        current = client.read("ResearchStudy", STUDY_LOGICAL_ID).resource
    except Exception:  # noqa: BLE001 - any failure to read means "write it"; the write reports real errors
        current = None
    if current is not None and _same(current, study):
        return Written(f"ResearchStudy/{STUDY_LOGICAL_ID}", "unchanged", _version(current))
    result = client.update(study)
    _provenance(client, f"ResearchStudy/{STUDY_LOGICAL_ID}", result.version_id, "study-publication", [], clock)
    outcome = "created" if current is None else "updated"
    log.info("ResearchStudy/%s %s", STUDY_LOGICAL_ID, outcome)
    return Written(f"ResearchStudy/{STUDY_LOGICAL_ID}", outcome, result.version_id)


def _strip(resource: Json) -> Json:
    return {k: v for k, v in resource.items() if k not in ("id", "meta", "text")}


def _same(a: Json, b: Json) -> bool:
    return _strip(a) == _strip(b)


def _version(resource: Json) -> str | None:
    meta = resource.get("meta")
    return str(meta.get("versionId")) if isinstance(meta, dict) and meta.get("versionId") else None


def find_subject(client: FhirClient, patient_id: str) -> Json | None:
    """The ResearchSubject carrying this patient's identifier, if any (checked client-side)."""
    system, value = subject_identifier(patient_id)
    params = {"identifier": f"{system}|{value}", "patient": patient_id}
    for res in client.search("ResearchSubject", params, matches_only=True):
        for ident in res.get("identifier") or []:
            if ident.get("system") == system and ident.get("value") == value:
                return res
    return None


def _not_supported(exc: ServerRejected) -> bool:
    return any(i.code == "not-supported" for i in exc.issues)


def _write_subject(client: FhirClient, subject: Json, current: Json | None, patient_id: str) -> FhirResult:
    """Conditional update on the identifier; where the server does not support that search parameter, the
    subject found by identifier (client-side check) is updated by id with If-Match, or created."""
    try:
        return client.conditional_update(subject, identifier_query(patient_id))
    except ServerRejected as exc:
        if not _not_supported(exc):
            raise
        log.info("ResearchSubject: conditional update not supported by the server, writing by id")
    if current is not None:
        return client.update({**subject, "id": current["id"]}, if_match=_version(current))
    return client.create(subject)


def publish_subject(client: FhirClient, screening: Screening, options: RuleOptions,
                    clock: Callable[[], datetime] = _now) -> Written:
    patient_id = screening.patient.removeprefix("Patient/")
    current = find_subject(client, patient_id)
    status = screening.status
    if current is not None and current.get("status") not in PRESCREEN_STATUSES:
        status = str(current.get("status"))  # past pre-screening: keep the lifecycle status
    subject = research_subject(patient_id, status, list(screening.verdicts), options.as_of,
                               options.organ_function_reading)
    validate_output(subject)
    if current is not None and subject_fingerprint(current) == subject_fingerprint(subject):
        return Written(f"ResearchSubject/{current.get('id')}", "unchanged", _version(current))
    result = _write_subject(client, subject, current, patient_id)
    ref = f"ResearchSubject/{result.id}"
    _provenance(client, ref, result.version_id, "prescreen", [screening.patient], clock)
    outcome = "created" if current is None else "updated"
    log.info("%s %s", ref, outcome)
    return Written(ref, outcome, result.version_id)


def _provenance(client: FhirClient, ref: str, version: str | None, activity: str, entities: list[str],
                clock: Callable[[], datetime]) -> None:
    target = f"{ref}/_history/{version}" if version else ref
    prov = provenance([target], activity, clock(), entities)
    validate_output(prov)
    client.create(prov)


def publish_screenings(client: FhirClient, screenings: Iterable[Screening], options: RuleOptions,
                       clock: Callable[[], datetime] = _now) -> list[Written]:
    return [publish_subject(client, s, options, clock) for s in screenings]


__all__ = ["PRESCREEN_STATUSES", "Written", "find_subject", "publish_screenings", "publish_study", "publish_subject"]
