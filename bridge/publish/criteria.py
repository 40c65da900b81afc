"""The human texts of the 15 eligibility criteria of NCT04762485 (RULES.md §2, in that table's order).

``text`` is the criterion as the registry record publishes it (``NCT04762485-record.txt``), verbatim, with
only the list number removed. Where the record has an erratum (RULES.md §1) the criterion also carries
``applied``, the text the bridge actually evaluates by default, and a ``note`` that says why.
``inc-organ-function`` is the one criterion whose literal reading can be switched back on
(``organ_function_reading: literal``); every other erratum is fixed. The ResearchStudy's enrollment Group
publishes these texts (see ``bridge.publish.study``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["inclusion", "exclusion"]


@dataclass(frozen=True)
class CriterionText:
    """One criterion: stable id, kind, its number in the record's list, the record text and any erratum."""

    id: str
    kind: Kind
    number: int
    text: str
    applied: str | None = None
    note: str | None = None
    literal_switchable: bool = False

    @property
    def exclude(self) -> bool:
        """True for an exclusion (``Group.characteristic.exclude``)."""
        return self.kind == "exclusion"

    def applied_text(self, organ_reading: str = "organ-function") -> str:
        """Text the bridge evaluates under ``organ_reading``; the record text unless an erratum."""
        if self.applied is None or (self.literal_switchable and organ_reading == "literal"):
            return self.text
        return self.applied


_ORGAN_LITERAL = (
    "Patients with aspartate aminotransferase or glutamic-pyruvic transaminase > 3x upper limit of normal "
    "or bilirubin > 2.0 mg/dL."
)
_ORGAN_APPLIED = (
    "Adequate organ function: aspartate aminotransferase ≤ 3x upper limit of normal and alanine "
    "aminotransferase (glutamic-pyruvic transaminase) ≤ 3x upper limit of normal and total bilirubin "
    "≤ 2.0 mg/dL."
)
_ORGAN_NOTE = (
    "Erratum (RULES.md §1.1): the record's literal text admits only patients with liver injury; comparable "
    "CD7 CAR-T protocols state organ function as AST and ALT ≤ 3×ULN and total bilirubin ≤ 2.0 mg/dL. The "
    "bridge applies the organ-function reading by default; the literal reading is a configuration switch "
    "and every result names the reading it used."
)
_THROMBOSIS_NOTE = (
    "Erratum (RULES.md §1.3): the record's 'atrial' is read as 'arterial' (arterial or venous thrombosis "
    "or embolism)."
)

CRITERIA: list[CriterionText] = [
    CriterionText("inc-diagnosis", "inclusion", 1,
                  "Diagnosed CD7 positive relapsed/refractory acute leukemia."),
    CriterionText("inc-age", "inclusion", 2, "Age 12-65 years."),
    CriterionText("inc-ecog", "inclusion", 3, "Eastern Cooperative Oncology Group (ECOG) score 0-2."),
    CriterionText("inc-cd7-expression", "inclusion", 4,
                  "CD7 on leukemia is >30% positive detected with flow cytometry."),
    CriterionText("inc-cardiac", "inclusion", 5,
                  "Patients with left ventricular ejection fraction ≥ 0.5 by echocardiography or grade I/II "
                  "cardiovascular dysfunction according to the New York Heart Association Classification."),
    CriterionText("inc-organ-function", "inclusion", 6, _ORGAN_LITERAL, applied=_ORGAN_APPLIED,
                  note=_ORGAN_NOTE, literal_switchable=True),
    CriterionText("exc-pregnancy", "exclusion", 1, "Patients are pregnant or lactating"),
    CriterionText("exc-congenital-immunodeficiency", "exclusion", 2,
                  "Patients with congenital immunodeficiency."),
    CriterionText("exc-cns-leukemia", "exclusion", 3, "Patients with central nervous system leukemia."),
    CriterionText("exc-active-infection", "exclusion", 4, "Patients with uncontrolled active infection."),
    CriterionText("exc-hepatitis", "exclusion", 5,
                  "Patients with active hepatitis B or hepatitis C infection."),
    CriterionText("exc-hiv", "exclusion", 6, "Patients with HIV infection."),
    CriterionText("exc-thrombosis", "exclusion", 7, "Patients with atrial or venous thrombosis or embolism.",
                  applied="Patients with arterial or venous thrombosis or embolism.", note=_THROMBOSIS_NOTE),
    CriterionText("exc-cardiac-event", "exclusion", 8,
                  "Patients with myo-infarction or severe arrythmia in the recent 6 months."),
    CriterionText("exc-investigator", "exclusion", 9,
                  "Other comorbidities that investigators considered not suitable for this study."),
]

CRITERION_IDS: tuple[str, ...] = tuple(c.id for c in CRITERIA)

_BY_ID: dict[str, CriterionText] = {c.id: c for c in CRITERIA}


def criterion(criterion_id: str) -> CriterionText:
    """The criterion with this id; ``KeyError`` for an id not in RULES.md §2."""
    return _BY_ID[criterion_id]


__all__ = ["CRITERIA", "CRITERION_IDS", "CriterionText", "Kind", "criterion"]
