"""One way in: ``open_source`` turns what a user names as SOURCE into reader items.

SOURCE is one of:

- a FHIR base URL (``http://`` or ``https://``): a pull (``bridge.ingest.pull``) of the patients named in
  ``patients``, or else of the admitted patients (pre-screen) or the infused ones (``medications=True``: the
  assessment, with their MedicationAdministrations and no look-back);
- ``-``: a Bundle on standard input;
- a directory: its Bulk Data NDJSON files;
- a file: a Bundle of any type or a single resource (``.ndjson``: one resource per line).

Every command that reads patient data (prescreen, assess, report, registry export) opens its SOURCE here, so a
source means the same thing everywhere and a new kind of source is added in one place. Naming patients only
makes sense for a server: with any other source it is an ``InputError``, raised before anything is read.

The items come out lazily; for a URL the HTTP client (requests, JWT) is imported and opened only when the
items are first read, and closed when they are exhausted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date
from typing import TYPE_CHECKING

from bridge.config import Settings
from bridge.errors import InputError
from bridge.ingest.readers import read_source
from bridge.model import Item

if TYPE_CHECKING:
    from bridge.client import FhirClient
    from bridge.normalize.mappings import CodeMap


def is_url(source: str) -> bool:
    """A FHIR base URL (pulled), as opposed to a file, ``-`` or a directory (read)."""
    return source.startswith(("http://", "https://"))


def check_source(source: str, patients: Sequence[str] | None) -> None:
    """Patient ids can only be pulled from a server: with any other source they are an ``InputError``."""
    if patients and not is_url(source):
        raise InputError(f"{source}: patient ids can be pulled only from a FHIR base URL, not from a file, "
                         "'-' or a directory")


def open_source(source: str, cmap: CodeMap, as_of: date, settings: Settings | None = None,
                patients: Sequence[str] | None = None, medications: bool = False) -> Iterator[Item]:
    """The items of ``source``: pulled from a FHIR base URL, or read from ``-``, a directory or a file.

    ``cmap`` and ``as_of`` choose what a pull fetches (mapped codes, look-back); ``settings`` how it
    authenticates; ``patients`` which patients it fetches; ``medications`` whether it fetches the infusions
    (the assessment). A file that cannot be read raises ``SourceUnreadable`` here, before iteration."""
    check_source(source, patients)
    if is_url(source):
        return _pull(source, cmap, as_of, settings or Settings(), patients, medications)
    return read_source(source)


def pulled(client: FhirClient, cmap: CodeMap, as_of: date, patients: Sequence[str] | None = None,
           medications: bool = False) -> Iterator[Item]:
    """The items of a pull through an open client (the caller owns it)."""
    from bridge.ingest.pull import pull  # HTTP loads only for a server source

    return pull(client, cmap, as_of, patients, medications=medications)


def _pull(base_url: str, cmap: CodeMap, as_of: date, settings: Settings, patients: Sequence[str] | None,
          medications: bool) -> Iterator[Item]:
    from bridge.client import FhirClient  # requests, JWT and crypto load only when a server is the source

    with FhirClient(base_url, settings) as client:
        yield from pulled(client, cmap, as_of, patients, medications)


__all__ = ["check_source", "is_url", "open_source", "pulled"]
