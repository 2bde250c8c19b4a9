"""Number formatting in the report's units: persons in 万 (zh) or thousands/millions (en), yuan in
亿元 (zh) or billion yuan (en), shares in %."""

from __future__ import annotations

import math

__all__ = ["fmt_interval", "fmt_value", "scale_unit"]

PERSON_UNITS = frozenset({"persons", "person", "人"})
YUAN_UNITS = frozenset({"yuan", "元"})
SHARE_UNITS = frozenset({"1", "share"})


def _dec(x: float, lang: str) -> str:
    """Three significant figures for small numbers, no decimals for large ones."""
    a = abs(x)
    if a >= 100:
        return f"{x:,.0f}" if lang == "en" else f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def scale_unit(value: float, unit: str, lang: str) -> tuple[float, str]:
    """The divisor and unit suffix that present ``value`` (in ``unit``, base units) in ``lang``."""
    a = abs(value)
    if unit in PERSON_UNITS:
        if lang == "zh":
            if a >= 1e8:
                return 1e8, "亿人"
            return (1e4, "万人") if a >= 1e4 else (1.0, "人")
        if a >= 1e6:
            return 1e6, " million"
        return (1e3, " thousand") if a >= 1e4 else (1.0, "")
    if unit in YUAN_UNITS:
        if lang == "zh":
            if a >= 1e12:
                return 1e12, "万亿元"
            if a >= 1e8:
                return 1e8, "亿元"
            return (1e4, "万元") if a >= 1e5 else (1.0, "元")
        if a >= 1e9:
            return 1e9, " billion yuan"
        return (1e6, " million yuan") if a >= 1e6 else (1.0, " yuan")
    if unit in SHARE_UNITS:
        return 0.01, "%"
    if unit == "%":
        return 1.0, "%"
    return 1.0, "" if not unit else ("" if lang == "zh" else " ") + unit


def fmt_value(value: float | None, unit: str, lang: str) -> str:
    """One number with its unit, e.g. ``2302万人``, ``240.1 billion yuan``, ``4.8%``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    div, suffix = scale_unit(value, unit, lang)
    return f"{_dec(value / div, lang)}{suffix}"


def fmt_interval(low: float | None, high: float | None, unit: str, lang: str, ref: float) -> str:
    """An interval in the scale of its point estimate ``ref``: ``[2172, 2432]万人``."""
    if low is None or high is None:
        return "—"
    div, suffix = scale_unit(ref, unit, lang)
    return f"[{_dec(low / div, lang)}, {_dec(high / div, lang)}]{suffix}"
