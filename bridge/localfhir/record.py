"""Build what a publication would write and record it in the published index, without an EHR.

``LocalRecorder(index, trial, clock)`` records, each validated first (``validate_output``; exit 6 on our own
bug):

* ``study(organ_reading)`` — ``ResearchStudy/<logical id>`` (its enrollment Group is contained, as published);
* ``screenings(screenings, options, not_screened)`` — one ResearchSubject per patient the publication policy
  allows (``bridge.publish.policy.select``: the diagnosis is not ruled out, or the index already holds the
  patient's subject; never a patient who is not screened). As the publisher does, a subject past pre-screening
  keeps its lifecycle status and only its verdicts are refreshed, and a subject whose fingerprint (status,
  verdicts, reading, rule set — not the as-of date) is unchanged is left as it is;
* ``assessment(doc, as_of, comparators, cri_reading, deceased)`` — one patient of the assess JSON: response
  Observations, the best response, AdverseEvents, and the lifecycle status of the patient's ResearchSubject
  when the index holds one (as ``publish_assessment`` does on an EHR).

Every new version gets a Provenance (``activity`` as the publisher names it, target ``Type/id/_history/<v>``,
the trial's rule set as policy). Nothing changed, nothing written: a second identical run adds no resource,
no version and no Provenance.

Local ids (``local_id``): the resource's identifier value when it is a valid FHIR id (``<trial id>-p01``,
``<trial id>-p01-response-2026-07-10``), else ``sha256-`` and 48 hex digits of ``system|value``; the
ResearchStudy keeps its logical id; a Provenance is ``prov-`` and 40 hex digits of its activity and versioned
target. The same input gives the same ids on every machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from bridge.config import RuleOptions
from bridge.errors import ConfigError, InvalidResource
from bridge.evaluate.eligibility import Screening
from bridge.model import NotScreened
from bridge.publish.policy import select
from bridge.publish.provenance import provenance
from bridge.publish.study import research_study, study_logical_id
from bridge.publish.subject import decision_from_subject, reviewed_subject, subject_fingerprint, subject_identifier
from bridge.publish.validate import check_codes, schema_path, validate_output
from bridge.state.published import PublishedIndex, PublishedRecord
from bridge.trial import Trial, load_trial

log = logging.getLogger("bridge.localfhir")
Json = dict[str, Any]
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}", re.ASCII)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Recorded:
    """What happened to one resource in the index: ``created``, ``updated``, ``unchanged``, or ``kept`` (the
    index holds the copy an EHR returned, which a local build does not replace). ``reference`` is ``Type/id``
    as ``/fhir`` serves it."""

    reference: str
    outcome: str

    @property
    def resource_type(self) -> str:
        return self.reference.partition("/")[0]


@dataclass(frozen=True)
class LocalPublication:
    """What ``LocalRecorder.screenings`` did: the subjects recorded, and how many the policy withheld per
    reason (counts only)."""

    recorded: list[Recorded]
    withheld: Mapping[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- identity


def _first_identifier(resource: Json) -> Json | None:
    idents = resource.get("identifier")
    first = idents[0] if isinstance(idents, list) and idents else idents
    if isinstance(first, dict) and isinstance(first.get("system"), str) and isinstance(first.get("value"), str):
        return first
    return None


def record_key(resource: Json) -> str | None:
    """The index key of a resource: ``ResearchStudy|<id>`` (the worker's study key), ``<Type>|<system>|<value>``
    of its first identifier, else ``<Type>|<id>``; None when it has neither identifier nor id."""
    rtype, rid = resource.get("resourceType"), resource.get("id")
    ident = _first_identifier(resource)
    if rtype != "ResearchStudy" and ident is not None:
        return f"{rtype}|{ident['system']}|{ident['value']}"
    return f"{rtype}|{rid}" if isinstance(rid, str) and rid else None


def local_id(system: str, value: str) -> str:
    """The local id of the resource identified by ``system|value`` (see the module docstring)."""
    if _FHIR_ID.fullmatch(value):
        return value
    return "sha256-" + hashlib.sha256(f"{system}|{value}".encode()).hexdigest()[:48]


def _local_id_of(resource: Json) -> str:
    ident = _first_identifier(resource)
    if resource.get("resourceType") != "ResearchStudy" and ident is not None:
        return local_id(ident["system"], ident["value"])
    rid = resource.get("id")
    if not isinstance(rid, str) or not _FHIR_ID.fullmatch(rid):
        raise ValueError(f"{resource.get('resourceType')}: no identifier and no id to record it under")
    return rid


def content_fingerprint(resource: Json) -> str:
    """SHA-256 over the resource without ``id``, ``meta`` and ``text`` (what the publisher compares)."""
    body = {k: v for k, v in resource.items() if k not in ("id", "meta", "text")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def fingerprint(resource: Json) -> str:
    """The subject fingerprint for a ResearchSubject (the as-of date alone is no change), else — and for a
    subject without the pre-screen extension, as an EHR may hold one — the content's."""
    if resource.get("resourceType") == "ResearchSubject":
        try:
            return subject_fingerprint(resource)
        except InvalidResource:
            pass
    return content_fingerprint(resource)


def with_id(resource: Json, resource_id: str) -> Json:
    """``resource`` with ``id`` right after ``resourceType``."""
    rest = {k: v for k, v in resource.items() if k not in ("resourceType", "id")}
    return {"resourceType": resource["resourceType"], "id": resource_id, **rest}


# ---------------------------------------------------------------------------------------------- validation

_schema_missing_warned = False


def checked(resource: Json) -> None:
    """``validate_output`` (R4 JSON Schema and the bridge's code checks). Where the schema file is not found
    (no ``BRIDGE_FHIR_SCHEMA`` and no shared corpus beside the checkout) the code checks still run, and one
    warning says the schema check was left out — the local store never stops for a file only the tests need."""
    global _schema_missing_warned
    try:
        schema_path()
    except ConfigError:
        if not _schema_missing_warned:
            log.warning("the R4 JSON Schema is not available (set BRIDGE_FHIR_SCHEMA): resources recorded for "
                        "/fhir are checked by the bridge's code checks only")
            _schema_missing_warned = True
        check_codes(resource)
        return
    validate_output(resource)


# ---------------------------------------------------------------------------------------------- recorder


class LocalRecorder:
    """Records built resources in ``index`` under local ids (see the module docstring)."""

    def __init__(self, index: PublishedIndex, trial: Trial | None = None,
                 clock: Callable[[], datetime] = _now) -> None:
        self.index, self.clock = index, clock
        self.trial = trial or load_trial()
        self.provenances = 0  # Provenance resources recorded so far

    @property
    def study_reference(self) -> str:
        return f"ResearchStudy/{study_logical_id(self.trial)}"

    def study(self, organ_reading: str = "organ-function") -> Recorded:
        """The trial's ResearchStudy, its enrollment texts in ``organ_reading``."""
        return self.put(research_study(organ_reading=organ_reading, trial=self.trial), "study-publication", [])

    def ensure_study(self) -> Recorded:
        """The ResearchStudy as the index holds it, recorded (organ-function reading) only when it holds none: an
        assessment does not know the pre-screen's reading, so it never rewrites the study."""
        rid = study_logical_id(self.trial)
        current = self.index.get_published(f"ResearchStudy|{rid}")
        if current is not None and current.served_id:
            return Recorded(f"ResearchStudy/{current.served_id}", "unchanged")
        return self.study()

    def screenings(self, screenings: Iterable[Screening], options: RuleOptions,
                   not_screened: Iterable[NotScreened] = ()) -> LocalPublication:
        """The ResearchSubjects the publication policy allows, recorded (see the module docstring)."""
        selection = select(screenings, self.has_subject, not_screened)
        return LocalPublication([self.subject(s, options) for s in selection.publish], dict(selection.withheld))

    def has_subject(self, patient_id: str) -> bool:
        return self.index.get_published(_subject_key(patient_id, self.trial)) is not None

    def subject(self, screening: Screening, options: RuleOptions) -> Recorded:
        patient_id = screening.patient.removeprefix("Patient/")
        current = self.index.get_published(_subject_key(patient_id, self.trial))
        # past pre-screening: the lifecycle status kept; the study team's decision kept (never overwritten)
        decision = decision_from_subject(current.resource) if current is not None else None
        status = current.resource.get("status") if current is not None else None
        subject = reviewed_subject(patient_id, screening.status, screening.verdicts, options.as_of,
                                   options.organ_function_reading, decision, str(status) if status else None,
                                   self.trial, self.study_reference)
        return self.put(subject, "prescreen", [screening.patient])

    def assessment(self, doc: Json, as_of: date, comparators: str, cri_reading: str,
                   deceased: bool = False) -> list[Recorded]:
        """One patient of the assess JSON (a ``patients[]`` item), as ``publish_assessment`` writes it."""
        from bridge.publish import outcomes  # local: outcomes pulls in the grading tables

        pid = str(doc["patient"]).removeprefix("Patient/")
        patient = [f"Patient/{pid}"]
        recorded = [self.put(outcomes.response_observation(pid, a, comparators, cri_reading, self.trial),
                             "response-assessment", patient) for a in doc.get("assessments") or []]
        best = outcomes.best_response_observation(pid, doc, as_of, self.trial)
        if best is not None:
            recorded.append(self.put(best, "response-assessment", patient))
        suspect = next((i.get("evidence") for i in doc.get("infusions") or []), None)
        recorded += [self.put(outcomes.adverse_event(pid, ae, suspect, self.trial), "adverse-event-grading", patient)
                     for ae in doc.get("adverseEvents") or []]
        status = self.lifecycle(pid, outcomes.lifecycle_status(doc, as_of, deceased))
        return recorded + ([status] if status else [])

    def lifecycle(self, patient_id: str, status: str) -> Recorded | None:
        """Move the patient's recorded ResearchSubject to ``status`` (None when the index holds none)."""
        current = self.index.get_published(_subject_key(patient_id, self.trial))
        if current is None:
            return None
        return self.put({**current.resource, "status": status}, "lifecycle-update", [f"Patient/{patient_id}"])

    def put(self, resource: Json, activity: str, entities: list[str]) -> Recorded:
        """Record ``resource`` under its key and local id: a new version (with its Provenance) when its
        fingerprint changed, nothing otherwise; a copy an EHR returned is kept as it is."""
        rtype = str(resource["resourceType"])
        key = record_key(resource) or f"{rtype}|{_local_id_of(resource)}"
        current = self.index.get_published(key)
        if current is not None and current.version is not None and current.served_id:
            return Recorded(f"{rtype}/{current.served_id}", "kept")
        fp = fingerprint(resource)
        if current is not None and current.served_id and current.fingerprint == fp:
            return Recorded(f"{rtype}/{current.served_id}", "unchanged")
        rid = current.served_id if current is not None and current.served_id else _local_id_of(resource)
        body = with_id({k: v for k, v in resource.items() if k != "meta"}, rid)
        checked(body)
        when = self.clock()
        self.index.put_published(PublishedRecord(key, rtype, rid, fp, None, body, when.timestamp()))
        stored = self.index.get_published(key)
        version = stored.version_id if stored is not None else None
        target = f"{rtype}/{rid}" + (f"/_history/{version}" if version is not None else "")
        self._provenance(target, activity, entities, when)
        return Recorded(f"{rtype}/{rid}", "created" if current is None else "updated")

    def _provenance(self, target: str, activity: str, entities: list[str], when: datetime) -> None:
        prov_id = "prov-" + hashlib.sha256(f"{activity}|{target}".encode()).hexdigest()[:40]
        key = f"Provenance|{prov_id}"
        if self.index.get_published(key) is not None:
            return
        body = with_id(provenance([target], activity, when, entities, self.trial), prov_id)
        checked(body)
        self.index.put_published(PublishedRecord(key, "Provenance", prov_id, content_fingerprint(body), None, body,
                                                 when.timestamp()))
        self.provenances += 1


def _subject_key(patient_id: str, trial: Trial) -> str:
    system, value = subject_identifier(patient_id, trial)
    return f"ResearchSubject|{system}|{value}"


def summary(recorded: Iterable[Recorded], provenances: int = 0) -> str:
    """``N resources (k ResearchSubject, ...): a created, b updated, c unchanged[, d kept as an EHR returned
    them]; p new Provenance``."""
    items = list(recorded)
    outcomes = Counter(r.outcome for r in items)
    types = Counter(r.resource_type for r in items)
    by_type = ", ".join(f"{n} {t}" for t, n in sorted(types.items()))
    text = ", ".join(f"{outcomes[k]} {k}" for k in ("created", "updated", "unchanged"))
    if outcomes["kept"]:
        text += f", {outcomes['kept']} kept as an EHR returned them"
    head = f"{len(items)} resources ({by_type}): {text}" if items else "no resources"
    return f"{head}; {provenances} new Provenance"


__all__ = ["LocalPublication", "LocalRecorder", "Recorded", "checked", "content_fingerprint", "fingerprint",
           "local_id", "record_key", "summary", "with_id"]
