"""The published index: what the bridge wrote, kept to skip unchanged writes and served at ``/fhir``.

``PublishedRecord.key`` is stable across writes (e.g. ``ResearchSubject|<system>|<value>``); ``search_columns``
(pure, shared by every backend) pulls out the study / patient / status the read API narrows on.

The index is also a small versioned FHIR store of its own: each put whose resource differs from the one held
(``same_content``: ``meta.versionId`` / ``meta.lastUpdated`` aside, so a write the EHR only re-stamped is not a
change) becomes the next version of ``Type/id`` — ``version_id`` 1, 2, … and ``last_updated`` the put's
``updated_at`` — and every version is kept (``published_history``, ``published_version``), which is what
``/fhir`` serves as ``meta.versionId``, ``ETag``, ``vread`` and ``_history``. ``version`` stays the EHR's
version id as the EHR reported it (``None`` for a resource the bridge only recorded locally).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

Json = dict[str, Any]


@dataclass(frozen=True)
class PublishedRecord:
    """One resource the bridge wrote. ``key`` is stable (e.g. ``ResearchSubject|<system>|<value>``).

    ``version_id`` and ``last_updated`` are the index's own version of the resource, filled in when it is read
    from the store (a caller's values are ignored by ``put_published``); they take no part in equality."""

    key: str
    resource_type: str
    resource_id: str | None
    fingerprint: str
    version: str | None
    resource: Json
    updated_at: float
    version_id: int | None = field(default=None, compare=False)
    last_updated: float | None = field(default=None, compare=False)

    @property
    def served_id(self) -> str | None:
        """The id ``/fhir`` serves it under: the EHR's id, else the resource's own."""
        rid = self.resource_id or self.resource.get("id")
        return rid if isinstance(rid, str) and rid else None


@dataclass(frozen=True)
class PublishedVersion:
    """One kept version of ``resource_type/resource_id`` (numbered from 1; ``last_updated`` epoch seconds)."""

    resource_type: str
    resource_id: str
    version_id: int
    resource: Json
    last_updated: float


def reference(node: Any) -> str | None:
    """``Type/id`` of a Reference element (absolute URLs and ``_history`` cut)."""
    ref = node.get("reference") if isinstance(node, dict) else None
    if not isinstance(ref, str):
        return None
    parts = ref.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else None


def search_columns(resource: Json) -> tuple[str | None, str | None, str | None]:
    """(study, patient, status) of a published resource, as ``find_published`` filters them."""
    status = resource.get("status")
    return (reference(resource.get("study")), reference(resource.get("individual")),
            status if isinstance(status, str) else None)


def content(resource: Json) -> Json:
    """The resource without the version stamps (``meta.versionId``, ``meta.lastUpdated``) a server adds."""
    meta = resource.get("meta")
    if not isinstance(meta, dict):
        return resource
    rest = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated")}
    out = {k: v for k, v in resource.items() if k != "meta"}
    return out | {"meta": rest} if rest else out


def same_content(a: Json, b: Json) -> bool:
    """Whether two bodies are the same version (see the module docstring)."""
    return content(a) == content(b)


class PublishedIndex(Protocol):
    """What the bridge published, by key and searchable, with every version kept."""

    def put_published(self, record: PublishedRecord) -> None:
        """Record ``record``; a changed resource becomes its next version (see the module docstring)."""
        ...

    def get_published(self, key: str) -> PublishedRecord | None: ...

    def find_published(self, resource_type: str, resource_id: str | None = None, study: str | None = None,
                       patient: str | None = None, status: str | None = None) -> list[PublishedRecord]:
        """Published resources of a type, filtered (``study`` / ``patient`` as ``Type/id``), ordered by key."""
        ...

    def published_history(self, resource_type: str, resource_id: str | None = None,
                          since: float | None = None) -> list[PublishedVersion]:
        """Every kept version of a type (or of one resource), newest first; ``since``: last updated at or after it."""
        ...

    def published_version(self, resource_type: str, resource_id: str, version_id: int) -> PublishedVersion | None:
        """One kept version, or None."""
        ...


__all__ = ["PublishedIndex", "PublishedRecord", "PublishedVersion", "content", "reference", "same_content",
           "search_columns"]
