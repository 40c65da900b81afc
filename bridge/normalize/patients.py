"""Assemble ``PatientFacts`` from a stream of source items: validate, normalize, group per patient.

Each resource of a type the bridge reads is checked against its R4B model; one that fails is skipped and
reported (file, entry, element path). When the same resource (type and id) arrives more than once, the
newest version wins (``meta.versionId``, then ``meta.lastUpdated``, then arrival order), so an amended or
corrected result supersedes its preliminary version. Raw resources are dropped as soon as they are
normalized: memory holds facts, not JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import InvalidResource
from bridge.fhirmodels import parse_resource
from bridge.ingest.readers import Entry, Item, Skipped
from bridge.model import PatientFacts
from bridge.normalize.facts import READ_TYPES, Normalized, normalize, source_ref
from bridge.normalize.mappings import CodeMap


@dataclass
class ReadReport:
    """What was read, used and skipped — counts and locations, never content."""

    read: int = 0
    used: int = 0
    ignored_types: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    no_patient: int = 0

    def lines(self) -> list[str]:
        out = [f"skipped {s.where}: {s.reason}" + (f" at {s.expression}" if s.expression else "")
               for s in self.skipped]
        return out + [f"warning {w}" for w in self.warnings]


def _version_key(resource: dict[str, Any], order: int) -> tuple[int, str, int]:
    meta: dict[str, Any] = resource["meta"] if isinstance(resource.get("meta"), dict) else {}
    vid = str(meta.get("versionId") or "")
    return (int(vid) if vid.isdigit() else -1, str(meta.get("lastUpdated") or ""), order)


@dataclass
class _Slot:
    version: tuple[int, str, int]
    norm: Normalized


class PatientAssembler:
    """Accumulates normalized contributions; ``patients()`` returns the assembled PatientFacts."""

    def __init__(self, cmap: CodeMap, validate: bool = True) -> None:
        self.cmap = cmap
        self.validate = validate
        self.report = ReadReport()
        self.aliases: dict[str, str] = {}
        self._slots: dict[str, _Slot] = {}
        self._order = 0

    def add_items(self, items: Iterable[Item]) -> None:
        pending: list[Entry] = []
        for item in items:
            if isinstance(item, Skipped):
                self.report.read += 1
                self.report.skipped.append(item)
                continue
            self._alias(item)
            if item.full_url and item.full_url.startswith("urn:"):
                pending.append(item)  # references to it may come earlier in the Bundle
            else:
                self.add(item)
        for item in pending:
            self.add(item)

    def _alias(self, entry: Entry) -> None:
        res = entry.resource
        if entry.full_url and entry.full_url.startswith("urn:uuid:") and not isinstance(res.get("id"), str):
            res["id"] = entry.full_url.removeprefix("urn:uuid:")
        if entry.full_url and isinstance(res.get("id"), str):
            self.aliases[entry.full_url] = f"{res['resourceType']}/{res['id']}"

    def add(self, entry: Entry) -> None:
        self.report.read += 1
        res = entry.resource
        if res.get("resourceType") not in READ_TYPES:
            self.report.ignored_types += 1
            return
        if not isinstance(res.get("id"), str):
            self.report.skipped.append(Skipped(entry.where, "resource has no id", f"{res['resourceType']}.id"))
            return
        if self.validate and not self._valid(entry):
            return
        norm = normalize(res, self.cmap, self.aliases)
        if norm is None:
            return
        if norm.patient_id is None:
            self.report.no_patient += 1
            return
        self._keep(source_ref(res), _version_key(res, self._order), norm)
        self._order += 1

    def _valid(self, entry: Entry) -> bool:
        try:
            parse_resource(entry.resource, entry.where)
        except InvalidResource as exc:
            path = exc.issues[0].expression[0] if exc.issues and exc.issues[0].expression else None
            reason = f"{source_ref(entry.resource)} fails the R4B model"
            self.report.skipped.append(Skipped(entry.where, reason, path))
            return False
        return True

    def _keep(self, ref: str, version: tuple[int, str, int], norm: Normalized) -> None:
        current = self._slots.get(ref)
        if current is None or version >= current.version:
            self._slots[ref] = _Slot(version, norm)
        self.report.used += 1

    def patients(self) -> list[PatientFacts]:
        by_id: dict[str, PatientFacts] = {}
        for _ref, slot in sorted(self._slots.items()):
            norm = slot.norm
            assert norm.patient_id is not None
            pf = by_id.setdefault(norm.patient_id, PatientFacts(norm.patient_id))
            _merge(pf, norm)
            self.report.warnings.extend(norm.problems)
        return [by_id[k] for k in sorted(by_id)]


def _merge(pf: PatientFacts, norm: Normalized) -> None:
    if norm.demographics is not None:
        pf.birth_date = norm.demographics["birth_date"]
        pf.sex = norm.demographics["sex"]
        pf.deceased = norm.demographics["deceased"]
        pf.deceased_date = norm.demographics["deceased_date"]
        pf.animal = norm.demographics["animal"]
        pf.has_patient = True
    pf.facts.extend(norm.facts)
    pf.diagnoses.extend(norm.diagnoses)
    pf.infusions.extend(norm.infusions)
    pf.stays.extend(norm.stays)
    if norm.activity:
        pf.activity.add(norm.activity)


def assemble(items: Iterable[Item], cmap: CodeMap, validate: bool = True) -> tuple[list[PatientFacts], ReadReport]:
    asm = PatientAssembler(cmap, validate)
    asm.add_items(items)
    return asm.patients(), asm.report


__all__ = ["PatientAssembler", "ReadReport", "assemble"]
