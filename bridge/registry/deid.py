"""De-identification: HIPAA Safe Harbor (45 CFR 164.514(b)(2)) applied to what a package says.

The package is *built* from a short list of allowed items (see ``docs/registry.md``) rather than scrubbed from
the source, so names, addresses, telecom, identifiers, URLs, device ids, free text and source resource ids are
never copied. What is derived from the source is generalised here:

- **dates** -> the year, plus the day offset from day 0 in the ``relative-day`` extension on the primitive
  (``"effectiveDateTime": "2026", "_effectiveDateTime": {"extension": [relative-day = 17]}``);
- **birth date** -> the birth year, dropped when the patient is over 89 on the as-of date (computed from the
  earliest possible birth day of a partial date: the cautious side);
- **age** -> whole years at infusion, written as ``> 89`` (Quantity comparator) above 89;
- **address** -> state/province and country only.

``identifying_values`` collects every identifying string and date of the raw resources; ``leak_issues`` is the
guard run on every package before it is written or sent: no such value as a whole token, and no date more
precise than a year, anywhere in the package. Its issues carry paths, never the value found.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any

from bridge.errors import Issue
from bridge.model import PartialDate
from bridge.normalize.fhirpath import partial_date
from bridge.publish.study import BRIDGE_BASE

RELATIVE_DAY = f"{BRIDGE_BASE}/StructureDefinition/relative-day"
OLDEST_AGE = 89
MIN_GUARDED_CHARS = 3
_PRECISE_DATE = re.compile(r"(?<![0-9A-Za-z])[0-9]{4}-[0-9]{2}(?![0-9A-Za-z])")
_EXACT_KEYS = frozenset({"system", "url", "profile"})  # our canonical URLs: compared whole, not by token
_NAME_PARTS = ("family", "given", "text")
_ADDRESS_PARTS = ("line", "city", "district", "postalCode", "text")

Json = dict[str, Any]


# ---------------------------------------------------------------------------------------------- dates


def relative_day(when: date, day0: date) -> int:
    """Days from day 0 (day 0 itself is 0, the day before -1)."""
    return (when - day0).days


def dated(element: str, when: date, day0: date) -> Json:
    """``{element: "<year>", "_<element>": relative-day}``: a date as Safe Harbor lets it travel."""
    ext = {"url": RELATIVE_DAY, "valueInteger": relative_day(when, day0)}
    return {element: f"{when.year:04d}", f"_{element}": {"extension": [ext]}}


def age_years(birth: PartialDate, on: date) -> int:
    """Whole years from the earliest possible birth day to ``on``."""
    born = birth.earliest()
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def birth_of(patient: Json | None) -> PartialDate | None:
    return partial_date(patient.get("birthDate")) if patient else None


def birth_year(patient: Json | None, as_of: date) -> str | None:
    """The birth year, or None when unknown or when the patient is over 89 on ``as_of``."""
    birth = birth_of(patient)
    if birth is None or age_years(birth, as_of) > OLDEST_AGE:
        return None
    return f"{birth.year:04d}"


def age_quantity(patient: Json | None, on: date) -> Json | None:
    """Age in whole years on ``on`` as a UCUM Quantity; ``> 89`` above 89; None when the birth date is unknown."""
    birth = birth_of(patient)
    if birth is None:
        return None
    years = age_years(birth, on)
    q: Json = {"value": min(years, OLDEST_AGE), "unit": "years", "system": "http://unitsofmeasure.org", "code": "a"}
    if years > OLDEST_AGE:
        q["comparator"] = ">"
    return q


def generalised_address(patient: Json | None) -> list[Json]:
    """State/province and country of each address, nothing below; duplicates and empty ones dropped."""
    out: list[Json] = []
    for addr in (patient or {}).get("address") or []:
        if not isinstance(addr, dict):
            continue
        kept = {k: addr[k] for k in ("state", "country") if isinstance(addr.get(k), str) and addr[k].strip()}
        if kept and kept not in out:
            out.append(kept)
    return out


# ---------------------------------------------------------------------------------------------- the guard


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _name_values(patient: Json) -> Iterator[Any]:
    people = [patient, *[c for c in patient.get("contact") or [] if isinstance(c, dict)]]
    for person in people:
        names = person.get("name")
        for name in names if isinstance(names, list) else [names]:
            if isinstance(name, dict):
                yield from (name.get(k) for k in _NAME_PARTS)
        yield from (t.get("value") for t in person.get("telecom") or [] if isinstance(t, dict))
        addresses = person.get("address")
        for addr in addresses if isinstance(addresses, list) else [addresses]:
            if isinstance(addr, dict):
                yield from (addr.get(k) for k in _ADDRESS_PARTS)


def _identifier_values(resource: Json) -> Iterator[Any]:
    yield resource.get("id")
    yield from (i.get("value") for i in resource.get("identifier") or [] if isinstance(i, dict))
    text = resource.get("text")
    if isinstance(text, dict):
        yield text.get("div")


def _date_values(resource: Json) -> Iterator[str]:
    for value in _strings(resource):
        if _PRECISE_DATE.search(value):
            yield from (m.group(0) for m in re.finditer(r"[0-9]{4}-[0-9]{2}(?:-[0-9]{2})?", value))


def identifying_values(resources: Iterable[Json | None], allowed: Iterable[str] = ()) -> set[str]:
    """Every identifying string and precise date of ``resources`` (names, telecom, address below the state,
    ids, identifier values, narrative, dates), minus ``allowed`` values the package may carry (state, country).
    """
    found: set[str] = set()
    for res in resources:
        if not isinstance(res, dict):
            continue
        raw: list[Any] = [*_identifier_values(res), *_date_values(res)]
        if res.get("resourceType") == "Patient":
            raw += list(_name_values(res))
        found.update(_flatten(raw))
    keep = {a.strip().lower() for a in allowed}
    return {v for v in found if len(v) >= MIN_GUARDED_CHARS and v.lower() not in keep}


def _flatten(values: Iterable[Any]) -> Iterator[str]:
    for value in values:
        if isinstance(value, list):
            yield from _flatten(value)
        elif isinstance(value, str) and value.strip():
            yield value.strip()


def _paths(node: Any, path: str, key: str = "") -> Iterator[tuple[str, str, str]]:
    if isinstance(node, str):
        yield path, key, node
    elif isinstance(node, dict):
        for name, value in node.items():
            yield from _paths(value, f"{path}.{name}", name)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, f"{path}[{i}]", key)


def _token(value: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])", re.IGNORECASE)


def leak_issues(package: Json, forbidden: Iterable[str] = ()) -> list[Issue]:
    """Where ``package`` carries a date more precise than a year or one of ``forbidden`` (as a whole token)."""
    values = sorted({v for v in forbidden if len(v) >= MIN_GUARDED_CHARS})
    patterns = [_token(v) for v in values]
    lowered = {v.lower() for v in values}
    issues: list[Issue] = []
    for path, key, text in _paths(package, "Bundle"):
        if _PRECISE_DATE.search(text):
            issues.append(Issue("security", "a date more precise than a year would leave the site", (path,)))
        elif text.lower() in lowered or (key not in _EXACT_KEYS and any(p.search(text) for p in patterns)):
            issues.append(Issue("security", "an identifying value of the source would leave the site", (path,)))
    return issues


__all__ = ["OLDEST_AGE", "RELATIVE_DAY", "age_quantity", "age_years", "birth_of", "birth_year", "dated",
           "generalised_address", "identifying_values", "leak_issues", "relative_day"]
