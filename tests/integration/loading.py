"""Load a sample Bundle (a ``collection``, or any Bundle of resources with ids) into a FHIR server.

Every resource becomes an entry ``PUT <Type>/<id>`` of a transaction Bundle, so the server keeps the sample's
ids and every reference in the samples (``Patient/p01``, ``Observation/p04-cd7``) resolves unchanged. The
entries are sent in transactions of ``chunk_size``, Patients first (for servers that check references).

A resource present more than once (``p04-cd7``: a preliminary version 1, then the amended version 2) cannot
appear twice in one transaction, so its copies go into successive "rounds" in version order: the server ends
up holding the newest version, with the earlier ones in its history — as if the laboratory had sent the
amendment afterwards.
``meta.versionId`` and ``meta.lastUpdated`` are the server's to set and are dropped; other ``meta`` (the
HTEST security label) is kept.

Reading back (for the publish tests): ``all_resources`` pages through a plain search of a type (on the peer
a search on ResearchSubject returns every one, which is what counting duplicates needs), and
``provenance_targets`` counts the Provenance resources per target, ``Type/id`` without the version.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bridge.client import FhirClient
from bridge.normalize.patients import VersionKey, version_key

from .peer import PeerServer

Json = dict[str, Any]
TYPE_ORDER = {"Patient": 0}
SERVER_META = ("versionId", "lastUpdated")


def sample_resources(bundle: Json | Path | str) -> list[Json]:
    """The resources of a Bundle (given as a dict or a path), in entry order."""
    doc = bundle if isinstance(bundle, dict) else json.loads(Path(bundle).read_text(encoding="utf-8"))
    return [entry["resource"] for entry in doc.get("entry") or [] if isinstance(entry.get("resource"), dict)]


def _key(resource: Json) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def rounds(resources: Iterable[Json]) -> list[list[Json]]:
    """The resources split so that no ``Type/id`` repeats within a round. The copies of one resource go to
    rounds in version order (RULES.md §2, ``bridge.normalize.patients.version_key``: versionId, lastUpdated
    instant, status, arrival), so the server ends up holding the version the bridge takes as the newest —
    a sample's preliminary listed after its amended version lands before it, as the laboratory sent them."""
    listed = list(resources)
    by_key: dict[str, list[tuple[VersionKey, int]]] = {}
    for index, res in enumerate(listed):
        by_key.setdefault(_key(res), []).append((version_key(res, index), index))
    round_of = {index: n for copies in by_key.values() for n, (_, index) in enumerate(sorted(copies))}
    out: list[list[Json]] = [[] for _ in range(max(round_of.values(), default=-1) + 1)]
    for index, res in enumerate(listed):
        out[round_of[index]].append(res)
    return out


def _for_server(resource: Json) -> Json:
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in SERVER_META}
    clean = {k: v for k, v in resource.items() if k != "meta"}
    return {**clean, "meta": meta} if meta else clean


def transaction_bundles(resources: Iterable[Json], chunk_size: int = 100) -> list[Json]:
    """Transaction Bundles of ``PUT Type/id`` entries: round by round, Patients first, ``chunk_size`` each."""
    bundles = []
    for batch in rounds(resources):
        ordered = sorted(batch, key=lambda r: TYPE_ORDER.get(r["resourceType"], 1))  # stable: entry order kept
        for i in range(0, len(ordered), chunk_size):
            entries = [{"resource": _for_server(r), "request": {"method": "PUT", "url": _key(r)}}
                       for r in ordered[i:i + chunk_size]]
            bundles.append({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    return bundles


def _check(response: Json, sent: Json) -> None:
    entries = response.get("entry") or []
    statuses = [str((e.get("response") or {}).get("status", "")) for e in entries]
    if len(entries) != len(sent["entry"]) or not all(s[:3] in ("200", "201") for s in statuses):
        raise AssertionError(f"transaction answered {len(entries)} entries for {len(sent['entry'])}: {statuses}")


def load_bundle(client: FhirClient, bundle: Json | Path | str, chunk_size: int = 100) -> Counter[str]:
    """PUT every resource of ``bundle`` to the server behind ``client``; the count per resource type."""
    resources = sample_resources(bundle)
    for tx in transaction_bundles(resources, chunk_size):
        _check(client.transaction(tx).resource, tx)
    return Counter(r["resourceType"] for r in {_key(r): r for r in resources}.values())


def all_resources(client: FhirClient, resource_type: str) -> list[Json]:
    """Every resource of a type the server returns for a plain search (all pages, matches only)."""
    return list(client.search(resource_type, {"_count": "200"}, matches_only=True))


def provenance_targets(client: FhirClient) -> Counter[str]:
    """How many Provenance resources name each target (``Type/id``, version dropped)."""
    counts: Counter[str] = Counter()
    for prov in all_resources(client, "Provenance"):
        for target in prov.get("target") or []:
            counts[str(target.get("reference", "")).split("/_history/")[0]] += 1
    return counts




@contextmanager
def peer_holding(executable: Path, bundle: Json | Path | str) -> Iterator[PeerServer]:
    """A fresh peer (empty database) loaded with ``bundle``, stopped on exit: one per test module."""
    with PeerServer(executable) as srv, FhirClient(srv.base_url) as fhir:
        load_bundle(fhir, bundle)
        yield srv


__all__ = ["all_resources", "load_bundle", "peer_holding", "provenance_targets", "rounds", "sample_resources",
           "transaction_bundles"]
