"""Former home of the population path, now ``bridge.population``: re-exports the names imported from here.

Import from ``bridge.population`` (or its modules) in new code.
"""

from __future__ import annotations

from bridge.population import (
    CHUNK_BYTES,
    Chunk,
    Failed,
    default_processes,
    guarded,
    plan_chunks,
    population_map,
    population_patients,
    read_chunk,
    read_chunk_reusing,
    steady_malloc,
)
from bridge.population.assembler import PositionedAssembler
from bridge.population.chunks import file_type
from bridge.population.merge import finish_batch
from bridge.population.relevance import CachedCodes, Codes, patient_of, relevant
from bridge.population.run import candidates_in
from bridge.population.scan import ChunkReader, ChunkResult, Scope, find_candidates, screen_chunk
from bridge.population.spill import Packed, Spill, digest

__all__ = ["CHUNK_BYTES", "CachedCodes", "Chunk", "ChunkReader", "ChunkResult", "Codes", "Failed", "Packed",
           "PositionedAssembler", "Scope", "Spill", "candidates_in", "default_processes", "digest", "file_type",
           "find_candidates", "finish_batch", "guarded", "patient_of", "plan_chunks", "population_map",
           "population_patients", "read_chunk", "read_chunk_reusing", "relevant", "screen_chunk", "steady_malloc"]
