"""Write what the bridge computed to the EHR, idempotently, validated first, with Provenance.

- Everything is built for a ``Trial`` (``trial=``; None: the shipped one): its ResearchStudy, its subjects'
  identifiers (``<trial id>-<patient id>``), its criteria system, and its rule set in every Provenance.
- The ResearchStudy is written by id (``PUT ResearchStudy/<the trial's logical id>``, update-as-create).
- One ResearchSubject per (trial, patient), found again by its stable identifier: the current one is looked
  up by identifier (results are re-checked client-side, so a server that ignores the parameter cannot fool
  us), skipped when its fingerprint (status + verdicts + reading, not the as-of date) is unchanged, else
  written by conditional update on the identifier — never a duplicate.
- A pre-screen never moves a subject back: once a subject is past pre-screening (screening, on-study, …) its
  lifecycle status is kept and only the verdicts are refreshed.
- An automated re-screen never overwrites a human decision (issue #17): when the subject carries the study
  team's decision (``subject.DECISION_EXTENSION``), its status and the decision are kept, the investigator's
  judgement stays the ``exc-investigator`` verdict, the other verdicts are refreshed, and ``changedSinceReview``
  says whether they differ from those the decision was taken on (``subject.reviewed_subject``). The team's
  actions themselves are written by ``bridge.publish.decision``.
- Every written resource is accompanied by a Provenance naming the bridge version and the trial's rule set
  (``ruleset_policy``: the ruleset version, which begins with the trial id).
- Nothing is sent that fails the official R4 JSON Schema or our own code checks.
- ``publish_study`` first writes the bridge's conformance resources (``bridge.publish.conformance``: its
  StructureDefinitions, CodeSystems and ValueSets), each found again by its canonical ``url`` and written only
  when its content changed: by conditional update ``PUT Type?url=…`` where the server's CapabilityStatement
  offers the ``url`` search parameter for the type, else by id (the one found, with If-Match, or the bridge's
  own stable id) — never a duplicate. They carry their version and date; no Provenance of their own.
- Where the server's CapabilityStatement offers transactions (``rest.interaction`` ``transaction``), a
  ResearchSubject and its Provenance travel in one transaction Bundle (``publish_prescreen`` asks once per
  client): the subject by conditional update on its identifier (``PUT ResearchSubject?identifier=…``), the
  Provenance targeting it by ``urn:uuid``; a server that rejects that as ``not-supported`` gets the same
  transaction with the subject written by id (If-Match) or created. Otherwise two requests, as before.
- Who gets a ResearchSubject at all is the one publication policy of ``bridge.publish.policy``, applied by
  ``publish_screenings`` / ``publish_prescreen`` (the CLI's ``--publish``) exactly as by the service:
  screened patients whose ``inc-diagnosis`` is not ``not-met``, or who already have a ResearchSubject; never a
  patient who is not screened. ``publish_subject`` itself is the plain write, for callers that applied it.
"""

from __future__ import annotations

import copy
import logging
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from bridge.client import FhirClient, FhirResult, location_id, parse_etag, weak_etag
from bridge.config import RuleOptions
from bridge.errors import BridgeError, RemoteError, ServerRejected
from bridge.evaluate.eligibility import Screening
from bridge.model import NotScreened
from bridge.publish.policy import select
from bridge.publish.provenance import provenance
from bridge.publish.study import research_study, study_logical_id
from bridge.publish.subject import (
    PRESCREEN_STATUSES,
    decision_from_subject,
    identifier_query,
    reviewed_subject,
    subject_fingerprint,
    subject_identifier,
)
from bridge.publish.validate import validate_output
from bridge.trial import Trial, load_trial

log = logging.getLogger("bridge.publish")
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
                  clock: Callable[[], datetime] = _now, conformance: bool = True,
                  trial: Trial | None = None) -> Written:
    """The bridge's conformance resources for ``trial`` (``publish_conformance``, unless ``conformance`` is
    False), then ``PUT ResearchStudy/<the trial's logical id>`` unless the server already holds the same
    content; Provenance naming the trial's rule set."""
    t = trial or load_trial()
    if conformance:
        publish_conformance(client, t)
    rid = study_logical_id(t)
    study = research_study(organ_reading=organ_reading, trial=t)
    study["id"] = rid
    validate_output(study)
    current = _read_if_exists(client, "ResearchStudy", rid)
    if current is not None and _same(current, study):
        return Written(f"ResearchStudy/{rid}", "unchanged", _version(current))
    result = client.update(study)
    _provenance(client, f"ResearchStudy/{rid}", result.version_id, "study-publication", [], clock, t)
    outcome = "created" if current is None else "updated"
    log.info("ResearchStudy/%s %s", rid, outcome)
    return Written(f"ResearchStudy/{rid}", outcome, result.version_id)


