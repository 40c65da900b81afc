"""The per-patient assembler, used piecewise: a chunk's resources in a worker, a patient's groups at the end.

Chunks are assembled in different processes; giving each resource the order it has in one sequential read
(file index, byte offset) makes "the newest version wins" resolve as in the per-patient path, and a worker
packs what it kept per patient for the spill file.
"""

from __future__ import annotations

import pickle
from array import array
from typing import Any

from bridge.model import Entry, Skipped
from bridge.normalize.facts import Normalized
from bridge.normalize.patients import PatientAssembler, VersionKey
from bridge.population import spill, validation
from bridge.population.spill import Group, Problems


class PositionedAssembler(PatientAssembler):
    """The per-patient assembler, with a line's position in the directory as its arrival order; a resource the
    fast path is not sure of is validated with its complex elements remembered (``validation.valid``: the same
    answer) before the ordinary way — so a skip is reported exactly as by the per-patient path."""

    def certainly_valid(self, resource: dict[str, Any]) -> bool:
        return super().certainly_valid(resource) or validation.valid(resource)

    def add_at(self, entry: Entry, order: int) -> list[Skipped]:
        """``add`` the entry as arriving at ``order``; returns what it skipped (validation, missing id)."""
        before = len(self.report.skipped)
        self.add(entry, order)
        return self.report.skipped[before:]

    def packed(self) -> list[tuple[str, bytes, bytes, Problems]]:
        """The kept slots grouped per patient: ``(patient, digests, pickled group, problems)``; the group is the
        list of ``(ref, version, normalized)``, ``digests`` the 64-bit digest of each ref in that order
        (``array("q")`` bytes) and ``problems`` the warnings of those that have any."""
        groups: dict[str, Group] = {}
        for ref, version, norm in self.kept():
            groups.setdefault(norm.patient_id or "", []).append((ref, version, norm))
        return [(pid, array("q", (spill.digest(ref) for ref, _, _ in items)).tobytes(),
                 pickle.dumps(items, pickle.HIGHEST_PROTOCOL),
                 tuple((ref, version, tuple(norm.problems)) for ref, version, norm in items if norm.problems))
                for pid, items in groups.items()]

    def keep_resolved(self, ref: str, version: VersionKey, norm: Normalized) -> None:
        """Keeps a resource resolved elsewhere (a spilled group's item), as ``add`` would have."""
        self.keep(ref, version, norm, used=norm.patient_id is not None)


__all__ = ["PositionedAssembler"]
