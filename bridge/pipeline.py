"""Wiring shared by the CLI and the service: sources -> normalize -> evaluate, as one call each.

Every command opens its SOURCE with ``bridge.ingest.sources.open_source``; the pre-screen is ``prescreen`` (or
``prescreen_items`` / ``screen_run`` over items or patients already read, ``screen_one`` for the service's one
patient), the post-infusion assessment is ``assess`` (or ``assess_loaded`` over patients already read — what
``bridge assess``, ``bridge report`` and ``bridge registry export`` all use, so they assess the same patients
the same way).

Every function takes the ``Trial`` it evaluates (``bridge.trial``; None: the shipped default), and every result
names it: the JSON documents carry ``study`` (the trial id) and ``rulesetVersion``. The ``RuleOptions`` of an
assessment should come from ``RuleOptions.for_trial(trial, as_of, ...)``, so its numbers are the trial's.

Who is screened (RULES.md §2): a patient for whom ``not_screened`` gives a reason (no valid Patient resource,
non-human, deceased on the as-of date) is listed in ``PrescreenRun.not_screened`` and never screened. An
unexpected exception while evaluating one patient (a bug) leaves that patient out, named in
``PrescreenRun.failed`` (reference and exception type, never data), and every other patient is evaluated.

Who is assessed (RULES.md §2, issue #12): every patient ``assessable`` (a valid, human Patient; deceased ones
included: a death ends follow-up) with a completed infusion. A patient whose assessment — or its JSON or CIR
entry — raises is left out of everything, named in ``AssessRun.failures`` (reference and exception type), and
every other patient is assessed. The assessment engine is imported only when an assessment runs, so
``bridge prescreen`` starts without it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, TypeVar

from bridge.config import RuleOptions
from bridge.evaluate.blocks import completed_years
from bridge.evaluate.eligibility import Screening, screen
from bridge.evaluate.screened import assessable, not_screened
from bridge.ingest.sources import check_source, is_url, open_source
from bridge.jsontext import indented
from bridge.model import Failed, Item, NotScreened, PatientFacts
from bridge.normalize.mappings import CodeMap
from bridge.normalize.patients import PatientAssembler, ReadReport
from bridge.population import all_patients_map, guarded, population_map
from bridge.trial import Trial, load_trial

if TYPE_CHECKING:  # the assessment engine loads only when an assessment runs
    from bridge.config import Settings
    from bridge.evaluate.assessment import PatientAssessment


@dataclass(frozen=True)
class RenderedScreening:
    """One patient's screening as the body ``write_prescreen_json`` writes for it (``screening_body``): made in the
    worker that evaluated the patient (``prescreen(..., rendered=True)``), so that the parent, which writes the
    document alone while the workers wait, only copies it out."""

    patient: str
    status: str
    body: str


_Screened = TypeVar("_Screened", Screening, RenderedScreening)


@dataclass
class PrescreenRun:
    options: RuleOptions
    screenings: list[Screening]
    report: ReadReport
    population: bool = False  # True: a directory read in population mode (only acute-leukaemia patients)
    stream: Iterator[Screening | RenderedScreening] | None = None  # lazy=True: the screenings, computed as they
    # are consumed (rendered=True: as ``RenderedScreening``, their JSON written in the workers)
    not_screened: list[NotScreened] = field(default_factory=list)  # RULES.md §2 "Who is screened", by patient
    failed: list[Failed] = field(default_factory=list)  # patients whose evaluation raised (a bug), by patient
    # (with ``stream``, ``not_screened`` and ``failed`` are complete once the stream has been consumed)
    trial: Trial = field(default_factory=load_trial)  # the trial evaluated

    def as_json(self) -> dict[str, object]:
        return prescreen_json(self.screenings, self.options, self.not_screened, self.trial)

    def take(self, outcomes: Iterable[_Screened | NotScreened | Failed]) -> Iterator[_Screened]:
        """The screenings among ``outcomes``, as they come; the others go to ``not_screened`` / ``failed``."""
        for out in outcomes:
            if isinstance(out, Screening | RenderedScreening):
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


@dataclass(frozen=True, eq=False)
class ScreenedPatient(Screening):
    """A ``Screening`` that also carries the patient's age (completed years on the as-of date) and administrative
    sex, None when unknown — what the screening log needs (``bridge.state.save_prescreen`` stores them), and
    nothing else reads. Equal to (and hashed as) the plain ``Screening`` of the same patient, status and
    verdicts; the JSON documents do not show them."""

    age: int | None = None
    sex: str | None = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Screening):
            return NotImplemented
        return (self.patient, self.status, self.verdicts) == (other.patient, other.status, other.verdicts)

    def __hash__(self) -> int:
        return hash((self.patient, self.status, self.verdicts))


def age_on(pf: PatientFacts, as_of: date) -> int | None:
    """Completed years on ``as_of``; None without a birth date, or when a partial one leaves it undecided."""
    if pf.birth_date is None:
        return None
    oldest, youngest = (completed_years(pf.birth_date.earliest(), as_of),
                        completed_years(pf.birth_date.latest(), as_of))
    return oldest if oldest == youngest and oldest >= 0 else None


def evaluate_patient(pf: PatientFacts, options: RuleOptions, site_uln: dict[str, float] | None = None,
                     trial: Trial | None = None) -> Screening | NotScreened:
    """One patient's pre-screen against ``trial`` (a ``ScreenedPatient``: with age and sex), or why the patient
    is not screened (RULES.md §2)."""
    excluded = not_screened(pf, options.as_of)
    if excluded is not None:
        return excluded
    s = screen(pf, options, site_uln, trial=trial)
    return ScreenedPatient(s.patient, s.status, s.verdicts, age_on(pf, options.as_of), pf.sex or None)


def evaluate_rendered(pf: PatientFacts, options: RuleOptions, site_uln: dict[str, float] | None = None,
                      trial: Trial | None = None) -> RenderedScreening | NotScreened:
    """``evaluate_patient``, a screening given as its JSON body (``RenderedScreening``)."""
    out = evaluate_patient(pf, options, site_uln, trial)
    return out if isinstance(out, NotScreened) else RenderedScreening(out.patient, out.status, screening_body(out))


def screen_each(patients: Iterable[PatientFacts], options: RuleOptions, cmap: CodeMap, trial: Trial | None = None
                ) -> Iterator[Screening | NotScreened | Failed]:
    """``evaluate_patient`` of each patient, guarded: an exception for one patient gives a ``Failed``."""
    evaluate = partial(evaluate_patient, options=options, site_uln=cmap.uln, trial=trial)
    for pf in patients:
        yield guarded(evaluate, pf)


def prescreen_patients(patients: Iterable[PatientFacts], options: RuleOptions, cmap: CodeMap,
                       trial: Trial | None = None) -> list[Screening]:
    """The screenings of the patients who are screened (see ``screen_run`` for the others and the failures)."""
    return screen_run(patients, options, cmap, trial=trial).screenings


def screen_run(patients: Iterable[PatientFacts], options: RuleOptions, cmap: CodeMap,
               report: ReadReport | None = None, trial: Trial | None = None) -> PrescreenRun:
    """Every patient evaluated: the screenings, the patients not screened and those whose evaluation failed."""
    trial = trial or load_trial()
    run = PrescreenRun(options, [], report or ReadReport(), trial=trial)
    run.screenings = list(run.take(screen_each(patients, options, cmap, trial)))
    run.not_screened.sort(key=lambda n: n.patient)
    run.failed.sort(key=lambda f: f.patient)
    return run


def prescreen_items(items: Iterable[Item], options: RuleOptions, cmap: CodeMap,
                    progress: Callable[[int], None] | None = None, trial: Trial | None = None) -> PrescreenRun:
    patients, report = load_patients(items, cmap, progress)
    return screen_run(patients, options, cmap, report, trial)


def screen_one(items: Iterable[Item], patient_id: str, options: RuleOptions, cmap: CodeMap,
               trial: Trial | None = None) -> Screening | NotScreened:
    """One patient's pre-screen from the items pulled for it (the service's re-screen), or why it is not
    screened: nothing usable came back for it (absent, or a Patient rejected by validation, with nothing else)
    is ``no-patient-resource``. Unguarded: an exception reaches the caller (the worker retries it)."""
    patients, _report = load_patients(items, cmap)
    facts = next((p for p in patients if p.patient_id == patient_id), None)
    if facts is None:
        return NotScreened(f"Patient/{patient_id}", "no-patient-resource")
    return evaluate_patient(facts, options, cmap.uln, trial)


def prescreen(source: str, options: RuleOptions, cmap: CodeMap,
              progress: Callable[[int], None] | None = None, *, all_patients: bool = False,
              lazy: bool = False, rendered: bool = False, settings: Settings | None = None,
              patients: Sequence[str] | None = None, trial: Trial | None = None) -> PrescreenRun:
    """Pre-screen any source ``open_source`` opens: a file, stdin, an NDJSON directory, or a FHIR base URL
    (pulled with ``settings``: the admitted patients, or ``patients``).

    A directory goes through the population fast path (``bridge.population``): only patients with a Condition
    of the trial's gate criterion (the shipped trial: an acute leukaemia) are reported, each with the verdicts the
    per-patient path gives; ``all_patients`` evaluates every patient of the directory instead, with the per-patient
    path's verdicts, in bounded memory (``bridge.population.partition``). With ``lazy``
    the population's screenings are left in ``PrescreenRun.stream``, computed one patient at a time as it is
    consumed (``screenings`` stays empty), so a JSON writer holds one patient's verdicts at a time; with ``lazy``
    and ``rendered`` as well, a directory's stream holds each screening as its JSON body (``RenderedScreening``),
    written by the worker that evaluated it — for ``write_prescreen_json`` and nothing else.
    """
    check_source(source, patients)
    trial = trial or load_trial()
    if not is_url(source) and source != "-" and Path(source).is_dir():
        evaluate = partial(evaluate_rendered if lazy and rendered else evaluate_patient, options=options,
                           site_uln=cmap.uln, trial=trial)
        # the patients are assembled and evaluated in the workers, in patient order: population mode, or every
        # patient through partitions by patient (bounded memory; the verdicts of the per-patient path)
        mapper = all_patients_map if all_patients else population_map
        outcomes, report = mapper(Path(source), cmap, evaluate, progress, trial=trial)
        run = PrescreenRun(options, [], report, population=not all_patients, trial=trial)
        if lazy:
            run.stream = run.take(outcomes)
        else:
            run.screenings = list(run.take(outcomes))
        return run
    items = open_source(source, cmap, options.as_of, settings, patients)
    return prescreen_items(items, options, cmap, progress, trial)


# ---------------------------------------------------------------------------------------------- assessment


@dataclass
class AssessRun:
    """One assessment run: the options, the patients assessed for (``assessable``, less those whose assessment
    failed), the infused patients' assessments, the read report, and the patients whose assessment raised."""

    options: RuleOptions
    patients: list[PatientFacts]
    assessments: list[PatientAssessment]
    report: ReadReport
    failures: list[Failed] = field(default_factory=list)
    trial: Trial = field(default_factory=load_trial)  # the trial assessed for

    def as_json(self) -> dict[str, object]:
        """The ``bridge assess --format json`` document (issue #5 contract), naming the ruleset version."""
        from bridge.evaluate.assessment import assessment_json

        return named(assessment_json(self.assessments, self.patients, self.options, trial=self.trial), self.trial)


