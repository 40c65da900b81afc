"""Population-scale pre-screen of a Bulk Data NDJSON directory: stream, prune early, use every core.

Population mode — what it reports
    The *candidates*: patients with at least one Condition coded with a gate concept of the trial (acute
    leukaemia in the shipped one; any clinical or verification status, any date, valid or not) — every patient
    whose ``inc-diagnosis`` can be other than ``not-met``. Everyone else is ineligible on ``inc-diagnosis``
    alone; leaving them out is what lets the cost follow the data that matters. For every patient it reports,
    the verdicts are identical to those of the per-patient path (``bridge.pipeline.prescreen_items``): every
    line that could change one of that patient's verdicts is read and goes through the same assembler.
    ``bridge.pipeline.prescreen(..., all_patients=True)`` evaluates every patient instead. Which concepts
    matter is the trial's (``relevance.TrialConcepts``: its fact, condition and gate concepts); nothing here
    names one.

How (one module per concern)
    1. ``chunks``: the files are cut into byte ranges at line boundaries, read into one reused buffer per
       process; canonical ranges and line positions are found with vector operations on the newlines.
    2. ``pool``: each pass runs in a pool of forked workers (one per core; in this process where fork is
       missing) that inherit the pass's state; results come back in plan order.
    3. Pass 1 (``scan.find_candidates``) parses the Condition files — the first line tells a file's type; Bulk
       Data files hold one type each — and collects the candidates (``relevance.is_gate_condition``).
    4. Pass 2 (``scan.screen_chunk``) streams every file. A line is parsed only when the bytes pre-filter
       (``prefilter``) finds a candidate's ``Patient/<id>`` in it, or cannot tell (escapes, a non-canonical
       line, a Patient resource). Parsed, it is kept when it belongs to a candidate and is a Patient, or an
       Observation or a Condition with a coding of a concept some criterion reads (``relevance.relevant``).
       Encounter and MedicationAdministration never change an eligibility verdict and are not parsed. Kept
       lines, and only they, are validated with the R4B models and normalized — in the worker, by the
       per-patient assembler (``assembler``) — with the line's position in the directory as its arrival order,
       so that "the newest version wins" resolves exactly as in one sequential read. The workers write what
       they keep (pickled per patient and chunk) and the dropped lines' digests to a shared anonymous
       ``spill`` file.
    5. ``merge``: two guards keep the result exact where a plain Bulk Data export never goes: a gate Condition
       met in pass 2 in a file pass 1 did not read (a mixed-type file) adds its patient, and a candidate's
       resource dropped as irrelevant that shares type and id with a kept one (a later version with another
       code) is noticed through a 64-bit digest of its reference; either makes pass 2 run again (``run``), with
       the new candidates or keeping those resources. Not followed: a later version that moves a resource from
       a candidate to another patient, or drops its subject (its bytes name no candidate, so it is never read).
    6. The final phase (``merge``) — versions resolved, each patient assembled, then ``then`` (the pipeline:
       screening) applied — runs in forked workers too, in batches of patients, the results coming back in id
       order. An exception raised by ``then`` for one patient (a bug) does not lose the batch: that patient's
       result is a ``Failed`` naming it and the exception's type, and every other patient is still evaluated.

Memory: the parent holds 12 bytes per kept resource and 16 per spilled group (the resources themselves are
in the spill file), each worker one chunk and what it keeps from it — never a line of a patient who is not a
candidate. Workers reuse one read buffer and fix malloc's mmap threshold, so they stay flat over any number
of chunks (``pool.steady_malloc``).

Report
    ``skipped`` lists every line the fast path parses that is not JSON or fails the R4B model, with the file,
    line number and reason of the per-patient path, in its order. Every line that is not framed as a
    canonical JSON object is parsed; a framed line that references no candidate is not (a defect inside it
    goes unreported). ``warnings`` come from the reported patients' resources; ``read`` counts non-blank
    lines, ``used`` the resources kept, ``ignored_types`` the lines of types the bridge does not read;
    ``no_patient`` stays 0 (lines naming no candidate are not parsed). Identity conflicts (versions of one
    resource naming different patients, Patients sharing an id) are warned about, in reference order among
    the other warnings, as the per-patient path does — among the candidates' resources.
"""

from __future__ import annotations

from bridge.population.chunks import CHUNK_BYTES, Chunk, plan_chunks, read_chunk, read_chunk_reusing
from bridge.population.merge import Failed, guarded
from bridge.population.partition import all_patients_map
from bridge.population.pool import default_processes, steady_malloc
from bridge.population.relevance import Concepts, TrialConcepts, default_trial
from bridge.population.run import population_map, population_patients

__all__ = ["CHUNK_BYTES", "Chunk", "Concepts", "Failed", "TrialConcepts", "all_patients_map", "default_processes",
           "default_trial",
           "guarded", "plan_chunks", "population_map", "population_patients", "read_chunk", "read_chunk_reusing",
           "steady_malloc"]