# ---------------------------------------------------------------------------------------------- capabilities

_CAPABILITIES: weakref.WeakKeyDictionary[FhirClient, Json] = weakref.WeakKeyDictionary()


def server_capabilities(client: FhirClient) -> Json:
    """The server's CapabilityStatement, read once per client; ``{}`` when it cannot be read (the caller then
    takes the plain paths, which need nothing from it)."""
    if client not in _CAPABILITIES:
        try:
            statement = client.capabilities()
        except BridgeError as exc:
            log.info("the server's CapabilityStatement cannot be read (%s): no transactions",
                     type(exc).__name__)
            statement = {}
        _CAPABILITIES[client] = statement if isinstance(statement, dict) else {}
    return _CAPABILITIES[client]


def _server_rest(statement: Json) -> list[Json]:
    return [r for r in statement.get("rest") or [] if isinstance(r, dict) and r.get("mode", "server") == "server"]


def offers_transaction(client: FhirClient) -> bool:
    """Whether the server's CapabilityStatement lists the system interaction ``transaction``."""
    return any(isinstance(i, dict) and i.get("code") == "transaction"
               for rest in _server_rest(server_capabilities(client)) for i in rest.get("interaction") or [])


def offers_search_param(client: FhirClient, resource_type: str, name: str) -> bool:
    """Whether the server declares search parameter ``name`` on ``resource_type`` and conditional updates."""
    for rest in _server_rest(server_capabilities(client)):
        for res in rest.get("resource") or []:
            if isinstance(res, dict) and res.get("type") == resource_type and res.get("conditionalUpdate"):
                return any(isinstance(p, dict) and p.get("name") == name for p in res.get("searchParam") or [])
    return False


# ---------------------------------------------------------------------------------------------- conformance


def find_by_url(client: FhirClient, resource_type: str, url: str) -> Json | None:
    """The resource of this type whose canonical ``url`` is ``url`` — checked client-side, since a server may
    ignore the ``url`` parameter; of several, the first by id."""
    found = [r for r in client.search(resource_type, {"url": url}, matches_only=True) if r.get("url") == url]
    if len(found) > 1:
        log.warning("%s: %d resources carry the same canonical url; updating the first", resource_type, len(found))
    return min(found, key=lambda r: str(r.get("id"))) if found else None


def _write_canonical(client: FhirClient, resource: Json, current: Json | None) -> FhirResult:
    rtype = resource["resourceType"]
    if current is not None:
        return client.update({**resource, "id": current["id"]}, if_match=_version(current))
    if offers_search_param(client, rtype, "url"):
        try:
            return client.conditional_update({k: v for k, v in resource.items() if k != "id"},
                                             {"url": resource["url"]})
        except ServerRejected as exc:
            if not _not_supported(exc):
                raise
    return client.update(resource)  # the bridge's own stable id: update as create, never a duplicate


def publish_conformance(client: FhirClient, trial: Trial | None = None) -> list[Written]:
    """Write the bridge's StructureDefinitions, CodeSystems and ValueSets where the server does not hold them
    as they are (found again by canonical url). They carry no Provenance of their own: each names its version
    and date, and the study's Provenance follows in the same run."""
    from bridge.publish.conformance import load_resources  # local: reads the committed files

    written: list[Written] = []
    for resource in load_resources(trial):
        validate_output(resource)
        rtype = resource["resourceType"]
        current = find_by_url(client, rtype, resource["url"])
        if current is not None and _same(current, resource):
            written.append(Written(f"{rtype}/{current.get('id')}", "unchanged", _version(current)))
            continue
        result = _write_canonical(client, resource, current)
        outcome = "created" if current is None else "updated"
        written.append(Written(f"{rtype}/{result.id}", outcome, result.version_id))
        log.info("%s/%s %s", rtype, result.id, outcome)
    return written


