"""The chunk results merged in plan order, versions resolved, and the final phase: assemble, then evaluate.

The parent holds 12 bytes per kept resource (its reference's 64-bit digest and the index of the group holding
it) and 16 per spilled group; the resources themselves stay in the spill file. "The newest version wins" is
resolved at the end: only the references whose digest was kept more than once (several versions of one
resource, rare) are read back and compared, by their exact references and version keys. The dropped
resources' digests are streamed from the spill file against the sorted kept ones (``collisions``): a hit is a
kept resource with a dropped version, which makes pass 2 run again keeping it.

The final phase runs in forked workers that read the spill file themselves: batches of patients are assembled
and ``then`` (the pipeline's evaluation) applied, guarded — one patient's exception leaves a ``Failed`` in its
place — and the results come back in patient-id order.
"""

from __future__ import annotations

import pickle
import sys
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy

from bridge.model import Failed, PatientFacts, Skipped
from bridge.normalize.facts import Normalized
from bridge.normalize.mappings import CodeMap
from bridge.normalize.patients import ReadReport, VersionKey, conflict_warning, describe_exception
from bridge.population import spill
from bridge.population.assembler import PositionedAssembler
from bridge.population.pool import Pool, worker_state
from bridge.population.scan import ChunkResult
from bridge.population.spill import Group, Packed, Spill

_BLOCK = 1 << 15  # digests compared per step at the end: temporaries of a few hundred KiB
_BATCH = 64  # patients per task of the final phase