def assess_loaded(patients: Iterable[PatientFacts], options: RuleOptions, cmap: CodeMap,
                  report: ReadReport | None = None, trial: Trial | None = None) -> AssessRun:
    """Assess every assessable patient (RULES.md §2: deceased ones too, never non-human or Patient-less ones);
    a patient whose assessment, JSON or CIR entry raises is left out and named in ``failures``."""
    from bridge.evaluate.assessment import assess_patients

    kept = [p for p in patients if assessable(p, options.as_of)]
    failures: list[Failed] = []
    assessed = _renderable(assess_patients(kept, options, cmap.uln, cmap.lln, failures=failures), kept, options,
                           failures)
    failed = {f.patient for f in failures}
    return AssessRun(options, [p for p in kept if p.ref not in failed], assessed, report or ReadReport(), failures,
                     trial or load_trial())


def _renderable(assessed: list[PatientAssessment], patients: list[PatientFacts], options: RuleOptions,
                failures: list[Failed]) -> list[PatientAssessment]:
    """The assessments whose JSON and CIR entry can be built; one that raises joins ``failures``."""
    from bridge.evaluate.assessment import cir_subject

    facts = {p.ref: p for p in patients}
    out = []
    for pa in assessed:
        try:
            pa.as_json()
            if pa.patient in facts:
                cir_subject(pa, facts[pa.patient], options)
        except Exception as exc:  # a bug in one patient's output must not lose the others
            failures.append(Failed(pa.patient, type(exc).__name__, "assessment"))
            continue
        out.append(pa)
    return out


