"""The cohort report's figures: matplotlib (Agg), one function per figure, PNG returned as bytes.

Every function takes plain parts of the report document (``bridge.report.data``) and returns PNG bytes, or
None when there is nothing to draw (the report then says so in words). No pyplot: figures are built with the
object API on an Agg canvas, so nothing global is touched and it is safe in a server thread.

Print-friendly: white background, 150 dpi, fonts ≥ 8 pt, every axis labelled with its unit, and categories
told apart by marker shape or hatch as well as by colour (Okabe–Ito palette, readable in greyscale).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import matplotlib as mpl
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

Json = Mapping[str, Any]
DPI = 150
STYLE: dict[Any, Any] = {"font.family": "DejaVu Sans", "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9,
         "legend.fontsize": 8, "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.spines.top": False,
         "axes.spines.right": False, "figure.facecolor": "white", "savefig.facecolor": "white"}
# Okabe–Ito colours; each response also has its own marker so the plot survives greyscale printing.
RESPONSE_STYLE: dict[str, tuple[str, str]] = {
    "CR": ("#009E73", "o"), "CRi": ("#56B4E9", "s"), "MLFS": ("#0072B2", "D"), "PR": ("#E69F00", "^"),
    "NR": ("#D55E00", "v"), "NE": ("#7F7F7F", "x"), "relapse": ("#CC0000", "X"),
}
STATUS_ORDER = ("candidate", "potential-candidate", "ineligible")
STATUS_COLOURS = {"screened": "#4D4D4D", "candidate": "#009E73", "potential-candidate": "#E69F00",
                  "ineligible": "#D55E00", "not-screened": "#BBBBBB"}
NOT_SCREENED_REASONS = ("deceased", "non-human", "no-patient-resource")  # RULES.md §2 "Who is screened"
KINETIC_AXES = {"car-t-copies": "CAR transgene (copies/µg genomic DNA)", "car-t-percent": "CAR+ T cells (% of CD3+)"}
KINETIC_TITLES = {"car-t-copies": "CAR-T expansion by qPCR", "car-t-percent": "CAR-T expansion by flow"}
PROTOCOL_RANGE = (0.5, 10.0)  # ×10⁶ cells/kg (RULES.md §4)


@contextmanager
def figure(width: float, height: float, ncols: int = 1) -> Iterator[tuple[Figure, list[Axes]]]:
    """A white Agg figure of ``width`` × ``height`` inches with ``ncols`` axes, in the report's style."""
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(width, height), dpi=DPI)
        FigureCanvasAgg(fig)
        axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
        yield fig, axes


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes, without a timestamp or version in its metadata (stable output)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def short(patient: str) -> str:
    """``Patient/p01`` → ``p01`` for axis labels."""
    return patient.rsplit("/", 1)[-1]


# ------------------------------------------------------------------ pre-screen
def status_counts(prescreen: Json) -> dict[str, int]:
    """``screened`` (the results), each status, and ``not-screened`` (the ``notScreened`` array, RULES §2)."""
    results = prescreen.get("results") or []
    counts = {"screened": len(results)}
    counts.update({s: sum(1 for r in results if r.get("status") == s) for s in STATUS_ORDER})
    counts["not-screened"] = len(prescreen.get("notScreened") or [])
    return counts


def not_screened_counts(prescreen: Json) -> dict[str, int]:
    """Patients not screened per reason (RULES order; every reason present, zero or not)."""
    reasons = [n.get("reason") for n in prescreen.get("notScreened") or [] if isinstance(n, Mapping)]
    return {r: reasons.count(r) for r in NOT_SCREENED_REASONS}


def funnel_png(prescreen: Json) -> bytes | None:
    """Screened → candidate / potential candidate / ineligible, as horizontal bars with counts, and a separate
    hatched bar for the patients who are not screened (deceased, non-human, no valid Patient resource)."""
    counts = status_counts(prescreen)
    if not counts["screened"] and not counts["not-screened"]:
        return None
    labels = [k for k in counts if k != "not-screened" or counts[k]]
    total = counts["screened"] + counts["not-screened"]
    with figure(6.5, 2.4 + (0.3 if counts["not-screened"] else 0.0)) as (fig, (ax,)):
        bars = ax.barh(range(len(labels)), [counts[k] for k in labels], color=[STATUS_COLOURS[k] for k in labels],
                       hatch=None, edgecolor="black", linewidth=0.5)
        for bar, key in zip(bars, labels, strict=True):
            if key == "not-screened":
                bar.set_hatch("xx")
                text = f"{counts[key]} ({counts[key] / total:.0%} of all patients)"
            else:
                share = counts[key] / counts["screened"] if counts["screened"] else 0.0
                text = f"{counts[key]} ({share:.0%})"
            ax.text(bar.get_width() + 0.2, bar.get_y() + bar.get_height() / 2, text, va="center")
        ax.set_yticks(range(len(labels)), [k.replace("-", " ") for k in labels])
        ax.invert_yaxis()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("patients (n)")
        ax.set_xlim(0, max(counts["screened"], counts["not-screened"]) * (1.45 if counts["not-screened"] else 1.25))
        ax.set_title(f"Pre-screen funnel as of {prescreen.get('asOf', '?')}", loc="left")
        return png(fig)


