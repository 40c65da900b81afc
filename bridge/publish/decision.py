"""Write the study team's actions back to the EHR (issue #17 item 3): the ResearchSubject and a Provenance naming
the person.

An action recorded by the coordinator page (``bridge.state.actions``) is written back by ``decision_writer``
(the page calls it with the action's ``seq`` right after recording it) or, when that failed or never ran, by
``write_back_pending`` (the service's worker monitor retries every pending write-back). For the patient's
ResearchSubject in the trial:

- the **status** is the decision's (``bridge.decisions.decision``: ``consented`` → screening, ``eligible`` →
  eligible, a screen failure → ineligible / not-registered), or — no status-setting action in effect, e.g.
  after an undo — the automated pre-screen status again; a subject past pre-screening (on-study, follow-up, …)
  keeps its status;
- the **decision extension** (``subject.DECISION_EXTENSION``) says what is in effect (the latest action, the
  status set, the investigator's judgement, a screen failure's reason coded in the trial's criteria system or
  the screen-failure-reason system, the note, when, by whom, the verdicts reviewed and ``changedSinceReview``);
  with nothing in effect any more the extension is removed;
- the **verdicts** are the patient's latest saved screening (the local state store), the investigator's
  judgement standing for ``exc-investigator`` (and so in the pre-screen status);
- one **Provenance** per action: target the ResearchSubject version written, activity ``team-<kind>``, agent
  the person (type ``author``, ``who.identifier`` = ``<USER_SYSTEM>|<user name>``, the role as text) beside
  the bridge (``assembler``), reason CLINTRCH plus the action's reason (coded) and note (text), policy the
  trial's rule set, ``occurredDateTime`` when the action was taken.

Idempotent: the subject is written only when its fingerprint changed, and the Provenance has an id derived from
the action's ``request_key`` (``provenance_id``), written by ``PUT`` (update as create) only when the server
does not hold it — writing the same action twice, or after a crash between the two writes, changes nothing
more. With an EHR (``ehr_base_url``) through the EHR client, recording what it returned in the store's
published index (served at ``/fhir``); without one through the local store (``bridge.localfhir``: the
published index under the same keys and local ids).

A patient without a ResearchSubject and whose screening the publication policy withholds
(``bridge.publish.policy``: no acute leukaemia) gets none: the action stays in the store's audit trail and is
marked written back (nothing on the EHR to update). Failures are recorded (``mark_writeback_failed``: the
error's class, never a body) and raised; the action stays pending for ``write_back_pending``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any, Protocol, cast

from bridge.client import FhirClient
from bridge.config import Settings
from bridge.decisions import ActionRecord, Decision, decision
from bridge.errors import StoreError
from bridge.evaluate.eligibility import Screening
from bridge.localfhir.record import checked, content_fingerprint, fingerprint, local_id, with_id
from bridge.model import Tri, Verdict
from bridge.publish.policy import publishable
from bridge.publish.provenance import provenance
from bridge.publish.publisher import _read_if_exists, _version, _write_by_identifier, find_subject
from bridge.publish.study import BRIDGE_BASE, criteria_system
from bridge.publish.subject import (
    FAILURE_REASON_SYSTEM,
    PRESCREEN_EXTENSION,
    SUBJECT_ID_SYSTEM,
    TeamDecision,
    identifier_query,
    reviewed_subject,
    subject_fingerprint,
    subject_identifier,
)
from bridge.publish.validate import validate_output
from bridge.state.actions import Actions
from bridge.state.published import PublishedIndex, PublishedRecord
from bridge.state.screenings import ScreeningRecord
from bridge.trial import Trial, load_trial

log = logging.getLogger("bridge.publish.decision")
USER_SYSTEM = f"{BRIDGE_BASE}/NamingSystem/user"  # the bridge's users (issue #17: names from configuration)
_RESULT_SYSTEM = f"{BRIDGE_BASE}/CodeSystem/criterion-result"  # a judgement: met / not-met
_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
Json = dict[str, Any]


class DecisionState(Actions, PublishedIndex, Protocol):
    """What the write-back reads and records: the actions, the published index, the patient's screening."""

    def screening(self, patient_id: str) -> ScreeningRecord | None: ...


# ---------------------------------------------------------------------------------------------- builders


