"""The report as a PDF: the report's HTML laid out by WeasyPrint on A4 pages, with the Chinese
set in Noto Sans CJK SC (embedded, subset), page numbers in the footer ("第 N 页" / "Page N")
and page numbers in the table of contents.

The HTML is the one the HTML report writes (``impactstudy.report.render_html``); this module adds
only a print stylesheet on top of it. The table of contents gets its page numbers through CSS
``target-counter()`` for every link to an anchor in the document inside a ``nav`` (or an element
with class ``toc``).

Nothing is fetched from the network: only ``data:`` and ``file:`` URLs are loaded. A machine
without the CJK font fails with :class:`PdfError` naming the package to install, instead of
writing a PDF of tofu boxes.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CJK_FAMILY",
    "CJK_FONT_FILES",
    "PdfError",
    "PdfResult",
    "cjk_font_file",
    "print_stylesheet",
    "render_pdf",
    "warm",
    "write_pdf",
]

#: the font family every text of the PDF is set in (its Latin glyphs are used too)
CJK_FAMILY = "Noto Sans CJK SC"
#: where Debian's fonts-noto-cjk puts the font (used when fontconfig's tools are absent)
CJK_FONT_FILES = (
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc"),
)
#: page footer text by language; ``{n}`` is the page counter
FOOTERS = {"zh": ("第 ", " 页"), "en": ("Page ", "")}
_LANG_RE = re.compile(r"<html\b[^>]*\blang\s*=\s*[\"']?([A-Za-z]+)", re.IGNORECASE)
#: an ``<svg`` start tag without its own font-family
_SVG_RE = re.compile(r"<svg\b(?![^>]*\bfont-family\s*=)", re.IGNORECASE)


class PdfError(RuntimeError):
    """The PDF cannot be made as asked: the CJK font is missing, or WeasyPrint is not usable."""


@dataclass(frozen=True)
class PdfResult:
    """A written PDF: its path, page count and the seconds WeasyPrint took."""

    path: Path
    pages: int
    seconds: float


def cjk_font_file(family: str = CJK_FAMILY) -> Path:
    """The file of the CJK font the PDF is set in, as fontconfig (which WeasyPrint uses) finds it.

    Raises :class:`PdfError` when the family is not installed: fontconfig would otherwise fall
    back to any font, and a font without CJK glyphs renders Chinese as empty boxes (tofu)."""
    fc_list = shutil.which("fc-list")
    if fc_list is not None:
        out = subprocess.run(
            [fc_list, f":family={family}", "file"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        files = sorted(line.strip().rstrip(":") for line in out.splitlines() if line.strip())
        if files:
            return Path(files[0])
    elif family == CJK_FAMILY:
        for path in CJK_FONT_FILES:
            if path.is_file():
                return path
    raise PdfError(
        f"the font {family!r} is not installed, so the report's Chinese would print as empty "
        "boxes; install the Debian package fonts-noto-cjk (scripts/setup.sh does)"
    )


def _lang_of(html: str) -> str:
    match = _LANG_RE.search(html[:4096])
    if match and match.group(1).lower().startswith("en"):
        return "en"
    return "zh"


def _svg_fonts(html: str, family: str = CJK_FAMILY) -> str:
    """Inline SVG charts with the CJK family on their root: WeasyPrint's SVG renderer does not
    take the document's CSS, and its default sans-serif face for Chinese is the Japanese one."""
    return _SVG_RE.sub(f'<svg font-family="{family}, sans-serif"', html)


def _with_print_css(html: str, css: str) -> str:
    """``html`` with ``css`` as its last stylesheet, so that it wins over the page's own ``@page``
    rules (a stylesheet passed to WeasyPrint apart is a user stylesheet, which loses to them)."""
    style = f'<style id="impactstudy-pdf">{css}</style>'
    match = re.search(r"</head\s*>", html, re.IGNORECASE)
    if match:
        return html[: match.start()] + style + html[match.start() :]
    return style + html


