"""The ResearchSubject published per (study, patient), carrying the pre-screen verdicts (RULES.md §2, §6).

One ResearchSubject per (trial, patient), found again by a stable identifier
(``https://cd7-bridge.example.org/fhir/NamingSystem/research-subject|<trial id>-<patient id>``) so the
publisher updates it conditionally and never creates a duplicate. Its ``status`` is the RULES §2 code
(``candidate`` / ``potential-candidate`` / ``ineligible`` for a pre-screen, later lifecycle codes as they
come).

The per-criterion verdicts, the as-of date, the organ-function reading and the rule set travel in one complex
extension on the resource (``PRESCREEN_EXTENSION``)::

    extension[prescreen]
      asOf       valueDate      the as-of date of the evaluation
      reading    valueCode      organ-function | literal  (RULES §1.1)
      ruleset    valueString    the trial's ruleset version (it begins with the trial id)
      criterion  (0..*, in the trial file's order)
        id        valueCoding   <the trial's criteria system>|<criterion id>
        result    valueCode     met | not-met | unknown
        reason    valueString   the one-line reason (omitted when empty)
        evidence  valueReference (0..*) the resources used, e.g. Observation/abc

The study team's decision (issue #17) travels in a second complex extension (``DECISION_EXTENSION``), present
only while an action of the team is in effect::

    extension[study-team-decision]
      action              valueCoding    <study-team-action system>|<the latest action in effect>
      status              valueCode      the status the team set (absent: none; the pre-screen status applies)
      judgement           valueCode      met | not-met: the investigator's judgement of exc-investigator
      reason              valueCoding    the screen failure's reason: a criterion (the trial's criteria system)
                                         or declined | lost-to-contact | other (screen-failure-reason system)
      note                valueString    the latest action's note (absent when none)
      decidedAt           valueDateTime  when the latest action in effect was taken
      by                  valueString    the user name of who took it
      reviewedVerdicts    valueString    the digest of the verdicts it was taken on (``verdicts_digest``)
      changedSinceReview  valueBoolean   the pre-screen verdicts differ from those reviewed

``reviewed_subject`` builds a subject with the team's decision kept: its status (unless the subject is past
pre-screening), the investigator's judgement as the ``exc-investigator`` verdict (and so in the pre-screen
status), and ``changedSinceReview`` recomputed against the automated verdicts — an automated re-screen never
overwrites a human decision. ``decision_from_subject`` reads the extension back.

``verdicts_from_subject`` reads the verdicts back; ``subject_fingerprint`` hashes what matters for an update (status,
reading, rule set, verdicts — not the as-of date) so an unchanged subject is not rewritten. The resource holds
the patient only as a reference and inside the identifier value — no other patient data. Every function takes
the ``Trial`` (None: the shipped one): the identifier, the study reference, the criteria system and the rule set
are its.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any, cast

from bridge.decisions import INVESTIGATOR_CRITERION, verdicts_digest
from bridge.errors import InputError, InvalidResource, Issue, ValidationFailed
from bridge.fhirmodels import build
from bridge.model import Tri, Verdict
from bridge.publish.study import BRIDGE_BASE, criteria_system, study_logical_id
from bridge.trial import Trial, load_trial

SUBJECT_ID_SYSTEM = f"{BRIDGE_BASE}/NamingSystem/research-subject"
PRESCREEN_EXTENSION = f"{BRIDGE_BASE}/StructureDefinition/prescreen"
DECISION_EXTENSION = f"{BRIDGE_BASE}/StructureDefinition/study-team-decision"
TEAM_ACTION_SYSTEM = f"{BRIDGE_BASE}/CodeSystem/study-team-action"
FAILURE_REASON_SYSTEM = f"{BRIDGE_BASE}/CodeSystem/screen-failure-reason"
# statuses a pre-screen may publish, and those the study team sets; any other (on-study, follow-up, …) is past
# pre-screening: neither a re-screen nor the team's decision moves it back
PRESCREEN_STATUSES = frozenset({"candidate", "potential-candidate", "ineligible", "eligible", "not-registered"})
TEAM_STATUSES = frozenset({"screening", "eligible", "ineligible", "not-registered"})
READINGS = ("organ-function", "literal")
RESULTS = ("met", "not-met", "unknown")

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_EXT = "ResearchSubject.extension[prescreen]"

Json = dict[str, Any]


# ---------------------------------------------------------------------------------------------- identity


def _checked_id(patient_id: str) -> str:
    if not isinstance(patient_id, str) or not _FHIR_ID.match(patient_id):
        issue = Issue("value", "not a FHIR id", ("Patient.id",))
        raise InputError("patient id is not a valid FHIR id", [issue])
    return patient_id


def subject_identifier(patient_id: str, trial: Trial | None = None) -> tuple[str, str]:
    """(system, value) of the ResearchSubject of ``patient_id`` in ``trial``: value ``<trial id>-<patient id>``."""
    return SUBJECT_ID_SYSTEM, f"{(trial or load_trial()).id}-{_checked_id(patient_id)}"


def identifier_query(patient_id: str, trial: Trial | None = None) -> str:
    """The conditional-update query (unencoded): ``identifier=<system>|<trial id>-<patient id>``."""
    system, value = subject_identifier(patient_id, trial)
    return f"identifier={system}|{value}"


def study_reference(trial: Trial | None = None) -> str:
    """``ResearchStudy/<logical id>`` of the trial's ResearchStudy."""
    return f"ResearchStudy/{study_logical_id(trial)}"