def _instant(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def _reason_coding(reason: str, trial: Trial) -> tuple[str, str]:
    return (criteria_system(trial) if reason in trial.criterion_ids else FAILURE_REASON_SYSTEM), reason


def team_decision(d: Decision, trial: Trial) -> TeamDecision | None:
    """What a ResearchSubject carries of decision ``d`` (None: nothing in effect)."""
    last = d.last
    if last is None:
        return None
    reason = _reason_coding(d.failure_reason, trial) if d.failure_reason else None
    return TeamDecision(last.kind, _instant(last.at), last.user, last.verdicts_digest, d.status,
                        d.judgement.value if d.judgement is not None else None, reason, last.note or None)


def provenance_id(action: ActionRecord) -> str:
    """The Provenance id of an action: the same action always gives the same id (the write-back's idempotence)."""
    return "team-" + hashlib.sha256(f"{action.trial}|{action.request_key}".encode()).hexdigest()[:40]


def action_provenance(action: ActionRecord, target: str, trial: Trial) -> Json:
    """The Provenance of one action: the person as author (beside the bridge), its activity, reason and note."""
    base = provenance([target], f"team-{action.kind}", datetime.fromtimestamp(action.at, UTC),
                      [f"Patient/{action.patient_id}"], trial)
    person = {"type": {"coding": [{"system": _PARTICIPANT, "code": "author", "display": "Author"}]},
              "role": [{"text": action.role}],
              "who": {"identifier": {"system": USER_SYSTEM, "value": action.user}, "display": action.user}}
    why: Json = {}
    if action.reason:
        system, code = _reason_coding(action.reason, trial)
        why["coding"] = [{"system": system, "code": code}]
    if action.value:
        why["coding"] = [{"system": _RESULT_SYSTEM, "code": action.value}]
    if action.note:
        why["text"] = action.note
    body = {**base, "id": provenance_id(action), "occurredDateTime": _instant(action.at),
            "agent": [person, *base["agent"]], "reason": [*base["reason"], *([why] if why else [])]}
    validate_output(body)
    return body


def _verdict(v: Json) -> Verdict:
    result = cast(Tri, v.get("result") if v.get("result") in ("met", "not-met") else "unknown")
    return Verdict(str(v.get("criterion")), result, str(v.get("reason") or ""),
                   tuple(str(e) for e in v.get("evidence") or []))


def _reading(current: Json | None) -> str:
    for ext in (current or {}).get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == PRESCREEN_EXTENSION:
            for part in ext.get("extension") or []:
                if isinstance(part, dict) and part.get("url") == "reading":
                    return str(part.get("valueCode"))
    return "organ-function"


def decided_subject(patient_id: str, record: ScreeningRecord, d: Decision, current: Json | None, trial: Trial,
                    study_ref: str | None = None) -> Json:
    """The patient's ResearchSubject with decision ``d`` written in (see the module docstring), validated."""
    status = current.get("status") if current is not None else None
    subject = reviewed_subject(patient_id, record.status, [_verdict(v) for v in record.verdicts],
                               date.fromisoformat(record.as_of), _reading(current), team_decision(d, trial),
                               str(status) if status else None, trial, study_ref, by_team=True)
    validate_output(subject)
    return subject


# ---------------------------------------------------------------------------------------------- writing


def _action(state: DecisionState, trial: Trial, seq: int) -> ActionRecord:
    found = next((a for a in state.all_actions(trial.id) if a.seq == seq), None)
    if found is None:
        raise StoreError(f"action {seq} is not in the store for trial {trial.id}")
    return found


def _record(state: DecisionState, patient_id: str, trial: Trial) -> ScreeningRecord | None:
    record = state.screening(patient_id)
    return record if record is not None and record.trial in (trial.id, None) else None


def _withheld(patient_id: str, record: ScreeningRecord | None) -> bool:
    """No subject may be created: no saved screening, or the publication policy withholds it."""
    if record is None:
        return True
    return not publishable(Screening(f"Patient/{patient_id}", record.status,
                                     tuple(_verdict(v) for v in record.verdicts)))


class DecisionWriter:
    """Writes back actions of one trial, through an EHR client or, without one, the local store."""

    def __init__(self, state: DecisionState, trial: Trial, client: FhirClient | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.state, self.trial, self.client, self.clock = state, trial, client, clock

    def __call__(self, seq: int) -> None:
        action = _action(self.state, self.trial, seq)
        try:
            self.write(action)
        except Exception as exc:
            self.state.mark_writeback_failed(seq, type(exc).__name__)
            log.warning("write-back of action %d failed (%s)", seq, type(exc).__name__)
            raise
        self.state.mark_written_back(seq, self.clock())

    def write(self, action: ActionRecord) -> str | None:
        """Write the patient's subject and this action's Provenance; the subject's reference, or None when the
        patient has no subject and gets none."""
        pid = action.patient_id
        d = decision(self.state.actions(self.trial.id, pid))
        record = _record(self.state, pid, self.trial)
        if self.client is not None:
            return self._to_ehr(self.client, action, d, record)
        return self._to_local(action, d, record)

    # -- through the EHR

    def _to_ehr(self, client: FhirClient, action: ActionRecord, d: Decision,
                record: ScreeningRecord | None) -> str | None:
        pid = action.patient_id
        current = find_subject(client, pid, self.trial)
        if current is None and _withheld(pid, record):
            log.info("action %d: no ResearchSubject, none published for this patient: nothing to write", action.seq)
            return None
        if record is None:  # a subject the EHR holds, but no screening here to rebuild its verdicts from
            raise StoreError(f"action {action.seq}: no saved screening of the patient in the store")
        subject = decided_subject(pid, record, d, current, self.trial)
        if current is not None and subject_fingerprint(current) == subject_fingerprint(subject):
            ref, version = f"ResearchSubject/{current['id']}", _version(current)
        elif current is not None:
            result = client.update({**subject, "id": current["id"]}, if_match=_version(current))
            ref, version = f"ResearchSubject/{result.id}", result.version_id
        else:
            result = _write_by_identifier(client, subject, identifier_query(pid, self.trial), None)
            ref, version = f"ResearchSubject/{result.id}", result.version_id
        target = f"{ref}/_history/{version}" if version else ref
        prov = action_provenance(action, target, self.trial)
        if _read_if_exists(client, "Provenance", prov["id"]) is None:
            client.update(prov)  # by its own id: update as create, never a duplicate
        self._remember(client, pid, ref)
        return ref

    def _remember(self, client: FhirClient, patient_id: str, ref: str) -> None:
        """Keep the published index (served at /fhir) in step with the EHR's subject."""
        rtype, _, rid = ref.partition("/")
        resource = client.read(rtype, rid).resource
        system, value = subject_identifier(patient_id, self.trial)
        self.state.put_published(PublishedRecord(f"ResearchSubject|{system}|{value}", rtype, rid,
                                                 subject_fingerprint(resource), _version(resource), resource,
                                                 self.clock()))

    # -- through the local store

    def _to_local(self, action: ActionRecord, d: Decision, record: ScreeningRecord | None) -> str | None:
        pid = action.patient_id
        system, value = subject_identifier(pid, self.trial)
        key = f"ResearchSubject|{system}|{value}"
        held = self.state.get_published(key)
        if held is None and _withheld(pid, record):
            log.info("action %d: no ResearchSubject recorded for this patient: nothing to write", action.seq)
            return None
        if record is None:
            raise StoreError(f"action {action.seq}: no saved screening of the patient in the store")
        rid = held.served_id if held is not None and held.served_id else local_id(SUBJECT_ID_SYSTEM, value)
        body = with_id(decided_subject(pid, record, d, held.resource if held else None, self.trial), rid)
        checked(body)
        now = self.clock()
        if held is None or held.fingerprint != fingerprint(body):
            self.state.put_published(PublishedRecord(key, "ResearchSubject", rid, fingerprint(body), None, body, now))
        stored = self.state.get_published(key)
        version = stored.version_id if stored is not None else None
        ref = f"ResearchSubject/{rid}"
        prov = action_provenance(action, f"{ref}/_history/{version}" if version else ref, self.trial)
        if self.state.get_published(f"Provenance|{prov['id']}") is None:
            self.state.put_published(PublishedRecord(f"Provenance|{prov['id']}", "Provenance", prov["id"],
                                                     content_fingerprint(prov), None, prov, now))
        return ref


def _client(settings: Settings, client: FhirClient | None) -> FhirClient | None:
    if client is not None:
        return client
    return FhirClient(settings.ehr_base_url, settings) if settings.ehr_base_url else None


def decision_writer(settings: Settings, state: DecisionState, trial: Trial | None = None,
                    clock: Callable[[], float] = time.time,
                    client: FhirClient | None = None) -> Callable[[int], None]:
    """``write_back(seq)`` for the coordinator page: write the action ``seq`` back (through ``client``, else an
    EHR client when ``ehr_base_url`` is set, else the local store), marking it written back; on failure it is
    marked failed (the error's class) and the exception raised — the action stays pending. Make one writer and
    keep it (it holds its EHR client), or pass the service's ``client``."""
    return DecisionWriter(state, trial or load_trial(settings.trial), _client(settings, client), clock)


def write_back_pending(settings: Settings, state: DecisionState, trial: Trial | None = None,
                       clock: Callable[[], float] = time.time, client: FhirClient | None = None,
                       limit: int = 100) -> tuple[int, int]:
    """Retry every pending write-back of ``trial`` (oldest first, at most ``limit``); one failure does not stop
    the others. Without ``client`` an EHR client is opened (``ehr_base_url``) only when something is pending,
    and closed. Returns (written, failed)."""
    t = trial or load_trial(settings.trial)
    pending: Sequence[ActionRecord] = [a for a in state.pending_writebacks(limit) if a.trial == t.id]
    if not pending:
        return 0, 0
    own = _client(settings, None) if client is None else None  # opened here: closed here
    writer = DecisionWriter(state, t, client or own, clock)
    failed = 0
    try:
        for action in pending:
            try:
                writer(action.seq)
            except Exception:  # noqa: BLE001 - recorded by the writer (mark_writeback_failed); the others go on
                failed += 1
    finally:
        if own is not None:
            own.close()
    return len(pending) - failed, failed


__all__ = ["USER_SYSTEM", "DecisionState", "DecisionWriter", "action_provenance", "decided_subject",
           "decision_writer", "provenance_id", "team_decision", "write_back_pending"]
