"""``--all-patients`` over an NDJSON directory in bounded memory: partition by patient, then one partition at a time.

The per-patient path reads the whole directory into one assembler, so its memory grows with the export. Here:

1. **Partition pass** (forked workers, one chunk at a time, as the population passes): every line is parsed
   once. A line of a type the bridge reads goes to the partition of its patient (a hash of the patient id the
   normalizer would read; lines naming no patient share one partition): a line that can change a verdict —
   the Patient, an Observation or Condition with a coding of a concept some criterion reads
   (``relevance.relevant``) — in full, any other as a *stub*: a fixed-size row (where it is, its reference's
   64-bit digest, its patient's digest). Every line with an id also leaves a small record (digest, position,
   partition) in a *digest bucket*. Lines that are not JSON or name no ``resourceType`` are reported here. The
   digests are the interpreter's string hash (``ref_digest``): every pass is forked from the process that
   runs it, so they agree, and none outlives the run.
2. **Identities across partitions.** The versions of one resource normally name one patient, so they meet in
   one partition. The digest buckets are read one at a time (numpy, a few MB each) to find the references
   whose versions lie in several partitions (versions naming different patients, or none); only those lines
   are read back and resolved here, exactly as the assembler resolves versions: the winning version and the
   identity conflicts.
3. **Evaluation** (forked workers, one partition each, the largest first): the full lines go through the
   per-patient assembler (validated, normalized) with their position in the directory as their arrival order;
   a stub is read back from the directory and added as well when its reference is also kept in full (a later
   version of a kept resource), when its identity spans partitions, or when its patient has nothing else that
   would make them a patient (so a patient known only from, say, Encounters is still listed as not screened).
   Each patient is then evaluated (``then``, guarded) and the outcomes written, in patient order, to a result
   file.
4. **Merge**: the partitions' outcomes are merged by patient id, read back a buffer at a time, so the parent
   holds one outcome per partition. Skipped lines are reported in directory order, warnings in reference
   order — as the per-patient path orders them.

Every file lives in a temporary directory that is removed when the run ends, fails or is abandoned
(``AllPatients.close``); the files are unlinked as soon as they are open, so nothing is left even after
``kill -9``. Memory: each worker holds one chunk, or one partition's assembled patients; partitions are
sized (``PARTITION_BYTES`` of input each) so that this does not grow with the export.

Report (as population mode's, see ``bridge.population``): ``skipped`` lists every line that is not JSON or
names no ``resourceType``, and every line the bridge validates that fails the R4B model or has no id — the
lines that can change a verdict and the stubs read back; a defect in another line (an Encounter, an
unmapped Observation) is not validated and not reported. ``warnings`` come from the validated lines;
``read`` and ``ignored_types`` count every non-blank line; ``used`` and ``no_patient`` count validated lines.
The JSON document — every patient's verdicts, ``notScreened`` — is the per-patient path's.
"""

from __future__ import annotations

import contextlib
import heapq
import importlib.util
import io
import os
import pickle
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy
import orjson

from bridge.ingest.readers import ndjson_files, ndjson_line, read_ndjson_dir
from bridge.model import Entry, PatientFacts, Skipped
from bridge.normalize import fastvalid
from bridge.normalize.facts import READ_TYPES, Normalized
from bridge.normalize.fhirpath import ref_id
from bridge.normalize.mappings import CodeMap
from bridge.normalize.patients import PatientAssembler, ReadReport, VersionKey, conflict_warning
from bridge.population import spill
from bridge.population.assembler import PositionedAssembler
from bridge.population.chunks import CHUNK_BYTES, Chunk, plan_chunks, read_chunk_reusing
from bridge.population.merge import guarded
from bridge.population.pool import Pool, default_processes, worker_state
from bridge.population.relevance import CachedCodes, Concepts, TrialConcepts, default_trial, patient_of, relevant

PARTITION_BYTES = 24 << 20  # input bytes per partition: what one worker assembles at a time
MAX_PARTITIONS = 256
_FILE_SHIFT = 40  # order = file index << 40 | byte offset (as in bridge.population.scan)
_HEAD = struct.Struct("<qiiI")  # a line kept in full: order, chunk index, line in the chunk, length (then the line)
# a stub: where its line is, its reference's digest, its patient's digest and whether it names a patient
_STUB = numpy.dtype([("order", "<i8"), ("chunk", "<i4"), ("line", "<i4"), ("length", "<i4"), ("digest", "<i8"),
                     ("patient", "<i8"), ("named", "u1")])