# ---------------------------------------------------------------------------------------------- build


def _criterion_extension(v: Verdict, system: str) -> Json:
    parts: list[Json] = [
        {"url": "id", "valueCoding": {"system": system, "code": v.criterion}},
        {"url": "result", "valueCode": v.result},
    ]
    if v.reason:
        parts.append({"url": "reason", "valueString": v.reason})
    parts += [{"url": "evidence", "valueReference": {"reference": ref}} for ref in v.evidence]
    return {"url": "criterion", "extension": parts}


def _ordered(verdicts: Iterable[Verdict], ids: tuple[str, ...]) -> list[Verdict]:
    """The verdicts in the trial's order (``ids``); unknown or repeated criteria and bad results are our own bug."""
    by_id: dict[str, Verdict] = {}
    issues = []
    for i, v in enumerate(verdicts):
        where = (f"{_EXT}.criterion[{i}]",)
        if v.criterion not in ids or v.criterion in by_id:
            issues.append(Issue("invalid", "unknown or repeated criterion id", where))
        elif v.result not in RESULTS:
            issues.append(Issue("code-invalid", "result is not met, not-met or unknown", where))
        by_id.setdefault(v.criterion, v)
    if issues:
        raise ValidationFailed("ResearchSubject verdicts are inconsistent", issues)
    return [by_id[c] for c in ids if c in by_id]


def prescreen_extension(verdicts: Iterable[Verdict], as_of: date, organ_reading: str,
                        trial: Trial | None = None) -> Json:
    """The complex extension carrying as-of date, reading, the trial's rule set and the per-criterion verdicts."""
    t = trial or load_trial()
    if organ_reading not in READINGS:
        raise ValidationFailed("unknown organ-function reading", [Issue("code-invalid", "unknown reading",
                                                                          (f"{_EXT}.reading",))])
    head: list[Json] = [
        {"url": "asOf", "valueDate": as_of.isoformat()},
        {"url": "reading", "valueCode": organ_reading},
        {"url": "ruleset", "valueString": t.ruleset_version},
    ]
    system = criteria_system(t)
    criteria = [_criterion_extension(v, system) for v in _ordered(verdicts, t.criterion_ids)]
    return {"url": PRESCREEN_EXTENSION, "extension": head + criteria}


