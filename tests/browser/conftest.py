"""Fixtures of the browser tests: one headless chromium per module (``browser``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.chrome import new_driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    driver = new_driver(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()
