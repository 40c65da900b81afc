"""Assemble ``PatientFacts`` from a stream of source items: validate, normalize, group per patient.

Each resource of a type the bridge reads is checked against its R4B model (common shapes by a conservative fast
path that says valid only where the model does, ``bridge.normalize.fastvalid``); one that fails is skipped and
reported (file, entry, element path), and so is one whose normalization raises (a bug, reported with the
exception's type, never its message): no resource stops a run.

Versions (RULES.md §2). When the same resource (type and id) arrives more than once, the newest version wins
and only it contributes (facts, diagnoses, activity, demographics); ``version_key`` orders them by
``meta.versionId`` (numerically; a version id that is not an integer, or none, ranks below every integer),
then ``meta.lastUpdated`` as an instant (offsets honoured, to the nanosecond; a stamp that is not a valid
instant — no offset, a bare date, junk — counts as absent, and absent ranks below every instant), then status
(entered-in-error > corrected = amended > final = cancelled > registered = preliminary > any other or none),
then arrival order (the later wins). A version that was skipped (invalid) or names no patient still
supersedes the older ones: it contributes nothing, and neither do they. When the versions of one identity
name different patients, or two Patient resources share an id, a warning names the identity (never a value).
Raw resources are dropped as soon as they are normalized: memory holds facts, not JSON.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any

from bridge.errors import InvalidResource
from bridge.fhirmodels import parse_resource
from bridge.model import Entry, Item, NonClinical, PatientFacts, Skipped
from bridge.normalize.facts import READ_TYPES, Normalized, normalize, source_ref
from bridge.normalize.fastvalid import certainly_valid
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
    non_clinical: int = 0  # Bundle entries holding only a request or a response (counted in ``read``)

    def lines(self) -> list[str]:
        out = [f"skipped {s.where}: {s.reason}" + (f" at {s.expression}" if s.expression else "")
               for s in self.skipped]
        return out + [f"warning {w}" for w in self.warnings]

    @property
    def conflicts(self) -> int:
        """How many warnings are identity conflicts (the others are values not usable)."""
        return sum(1 for w in self.warnings if w.endswith(CONFLICT_SUFFIX))

    @property
    def no_patient_data(self) -> bool:
        """Nothing was read that could be a patient's data: every resource was of a type the bridge does not
        read (a ResearchStudy, a Subscription, a Bundle of requests only), and nothing was skipped."""
        return not self.skipped and self.read == self.ignored_types + self.non_clinical


# ------------------------------------------------------------------------------------------- versions
VersionKey = tuple[int, int, int, int]  # version id, lastUpdated (ns since the epoch, UTC), status rank, arrival
_NO_VERSION = -1
_NO_INSTANT = -(1 << 80)  # below any instant (year 1 is about -6.2e19 ns)
STATUS_RANK = {"entered-in-error": 4, "corrected": 3, "amended": 3, "final": 2, "cancelled": 2,
               "registered": 1, "preliminary": 1}
_VERSION_ID = re.compile(r"[0-9]{1,30}")
_INSTANT = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
                      r"(?:(Z)|([+-])([0-9]{2}):([0-9]{2}))")


@lru_cache(maxsize=4096)
def instant_ns(text: str) -> int | None:
    """A FHIR ``instant`` as nanoseconds since 1970-01-01T00:00Z (offset applied; digits past the nanosecond
    dropped), or None when it is not one (no offset, a bare date, out-of-range fields)."""
    m = _INSTANT.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    if hour > 23 or minute > 59 or second > 60:
        return None
    try:
        days = date(year, month, day).toordinal() - 719163  # date(1970, 1, 1).toordinal()
    except ValueError:
        return None
    offset = 0
    if m.group(8) is None:
        oh, om = int(m.group(10)), int(m.group(11))
        if oh > 14 or om > 59:
            return None
        offset = (oh * 3600 + om * 60) * (-1 if m.group(9) == "-" else 1)
    seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset
    fraction = int((m.group(7) or "")[:9].ljust(9, "0"))
    return seconds * 1_000_000_000 + fraction


def version_key(resource: dict[str, Any], order: int) -> VersionKey:
    """The order of the versions of one resource (RULES.md §2): the greatest key is the newest version."""
    meta = resource.get("meta")
    vid, stamp = _NO_VERSION, _NO_INSTANT
    if isinstance(meta, dict):
        raw_vid, raw_stamp = meta.get("versionId"), meta.get("lastUpdated")
        if isinstance(raw_vid, str) and _VERSION_ID.fullmatch(raw_vid):
            vid = int(raw_vid)
        if isinstance(raw_stamp, str):
            parsed = instant_ns(raw_stamp)
            stamp = _NO_INSTANT if parsed is None else parsed
    status = resource.get("status")
    return (vid, stamp, STATUS_RANK.get(status, 0) if isinstance(status, str) else 0, order)


CONFLICT_SUFFIX = "; the newest is used"


def conflict_warning(ref: str) -> str:
    """The warning for an identity conflict: it names the identity, never a value."""
    if ref.startswith("Patient/"):
        return f"{ref}: several Patient resources share this id{CONFLICT_SUFFIX}"
    return f"{ref}: its versions name different patients{CONFLICT_SUFFIX}"


@dataclass
class _Slot:
    version: VersionKey
    norm: Normalized


class PatientAssembler:
    """Accumulates normalized contributions; ``patients()`` returns the assembled PatientFacts."""

    def __init__(self, cmap: CodeMap, validate: bool = True) -> None:
        self.cmap = cmap
        self.validate = validate
        self.report = ReadReport()
        self.aliases: dict[str, str] = {}
        self._slots: dict[str, _Slot] = {}
        self._subjects: dict[str, set[str]] = {}  # refs seen more than once -> every patient their versions name
        self.conflicts: set[str] = set()  # identities whose versions name different patients; Patients sharing an id
        self._order = 0

    def add_items(self, items: Iterable[Item]) -> None:
        pending: list[Entry] = []
        for item in items:
            if isinstance(item, Skipped):
                self.report.read += 1
                self.report.skipped.append(item)
                continue
            if isinstance(item, NonClinical):
                self.report.read += 1
                self.report.non_clinical += 1
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

    def add(self, entry: Entry, order: int | None = None) -> None:
        """Validate, normalize and keep one resource; ``order`` is its arrival order (default: after the last)
        — the population path gives a line's position in the directory, so versions resolve as in one read."""
        if order is not None:
            self._order = order
        self.report.read += 1
        res = entry.resource
        if res.get("resourceType") not in READ_TYPES:
            self.report.ignored_types += 1
            return
        if not isinstance(res.get("id"), str):
            self.report.skipped.append(Skipped(entry.where, "resource has no id", f"{res['resourceType']}.id"))
            return
        ref, version = source_ref(res), version_key(res, self._order)
        self._order += 1
        norm = self._normalized(entry) if not self.validate or self.validated(entry) else None
        if norm is None:  # skipped: this version still supersedes the older ones, and contributes nothing
            self.keep(ref, version, Normalized(None), used=False)
            return
        if norm.patient_id is None:
            self.report.no_patient += 1
        self.keep(ref, version, norm, used=norm.patient_id is not None)

    def certainly_valid(self, resource: dict[str, Any]) -> bool:
        """The hook a subclass may widen: True only where the R4B model certainly accepts ``resource`` (a
        conservative fast path, ``bridge.normalize.fastvalid``); False when not sure, and ``validated`` then asks
        the model, which decides and reports the skip. Never True where the model says invalid, so verdicts and
        skip reports are the model's."""
        return certainly_valid(resource)

    def validated(self, entry: Entry) -> bool:
        """Whether ``entry`` passes its R4B model; a failure is reported as a skip (file, entry, element path)."""
        try:
            if self.certainly_valid(entry.resource):
                return True
        except Exception:  # noqa: BLE001, S110 - a bug in the fast path means "not sure": the model decides
            pass
        try:
            parse_resource(entry.resource, entry.where)
        except InvalidResource as exc:
            path = exc.issues[0].expression[0] if exc.issues and exc.issues[0].expression else None
            reason = f"{source_ref(entry.resource)} fails the R4B model"
            self.report.skipped.append(Skipped(entry.where, reason, path))
            return False
        except Exception as exc:  # noqa: BLE001 - a bug in validation must not stop the run: skip, say what
            self.report.skipped.append(Skipped(entry.where, _failed(entry.resource, "validated", exc)))
            return False
        return True

    def _normalized(self, entry: Entry) -> Normalized | None:
        try:
            norm = normalize(entry.resource, self.cmap, self.aliases)
        except Exception as exc:  # noqa: BLE001 - one resource's bug is reported as a skip, the rest goes on
            self.report.skipped.append(Skipped(entry.where, _failed(entry.resource, "read", exc)))
            return None
        return norm if norm is not None else Normalized(None)

    def kept(self) -> list[tuple[str, VersionKey, Normalized]]:
        """The newest version kept of each resource so far: ``(ref, version, normalized)``, in arrival order."""
        return [(ref, slot.version, slot.norm) for ref, slot in self._slots.items()]

    def keep(self, ref: str, version: VersionKey, norm: Normalized, used: bool = True) -> None:
        """Keep ``norm`` as version ``version`` of ``ref`` unless a newer one is kept (identity conflicts noted)."""
        current = self._slots.get(ref)
        if current is not None:
            self._conflict(ref, current.norm.patient_id, norm.patient_id)
        if current is None or version >= current.version:
            self._slots[ref] = _Slot(version, norm)
        if used:
            self.report.used += 1

    def _conflict(self, ref: str, old: str | None, new: str | None) -> None:
        if ref.startswith("Patient/"):
            self.conflicts.add(ref)
            return
        seen = self._subjects.setdefault(ref, set())
        seen.update(p for p in (old, new) if p is not None)
        if len(seen) > 1:
            self.conflicts.add(ref)

    def patients(self) -> list[PatientFacts]:
        """Each patient's facts from the newest version of each resource; warnings in reference order."""
        by_id: dict[str, PatientFacts] = {}
        for ref, slot in sorted(self._slots.items()):
            if ref in self.conflicts:
                self.report.warnings.append(conflict_warning(ref))
            norm = slot.norm
            if norm.patient_id is None:  # skipped, or names no patient: the newest version contributes nothing
                continue
            pf = by_id.setdefault(norm.patient_id, PatientFacts(norm.patient_id))
            _merge(pf, norm)
            self.report.warnings.extend(norm.problems)
        return [by_id[k] for k in sorted(by_id)]


def describe_exception(exc: BaseException) -> str:
    """An unexpected exception as a message may show it: its type and where it was raised (file name and
    line), never its text, which may quote a patient's value."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return type(exc).__name__
    name = tb.tb_frame.f_code.co_filename.replace("\\", "/").rsplit("/", 1)[-1]
    return f"{type(exc).__name__} at {name}:{tb.tb_lineno}"


def _failed(resource: dict[str, Any], what: str, exc: Exception) -> str:
    """A skip reason for an unexpected exception: the resource, the exception's type and where it was raised."""
    return f"{source_ref(resource)} could not be {what} ({describe_exception(exc)}; a bug: please report it)"


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


__all__ = ["CONFLICT_SUFFIX", "STATUS_RANK", "PatientAssembler", "ReadReport", "VersionKey", "assemble",
           "conflict_warning", "describe_exception", "instant_ns", "version_key"]
