"""UCUM unit conversion on top of pint.

UCUM codes (``10*9/L``, ``umol/L``, ``[lb_av]``, ``10*6{cells}``, ``Cel``) are rewritten into pint expressions
and converted by pint; nothing here holds a hand conversion factor except the molar factors RULES.md §3 fixes
for bilirubin (17.1) and creatinine (88.4), which come from the concept catalogue. A unit that cannot be
parsed or converted raises ``UnitError`` naming the units only — never the value.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import pint

from bridge.errors import UnitError


def _registry() -> Any:
    """pint's registry, from its definitions cache in the user cache folder when it can be used (parsing the
    definitions costs ~0.1 s at every start otherwise)."""
    try:
        return pint.UnitRegistry(autoconvert_offset_to_baseunit=True, cache_folder=":auto:")
    except (OSError, ValueError, TypeError):  # an unwritable or foreign cache folder: parse the definitions
        return pint.UnitRegistry(autoconvert_offset_to_baseunit=True)


_UREG: Any = _registry()
_UREG.define("enzyme_unit = micromole / minute = U")
_UREG.define("IU = enzyme_unit")  # labs write IU/L for enzyme activity; UCUM's arbitrary [IU] is separate
_UREG.define("international_unit_arb = [arbitrary_iu] = IU_arb")

_ANNOTATION = re.compile(r"\{[^{}]*\}")
_POWER10 = re.compile(r"10\*(-?\d+)|10\^(-?\d+)")
_SPECIAL = {
    "%": "percent",
    "1": "dimensionless",
    "[lb_av]": "lb",
    "[oz_av]": "oz",
    "[IU]": "IU_arb",
    "[iU]": "IU_arb",
    "Cel": "degC",
    "[degF]": "degF",
    "mm3": "mm**3",
    "/mm3": "1/mm**3",
    "ukat": "microkatal",
    "kat": "katal",
}


def _token(tok: str) -> str:
    if tok in _SPECIAL:
        return _SPECIAL[tok]
    tok = tok.replace("µ", "u").replace("μ", "u")
    tok = re.sub(r"\[IU\]|\[iU\]", "IU_arb", tok)
    tok = re.sub(r"(\d)$", r"**\1", tok) if re.fullmatch(r"[A-Za-z]+\d", tok) else tok
    return _SPECIAL.get(tok, tok)


def ucum_to_pint(code: str) -> str:
    """Rewrite a UCUM code into a pint expression (``10*9/L`` -> ``1e9 / L``)."""
    text = code.strip()
    if text in _SPECIAL:
        return _SPECIAL[text]
    had_annotation = bool(_ANNOTATION.search(text))
    text = _ANNOTATION.sub("", text)
    text = _POWER10.sub(lambda m: f"1e{m.group(1) or m.group(2)}", text)
    if text.startswith("/"):
        text = "1" + text
    if not text:
        return "dimensionless" if had_annotation else ""
    parts = re.split(r"([./])", text)
    out = []
    for part in parts:
        if part == ".":
            out.append("*")
        elif part == "/":
            out.append("/")
        else:
            out.append(_token(part) if part else "1")
    return " ".join(out)


@lru_cache(maxsize=512)
def _unit(code: str) -> Any:
    expr = ucum_to_pint(code)
    if not expr:
        raise UnitError(f"empty unit {code!r}")
    try:
        return _UREG.parse_expression(expr)
    except Exception:  # noqa: BLE001 - pint's parser raises many types (TokenError, AssertionError, ...) on junk
        raise UnitError(f"unknown unit {code!r}") from None


def _is_substance(q: Any) -> bool:
    return bool(q.dimensionality == _UREG.parse_expression("mol/L").dimensionality)


def _is_mass_conc(q: Any) -> bool:
    return bool(q.dimensionality == _UREG.parse_expression("g/L").dimensionality)


@lru_cache(maxsize=2048)
def _factor(src: str, dst: str, molar: float | None) -> tuple[float, float]:
    """(scale, offset) such that dst = src * scale + offset; offsets only for temperatures."""
    a, b = _unit(src), _unit(dst)
    try:
        return _scale(a, b, molar)
    except Exception:  # noqa: BLE001 - pint raises many types on odd units: the value is not usable, never a crash
        raise UnitError(f"cannot convert {src!r} to {dst!r}") from None


def _scale(a: Any, b: Any, molar: float | None) -> tuple[float, float]:
    if molar and _is_substance(a) and _is_mass_conc(b):
        to_umol = (1.0 * a).to("umol/L").magnitude
        to_dst = (1.0 * _UREG.parse_expression("mg/dL")).to(b.units).magnitude
        return to_umol / molar * to_dst, 0.0
    if molar and _is_mass_conc(a) and _is_substance(b):
        to_mgdl = (1.0 * a).to("mg/dL").magnitude
        to_dst = (1.0 * _UREG.parse_expression("umol/L")).to(b.units).magnitude
        return to_mgdl * molar * to_dst, 0.0
    zero = _UREG.Quantity(0.0, a.units) * a.magnitude
    one = _UREG.Quantity(1.0, a.units) * a.magnitude
    z, o = zero.to(b.units).magnitude / b.magnitude, one.to(b.units).magnitude / b.magnitude
    return float(o - z), float(z)


def convert(value: float, src: str, dst: str, molar: float | None = None) -> float:
    """Convert ``value`` from UCUM ``src`` to UCUM ``dst``; ``molar`` = µmol/L per mg/dL for that analyte."""
    if src.strip() == dst.strip():
        return float(value)
    scale, offset = _factor(src.strip(), dst.strip(), molar)
    return _tidy(float(value) * scale + offset)


def _tidy(x: float) -> float:
    """Round to 12 significant digits so that 0.55 '1' is 55.0 '%' and exact thresholds stay exact."""
    return float(f"{x:.12g}")


def convertible(src: str, dst: str, molar: float | None = None) -> bool:
    try:
        _factor(src.strip(), dst.strip(), molar)
    except UnitError:
        return False
    return True


__all__ = ["convert", "convertible", "ucum_to_pint"]
