"""Several ``bridge serve`` replicas on one database: names, slots, and one leader for the periodic checks.

Every replica is a worker with a name of its own, ``serve/<slot>@<host>:<pid>:<random>``, under which its
claims (inbox entries, re-screens) are recorded. The *slot* is a small number (0 .. ``MAX_REPLICAS``-1) the
replica holds an election lock on for as long as it runs: ``leader("replica-slot:<k>")``. A lock held by a
process is released by the database (PostgreSQL: the session ends) or the kernel (SQLite: the file lock) when
that process dies, however it dies — so a slot nobody holds is a slot whose last owner is gone, and the claims
recorded under ``serve/<k>@`` can be released at once instead of waiting for their leases to expire. The
replica that checks holds the slot's lock while it releases, so no new owner can claim under it meanwhile.

The gap and heartbeat checks, the start-up catch-ups, the purge and that sweep run in one replica at a time:
the one that wins ``leader("monitor")`` for that pass. Everything else (claiming, coalescing per patient) is
already safe between processes in the store.

``Election`` is what the worker needs of the state: ``leader(name)`` — a context manager that yields True when
this process now holds the lock ``name`` (until the block ends), False when another process holds it; it never
waits. The PostgreSQL state gives it with an advisory lock; ``FileElection`` gives it for a SQLite file with
``flock`` on a file beside the database (several processes on one host share a SQLite file, never several hosts).
"""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any, Protocol

from bridge.errors import ConfigError

MAX_REPLICAS = 16
MONITOR = "monitor"


class Election(Protocol):
    """Non-blocking named locks shared by every process on one database (see the module docstring)."""

    def leader(self, name: str) -> AbstractContextManager[bool]: ...


class Alone:
    """The election of a process that is the only one (tests, ``bridge watch --once``): it always leads."""

    @contextmanager
    def leader(self, name: str) -> Iterator[bool]:
        yield True


class FileElection:
    """``Election`` over ``flock`` on ``<db_path>.<name>.lock`` files (SQLite: every process on one host).

    ``flock`` locks belong to an open file description, so two opens in one process exclude each other too,
    and the kernel drops them when the process dies."""

    def __init__(self, db_path: str) -> None:
        self.base = db_path

    def path(self, name: str) -> Path:
        return Path(f"{self.base}.{name.replace(':', '-').replace('/', '-')}.lock")

    @contextmanager
    def leader(self, name: str) -> Iterator[bool]:
        handle: IO[str] = self.path(name).open("a+", encoding="utf-8")
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            handle.close()  # closing releases the lock; the file stays (removing it would race a new owner)


def election_for(state: Any, db_path: str) -> Election:
    """The state's own ``leader`` when it has one (PostgreSQL, and SQLite once the store offers it), else file
    locks beside the SQLite file at ``db_path``."""
    if callable(getattr(state, "leader", None)):
        return state  # type: ignore[no-any-return]  # duck-typed: any state with leader(name) is an Election
    return FileElection(db_path)


def slot_lock(slot: int) -> str:
    return f"replica-slot:{slot}"


def slot_prefix(slot: int, role: str = "serve") -> str:
    """The start of every claim made by the replica in ``slot`` (``serve/3@`` — never a prefix of slot 30's)."""
    return f"{role}/{slot}@"


def replica_name(slot: int, role: str = "serve") -> str:
    """A name no other process has: the slot, this host, this process and a random part."""
    return f"{slot_prefix(slot, role)}{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@contextmanager
def replica_slot(election: Election, limit: int = MAX_REPLICAS) -> Iterator[int]:
    """Hold the first free slot while the block runs; all ``limit`` slots held by live replicas is a
    ``ConfigError`` (exit 5)."""
    for slot in range(limit):
        with ExitStack() as stack:
            if stack.enter_context(election.leader(slot_lock(slot))):
                yield slot
                return
    raise ConfigError(f"{limit} replicas already serve this database (every replica slot is held): "
                      "stop one first")


__all__ = ["MAX_REPLICAS", "MONITOR", "Alone", "Election", "FileElection", "election_for", "replica_name",
           "replica_slot", "slot_lock", "slot_prefix"]