class _SvgCssFilter(logging.Filter):
    """Drop WeasyPrint's "Ignored `fill: ...`, unknown property" for SVG presentation properties
    in style attributes: its HTML cascade does not know them, its SVG renderer does."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("Ignored `")
            and message.endswith("unknown property.")
            and message[9:].split(":", 1)[0] in _SVG_PROPERTIES
        )


_SVG_PROPERTIES = frozenset(
    [
        "fill",
        "fill-opacity",
        "fill-rule",
        "stroke",
        "stroke-width",
        "stroke-linecap",
        "stroke-linejoin",
        "stroke-dasharray",
        "stroke-dashoffset",
        "stroke-miterlimit",
        "stroke-opacity",
        "text-anchor",
        "dominant-baseline",
        "alignment-baseline",
        "clip-rule",
        "marker",
        "marker-start",
        "marker-mid",
        "marker-end",
        "paint-order",
        "shape-rendering",
        "stop-color",
        "stop-opacity",
        "vector-effect",
    ]
)


@contextmanager
def _quiet_svg_css() -> Iterator[None]:
    logger = logging.getLogger("weasyprint")
    quiet = _SvgCssFilter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def print_stylesheet(lang: str = "zh", family: str = CJK_FAMILY) -> str:
    """The CSS the PDF adds to the report's HTML: A4 pages with a numbered footer, every text
    (the page-margin boxes included: they do not inherit the body's font) in ``family``, page
    numbers in the table of contents, no row or figure split across pages, no on-screen
    scroll containers (which would clip wide tables on paper), and the provenance entries'
    label/value lists as floated labels rather than the screen's CSS grid (WeasyPrint measures
    every grid item's text for ``max-content``: a third of the PDF's time)."""
    before, after = FOOTERS["en" if lang.startswith("en") else "zh"]
    stack = f'"{family}", "DejaVu Sans", sans-serif'
    return f"""
@page {{
  size: A4;
  margin: 18mm 16mm 20mm 16mm;
  @bottom-center {{
    content: "{before}" counter(page) "{after}";
    font-family: {stack};
    font-size: 8.5pt;
    color: #555;
  }}
}}
@page :first {{
  @bottom-center {{ content: none; }}
}}
html, body, table, th, td, caption, figcaption, svg, svg text,
button, input, select, textarea {{
  font-family: {stack};
}}
html {{ font-size: 10pt; }}
body {{ margin: 0; max-width: none; }}
h1, h2, h3, h4 {{ break-after: avoid; page-break-after: avoid; }}
figure, tr, thead, .chart, img, svg {{ break-inside: avoid; page-break-inside: avoid; }}
thead {{ display: table-header-group; }}
table {{ max-width: 100%; width: 100%; table-layout: fixed; }}
td, th {{ overflow-wrap: anywhere; }}
img, svg {{ max-width: 100%; height: auto; }}
* {{ overflow: visible !important; }}
dl.prov {{ display: block; }}
dl.prov dt {{ float: left; clear: left; width: 6em; }}
dl.prov dd {{ margin-left: 6.6em; }}
:lang(en) dl.prov dt {{ width: 9.5em; }}
:lang(en) dl.prov dd {{ margin-left: 10.1em; }}
nav a[href^="#"]::after, .toc a[href^="#"]::after {{
  content: leader(".") target-counter(attr(href url), page);
}}
nav a[href^="#"], .toc a[href^="#"] {{ text-decoration: none; color: inherit; }}
"""


def render_pdf(html: str, path: Path, *, lang: str | None = None) -> PdfResult:
    """Write ``html`` as a PDF to ``path`` (parents created) and say how it went.

    ``lang`` chooses the footer ("第 N 页" or "Page N"); by default it is read from the
    ``<html lang=...>`` attribute (Chinese unless it starts with ``en``)."""
    cjk_font_file()
    try:
        from weasyprint import HTML
        from weasyprint.urls import URLFetcher
    except (ImportError, OSError) as exc:  # OSError: Pango or its libraries missing
        raise PdfError(
            f"WeasyPrint cannot be loaded ({exc}); run scripts/setup.sh, which installs it and "
            "the Pango libraries it needs"
        ) from exc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fetcher = URLFetcher(allowed_protocols=["data", "file"], fail_on_errors=False)
    source = _with_print_css(_svg_fonts(html), print_stylesheet(lang or _lang_of(html)))
    start = time.perf_counter()
    with _quiet_svg_css():
        document = HTML(string=source, base_url=str(path.parent), url_fetcher=fetcher).render()
    document.write_pdf(path)
    return PdfResult(path, len(document.pages), time.perf_counter() - start)


def write_pdf(html: str, path: Path, *, lang: str | None = None) -> Path:
    """Write the report's HTML as an A4 PDF with embedded CJK fonts to ``path``; return ``path``.

    Raises :class:`PdfError` when the CJK font (Debian: fonts-noto-cjk) or WeasyPrint is
    missing."""
    return render_pdf(html, path, lang=lang).path


def warm() -> None:
    """Load WeasyPrint, fontconfig's font list and the CJK font in this process by printing a
    one-line page: about a second a process pays before its first PDF, paid ahead by a run's
    helper process while the estimates are still being made."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        render_pdf('<html lang="zh"><body><p>微信 WeChat 1</p></body></html>', Path(tmp) / "w.pdf")
