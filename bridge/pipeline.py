"""Wiring shared by the CLI and the service: sources -> normalize -> evaluate, as one call each.

Who is screened (RULES.md §2): a patient for whom ``not_screened`` gives a reason (no valid Patient resource,
non-human, deceased on the as-of date) is listed in ``PrescreenRun.not_screened`` and never screened. An
unexpected exception while evaluating one patient (a bug) leaves that patient out, named in
``PrescreenRun.failed`` (reference and exception type, never data), and every other patient is evaluated.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TextIO

from bridge import STUDY_ID
from bridge.bulk import Failed, guarded, population_map
from bridge.config import RuleOptions
from bridge.evaluate.eligibility import CRITERIA, Screening, screen
from bridge.evaluate.screened import not_screened
from bridge.ingest.readers import Item, read_source
from bridge.model import NotScreened, PatientFacts
from bridge.normalize.mappings import CodeMap
from bridge.normalize.patients import PatientAssembler, ReadReport


@dataclass
class PrescreenRun:
    options: RuleOptions
    screenings: list[Screening]
    report: ReadReport
    population: bool = False  # True: a directory read in population mode (only acute-leukaemia patients)
    stream: Iterator[Screening] | None = None  # lazy=True: the screenings, computed as they are consumed
    not_screened: list[NotScreened] = field(default_factory=list)  # RULES.md §2 "Who is screened", by patient
    failed: list[Failed] = field(default_factory=list)  # patients whose evaluation raised (a bug), by patient
    # (with ``stream``, ``not_screened`` and ``failed`` are complete once the stream has been consumed)

    def as_json(self) -> dict[str, object]:
        return prescreen_json(self.screenings, self.options, self.not_screened)

    def take(self, outcomes: Iterable[Screening | NotScreened | Failed]) -> Iterator[Screening]:
        """The screenings among ``outcomes``, as they come; the others go to ``not_screened`` / ``failed``."""
        for out in outcomes:
            if isinstance(out, Screening):
                yield out
            elif isinstance(out, NotScreened):
                self.not_screened.append(out)
            else:
                self.failed.append(out)


def load_patients(items: Iterable[Item], cmap: CodeMap,
                  progress: Callable[[int], None] | None = None) -> tuple[list[PatientFacts], ReadReport]:
    asm = PatientAssembler(cmap)
    if progress is None:
        asm.add_items(items)
    else:
        asm.add_items(_counting(items, progress))
    return asm.patients(), asm.report


def _counting(items: Iterable[Item], progress: Callable[[int], None]) -> Iterable[Item]:
    for n, item in enumerate(items, start=1):
        if n % 500 == 0:
            progress(500)
        yield item


def evaluate_patient(pf: PatientFacts, options: RuleOptions, site_uln: dict[str, float] | None = None
                     ) -> Screening | NotScreened:
    """One patient's pre-screen, or why the patient is not screened (RULES.md §2)."""
    return not_screened(pf, options.as_of) or screen(pf, options, site_uln)


def screen_each(patients: Iterable[PatientFacts], options: RuleOptions, cmap: CodeMap
                ) -> Iterator[Screening | NotScreened | Failed]:
    """``evaluate_patient`` of each patient, guarded: an exception for one patient gives a ``Failed``."""
    evaluate = partial(evaluate_patient, options=options, site_uln=cmap.uln)
    for pf in patients:
        yield guarded(evaluate, pf)


def prescreen_patients(patients: Iterable[PatientFacts], options: RuleOptions, cmap: CodeMap) -> list[Screening]:
    """The screenings of the patients who are screened (see ``screen_run`` for the others and the failures)."""
    return screen_run(patients, options, cmap).screenings