def research_subject(patient_id: str, status: str, verdicts: list[Verdict], as_of: date, organ_reading: str,
                     study_ref: str | None = None, trial: Trial | None = None) -> Json:
    """The ResearchSubject of ``patient_id`` for the trial's study, with its pre-screen verdicts, as R4 JSON.

    ``status`` is an R4 research-subject-status code (checked by ``validate_output`` before sending). No
    ``id`` is set: the server's id is kept by conditional update on the identifier. ``study_ref`` (None:
    ``ResearchStudy/<the trial's logical id>``) is where the study is held.
    """
    t = trial or load_trial()
    system, value = subject_identifier(patient_id, t)
    data = {
        "extension": [prescreen_extension(verdicts, as_of, organ_reading, t)],
        "identifier": [{"use": "usual", "system": system, "value": value}],
        "status": status,
        "study": {"reference": study_ref or study_reference(t)},
        "individual": {"reference": f"Patient/{patient_id}"},
    }
    return build("ResearchSubject", data)


# ---------------------------------------------------------------------------------------------- read back


def _bad(label: str, path: str, what: str) -> InvalidResource:
    return InvalidResource(f"{label}: {what} at {path}", [Issue("structure", what, (path,))])


def _prescreen(resource: Json) -> tuple[str, Json]:
    rid = resource.get("id")
    label = f"ResearchSubject/{rid}" if isinstance(rid, str) else "ResearchSubject"
    if resource.get("resourceType") != "ResearchSubject":
        raise _bad(label, "ResearchSubject.resourceType", "not a ResearchSubject")
    for ext in resource.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == PRESCREEN_EXTENSION:
            return label, ext
    raise _bad(label, "ResearchSubject.extension", "no pre-screen extension")


def _parts(ext: Json, url: str) -> list[Json]:
    return [e for e in ext.get("extension") or [] if isinstance(e, dict) and e.get("url") == url]


def _one(label: str, ext: Json, url: str, key: str, path: str) -> Any:
    found = [p.get(key) for p in _parts(ext, url)]
    if len(found) != 1 or found[0] is None:
        raise _bad(label, f"{path}.{url}", f"expected exactly one {key}")
    return found[0]


def _bridge_criteria_system(system: Any) -> bool:
    """A criteria code system of the bridge, of whichever trial (``<BRIDGE_BASE>/CodeSystem/<id>-criteria``)."""
    return isinstance(system, str) and system.startswith(f"{BRIDGE_BASE}/CodeSystem/") and system.endswith(
        "-criteria")


def _verdict(label: str, ext: Json, path: str, system: str | None) -> Verdict:
    coding = _one(label, ext, "id", "valueCoding", path)
    result = _one(label, ext, "result", "valueCode", path)
    known = isinstance(coding, dict) and (coding.get("system") == system if system is not None
                                          else _bridge_criteria_system(coding.get("system")))
    if not known or not isinstance(coding, dict) or result not in RESULTS:
        raise _bad(label, path, "criterion id or result not understood")
    reasons = [p.get("valueString") for p in _parts(ext, "reason")]
    evidence = tuple(_reference(p.get("valueReference")) for p in _parts(ext, "evidence"))
    if len(reasons) > 1 or not all(isinstance(e, str) for e in evidence):
        raise _bad(label, path, "reason or evidence not understood")
    return Verdict(str(coding.get("code")), result, str(reasons[0]) if reasons else "", evidence)


def _reference(value: Any) -> Any:
    return value.get("reference") if isinstance(value, dict) else None


def verdicts_from_subject(resource: Json, trial: Trial | None = None) -> tuple[date, str, list[Verdict]]:
    """(as-of date, organ-function reading, verdicts) read back from a ``research_subject`` resource of
    ``trial`` (None: the shipped one): a criterion coded in another system is not understood."""
    return _read_back(resource, criteria_system(trial))


def _read_back(resource: Json, system: str | None) -> tuple[date, str, list[Verdict]]:
    label, ext = _prescreen(resource)
    try:
        as_of = date.fromisoformat(str(_one(label, ext, "asOf", "valueDate", _EXT)))
    except ValueError:
        raise _bad(label, f"{_EXT}.asOf", "not a full date") from None
    reading = str(_one(label, ext, "reading", "valueCode", _EXT))
    verdicts = [_verdict(label, c, f"{_EXT}.criterion[{i}]", system) for i, c in enumerate(_parts(ext, "criterion"))]
    return as_of, reading, verdicts


