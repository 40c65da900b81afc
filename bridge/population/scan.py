"""Passes 1 and 2 over one chunk, in a worker: find the candidates, then keep what they need.

Pass 1 parses the Condition chunks and collects the subjects of gate Conditions (``find_candidates``).
Pass 2 (``screen_chunk``) judges a canonical range in bulk — its type is known, unread types are skipped
without looking at a line, and ``PatientFilter`` finds the lines naming a candidate — and parses the rest line
by line. A parsed line of a candidate is kept when it is their Patient or ``relevant``; kept lines, and only
they, are validated and normalized by the per-patient assembler with their position in the directory as their
arrival order, and spilled per patient; dropped ones leave a 64-bit digest of their reference (the merge's
guard against a dropped later version of a kept resource).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import orjson

# TODO(issue #13): the reader's own line decoding (so the skip reasons are the same) is private to
# bridge.ingest.readers; import it under a public name once readers.py exports one.
from bridge.ingest.readers import ndjson_line
from bridge.model import Entry, Skipped
from bridge.normalize import fastvalid
from bridge.normalize.facts import READ_TYPES, source_ref
from bridge.normalize.mappings import CodeMap
from bridge.population import spill
from bridge.population.assembler import PositionedAssembler
from bridge.population.chunks import (
    Bytes,
    Chunk,
    canonical_lines,
    count_newlines,
    is_canonical_line,
    line_spans,
    line_type,
    read_chunk_reusing,
)
from bridge.population.pool import worker_state
from bridge.population.prefilter import PatientFilter
from bridge.population.relevance import CachedCodes, Concepts, is_gate_condition, patient_of, relevant
from bridge.population.spill import Packed, Spill

SCREENED_TYPES = frozenset({"Patient", "Observation", "Condition"})
_UNPLACED = "\0"  # a Skipped's place before the chunk's first line number is known
_FILE_SHIFT = 40  # order = file index << 40 | byte offset: files up to 1 TiB


@dataclass(frozen=True)
class Scope:
    """What a worker needs for pass 1 or 2; built in the parent, inherited on fork."""

    cmap: CodeMap
    concepts: Concepts
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

    def prepare(self) -> None:
        """The filter, the code cache, the R4B models and the fast path's rules the workers validate with (built
        lazily otherwise), built once in the parent and inherited by the workers."""
        _ = self.filter, self.codes
        fastvalid.prepare(SCREENED_TYPES)  # the models and the fast path's rules


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


def _scope() -> Scope:
    state = worker_state()
    assert isinstance(state, Scope)
    return state


def find_candidates(chunk: Chunk) -> set[str]:
    """Pass 1: subjects of the gate Conditions in one chunk (worker entry point)."""
    scope = _scope()
    codes, found = scope.codes, set()
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
        if isinstance(res, dict) and res.get("resourceType") == "Condition" and \
                is_gate_condition(res, codes, scope.concepts):
            pid = patient_of(res)
            if pid:
                found.add(pid)
    return found


def screen_chunk(chunk: Chunk) -> ChunkResult:
    """Pass 2 over one chunk (worker entry point)."""
    return ChunkReader(_scope(), chunk, read_chunk_reusing(chunk)).run()


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
        spans = line_spans(self.buf, lo, hi) if every_line else self.scope.filter.lines(self.buf, lo, hi)
        for start, end in spans:
            self._parse(start, end, None)

    def _line_by_line(self, lo: int, hi: int, first_line: int) -> int:
        lineno = first_line - 1
        for start, end in line_spans(self.buf, lo, hi):
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
        item = ndjson_line(text, _UNPLACED)
        if isinstance(item, Skipped):
            self._skip(start, lineno, item)
        else:
            self._consider(item.resource, start, lineno)

    def _consider(self, res: dict[str, Any], start: int, lineno: int | None) -> None:
        rtype = res["resourceType"]
        if rtype not in READ_TYPES:
            self.result.ignored_types += 1
            return
        scope = self.scope
        pid = patient_of(res)
        candidate = pid is not None and pid in scope.candidates
        if rtype == "Condition" and self.stray_check and not candidate and pid and \
                is_gate_condition(res, scope.codes, scope.concepts):
            self.result.strays.add(pid)
        if not candidate or rtype not in SCREENED_TYPES:
            return
        ref = source_ref(res)
        if ref in scope.keep_refs or relevant(res, scope.codes, scope.concepts):
            order = (self.chunk.file_index << _FILE_SHIFT) | (self.chunk.start + start)
            for skipped in self.asm.add_at(Entry(res, _UNPLACED), order):
                self._skip(start, lineno, skipped)
        else:
            self.dropped.append(spill.digest(ref))

    def _skip(self, start: int, lineno: int | None, skipped: Skipped) -> None:
        local = lineno if lineno is not None else count_newlines(self.buf, 0, start) + 1
        self.result.skipped.append((local, skipped))


__all__ = ["SCREENED_TYPES", "ChunkReader", "ChunkResult", "Scope", "find_candidates",
           "screen_chunk"]
