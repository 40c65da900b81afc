"""The study team's users (``bridge.service.users``): the users file checked with every problem listed (exit 5
at start-up), authentication by password hash or token digest, and ``bridge users``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from argon2 import PasswordHasher
from typer.testing import CliRunner

from bridge.cli import build_app
from bridge.config import Settings, check_service_secrets
from bridge.errors import ConfigError
from bridge.service.users import User, Users, load_users, parse_users, token_digest

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # fast to verify in tests
PASSWORD, TOKEN = "correct horse battery staple", "ivo-personal-token-0123456789"


def _write(tmp_path: Path, entries: object) -> Path:
    path = tmp_path / "users.yaml"
    path.write_text(yaml.safe_dump(entries), encoding="utf-8")
    return path


def _team() -> list[dict[str, str]]:
    return [{"name": "ana.silva", "role": "coordinator", "password_hash": CHEAP.hash(PASSWORD)},
            {"name": "dr.ivo", "role": "investigator", "token_sha256": token_digest(TOKEN)}]


def test_a_valid_file_gives_its_users(tmp_path: Path) -> None:
    users = load_users(_write(tmp_path, _team()))
    assert users.names() == ["ana.silva", "dr.ivo"] and len(users) == 2


def test_every_problem_of_the_file_is_listed_without_secrets(tmp_path: Path) -> None:
    bad = [{"name": "ana", "role": "admin", "password_hash": "plain-text-password", "extra": 1},
           {"name": "ana", "role": "coordinator", "token_sha256": "ABC"},
           {"name": "", "role": "investigator"},
           "not a mapping",
           {"name": "bo", "role": "coordinator", "password_hash": CHEAP.hash("x"), "token_sha256": "0" * 64}]
    with pytest.raises(ConfigError) as exc:
        load_users(_write(tmp_path, bad))
    message = exc.value.message
    for expected in ("users[0].extra: unknown key", "users[0].role: must be coordinator or investigator",
                     "users[0].password_hash: not an argon2 hash", "users[1].name: the same name",
                     "users[1].token_sha256: must be 64", "users[2].name: required",
                     "users[2]: exactly one of", "users[3]: must be a mapping", "users[4]: exactly one of"):
        assert expected in message
    assert "plain-text-password" not in message and exc.value.exit_code == 5


@pytest.mark.parametrize("content", ["", "name: ana", "[unclosed"])
def test_a_file_that_is_no_list_of_users_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "users.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError):
        load_users(path)
    with pytest.raises(ConfigError):
        load_users(tmp_path / "missing.yaml")


def test_the_service_refuses_to_start_with_a_bad_users_file(tmp_path: Path) -> None:
    path = _write(tmp_path, [{"name": "ana", "role": "nurse", "password_hash": CHEAP.hash("x")}])
    with pytest.raises(ConfigError) as exc:
        check_service_secrets(Settings(users_file=str(path), api_token="short"))
    assert "api_token must be at least 32 bytes" in exc.value.message  # both problems in one line
    assert "users[0].role" in exc.value.message and exc.value.exit_code == 5
    check_service_secrets(Settings(users_file=str(_write(tmp_path, _team()))))


def test_authentication_by_password_or_token() -> None:
    users = Users(parse_users(_team())[0])
    ana = users.authenticate("ana.silva", PASSWORD)
    assert ana == User("ana.silva", "coordinator", ana.password_hash if ana else None)
    ivo = users.authenticate("dr.ivo", TOKEN)
    assert ivo is not None and (ivo.name, ivo.role) == ("dr.ivo", "investigator")
    assert users.authenticate("ana.silva", "wrong") is None
    assert users.authenticate("ana.silva", TOKEN) is None  # another user's token
    assert users.authenticate("dr.ivo", PASSWORD) is None
    assert users.authenticate("nobody", PASSWORD) is None and users.authenticate("", "") is None
    assert users.authenticate("ana.silva", PASSWORD + "x" * 2000) is None  # over MAX_SECRET_BYTES
    assert "hash" not in repr(ana) and "argon2" not in repr(ana)


def test_bridge_users_hash_reads_stdin_and_prints_a_hash_that_verifies() -> None:
    runner = CliRunner()
    done = runner.invoke(build_app(), ["users", "hash", "--stdin"], input=f"{PASSWORD}\n")
    assert done.exit_code == 0, done.output
    printed = done.output.strip()
    assert printed.startswith("$argon2id$") and PASSWORD not in printed
    assert PasswordHasher().verify(printed, PASSWORD)
    assert runner.invoke(build_app(), ["users", "hash", "--stdin"], input="\n").exit_code == 5
    assert "Example" in runner.invoke(build_app(), ["users", "hash", "--help"]).output


def test_bridge_users_token_and_check(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(build_app(), ["users", "token"]).output.splitlines()
    token, digest = made[0].removeprefix("token: "), made[1].removeprefix("token_sha256: ")
    assert token_digest(token) == digest
    ok = runner.invoke(build_app(), ["users", "check", str(_write(tmp_path, _team()))])
    assert ok.exit_code == 0 and "2 user(s): ana.silva, dr.ivo" in ok.output
    bad = runner.invoke(build_app(), ["users", "check", str(_write(tmp_path, [{"name": "x"}]))])
    assert bad.exit_code == 5