def assess(source: str, options: RuleOptions, cmap: CodeMap, progress: Callable[[int], None] | None = None, *,
           settings: Settings | None = None, patients: Sequence[str] | None = None,
           trial: Trial | None = None) -> AssessRun:
    """Open ``source`` (pulling the infused patients, or ``patients``, with their infusions from a server),
    normalize it and assess it (``assess_loaded``)."""
    items = open_source(source, cmap, options.as_of, settings, patients, medications=True)
    loaded, report = load_patients(items, cmap, progress)
    return assess_loaded(loaded, options, cmap, report, trial)


def screening_json(s: Screening) -> dict[str, object]:
    return {"patient": s.patient, "status": s.status,
            "criteria": {v.criterion: v.as_json() for v in s.verdicts}}


def screening_body(s: Screening) -> str:
    """One screening as ``write_prescreen_json`` writes it (before its indentation into the document)."""
    return indented(screening_json(s))


def write_prescreen_json(stream: TextIO, screenings: Iterable[Screening | RenderedScreening], options: RuleOptions,
                         not_screened: Iterable[NotScreened] = (), trial: Trial | None = None) -> int:
    """The same document as ``prescreen_json``, written one patient at a time (memory stays flat); returns the
    number of patients written. ``not_screened`` is read after ``screenings`` is exhausted (a lazy run fills
    it as its stream is consumed)."""
    head = prescreen_json((), options, trial=trial)
    del head["results"], head["notScreened"]
    stream.write("{\n" + "".join(f"  {json.dumps(k)}: {json.dumps(v)},\n" for k, v in head.items()))
    stream.write('  "results": [')
    count = 0
    for count, s in enumerate(screenings, start=1):
        body = (s.body if isinstance(s, RenderedScreening) else screening_body(s)).replace("\n", "\n    ")
        stream.write(("," if count > 1 else "") + "\n    " + body)
    stream.write("\n  ],\n")
    others = json.dumps(_not_screened_json(not_screened), indent=2, ensure_ascii=False).replace("\n", "\n  ")
    stream.write(f'  "notScreened": {others}\n}}\n')
    return count


