"""Subscriptions the bridge asks of the EHR (built, checked against the R4 schema, kept in step with the store),
and the poll mode's bookkeeping. The real peer runs them in tests/integration/test_service_e2e.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bridge.errors import ConfigError
from bridge.service.channels import channel_secret
from bridge.service.subscriptions import (
    ADMISSION_FILTER,
    BACKPORT_PROFILE,
    Subscriber,
    Wanted,
    channel_for_topic,
    offered_topics,
    ours,
    subscription_resource,
    wanted_subscriptions,
)
from bridge.state import State

ENDPOINT = "https://bridge.example/notify"
TOPIC = "http://sekmet.dev/fhir/SubscriptionTopic/encounter-start"
EXT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/capabilitystatement-subscriptiontopic-canonical"
T0 = 1_780_000_000.0


def capability(*topics: str) -> dict[str, Any]:
    return {"resourceType": "CapabilityStatement", "rest": [{"mode": "server", "resource": [
        {"type": "Patient"},
        {"type": "Subscription", "extension": [{"url": EXT, "valueCanonical": t} for t in topics]}]}]}


def test_offered_topics_come_from_the_capability_statement() -> None:
    cap = capability(TOPIC, "http://x/SubscriptionTopic/patient-change", TOPIC)
    assert offered_topics(cap) == [TOPIC, "http://x/SubscriptionTopic/patient-change"]
    assert offered_topics({"resourceType": "CapabilityStatement"}) == []


def test_wanted_subscriptions_by_mode() -> None:
    offered = [TOPIC, "http://x/SubscriptionTopic/patient-change"]
    classic = wanted_subscriptions("classic", offered, [])
    assert [(w.channel, w.criteria.split("?")[0]) for w in classic] == [
        ("classic-encounter", "Encounter"), ("classic-condition", "Condition"), ("classic-observation", "Observation")]
    [topic] = wanted_subscriptions("topic", offered, [])
    assert (topic.channel, topic.criteria, topic.filter, topic.resource_types) == (
        "topic-encounter-start", TOPIC, ADMISSION_FILTER, ("Encounter",))
    both = wanted_subscriptions("both", offered, ["urn:example:lab-results"])
    assert [w.channel for w in both][-2:] == ["topic-encounter-start", "topic-urn-example-lab-results"]
    assert wanted_subscriptions("topic", [], []) == []  # no topics offered: nothing


def test_channel_names_are_valid_channels() -> None:
    assert channel_for_topic("http://h/SubscriptionTopic/Encounter Start/") == "topic-encounter-start"
    assert len(channel_for_topic("urn:" + "x" * 200)) == 64


def test_classic_subscription_resource_is_valid_r4_with_its_secret() -> None:
    w = Wanted("classic-encounter", "classic", ADMISSION_FILTER, ("Encounter",))
    sub = subscription_resource(w, ENDPOINT + "/", "master", 60, "id-only")
    assert sub["channel"] == {"type": "rest-hook", "endpoint": f"{ENDPOINT}/classic-encounter",
                              "payload": "application/fhir+json",
                              "header": [f"Authorization: Bearer {channel_secret('master', 'classic-encounter')}"]}
    assert (sub["status"], sub["criteria"]) == ("requested", ADMISSION_FILTER) and "meta" not in sub


def test_topic_subscription_resource_follows_the_backport_profile() -> None:
    w = Wanted("topic-encounter-start", "topic", TOPIC, ("Encounter",), ADMISSION_FILTER)
    sub = subscription_resource(w, ENDPOINT, "master", 30, "id-only")
    assert sub["meta"] == {"profile": [BACKPORT_PROFILE]}
    assert sub["_criteria"]["extension"][0]["valueString"] == ADMISSION_FILTER
    assert sub["channel"]["_payload"]["extension"][0]["valueCode"] == "id-only"
    assert sub["channel"]["extension"][0]["valueUnsignedInt"] == 30


def test_ours_keeps_only_this_bridge_s_endpoints() -> None:
    subs = [{"id": "a", "channel": {"endpoint": f"{ENDPOINT}/classic-encounter"}},
            {"id": "b", "channel": {"endpoint": "https://other.example/notify/x"}},
            {"id": "c", "channel": {"endpoint": f"{ENDPOINT}-evil/x"}}]
    assert [s["id"] for s in ours(subs, ENDPOINT)] == ["a"]


class FakeClient:
    """Just enough of FhirClient for the Subscriber: an in-memory Subscription table."""

    def __init__(self, topics: list[str]) -> None:
        self.topics, self.subs, self.n = topics, {}, 0

    def capabilities(self) -> dict[str, Any]:
        return capability(*self.topics)

    def search(self, rtype: str, params: dict[str, str], matches_only: bool) -> Iterator[dict[str, Any]]:
        yield from list(self.subs.values())

    def create(self, resource: dict[str, Any]) -> Any:
        self.n += 1
        stored = {**resource, "id": f"s{self.n}", "status": "active"}
        self.subs[stored["id"]] = stored
        return type("R", (), {"resource": stored})

    def update(self, resource: dict[str, Any]) -> Any:
        self.subs[resource["id"]] = {**resource, "status": "active"}
        return type("R", (), {"resource": self.subs[resource["id"]]})

    def read(self, rtype: str, rid: str) -> Any:
        return type("R", (), {"resource": self.subs[rid]})

    def delete(self, rtype: str, rid: str) -> None:
        del self.subs[rid]


@pytest.fixture
def store(state: State) -> State:
    """A fresh state on each backend (the conftest ``state`` fixture: SQLite file, PostgreSQL schema)."""
    return state


def test_subscriber_creates_registers_repairs_and_deletes(store: Any) -> None:
    client = FakeClient([TOPIC])
    subscriber = Subscriber(client, store, "master", ENDPOINT, clock=lambda: T0)  # type: ignore[arg-type]
    first = subscriber.ensure(heartbeat=45)
    assert [(o.wanted.channel, o.action, o.status) for o in first] == [
        ("classic-encounter", "created", "active"), ("classic-condition", "created", "active"),
        ("classic-observation", "created", "active"), ("topic-encounter-start", "created", "active")]
    topic = store.subscription("Subscription/s4")
    assert topic is not None and (topic.kind, topic.heartbeat_seconds, topic.covered_through, topic.topic) == (
        "topic", 45.0, 0, TOPIC)
    classic = store.subscription("channel/classic-encounter")
    assert classic is not None and (classic.ehr_id, classic.criteria, classic.created_at) == (
        "s1", ADMISSION_FILTER, T0)
    client.subs["s2"]["status"] = "error"
    again = {o.wanted.channel: o.action for o in subscriber.ensure(heartbeat=45)}
    assert again == {"classic-encounter": "exists", "classic-condition": "reactivated",
                     "classic-observation": "exists", "topic-encounter-start": "exists"}
    assert len(client.subs) == 4
    assert [r["channel"] for r in subscriber.listing()] == ["classic-encounter", "classic-condition",
                                                            "classic-observation", "topic-encounter-start"]
    assert subscriber.delete(["s4"]) == ["s4"] and store.subscription("Subscription/s4") is None
    assert sorted(subscriber.delete()) == ["s1", "s2", "s3"] and store.subscriptions() == []


def test_subscriber_needs_the_webhook_secret(store: Any) -> None:
    with pytest.raises(ConfigError, match="webhook_secret"):
        Subscriber(FakeClient([]), store, None, ENDPOINT)  # type: ignore[arg-type]


def test_poll_bookkeeping(store: Any) -> None:
    from bridge.cli.watch import POLL_SUBSCRIPTION, queue_poll, register_poll

    register_poll(store, T0, since_hours=2, types=("Encounter",))
    register_poll(store, T0 + 100, since_hours=2, types=("Encounter",))  # kept: the next run continues
    poll = store.subscription(POLL_SUBSCRIPTION)
    assert poll is not None and (poll.kind, poll.created_at, poll.resource_types) == ("poll", T0 - 7200,
                                                                                      ("Encounter",))
    queue_poll(store, T0)
    queue_poll(store, T0)
    assert [e.event.kind for e in store.inbox_entries()] == ["query", "query"]
