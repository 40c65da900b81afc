"""The coordinator: pass 1, pass 2 until the result is exact, then the final phase (see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from bridge.ingest.readers import ndjson_files
from bridge.model import PatientFacts
from bridge.normalize.mappings import CodeMap
from bridge.normalize.patients import ReadReport
from bridge.population.chunks import CHUNK_BYTES, Chunk, file_type, plan_chunks
from bridge.population.merge import Merge
from bridge.population.pool import Pool, default_processes
from bridge.population.relevance import Concepts, TrialConcepts, default_trial
from bridge.population.scan import Scope, find_candidates, screen_chunk


def candidates_in(files: Sequence[Path], plan: Sequence[Chunk], cmap: CodeMap, concepts: Concepts,
                  processes: int) -> tuple[set[str], frozenset[int]]:
    """Pass 1: the candidates, and the indexes of the files it read (Condition files, or of unknown type)."""
    pass_one = frozenset(i for i, p in enumerate(files) if file_type(p) in (None, "Condition"))
    found: set[str] = set()
    tasks = [c for c in plan if c.file_index in pass_one]
    for part in Pool(Scope(cmap, concepts), processes).map(find_candidates, tasks):
        found |= part
    return found, pass_one


def population_patients(directory: Path, cmap: CodeMap, progress: Callable[[int], None] | None = None, *,
                        processes: int | None = None, chunk_bytes: int = CHUNK_BYTES,
                        trial: TrialConcepts | None = None) -> tuple[Iterator[PatientFacts], ReadReport]:
    """The facts of every candidate (a patient with a Condition coded with one of the trial's gate concepts),
    assembled lazily, in id order, and the read report."""
    return population_map(directory, cmap, None, progress, processes=processes, chunk_bytes=chunk_bytes,
                          trial=trial)


def population_map(directory: Path, cmap: CodeMap, then: Callable[[PatientFacts], Any] | None,
                   progress: Callable[[int], None] | None = None, *, processes: int | None = None,
                   chunk_bytes: int = CHUNK_BYTES, trial: TrialConcepts | None = None
                   ) -> tuple[Iterator[Any], ReadReport]:
    """``then`` of the facts of every candidate (a patient with a Condition coded with one of the trial's gate
    concepts; the default trial when None), in id order (the facts themselves when ``then`` is None), computed
    lazily and in parallel; and the read report. ``then`` runs in the worker processes: a module-level function
    or a ``functools.partial`` of one."""
    concepts = Concepts.of(trial if trial is not None else default_trial())
    files = ndjson_files(directory)
    plan = plan_chunks(files, chunk_bytes)
    workers = processes or default_processes()
    candidates, pass_one = candidates_in(files, plan, cmap, concepts, workers)
    keep: frozenset[str] = frozenset()
    while True:
        merged = Merge(files, cmap)
        try:
            scope = Scope(cmap, concepts, frozenset(candidates), pass_one, keep, merged.spill)
            for result in Pool(scope, workers).map(screen_chunk, plan):
                merged.add(result)
                if progress is not None:
                    progress(result.lines)
            more, collide = merged.strays - candidates, merged.collisions() - keep
        except BaseException:
            merged.spill.close()
            raise
        if not more and not collide:
            return merged.finish(then, workers)
        merged.spill.close()
        candidates |= more
        keep |= collide


__all__ = ["candidates_in", "population_map", "population_patients"]
