"""Record what a publication wrote to an EHR, as the EHR answered: its ids, its version ids, its bodies.

``RecordingClient`` is a ``FhirClient`` that keeps every successful write — ``create``, ``update``,
``conditional_update`` and each entry of a ``transaction`` — as ``Write(sent, result)``; the publisher
(``bridge.publish.publisher``) is used unchanged, whatever requests it chooses. ``record_publication`` then
records each write in the published index under the key the worker uses (``record.record_key``):

* the body the EHR returned (``Prefer: return=representation``) when it is the resource written, with its id;
* else what was sent, with the id of the answer's ``Location`` and ``meta.versionId`` of its ``ETag``
  (inside a transaction, ``urn:uuid:`` references to other entries are rewritten to what the EHR assigned);
* the EHR's version id as ``PublishedRecord.version`` — a record with a version is the EHR's copy, which a later
  local build (``--save``) leaves alone.

The publisher does not write what is unchanged; a ``Written`` it reports for a resource the index does not hold
at that id and version is read back from the EHR once (what the worker's ``_remember`` does), so the index
fills even when everything was already published. A write that failed is not recorded; the writes before it
are (``record_publication`` runs in a ``finally``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bridge.client import Criteria, FhirClient, FhirResult, location_id, parse_etag
from bridge.localfhir.record import fingerprint, record_key, with_id
from bridge.state.published import PublishedIndex, PublishedRecord

log = logging.getLogger("bridge.localfhir")
Json = dict[str, Any]


@dataclass(frozen=True)
class Write:
    """One successful write: the resource sent and the EHR's answer."""

    sent: Json
    result: FhirResult


@dataclass(eq=False)
class RecordingClient(FhirClient):
    """A ``FhirClient`` that keeps every successful write in ``writes`` (nothing else changes)."""

    writes: list[Write] = field(default_factory=list, init=False, repr=False)

    def __enter__(self) -> RecordingClient:
        return self

    def create(self, resource: Mapping[str, Any], *, if_none_exist: Criteria | None = None) -> FhirResult:
        return self._kept(resource, super().create(resource, if_none_exist=if_none_exist))

    def update(self, resource: Mapping[str, Any], *, if_match: str | None = None) -> FhirResult:
        return self._kept(resource, super().update(resource, if_match=if_match))

    def conditional_update(self, resource: Mapping[str, Any], criteria: Criteria) -> FhirResult:
        return self._kept(resource, super().conditional_update(resource, criteria))

    def transaction(self, bundle: Mapping[str, Any]) -> FhirResult:
        result = super().transaction(bundle)
        self.writes += transaction_writes(bundle, result.resource)
        return result

    def _kept(self, resource: Mapping[str, Any], result: FhirResult) -> FhirResult:
        self.writes.append(Write(dict(resource), result))
        return result


# ---------------------------------------------------------------------------------------------- transactions


def _version_in(location: str | None) -> str | None:
    parts = urlsplit(location).path.rstrip("/").split("/") if location else []
    return parts[-1] if len(parts) >= 4 and parts[-2] == "_history" else None


def _status(text: Any) -> int:
    head = str(text).strip().split(" ")[0]
    return int(head) if head.isascii() and head.isdigit() else 0


def _rewritten(node: Any, assigned: Mapping[str, str]) -> Any:
    """``node`` with every ``reference`` naming a transaction entry's fullUrl replaced by what was assigned."""
    if isinstance(node, dict):
        out = {k: _rewritten(v, assigned) for k, v in node.items()}
        ref = node.get("reference")
        if isinstance(ref, str) and ref in assigned:
            out["reference"] = assigned[ref]
        return out
    if isinstance(node, list):
        return [_rewritten(v, assigned) for v in node]
    return node


def transaction_writes(bundle: Mapping[str, Any], answer: Mapping[str, Any]) -> list[Write]:
    """The successful writes of a transaction (or batch): request entry i answered by response entry i."""
    pairs: list[tuple[Json, Json, FhirResult]] = []
    assigned: dict[str, str] = {}
    for entry, reply in zip(bundle.get("entry") or [], answer.get("entry") or [], strict=False):
        resource, response = entry.get("resource"), reply.get("response") or {}
        status = _status(response.get("status"))
        if not isinstance(resource, dict) or not 200 <= status < 300:
            continue
        body = reply.get("resource") if isinstance(reply.get("resource"), dict) else {}
        location, etag = response.get("location"), response.get("etag")
        result = FhirResult(body, status, etag, location)
        rid = result.id if body.get("resourceType") == resource.get("resourceType") else location_id(location)
        version = parse_etag(etag) or _version_in(location)
        if rid and isinstance(entry.get("fullUrl"), str):
            assigned[entry["fullUrl"]] = f"{resource['resourceType']}/{rid}" + (f"/_history/{version}" if version
                                                                                  else "")
        pairs.append((resource, body, result))
    return [Write(sent if body else _rewritten(sent, assigned), result) for sent, body, result in pairs]


# ---------------------------------------------------------------------------------------------- recording


def _as_recorded(write: Write) -> tuple[str, str, str | None, Json] | None:
    """(key, id, version, body) of a write as the EHR holds it, or None when the answer names no id."""
    sent, result = write.sent, write.result
    rtype = sent.get("resourceType")
    answered = result.resource
    if answered.get("resourceType") == rtype and isinstance(answered.get("id"), str) and answered["id"]:
        body, rid = answered, str(answered["id"])
    else:
        rid = location_id(result.location) or ""
        if not rid:
            return None
        body = with_id(sent, rid)
        if result.version_id:
            body["meta"] = {**(sent.get("meta") or {}), "versionId": result.version_id}
    key = record_key(body)
    return (key, rid, result.version_id, body) if key else None


def record_writes(index: PublishedIndex, writes: Iterable[Write], clock: Callable[[], float] = time.time
                  ) -> list[str]:
    """Record each write (see the module docstring); returns the ``Type/id`` of each record put, in order."""
    done: list[str] = []
    for write in writes:
        found = _as_recorded(write)
        if found is None:
            log.warning("%s: the EHR's answer names no id; not recorded for /fhir",
                        write.sent.get("resourceType"))
            continue
        key, rid, version, body = found
        rtype = str(body["resourceType"])
        index.put_published(PublishedRecord(key, rtype, rid, fingerprint(body), version, body, clock()))
        done.append(f"{rtype}/{rid}")
    return done


def _held(index: PublishedIndex, rtype: str, rid: str, version: str | None) -> bool:
    return any(r.version == version or version is None for r in index.find_published(rtype, resource_id=rid))


def record_publication(index: PublishedIndex, client: RecordingClient, written: Iterable[Any] = (),
                       clock: Callable[[], float] = time.time) -> int:
    """Record ``client.writes``, then read back each of ``written`` (the publisher's ``Written``: reference,
    outcome, version) the index does not hold at that id and version. Returns the number recorded."""
    done = record_writes(index, client.writes, clock)
    client.writes.clear()
    count = len(done)
    for w in written:
        ref, version = str(w.reference), w.version
        rtype, _, rid = ref.partition("/")
        if ref in done or not rid or _held(index, rtype, rid, version):
            continue
        body = client.read(rtype, rid).resource
        key = record_key(body)
        if key is None:
            continue
        fetched = FhirResult(body, 200).version_id or version
        index.put_published(PublishedRecord(key, rtype, rid, fingerprint(body), fetched, body, clock()))
        count += 1
    return count


__all__ = ["RecordingClient", "Write", "record_publication", "record_writes", "transaction_writes"]