def criteria_png(blockers: Sequence[Json]) -> bytes | None:
    """Per criterion, patients it excludes and patients it leaves unknown (stacked, most frequent on top)."""
    rows = [b for b in blockers if b["excluding"] or b["unknown"]]
    if not rows:
        return None
    with figure(6.5, 0.9 + 0.28 * len(rows)) as (fig, (ax,)):
        y = range(len(rows))
        excl = [r["excluding"] for r in rows]
        ax.barh(y, excl, color="#D55E00", edgecolor="black", linewidth=0.5, label="excludes (not eligible)")
        ax.barh(y, [r["unknown"] for r in rows], left=excl, color="#E69F00", hatch="///", edgecolor="black",
                linewidth=0.5, label="unknown (data missing or stale)")
        ax.set_yticks(list(y), [r["criterion"] for r in rows])
        ax.invert_yaxis()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("patients (n)")
        ax.legend(loc="lower right", frameon=False)
        ax.set_title("Criteria that exclude patients or leave them unknown", loc="left")
        return png(fig)


# ------------------------------------------------------------------ dose
def dose_png(patients: Sequence[Json]) -> bytes | None:
    """Cells per kg per patient (×10⁶/kg, log scale) against the protocol range 0.5–10 ×10⁶/kg."""
    dosed = [p for p in patients if isinstance(p.get("cellsPerKg"), int | float) and p["cellsPerKg"] > 0]
    if not dosed:
        return None
    with figure(6.5, 2.8) as (fig, (ax,)):
        ax.axhspan(*PROTOCOL_RANGE, color="#009E73", alpha=0.12, label="protocol range 0.5–10")
        for bound in PROTOCOL_RANGE:
            ax.axhline(bound, color="#009E73", linestyle="--", linewidth=0.8)
        for x, p in enumerate(dosed):
            inside = p.get("doseWithinProtocol") is True
            value = p["cellsPerKg"] / 1e6
            ax.plot(x, value, marker="o" if inside else "^", markersize=7, linestyle="none",
                    color="#0072B2" if inside else "#D55E00", markeredgecolor="black")
            ax.annotate(f"{value:.3g}", (x, value), textcoords="offset points", xytext=(7, -3), fontsize=7)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_ylim(_dose_limits([p["cellsPerKg"] / 1e6 for p in dosed]))
        ax.set_xticks(range(len(dosed)), [short(p["patient"]) for p in dosed], rotation=45, ha="right")
        ax.set_xlabel("infused patient")
        ax.set_ylabel("dose (×10⁶ CAR-T cells/kg)")
        ax.legend(handles=_dose_legend(), loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        ax.set_title("CAR-T dose per patient", loc="left")
        return png(fig)


def _dose_limits(values: Sequence[float]) -> tuple[float, float]:
    return min(0.2, min(values) / 1.5), max(20.0, max(values) * 1.5)


def _dose_legend() -> list[Any]:
    return [Line2D([], [], marker="o", color="#0072B2", markeredgecolor="black", linestyle="none",
                   label="within range"),
            Line2D([], [], marker="^", color="#D55E00", markeredgecolor="black", linestyle="none",
                   label="outside range"),
            Line2D([], [], color="#009E73", linestyle="--", label="protocol 0.5–10")]


# ------------------------------------------------------------------ swimmer
def swimmer_png(patients: Sequence[Json], follow_up: Mapping[str, Json]) -> bytes | None:
    """One lane per infused patient from day 0: assessments by response, relapse, death, last follow-up."""
    if not patients:
        return None
    with figure(7.5, 1.0 + 0.38 * len(patients)) as (fig, (ax,)):
        for lane, p in enumerate(patients):
            _lane(ax, lane, p, follow_up.get(p["patient"], {}))
        ax.set_yticks(range(len(patients)), [short(p["patient"]) for p in patients])
        ax.invert_yaxis()
        ax.set_xlabel("days since first CAR-T infusion (day 0)")
        ax.set_ylabel("infused patient")
        ax.set_xlim(left=-5)
        ax.legend(handles=_swimmer_legend(), loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        ax.set_title("Course after infusion (swimmer plot)", loc="left")
        return png(fig)


def _lane(ax: Axes, y: int, p: Json, fu: Json) -> None:
    death, last = fu.get("deathDay"), fu.get("lastFollowUpDay")
    days = [a["day"] for a in p.get("assessments") or []]
    end = death if death is not None else max([d for d in (last, *days) if d is not None], default=0)
    ax.barh(y, end, left=0, height=0.45, color="#D9D9D9", edgecolor="#4D4D4D", linewidth=0.6)
    for a in p.get("assessments") or []:
        colour, marker = RESPONSE_STYLE.get(a["response"], RESPONSE_STYLE["NE"])
        size = 11 if a["response"] == "relapse" else 8
        ax.plot(a["day"], y, marker=marker, color=colour, markeredgecolor="black", markersize=size, linestyle="none")
    if death is not None:
        ax.plot(death, y, marker="$\u2020$", color="black", markersize=12, linestyle="none")
    elif last is not None:
        ax.plot(last, y, marker=">", color="#4D4D4D", markersize=7, linestyle="none")


def _swimmer_legend() -> list[Any]:
    handles: list[Any] = [Line2D([], [], marker=m, color=c, markeredgecolor="black", linestyle="none", label=k)
                          for k, (c, m) in RESPONSE_STYLE.items()]
    handles.append(Line2D([], [], marker="$\u2020$", color="black", linestyle="none", markersize=10, label="death"))
    handles.append(Line2D([], [], marker=">", color="#4D4D4D", linestyle="none", label="alive at last follow-up"))
    return handles


# ------------------------------------------------------------------ response and CIR
def response_png(cohort: Json) -> bytes | None:
    """Best overall response counts, and the ORR with its exact 95 % interval."""
    orr = cohort.get("orr") or {}
    best = cohort.get("bestResponse") or {}
    if not orr.get("n"):
        return None
    with figure(7.0, 2.6, ncols=2) as (fig, (left, right)):
        keys = list(best)
        left.bar(keys, [best[k] for k in keys], color=[RESPONSE_STYLE[k][0] for k in keys], edgecolor="black",
                 linewidth=0.5)
        left.yaxis.set_major_locator(MaxNLocator(integer=True))
        left.set_xlabel("best overall response")
        left.set_ylabel("patients (n)")
        left.set_title("Best overall response", loc="left")
        _orr_axis(right, orr)
        return png(fig)


def _orr_axis(ax: Axes, orr: Json) -> None:
    rate, (lo, hi) = orr["rate"] * 100, [x * 100 for x in orr["ci95"]]
    ax.errorbar([rate], [0], xerr=[[rate - lo], [hi - rate]], fmt="o", color="#0072B2", capsize=5, markersize=8)
    ax.text(rate, 0.25, f"{orr['responders']}/{orr['n']} = {rate:.1f} % ({lo:.1f}–{hi:.1f})", ha="center")
    ax.set_xlim(0, 100)
    ax.set_ylim(-1, 1)
    ax.set_yticks([])
    ax.set_xlabel("overall response rate (%), exact 95 % CI")
    ax.set_title("ORR (CR + CRi + MLFS + PR)", loc="left")


def cir_png(cir: Json) -> bytes | None:
    """Cumulative incidence of relapse (Aalen–Johansen) with its 95 % band, in months since remission."""
    steps, subjects = cir.get("curve") or [], cir.get("subjects") or []
    if not subjects or not steps:
        return None
    days_per_month = 365.25 / 12
    xs = [s["day"] / days_per_month for s in steps] + [cir["definedUntilDay"] / days_per_month]
    with figure(6.5, 3.2) as (fig, (ax,)):
        est, low, high = ([s[k] * 100 for s in steps] for k in ("estimate", "low", "high"))
        ax.fill_between(xs, low + low[-1:], high + high[-1:], step="post", color="#0072B2", alpha=0.2,
                        label="95 % CI (log–log)")
        ax.step(xs, est + est[-1:], where="post", color="#0072B2", linewidth=1.8, label="relapse")
        death = [s["death"] * 100 for s in steps]
        ax.step(xs, death + death[-1:], where="post", color="#4D4D4D", linestyle="--", linewidth=1.2,
                label="death without relapse (competing)")
        for month in (12, 24):
            ax.axvline(month, color="#999999", linestyle=":", linewidth=0.8)
        ax.set_xlim(0, max(24.5, xs[-1]))
        ax.set_xticks([0, 6, 12, 18, 24])
        ax.set_ylim(0, 100)
        _at_risk_row(ax, subjects)
        ax.set_xlabel(f"months since first remission (n = {len(subjects)})", labelpad=20)
        ax.set_ylabel("cumulative incidence (%)")
        ax.legend(loc="upper left", frameon=False)
        ax.set_title("Cumulative incidence of relapse", loc="left")
        return png(fig)


def _at_risk_row(ax: Axes, subjects: Sequence[Json]) -> None:
    """Numbers still followed (time ≥ t) at 0, 6, 12, 18 and 24 months, printed under the x axis."""
    for month in (0, 6, 12, 18, 24):
        n = sum(1 for s in subjects if s["days"] >= month * 365.25 / 12)
        ax.annotate(str(n), (month, 0), xycoords=("data", "axes fraction"), xytext=(0, -24),
                    textcoords="offset points", ha="center", fontsize=7, color="#333333")
    ax.annotate("at risk", (0, 0), xycoords="axes fraction", xytext=(-8, -24), textcoords="offset points",
                ha="right", fontsize=7, color="#333333")


# ------------------------------------------------------------------ kinetics
def kinetics_png(series: Mapping[str, Mapping[str, Sequence[Sequence[Any]]]],
                 patients: Sequence[Json]) -> bytes | None:
    """CAR-T copies and CAR+ % over days (log scale), one line per patient, Cmax/Tmax marked."""
    concepts = [c for c in KINETIC_AXES if any(c in s for s in series.values())]
    if not concepts:
        return None
    summary = {p["patient"]: p.get("kinetics") or {} for p in patients}
    with figure(4.2 * len(concepts), 3.4, ncols=len(concepts)) as (fig, axes):
        for ax, concept in zip(axes, concepts, strict=True):
            _kinetic_axis(ax, concept, series, summary)
        return png(fig)


def _kinetic_axis(ax: Axes, concept: str, series: Mapping[str, Mapping[str, Sequence[Sequence[Any]]]],
                  summary: Mapping[str, Json]) -> None:
    detected = [float(v) for s in series.values() for _, v, *_ in s.get(concept, []) if v and v > 0]
    floor = min(detected) / 3 if detected else 1.0
    for i, (patient, per) in enumerate(series.items()):
        points = per.get(concept)
        if points:
            _kinetic_line(ax, short(patient), points, summary.get(patient, {}).get(concept) or {}, floor, i)
    ax.axhline(floor, color="#999999", linestyle=":", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("days since infusion (day 0)")
    ax.set_ylabel(KINETIC_AXES[concept] + ", log scale")
    ax.set_title(KINETIC_TITLES[concept], loc="left")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, frameon=False)


LINE_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
LINE_STYLES = ("-", "--", "-.", ":")


def _kinetic_line(ax: Axes, label: str, points: Sequence[Sequence[Any]], summary: Json, floor: float,
                  i: int) -> None:
    colour, style = LINE_COLOURS[i % len(LINE_COLOURS)], LINE_STYLES[(i // len(LINE_COLOURS)) % len(LINE_STYLES)]
    shown = [(d, v) for d, v, *_ in points if v and v > 0]
    if shown:
        ax.plot(*zip(*shown, strict=True), color=colour, linestyle=style, marker="o", markersize=3, label=label)
    below = [d for d, v, *_ in points if not v]
    if below:
        ax.plot(below, [floor] * len(below), marker="v", color=colour, markerfacecolor="white", linestyle="none")
    cmax, tmax = summary.get("cmax"), summary.get("tmaxDay")
    if isinstance(cmax, int | float) and isinstance(tmax, int) and cmax > 0 and math.isfinite(cmax):
        ax.plot([tmax], [cmax], marker="*", color=colour, markeredgecolor="black", markersize=12, linestyle="none")
        ax.vlines(tmax, floor, cmax, colors=colour, linestyles="dotted", linewidth=0.8)


__all__ = ["DPI", "KINETIC_AXES", "PROTOCOL_RANGE", "RESPONSE_STYLE", "cir_png", "criteria_png", "dose_png",
           "funnel_png", "kinetics_png", "png", "response_png", "short", "status_counts", "swimmer_png"]
