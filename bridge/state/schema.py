"""What both backends' migrations share: which numbered migrations a database still needs (``pending``), and the
refusal of a database migrated by a newer bridge. Running them is each backend's own (``sqlite.py``,
``postgres.py``): the transaction, the lock and the SQL dialect differ."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bridge.errors import StoreError


@dataclass(frozen=True)
class Step:
    """A numbered schema migration; each backend's ``Migration`` adds its statements and how they run."""

    version: int
    name: str


M = TypeVar("M", bound=Step)


def pending(done: Collection[int], migrations: Sequence[M], where: str) -> list[M]:
    """The ``migrations`` whose version is not in ``done``, in version order. A version in ``done`` that no
    migration has (a newer bridge migrated ``where``) is a ``StoreError``: this bridge must not touch it."""
    known = {m.version for m in migrations}
    newer = sorted(set(done) - known)
    if newer:
        raise StoreError(f"the state store {where} has schema version {newer[-1]}, newer than this bridge knows "
                         f"({max(known, default=0)}): upgrade the bridge")
    return sorted((m for m in migrations if m.version not in done), key=lambda m: m.version)


__all__ = ["Step", "pending"]
