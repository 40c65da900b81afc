"""Render the cohort report (issue #7) as one self-contained HTML file.

Input: the plain report document of ``bridge.report.data`` (prescreen + assessment JSON and the curves).
Output: HTML with every figure embedded as a base64 PNG ``data:`` URI, the CSS inline, no script and no
external reference — the file opens offline and prints. Jinja2 with autoescape on renders
``templates/report.html.j2``; nothing from the data reaches the page unescaped.

Every number taken from the assessment or pre-screen document is written with ``data-key`` (its path) and
``data-value`` (the exact JSON value) beside the human text, so a reader can check the report against
``bridge assess --format json`` mechanically (the tests do).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from bridge import __version__
from bridge.errors import InputError
from bridge.evaluate.grading import CRS_TERM, ICANS_TERM
from bridge.report import plots
from bridge.trial import Trial, load_trial

Json = Mapping[str, Any]
CRS, ICANS = CRS_TERM, ICANS_TERM
GRADE_KEYS = ("1", "2", "3", "4", "5", "unknown")
NOT_SCREENED_LABELS = {"deceased": "deceased on the as-of date", "non-human": "non-human (patient-animal)",
                       "no-patient-resource": "no valid Patient resource"}
SECTIONS = ("summary", "prescreen", "criteria", "dose", "swimmer", "safety", "response", "cir", "kinetics")


def environment() -> Environment:
    """The Jinja2 environment of the report and the coordinator page: autoescape always on."""
    env = Environment(loader=PackageLoader("bridge.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=pct, num=num, jsonvalue=jsonvalue, interval=interval, short=plots.short)
    return env


# ------------------------------------------------------------------ formatting filters
def pct(x: object, digits: int = 1) -> str:
    """0.75 → ``75.0 %``; None → ``n/e`` (not estimable)."""
    return f"{float(x) * 100:.{digits}f} %" if isinstance(x, int | float) else "n/e"


def num(x: object, digits: int = 3) -> str:
    """A number with ``digits`` significant figures; whole numbers as integers; None → ``–``."""
    if isinstance(x, bool) or x is None:
        return "–" if x is None else ("yes" if x else "no")
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e15):
        return f"{int(x):,}".replace(",", " ")
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def interval(ci: object) -> str:
    """[0.19, 0.99] → ``19.4–99.4 %``; None → ``n/e``."""
    if isinstance(ci, list | tuple) and len(ci) == 2 and all(isinstance(v, int | float) for v in ci):
        return f"{ci[0] * 100:.1f}–{ci[1] * 100:.1f} %"
    return "n/e"


def jsonvalue(x: object) -> str:
    """The exact JSON text of a value, for a ``data-value`` attribute."""
    return json.dumps(x, ensure_ascii=False, sort_keys=True)


def data_uri(png: bytes | None) -> str | None:
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# ------------------------------------------------------------------ view model
def blockers(prescreen: Json, trial: Trial | None = None) -> list[dict[str, Any]]:
    """Per counted criterion of the trial: patients it excludes (``Trial.blocking``) and patients it leaves
    unknown, most frequent first (labels: ``labels``)."""
    t = trial or load_trial()
    results = prescreen.get("results") or []
    rows = []
    for c in t.criteria:
        if not t.counted(c.id):
            continue
        verdicts = [r.get("criteria", {}).get(c.id, {}).get("result") for r in results]
        rows.append({"criterion": c.id, "kind": c.kind,
                     "excluding": sum(1 for v in verdicts if t.blocking(c.id, str(v))),
                     "unknown": verdicts.count("unknown")})
    return sorted(rows, key=lambda r: (-(r["excluding"] + r["unknown"]), -r["excluding"], r["criterion"]))


def labels(trial: Trial | None = None) -> dict[str, str]:
    """Each criterion's short label (the trial file's ``label``), by id."""
    return {c.id: c.label for c in (trial or load_trial()).criteria}


def ae_rows(cohort: Json) -> list[dict[str, Any]]:
    """The AE table: one row per term with its counts per grade and in total."""
    by = (cohort.get("adverseEvents") or {}).get("byTermAndGrade") or {}
    return [{"term": term, "grades": grades, "total": sum(grades.values())} for term, grades in by.items()]


def _episodes(p: Json, term: str) -> list[dict[str, Any]]:
    return [e for e in p.get("adverseEvents") or [] if e.get("term") == term]


def syndrome_rows(patients: Sequence[Json]) -> list[dict[str, Any]]:
    """CRS and ICANS per infused patient: worst grade (0 = none, None = only ungraded) and the episodes."""
    rows = []
    for p in patients:
        row: dict[str, Any] = {"patient": p["patient"], "dayZero": p.get("dayZero")}
        for key, term in (("crs", CRS), ("icans", ICANS)):
            episodes = _episodes(p, term)
            grades = [e["grade"] for e in episodes if e.get("grade") is not None]
            row[key] = {"worst": max(grades) if grades else (None if episodes else 0), "episodes": episodes}
        rows.append(row)
    return rows


def kinetic_rows(patients: Sequence[Json]) -> list[dict[str, Any]]:
    return [{"patient": p["patient"], "concept": c, **k} for p in patients
            for c, k in (p.get("kinetics") or {}).items()]


def context(doc: Json, trial: Trial | None = None) -> dict[str, Any]:
    """Everything the template shows, computed from the report document and the trial (default: shipped)."""
    _check(doc)
    pre, ass = doc["prescreen"], doc["assessment"]
    patients, cohort = ass.get("patients") or [], ass.get("cohort") or {}
    block = blockers(pre, trial)
    images = {
        "funnel": plots.funnel_png(pre), "criteria": plots.criteria_png(block),
        "dose": plots.dose_png(patients), "swimmer": plots.swimmer_png(patients, doc.get("followUp") or {}),
        "response": plots.response_png(cohort), "cir": plots.cir_png(doc.get("cir") or {}),
        "kinetics": plots.kinetics_png(doc.get("kineticSeries") or {}, patients),
    }
    return {"doc": doc, "pre": pre, "ass": ass, "patients": patients, "cohort": cohort,
            "counts": plots.status_counts(pre), "not_screened": plots.not_screened_counts(pre),
            "not_screened_labels": NOT_SCREENED_LABELS, "blockers": block, "labels": labels(trial),
            "ae_rows": ae_rows(cohort),
            "grade_keys": GRADE_KEYS, "syndromes": syndrome_rows(patients), "kinetic_rows": kinetic_rows(patients),
            "follow_up": doc.get("followUp") or {}, "images": {k: data_uri(v) for k, v in images.items()},
            "kinetic_units": plots.KINETIC_AXES, "version": __version__, "sections": SECTIONS}


def _check(doc: Json) -> None:
    missing = [k for k in ("prescreen", "assessment") if not isinstance(doc.get(k), Mapping)]
    if missing:
        raise InputError(f"report document lacks {', '.join(missing)}")


def render_report(doc: Json, trial: Trial | None = None) -> str:
    """The report as one HTML string."""
    return environment().get_template("report.html.j2").render(**context(doc, trial))


def write_report(doc: Json, out: str | Path, trial: Trial | None = None) -> Path:
    """Render and write the report to ``out`` (UTF-8); returns the path written."""
    path = Path(out)
    html = render_report(doc, trial)
    try:
        path.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write the report to {path}: {exc.strerror}", issue_code="processing") from None
    return path


__all__ = ["CRS", "ICANS", "NOT_SCREENED_LABELS", "SECTIONS", "ae_rows", "blockers", "context", "data_uri",
           "environment", "interval", "jsonvalue", "kinetic_rows", "labels", "num", "pct", "render_report",
           "syndrome_rows", "write_report"]
