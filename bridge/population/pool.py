"""The worker pool of the population path: one pass over tasks, in forked workers or in this process.

Workers are forked (one per core) so that they inherit the pass's state — the candidates, their pattern, the
code map, the spill file, the merged index of the final phase — instead of receiving it pickled; ``gc.freeze()``
first, so that a collection in a worker does not copy every page it shares with the parent. Each worker fixes
malloc's mmap threshold (``steady_malloc``) so that its memory stays flat over any number of chunks. Where fork
or positioned file I/O is missing, the pass runs in this process with the same state.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, Protocol

from bridge.population import spill
from bridge.population.chunks import release_buffer


class WorkerState(Protocol):
    """What the workers of one pass share (read with ``worker_state()``)."""

    def prepare(self) -> None:
        """Builds in the parent, before the fork, whatever the workers would otherwise each build."""


_STATE: list[Any] = []  # this process's state for the current pass


def worker_state() -> Any:
    """The state of the pass this process works for (a worker entry point's first call)."""
    return _STATE[0]


def default_processes() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def steady_malloc() -> None:
    """A fixed mmap threshold for this (worker) process, so that its memory stays flat over any number of chunks.

    glibc's malloc raises its mmap threshold each time a large block is freed, after which multi-MiB buffers
    (chunk reads, pickled groups, numpy temporaries) come from the heap and fragment it: measured here, a
    worker's RSS crept from 64 to 98 MB over the first 200 chunks of the 100k-patient export. With the
    threshold fixed at glibc's default of 128 KiB, large blocks go back to the system when freed. Elsewhere
    (not glibc) this does nothing.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, 128 * 1024)


def without_gc(fn: Callable[[Any], Any], task: Any) -> Any:
    """``fn(task)`` with the cyclic garbage collector paused (and resumed after, if it was running).

    A task allocates a bounded amount (one chunk, one partition) of mostly acyclic objects — parsed lines,
    facts, verdicts — and holds many of them at once, so the collector's generation-2 passes kept walking
    them all: measured on a lab-dense partition, 633 collections took 27 % of its evaluation. Reference
    counting still frees everything acyclic at once; the few cycles a task makes are collected once the
    collector resumes.
    """
    if not gc.isenabled():
        return fn(task)
    gc.disable()
    try:
        return fn(task)
    finally:
        gc.enable()


def _init_worker(state: WorkerState) -> None:
    steady_malloc()
    _STATE[:] = [state]


class Pool:
    """Runs one pass over tasks: in a process pool (fork where available) or in this process."""

    def __init__(self, state: WorkerState, processes: int) -> None:
        self.state, self.processes = state, processes

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[Any]:
        """``fn`` of each task, in order, computed as they are consumed."""
        self.state.prepare()
        methods = multiprocessing.get_all_start_methods()
        if self.processes <= 1 or len(tasks) <= 1 or "fork" not in methods or not spill.POSITIONED:
            return self._here(fn, tasks)  # the spill file and the state are inherited: both need fork + pread
        return self._forked(fn, tasks)

    def _here(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[Any]:
        try:
            for task in tasks:
                _STATE[:] = [self.state]  # per task: a consumer may run another pass between two results
                yield without_gc(fn, task)
        finally:
            _STATE.clear()
            release_buffer()  # the workers' buffers go with them; this process keeps running

    def _forked(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[Any]:
        ctx = multiprocessing.get_context("fork")
        gc.freeze()  # forked workers share the parent's objects; a collection in them would copy every page
        try:
            with ctx.Pool(min(self.processes, len(tasks)), initializer=_init_worker, initargs=(self.state,)) as pool:
                yield from pool.imap(partial(without_gc, fn), tasks)
        finally:
            gc.unfreeze()


__all__ = ["Pool", "WorkerState", "default_processes", "steady_malloc", "without_gc", "worker_state"]
