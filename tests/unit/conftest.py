"""Fixtures the unit test modules share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses

from tests.pg import pg_database, pg_session_database, pg_url, state, state_location  # noqa: F401 - fixtures


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """``responses`` for one test: unmatched requests fail, registered answers need not all be used."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock
