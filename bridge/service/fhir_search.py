"""Search, shaping and Bundles of the ``/fhir`` API, pure: kept versions in, FHIR JSON out.

A stored resource is served as ``Type/id`` with ``meta.versionId`` and ``meta.lastUpdated`` of the index's own
version (``bridge.state.published``). A search keeps the hits matching every criterion (a token or reference
criterion matches when any of its values matches any value of the element), sorts them (``_sort``, else the
store's order), and returns one page as a ``searchset`` Bundle whose links are absolute URLs under the
configured base. ``_count=0`` and ``_summary=count`` give the total and no entries; no Bundle, resource or
element is ever an empty array or object (``prune``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import urlencode

from bridge.service.fhir_params import Criterion, Items, Paging, SearchParam, SearchQuery, Shape, elements_of
from bridge.state.published import reference

Json = dict[str, Any]
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
             "display": "subsetted"}


@dataclass(frozen=True)
class Hit:
    """One resource version as served, with its last-updated instant (epoch seconds) for filters and sorting."""

    resource: Json
    last_updated: float

    @property
    def id(self) -> str:
        return str(self.resource["id"])

    @property
    def version_id(self) -> str:
        return str(self.resource["meta"]["versionId"])


def instant(epoch: float) -> str:
    """A FHIR instant in UTC with milliseconds."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def prune(value: Any) -> Any:
    """``value`` without None, empty strings, empty arrays and empty objects, at any depth (FHIR JSON forbids
    them)."""
    if isinstance(value, dict):
        kept = {k: prune(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        items = [prune(v) for v in value]
        return [v for v in items if v not in (None, "", [], {})]
    return value


def served(resource: Json, resource_id: str, version_id: int, last_updated: float) -> Hit:
    """The stored body as this server serves it: its id, and the index's version in ``meta``."""
    meta = resource.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    kept = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
    body = {"resourceType": resource.get("resourceType"), "id": resource_id,
            "meta": {"versionId": str(version_id), "lastUpdated": instant(last_updated), **kept},
            **{k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}}
    return Hit(prune(body), last_updated)


# ------------------------------------------------------------------------------------------ matching


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def values_at(param: SearchParam, resource: Json) -> list[Any]:
    """The values of ``param.path`` in ``resource``: dotted through objects and arrays (``entity.what``), a
    leading ``<resourceType>.`` allowed."""
    nodes: list[Any] = [resource]
    for name in param.path.removeprefix(f"{resource.get('resourceType')}.").split("."):
        nodes = [v for n in nodes if isinstance(n, dict) for v in _as_list(n.get(name))]
    return nodes


def _codes(node: Any, system: str) -> list[tuple[str | None, str]]:
    """(system, code) of a code (with the element's implicit system), a Coding, each Coding of a
    CodeableConcept, or an Identifier (system, value)."""
    if isinstance(node, str):
        return [(system or None, node)]
    if not isinstance(node, dict):
        return []
    if "coding" in node:
        return [pair for coding in _as_list(node["coding"]) for pair in _codes(coding, system) if coding]
    for key in ("code", "value"):  # a Coding, else an Identifier
        if isinstance(node.get(key), str):
            found = node.get("system")
            return [(found if isinstance(found, str) else None, node[key])]
    return []


def tokens(param: SearchParam, resource: Json) -> list[tuple[str | None, str]]:
    """(system, code) of each value of a token element: a code with its implicit system, a Coding, the codings
    of a CodeableConcept, an Identifier, the id."""
    return [pair for node in values_at(param, resource) for pair in _codes(node, param.system)]


def references(param: SearchParam, resource: Json) -> list[str]:
    return [r for r in (reference(n) for n in values_at(param, resource)) if r]


def _token_matches(wanted: tuple[str | None, str], found: tuple[str | None, str]) -> bool:
    system, code = wanted
    if system is None:
        return code == found[1]
    if system == "":
        return found[0] is None and code == found[1]
    return found[0] == system and code in ("", found[1])


def _reference_matches(wanted: str, found: str) -> bool:
    """``Type/id`` equal, or a bare id (a parameter of any target type) equal to the id of any type."""
    return wanted == found if "/" in wanted else found.split("/")[-1] == wanted


def _date_matches(wanted: tuple[str, float, float], when: float) -> bool:
    prefix, start, end = wanted
    return {"eq": start <= when < end, "ne": not start <= when < end, "gt": when >= end, "sa": when >= end,
            "lt": when < start, "eb": when < start, "ge": when >= start, "le": when < end}[prefix]


def matches(criterion: Criterion, hit: Hit) -> bool:
    param = criterion.param
    if param.type == "date":
        return any(_date_matches(v, hit.last_updated) for v in criterion.values)
    if param.type == "reference":
        return any(_reference_matches(w, f) for w in criterion.values for f in references(param, hit.resource))
    if param.type in ("uri", "string"):
        found_text = [v for v in values_at(param, hit.resource) if isinstance(v, str)]
        if param.type == "uri":  # exact (RULES of FHIR uri search: no normalisation)
            return any(w == f for w in criterion.values for f in found_text)
        return any(f.casefold().startswith(w.casefold()) for w in criterion.values for f in found_text)
    found = tokens(param, hit.resource)
    return any(_token_matches(w, f) for w in criterion.values for f in found)


def search(hits: Sequence[Hit], query: SearchQuery, params: dict[str, SearchParam]) -> list[Hit]:
    """The hits matching every criterion, sorted as ``query.sort`` asks (stable: ties keep the given order)."""
    found = [h for h in hits if all(matches(c, h) for c in query.criteria)]
    for name, descending in reversed(query.sort):
        found = _sorted(found, params[name], descending)
    return found


def _sort_value(param: SearchParam, hit: Hit) -> Any:
    if param.type == "date":
        return hit.last_updated
    if param.type == "reference":
        return min(references(param, hit.resource), default=None)
    if param.type in ("uri", "string"):
        return min((v for v in values_at(param, hit.resource) if isinstance(v, str)), default=None)
    return min((code for _, code in tokens(param, hit.resource)), default=None)


def _sorted(hits: list[Hit], param: SearchParam, descending: bool) -> list[Hit]:
    """Sorted by one parameter; hits without a value last in either direction."""
    valued = [(v, h) for h in hits if (v := _sort_value(param, h)) is not None]
    missing = [h for h in hits if _sort_value(param, h) is None]
    valued.sort(key=lambda pair: pair[0], reverse=descending)
    return [h for _, h in valued] + missing


# ------------------------------------------------------------------------------------------ shaping


def shape(resource: Json, how: Shape) -> Json:
    """``_summary`` / ``_elements`` applied to one resource (marked SUBSETTED when anything was left out)."""
    if how.summary is None and not how.elements:
        return resource
    every, summary, mandatory = elements_of(resource["resourceType"])
    keep: frozenset[str]
    if how.elements:
        keep = frozenset(how.elements) | mandatory
    elif how.summary == "true":
        keep = summary | mandatory
    elif how.summary == "text":
        keep = frozenset({"text"}) | mandatory
    else:  # data
        keep = every - {"text"}
    out = {k: v for k, v in resource.items() if k in keep or k in ("resourceType", "id", "meta")}
    meta = dict(out.get("meta", {}))
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    return {**out, "meta": meta}


# ------------------------------------------------------------------------------------------ Bundles


def _url(base: str, items: Items, **changes: int) -> str:
    kept = [(k, v) for k, v in items if k not in changes]
    query = urlencode([*kept, *((k, str(v)) for k, v in changes.items())])
    return f"{base}?{query}" if query else base


def page_links(base: str, items: Items, paging: Paging, total: int) -> list[Json]:
    """self, first, previous, next, last for one page (only self when no page is asked: ``_count=0``)."""
    count, offset = paging.count, paging.offset
    if count == 0:
        return [{"relation": "self", "url": _url(base, items)}]
    links = [("self", offset), ("first", 0)]
    if offset > 0:
        links.append(("previous", max(0, offset - count)))
    if offset + count < total:
        links.append(("next", offset + count))
    links.append(("last", max(0, (total - 1) // count * count)))
    return [{"relation": rel, "url": _url(base, items, _count=count, _offset=at)} for rel, at in links]


def searchset(base: str, resource_type: str, hits: Sequence[Hit], query: SearchQuery, items: Items) -> Json:
    """One page of a search as a ``searchset`` Bundle (no ``entry`` when the page is empty)."""
    paging = query.paging if query.shape.summary != "count" else Paging(0, query.paging.offset)
    page = hits[paging.offset:paging.offset + paging.count] if paging.count else []
    bundle: Json = {"resourceType": "Bundle", "type": "searchset"}
    if query.total:
        bundle["total"] = len(hits)
    bundle["link"] = page_links(f"{base}/{resource_type}", items, paging, len(hits))
    bundle["entry"] = [{"fullUrl": f"{base}/{resource_type}/{h.id}", "resource": shape(h.resource, query.shape),
                        "search": {"mode": "match"}} for h in page]
    return cast(Json, prune(bundle))


def history(base: str, url: str, hits: Sequence[Hit], paging: Paging, items: Items) -> Json:
    """One page of versions, newest first, as a ``history`` Bundle: each entry says how that version came
    to be (version 1 a create, later ones an update) and its ETag."""
    page = hits[paging.offset:paging.offset + paging.count] if paging.count else []
    entries = [_history_entry(base, h) for h in page]
    bundle = {"resourceType": "Bundle", "type": "history", "total": len(hits),
              "link": page_links(url, items, paging, len(hits)), "entry": entries}
    return cast(Json, prune(bundle))


def _history_entry(base: str, hit: Hit) -> Json:
    rtype, rid, vid = hit.resource["resourceType"], hit.id, hit.version_id
    created = vid == "1"
    return {"fullUrl": f"{base}/{rtype}/{rid}", "resource": hit.resource,
            "request": {"method": "POST" if created else "PUT", "url": rtype if created else f"{rtype}/{rid}"},
            "response": {"status": "201 Created" if created else "200 OK", "etag": f'W/"{vid}"',
                         "lastModified": hit.resource["meta"]["lastUpdated"]}}


__all__ = ["SUBSETTED", "Hit", "history", "instant", "matches", "page_links", "prune", "references", "search",
           "searchset", "served", "shape", "tokens", "values_at"]
