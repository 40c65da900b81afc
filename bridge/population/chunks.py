"""Reading an NDJSON directory in chunks, and telling where its lines are without parsing them.

The population path never reads a file line by line in Python: each file is cut into byte ranges of about
``CHUNK_BYTES`` that end at a newline (``plan_chunks``), a worker reads a range into one reused buffer
(``read_chunk_reusing``), and the lines are found with vector operations on the positions of the newlines.

A range is *canonical* when every line starts with ``{"resourceType":"<T>"``, ends with ``}`` and holds no
backslash: then each line's type is known without parsing, no line is truncated or padded at its edges, and no
string holds a newline — so the bytes checks of ``bridge.population.prefilter`` may judge it in bulk. Anything
else (an escape, a truncated or CRLF line, another key order) is parsed line by line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import orjson

from bridge.errors import SourceUnreadable

CHUNK_BYTES = 8 << 20
PREFIX = b'{"resourceType":"'
Bytes = bytes | bytearray  # a chunk is read into a reused bytearray
_NEWLINE = 10
_CLOSE = ord("}")
_BLOCK = 1 << 18  # newline positions in blocks: the temporary stays in cache, no page faults


# ------------------------------------------------------------------------------------------- chunks
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


def release_buffer() -> None:
    """Drops this process's read buffer (a worker's goes with the worker; the parent calls this after a pass
    run in its own process)."""
    _BUFFER.clear()


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


# ------------------------------------------------------------------------------------------- lines
def line_type(line: Bytes) -> str | None:
    """The resource type of a line that starts canonically (``{"resourceType":"X"``), else None."""
    if not line.startswith(PREFIX):
        return None
    end = line.find(b'"', len(PREFIX), len(PREFIX) + 80)
    rtype = line[len(PREFIX):end] if end > 0 else b""
    return rtype.decode("ascii") if rtype.isascii() and rtype.isalpha() else None


def is_canonical_line(line: Bytes) -> bool:
    """Starts with ``{"resourceType":"``, ends with ``}`` (nothing after it) and holds no escape."""
    return line.startswith(PREFIX) and line.endswith(b"}") and b"\\" not in line


def canonical_lines(buf: Bytes, resource_type: str, lo: int = 0, hi: int | None = None) -> int | None:
    """The number of lines in ``buf[lo:hi]`` when every one is a canonical ``resource_type`` line, else None.

    The range holds whole lines; its last line may lack the newline (the end of a file). A blank line, a
    ``\\r\\n`` ending, a truncated line or a line of another type makes the range non-canonical. Checked on the
    newlines' positions (``newline_positions``): the byte before each is ``}`` and the bytes after each
    (but the last) are the canonical head — a few vector comparisons instead of a search for the head.
    """
    hi = len(buf) if hi is None else hi
    head = PREFIX + resource_type.encode("ascii") + b'"'
    terminated = buf.endswith(b"\n", lo, hi)
    if not buf.startswith(head, lo, hi) or not buf.endswith(b"}\n" if terminated else b"}", lo, hi):
        return None
    if buf.find(b"\\", lo, hi) >= 0:
        return None
    view = numpy.frombuffer(buf, numpy.uint8, count=hi - lo, offset=lo)
    ends = newline_positions(buf, lo, hi) - lo
    if ends.size and (ends[0] == 0 or not bool((view[ends - 1] == _CLOSE).all())):
        return None  # a blank first line, or a line that does not end with "}" (truncated, "\r\n", ...)
    starts = ends[:-1] + 1 if terminated else ends + 1  # every line but the first starts after a newline
    if starts.size and int(starts[-1]) + len(head) > view.size:
        return None  # the last line is shorter than the head
    for i, byte in enumerate(head):
        if not bool((view[starts + i] == byte).all()):
            return None
    return int(ends.size) if terminated else int(ends.size) + 1


def newline_positions(buf: Bytes, lo: int = 0, hi: int | None = None) -> numpy.ndarray[Any, numpy.dtype[numpy.intp]]:
    """The indexes in ``buf`` of the newlines of ``buf[lo:hi]``, ascending (found block by block, so the
    temporaries stay in cache)."""
    hi = len(buf) if hi is None else hi
    view = numpy.frombuffer(buf, numpy.uint8, count=hi - lo, offset=lo)
    parts = [numpy.flatnonzero(view[i:i + _BLOCK] == _NEWLINE) + (lo + i) for i in range(0, hi - lo, _BLOCK)]
    return numpy.concatenate(parts) if parts else numpy.empty(0, numpy.intp)


def count_newlines(buf: Bytes, lo: int = 0, hi: int | None = None) -> int:
    """``buf.count(b"\\n", lo, hi)`` (the line number of a skipped line in a chunk)."""
    return int(newline_positions(buf, lo, hi).size)


def line_spans(buf: Bytes, lo: int = 0, hi: int | None = None) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of every line of ``buf[lo:hi]``, ``end`` at its newline (or ``hi``)."""
    hi = len(buf) if hi is None else hi
    start = lo
    while start < hi:
        end = buf.find(b"\n", start, hi)
        end = hi if end < 0 else end
        yield start, end
        start = end + 1


__all__ = ["CHUNK_BYTES", "PREFIX", "Bytes", "Chunk", "canonical_lines", "count_newlines", "file_type",
           "is_canonical_line", "line_spans", "line_type", "newline_positions", "plan_chunks", "read_chunk",
           "read_chunk_reusing", "release_buffer"]
