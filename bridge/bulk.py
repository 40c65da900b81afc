"""Population-scale pre-screen of a Bulk Data NDJSON directory: stream, prune early, use every core.

Population mode — what it reports
    The patients with at least one Condition coded as acute leukaemia (any clinical or verification status,
    any date, valid or not): every patient whose ``inc-diagnosis`` can be other than ``not-met``. Everyone
    else is ineligible on ``inc-diagnosis`` alone; leaving them out is what lets the cost follow the data that
    matters. For every patient it reports, the verdicts are identical to those of the per-patient path
    (``bridge.pipeline.prescreen_items``): every line that could change one of that patient's verdicts is read
    and goes through the same assembler. ``bridge.pipeline.prescreen(..., all_patients=True)`` evaluates
    every patient instead.

How
    1. The files are cut into byte ranges at line boundaries (``plan_chunks``), handed to a pool of forked
       workers (one per core; in this process where fork is missing) and the results merged in file order.
    2. Pass 1 parses the Condition files — the first line tells a file's type; Bulk Data files hold one type
       each — and collects the candidates: subjects of a Condition mapped to ``acute-leukemia``.
    3. Pass 2 streams every file. A line is parsed only when the bytes pre-filter (``bridge.ingest.prefilter``)
       finds a candidate's ``Patient/<id>`` in it, or cannot tell (escapes, a non-canonical line, a Patient
       resource). Parsed, it is kept when it belongs to a candidate and is a Patient, or an Observation or a
       Condition with a coding of a concept some eligibility criterion reads (``ELIGIBILITY_CONCEPTS``).
       Encounter and MedicationAdministration never change an eligibility verdict and are not parsed. Kept
       lines, and only they, are validated with the R4B models and normalized — in the worker, by the
       per-patient ``PatientAssembler`` — with the line's position in the directory as its arrival order, so
       that "the newest version wins" resolves exactly as in one sequential read. The workers write what they
       keep (pickled per patient and chunk) and the dropped lines' digests to a shared anonymous spill file.
    4. Two guards keep the result exact where a plain Bulk Data export never goes: an acute-leukaemia
       Condition met in pass 2 in a file pass 1 did not read (a mixed-type file) adds its patient, and a
       candidate's resource dropped as irrelevant that shares type and id with a kept one (a later version
       with another code) is noticed through a 64-bit digest of its reference; either makes pass 2 run again,
       with the new candidates or keeping those resources. Not followed: a later version that moves a
       resource from a candidate to another patient, or drops its subject (its bytes name no candidate, so it
       is never read).
    5. The final phase — versions resolved, each patient assembled, then ``then`` (the pipeline: screening)
       applied — runs in forked workers too, in batches of patients, the results coming back in id order. An
       exception raised by ``then`` for one patient (a bug) does not lose the batch: that patient's result is
       a ``Failed`` naming it and the exception's type, and every other patient is still evaluated.

Memory: the parent holds 12 bytes per kept resource and 16 per spilled group (the resources themselves are
in the spill file), each worker one chunk and what it keeps from it — never a line of a patient who is not a
candidate. Workers reuse one read buffer and fix malloc's mmap threshold, so they stay flat over any number
of chunks (``steady_malloc``).

Report
    ``skipped`` lists every line the fast path parses that is not JSON or fails the R4B model, with the file,
    line number and reason of the per-patient path, in its order. Every line that is not framed as a
    canonical JSON object is parsed; a framed line that references no candidate is not (a defect inside it
    goes unreported). ``warnings`` come from the reported patients' resources; ``read`` counts non-blank
    lines, ``used`` the resources kept, ``ignored_types`` the lines of types the bridge does not read;
    ``no_patient`` stays 0 (lines naming no candidate are not parsed). Identity conflicts (versions of one
    resource naming different patients, Patients sharing an id) are warned about, in reference order among
    the other warnings, as the per-patient path does — among the candidates' resources.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import multiprocessing
import os
import pickle
import sys
import tempfile
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import repeat
from pathlib import Path
from typing import Any, Protocol

import numpy
import orjson

from bridge.errors import SourceUnreadable
from bridge.fhirmodels import model_class
from bridge.ingest.prefilter import Bytes, PatientFilter, canonical_lines, count_newlines, is_canonical_line, line_type
from bridge.ingest.readers import (
    Entry,
    Skipped,
    _ndjson_line,  # the reader's own line decoding: same skip reasons
    ndjson_files,
)
from bridge.model import PatientFacts
from bridge.normalize.facts import READ_TYPES, Normalized, source_ref
from bridge.normalize.fhirpath import codings, ref_id
from bridge.normalize.mappings import CodeMap
from bridge.normalize.patients import PatientAssembler, ReadReport, VersionKey, conflict_warning, describe_exception

CHUNK_BYTES = 8 << 20
LEUKEMIA = "acute-leukemia"
# Every concept a criterion of bridge.evaluate.eligibility reads (facts and diagnoses); a test checks the
# module's source names no other concept key.
ELIGIBILITY_CONCEPTS = frozenset({
    "acute-leukemia", "refractory-disease", "ecog", "cd7-blast-percent", "lvef", "nyha-class", "ast", "alt",
    "bilirubin-total", "pregnancy", "lactation", "pregnancy-status", "lactation-status", "pregnancy-test",
    "primary-immunodeficiency", "immunodeficiency-review", "cns-involvement", "sepsis", "infection", "neutropenia",
    "fever", "body-temperature", "hepatitis-active", "hbsag", "hbv-dna", "hcv-antibody", "hcv-rna",
    "hiv-infection", "hiv-test", "thrombosis", "myocardial-infarction", "old-myocardial-infarction",
    "severe-arrhythmia",
})
SCREENED_TYPES = frozenset({"Patient", "Observation", "Condition"})
_UNPLACED = "\0"  # a Skipped's place before the chunk's first line number is known
_FILE_SHIFT = 40  # order = file index << 40 | byte offset: files up to 1 TiB


@dataclass(frozen=True)
class Chunk:
    """A byte range ``[start, end)`` of one file holding whole lines."""

    index: int
    file_index: int
    path: str
    start: int
    end: int


def plan_chunks(files: Sequence[Path], chunk_bytes: int = CHUNK_BYTES) -> list[Chunk]:
    """Cut every file into ranges of about ``chunk_bytes``, each ending just after a newline (or at EOF)."""
    plan: list[Chunk] = []
    for file_index, path in enumerate(files):
        for start, end in _ranges(path, chunk_bytes):
            plan.append(Chunk(len(plan), file_index, str(path), start, end))
    return plan


def _ranges(path: Path, chunk_bytes: int) -> Iterator[tuple[int, int]]:
    total = path.stat().st_size
    with path.open("rb") as handle:
        start = 0
        while start < total:
            end = min(start + chunk_bytes, total)
            if end < total:
                handle.seek(end - 1)
                handle.readline()  # to just after the newline that ends the line holding byte end-1
                end = handle.tell()
            yield start, end
            start = end


def read_chunk(chunk: Chunk) -> bytes:
    with open(chunk.path, "rb") as handle:
        handle.seek(chunk.start)
        return handle.read(chunk.end - chunk.start)


_BUFFER: list[bytearray] = []  # this process's read buffer (see read_chunk_reusing)


def read_chunk_reusing(chunk: Chunk) -> bytes | bytearray:
    """``read_chunk`` into this process's one reusable buffer, resized in place: chunks of about the same size
    reuse its memory instead of each allocating (page-faulting, and in the end fragmenting the heap with) a
    new 8 MiB object. A chunk under half the buffer's size (a file's last) is read the plain way. The result
    is valid until the next call; nothing may keep a view of it (a resize would fail)."""
    size = chunk.end - chunk.start
    if not _BUFFER or size >= _BUFFER[0].__alloc__():
        _BUFFER[:] = [bytearray(size)]
    buf = _BUFFER[0]
    if size < buf.__alloc__() // 2:
        return read_chunk(chunk)
    if len(buf) > size:
        del buf[size:]
    elif len(buf) < size:
        buf.extend(bytes(size - len(buf)))
    with open(chunk.path, "rb", buffering=0) as handle:
        handle.seek(chunk.start)
        got = handle.readinto(buf)
    if got != size:
        raise SourceUnreadable(f"{Path(chunk.path).name}: changed while it was read")
    return buf


def file_type(path: Path) -> str | None:
    """The resourceType of the first non-blank line (None when there is none or it cannot be read)."""
    with path.open("rb") as handle:
        first = next((line for line in handle if line.strip()), b"")
    known = line_type(first)
    if known:
        return known
    try:
        doc = orjson.loads(first)
    except orjson.JSONDecodeError:
        return None
    rtype = doc.get("resourceType") if isinstance(doc, dict) else None
    return rtype if isinstance(rtype, str) else None


def patient_of(resource: dict[str, Any]) -> str | None:
    """The patient a resource belongs to, as the normalizer reads it (``facts._subject`` without aliases)."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    return ref_id(resource.get("subject"), "Patient") or ref_id(resource.get("patient"), "Patient")


