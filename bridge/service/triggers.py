"""What makes the bridge re-screen a patient, decided from a *digest* of the changed resource.

A ``Digest`` keeps only what the decision needs — type, id, version key, patient id, status, encounter
class codes and the (system, code) pairs of ``code`` — never a value, a name or an identifier. It is what
the inbox stores for a full-resource notification, so no resource body is kept.

Rules (issue #4):

* an ``Encounter`` for an admission — class ``IMP`` / ``ACUTE`` / ``NONAC`` (v3-ActCode) and status
  ``in-progress`` / ``arrived`` — re-screens its patient and makes the patient *known*;
* a ``Condition`` whose code maps to a condition concept, or an ``Observation`` whose code maps to an
  observation concept (``bridge.normalize.mappings.CodeMap``), re-screens its patient when the patient is
  already known;
* anything else changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from bridge.errors import InputError, Issue
from bridge.normalize.mappings import CodeMap

ADMISSION_CLASSES = frozenset({"IMP", "ACUTE", "NONAC"})
ADMISSION_STATUSES = frozenset({"in-progress", "arrived"})
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
TRIGGER_TYPES = ("Encounter", "Condition", "Observation")
SUBJECT_ELEMENTS = ("subject", "patient")
MAX_CODINGS = 50
RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


@dataclass(frozen=True)
class Digest:
    """The decision-relevant skeleton of one resource version."""

    resource_type: str
    resource_id: str
    version_key: str
    patient_id: str | None = None
    status: str | None = None
    classes: tuple[str, ...] = ()
    codings: tuple[tuple[str, str], ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"type": self.resource_type, "id": self.resource_id, "version": self.version_key,
                "patient": self.patient_id, "status": self.status, "classes": list(self.classes),
                "codings": [list(c) for c in self.codings]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Digest:
        return cls(data["type"], data["id"], data["version"], data.get("patient"), data.get("status"),
                   tuple(data.get("classes") or ()), tuple((s, c) for s, c in data.get("codings") or ()))


@dataclass(frozen=True)
class Decision:
    rescreen: str | None = None
    known: str | None = None
    reason: str = "not-relevant"  # an id-like word: it goes into the logs


def invalid(path: str, message: str, code: str = "structure") -> InputError:
    """An ``InputError`` with one issue at ``path`` (the message names elements, never values)."""
    return InputError(message, issues=[Issue(code, message, (path,))])


def reference_parts(reference: str) -> tuple[str, str] | None:
    """(type, id) of a literal reference: relative, absolute, with or without ``_history``."""
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) < 2 or not RESOURCE_TYPE.match(parts[-2]) or not FHIR_ID.match(parts[-1]):
        return None
    return parts[-2], parts[-1]


def patient_of(node: Any) -> str | None:
    """The patient id of a Reference element that points to a Patient, else None."""
    ref = node.get("reference") if isinstance(node, dict) else None
    found = reference_parts(ref) if isinstance(ref, str) else None
    return found[1] if found and found[0] == "Patient" else None


def version_key(resource: dict[str, Any]) -> str:
    """``Type/id/_history/v``; else ``Type/id@lastUpdated``; else ``Type/id#<hash of the content>``."""
    base = f"{resource['resourceType']}/{resource['id']}"
    meta: dict[str, Any] = resource["meta"] if isinstance(resource.get("meta"), dict) else {}
    if isinstance(meta.get("versionId"), str) and meta["versionId"]:
        return f"{base}/_history/{meta['versionId']}"
    if isinstance(meta.get("lastUpdated"), str) and meta["lastUpdated"]:
        return f"{base}@{meta['lastUpdated']}"
    content = json.dumps(resource, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return f"{base}#{hashlib.sha256(content).hexdigest()[:32]}"


def check_identity(resource: Any, root: str) -> tuple[str, str]:
    """The (type, id) of a resource body, or an ``InputError`` naming the element that is wrong."""
    if not isinstance(resource, dict):
        raise invalid(root, "expected a FHIR resource (a JSON object)")
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not RESOURCE_TYPE.match(rtype):
        raise invalid(f"{root}.resourceType", "resourceType is missing or not a FHIR resource type")
    rid = resource.get("id")
    if not isinstance(rid, str) or not FHIR_ID.match(rid):
        raise invalid(f"{root}.id", "id is missing or not a valid FHIR id")
    return rtype, rid


def _subject(resource: dict[str, Any], rtype: str, rid: str, root: str) -> str | None:
    if rtype == "Patient":
        return rid
    for element in SUBJECT_ELEMENTS:
        node = resource.get(element)
        if node is not None and not isinstance(node, dict):
            raise invalid(f"{root}.{element}", f"{element} must be a Reference")
        if node is not None:
            return patient_of(node)
    return None


def _classes(resource: dict[str, Any]) -> tuple[str, ...]:
    """Encounter.class codes (R4: one Coding; tolerate a list) of v3-ActCode or without a system."""
    raw = resource.get("class")
    codings = raw if isinstance(raw, list) else [raw]
    return tuple(sorted({c["code"] for c in codings if isinstance(c, dict) and isinstance(c.get("code"), str)
                         and c.get("system") in (None, ACT_CODE)}))


def _codings(resource: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    pairs = {(c["system"], c["code"]) for c in codings or [] if isinstance(c, dict)
             and isinstance(c.get("system"), str) and isinstance(c.get("code"), str)}
    return tuple(sorted(pairs))[:MAX_CODINGS]


def digest(resource: Any, root: str | None = None) -> Digest:
    """Reduce a resource to its ``Digest``; ``root`` is its element path for error messages."""
    rtype, rid = check_identity(resource, root or "resource")
    root = root or rtype
    status = resource.get("status") if isinstance(resource.get("status"), str) else None
    return Digest(rtype, rid, version_key(resource), _subject(resource, rtype, rid, root), status,
                  _classes(resource) if rtype == "Encounter" else (), _codings(resource))


def is_admission(d: Digest) -> bool:
    return d.resource_type == "Encounter" and bool(ADMISSION_CLASSES & set(d.classes)) and (
        d.status in ADMISSION_STATUSES)


def maps_to_concept(d: Digest, cmap: CodeMap) -> bool:
    if d.resource_type == "Observation":
        return any(cmap.observation_concept(s, c) for s, c in d.codings)
    if d.resource_type == "Condition":
        return any(cmap.condition_concepts(s, c) for s, c in d.codings)
    return False


def decide(d: Digest, cmap: CodeMap, known: bool) -> Decision:
    """Whether this resource version re-screens its patient (and makes the patient known)."""
    if d.patient_id is None:
        return Decision(reason="no-patient-subject")
    if is_admission(d):
        return Decision(d.patient_id, d.patient_id, "admission")
    if not maps_to_concept(d, cmap):
        return Decision()
    if not known:
        return Decision(reason="patient-not-known")
    return Decision(d.patient_id, None, f"mapped-{d.resource_type.lower()}")


__all__ = [
    "ADMISSION_CLASSES",
    "ADMISSION_STATUSES",
    "TRIGGER_TYPES",
    "Decision",
    "Digest",
    "check_identity",
    "decide",
    "digest",
    "invalid",
    "is_admission",
    "maps_to_concept",
    "patient_of",
    "reference_parts",
    "version_key",
]
