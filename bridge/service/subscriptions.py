"""Subscriptions on the EHR: create (idempotently), list and delete what the bridge needs to hear about.

``bridge subscribe BASE_URL --endpoint URL`` creates, each on its own channel (``{endpoint}/{channel}``) with
its own secret in ``channel.header`` (``Authorization: Bearer <derived secret>``, see ``channels``):

* classic R4 rest-hook subscriptions, payload ``application/fhir+json`` (the EHR sends the resource):
  ``Encounter?class=IMP,ACUTE,NONAC`` (admissions), ``Condition?clinical-status=...`` and
  ``Observation?status=...`` (new or changed results; the bridge keeps those of known patients that map to a
  criterion concept). The criteria are broad on purpose: a code list in a criteria string goes stale when a
  site map changes, and a missed event is worse than a filtered one. (A Condition marked entered-in-error
  carries no clinical status, so its retraction is seen at the next re-screen of the patient, not at once.)
* R4 backport topic-based subscriptions for each admission topic the server offers (its CapabilityStatement
  lists topics with ``capabilitystatement-subscriptiontopic-canonical``; a topic counts as an admission
  topic when its URL ends in ``encounter-start`` or ``admission``, or when named with ``--topic``), payload
  content ``id-only`` (the bridge reads the resource with its own credentials), a heartbeat period, and the
  filter ``Encounter?class=IMP,ACUTE,NONAC``.

Each is validated against the R4 JSON Schema before it is sent and registered in the state store (channel,
topic/criteria, heartbeat period) for gap and heartbeat checks. Running it again is harmless: a subscription
already on the EHR for the same endpoint and criteria is kept, or re-requested when the EHR set it to
``error`` / ``off`` (after the bridge was unreachable, for example).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bridge.client import FhirClient
from bridge.errors import ConfigError, RemoteError
from bridge.publish.validate import validate_r4
from bridge.service.channels import channel_header, classic_subscription_id
from bridge.state import Subscriptions, SubscriptionState

BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
BACKPORT_PROFILE = f"{BP}/backport-subscription"
EXT_FILTER = f"{BP}/backport-filter-criteria"
EXT_CONTENT = f"{BP}/backport-payload-content"
EXT_HEARTBEAT = f"{BP}/backport-heartbeat-period"
EXT_TOPIC_CANONICAL = f"{BP}/capabilitystatement-subscriptiontopic-canonical"
ADMISSION_FILTER = "Encounter?class=IMP,ACUTE,NONAC"
ADMISSION_TOPIC = re.compile(r"(encounter-start|admission)$", re.IGNORECASE)
CLASSIC_CRITERIA = {
    "Encounter": ADMISSION_FILTER,
    "Condition": "Condition?clinical-status=active,recurrence,relapse,inactive,remission,resolved",
    "Observation": "Observation?status=preliminary,final,amended,corrected,entered-in-error",
}
REASON = "cd7-bridge: pre-screening for NCT04762485"
FHIR_JSON = "application/fhir+json"
Json = dict[str, Any]


@dataclass(frozen=True)
class Wanted:
    """One subscription the bridge wants on the EHR."""

    channel: str
    kind: str  # classic | topic
    criteria: str  # classic criteria, or the topic canonical
    resource_types: tuple[str, ...]
    filter: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What ``ensure`` did for one subscription: created, exists, reactivated; and the EHR's status."""

    wanted: Wanted
    ehr_id: str
    action: str
    status: str | None


