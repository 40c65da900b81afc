"""Debian chromium under chromedriver, headless, for the browser tests: ``require_browser`` skips (or, with
``CI`` set, fails) when either is missing; ``new_driver`` starts one with a profile of its own."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        reason = f"{', '.join(missing)} missing: run scripts/browser-deps"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


def new_driver(profile: Path) -> Any:
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--hide-scrollbars", "--window-size=1280,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    return driver


__all__ = ["CHROMEDRIVER", "CHROMIUM", "new_driver", "require_browser"]


def wait_replaced(driver: Any, element: Any, seconds: float = 10) -> None:
    """Wait until ``element``'s page has been replaced (after a click that posts a form and is redirected).

    Selenium's ``staleness_of`` asks the element and expects ``StaleElementReferenceException``; while the new
    page is being swapped in, chromedriver may answer instead "Node with given id does not belong to the
    document" (a plain ``WebDriverException``) — the same fact, which made a test fail in CI. Both mean gone.
    """
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    def gone(_: Any) -> bool:
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in (exc.msg or ""):
                return True
            raise
        return False

    WebDriverWait(driver, seconds).until(gone)