def subject_fingerprint(resource: Json) -> str:
    """SHA-256 over status, study, individual, reading, rule set, verdicts and the team's decision (when there
    is one) — not the as-of date, also not
    where a reason quotes it ("age 34 on <as-of>"), so re-screening the same data on a later day changes
    nothing on the server; a reason that changes for another cause (the age itself, a new value) still does.
    Any trial's subject: its rule set is in the payload, and its criteria may be coded in any trial's system."""
    _, ext = _prescreen(resource)
    as_of, reading, verdicts = _read_back(resource, None)
    stamp = as_of.isoformat()
    payload = {
        "status": resource.get("status"),
        "study": (resource.get("study") or {}).get("reference"),
        "individual": (resource.get("individual") or {}).get("reference"),
        "reading": reading,
        "ruleset": [p.get("valueString") for p in _parts(ext, "ruleset")],
        "verdicts": [[v.criterion, v.result, v.reason.replace(stamp, "<as-of>"), list(v.evidence)] for v in verdicts],
    }
    team = next((e for e in resource.get("extension") or [] if isinstance(e, dict)
                 and e.get("url") == DECISION_EXTENSION), None)
    if team is not None:  # only when present: the fingerprint of an undecided subject is as it always was
        payload["decision"] = team
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------- the team's decision


@dataclass(frozen=True)
class TeamDecision:
    """The study team's decision as a ResearchSubject carries it (see the module docstring). ``reason`` is a
    (system, code) pair; ``decided_at`` an R4 dateTime with its zone."""

    action: str
    decided_at: str
    by: str
    reviewed: str
    status: str | None = None
    judgement: str | None = None
    reason: tuple[str, str] | None = None
    note: str | None = None
    changed: bool = False


def decision_extension(d: TeamDecision) -> Json:
    """The ``study-team-decision`` extension of ``d``."""
    parts: list[Json] = [{"url": "action", "valueCoding": {"system": TEAM_ACTION_SYSTEM, "code": d.action}}]
    if d.status:
        parts.append({"url": "status", "valueCode": d.status})
    if d.judgement:
        parts.append({"url": "judgement", "valueCode": d.judgement})
    if d.reason:
        parts.append({"url": "reason", "valueCoding": {"system": d.reason[0], "code": d.reason[1]}})
    if d.note:
        parts.append({"url": "note", "valueString": d.note})
    parts += [{"url": "decidedAt", "valueDateTime": d.decided_at}, {"url": "by", "valueString": d.by},
              {"url": "reviewedVerdicts", "valueString": d.reviewed},
              {"url": "changedSinceReview", "valueBoolean": d.changed}]
    return {"url": DECISION_EXTENSION, "extension": parts}


def _value(ext: Json, url: str, key: str) -> Any:
    found = [p.get(key) for p in _parts(ext, url)]
    return found[0] if len(found) == 1 else None


def decision_from_subject(resource: Json) -> TeamDecision | None:
    """The team's decision a ResearchSubject carries, or None (no extension, or one not understood: then the
    subject is treated as undecided, and the next write-back puts it right)."""
    ext = next((e for e in resource.get("extension") or [] if isinstance(e, dict)
                and e.get("url") == DECISION_EXTENSION), None)
    if ext is None:
        return None
    action, reason = _value(ext, "action", "valueCoding"), _value(ext, "reason", "valueCoding")
    at, by, reviewed = (_value(ext, u, "valueDateTime" if u == "decidedAt" else "valueString")
                        for u in ("decidedAt", "by", "reviewedVerdicts"))
    if not isinstance(action, dict) or not all(isinstance(x, str) for x in (at, by, reviewed)):
        return None
    pair = (str(reason.get("system")), str(reason.get("code"))) if isinstance(reason, dict) else None
    return TeamDecision(str(action.get("code")), str(at), str(by), str(reviewed), _value(ext, "status", "valueCode"),
                        _value(ext, "judgement", "valueCode"), pair, _value(ext, "note", "valueString"),
                        _value(ext, "changedSinceReview", "valueBoolean") is True)