def _read_if_exists(client: FhirClient, resource_type: str, resource_id: str) -> Json | None:
    """The resource, or None when the server says it does not exist (404) or was deleted (410); any other
    failure (auth, transport, a server error) is raised rather than taken for "absent"."""
    try:
        return client.read(resource_type, resource_id).resource
    except RemoteError as exc:
        if exc.status in (404, 410):
            return None
        raise


def _strip(resource: Json) -> Json:
    return {k: v for k, v in resource.items() if k not in ("id", "meta", "text")}


def _same(a: Json, b: Json) -> bool:
    return _strip(a) == _strip(b)


def _version(resource: Json) -> str | None:
    meta = resource.get("meta")
    return str(meta.get("versionId")) if isinstance(meta, dict) and meta.get("versionId") else None


def find_subject(client: FhirClient, patient_id: str, trial: Trial | None = None) -> Json | None:
    """The patient's ResearchSubject in ``trial`` (its identifier), if any (checked client-side)."""
    system, value = subject_identifier(patient_id, trial)
    return find_by_identifier(client, "ResearchSubject", system, value, {"patient": patient_id})


def _not_supported(exc: ServerRejected) -> bool:
    return any(i.code == "not-supported" for i in exc.issues)


def _write_by_identifier(client: FhirClient, resource: Json, query: str, current: Json | None) -> FhirResult:
    """Conditional update on the identifier; where the server does not support that search parameter, the
    resource found by identifier (client-side check) is updated by id with If-Match, or created."""
    try:
        return client.conditional_update(resource, query)
    except ServerRejected as exc:
        if not _not_supported(exc):
            raise
        log.info("%s: conditional update not supported by the server, writing by id", resource["resourceType"])
    if current is not None:
        return client.update({**resource, "id": current["id"]}, if_match=_version(current))
    return client.create(resource)


def find_by_identifier(client: FhirClient, resource_type: str, system: str, value: str,
                       extra: dict[str, str] | None = None) -> Json | None:
    """The resource carrying this identifier, if any — checked client-side, since a server may ignore the
    ``identifier`` parameter and answer with everything."""
    params = {"identifier": f"{system}|{value}", **(extra or {})}
    for res in client.search(resource_type, params, matches_only=True):
        idents = res.get("identifier") or []
        for ident in idents if isinstance(idents, list) else [idents]:
            if ident.get("system") == system and ident.get("value") == value:
                return res
    return None


def upsert(client: FhirClient, resource: Json, activity: str, entities: list[str],
           clock: Callable[[], datetime] = _now, trial: Trial | None = None) -> Written:
    """Write ``resource`` found again by its (first) identifier; unchanged content is not written again. The
    Provenance names ``trial``'s rule set."""
    validate_output(resource)
    ident = resource["identifier"][0] if isinstance(resource["identifier"], list) else resource["identifier"]
    rtype = resource["resourceType"]
    current = find_by_identifier(client, rtype, ident["system"], ident["value"])
    if current is not None and _same(current, resource):
        return Written(f"{rtype}/{current.get('id')}", "unchanged", _version(current))
    result = _write_by_identifier(client, resource, f"identifier={ident['system']}|{ident['value']}", current)
    ref = f"{rtype}/{result.id}"
    _provenance(client, ref, result.version_id, activity, entities, clock, trial)
    return Written(ref, "created" if current is None else "updated", result.version_id)


def _checked_subject(patient_id: str, screening: Screening, options: RuleOptions, trial: Trial,
                     current: Json | None) -> Json:
    """The subject of ``screening`` with what ``current`` (the EHR's) carries kept: a status past pre-screening,
    and the study team's decision (``reviewed_subject``: never overwritten by an automated re-screen)."""
    decision = decision_from_subject(current) if current is not None else None
    status = str(current.get("status")) if current is not None and current.get("status") else None
    subject = reviewed_subject(patient_id, screening.status, screening.verdicts, options.as_of,
                               options.organ_function_reading, decision, status, trial)
    validate_output(subject)
    return subject


