"""Fixtures for tests against the real peer FHIR server (sekmet-fhir, see tests/integration/peer.py).

``peer`` is one server for the whole session; ``fresh_peer`` is a new server with an empty database for
one test (about a second to start), optionally with extra settings through ``peer_settings``. Every test
using them is marked ``peer``. Without the sekmet executable the tests are skipped with the reason — or
fail when the environment variable ``CI`` is set, so CI can never pass by skipping them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .peer import PeerServer, PeerUnavailable, find_sekmet

PEER_FIXTURES = {"peer", "fresh_peer", "sekmet_executable"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PEER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.peer)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"peer FHIR server unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"peer FHIR server unavailable: {reason}")


@pytest.fixture(scope="session")
def sekmet_executable() -> Path:
    try:
        return find_sekmet()
    except PeerUnavailable as exc:
        _unavailable(str(exc))
        raise  # unreachable: _unavailable always raises


def _started(executable: Path, extra: dict[str, Any] | None = None) -> PeerServer:
    try:
        return PeerServer(executable, extra).start()
    except PeerUnavailable as exc:
        _unavailable(str(exc))
        raise


@pytest.fixture(scope="session")
def peer(sekmet_executable: Path) -> Iterator[PeerServer]:
    server = _started(sekmet_executable)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def peer_settings() -> dict[str, Any]:
    """Extra sekmet settings for ``fresh_peer``; override in a test module or with indirect parametrize."""
    return {}


@pytest.fixture
def fresh_peer(sekmet_executable: Path, peer_settings: dict[str, Any]) -> Iterator[PeerServer]:
    server = _started(sekmet_executable, peer_settings)
    try:
        yield server
    finally:
        server.cleanup()
