"""Strict parsing at the notification edge (issue #14 item 6): the inputs that gave 500s or were taken for
numbers are now a 400 OperationOutcome naming the element, and nothing is stored."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from bridge.config import Settings
from bridge.errors import InputError
from bridge.service.app import create_app
from bridge.service.edges import MAX_COUNT, Count, parse
from bridge.state.sqlite_state import SqliteState

from .test_notifications import backport_bundle, encounter, observation, r4b_bundle

SECRET = "edges-webhook-secret-0123456789abcdef"
FHIR = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/fhir+json"}
OTHER_DIGITS = ["¹²", "²", "١٢", "१२", "１２", "𝟏𝟐", "12\n", " 12", "+12", "-1", "1e3", "1.5", "0x1f", ""]
Json = dict[str, Any]
Mutation = Callable[[Json], Any]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteState]:
    s = SqliteState(tmp_path / "state.sqlite3")
    yield s
    s.close()


@pytest.fixture
def client(store: SqliteState) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(webhook_secret=SECRET), store)) as c:
        yield c


def _refused(client: TestClient, store: SqliteState, body: Any, path: str, url: str = "/notify",
             method: str = "post") -> None:
    resp = client.request(method, url, content=json.dumps(body).encode(), headers=FHIR)
    assert resp.status_code == 400, resp.text
    outcome = resp.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert path in [e for issue in outcome["issue"] for e in issue.get("expression", [])], outcome
    assert store.inbox_entries() == [] and store.subscriptions() == []


def _set(path: tuple[Any, ...], value: Any) -> Mutation:
    def mutate(doc: Json) -> Json:
        node: Any = doc
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
        return doc
    return mutate


def _backport() -> Json:
    return backport_bundle("event-notification", 1, [{"number": 1, "focus": "Encounter/e1"}], [encounter()])


def _r4b() -> Json:
    return r4b_bundle("event-notification", 1, [{"number": 1, "focus": "Encounter/e1"}])


STATUS = ("entry", 0, "resource")
PARAMS = (*STATUS, "parameter")


@pytest.mark.parametrize(("make", "mutate", "path"), [
    (_backport, _set(("type",), ["history"]), "Bundle.type"),
    (_backport, _set(("type",), {"value": "history"}), "Bundle.type"),
    (_backport, _set(("type",), 7), "Bundle.type"),
    (_backport, _set(("entry",), {"resource": {}}), "Bundle.entry"),
    (_backport, _set(("entry", 0), "status"), "Bundle.entry[0]"),
    (_backport, _set((*STATUS, "parameter"), {"name": "type"}), "Bundle.entry[0].resource.parameter"),
    (_backport, _set((*PARAMS, 3), {"name": ["type"], "valueCode": "heartbeat"}),
     "Bundle.entry[0].resource.parameter[3].name"),
    (_backport, _set((*PARAMS, 4, "valueString"), 12.0), "Bundle.entry[0].resource.parameter[4].valueString"),
    (_backport, _set((*PARAMS, 5, "part"), {"name": "event-number"}), "Bundle.entry[0].resource.parameter[5].part"),
    (_backport, _set((*PARAMS, 5, "part", 0, "valueString"), "¹²"),
     "Bundle.entry[0].resource.parameter[5].part[0].valueString"),
    (_backport, _set((*PARAMS, 5, "part", 0, "valueString"), True),
     "Bundle.entry[0].resource.parameter[5].part[0].valueString"),
    (_backport, _set((*PARAMS, 5, "part", 2, "valueReference"), "Encounter/e1"),
     "Bundle.entry[0].resource.parameter[5].part[2].valueReference"),
    (_backport, _set((*PARAMS, 0, "valueReference", "reference"), ["Subscription/adm1"]),
     "Bundle.entry[0].resource.parameter[0].valueReference.reference"),
    (_backport, _set((*PARAMS, 1, "valueCanonical"), {"url": "x"}),
     "Bundle.entry[0].resource.parameter[1].valueCanonical"),
    (_backport, _set(("entry", 1, "resource", "subject"), "Patient/p1"), "Bundle.entry[1].resource.subject"),
    (_backport, _set(("entry", 1, "resource", "class"), "IMP"), "Bundle.entry[1].resource.class"),
    (_backport, _set(("entry", 1, "resource", "meta"), ["1"]), "Bundle.entry[1].resource.meta"),
    (_backport, _set(("entry", 1, "resource", "meta", "versionId"), 1), "Bundle.entry[1].resource.meta.versionId"),
    (_backport, _set(("entry", 1, "resource", "id"), 5), "Bundle.entry[1].resource.id"),
    (_backport, _set(("id",), {"x": 1}), "Bundle.id"),
    (_r4b, _set((*STATUS, "eventsSinceSubscriptionStart"), "¹²"),
     "Bundle.entry[0].resource.eventsSinceSubscriptionStart"),
    (_r4b, _set((*STATUS, "eventsSinceSubscriptionStart"), MAX_COUNT + 1),
     "Bundle.entry[0].resource.eventsSinceSubscriptionStart"),
    (_r4b, _set((*STATUS, "notificationEvent", 0, "eventNumber"), "١٢"),
     "Bundle.entry[0].resource.notificationEvent[0].eventNumber"),
    (_r4b, _set((*STATUS, "notificationEvent", 0, "eventNumber"), 2**70),
     "Bundle.entry[0].resource.notificationEvent[0].eventNumber"),
    (_r4b, _set((*STATUS, "notificationEvent"), {"eventNumber": "1"}), "Bundle.entry[0].resource.notificationEvent"),
    (_r4b, _set((*STATUS, "type"), ["event-notification"]), "Bundle.entry[0].resource.type"),
    (_r4b, _set((*STATUS, "subscription"), "Subscription/r4b"), "Bundle.entry[0].resource.subscription"),
    (_r4b, _set((*STATUS, "topic"), 3), "Bundle.entry[0].resource.topic"),
])
def test_wrong_types_in_topic_notifications_are_400_with_the_path(client: TestClient, store: SqliteState,
                                                                   make: Callable[[], Json], mutate: Mutation,
                                                                   path: str) -> None:
    _refused(client, store, mutate(make()), path)


@pytest.mark.parametrize(("mutate", "path"), [
    (_set(("code", "coding"), {"system": "http://loinc.org", "code": "751-8"}), "Observation.code.coding"),
    (_set(("code", "coding"), 5), "Observation.code.coding"),
    (_set(("code", "coding"), "751-8"), "Observation.code.coding"),
    (_set(("code", "coding", 0, "code"), 7518), "Observation.code.coding[0].code"),
    (_set(("code",), [{"coding": []}]), "Observation.code"),
    (_set(("status",), {"code": "final"}), "Observation.status"),
    (_set(("subject", "reference"), 1), "Observation.subject.reference"),
    (_set(("resourceType",), ["Observation"]), "resourceType"),
])
def test_wrong_types_in_a_posted_or_put_resource_are_400(client: TestClient, store: SqliteState,
                                                         mutate: Mutation, path: str) -> None:
    body = mutate(observation())
    if isinstance(body.get("resourceType"), str):
        _refused(client, store, body, path)
        _refused(client, store, body, path, "/notify/Observation/o1", "put")
    else:
        _refused(client, store, body, path)


@pytest.mark.parametrize("text", OTHER_DIGITS)
def test_only_ascii_digits_are_counts(text: str) -> None:
    with pytest.raises(InputError) as exc:
        parse(TypeAdapter(Count), text, "n")
    assert (exc.value.issues[0].code, exc.value.issues[0].expression) == ("value", ("n",))


@pytest.mark.parametrize(("value", "expected"), [(0, 0), ("0", 0), ("12", 12), (MAX_COUNT, MAX_COUNT),
                                                 ("9" * 18, MAX_COUNT)])
def test_counts_are_json_integers_or_ascii_digit_strings(value: Any, expected: int) -> None:
    assert parse(TypeAdapter(Count), value, "n") == expected


@pytest.mark.parametrize("text", ["¹²", "١٢"])
def test_a_backport_count_of_other_digits_is_never_taken_for_a_number(client: TestClient, store: SqliteState,
                                                                        text: str) -> None:
    bundle = backport_bundle("heartbeat", 1)
    bundle["entry"][0]["resource"]["parameter"][4]["valueString"] = text
    _refused(client, store, bundle, "Bundle.entry[0].resource.parameter[4].valueString")


def test_a_correct_notification_still_goes_through_once(client: TestClient, store: SqliteState) -> None:
    for make in (_backport, _r4b):
        body = json.dumps(make()).encode()
        first = client.post("/notify", content=body, headers=FHIR)
        again = client.post("/notify", content=body, headers=FHIR)
        assert first.status_code == again.status_code == 200
        assert "0 new event(s), 1 duplicate(s)" in again.json()["issue"][0]["diagnostics"]
    assert sorted(e.event.dedupe_key for e in store.inbox_entries()) == [
        "event:Subscription/adm1:1", "event:Subscription/r4b:1"]


def test_the_models_do_not_change_the_body_they_read() -> None:
    bundle = _backport()
    before = copy.deepcopy(bundle)
    from bridge.service.notifications import parse_bundle

    parse_bundle("default", bundle)
    assert bundle == before
