"""Adverse-event grading (RULES.md §5): CTCAE v5.0 lab terms, ASTCT 2019 CRS and ICANS, grade codes.

Pure: no clock, no FHIR, no I/O. The lab table ``mappings/ctcae-v5.yaml`` is read and validated with the other
mappings (``bridge.normalize.ctcae``, once, every problem reported at once); its names are re-exported here.

**Lab terms** (``grade_lab``). Values are in the concept's canonical unit (mappings/concepts.yaml); the caller
resolves ``lln``/``uln`` (reference range, else a configured default) and the baseline. The table gives, per
grade, arms ``value <op> limit x reference``; the grade is the highest whose arm holds, 0 when none does.

- CTCAE ranges read "<LLN - 1.5" as below the LLN down to 1.5 inclusive, ">ULN - 3.0 x ULN" as above the
  ULN up to 3 x ULN inclusive. The absolute arms of the falling counts apply whatever the LLN (CTCAE words
  them without it): ANC 1.2 is grade 2 even where a laboratory's LLN is 1.0.
- Baseline-aware terms (AST, ALT, bilirubin): the baseline is normal when it is <= ULN or absent (then the
  x ULN arms apply), abnormal when > ULN (then only the x baseline arms). Creatinine's x baseline arms are
  an "or" beside the x ULN arms; without a baseline they simply do not apply.
- A baseline that exists but is not usable (RULES.md §3: unknown, never absent; ``baseline_unknown=True``) is
  neither "normal" nor "missing": the grade is the one every possible baseline gives, else ``None``. AST 30
  against ULN 40 is grade 0 whatever the baseline; AST 160 is ``None`` (grade 2 over a normal baseline, 0-1
  over an abnormal one).
- Missing limits: when an arm needs an LLN or ULN that is ``None`` and that arm could give a higher grade
  than the arms that can be decided, the grade is ``None`` (ungradable), never a guess. ANC 1.2 without an
  LLN is grade 2; ANC 2.0 without an LLN is ``None``; creatinine or AST without a ULN is always ``None``.
  A value, limit or baseline that is not a finite positive number counts as missing (a value: ``None``).
- Boundaries compare with a relative tolerance of 1e-9, so 1.8 mg/dL against 1.5 x 1.2 mg/dL is "equal"
  (floating point gives 1.7999999999999998) and stays grade 1.

**CRS** (``grade_crs``) and **ICANS** (``grade_icans``) follow the ASTCT 2019 consensus (Lee DW et al., Biol
Blood Marrow Transplant 2019;25:625-638); the grade is the most severe domain. A domain passed as ``None``
was not assessed and does not count (a fever with nothing else recorded is CRS grade 1). Fever (>= 38.0 °C)
is required for CRS: without one the grade is 0, with fever unknown ``None``. ASTCT lets fever be masked by
antipyretics or anti-cytokine therapy once CRS is established — pass ``established=True`` for points after
an episode's febrile start (the caller's episode logic decides that; a derivation needs a fever at the start).
Grade 5 (death due to CRS/ICANS) comes only from coded data (``grade_from_icd``). ICE applies to patients
aged 12 and over (younger children: CAPD, not implemented).

ICANS consciousness is an int code equal to its ASTCT grade: ``CONSCIOUSNESS_CODES``. Seizure and cerebral
oedema are small enums (``Seizure``, ``CerebralEdema``). ASTCT counts only findings not attributable to
another cause (e.g. sedation); that judgement belongs to whoever records the finding.

**Codes**: ``GRADE_CODES`` (NCI Thesaurus codes of the ae-grade extension) and ``severity_for`` (FHIR
AdverseEvent.severity). Impossible inputs (an ICE score of 12, an unknown enum word) raise ``InputError``
naming the domain, never the value.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from bridge.errors import InputError
from bridge.normalize.ctcae import (
    CTCAE_V5,
    Arm,
    BaselineState,
    Basis,
    GradeRule,
    LabTerm,
    load_lab_terms,
    packaged_lab_terms,
)

ASTCT_2019 = "ASTCT 2019"
CRS_TERM = "Cytokine release syndrome"
ICANS_TERM = "Immune effector cell-associated neurotoxicity syndrome"

#: The grading system of each AE term (RULES.md §5). CRS is a CTCAE v5.0 term too, but graded by ASTCT.
GRADING_SYSTEM: Mapping[str, str] = MappingProxyType(
    {
        "Neutrophil count decreased": CTCAE_V5,
        "Platelet count decreased": CTCAE_V5,
        "Anemia": CTCAE_V5,
        "Aspartate aminotransferase increased": CTCAE_V5,
        "Alanine aminotransferase increased": CTCAE_V5,
        "Blood bilirubin increased": CTCAE_V5,
        "Creatinine increased": CTCAE_V5,
        CRS_TERM: ASTCT_2019,
        ICANS_TERM: ASTCT_2019,
    }
)
#: Syndrome concept key (mappings/concepts.yaml) -> AE term.
SYNDROME_TERM: Mapping[str, str] = MappingProxyType({"crs": CRS_TERM, "icans": ICANS_TERM})

_REL_TOL = 1e-9
_OPS: Mapping[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


# --------------------------------------------------------------------------------------------- lab table
# The table is read and checked with the other mappings (bridge.normalize.ctcae); grading only reads LabTerms.


def _packaged() -> tuple[LabTerm, ...]:
    return packaged_lab_terms()


def lab_terms() -> list[LabTerm]:
    """Every lab-graded term of the packaged table, in table order."""
    return list(_packaged())


def term_for(concept: str) -> list[str]:
    """The CTCAE term names graded from a concept key (empty when none)."""
    return [t.term for t in _packaged() if t.concept == concept]


def lab_term(term_or_concept: str) -> LabTerm:
    """The term named (any case) or graded from the concept key; ``InputError`` unless exactly one."""
    key = term_or_concept.casefold()
    found = [t for t in _packaged() if key in (t.term.casefold(), t.concept)]
    if len(found) != 1:
        raise InputError(f"no single CTCAE v5.0 lab term for {term_or_concept!r}")
    return found[0]


# --------------------------------------------------------------------------------------------- lab grades


@dataclass(frozen=True)
class _Limits:
    lln: float | None
    uln: float | None
    baseline: float | None

    def reference(self, basis: Basis) -> float | None:
        return 1.0 if basis == "absolute" else getattr(self, basis)

    def baseline_state(self) -> BaselineState | None:
        if self.baseline is None:
            return "normal"
        if self.uln is None:
            return None
        return "abnormal" if _compare(self.baseline, ">", self.uln) else "normal"


def _usable(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) and x > 0 else None


def _compare(value: float, op: str, threshold: float) -> bool:
    if math.isclose(value, threshold, rel_tol=_REL_TOL):
        return op in ("<=", ">=")
    return _OPS[op](value, threshold)


def _arm_holds(arm: Arm, value: float, limits: _Limits) -> bool | None:
    """True/False, or None when a needed LLN/ULN is missing."""
    if arm.baseline is not None:
        state = limits.baseline_state()
        if state is None:
            return None
        if state != arm.baseline:
            return False
    reference = limits.reference(arm.of)
    if reference is None:
        return False if arm.of == "baseline" else None
    return _compare(value, arm.op, arm.limit * reference)


def _outcomes(term: LabTerm, value: float, limits: _Limits) -> Iterator[tuple[int, bool | None]]:
    for rule in term.grades:
        for arm in rule.arms:
            yield rule.grade, _arm_holds(arm, value, limits)


def grade_lab(
    term_or_concept: str, value: float | None, lln: float | None, uln: float | None, baseline: float | None,
    *, baseline_unknown: bool = False,
) -> int | None:
    """The CTCAE v5.0 grade (0 = not an AE) of one lab value, or None when it cannot be decided.

    ``baseline_unknown``: a baseline exists but its value is not usable (RULES.md §3: unknown, never absent); the
    grade is the one every possible baseline gives, else None (``baseline`` is then ignored).
    """
    term = lab_term(term_or_concept)
    if value is None or not math.isfinite(value):
        return None
    if baseline_unknown:
        return _whatever_baseline(term, value, lln, uln)
    return _grade(term, value, _Limits(_usable(lln), _usable(uln), _usable(baseline)))


def _whatever_baseline(term: LabTerm, value: float, lln: float | None, uln: float | None) -> int | None:
    """The grade when the baseline could be any positive number: the grade is a step function of the baseline
    whose steps lie at value / limit (the x baseline arms) and at the ULN (normal / abnormal), so trying each
    step, a point between each two and one beyond each end reaches every grade it can give."""
    steps = {value / arm.limit for rule in term.grades for arm in rule.arms
             if arm.of == "baseline" and arm.limit > 0 and value > 0}
    if not steps and not any(arm.baseline for rule in term.grades for arm in rule.arms):
        return _grade(term, value, _Limits(_usable(lln), _usable(uln), None))
    if _usable(uln) is not None:
        steps.add(float(uln or 0.0))
    points = sorted(x for x in steps if math.isfinite(x) and x > 0) or [1.0]
    tries = [points[0] / 2, *points, points[-1] * 2]
    tries += [(a + b) / 2 for a, b in zip(points, points[1:], strict=False)]
    grades = {_grade(term, value, _Limits(_usable(lln), _usable(uln), b)) for b in tries}
    return grades.pop() if len(grades) == 1 else None


def _grade(term: LabTerm, value: float, limits: _Limits) -> int | None:
    decided = undecided = 0
    for grade, holds in _outcomes(term, value, limits):
        if holds is None:
            undecided = max(undecided, grade)
        elif holds:
            decided = max(decided, grade)
    return decided if undecided <= decided else None


# --------------------------------------------------------------------------------------------- CRS

Hypotension = Literal["none", "no-pressor", "one-pressor", "multi-pressor"]
Hypoxia = Literal["none", "low-flow", "high-flow", "positive-pressure"]
OxygenDevice = Literal[
    "room-air",
    "blow-by",
    "nasal-cannula",
    "high-flow-nasal-cannula",
    "facemask",
    "non-rebreather",
    "venturi-mask",
    "cpap",
    "bipap",
    "mechanical-ventilation",
]

FEVER_CELSIUS = 38.0
LOW_FLOW_MAX_L_MIN = 6.0
_HYPOTENSION_GRADE: Mapping[str, int] = {"none": 0, "no-pressor": 2, "one-pressor": 3, "multi-pressor": 4}
_HYPOXIA_GRADE: Mapping[str, int] = {"none": 0, "low-flow": 2, "high-flow": 3, "positive-pressure": 4}
_DEVICE_HYPOXIA: Mapping[str, Hypoxia] = {
    "room-air": "none",
    "blow-by": "low-flow",
    "nasal-cannula": "low-flow",
    "high-flow-nasal-cannula": "high-flow",
    "facemask": "high-flow",
    "non-rebreather": "high-flow",
    "venturi-mask": "high-flow",
    "cpap": "positive-pressure",
    "bipap": "positive-pressure",
    "mechanical-ventilation": "positive-pressure",
}


def fever_from_temperature(celsius: float | None) -> bool | None:
    """ASTCT fever: a temperature >= 38.0 °C (None when no usable temperature)."""
    if celsius is None or not math.isfinite(celsius):
        return None
    return celsius > FEVER_CELSIUS or math.isclose(celsius, FEVER_CELSIUS, rel_tol=_REL_TOL)


def hypotension_from_vasopressors(hypotension: bool | None, vasopressors: int | None) -> Hypotension | None:
    """The ASTCT hypotension level from the number of vasopressors (vasopressin not counted beside another).

    Two or more -> ``multi-pressor``, one -> ``one-pressor``; none given -> ``no-pressor`` with hypotension,
    ``none`` without; None when neither a pressor nor the hypotension status is known.
    """
    if vasopressors is not None and vasopressors < 0:
        raise InputError("vasopressor count must not be negative")
    if vasopressors is not None and vasopressors >= 2:
        return "multi-pressor"
    if vasopressors == 1:
        return "one-pressor"
    if hypotension is None:
        return None
    return "no-pressor" if hypotension else "none"


def hypoxia_from_oxygen(
    flow_l_min: float | None, positive_pressure: bool | None, *, device: OxygenDevice | None = None
) -> Hypoxia | None:
    """The ASTCT hypoxia level: positive pressure (CPAP, BiPAP, ventilation) > high-flow (> 6 L/min, facemask,
    non-rebreather, Venturi) > low-flow (<= 6 L/min nasal cannula, blow-by) > none (no oxygen).

    The most severe of the flow and the device wins; None when neither flow nor device is known and no
    positive pressure is recorded.
    """
    if positive_pressure:
        return "positive-pressure"
    return _most_severe(_flow_level(flow_l_min), _device_level(device))


def _most_severe(*levels: Hypoxia | None) -> Hypoxia | None:
    worst: Hypoxia | None = None
    for level in levels:
        if level is not None and (worst is None or _HYPOXIA_GRADE[level] > _HYPOXIA_GRADE[worst]):
            worst = level
    return worst


def _flow_level(flow: float | None) -> Hypoxia | None:
    if flow is None:
        return None
    if not math.isfinite(flow) or flow < 0:
        raise InputError("oxygen flow must be a finite number >= 0 L/min")
    if flow == 0:
        return "none"
    return "low-flow" if _compare(flow, "<=", LOW_FLOW_MAX_L_MIN) else "high-flow"


def _device_level(device: str | None) -> Hypoxia | None:
    if device is None:
        return None
    if device not in _DEVICE_HYPOXIA:
        raise InputError("unknown oxygen device code")
    return _DEVICE_HYPOXIA[device]


def _level_grade(table: Mapping[str, int], level: str | None, domain: str) -> int:
    if level is None:
        return 0
    if level not in table:
        raise InputError(f"unknown {domain} level")
    return table[level]


def grade_crs(
    fever: bool | None, hypotension: Hypotension | None, hypoxia: Hypoxia | None, *, established: bool = False
) -> int | None:
    """The ASTCT 2019 CRS grade (0 = no CRS, None = fever unknown); grade 5 only from coded data.

    G1 fever without hypotension/hypoxia; G2 hypotension without vasopressor and/or low-flow oxygen; G3 one
    vasopressor and/or high-flow oxygen; G4 several vasopressors and/or positive pressure. With
    ``established`` (fever masked by treatment after a febrile start) the grade comes from the other domains.
    """
    organ = max(
        _level_grade(_HYPOTENSION_GRADE, hypotension, "hypotension"),
        _level_grade(_HYPOXIA_GRADE, hypoxia, "hypoxia"),
    )
    if fever:
        return max(1, organ)
    if established:
        return organ
    return None if fever is None else 0


# --------------------------------------------------------------------------------------------- ICANS

Seizure = Literal["none", "rapidly-resolving", "life-threatening"]
CerebralEdema = Literal["none", "focal", "diffuse"]

#: Depressed level of consciousness: the code IS the ASTCT ICANS grade of that domain.
CONSCIOUSNESS_CODES: Mapping[int, str] = MappingProxyType(
    {
        0: "not depressed",
        1: "awakens spontaneously",
        2: "awakens to voice",
        3: "awakens only to tactile stimulus",
        4: "unarousable or needs vigorous or repetitive tactile stimuli to arouse; stupor or coma",
    }
)
#: rapidly-resolving: any clinical seizure (focal or generalised) that resolves rapidly, or non-convulsive
#: seizures on EEG resolving with intervention (G3); life-threatening: prolonged (> 5 min), or repetitive
#: clinical or electrical seizures without return to baseline in between (G4).
_SEIZURE_GRADE: Mapping[str, int] = {"none": 0, "rapidly-resolving": 3, "life-threatening": 4}
#: focal: focal/local oedema on neuroimaging (G3); diffuse: diffuse cerebral oedema on neuroimaging,
#: decerebrate or decorticate posturing, cranial nerve VI palsy, papilloedema or Cushing's triad (G4).
_EDEMA_GRADE: Mapping[str, int] = {"none": 0, "focal": 3, "diffuse": 4}


def _ice_grade(score: int | None) -> int | None:
    """ICE 10 -> 0, 7-9 -> G1, 3-6 -> G2, 0-2 -> G3 (an unarousable patient is G4 by consciousness)."""
    if score is None:
        return None
    if not 0 <= score <= 10:
        raise InputError("ICE score must be an integer 0-10")
    if score == 10:
        return 0
    return 1 if score >= 7 else 2 if score >= 3 else 3


def _consciousness_grade(code: int | None) -> int | None:
    if code is None:
        return None
    if code not in CONSCIOUSNESS_CODES:
        raise InputError("consciousness code must be an integer 0-4")
    return code


def grade_icans(
    ice_score: int | None = None,
    consciousness: int | None = None,
    seizure: Seizure | None = None,
    motor_weakness: bool | None = None,
    cerebral_edema: CerebralEdema | None = None,
) -> int | None:
    """The ASTCT 2019 ICANS grade: the most severe assessed domain; None when no domain was assessed.

    ``motor_weakness`` is deep focal motor weakness (hemiparesis, paraparesis): G4.
    """
    domains = (
        _ice_grade(ice_score),
        _consciousness_grade(consciousness),
        None if seizure is None else _level_grade(_SEIZURE_GRADE, seizure, "seizure"),
        None if motor_weakness is None else (4 if motor_weakness else 0),
        None if cerebral_edema is None else _level_grade(_EDEMA_GRADE, cerebral_edema, "cerebral edema"),
    )
    assessed = [grade for grade in domains if grade is not None]
    return max(assessed) if assessed else None


# --------------------------------------------------------------------------------------------- ICD-10-CM

#: ICD-10-CM codes carrying a CRS/ICANS grade (RULES.md §3 [R]), normalised (no dot, upper case). The parent
#: codes D89.83 and G92.0 are accepted as "grade unspecified" too.
_ICD_SYNDROME_GRADES: Mapping[str, tuple[str, int | None]] = MappingProxyType(
    {
        "D8983": ("crs", None),
        "D89839": ("crs", None),
        **{f"D8983{g}": ("crs", g) for g in range(1, 6)},
        "G920": ("icans", None),
        "G9200": ("icans", None),
        **{f"G920{g}": ("icans", g) for g in range(1, 6)},
    }
)


def grade_from_icd(code: str) -> tuple[str, int | None] | None:
    """``("crs" | "icans", grade or None)`` for the ICD-10-CM CRS/ICANS codes, None for any other code.

    Case-insensitive, dots optional, surrounding spaces ignored: ``d89833`` -> ``("crs", 3)``.
    """
    return _ICD_SYNDROME_GRADES.get(code.strip().replace(".", "").upper())


# --------------------------------------------------------------------------------------------- grade codes

AE_GRADE_EXTENSION = "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition/ae-grade"
NCIT_SYSTEM = "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl"
SEVERITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/adverse-event-severity"
Severity = Literal["mild", "moderate", "severe"]


@dataclass(frozen=True)
class GradeCode:
    """An NCI Thesaurus grade concept; ``tag`` is RULES.md's [V] (checked) or [R] (to be confirmed)."""

    code: str
    display: str
    tag: str