def _not_screened_json(not_screened: Iterable[NotScreened]) -> list[dict[str, str]]:
    return [n.as_json() for n in sorted(not_screened, key=lambda n: n.patient)]


def named(doc: dict[str, object], trial: Trial) -> dict[str, object]:
    """``doc`` with ``study`` (the trial id) first and ``rulesetVersion`` right after it: every result names the
    trial and the version of its rules."""
    rest = {k: v for k, v in doc.items() if k not in ("study", "rulesetVersion")}
    return {"study": trial.id, "rulesetVersion": trial.ruleset_version, **rest}


def prescreen_json(screenings: Iterable[Screening], options: RuleOptions,
                   not_screened: Iterable[NotScreened] = (), trial: Trial | None = None) -> dict[str, object]:
    """The ``bridge prescreen --format json`` document (issue #2 contract; ``notScreened``: RULES.md §2)."""
    trial = trial or load_trial()
    return {"study": trial.id, "rulesetVersion": trial.ruleset_version, "asOf": options.as_of.isoformat(),
            "organFunctionReading": options.organ_function_reading,
            "results": [screening_json(s) for s in screenings],
            "notScreened": _not_screened_json(not_screened)}


__all__ = ["AssessRun", "Failed", "PrescreenRun", "RenderedScreening", "ScreenedPatient", "age_on", "assess",
           "assess_loaded", "evaluate_patient", "evaluate_rendered", "is_url", "load_patients", "named", "open_source",
           "prescreen", "prescreen_items", "prescreen_json", "prescreen_patients", "screen_each", "screen_one",
           "screen_run", "screening_body", "screening_json", "write_prescreen_json"]
