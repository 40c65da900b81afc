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
from dataclasses import dataclass
from typing import Any

from bridge.normalize.mappings import CodeMap
from bridge.service.edges import (
    FHIR_ID,
    RESOURCE_TYPE,
    CodedResource,
    EncounterResource,
    Reference,
    Resource,
    invalid,
    parse_resource,
)

ADMISSION_CLASSES = frozenset({"IMP", "ACUTE", "NONAC"})
ADMISSION_STATUSES = frozenset({"in-progress", "arrived"})
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
TRIGGER_TYPES = ("Encounter", "Condition", "Observation")
MAX_CODINGS = 50


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


def reference_parts(reference: str) -> tuple[str, str] | None:
    """(type, id) of a literal reference: relative, absolute, with or without ``_history``."""
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    if len(parts) < 2 or not RESOURCE_TYPE.fullmatch(parts[-2]) or not FHIR_ID.fullmatch(parts[-1]):
        return None
    return parts[-2], parts[-1]


def patient_of(node: Any) -> str | None:
    """The patient id of a Reference element (a ``Reference`` or its JSON) that points to a Patient, else None."""
    ref = node.reference if isinstance(node, Reference) else (node.get("reference") if isinstance(node, dict)
                                                                   else None)
    found = reference_parts(ref) if isinstance(ref, str) else None
    return found[1] if found and found[0] == "Patient" else None


def version_key(resource: dict[str, Any], meta_of: Resource | None = None) -> str:
    """``Type/id/_history/v``; else ``Type/id@lastUpdated``; else ``Type/id#<hash of the content>``."""
    parsed = meta_of or parse_resource(resource, str(resource.get("resourceType") or "resource"))
    base = f"{parsed.resourceType}/{parsed.id}"
    meta = parsed.meta
    if meta is not None and meta.versionId:
        return f"{base}/_history/{meta.versionId}"
    if meta is not None and meta.lastUpdated:
        return f"{base}@{meta.lastUpdated}"
    content = json.dumps(resource, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return f"{base}#{hashlib.sha256(content).hexdigest()[:32]}"


def check_identity(resource: Any, root: str) -> tuple[str, str]:
    """The (type, id) of a resource body, or an ``InputError`` naming every element that is wrong."""
    parsed = parse_resource(resource, root)
    return parsed.resourceType, parsed.id


def _subject(resource: Resource) -> str | None:
    if resource.resourceType == "Patient":
        return resource.id
    node = resource.subject if resource.subject is not None else resource.patient
    return patient_of(node) if node is not None else None


def _classes(resource: Resource) -> tuple[str, ...]:
    """Encounter.class codes of v3-ActCode or without a system."""
    if not isinstance(resource, EncounterResource):
        return ()
    return tuple(sorted({c.code for c in resource.classes if c.code and c.system in (None, ACT_CODE)}))


def _codings(resource: Resource) -> tuple[tuple[str, str], ...]:
    if not isinstance(resource, CodedResource) or resource.code is None:
        return ()
    pairs = {(c.system, c.code) for c in resource.code.coding if c.system is not None and c.code is not None}
    return tuple(sorted(pairs))[:MAX_CODINGS]


def digest(resource: Any, root: str | None = None) -> Digest:
    """Reduce a resource to its ``Digest``; ``root`` is its element path for error messages."""
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    parsed = parse_resource(resource, root or (rtype if isinstance(rtype, str) else "resource"))
    return Digest(parsed.resourceType, parsed.id, version_key(resource, parsed), _subject(parsed), parsed.status,
                  _classes(parsed), _codings(parsed))


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
