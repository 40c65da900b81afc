"""The study team's service for browser tests (issue #17): ``server.py`` as a real process (``ServiceProcess``)
with a users file (a coordinator and an investigator, argon2 password hashes), screenings saved in its state
before it starts, and optionally an EHR (``ehr_base_url``: e.g. the peer FHIR server of
``tests/integration/peer.py``, for tests that check the write-back there).

``start_team_service(workdir, screenings, ehr_base_url=None, settings=None)`` returns the started service;
``sign_in(driver, base, user)`` signs a browser in as one of ``COORDINATOR`` / ``INVESTIGATOR``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bridge.service.users import hash_password
from bridge.state import ScreeningRecord
from bridge.state.sqlite_state import SqliteState
from tests.processes import ServiceProcess


@dataclass(frozen=True)
class Person:
    name: str
    role: str
    password: str


COORDINATOR = Person("ana.silva", "coordinator", "ana-" + secrets.token_urlsafe(12))
INVESTIGATOR = Person("dr.ivo", "investigator", "ivo-" + secrets.token_urlsafe(12))
TEAM = (COORDINATOR, INVESTIGATOR)


def write_users_file(path: Path, people: Iterable[Person] = TEAM) -> Path:
    entries = [{"name": p.name, "role": p.role, "password_hash": hash_password(p.password)} for p in people]
    path.write_text(yaml.safe_dump(entries), encoding="utf-8")
    return path


def start_team_service(workdir: Path, screenings: Iterable[ScreeningRecord], ehr_base_url: str | None = None,
                       settings: dict[str, Any] | None = None) -> ServiceProcess:
    """``server.py`` with the team's users file and ``screenings`` saved in its state; the caller stops it."""
    service = ServiceProcess(workdir, {
        "users_file": str(write_users_file(workdir / "users.yaml")),
        "api_token": secrets.token_urlsafe(32),  # the machine API's; it does not open the coordinator page
        "webhook_secret": secrets.token_urlsafe(32),
        **({"ehr_base_url": ehr_base_url} if ehr_base_url else {}),
        **(settings or {}),
    })
    state = SqliteState(service.db)
    try:
        for record in screenings:
            state.save_screening(record)
    finally:
        state.close()
    return service.start()


def sign_in(driver: Any, base: str, person: Person) -> None:
    """Sign ``driver`` in on the service at ``base`` as ``person`` (it lands on the queue)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.delete_all_cookies()
    driver.get(f"{base}/ui/login")
    driver.find_element(By.ID, "name").send_keys(person.name)
    driver.find_element(By.ID, "password").send_keys(person.password)
    driver.find_element(By.ID, "sign-in").click()
    WebDriverWait(driver, 10).until(expected_conditions.url_to_be(f"{base}/ui"))


__all__ = ["COORDINATOR", "INVESTIGATOR", "TEAM", "Person", "sign_in", "start_team_service", "write_users_file"]
