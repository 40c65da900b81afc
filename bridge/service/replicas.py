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

``Election`` is what the worker needs of the state: ``leader(name)`` (``bridge.state.leader``) — a context
manager that yields True when this process now holds the lock ``name`` (until the block ends), False when
another process holds it; it never waits. PostgreSQL gives it with a session advisory lock, a SQLite file with
``flock`` on a file beside it (several processes on one host share a SQLite file, never several hosts).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from bridge.errors import ConfigError
from bridge.state.leader import Leadership

MAX_REPLICAS = 16
MONITOR = "monitor"


Election = Leadership  # what the worker needs of the state: ``leader(name)``, see ``bridge.state.leader``


class Alone:
    """The election of a process that is the only one (tests, a worker driven by hand): it always leads."""

    @contextmanager
    def leader(self, name: str) -> Iterator[bool]:
        yield True


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


__all__ = ["MAX_REPLICAS", "MONITOR", "Alone", "Election", "replica_name", "replica_slot", "slot_lock",
           "slot_prefix"]