class Merge:
    """Chunk results merged in plan order: global line numbers, the kept resources (where they lie in the spill
    file) and the digests of the dropped ones."""

    def __init__(self, files: Sequence[Path], cmap: CodeMap) -> None:
        self.names, self.cmap = [p.name for p in files], cmap
        self.offsets = [0] * len(files)
        self.spill = Spill()
        self.keys = array("q")  # digest(ref) of every kept resource, in arrival order
        self.owner = array("i")  # the group holding each of them
        self.spans = array("q")  # offset, length of each group in the spill file
        self.blobs: dict[str, array[int]] = {}  # patient -> its groups
        self.dropped = array("q")  # offset, length of each chunk's dropped digests in the spill file
        self.problems: list[tuple[str, VersionKey, tuple[str, ...]]] = []
        self.newest: dict[str, VersionKey] = {}  # refs kept in several versions -> the winner's key
        self.report = ReadReport()
        self.strays: set[str] = set()
        self.conflicts: set[str] = set()

    def add(self, result: ChunkResult) -> None:
        fi = result.chunk.file_index
        for local, s in result.skipped:
            self.report.skipped.append(Skipped(f"{self.names[fi]} line {self.offsets[fi] + local}", s.reason,
                                               s.expression))
        self.offsets[fi] += result.lines
        for packed in result.slots:
            self._keep(packed)
        if result.dropped[1]:
            self.dropped.extend(result.dropped)
        self.report.read += result.read
        self.report.used += result.used
        self.report.ignored_types += result.ignored_types
        self.strays |= result.strays
        self.conflicts |= result.conflicts

    def _keep(self, packed: Packed) -> None:
        group = len(self.spans) // 2
        self.spans.extend((packed.offset, packed.length))
        before = len(self.keys)
        self.keys.frombytes(packed.digests)
        self.owner.extend(repeat(group, len(self.keys) - before))
        self.blobs.setdefault(sys.intern(packed.patient), array("i")).append(group)
        self.problems.extend(packed.problems)

    def _group(self, group: int) -> Group:
        blob = self.spill.read(self.spans[2 * group], self.spans[2 * group + 1])
        items: Group = pickle.loads(blob)  # noqa: S301 - pickled by our own workers
        return items

    def _holding(self, digests: set[int]) -> Iterator[tuple[str, VersionKey, Normalized]]:
        """The kept resources whose reference has one of ``digests`` (read back from the spill file)."""
        groups = sorted({self.owner[i] for i, key in enumerate(self.keys) if key in digests})
        for group in groups:
            yield from (item for item in self._group(group) if spill.digest(item[0]) in digests)

    def _dropped_blocks(self) -> Iterator[numpy.ndarray[Any, Any]]:
        for offset, length in zip(self.dropped[::2], self.dropped[1::2], strict=True):
            for at in range(offset, offset + length, 8 * _BLOCK):
                yield numpy.frombuffer(self.spill.read(at, min(8 * _BLOCK, offset + length - at)), numpy.int64)

    def collisions(self) -> set[str]:
        """Kept references that share a digest with a dropped resource (a version kept, another dropped).
        The dropped digests are streamed from the spill file against the sorted kept ones; only on a hit (rare)
        are kept references read back."""
        kept = numpy.sort(numpy.frombuffer(self.keys, numpy.int64))
        hits: set[int] = set()
        if kept.size:
            for block in self._dropped_blocks():
                where = numpy.minimum(numpy.searchsorted(kept, block), kept.size - 1)
                hits.update(block[kept[where] == block].tolist())
        return {ref for ref, _, _ in self._holding(hits)} if hits else set()

    def _resolve_versions(self) -> None:
        """``newest``: for every reference whose digest was kept more than once, the version key that wins —
        the assembler's rule (``version >= current``), over exact references and keys; and the identity
        conflicts between chunks (a chunk's own are in ``conflicts`` already)."""
        kept = numpy.sort(numpy.frombuffer(self.keys, numpy.int64))
        repeated = set(kept[1:][kept[1:] == kept[:-1]].tolist())
        subjects: dict[str, set[str]] = {}
        for ref, version, norm in self._holding(repeated) if repeated else ():
            if ref in self.newest and ref.startswith("Patient/"):
                self.conflicts.add(ref)
            if ref not in self.newest or version >= self.newest[ref]:
                self.newest[ref] = version
            if norm.patient_id is not None:
                subjects.setdefault(ref, set()).add(norm.patient_id)
        self.conflicts.update(ref for ref, named in subjects.items() if len(named) > 1)

    def _wins(self, ref: str, version: VersionKey) -> bool:
        best = self.newest.get(ref)
        return best is None or best == version

    def finish(self, then: Callable[[PatientFacts], Any] | None = None, processes: int = 1
               ) -> tuple[Iterator[Any], ReadReport]:
        """The patients in id order — or ``then`` of each — computed as they are consumed, and the report
        (warnings in ref order). With several processes, batches of patients are assembled (and ``then``
        applied) in a pool of forked workers that read the spill file themselves; results come back in order."""
        self._resolve_versions()
        found = sorted([(ref, 1, ws) for ref, version, ws in self.problems if self._wins(ref, version)]
                       + [(ref, 0, (conflict_warning(ref),)) for ref in self.conflicts], key=lambda item: item[:2])
        self.report.warnings = [w for _, _, ws in found for w in ws]
        self.problems.clear()
        return self._results(then, processes), self.report

    def assemble(self, pid: str) -> list[PatientFacts]:
        """One patient's facts from their spilled groups, the newest version of each resource winning."""
        asm = PositionedAssembler(self.cmap)
        for group in self.blobs[pid]:
            for ref, version, norm in self._group(group):
                if self._wins(ref, version):
                    asm.keep_resolved(ref, version, norm)
        return asm.patients()

    def _results(self, then: Callable[[PatientFacts], Any] | None, processes: int) -> Iterator[Any]:
        try:
            pids = sorted(self.blobs)
            size = max(1, min(_BATCH, len(pids) // (4 * processes)))
            batches = [pids[i:i + size] for i in range(0, len(pids), size)]
            for results in Pool(FinalPhase(self, then), processes).map(finish_batch, batches):
                yield from results
        finally:
            self.spill.close()


@dataclass(frozen=True)
class FinalPhase:
    """What the workers of the final phase need: the merged state (inherited on fork) and what to apply."""

    merge: Merge
    then: Callable[[PatientFacts], Any] | None

    def prepare(self) -> None:
        """Nothing to build: the merged state is complete."""


def finish_batch(pids: list[str]) -> list[Any]:
    """The final phase for some patients (worker entry point): assembled, then ``then`` applied — guarded, so
    that one patient's exception leaves a ``Failed`` in its place and the batch goes on."""
    state = worker_state()
    assert isinstance(state, FinalPhase)
    facts = [pf for pid in pids for pf in state.merge.assemble(pid)]
    return facts if state.then is None else [guarded(state.then, pf) for pf in facts]


def guarded(then: Callable[[PatientFacts], Any], pf: PatientFacts) -> Any:
    """``then(pf)``, or a ``Failed`` naming the patient when it raises: one patient never stops the others."""
    try:
        return then(pf)
    except Exception as exc:  # noqa: BLE001 - reported as Failed (exit 1 in the CLI), the others go on
        return Failed(pf.ref, describe_exception(exc))


__all__ = ["Failed", "FinalPhase", "Merge", "finish_batch", "guarded"]