#: Displays as in the HL7 THO value set adverse-event-clinical-research-grades.
GRADE_CODES: Mapping[int, GradeCode] = MappingProxyType(
    {
        1: GradeCode("C41338", "Grade 1 Mild Adverse Event", "[V]"),
        2: GradeCode("C41339", "Grade 2 Moderate Adverse Event", "[V]"),
        3: GradeCode("C41340", "Grade 3 Severe Adverse Event", "[R]"),
        4: GradeCode("C41337", "Grade 4 Life Threatening or Disabling Adverse Event", "[R]"),
        5: GradeCode("C48275", "Grade 5 Death Related to Adverse Event", "[R]"),
    }
)


def grade_code(grade: int) -> GradeCode:
    """The NCI Thesaurus code for an AE grade 1-5."""
    if grade not in GRADE_CODES:
        raise InputError("an AE grade must be 1-5")
    return GRADE_CODES[grade]


def severity_for(grade: int) -> Severity:
    """The nearest FHIR AdverseEvent.severity: 1 mild, 2 moderate, 3-5 severe."""
    if grade not in GRADE_CODES:
        raise InputError("an AE grade must be 1-5")
    return "mild" if grade == 1 else "moderate" if grade == 2 else "severe"


__all__ = [
    "AE_GRADE_EXTENSION",
    "ASTCT_2019",
    "CONSCIOUSNESS_CODES",
    "CRS_TERM",
    "CTCAE_V5",
    "FEVER_CELSIUS",
    "GRADE_CODES",
    "GRADING_SYSTEM",
    "ICANS_TERM",
    "LOW_FLOW_MAX_L_MIN",
    "NCIT_SYSTEM",
    "SEVERITY_SYSTEM",
    "SYNDROME_TERM",
    "Arm",
    "CerebralEdema",
    "GradeCode",
    "GradeRule",
    "Hypotension",
    "Hypoxia",
    "LabTerm",
    "OxygenDevice",
    "Seizure",
    "Severity",
    "fever_from_temperature",
    "grade_code",
    "grade_crs",
    "grade_from_icd",
    "grade_icans",
    "grade_lab",
    "hypotension_from_vasopressors",
    "hypoxia_from_oxygen",
    "lab_term",
    "lab_terms",
    "load_lab_terms",
    "term_for",
]