def judged(verdicts: Sequence[Verdict], judgement: str | None, decided_at: str | None = None) -> list[Verdict]:
    """The verdicts with ``exc-investigator`` replaced by the investigator's judgement (met / not-met) when one
    is in effect; unchanged otherwise."""
    if judgement is None:
        return list(verdicts)
    when = f" recorded {decided_at[:10]}" if decided_at else ""
    result = cast(Tri, judgement)  # met / not-met, checked when the action was recorded (check_action)
    return [replace(v, result=result, reason=f"investigator's judgement{when}", evidence=())
            if v.criterion == INVESTIGATOR_CRITERION else v for v in verdicts]


def automated_digest(verdicts: Iterable[Verdict]) -> str:
    """``verdicts_digest`` of a screening's own (automated) verdicts: what an action is taken on."""
    return verdicts_digest({"criterion": v.criterion, "result": v.result} for v in verdicts)


def judged_status(status: str, decision: TeamDecision | None, trial: Trial) -> str:
    """The pre-screen status with the investigator's judgement counted: ``exc-investigator`` is advisory (never
    counted automatically, RULES §2), but a judgement that the exclusion is met makes the patient ineligible."""
    if decision is None or decision.judgement is None:
        return status
    wanted = "met" if trial.criterion(INVESTIGATOR_CRITERION).kind == "inclusion" else "not-met"
    return status if decision.judgement == wanted else "ineligible"


def subject_status(current: str | None, team: str | None, automated: str, by_team: bool = False) -> str:
    """The status to publish: a subject past pre-screening keeps its status; else the team's, else the
    pre-screen's. Only the team's own write-back (``by_team``) moves a subject out of a status the team sets
    (``screening`` back to the pre-screen status after an undo); for a re-screen ``screening`` is past
    pre-screening, as it always was."""
    settled = PRESCREEN_STATUSES | TEAM_STATUSES if by_team else PRESCREEN_STATUSES
    if current is not None and current not in settled:
        return current
    return team or automated


def reviewed_subject(patient_id: str, automated_status: str, verdicts: Sequence[Verdict], as_of: date,
                     organ_reading: str, decision: TeamDecision | None, current_status: str | None,
                     trial: Trial | None = None, study_ref: str | None = None, by_team: bool = False) -> Json:
    """The ResearchSubject of an automated screening (``automated_status``, ``verdicts``) with the team's
    ``decision`` kept: the judgement as the exc-investigator verdict, the pre-screen status recomputed with it
    (``overall_status``, then ``judged_status``: a judgement that the exclusion is met makes it ineligible),
    the team's status (``subject_status``), and the decision extension with ``changedSinceReview`` set when
    the automated verdicts' digest differs from the one the decision was taken on. Without a decision it is
    ``research_subject`` with ``subject_status``."""
    from bridge.evaluate.eligibility import overall_status  # here: the builders above need no rules

    t = trial or load_trial()
    effective = judged(verdicts, decision.judgement if decision else None,
                       decision.decided_at if decision else None)
    if effective != list(verdicts):
        automated_status = judged_status(overall_status(tuple(effective), t), decision, t)
    status = subject_status(current_status, decision.status if decision else None, automated_status, by_team)
    subject = research_subject(patient_id, status, effective, as_of, organ_reading, study_ref, t)
    if decision is not None:
        kept = replace(decision, changed=automated_digest(verdicts) != decision.reviewed)
        subject = build("ResearchSubject", {**subject, "extension": [*subject["extension"],
                                                                       decision_extension(kept)]})
    return subject


__all__ = [
    "DECISION_EXTENSION",
    "FAILURE_REASON_SYSTEM",
    "PRESCREEN_EXTENSION",
    "PRESCREEN_STATUSES",
    "TEAM_ACTION_SYSTEM",
    "TEAM_STATUSES",
    "TeamDecision",
    "automated_digest",
    "decision_extension",
    "decision_from_subject",
    "judged",
    "judged_status",
    "reviewed_subject",
    "subject_status",
    "READINGS",
    "RESULTS",
    "SUBJECT_ID_SYSTEM",
    "identifier_query",
    "prescreen_extension",
    "research_subject",
    "subject_fingerprint",
    "study_reference",
    "subject_identifier",
    "verdicts_from_subject",
]