_BLOCK_HEAD = struct.Struct("<II")  # one chunk's records for one partition: bytes of full lines, number of stubs
_BUCKET = numpy.dtype([("digest", "<i8"), ("order", "<i8"), ("length", "<i4"), ("part", "<i4")])
_READ_AHEAD = 1 << 16


def ref_digest(text: str) -> int:
    """A 64-bit digest of a reference or a patient id, the same in this process and in every worker it forks:
    the interpreter's string hash (SipHash, keyed once per interpreter; ~20 ns against blake2b's ~480 ns, on
    each of an export's lines). Every pass of one run is forked from the process that runs it, and nothing
    computed from it outlives the run (``spill.digest`` is the one that is stable across processes)."""
    return hash(text)


def partition_of(patient: str, partitions: int) -> int:
    """The partition of a patient id ('' for a line naming none), in this process and its forked workers."""
    return hash(patient) % partitions


def partition_count(total_bytes: int, processes: int) -> int:
    """Enough partitions for about ``PARTITION_BYTES`` of input each, at least two per worker, and no more
    than the open-file limit allows (each partition has a file, a digest bucket and a result region)."""
    wanted = max(2 * processes, -(-total_bytes // PARTITION_BYTES))
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        allowed = max(2, (soft - 64) // 2) if soft > 0 else MAX_PARTITIONS
    except (ImportError, OSError, ValueError):
        allowed = MAX_PARTITIONS
    return max(1, min(wanted, MAX_PARTITIONS, allowed))


POSIX = spill.POSITIONED and importlib.util.find_spec("fcntl") is not None  # else: the per-patient path


def _appending() -> int:
    """An anonymous temporary file opened for appends from several processes (``O_APPEND``: each write lands
    whole at the end)."""
    import fcntl

    handle = tempfile.TemporaryFile()  # noqa: SIM115 - the descriptor is kept, the object closed
    fd = os.dup(handle.fileno())
    handle.close()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
    return fd


def _append(fd: int, data: bytes) -> None:
    if data and os.write(fd, data) != len(data):
        raise OSError("short write to a partition file")


# --------------------------------------------------------------------------------------------- pass 1
@dataclass(frozen=True)
class PartitionScope:
    """What the partition pass's workers need (inherited on fork)."""

    cmap: CodeMap
    concepts: Concepts
    partitions: tuple[int, ...]  # one appending descriptor per partition
    buckets: tuple[int, ...]  # one appending descriptor per digest bucket
    codes: CachedCodes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", CachedCodes(self.cmap))

    def prepare(self) -> None:
        """Nothing to build beyond the code cache."""


@dataclass
class PartitionResult:
    """What the partition pass found in one chunk (skips carry chunk-local line numbers)."""

    chunk: Chunk
    lines: int = 0
    read: int = 0
    ignored_types: int = 0
    skipped: list[tuple[int, int, Skipped]] = field(default_factory=list)  # order, local line, skip


def partition_chunk(chunk: Chunk) -> PartitionResult:
    """The partition pass over one chunk (worker entry point). The hot loop of ``--all-patients``: one JSON parse
    per line, the line's bytes copied only when they are kept in full, a patient's partition computed once per
    run of their lines."""
    scope = worker_state()
    assert isinstance(scope, PartitionScope)
    buf = read_chunk_reusing(chunk)
    with memoryview(buf) as view:  # released at the end: the buffer is resized by the next read
        result = _partition_lines(scope, chunk, buf, view)
    return result


def _partition_lines(scope: PartitionScope, chunk: Chunk, buf: bytes | bytearray, view: memoryview
                     ) -> PartitionResult:
    n_parts, n_buckets = len(scope.partitions), len(scope.buckets)
    out: list[list[bytes]] = [[] for _ in range(n_parts)]
    stubs: list[list[tuple[int, int, int, int, int, int, bool]]] = [[] for _ in range(n_parts)]
    bucket_rows: list[list[tuple[int, int, int, int]]] = [[] for _ in range(n_buckets)]
    result = PartitionResult(chunk)
    base = (chunk.file_index << _FILE_SHIFT) | chunk.start
    start, size, lineno = 0, len(buf), 0
    last_pid, last_part, last_hash = "", partition_of("", n_parts), hash("")
    last_ref: str | None = None  # the last subject reference read, when it names ``last_pid``
    codes, concepts, skipped = scope.codes, scope.concepts, result.skipped
    loads, decode_error, find = orjson.loads, orjson.JSONDecodeError, buf.find
    pack_head = _HEAD.pack
    read = ignored = 0
    while start < size:
        nl = find(b"\n", start)
        end = size if nl < 0 else nl + 1
        lineno += 1
        begin, start = start, end
        try:
            res = loads(view[begin:end])
        except decode_error:
            line = bytes(view[begin:end])
            if line.strip():  # a blank line is not read; anything else is reported as ndjson_line words it
                read += 1
                item = ndjson_line(line, "")
                if isinstance(item, Skipped):
                    skipped.append((base + begin, lineno, item))
            continue
        read += 1
        rtype = res.get("resourceType") if type(res) is dict else None
        if type(rtype) is not str:
            item = ndjson_line(bytes(view[begin:end]), "")
            if isinstance(item, Skipped):
                skipped.append((base + begin, lineno, item))
            continue
        if rtype not in READ_TYPES:
            ignored += 1
            continue
        subject = res.get("subject") if rtype != "Patient" else None
        ref = subject.get("reference") if type(subject) is dict else None
        if ref is not None and ref == last_ref:  # patient_of, for the subject reference just read
            pid = last_pid
        else:
            pid = patient_of(res) or ""
            last_ref = ref if type(ref) is str and ref_id(subject, "Patient") == pid else None
        if pid != last_pid:  # a patient's lines mostly come together
            last_pid, last_part, last_hash = pid, partition_of(pid, n_parts), hash(pid)
        order, length = base + begin, end - begin
        rid = res.get("id")
        if isinstance(rid, str):
            digest = hash(f"{rtype}/{rid}")  # ref_digest(source_ref(res))
            bucket_rows[digest % n_buckets].append((digest, order, length, last_part))
            if rtype == "Patient" or relevant(res, codes, concepts):
                out[last_part].append(pack_head(order, chunk.index, lineno, length) + view[begin:end])
            else:
                stubs[last_part].append((order, chunk.index, lineno, length, digest, last_hash, pid != ""))
        else:
            out[last_part].append(pack_head(order, chunk.index, lineno, length) + view[begin:end])
    result.lines, result.read, result.ignored_types = lineno, read, ignored
    for part, (records, stub_rows) in enumerate(zip(out, stubs, strict=True)):
        if records or stub_rows:
            body = b"".join(records)
            _append(scope.partitions[part], _BLOCK_HEAD.pack(len(body), len(stub_rows)) + body
                    + (numpy.array(stub_rows, dtype=_STUB).tobytes() if stub_rows else b""))
    for bucket, rows in enumerate(bucket_rows):
        if rows:
            _append(scope.buckets[bucket], numpy.array(rows, dtype=_BUCKET).tobytes())
    return result


# --------------------------------------------------------------------------------------------- pass 2
@dataclass
class Identities:
    """References whose versions lie in several partitions: the winning version of each and the conflicts."""

    winners: dict[str, VersionKey] = field(default_factory=dict)
    digests: frozenset[int] = frozenset()
    conflicts: set[str] = field(default_factory=set)


def _read_line(files: Sequence[Path], order: int, length: int) -> bytes:
    with open(files[order >> _FILE_SHIFT], "rb") as handle:
        handle.seek(order & ((1 << _FILE_SHIFT) - 1))
        return handle.read(length)


def spanning(buckets: Sequence[int], files: Sequence[Path], cmap: CodeMap) -> Identities:
    """The references whose versions lie in several partitions, resolved as the assembler would: one bucket in
    memory at a time, and only those versions read back from the directory."""
    spans: list[tuple[int, int]] = []  # (order, length) of every version of a spanning reference
    digests: set[int] = set()
    for fd in buckets:
        rows = numpy.frombuffer(os.pread(fd, os.fstat(fd).st_size, 0), _BUCKET)
        if rows.size < 2:
            continue
        rows = rows[numpy.argsort(rows["digest"], kind="stable")]
        same = rows["digest"][1:] == rows["digest"][:-1]
        split = same & (rows["part"][1:] != rows["part"][:-1])
        if not split.any():
            continue
        hit = numpy.unique(rows["digest"][1:][split])
        chosen = rows[numpy.isin(rows["digest"], hit)]
        digests.update(hit.tolist())
        spans += zip(chosen["order"].tolist(), chosen["length"].tolist(), strict=True)
    found = Identities(digests=frozenset(digests))
    if not spans:
        return found
    asm = PositionedAssembler(cmap)
    for order, length in sorted(spans):
        item = ndjson_line(_read_line(files, order, length), "")
        if isinstance(item, Entry):
            asm.add_at(item, order)
    for ref, version, _norm in asm.kept():
        if ref_digest(ref) in found.digests:
            found.winners[ref] = version
    found.conflicts = {ref for ref in asm.conflicts if ref in found.winners}
    return found


@dataclass(frozen=True)
class EvaluationScope:
    """What the evaluation's workers need (inherited on fork)."""

    cmap: CodeMap
    files: tuple[Path, ...]
    names: tuple[str, ...]
    line_base: tuple[int, ...]  # per chunk: the lines of the same file before it
    chunk_files: tuple[int, ...]  # per chunk: the index of its file
    partitions: tuple[int, ...]
    results: spill.Spill
    identities: Identities
    then: Callable[[PatientFacts], Any] | None

    def prepare(self) -> None:
        """The R4B models and the fast path's rules the workers validate with (``fastvalid.prepare`` builds both),
        built once before the fork."""
        fastvalid.prepare(READ_TYPES)


@dataclass
class PartitionOutcome:
    """What one partition gave: where its outcomes lie in the result file, its skips and keyed warnings."""

    part: int
    offset: int = 0
    length: int = 0
    count: int = 0
    used: int = 0
    no_patient: int = 0
    skipped: list[tuple[int, Skipped]] = field(default_factory=list)  # order, skip
    warnings: list[tuple[str, int, tuple[str, ...]]] = field(default_factory=list)  # ref, rank, warnings


def _records(fd: int, stubs: list[numpy.ndarray]) -> Iterator[tuple[int, int, int, bytes]]:
    """The lines kept in full in one partition file — order, chunk, line in the chunk, the line — one block in
    memory at a time; each block's stubs are added to ``stubs`` (one array per block)."""
    at, size = 0, os.fstat(fd).st_size
    head = _HEAD.size
    while at < size:
        full, count = _BLOCK_HEAD.unpack(os.pread(fd, _BLOCK_HEAD.size, at))
        at += _BLOCK_HEAD.size
        block = os.pread(fd, full, at)
        at += full
        if count:
            stubs.append(numpy.frombuffer(os.pread(fd, count * _STUB.itemsize, at), _STUB))
            at += count * _STUB.itemsize
        pos = 0
        while pos < full:
            order, chunk, line, length = _HEAD.unpack_from(block, pos)
            pos += head
            yield order, chunk, line, block[pos:pos + length]
            pos += length


def _digests(values: Iterable[int]) -> numpy.ndarray:
    return numpy.fromiter(values, dtype="<i8")


class _PartitionReader:
    """One partition through the assembler (see the module docstring, step 3)."""

    def __init__(self, scope: EvaluationScope, part: int) -> None:
        self.scope, self.part = scope, part
        self.asm = PositionedAssembler(scope.cmap)
        self.out = PartitionOutcome(part)

    def where(self, chunk: int, line: int) -> str:
        scope = self.scope
        return f"{scope.names[scope.chunk_files[chunk]]} line {scope.line_base[chunk] + line}"

    def add(self, order: int, chunk: int, line: int, text: bytes) -> None:
        item = ndjson_line(text, self.where(chunk, line))
        if isinstance(item, Skipped):  # reported by the partition pass (a changed file: never stored as such)
            return
        for skipped in self.asm.add_at(item, order):
            self.out.skipped.append((order, skipped))

    def rescue(self, stubs: numpy.ndarray, wanted: numpy.ndarray) -> numpy.ndarray:
        """Adds the stubs whose row is ``wanted`` (read back from the directory), in partition order; returns the
        others."""
        files = self.scope.files
        for order, chunk, line, length in stubs[wanted][["order", "chunk", "line", "length"]].tolist():
            self.add(order, chunk, line, _read_line(files, order, length))
        left: numpy.ndarray = stubs[~wanted]
        return left

    def resolve(self) -> None:
        """The versions of references that span partitions: the winner kept only where it lies."""
        winners = self.scope.identities.winners
        for ref, version, _norm in self.asm.kept():
            winner = winners.get(ref)
            if winner is not None and winner != version:  # a newer version lies in another partition
                self.asm.keep(ref, winner, Normalized(None), used=False)
        self.asm.conflicts -= winners.keys()  # reported once, by the parent

    def run(self) -> list[PatientFacts]:
        scope = self.scope
        blocks: list[numpy.ndarray] = []
        for order, chunk, line, text in _records(scope.partitions[self.part], blocks):
            self.add(order, chunk, line, text)
        stubs = numpy.concatenate(blocks) if blocks else numpy.empty(0, _STUB)
        # a later (or earlier) version of a kept resource, and every version of an identity spanning partitions
        kept = _digests(ref_digest(ref) for ref, _, _ in self.asm.kept())
        spanning_here = _digests(scope.identities.digests)
        stubs = self.rescue(stubs, numpy.isin(stubs["digest"], kept) | numpy.isin(stubs["digest"], spanning_here))
        self.resolve()
        # a patient whom nothing kept makes a patient (no valid Patient, no relevant data): their other lines,
        # and every version of those lines' resources, decide whether and how they are listed
        present = _digests(hash(norm.patient_id) for _, _, norm in self.asm.kept() if norm.patient_id is not None)
        orphans = stubs["patient"][(stubs["named"] == 1) & ~numpy.isin(stubs["patient"], present)]
        if orphans.size:
            wanted = stubs["digest"][numpy.isin(stubs["patient"], orphans) & (stubs["named"] == 1)]
            self.rescue(stubs, numpy.isin(stubs["digest"], wanted))
            self.resolve()
        facts = self.asm.patients()
        self.out.used, self.out.no_patient = self.asm.report.used, self.asm.report.no_patient
        self.out.warnings = [(ref, 1, tuple(norm.problems)) for ref, _, norm in self.asm.kept()
                             if norm.patient_id is not None and norm.problems]
        self.out.warnings += [(ref, 0, (conflict_warning(ref),)) for ref in self.asm.conflicts]
        return facts


def evaluate_partition(part: int) -> PartitionOutcome:
    """Assemble and evaluate one partition; its outcomes go to the result file in patient order (worker
    entry point)."""
    scope = worker_state()
    assert isinstance(scope, EvaluationScope)
    reader = _PartitionReader(scope, part)
    facts = reader.run()
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
    for pf in facts:
        pickler.dump(pf if scope.then is None else guarded(scope.then, pf))
        pickler.clear_memo()
    out = reader.out
    out.count, out.length = len(facts), buffer.tell()
    if out.length:
        out.offset = scope.results.append(buffer.getvalue())
    return out


# --------------------------------------------------------------------------------------------- merge
class _Region(io.RawIOBase):
    """A byte range of the result file, read with ``pread`` (several readers share the descriptor)."""

    def __init__(self, results: spill.Spill, offset: int, length: int) -> None:
        super().__init__()
        self.results, self.at, self.end = results, offset, offset + length

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        want = min(len(target), self.end - self.at)
        if want <= 0:
            return 0
        data = self.results.read(self.at, want)
        target[:len(data)] = data
        self.at += len(data)
        return len(data)


def _outcomes(results: spill.Spill, outcome: PartitionOutcome) -> Iterator[Any]:
    reader = io.BufferedReader(_Region(results, outcome.offset, outcome.length), _READ_AHEAD)
    for _ in range(outcome.count):  # one unpickler per outcome: each was pickled with a fresh memo
        yield pickle.Unpickler(reader).load()  # noqa: S301 - pickled by our own workers, in our own temporary file


def _patient_key(outcome: Any) -> str:
    if isinstance(outcome, PatientFacts):
        return outcome.patient_id
    ref: str = outcome.patient
    return ref.removeprefix("Patient/")


class AllPatients:
    """One ``--all-patients`` run: the passes, then the outcomes merged in patient order (``outcomes``)."""

    def __init__(self, directory: Path, cmap: CodeMap, then: Callable[[PatientFacts], Any] | None,
                 progress: Callable[[int], None] | None, processes: int, chunk_bytes: int,
                 trial: TrialConcepts | None, partitions: int | None) -> None:
        self.files = tuple(ndjson_files(directory))
        self.plan = plan_chunks(self.files, chunk_bytes)
        self.cmap, self.then, self.progress, self.processes = cmap, then, progress, processes
        self.concepts = Concepts.of(trial if trial is not None else default_trial())
        total = sum(p.stat().st_size for p in self.files)
        self.count = partitions or partition_count(total, processes)
        self.report = ReadReport()
        self.fds: list[int] = []
        self.results: spill.Spill | None = None  # opened when the outcomes are first asked for

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()
        if self.results is not None:
            self.results.close()
            self.results = None

    def run(self) -> Iterator[Any]:
        """The outcomes in patient-id order (the passes run when the first one is asked for)."""
        try:
            self.results = results = spill.Spill()
            parts = tuple(_appending() for _ in range(self.count))
            self.fds += parts
            buckets = tuple(_appending() for _ in range(self.count))
            self.fds += buckets
            line_base, skipped = self._partition(parts, buckets)
            identities = spanning(buckets, self.files, self.cmap)
            for fd in buckets:
                os.ftruncate(fd, 0)
            done = self._evaluate(parts, line_base, identities, results)
            skipped += [s for o in done for s in o.skipped]
            self.report.skipped = [s for _, s in sorted(skipped, key=lambda item: item[0])]
            found = sorted([w for o in done for w in o.warnings]
                           + [(ref, 0, (conflict_warning(ref),)) for ref in identities.conflicts],
                           key=lambda item: item[:2])
            self.report.warnings = [w for _, _, ws in found for w in ws]
            self.report.used = sum(o.used for o in done)
            self.report.no_patient = sum(o.no_patient for o in done)
            streams = [_outcomes(results, o) for o in done if o.count]
            yield from heapq.merge(*streams, key=_patient_key)
        finally:
            self.close()

    def _partition(self, parts: tuple[int, ...], buckets: tuple[int, ...]
                   ) -> tuple[tuple[int, ...], list[tuple[int, Skipped]]]:
        scope = PartitionScope(self.cmap, self.concepts, parts, buckets)
        per_file = [0] * len(self.files)
        line_base = [0] * len(self.plan)
        skipped: list[tuple[int, Skipped]] = []
        for result in Pool(scope, self.processes).map(partition_chunk, self.plan):
            chunk = result.chunk
            line_base[chunk.index] = per_file[chunk.file_index]
            name = self.files[chunk.file_index].name
            skipped += [(order, Skipped(f"{name} line {per_file[chunk.file_index] + line}", s.reason, s.expression))
                        for order, line, s in result.skipped]
            per_file[chunk.file_index] += result.lines
            self.report.read += result.read
            self.report.ignored_types += result.ignored_types
            if self.progress is not None:
                self.progress(result.lines)
        return tuple(line_base), skipped

    def _evaluate(self, parts: tuple[int, ...], line_base: tuple[int, ...], identities: Identities,
                  results: spill.Spill) -> list[PartitionOutcome]:
        scope = EvaluationScope(self.cmap, self.files, tuple(p.name for p in self.files), line_base,
                                tuple(c.file_index for c in self.plan), parts, results, identities, self.then)
        done = []
        # the largest partitions first, so that the workers finish together (the outcomes are merged by patient,
        # whatever order they come in)
        order = sorted(range(self.count), key=lambda part: -os.fstat(parts[part]).st_size)
        for outcome in Pool(scope, self.processes).map(evaluate_partition, order):
            os.ftruncate(parts[outcome.part], 0)  # its disk space back as soon as it is evaluated
            done.append(outcome)
        return done


def all_patients_map(directory: Path, cmap: CodeMap, then: Callable[[PatientFacts], Any] | None,
                     progress: Callable[[int], None] | None = None, *, processes: int | None = None,
                     chunk_bytes: int = CHUNK_BYTES, trial: TrialConcepts | None = None,
                     partitions: int | None = None) -> tuple[Iterator[Any], ReadReport]:
    """``then`` of the facts of *every* patient of the directory (the facts themselves when None), in patient-id
    order, computed in bounded memory on every core (see the module docstring); and the read report, complete
    once the outcomes have been consumed. ``then`` runs in the worker processes (a module-level function or a
    ``functools.partial`` of one). Without positioned I/O and ``fcntl`` (Windows) it is the per-patient path:
    the same outcomes, in memory."""
    if not POSIX:
        return _in_memory(directory, cmap, then)
    run = AllPatients(directory, cmap, then, progress, processes or default_processes(), chunk_bytes, trial,
                      partitions)
    return run.run(), run.report


def _in_memory(directory: Path, cmap: CodeMap, then: Callable[[PatientFacts], Any] | None
               ) -> tuple[Iterator[Any], ReadReport]:
    asm = PatientAssembler(cmap)
    asm.add_items(read_ndjson_dir(directory))
    patients = asm.patients()
    return iter(patients if then is None else [guarded(then, pf) for pf in patients]), asm.report


__all__ = ["PARTITION_BYTES", "POSIX", "AllPatients", "all_patients_map", "partition_count", "partition_of",
           "ref_digest"]
