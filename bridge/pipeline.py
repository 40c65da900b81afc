"""Wiring shared by the CLI and the service: sources -> normalize -> evaluate, as one call each."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TextIO

from bridge import STUDY_ID
from bridge.bulk import population_map
from bridge.config import RuleOptions
from bridge.evaluate.eligibility import CRITERIA, Screening, screen
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
    not_screened: list[NotScreened] = field(default_factory=list)  # RULES.md §2 "Who is screened"

    def as_json(self) -> dict[str, object]:
        return prescreen_json(self.screenings, self.options)


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


def prescreen_patients(patients: Iterable[PatientFacts], options: RuleOptions, cmap: CodeMap) -> list[Screening]:
    return [screen(p, options, cmap.uln) for p in patients]


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def prescreen_items(items: Iterable[Item], options: RuleOptions, cmap: CodeMap,
                    progress: Callable[[int], None] | None = None) -> PrescreenRun:
    patients, report = load_patients(items, cmap, progress)
    return PrescreenRun(options, prescreen_patients(patients, options, cmap), report)


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
        screened, report = population_map(Path(source), cmap, partial(screen, options=options, site_uln=cmap.uln),
                                          progress)  # the patients are assembled and screened in the workers
        if lazy:
            return PrescreenRun(options, [], report, population=True, stream=screened)
        return PrescreenRun(options, list(screened), report, population=True)
    return prescreen_items(read_source(source), options, cmap, progress)


def screening_json(s: Screening) -> dict[str, object]:
    return {"patient": s.patient, "status": s.status,
            "criteria": {v.criterion: v.as_json() for v in s.verdicts}}


def write_prescreen_json(stream: TextIO, screenings: Iterable[Screening], options: RuleOptions) -> int:
    """The same document as ``prescreen_json``, written one patient at a time (memory stays flat); returns the
    number of patients written."""
    head = prescreen_json((), options)
    del head["results"]
    stream.write("{\n" + "".join(f"  {json.dumps(k)}: {json.dumps(v)},\n" for k, v in head.items()))
    stream.write('  "results": [')
    count = 0
    for count, s in enumerate(screenings, start=1):
        body = json.dumps(screening_json(s), indent=2, ensure_ascii=False).replace("\n", "\n    ")
        stream.write(("," if count > 1 else "") + "\n    " + body)
    stream.write("\n  ]\n}\n")
    return count


def prescreen_json(screenings: Iterable[Screening], options: RuleOptions) -> dict[str, object]:
    """The ``bridge prescreen --format json`` document (issue #2 contract)."""
    return {"study": STUDY_ID, "asOf": options.as_of.isoformat(),
            "organFunctionReading": options.organ_function_reading,
            "results": [screening_json(s) for s in screenings]}


__all__ = ["CRITERIA", "PrescreenRun", "is_url", "load_patients", "prescreen", "prescreen_items", "prescreen_json",
           "prescreen_patients", "screening_json", "write_prescreen_json"]