def publish_subject(client: FhirClient, screening: Screening, options: RuleOptions,
                    clock: Callable[[], datetime] = _now, transaction: bool | None = False,
                    trial: Trial | None = None) -> Written:
    """Create or update the patient's one ResearchSubject in ``trial`` (validated before any request), with
    Provenance: two requests, or one transaction Bundle when ``transaction`` is True (None: when the server
    offers transactions, ``offers_transaction``)."""
    t = trial or load_trial()
    patient_id = screening.patient.removeprefix("Patient/")
    _checked_subject(patient_id, screening, options, t, None)  # checked before any request
    current = find_subject(client, patient_id, t)
    # past pre-screening: the lifecycle status kept; the team's decision kept; the verdicts refreshed
    subject = _checked_subject(patient_id, screening, options, t, current)
    if current is not None and subject_fingerprint(current) == subject_fingerprint(subject):
        return Written(f"ResearchSubject/{current.get('id')}", "unchanged", _version(current))
    if transaction is None:
        transaction = offers_transaction(client)
    outcome = "created" if current is None else "updated"
    if transaction:
        written = _subject_transaction(client, subject, patient_id, current, [screening.patient], clock, t)
        log.info("%s %s (transaction)", written.reference, outcome)
        return Written(written.reference, outcome, written.version)
    result = _write_by_identifier(client, subject, identifier_query(patient_id, t), current)
    ref = f"ResearchSubject/{result.id}"
    _provenance(client, ref, result.version_id, "prescreen", [screening.patient], clock, t)
    log.info("%s %s", ref, outcome)
    return Written(ref, outcome, result.version_id)


def subject_transaction(client: FhirClient, subject: Json, patient_id: str, current: Json | None,
                        entities: list[str], recorded: datetime, conditional: bool = True,
                        trial: Trial | None = None) -> Json:
    """The transaction Bundle of one ResearchSubject of ``trial`` and its Provenance. ``conditional``: the
    subject by conditional update on its identifier (``fullUrl`` a ``urn:uuid`` the Provenance targets); else
    by id with If-Match when ``current`` is known, or created (POST)."""
    full_url = f"urn:uuid:{uuid.uuid4()}"
    body = copy.deepcopy(subject)
    if conditional:
        request: Json = {"method": "PUT", "url": f"ResearchSubject?{identifier_query(patient_id, trial)}"}
        target = full_url
    elif current is not None:
        body["id"] = str(current["id"])
        full_url = f"{client.base_url}/ResearchSubject/{body['id']}"
        request = {"method": "PUT", "url": f"ResearchSubject/{body['id']}"}
        if _version(current):
            request["ifMatch"] = weak_etag(str(_version(current)))
        target = f"ResearchSubject/{body['id']}"
    else:
        request = {"method": "POST", "url": "ResearchSubject"}
        target = full_url
    prov = provenance([target], "prescreen", recorded, entities, trial)
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": full_url, "resource": body, "request": request},
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": prov, "request": {"method": "POST", "url": "Provenance"}},
    ]}


def _subject_transaction(client: FhirClient, subject: Json, patient_id: str, current: Json | None,
                         entities: list[str], clock: Callable[[], datetime], trial: Trial) -> Written:
    recorded = clock()
    bundle = subject_transaction(client, subject, patient_id, current, entities, recorded, trial=trial)
    validate_output(bundle)
    try:
        result = client.transaction(bundle)
    except ServerRejected as exc:
        if not _not_supported(exc):
            raise
        log.info("ResearchSubject: conditional update in a transaction not supported, writing by id")
        bundle = subject_transaction(client, subject, patient_id, current, entities, recorded, conditional=False,
                                     trial=trial)
        validate_output(bundle)
        result = client.transaction(bundle)
    return _first_entry(result.resource)


def _first_entry(response: Json) -> Written:
    """The subject's reference and version from a transaction-response Bundle's first entry."""
    entries = response.get("entry") or []
    answer = (entries[0].get("response") or {}) if entries and isinstance(entries[0], dict) else {}
    location = str(answer.get("location") or "")
    rid = location_id(location.split("/_history/")[0]) if location else None
    if rid is None and isinstance(entries[0].get("resource") if entries else None, dict):
        rid = entries[0]["resource"].get("id")
    if not rid:
        raise ServerRejected("the transaction response names no ResearchSubject", status=200)
    version = parse_etag(answer.get("etag")) or (location.split("/_history/")[1] if "/_history/" in location
                                                   else None)
    return Written(f"ResearchSubject/{rid}", "written", version)


def _provenance(client: FhirClient, ref: str, version: str | None, activity: str, entities: list[str],
                clock: Callable[[], datetime], trial: Trial | None) -> None:
    target = f"{ref}/_history/{version}" if version else ref
    prov = provenance([target], activity, clock(), entities, trial)
    validate_output(prov)
    client.create(prov)


