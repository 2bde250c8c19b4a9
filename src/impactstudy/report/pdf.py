"""The report as a PDF: the report's context (the one the HTML page renders: numbers, labels,
charts, provenance) typeset by Typst with ``templates/report.typ``, on A4 pages, every text in
Noto Sans CJK SC (embedded, subset), page numbers in the footer ("第 N 页" / "Page N"), a table of
contents with page numbers, and every number linked to its provenance entry.

Typst sees only the Noto CJK fonts' folder (and its own built-in fonts), never the machine's
other fonts, and the document carries no date: the same context gives the same bytes on any
machine with fonts-noto-cjk. It reads no file but its template and fetches nothing; charts are
passed as SVG text. A machine without the CJK font fails with :class:`PdfError` naming the package
to install, instead of writing a PDF of tofu boxes.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from impactstudy.report.fonts import CJK_FAMILY, CJK_MONO_FAMILY, FontError, cjk_font_file

__all__ = ["FOOTERS", "PdfError", "PdfResult", "render_pdf", "typst_data", "write_pdf"]

TEMPLATE = Path(__file__).parent / "templates" / "report.typ"
#: page footer text by language, around the page number
FOOTERS = {"zh": ("第 ", " 页"), "en": ("Page ", "")}
_PAGES = re.compile(rb"/Type\s*/Pages\s*/Count\s+(\d+)")


class PdfError(RuntimeError):
    """The PDF cannot be made as asked: the CJK font is missing, Typst is not usable, or the
    template rejects the report (a link to a target that does not exist, say)."""


@dataclass(frozen=True)
class PdfResult:
    """A written PDF: its path, page count and the seconds Typst took."""

    path: Path
    pages: int
    seconds: float


def typst_data(context: Mapping[str, Any], font: str = CJK_FAMILY) -> str:
    """The report context as the JSON the Typst template reads: the strings in the report's
    language (``tr``), the footer, the fonts; NaN and infinities as null (JSON has none)."""
    lang = str(context["lang"])
    before, after = FOOTERS["en" if lang.startswith("en") else "zh"]
    data = {
        **context,
        "tr": {k: v[context["L"]] for k, v in context["t"].items()},
        "footer": {"before": before, "after": after},
        "font": font,
        "mono": CJK_MONO_FAMILY if font == CJK_FAMILY else font,
    }
    return json.dumps(_plain(data), ensure_ascii=False, allow_nan=False)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return str(value)  # Markup (the charts' SVG) as plain text
    return value


def render_pdf(
    context: Mapping[str, Any], path: Path | str, *, font_paths: list[Path] | None = None
) -> PdfResult:
    """Typeset the report ``context`` (`impactstudy.report.html.report_context`) as a PDF at
    ``path`` (parents created) and say how it went.

    ``font_paths``: folders Typst takes its fonts from (default: the CJK font's own folder)."""
    if font_paths is None:
        try:
            font_paths = [cjk_font_file().parent]
        except FontError as exc:
            raise PdfError(str(exc)) from None
    try:
        import typst
    except ImportError as exc:  # pragma: no cover - a broken installation
        raise PdfError(f"Typst cannot be loaded ({exc}); run scripts/setup.sh") from exc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        pdf = typst.compile(
            str(TEMPLATE),
            root=str(TEMPLATE.parent),
            font_paths=[str(p) for p in font_paths],
            ignore_system_fonts=True,
            sys_inputs={"report": typst_data(context)},
            timestamp=0,
            format="pdf",
        )
    except typst.TypstError as exc:
        raise PdfError(f"Typst could not typeset the report: {exc}") from None
    assert isinstance(pdf, bytes)
    path.write_bytes(pdf)
    pages = max((int(n) for n in _PAGES.findall(pdf)), default=0)
    return PdfResult(path, pages, time.perf_counter() - start)


def write_pdf(context: Mapping[str, Any], path: Path | str) -> Path:
    """Write the report ``context`` as an A4 PDF with embedded CJK fonts to ``path``; return
    ``path``. Raises :class:`PdfError` when the CJK font (Debian: fonts-noto-cjk) is missing."""
    return render_pdf(context, path).path
