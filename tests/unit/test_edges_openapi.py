"""A bounded, deterministic schemathesis run against the whole service app (issue #14 item 6).

Every operation of ``/openapi.json`` — notifications (bodies generated from the declared notification models,
on generated channel names, with each channel's own secret), health, the read API and the coordinator page — is
called in-process with schema-conforming and schema-violating inputs; none may answer 5xx. The run is bounded
(``MAX_EXAMPLES`` per operation and mode, about 25 s on two cores) and derandomized (the same cases every run);
``BRIDGE_OPENAPI_EXAMPLES=500`` makes a deeper local run.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from bridge.config import Settings
from bridge.service.app import create_app
from bridge.service.channels import channel_secret
from bridge.state import PublishedRecord
from bridge.state.sqlite_state import SqliteState

SECRET = "openapi-webhook-secret-0123456789abcdef"
TOKEN = "openapi-api-token-0123456789abcdefghijk"
MAX_EXAMPLES = int(os.environ.get("BRIDGE_OPENAPI_EXAMPLES", "15"))  # per operation and mode; more for a deep run


def _seed(store: SqliteState) -> None:
    subject = {"resourceType": "ResearchSubject", "id": "rs-p1", "status": "candidate",
               "study": {"reference": "ResearchStudy/nct04762485"}, "individual": {"reference": "Patient/p1"}}
    store.put_published(PublishedRecord("ResearchSubject|x|p1", "ResearchSubject", "rs-p1", "fp", "1", subject, 0.0))


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    store = SqliteState(tmp_path_factory.mktemp("openapi") / "state.sqlite3")
    _seed(store)
    app = create_app(Settings(webhook_secret=SECRET, api_token=TOKEN, max_body_bytes=100_000), store)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)
    store.close()


def _credentials(case: Any) -> dict[str, str]:
    """The right secret for notifications (their channel's) and the read API; the rest as generated."""
    path: str = case.operation.path
    if path.startswith("/notify"):
        channel = (case.path_parameters or {}).get("channel", "default")
        return {"Authorization": f"Bearer {channel_secret(SECRET, str(channel))}"}
    if path.startswith("/fhir"):
        return {"Authorization": f"Bearer {TOKEN}"}
    return {}


def _run(operation: Any, mode: GenerationMode, seen: Counter[tuple[str, int]], errors: list[str]) -> None:
    label = f"{operation.method.upper()} {operation.path}"

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(case=operation.as_strategy(mode))
    def call(case: Any) -> None:
        response = case.call(headers=_credentials(case))
        seen[(label, response.status_code)] += 1
        if response.status_code >= 500:
            errors.append(f"{label} ({mode}) -> {response.status_code}: {case.formatted_path} "
                          f"query={case.query} body={str(case.body)[:200]}")

    try:
        call()
    except Unsatisfiable:  # nothing to make invalid (an operation without parameters or body)
        assert mode is GenerationMode.NEGATIVE, label


def test_no_operation_answers_5xx(api_schema: Any) -> None:
    # the same cases every run: derandomized hypothesis, no example database, no shrinking phase
    seen: Counter[tuple[str, int]] = Counter()
    errors: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run(operation, mode, seen, errors)
    assert errors == []
    reached = {label for label, status in seen if status < 400}
    assert {"POST /notify", "POST /notify/{channel}", "PUT /notify/{channel}/{resource_type}/{resource_id}",
            "GET /readyz", "GET /ui/login"} <= reached, sorted(seen)
    assert len(operations) >= 15
