"""The raw FHIR resources a registry package needs beside the assessment, grouped per patient.

Only three kinds are kept: the ``Patient`` (sex, birth year, deceased), its ``Consent`` resources (the consent
gate) and its ``MedicationAdministration`` resources (the product code of each infusion). References are
resolved like the normalizer does (relative, absolute or ``urn:uuid`` full URLs); a resource without a
resolvable patient is ignored. Everything else in the source is not read at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bridge.ingest.readers import Entry, Item
from bridge.normalize.fhirpath import ref_id

Json = dict[str, Any]
KEPT_TYPES = frozenset({"Patient", "Consent", "MedicationAdministration"})


@dataclass
class PatientRecords:
    """The raw resources of one patient that a package is built from (local ids; never sent as such)."""

    patient: Json | None = None
    consents: list[Json] = field(default_factory=list)
    administrations: list[Json] = field(default_factory=list)

    def administration(self, ref: str) -> Json | None:
        """The MedicationAdministration ``MedicationAdministration/<id>`` of this patient, if read."""
        return next((a for a in self.administrations if f"MedicationAdministration/{a.get('id')}" == ref), None)


def _aliases(entries: list[Entry]) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in entries:
        res = e.resource
        if e.full_url and e.full_url.startswith("urn:uuid:") and not isinstance(res.get("id"), str):
            res["id"] = e.full_url.removeprefix("urn:uuid:")
        if e.full_url and isinstance(res.get("id"), str):
            out[e.full_url] = f"{res['resourceType']}/{res['id']}"
    return out


def _owner(resource: Json, aliases: dict[str, str]) -> str | None:
    if resource["resourceType"] == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    field_name = "patient" if resource["resourceType"] == "Consent" else "subject"
    return ref_id(resource.get(field_name), "Patient", aliases)


def collect_records(items: Iterable[Item]) -> dict[str, PatientRecords]:
    """``{"Patient/<id>": PatientRecords}`` from the entries of a source (Skipped items are ignored)."""
    entries = [i for i in items if isinstance(i, Entry) and i.resource.get("resourceType") in KEPT_TYPES]
    aliases = _aliases(entries)
    out: dict[str, PatientRecords] = {}
    for e in entries:
        owner = _owner(e.resource, aliases)
        if owner is None:
            continue
        records = out.setdefault(f"Patient/{owner}", PatientRecords())
        _add(records, e.resource)
    return out


def _add(records: PatientRecords, resource: Json) -> None:
    kind = resource["resourceType"]
    if kind == "Patient":
        records.patient = resource
    elif kind == "Consent":
        records.consents.append(resource)
    else:
        records.administrations.append(resource)


__all__ = ["KEPT_TYPES", "PatientRecords", "collect_records"]
