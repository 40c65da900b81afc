"""The published index: what the bridge wrote to the EHR, kept to skip unchanged writes and served at ``/fhir``.

``PublishedRecord.key`` is stable across writes (e.g. ``ResearchSubject|<system>|<value>``); ``search_columns``
(pure, shared by every backend) pulls out the study / patient / status the read API filters on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

Json = dict[str, Any]


@dataclass(frozen=True)
class PublishedRecord:
    """One resource the bridge wrote. ``key`` is stable (e.g. ``ResearchSubject|<system>|<value>``)."""

    key: str
    resource_type: str
    resource_id: str | None
    fingerprint: str
    version: str | None
    resource: Json
    updated_at: float


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


class PublishedIndex(Protocol):
    """What the bridge published, by key and searchable."""

    def put_published(self, record: PublishedRecord) -> None: ...

    def get_published(self, key: str) -> PublishedRecord | None: ...

    def find_published(self, resource_type: str, resource_id: str | None = None, study: str | None = None,
                       patient: str | None = None, status: str | None = None) -> list[PublishedRecord]:
        """Published resources of a type, filtered (``study`` / ``patient`` as ``Type/id``), ordered by key."""
        ...


__all__ = ["PublishedIndex", "PublishedRecord", "reference", "search_columns"]