def channel_for_topic(topic: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", topic.rstrip("/").rsplit("/", 1)[-1]).strip("-").lower()
    return f"topic-{slug or 'topic'}"[:64]


def offered_topics(capabilities: Json) -> list[str]:
    """The topic canonicals the server lists on its Subscription resource (R4 backport IG)."""
    found: list[str] = []
    for rest in capabilities.get("rest") or []:
        for res in rest.get("resource") or []:
            if res.get("type") == "Subscription":
                found += [e["valueCanonical"] for e in res.get("extension") or []
                          if e.get("url") == EXT_TOPIC_CANONICAL and isinstance(e.get("valueCanonical"), str)]
    return sorted(set(found))


def wanted_subscriptions(mode: str, topics_offered: list[str], extra_topics: list[str]) -> list[Wanted]:
    """The classic subscriptions (mode classic/both) and the admission topics offered (mode topic/both)."""
    out: list[Wanted] = []
    if mode in ("classic", "both"):
        out += [Wanted(f"classic-{t.lower()}", "classic", c, (t,)) for t, c in CLASSIC_CRITERIA.items()]
    if mode in ("topic", "both"):
        chosen = [t for t in topics_offered if ADMISSION_TOPIC.search(t)]
        for topic in sorted(set(chosen) | set(extra_topics)):
            admission = bool(ADMISSION_TOPIC.search(topic))
            out.append(Wanted(channel_for_topic(topic), "topic", topic, ("Encounter",) if admission else (),
                              ADMISSION_FILTER if admission else None))
    return out


def subscription_resource(w: Wanted, endpoint: str, secret: str, heartbeat: int | None, content: str) -> Json:
    """The R4 Subscription for ``w`` (classic, or R4 backport profile for a topic), schema-checked."""
    channel: Json = {"type": "rest-hook", "endpoint": f"{endpoint.rstrip('/')}/{w.channel}", "payload": FHIR_JSON,
                     "header": [channel_header(secret, w.channel)]}
    sub: Json = {"resourceType": "Subscription", "status": "requested", "reason": REASON, "criteria": w.criteria,
                 "channel": channel}
    if w.kind == "topic":
        sub["meta"] = {"profile": [BACKPORT_PROFILE]}
        channel["_payload"] = {"extension": [{"url": EXT_CONTENT, "valueCode": content}]}
        if heartbeat:
            channel["extension"] = [{"url": EXT_HEARTBEAT, "valueUnsignedInt": heartbeat}]
        if w.filter:
            sub["_criteria"] = {"extension": [{"url": EXT_FILTER, "valueString": w.filter}]}
    validate_r4(sub)
    return sub


def ours(existing: list[Json], endpoint: str) -> list[Json]:
    """The EHR's Subscriptions that notify this bridge (their endpoint is under ``endpoint``)."""
    base = endpoint.rstrip("/") + "/"
    return [s for s in existing if str((s.get("channel") or {}).get("endpoint", "")).startswith(base)]


def _same(sub: Json, w: Wanted, endpoint: str) -> bool:
    target = f"{endpoint.rstrip('/')}/{w.channel}"
    return sub.get("criteria") == w.criteria and (sub.get("channel") or {}).get("endpoint") == target


class Subscriber:
    """Creates, lists and deletes the bridge's subscriptions on one EHR, keeping the store in step."""

    def __init__(self, client: FhirClient, store: Subscriptions, secret: str | None, endpoint: str,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        if not secret:
            raise ConfigError("webhook_secret is not configured: the EHR could not prove who it is")
        self.client, self.store, self.secret, self.endpoint = client, store, secret, endpoint.rstrip("/")
        self.clock, self.sleep = clock, sleep

    def existing(self) -> list[Json]:
        return ours(list(self.client.search("Subscription", {"_count": "200"}, matches_only=True)), self.endpoint)

    def topics(self) -> list[str]:
        try:
            return offered_topics(self.client.capabilities())
        except RemoteError:
            return []

    def ensure(self, mode: str = "both", extra_topics: list[str] | None = None, heartbeat: int | None = 60,
               content: str = "id-only", wait: float = 10.0) -> list[Outcome]:
        wanted = wanted_subscriptions(mode, self.topics() if mode != "classic" else [], extra_topics or [])
        current = self.existing()
        outcomes = [self._ensure_one(w, current, heartbeat, content) for w in wanted]
        return [self._settled(o, wait) for o in outcomes]

    def _ensure_one(self, w: Wanted, current: list[Json], heartbeat: int | None, content: str) -> Outcome:
        resource = subscription_resource(w, self.endpoint, self.secret, heartbeat, content)
        self._register(w, None, heartbeat)  # before the create: the handshake may arrive during it
        match = next((s for s in current if _same(s, w, self.endpoint)), None)
        if match is None:
            created = self.client.create(resource).resource
            return self._registered(w, created, "created", heartbeat)
        if match.get("status") in ("error", "off"):
            updated = self.client.update({**resource, "id": match["id"]}).resource
            return self._registered(w, updated, "reactivated", heartbeat)
        return self._registered(w, match, "exists", heartbeat)

    def _registered(self, w: Wanted, sub: Json, action: str, heartbeat: int | None) -> Outcome:
        ehr_id = str(sub.get("id"))
        self._register(w, ehr_id, heartbeat)
        return Outcome(w, ehr_id, action, sub.get("status"))

    def _register(self, w: Wanted, ehr_id: str | None, heartbeat: int | None) -> None:
        if w.kind == "topic" and ehr_id is None:
            return
        sub_id = f"Subscription/{ehr_id}" if w.kind == "topic" else classic_subscription_id(w.channel)
        state = SubscriptionState(sub_id, w.channel, w.kind, topic=w.criteria if w.kind == "topic" else None,
                                  criteria=w.filter if w.kind == "topic" else w.criteria, ehr_id=ehr_id,
                                  heartbeat_seconds=float(heartbeat) if heartbeat and w.kind == "topic" else None,
                                  resource_types=w.resource_types, created_at=self.clock(),
                                  covered_through=0 if w.kind == "topic" else None)
        self.store.register_subscription(state)

    def _settled(self, outcome: Outcome, wait: float) -> Outcome:
        """Wait (bounded) for a requested subscription to become active or fail."""
        deadline, status = self.clock() + wait, outcome.status
        while status == "requested" and self.clock() < deadline:
            self.sleep(0.2)
            status = self.client.read("Subscription", outcome.ehr_id).resource.get("status")
        return Outcome(outcome.wanted, outcome.ehr_id, outcome.action, status)

    def delete(self, ehr_ids: list[str] | None = None) -> list[str]:
        """Delete these subscriptions (default: every one of ours) on the EHR and in the store."""
        targets = [s for s in self.existing() if ehr_ids is None or s.get("id") in ehr_ids]
        for sub in targets:
            self.client.delete("Subscription", str(sub["id"]))
            self._forget(sub)
        return [str(s["id"]) for s in targets]

    def _forget(self, sub: Json) -> None:
        channel = str((sub.get("channel") or {}).get("endpoint", "")).rsplit("/", 1)[-1]
        self.store.delete_subscription(f"Subscription/{sub['id']}")
        self.store.delete_subscription(classic_subscription_id(channel))

    def listing(self) -> Iterator[Json]:
        """Our subscriptions as the EHR holds them, with what the store knows of each."""
        for sub in self.existing():
            channel = str((sub.get("channel") or {}).get("endpoint", "")).rsplit("/", 1)[-1]
            known = self.store.subscription(f"Subscription/{sub['id']}") or self.store.subscription(
                classic_subscription_id(channel))
            yield {"id": sub.get("id"), "status": sub.get("status"), "criteria": sub.get("criteria"),
                   "channel": channel, "kind": known.kind if known else None,
                   "lastSeenAt": known.last_seen_at if known else None,
                   "heartbeatSeconds": known.heartbeat_seconds if known else None,
                   "error": sub.get("error")}


__all__ = [
    "ADMISSION_FILTER",
    "CLASSIC_CRITERIA",
    "Outcome",
    "Subscriber",
    "Wanted",
    "channel_for_topic",
    "offered_topics",
    "ours",
    "subscription_resource",
    "wanted_subscriptions",
]
