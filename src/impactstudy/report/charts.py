"""The report's charts, drawn with matplotlib and returned as inline SVG (text kept as text)."""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib
from matplotlib import font_manager
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from impactstudy.report.fonts import CJK_FAMILY, CJK_FONT_FILES

__all__ = [
    "Bar",
    "bar_chart",
    "cjk_font_available",
    "history_chart",
    "tornado_chart",
    "waterfall_chart",
]

BLUE, ORANGE, GREY, GREEN, RED = "#2b6cb0", "#dd6b20", "#718096", "#2f855a", "#c53030"


def cjk_font_available() -> bool:
    """Register Noto Sans CJK with matplotlib when its files exist; whether it is usable."""
    if any(f.name == CJK_FAMILY for f in font_manager.fontManager.ttflist):
        return True
    found = False
    for path in CJK_FONT_FILES:
        if path.exists():
            font_manager.fontManager.addfont(str(path))
            found = True
    return found


@contextmanager
def _style() -> Iterator[None]:
    cjk = cjk_font_available()
    families = [CJK_FAMILY, "DejaVu Sans"] if cjk else ["DejaVu Sans"]
    with matplotlib.rc_context(
        {
            "font.family": "sans-serif",
            "font.sans-serif": families,
            "font.size": 9,
            "axes.unicode_minus": False,
            "svg.fonttype": "none",
            "svg.hashsalt": "impactstudy",
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    ):
        yield


def _svg(fig: Figure) -> str:
    """The figure as an SVG element with ids unique in the page and no metadata."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    # ids prefixed by a digest of the chart: unique in the page, and the same on every render
    prefix = f"c{hashlib.sha1(text.encode()).hexdigest()[:10]}-"
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}{m.group(1)})", text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{prefix}{m.group(1)}"', text)
    text = re.sub(r'\s(width|height)="[^"]*pt"', "", text, count=2)
    return text.replace("<svg ", '<svg class="chart" role="img" ', 1)


@dataclass(frozen=True)
class Bar:
    """One bar: label, value, interval and an optional reference mark (the published value)."""

    label: str
    value: float
    low: float
    high: float
    mark: float | None = None


def bar_chart(bars: Sequence[Bar], *, xlabel: str, mark_label: str, title: str = "") -> str:
    """Horizontal bars with interval whiskers and the reference value marked."""
    with _style():
        fig = Figure(figsize=(6.4, (0.32 if len(bars) <= 15 else 0.22) * len(bars) + 0.9))
        ax = fig.add_subplot()
        y = list(range(len(bars)))[::-1]
        vals = [b.value for b in bars]
        err = [[b.value - b.low for b in bars], [b.high - b.value for b in bars]]
        ax.barh(y, vals, color=BLUE, alpha=0.8, height=0.6)
        ax.errorbar(vals, y, xerr=err, fmt="none", ecolor="#1a202c", capsize=2, lw=0.8)
        marks = [(b.mark, yy) for b, yy in zip(bars, y, strict=True) if b.mark is not None]
        if marks:
            ax.scatter(
                [m for m, _ in marks],
                [yy for _, yy in marks],
                marker="D",
                color=ORANGE,
                zorder=3,
                s=16,
                label=mark_label,
            )
            ax.legend(loc="lower right", fontsize=7, frameon=False)
        ax.set_yticks(y, [b.label for b in bars], fontsize=7)
        ax.set_xlabel(xlabel)
        if title:
            ax.set_title(title, fontsize=9)
        return _svg(fig)


def waterfall_chart(
    parts: Sequence[tuple[str, float]],
    total: tuple[str, float],
    *,
    ylabel: str,
    title: str,
    fmt: Callable[[float], str],
) -> str:
    """Parts stacked from zero to the total (a negative part drawn as a fall)."""
    with _style():
        fig = Figure(figsize=(6.4, 3.2))
        ax = fig.add_subplot()
        base = 0.0
        labels = []
        for i, (label, value) in enumerate(parts):
            bottom = base if value >= 0 else base + value
            ax.bar(i, abs(value), bottom=bottom, color=BLUE if value >= 0 else RED, width=0.6)
            ax.text(
                i,
                bottom + abs(value),
                ("+" if value >= 0 else "") + fmt(value),
                ha="center",
                va="bottom",
                fontsize=7,
            )
            base += value
            labels.append(label)
        ax.bar(len(parts), total[1], color=GREEN, width=0.6)
        ax.text(len(parts), total[1], fmt(total[1]), ha="center", va="bottom", fontsize=7)
        labels.append(total[0])
        ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=20, ha="right")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        return _svg(fig)


def tornado_chart(
    rows: Sequence[tuple[str, float, float]],
    central: float,
    *,
    xlabel: str,
    title: str,
    low_label: str = "5%",
    high_label: str = "95%",
) -> str:
    """Each input's result at its low and high quantile, around the central value."""
    with _style():
        fig = Figure(figsize=(6.4, 0.3 * len(rows) + 1.0))
        ax = fig.add_subplot()
        y = list(range(len(rows)))[::-1]
        for i, (yy, (_, lo, hi)) in enumerate(zip(y, rows, strict=True)):
            ax.barh(yy, lo - central, left=central, color=ORANGE, height=0.6, label=low_label)
            ax.barh(yy, hi - central, left=central, color=BLUE, height=0.6, label=high_label)
            if i == 0:
                ax.legend(fontsize=7, frameon=False, loc="lower right")
                low_label = high_label = "_"
        ax.axvline(central, color="#1a202c", lw=0.8)
        ax.set_yticks(y, [r[0] for r in rows], fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=9)
        return _svg(fig)


def history_chart(
    series: Sequence[tuple[str, Sequence[int], Sequence[float], tuple[float, float, float] | None]],
    *,
    year: int,
    ylabel: str,
    title: str,
) -> str:
    """Lines of published values by year, with this run's median and interval at ``year``."""
    with _style():
        fig = Figure(figsize=(6.4, 3.2))
        ax = fig.add_subplot()
        colors = [BLUE, ORANGE, GREEN, GREY, RED]
        for i, (label, years, values, ours) in enumerate(series):
            c = colors[i % len(colors)]
            ax.plot(list(years), list(values), marker="o", ms=3, color=c, label=label, lw=1.2)
            if ours is not None:
                med, lo, hi = ours
                ax.errorbar(
                    [year + 0.08],
                    [med],
                    yerr=[[med - lo], [hi - med]],
                    fmt="s",
                    ms=4,
                    color=c,
                    mfc="white",
                    capsize=3,
                )
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, frameon=False)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return _svg(fig)
