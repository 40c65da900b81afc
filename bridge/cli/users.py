"""``bridge users``: the study team's users file — ``hash`` makes a password hash, ``token`` a per-user token,
``check`` validates a file. Secrets are read from a prompt (not echoed) or stdin, never from the command line
(where ``ps`` and the shell history would keep them)."""

from __future__ import annotations

import getpass
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer

from bridge.cli.common import handles_errors
from bridge.errors import ConfigError

app = typer.Typer(name="users", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  rich_markup_mode=None,
                  help="The study team's users file (users_file, BRIDGE_USERS_FILE): named coordinators and "
                       "investigators who sign in to the coordinator page.")

HASH_HELP = """Print an argon2id hash of a password, for a user's password_hash in the users file.

The password is asked twice at a prompt that does not echo it; with --stdin it is the first line of standard
input (for scripts; the trailing newline is dropped). It never appears on the command line.

Example:

\b
    $ bridge users hash
    Password:
    Again:
    $argon2id$v=19$m=65536,t=3,p=4$...

\b
    # users.yaml (users_file: users.yaml, or BRIDGE_USERS_FILE=users.yaml)
    - name: ana.silva
      role: coordinator
      password_hash: "$argon2id$v=19$m=65536,t=3,p=4$..."

Exit codes: 0 printed, 5 empty password, passwords that differ, or one longer than 1024 bytes.
"""

MINT_HELP = """Make a random per-user token: print the token (give it to the person, once) and its digest
line token_sha256 for the users file (only the digest is stored).

Example:

\b
    $ bridge users token
    token: 3q2-7w...
    token_sha256: 9f86d0818...
"""

CHECK_HELP = """Check a users file as the service does at start-up, listing every problem at once.

Example:

\b
    bridge users check users.yaml

Exit codes: 0 valid, 5 the file cannot be read or has problems (each named by entry and field).
"""


def _read_password(stdin: bool) -> str:
    from bridge.service.users import MAX_SECRET_BYTES

    if stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise ConfigError("the two passwords differ")
    if not password:
        raise ConfigError("the password is empty")
    if len(password.encode("utf-8")) > MAX_SECRET_BYTES:
        raise ConfigError(f"the password is longer than {MAX_SECRET_BYTES} bytes")
    return password


@app.command("hash", help=HASH_HELP)
@handles_errors
def hash_command(
    stdin: Annotated[bool, typer.Option("--stdin", help="read the password from the first line of stdin")] = False,
) -> None:
    from bridge.service.users import hash_password

    typer.echo(hash_password(_read_password(stdin)))


@app.command("token", help=MINT_HELP)
def token_command() -> None:
    from bridge.service.users import token_digest

    token = secrets.token_urlsafe(32)
    typer.echo(f"token: {token}")
    typer.echo(f"token_sha256: {token_digest(token)}")


@app.command("check", help=CHECK_HELP)
@handles_errors
def check_command(path: Annotated[Path, typer.Argument(help="the users file (YAML or JSON)")]) -> None:
    from bridge.service.users import load_users

    users = load_users(path)
    typer.echo(f"{len(users)} user(s): {', '.join(users.names())}")


__all__ = ["app"]
