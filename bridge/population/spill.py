"""The spill file: where the workers put what they keep, so that it never passes through the parent's memory.

The workers write each chunk's kept resources (pickled per patient) and the 64-bit digests of the resources
they dropped to one anonymous temporary file, and send back only where those lie (``Packed``); the parent
keeps the digests and reads a group back only when it must (``bridge.population.merge``), and the workers of
the final phase read the groups themselves.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import tempfile
from dataclasses import dataclass

from bridge.normalize.facts import Normalized
from bridge.normalize.patients import VersionKey

POSITIONED = hasattr(os, "pread") and hasattr(os, "pwrite")  # without them: one process, no fork (Windows)

Group = list[tuple[str, VersionKey, Normalized]]  # one patient's kept resources from one chunk: (ref, version, norm)
Problems = tuple[tuple[str, VersionKey, tuple[str, ...]], ...]  # the warnings of those that have any


def digest(ref: str) -> int:
    """A signed 64-bit digest of a resource reference (stable across processes)."""
    return int.from_bytes(hashlib.blake2b(ref.encode("utf-8"), digest_size=8).digest(), "big", signed=True)


@dataclass(frozen=True, slots=True)
class Packed:
    """One patient's kept resources from one chunk: where their pickled group lies in the spill file, the
    64-bit digest of each reference (``array("q")`` bytes, in the group's order) and their warnings."""

    patient: str
    digests: bytes
    offset: int
    length: int
    problems: Problems = ()


class Spill:
    """An anonymous temporary file (unlinked at once, so nothing is left behind even if the process is
    killed) that the workers append to and the parent reads back: the candidates' pickled resources never
    pass through the parent's memory while the directory is read. Forked workers inherit its descriptor and
    lock; positioned writes under the lock keep the appends of several processes apart (POSIX; elsewhere there
    is no fork, one process, and plain seek/write)."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.fd = self.file.fileno()
        self.lock = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods()
                                                else None).Lock()

    def append(self, data: bytes) -> int:
        """Writes ``data`` at the end of the file; returns where it starts."""
        with self.lock:
            if not POSITIONED:  # no pread/pwrite (Windows): one process only, the file object will do
                offset = self.file.seek(0, os.SEEK_END)
                self.file.write(data)
                self.file.flush()
                return offset
            offset = os.fstat(self.fd).st_size
            view, at = memoryview(data), offset
            while view:
                written = os.pwrite(self.fd, view, at)
                view, at = view[written:], at + written
        return offset

    def read(self, offset: int, length: int) -> bytes:
        if not POSITIONED:
            self.file.seek(offset)
            return self.file.read(length)
        return os.pread(self.fd, length, offset)

    def close(self) -> None:
        self.file.close()


__all__ = ["POSITIONED", "Group", "Packed", "Problems", "Spill", "digest"]
