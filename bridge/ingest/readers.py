"""Sources: yield FHIR resources (plain JSON dicts) with where each came from; nothing about criteria.

- a Bundle file of any type (collection, searchset, transaction, batch, history) or a single resource file;
- ``-``: a Bundle on standard input;
- a directory of NDJSON files in the Bulk Data layout (any ``*.ndjson``), streamed line by line.

Every item is an ``Entry(resource, where)``; ``where`` names the file and the entry index or line number,
never content. A problem with one entry is reported as a ``Skipped`` item (and the reader goes on); a
problem with the whole source raises ``SourceUnreadable``. A Bundle entry holding only a ``request`` or a
``response`` (a batch or transaction, their responses, a history's deletes) carries no clinical data: it is a
``NonClinical`` item, counted as read, never a skip (RULES.md §2).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from bridge.errors import SourceUnreadable
from bridge.model import Entry, Item, NonClinical, Skipped  # the item types live in the model; re-exported here


def _load_json(data: bytes, label: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SourceUnreadable(f"{label}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None


def _bundle_items(doc: Any, label: str) -> Iterator[Item]:
    if not isinstance(doc, dict):
        raise SourceUnreadable(f"{label}: expected a FHIR resource or Bundle object, found a JSON {type(doc).__name__}")
    if doc.get("resourceType") != "Bundle":
        if not isinstance(doc.get("resourceType"), str):
            raise SourceUnreadable(f"{label}: the document has no resourceType")
        yield Entry(doc, label)
        return
    entries = doc.get("entry") or []
    if not isinstance(entries, list):
        raise SourceUnreadable(f"{label}: Bundle.entry must be an array")
    for i, entry in enumerate(entries):
        yield _bundle_entry(entry, f"{label} entry {i}", i)


def _bundle_entry(entry: Any, where: str, index: int) -> Item:
    if not isinstance(entry, dict):
        return Skipped(where, "entry is not an object", f"Bundle.entry[{index}]")
    resource = entry.get("resource")
    if resource is None:
        if isinstance(entry.get("request"), dict) or isinstance(entry.get("response"), dict):
            return NonClinical(where)  # a request (a search, a delete) or a response: not a skip
        return Skipped(where, "entry has no resource", f"Bundle.entry[{index}].resource")
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return Skipped(where, "entry resource has no resourceType", f"Bundle.entry[{index}].resource.resourceType")
    full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
    return Entry(resource, where, full_url)


def read_bundle_bytes(data: bytes, label: str) -> Iterator[Item]:
    yield from _bundle_items(_load_json(data, label), label)


def read_bundle_file(path: Path) -> Iterator[Item]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceUnreadable(f"{path}: cannot read ({exc.strerror})") from None
    yield from read_bundle_bytes(data, str(path))


def read_stdin(stream: BinaryIO | None = None) -> Iterator[Item]:
    stream = stream or sys.stdin.buffer
    yield from read_bundle_bytes(stream.read(), "<stdin>")


def ndjson_files(directory: Path) -> list[Path]:
    files = sorted(p for p in directory.iterdir() if p.name.endswith(".ndjson") and p.is_file())
    if not files:
        raise SourceUnreadable(f"{directory}: no *.ndjson files in this directory")
    return files


def read_ndjson_file(path: Path) -> Iterator[Item]:
    """Stream one NDJSON file; a bad line is reported and skipped, the rest is read."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise SourceUnreadable(f"{path}: cannot read ({exc.strerror})") from None
    with handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            yield ndjson_line(line, f"{path.name} line {lineno}")


def ndjson_line(line: bytes | bytearray, where: str) -> Entry | Skipped:
    try:
        resource = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return Skipped(where, f"not JSON ({exc.msg}, column {exc.colno})")
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return Skipped(where, "line has no resourceType", "resourceType")
    return Entry(resource, where)


def read_ndjson_dir(directory: Path) -> Iterator[Item]:
    for path in ndjson_files(directory):
        yield from read_ndjson_file(path)


def read_source(source: str) -> Iterator[Item]:
    """Dispatch on the source: ``-`` (stdin), a directory (NDJSON) or a file (Bundle or resource)."""
    if source == "-":
        return read_stdin()
    path = Path(source)
    if path.is_dir():
        return read_ndjson_dir(path)
    if not path.exists():
        raise SourceUnreadable(f"{source}: no such file or directory")
    if path.suffix == ".ndjson":
        return read_ndjson_file(path)
    return read_bundle_file(path)


__all__ = ["Entry", "Item", "NonClinical", "Skipped", "ndjson_files", "ndjson_line", "read_bundle_bytes",
           "read_bundle_file", "read_ndjson_dir", "read_ndjson_file", "read_source", "read_stdin"]