def screen_run(patients: Iterable[PatientFacts], options: RuleOptions, cmap: CodeMap,
               report: ReadReport | None = None) -> PrescreenRun:
    """Every patient evaluated: the screenings, the patients not screened and those whose evaluation failed."""
    run = PrescreenRun(options, [], report or ReadReport())
    run.screenings = list(run.take(screen_each(patients, options, cmap)))
    run.not_screened.sort(key=lambda n: n.patient)
    run.failed.sort(key=lambda f: f.patient)
    return run


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def prescreen_items(items: Iterable[Item], options: RuleOptions, cmap: CodeMap,
                    progress: Callable[[int], None] | None = None) -> PrescreenRun:
    patients, report = load_patients(items, cmap, progress)
    return screen_run(patients, options, cmap, report)


def prescreen(source: str, options: RuleOptions, cmap: CodeMap,
              progress: Callable[[int], None] | None = None, *, all_patients: bool = False,
              lazy: bool = False) -> PrescreenRun:
    """Pre-screen a file, stdin or NDJSON directory (for a FHIR server use ``prescreen_items`` with ``pull``).

    A directory goes through the population fast path (``bridge.bulk``): only patients with an acute-leukaemia
    Condition are reported, each with the verdicts the per-patient path gives; ``all_patients`` evaluates
    every patient of the directory instead. With ``lazy`` the population's screenings are left in
    ``PrescreenRun.stream``, computed one patient at a time as it is consumed (``screenings`` stays empty), so
    a JSON writer holds one patient's verdicts at a time.
    """
    if not all_patients and source != "-" and Path(source).is_dir():
        outcomes, report = population_map(Path(source), cmap, partial(evaluate_patient, options=options,
                                                                      site_uln=cmap.uln), progress)
        # the patients are assembled and evaluated in the workers, in patient order
        run = PrescreenRun(options, [], report, population=True)
        if lazy:
            run.stream = run.take(outcomes)
        else:
            run.screenings = list(run.take(outcomes))
        return run
    return prescreen_items(read_source(source), options, cmap, progress)


def screening_json(s: Screening) -> dict[str, object]:
    return {"patient": s.patient, "status": s.status,
            "criteria": {v.criterion: v.as_json() for v in s.verdicts}}


def write_prescreen_json(stream: TextIO, screenings: Iterable[Screening], options: RuleOptions,
                         not_screened: Iterable[NotScreened] = ()) -> int:
    """The same document as ``prescreen_json``, written one patient at a time (memory stays flat); returns the
    number of patients written. ``not_screened`` is read after ``screenings`` is exhausted (a lazy run fills
    it as its stream is consumed)."""
    head = prescreen_json((), options)
    del head["results"], head["notScreened"]
    stream.write("{\n" + "".join(f"  {json.dumps(k)}: {json.dumps(v)},\n" for k, v in head.items()))
    stream.write('  "results": [')
    count = 0
    for count, s in enumerate(screenings, start=1):
        body = json.dumps(screening_json(s), indent=2, ensure_ascii=False).replace("\n", "\n    ")
        stream.write(("," if count > 1 else "") + "\n    " + body)
    stream.write("\n  ],\n")
    others = json.dumps(_not_screened_json(not_screened), indent=2, ensure_ascii=False).replace("\n", "\n  ")
    stream.write(f'  "notScreened": {others}\n}}\n')
    return count


def _not_screened_json(not_screened: Iterable[NotScreened]) -> list[dict[str, str]]:
    return [n.as_json() for n in sorted(not_screened, key=lambda n: n.patient)]


def prescreen_json(screenings: Iterable[Screening], options: RuleOptions,
                   not_screened: Iterable[NotScreened] = ()) -> dict[str, object]:
    """The ``bridge prescreen --format json`` document (issue #2 contract; ``notScreened``: RULES.md §2)."""
    return {"study": STUDY_ID, "asOf": options.as_of.isoformat(),
            "organFunctionReading": options.organ_function_reading,
            "results": [screening_json(s) for s in screenings],
            "notScreened": _not_screened_json(not_screened)}


__all__ = ["CRITERIA", "Failed", "PrescreenRun", "evaluate_patient", "is_url", "load_patients", "prescreen",
           "prescreen_items", "prescreen_json", "prescreen_patients", "screen_each", "screen_run", "screening_json",
           "write_prescreen_json"]
