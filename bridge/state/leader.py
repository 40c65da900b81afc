"""One runner of periodic work among the processes sharing a state: ``leader(name)``.

``with state.leader("monitor") as leading:`` — ``leading`` is True when this process now holds the lock
``name`` until the block ends, False when another process (or another ``leader`` block of this one) holds it.
It never waits. A lock held by a process that dies is released without it: by the database (PostgreSQL: a
session advisory lock, ``pg_try_advisory_lock``, on a connection kept for the block) or by the kernel (SQLite:
``flock`` on ``<db_path>.<name>.lock`` beside the file — a SQLite file is shared by processes of one host only).

The names are the caller's (``bridge.service.replicas``: ``monitor`` for the catch-up and heartbeat checks,
``replica-slot:<k>`` for a replica's slot). If the PostgreSQL connection holding a lock breaks while the block
runs (the server restarted), the lock is gone before the block ends: leadership is a way to avoid duplicate
periodic work, never what makes a write correct — claims, leases and ``ON CONFLICT`` do that.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Protocol


class Leadership(Protocol):
    """Non-blocking named locks shared by every process on one state (see the module docstring)."""

    def leader(self, name: str) -> AbstractContextManager[bool]: ...


def lock_file(db_path: str, name: str) -> Path:
    """The flock file of ``name`` beside the SQLite file (``:`` and ``/`` in the name become ``-``)."""
    return Path(f"{db_path}.{name.replace(':', '-').replace('/', '-')}.lock")


@contextmanager
def file_leader(db_path: str, name: str) -> Iterator[bool]:
    """``leader`` for a SQLite file: ``flock`` belongs to an open file description, so two blocks in one process
    exclude each other too, and the kernel drops the lock when the process dies. The file stays (removing it
    would race a new owner)."""
    handle: IO[str] = lock_file(db_path, name).open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        handle.close()


__all__ = ["Leadership", "file_leader", "lock_file"]