class Codes(Protocol):
    """What the two code checks read: a ``CodeMap``, or ``CachedCodes`` in front of one."""

    def condition_concepts(self, system: str | None, code: str | None) -> frozenset[str]: ...

    def observation_concept(self, system: str | None, code: str | None) -> str | None: ...


def has_leukemia(resource: dict[str, Any], cmap: Codes) -> bool:
    return any(LEUKEMIA in cmap.condition_concepts(s, c) for s, c in codings(resource.get("code")))


def relevant(resource: dict[str, Any], cmap: Codes, concepts: frozenset[str] = ELIGIBILITY_CONCEPTS) -> bool:
    """Could this resource change an eligibility verdict? Any coding (any position, any component) counts."""
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        return True
    if rtype == "Condition":
        return any(cmap.condition_concepts(s, c) & concepts for s, c in codings(resource.get("code")))
    if rtype != "Observation":
        return False
    components = resource.get("component")
    nodes = [resource, *(c for c in components if isinstance(c, dict))] if isinstance(components, list) \
        else [resource]
    return any(cmap.observation_concept(s, c) in concepts for n in nodes for s, c in codings(n.get("code")))


def digest(ref: str) -> int:
    """A signed 64-bit digest of a resource reference (stable across processes)."""
    return int.from_bytes(hashlib.blake2b(ref.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


class PositionedAssembler(PatientAssembler):
    """The per-patient assembler, with a line's position in the directory as its arrival order.

    Chunks are assembled in different processes; giving each resource the order it has in one sequential
    read (file index, byte offset) makes "the newest version wins" resolve as in the per-patient path.
    """

    def add_at(self, entry: Entry, order: int) -> list[Skipped]:
        """``add`` the entry as arriving at ``order``; returns what it skipped (validation, missing id)."""
        before = len(self.report.skipped)
        self._order = order
        self.add(entry)
        return self.report.skipped[before:]

    def packed(self) -> list[tuple[str, bytes, bytes, Problems]]:
        """The kept slots grouped per patient: ``(patient, digests, pickled group, problems)``; the group is the
        list of ``(ref, version, normalized)``, ``digests`` the 64-bit digest of each ref in that order
        (``array("q")`` bytes) and ``problems`` the warnings of those that have any."""
        groups: dict[str, Group] = {}
        for ref, slot in self._slots.items():
            groups.setdefault(slot.norm.patient_id or "", []).append((ref, slot.version, slot.norm))
        return [(pid, array("q", (digest(ref) for ref, _, _ in items)).tobytes(),
                 pickle.dumps(items, pickle.HIGHEST_PROTOCOL),
                 tuple((ref, version, tuple(norm.problems)) for ref, version, norm in items if norm.problems))
                for pid, items in groups.items()]

    def keep(self, ref: str, version: VersionKey, norm: Normalized) -> None:
        self._keep(ref, version, norm, used=norm.patient_id is not None)


Group = list[tuple[str, VersionKey, Normalized]]
Problems = tuple[tuple[str, VersionKey, tuple[str, ...]], ...]


@dataclass(frozen=True, slots=True)
class Packed:
    """One patient's kept resources from one chunk: where their pickled group lies in the spill file, the
    64-bit digest of each reference (``array("q")`` bytes, in the group's order) and their warnings."""

    patient: str
    digests: bytes
    offset: int
    length: int
    problems: Problems = ()


_POSITIONED = hasattr(os, "pread") and hasattr(os, "pwrite")


class Spill:
    """An anonymous temporary file (unlinked at once, so nothing is left behind even if the process is
    killed) that the workers append to and the parent reads back: the candidates' pickled resources never
    pass through the parent's memory while the directory is read. Forked workers inherit its descriptor and
    lock; positioned writes under the lock keep the appends of several processes apart (POSIX; elsewhere there
    is no fork, one process, and plain seek/write)."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.fd = self.file.fileno()
        self.lock = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                                else None).Lock()

    def append(self, data: bytes) -> int:
        """Writes ``data`` at the end of the file; returns where it starts."""
        with self.lock:
            if not _POSITIONED:  # no pread/pwrite (Windows): one process only, the file object will do
                offset = self.file.seek(0, os.SEEK_END)
                self.file.write(data)
                self.file.flush()
                return offset
            offset = os.fstat(self.fd).st_size
            view, at = memoryview(data), offset
            while view:
                written = os.pwrite(self.fd, view, at)
                view, at = view[written:], at + written
        return offset

    def read(self, offset: int, length: int) -> bytes:
        if not _POSITIONED:
            self.file.seek(offset)
            return self.file.read(length)
        return os.pread(self.fd, length, offset)

    def close(self) -> None:
        self.file.close()


# ------------------------------------------------------------------------------------------- the workers
class CachedCodes:
    """A ``CodeMap`` whose ``condition_concepts`` are remembered per (system, code): the same few codes recur on
    every line (``observation_concept`` is a dict lookup already and is passed through)."""

    def __init__(self, cmap: CodeMap, limit: int = 1 << 16) -> None:
        self.cmap, self.limit = cmap, limit
        self._memo: dict[tuple[str | None, str | None], frozenset[str]] = {}

    def condition_concepts(self, system: str | None, code: str | None) -> frozenset[str]:
        key = (system, code)
        found = self._memo.get(key)
        if found is None:
            found = self.cmap.condition_concepts(system, code)
            if len(self._memo) < self.limit:
                self._memo[key] = found
        return found

    def observation_concept(self, system: str | None, code: str | None) -> str | None:
        return self.cmap.observation_concept(system, code)


@dataclass(frozen=True)
class Scope:
    """What a worker needs for one pass; built in the parent, inherited on fork (pickled otherwise)."""

    cmap: CodeMap
    candidates: frozenset[str] = frozenset()
    pass_one_files: frozenset[int] = frozenset()
    keep_refs: frozenset[str] = frozenset()
    spill: Spill | None = None  # pass 2: where the workers put the kept resources and the dropped digests

    @cached_property
    def filter(self) -> PatientFilter:
        return PatientFilter(self.candidates)

    @cached_property
    def codes(self) -> CachedCodes:
        return CachedCodes(self.cmap)


@dataclass
class ChunkResult:
    """What pass 2 found in one chunk; skipped lines carry chunk-local line numbers."""

    chunk: Chunk
    lines: int = 0
    read: int = 0
    ignored_types: int = 0
    used: int = 0
    slots: list[Packed] = field(default_factory=list)
    skipped: list[tuple[int, Skipped]] = field(default_factory=list)
    dropped: tuple[int, int] = (0, 0)  # offset, length of the dropped digests in the spill file
    strays: set[str] = field(default_factory=set)
    conflicts: set[str] = field(default_factory=set)  # identity conflicts among this chunk's versions


_SCOPE: list[Any] = []  # the worker's state: a Scope (passes 1 and 2) or a _Final (the final phase)


def _set_scope(scope: Any) -> None:
    _SCOPE[:] = [scope]


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def steady_malloc() -> None:
    """A fixed mmap threshold for this (worker) process, so that its memory stays flat over any number of chunks.

    glibc's malloc raises its mmap threshold each time a large block is freed, after which multi-MiB buffers
    (chunk reads, pickled groups, numpy temporaries) come from the heap and fragment it: measured here, a
    worker's RSS crept from 64 to 98 MB over the first 200 chunks of the 100k-patient export. With the
    threshold fixed at glibc's default of 128 KiB, large blocks go back to the system when freed. Elsewhere
    (not glibc) this does nothing.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


def _init_worker(state: Any) -> None:
    steady_malloc()
    _set_scope(state)


def _spans(buf: Bytes, lo: int = 0, hi: int | None = None) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of every line of ``buf[lo:hi]``, ``end`` at its newline (or ``hi``)."""
    hi = len(buf) if hi is None else hi
    start = lo
    while start < hi:
        end = buf.find(b"\n", start, hi)
        end = hi if end < 0 else end
        yield start, end
        start = end + 1


def find_candidates(chunk: Chunk) -> set[str]:
    """Pass 1: subjects of the acute-leukaemia Conditions in one chunk."""
    codes, found = _SCOPE[0].codes, set()
    buf = read_chunk_reusing(chunk)
    if canonical_lines(buf, "Condition") is not None:  # every line a Condition: no per-line checks
        lines: Iterator[Bytes] = iter(buf.split(b"\n"))
    else:
        lines = (line for line in buf.split(b"\n") if line.strip() and not (
            (rtype := line_type(line)) is not None and rtype != "Condition" and is_canonical_line(line)))
    for line in lines:
        try:
            res = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # reported by pass 2 (and the empty string after a final newline)
        if isinstance(res, dict) and res.get("resourceType") == "Condition" and has_leukemia(res, codes):
            pid = patient_of(res)
            if pid:
                found.add(pid)
    return found


class ChunkReader:
    """Pass 2 over one chunk: canonical ranges in bulk, the rest line by line; keeps what candidates need.

    A non-canonical chunk is halved until its halves are canonical or small, so that one bad line costs a
    few extra scans of its chunk, not a line-by-line pass over all of it.
    """

    SMALL = 1 << 16

    def __init__(self, scope: Scope, chunk: Chunk, buf: Bytes) -> None:
        self.scope, self.chunk, self.buf = scope, chunk, buf
        self.asm = PositionedAssembler(scope.cmap)
        self.result = ChunkResult(chunk)
        self.stray_check = chunk.file_index not in scope.pass_one_files
        self.dropped = array("q")

    def run(self) -> ChunkResult:
        self.result.lines = self._range(0, len(self.buf), 1)
        self.result.used = self.asm.report.used
        self.result.conflicts = self.asm.conflicts
        self._spill()
        return self.result

    def _spill(self) -> None:
        """Writes the kept groups and the dropped digests to the spill file, in one append; the result keeps
        where they are."""
        if self.scope.spill is None:
            raise RuntimeError("pass 2 needs a spill file")
        groups, dropped = self.asm.packed(), self.dropped.tobytes()
        if not groups and not dropped:
            return
        base = self.scope.spill.append(b"".join(blob for _, _, blob, _ in groups) + dropped)
        at = base
        for pid, digests, blob, problems in groups:
            self.result.slots.append(Packed(pid, digests, at, len(blob), problems))
            at += len(blob)
        self.result.dropped = (at, len(dropped))

    def _range(self, lo: int, hi: int, first_line: int) -> int:
        """Read ``buf[lo:hi]`` (whole lines, the first numbered ``first_line``); returns its line count."""
        rtype = line_type(self.buf[lo:lo + 128])
        count = canonical_lines(self.buf, rtype, lo, hi) if rtype else None
        if count is not None:
            self._canonical(rtype or "", count, lo, hi)
            return count
        mid = self.buf.find(b"\n", lo + (hi - lo) // 2, hi) + 1
        if hi - lo <= self.SMALL or mid <= lo or mid >= hi:
            return self._line_by_line(lo, hi, first_line)
        head = self._range(lo, mid, first_line)
        return head + self._range(mid, hi, first_line + head)

    def _canonical(self, rtype: str, count: int, lo: int, hi: int) -> None:
        self.result.read += count
        if rtype not in READ_TYPES:
            self.result.ignored_types += count
            return
        if rtype not in SCREENED_TYPES:
            return
        every_line = rtype == "Patient" or (rtype == "Condition" and self.stray_check)
        spans = _spans(self.buf, lo, hi) if every_line else self.scope.filter.lines(self.buf, lo, hi)
        for start, end in spans:
            self._parse(start, end, None)

    def _line_by_line(self, lo: int, hi: int, first_line: int) -> int:
        lineno = first_line - 1
        for start, end in _spans(self.buf, lo, hi):
            lineno += 1
            line = self.buf[start:end]
            if not line.strip():
                continue
            self.result.read += 1
            if self._must_parse(line):
                self._parse(start, end, lineno)
        return lineno - first_line + 1

    def _must_parse(self, line: Bytes) -> bool:
        rtype = line_type(line)
        if rtype is None or not is_canonical_line(line):
            return True
        if rtype not in READ_TYPES:
            self.result.ignored_types += 1
            return False
        if rtype not in SCREENED_TYPES:
            return False
        if rtype == "Patient" or (rtype == "Condition" and self.stray_check):
            return True
        return self.scope.filter.may_concern(line)

    def _parse(self, start: int, end: int, lineno: int | None) -> None:
        text = self.buf[start:end + 1]  # with its newline, exactly as the per-patient reader sees it
        item = _ndjson_line(text, _UNPLACED)
        if isinstance(item, Skipped):
            self._skip(start, lineno, item)
        else:
            self._consider(item.resource, start, lineno)

    def _consider(self, res: dict[str, Any], start: int, lineno: int | None) -> None:
        rtype = res["resourceType"]
        if rtype not in READ_TYPES:
            self.result.ignored_types += 1
            return
        pid = patient_of(res)
        candidate = pid is not None and pid in self.scope.candidates
        if rtype == "Condition" and self.stray_check and not candidate and pid and has_leukemia(res, self.scope.codes):
            self.result.strays.add(pid)
        if not candidate or rtype not in SCREENED_TYPES:
            return
        ref = source_ref(res)
        if ref in self.scope.keep_refs or relevant(res, self.scope.codes):
            order = (self.chunk.file_index << _FILE_SHIFT) | (self.chunk.start + start)
            for skipped in self.asm.add_at(Entry(res, _UNPLACED), order):
                self._skip(start, lineno, skipped)
        else:
            self.dropped.append(digest(ref))

    def _skip(self, start: int, lineno: int | None, skipped: Skipped) -> None:
        local = lineno if lineno is not None else count_newlines(self.buf, 0, start) + 1
        self.result.skipped.append((local, skipped))


def screen_chunk(chunk: Chunk) -> ChunkResult:
    """Pass 2 over one chunk (worker entry point)."""
    return ChunkReader(_SCOPE[0], chunk, read_chunk_reusing(chunk)).run()


# ------------------------------------------------------------------------------------------- the coordinator
def default_processes() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_BLOCK = 1 << 15  # digests compared per step at the end: temporaries of a few hundred KiB


class _Merge:
    """Chunk results merged in plan order: global line numbers, the kept resources and the digests of the
    dropped ones.

    The workers write the kept resources (pickled per patient and chunk) and the dropped resources' digests to
    the spill file; the parent holds 12 bytes per kept resource (its reference's 64-bit digest and the index
    of the group holding it) and 16 per group, so its memory barely grows with the candidates. "The newest
    version wins" is resolved at the end: only the references whose digest was kept more than once (several
    versions of a resource, rare) are read back and compared, by their exact references and version keys."""

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
        return pickle.loads(blob)  # noqa: S301 - pickled by our own workers

    def _holding(self, digests: set[int]) -> Iterator[tuple[str, VersionKey, Normalized]]:
        """The kept resources whose reference has one of ``digests`` (read back from the spill file)."""
        groups = sorted({self.owner[i] for i, key in enumerate(self.keys) if key in digests})
        for group in groups:
            yield from (item for item in self._group(group) if digest(item[0]) in digests)

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
                    asm.keep(ref, version, norm)
        return asm.patients()

    def _results(self, then: Callable[[PatientFacts], Any] | None, processes: int) -> Iterator[Any]:
        try:
            pids = sorted(self.blobs)
            size = max(1, min(_BATCH, len(pids) // (4 * processes)))
            batches = [pids[i:i + size] for i in range(0, len(pids), size)]
            for results in _Pool(_Final(self, then), processes).map(finish_batch, batches):
                yield from results
        finally:
            self.spill.close()


_BATCH = 64  # patients per task of the final phase


@dataclass(frozen=True)
class _Final:
    """What the workers of the final phase need: the merged state (inherited on fork) and what to apply."""

    merge: _Merge
    then: Callable[[PatientFacts], Any] | None


def finish_batch(pids: list[str]) -> list[Any]:
    """The final phase for some patients (worker entry point): assembled, then ``then`` applied — guarded, so
    that one patient's exception leaves a ``Failed`` in its place and the batch goes on."""
    state = _SCOPE[0]
    assert isinstance(state, _Final)
    facts = [pf for pid in pids for pf in state.merge.assemble(pid)]
    return facts if state.then is None else [guarded(state.then, pf) for pf in facts]


@dataclass(frozen=True)
class Failed:
    """A patient whose evaluation raised an unexpected exception (a bug): ``error`` is the exception's type
    and where it was raised — never its message, which may quote a value."""

    patient: str
    error: str

    def line(self) -> str:
        return f"{self.patient}: evaluation failed ({self.error}); left out of the results — a bug, please report it"


def guarded(then: Callable[[PatientFacts], Any], pf: PatientFacts) -> Any:
    """``then(pf)``, or a ``Failed`` naming the patient when it raises: one patient never stops the others."""
    try:
        return then(pf)
    except Exception as exc:  # noqa: BLE001 - reported as Failed (exit 1 in the CLI), the others go on
        return Failed(pf.ref, describe_exception(exc))


class _Pool:
    """Runs one pass over tasks: in a process pool (fork where available) or in this process."""

    def __init__(self, state: Any, processes: int) -> None:
        self.state, self.processes = state, processes

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[Any]:
        if isinstance(self.state, Scope):
            _ = self.state.filter, self.state.codes  # built once here, inherited by the workers
            for rtype in SCREENED_TYPES:
                model_class(rtype)  # likewise the R4B models the workers validate with (imported lazily otherwise)
        methods = multiprocessing.get_all_start_methods()
        if self.processes <= 1 or len(tasks) <= 1 or "fork" not in methods or not _POSITIONED:
            try:  # one process, or no fork or positioned I/O (the spill file and the state are inherited)
                for task in tasks:
                    _set_scope(self.state)  # per task: a consumer may run another pass between two results
                    yield fn(task)
            finally:
                _SCOPE.clear()
                _BUFFER.clear()  # the workers' buffers go with them; this process keeps running
            return
        ctx = multiprocessing.get_context("fork")
        gc.freeze()  # forked workers share the parent's objects; a collection in them would copy every page
        try:
            with ctx.Pool(min(self.processes, len(tasks)), initializer=_init_worker, initargs=(self.state,)) as pool:
                yield from pool.imap(fn, tasks)
        finally:
            gc.unfreeze()


def candidates_in(files: Sequence[Path], plan: Sequence[Chunk], cmap: CodeMap,
                  processes: int) -> tuple[set[str], frozenset[int]]:
    """Pass 1: the candidates, and the indexes of the files it read (Condition files, or of unknown type)."""
    pass_one = frozenset(i for i, p in enumerate(files) if file_type(p) in (None, "Condition"))
    found: set[str] = set()
    for part in _Pool(Scope(cmap), processes).map(find_candidates, [c for c in plan if c.file_index in pass_one]):
        found |= part
    return found, pass_one


def population_patients(directory: Path, cmap: CodeMap, progress: Callable[[int], None] | None = None, *,
                        processes: int | None = None, chunk_bytes: int = CHUNK_BYTES
                        ) -> tuple[Iterator[PatientFacts], ReadReport]:
    """The facts of every patient with an acute-leukaemia Condition (assembled lazily, in id order), and the
    read report."""
    return population_map(directory, cmap, None, progress, processes=processes, chunk_bytes=chunk_bytes)


def population_map(directory: Path, cmap: CodeMap, then: Callable[[PatientFacts], Any] | None,
                   progress: Callable[[int], None] | None = None, *, processes: int | None = None,
                   chunk_bytes: int = CHUNK_BYTES) -> tuple[Iterator[Any], ReadReport]:
    """``then`` of the facts of every patient with an acute-leukaemia Condition, in id order (the facts
    themselves when ``then`` is None), computed lazily and in parallel; and the read report. ``then`` runs in
    the worker processes: a module-level function or a ``functools.partial`` of one."""
    files = ndjson_files(directory)
    plan = plan_chunks(files, chunk_bytes)
    workers = processes or default_processes()
    candidates, pass_one = candidates_in(files, plan, cmap, workers)
    keep: frozenset[str] = frozenset()
    while True:
        merged = _Merge(files, cmap)
        try:
            scope = Scope(cmap, frozenset(candidates), pass_one, keep, merged.spill)
            for result in _Pool(scope, workers).map(screen_chunk, plan):
                merged.add(result)
                if progress is not None:
                    progress(result.lines)
            more, collide = merged.strays - candidates, merged.collisions() - keep
        except BaseException:
            merged.spill.close()
            raise
        if not more and not collide:
            return merged.finish(then, workers)
        merged.spill.close()
        candidates |= more
        keep |= collide


__all__ = ["CHUNK_BYTES", "ELIGIBILITY_CONCEPTS", "CachedCodes", "Chunk", "ChunkReader", "ChunkResult", "Codes",
           "Failed", "Packed", "PositionedAssembler", "Scope", "Spill", "candidates_in", "default_processes", "digest",
           "file_type", "find_candidates", "finish_batch", "guarded", "has_leukemia", "patient_of", "plan_chunks",
           "population_map", "population_patients", "read_chunk", "read_chunk_reusing", "relevant",
           "screen_chunk", "steady_malloc"]
