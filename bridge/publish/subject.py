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

``verdicts_from_subject`` reads it back; ``subject_fingerprint`` hashes what matters for an update (status,
reading, rule set, verdicts — not the as-of date) so an unchanged subject is not rewritten. The resource holds
the patient only as a reference and inside the identifier value — no other patient data. Every function takes
the ``Trial`` (None: the shipped one): the identifier, the study reference, the criteria system and the rule set
are its.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import date
from typing import Any

from bridge.errors import InputError, InvalidResource, Issue, ValidationFailed
from bridge.fhirmodels import build
from bridge.model import Verdict
from bridge.publish.study import BRIDGE_BASE, criteria_system, study_logical_id
from bridge.trial import Trial, load_trial

SUBJECT_ID_SYSTEM = f"{BRIDGE_BASE}/NamingSystem/research-subject"
PRESCREEN_EXTENSION = f"{BRIDGE_BASE}/StructureDefinition/prescreen"
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
    """SHA-256 over status, study, individual, reading, rule set and verdicts — not the as-of date, also not
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
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


__all__ = [
    "PRESCREEN_EXTENSION",
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
