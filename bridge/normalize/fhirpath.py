"""Small, total readers of FHIR JSON: dates, references, codings by system. Never index ``coding[0]``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from functools import lru_cache
from typing import Any

from bridge.model import PartialDate

_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


def partial_date(text: Any) -> PartialDate | None:
    """A FHIR date/dateTime string as written (its local date part), keeping its precision."""
    if not isinstance(text, str):
        return None
    return _partial_date(_date_part(text))


def _date_part(text: str) -> str:
    """The characters ``_DATE`` can read of ``text`` (it matches at most ``YYYY-MM-DD`` at the start, after white
    space): the key of the remembered readings, so that every stamp of one day is one entry."""
    return text.lstrip()[:10]


@lru_cache(maxsize=1 << 12)
def _partial_date(text: str) -> PartialDate | None:
    """``partial_date`` of a string's date part, remembered (PartialDate is frozen)."""
    m = _DATE.match(text.strip())
    if not m:
        return None
    year, month, day = (int(g) if g else None for g in m.groups())
    try:
        pd = PartialDate(year or 0, month, day)
        pd.earliest()
    except ValueError:
        return None
    return pd


def local_date(text: Any) -> date | None:
    """The calendar date as written in the resource (RULES.md §4: no time-zone shift), full dates only."""
    if not isinstance(text, str):
        return None
    return _local_date(_date_part(text))


@lru_cache(maxsize=1 << 12)
def _local_date(text: str) -> date | None:
    pd = _partial_date(text)
    return pd.earliest() if pd and pd.is_full else None


def codings(concept: Any) -> Iterator[tuple[str | None, str | None]]:
    """(system, code) of every coding of a CodeableConcept (or of a bare Coding)."""
    if not isinstance(concept, dict):
        return
    items = concept.get("coding") if "coding" in concept else [concept]
    for c in items or []:
        if isinstance(c, dict):
            system, code = c.get("system"), c.get("code")
            yield (system if isinstance(system, str) else None, code if isinstance(code, str) else None)


def status_code(concept: Any, system_suffix: str) -> str | None:
    """The code of a status CodeableConcept, chosen by its system (e.g. ``condition-clinical``)."""
    for system, code in codings(concept):
        if code and (system is None or system.endswith(system_suffix)):
            return code.strip()
    return None


def ref_id(reference: Any, resource_type: str, aliases: dict[str, str] | None = None) -> str | None:
    """The logical id in a Reference to ``resource_type`` (relative, absolute URL or urn:uuid alias)."""
    if not isinstance(reference, dict):
        return None
    ref = reference.get("reference")
    if not isinstance(ref, str):
        return None
    if aliases and ref in aliases:
        ref = aliases[ref]
    if ref.startswith(resource_type) and ref[len(resource_type):len(resource_type) + 1] == "/":
        tail = ref[len(resource_type) + 1:]  # the common relative form "Type/id": what the split below gives
        if tail and "/" not in tail and tail != "_history":
            return tail
    parts = ref.rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == resource_type:
        return parts[-1]
    return None


def effective(resource: dict[str, Any], *names: str) -> date | None:
    """The first present date among ``names`` (``xDateTime``, ``xPeriod.start``, ``xInstant``)."""
    for name in names:
        value = resource.get(name)
        if isinstance(value, dict):
            value = value.get("start")
        d = local_date(value)
        if d:
            return d
    return None


__all__ = ["codings", "effective", "local_date", "partial_date", "ref_id", "status_code"]