def set_lifecycle_status(client: FhirClient, patient_id: str, status: str,
                         clock: Callable[[], datetime] = _now, trial: Trial | None = None) -> Written | None:
    """Move the patient's ResearchSubject in ``trial`` along its lifecycle (verdicts kept); None when there is
    none yet."""
    current = find_subject(client, patient_id, trial)
    if current is None:
        return None
    ref = f"ResearchSubject/{current['id']}"
    if current.get("status") == status:
        return Written(ref, "unchanged", _version(current))
    changed = {**current, "status": status}
    validate_output(changed)
    result = client.update(changed, if_match=_version(current))
    _provenance(client, ref, result.version_id, "lifecycle-update", [f"Patient/{patient_id}"], clock, trial)
    return Written(ref, "updated", result.version_id)


@dataclass(frozen=True)
class Publication:
    """What a pre-screen publication did: the subjects written, and how many were withheld per reason
    (``bridge.publish.policy``: ``diagnosis-not-met`` or a not-screened reason)."""

    written: list[Written]
    withheld: Mapping[str, int] = field(default_factory=dict)


def publish_prescreen(client: FhirClient, screenings: Iterable[Screening], options: RuleOptions,
                      not_screened: Iterable[NotScreened] = (), clock: Callable[[], datetime] = _now,
                      transaction: bool | None = None, trial: Trial | None = None) -> Publication:
    """Publish the ResearchSubjects the publication policy allows (``bridge.publish.policy.select``): a patient
    without the study's diagnosis is published only when the EHR already holds its ResearchSubject (looked up
    by identifier), and a patient of ``not_screened`` never. Each subject with its Provenance in one
    transaction where the server offers transactions (``transaction`` None: asked once), else two requests.
    The subjects are ``trial``'s (None: the shipped one), as the screenings were."""
    t = trial or load_trial()
    selection = select(screenings, lambda pid: find_subject(client, pid, t) is not None, not_screened)
    if selection.withheld:
        log.info("ResearchSubjects withheld by the publication policy: %s", selection.withheld_text())
    if selection.publish and transaction is None:
        transaction = offers_transaction(client)
    return Publication([publish_subject(client, s, options, clock, bool(transaction), t)
                        for s in selection.publish], dict(selection.withheld))


def publish_screenings(client: FhirClient, screenings: Iterable[Screening], options: RuleOptions,
                       clock: Callable[[], datetime] = _now, not_screened: Iterable[NotScreened] = (),
                       transaction: bool | None = None, trial: Trial | None = None) -> list[Written]:
    """``publish_prescreen``'s written subjects (the publication policy applies)."""
    return publish_prescreen(client, screenings, options, not_screened, clock, transaction, trial).written


__all__ = ["PRESCREEN_STATUSES", "Publication", "Written", "find_by_identifier", "find_by_url", "find_subject",
           "offers_search_param", "offers_transaction", "publish_assessment", "publish_conformance",
           "publish_prescreen", "publish_screenings", "publish_study", "publish_subject", "server_capabilities",
           "set_lifecycle_status", "subject_transaction", "upsert"]


def publish_assessment(client: FhirClient, doc: Json, as_of: date, comparators: str, cri_reading: str,
                       deceased: bool = False, clock: Callable[[], datetime] = _now,
                       trial: Trial | None = None) -> list[Written]:
    """One patient's assessment in ``trial`` (a ``patients[]`` item of the assess JSON): response Observations,
    the best response, AdverseEvents, and the ResearchSubject's lifecycle status."""
    from bridge.publish import outcomes  # local: outcomes pulls in the grading tables

    t = trial or load_trial()
    pid = str(doc["patient"]).removeprefix("Patient/")
    patient = [f"Patient/{pid}"]
    written = [upsert(client, outcomes.response_observation(pid, a, comparators, cri_reading, t),
                      "response-assessment", patient, clock, t) for a in doc.get("assessments") or []]
    best = outcomes.best_response_observation(pid, doc, as_of, t)
    if best is not None:
        written.append(upsert(client, best, "response-assessment", patient, clock, t))
    suspect = next((i.get("evidence") for i in doc.get("infusions") or []), None)
    written += [upsert(client, outcomes.adverse_event(pid, ae, suspect, t), "adverse-event-grading", patient,
                       clock, t) for ae in doc.get("adverseEvents") or []]
    status = set_lifecycle_status(client, pid, outcomes.lifecycle_status(doc, as_of, deceased), clock, t)
    return written + ([status] if status else [])
