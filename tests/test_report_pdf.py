"""The report as a PDF (impactstudy.report.pdf): the real report (the default simulation, the
impact model on 2,000 draws) typeset by Typst, then checked with poppler's tools the way a
reader would see it: the text is there (headings, every number of the HTML page, which is made
from the same context), the contents give the pages the sections are on, every number links to
its provenance entry, every font is embedded and is Noto CJK, pages render to images, and
Chinese glyphs are real glyphs, not tofu (.notdef boxes, which are all alike: see
``_cjk_cells_differ``)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from impactstudy.report import ReportInputs, report_context
from impactstudy.report.fonts import CJK_FAMILY, FontError, cjk_font_file
from impactstudy.report.pdf import PdfError, PdfResult, render_pdf, write_pdf

HEADINGS = ["前言", "就业篇", "经济与社会篇", "产业篇", "附录"]
#: CJK ideographs and full-width punctuation: every one advances by 1 em
_CJK = re.compile(r"^[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]+$")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


@dataclass(frozen=True)
class Rendered:
    result: PdfResult
    text: str  # pdftotext, all whitespace removed


def _run(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


class _VisibleText(HTMLParser):
    """The text a reader sees: no head, script, style, template or SVG (a chart's labels are
    checked by eye in the rendered pages, and matplotlib writes them as paths)."""

    SKIP = frozenset({"head", "script", "style", "template", "svg", "title", "noscript"})

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if not self.depth:
            self.parts.append(data)


@pytest.fixture(scope="module")
def context_zh(report_inputs: ReportInputs) -> dict[str, Any]:
    return report_context(report_inputs, "zh")


@pytest.fixture(scope="module")
def pdf(context_zh: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    path = tmp_path_factory.mktemp("pdf") / "report.pdf"
    result = render_pdf(context_zh, path)
    print(f"PDF: {result.pages} pages, {path.stat().st_size / 1024:.0f} KB, {result.seconds:.2f} s")
    return Rendered(result, _squash(_run("pdftotext", "-enc", "UTF-8", str(path), "-")))


def test_write_pdf_returns_the_path(context_zh: dict[str, Any], tmp_path: Path) -> None:
    out = write_pdf(context_zh, tmp_path / "sub" / "r.pdf")
    assert out == tmp_path / "sub" / "r.pdf"
    assert out.read_bytes().startswith(b"%PDF-")
    assert "(A4)" in _run("pdfinfo", str(out))


def test_same_context_same_bytes(pdf: Rendered, context_zh: dict[str, Any], tmp_path: Path) -> None:
    """No date, no machine fonts: the same report typesets to the same bytes."""
    again = write_pdf(context_zh, tmp_path / "again.pdf")
    assert again.read_bytes() == pdf.result.path.read_bytes()
    assert b"CreationDate" not in again.read_bytes()


def test_pages_are_a4_and_numbered(pdf: Rendered) -> None:
    info = _run("pdfinfo", str(pdf.result.path))
    assert re.search(r"Page size:\s+595\.\d+ x 841\.\d+ pts \(A4\)", info), info
    assert pdf.result.pages >= 2
    # the first page (the title) has no footer; every other page says which it is
    pages = _run("pdftotext", "-enc", "UTF-8", str(pdf.result.path), "-").split("\f")
    assert "第1页" not in _squash(pages[0])
    for n, page in enumerate(pages[1 : pdf.result.pages], start=2):
        assert f"第{n}页" in _squash(page), (n, _squash(page)[-80:])


def test_english_footer(report_inputs: ReportInputs, tmp_path: Path) -> None:
    path = write_pdf(report_context(report_inputs, "en"), tmp_path / "en.pdf")
    assert "Page 2" in _run("pdftotext", "-f", "2", "-l", "2", str(path), "-")
    text = _squash(_run("pdftotext", str(path), "-"))
    assert not re.search(r"第\d+页", text)
    assert "Contents" in text and "Foreword" in text


def test_text_has_the_headings_and_every_number(pdf: Rendered, report_html: str) -> None:
    for heading in HEADINGS:
        assert heading in pdf.text, heading
    parser = _VisibleText()
    parser.feed(report_html)
    numbers = set(_NUMBER.findall(" ".join(parser.parts)))
    assert numbers, "the report has no numbers"
    missing = sorted(n for n in numbers if n not in pdf.text)
    assert not missing, f"numbers of the HTML not in the PDF: {missing[:20]}"


def test_table_of_contents_has_page_numbers(pdf: Rendered) -> None:
    """The contents on page 1 list every section with a leader and the page it starts on."""
    first = _run("pdftotext", "-layout", "-f", "1", "-l", "1", str(pdf.result.path), "-")
    # a leader of dots (spaced), a word joiner, the page number
    entries = re.findall(r"^\s*(\S.*?)\s*(?:\.\s*){5,}\u2060?(\d+)\s*$", first, re.M)
    assert [title for title, _ in entries][:2] == ["前言", "就业篇"], first[:1500]
    assert len(entries) >= 7
    pages = [int(n) for _, n in entries]
    assert pages == sorted(pages) and pages[0] > 1 and pages[-1] <= pdf.result.pages
    for title, n in entries:
        page = _run("pdftotext", "-f", n, "-l", n, str(pdf.result.path), "-")
        assert _squash(page).startswith(_squash(title)), (title, n, page[:80])


def test_numbers_link_to_their_provenance(pdf: Rendered, context_zh: dict[str, Any]) -> None:
    """Every survey figure's number is a link to its provenance entry (a named destination),
    and no link leaves the document."""
    data = pdf.result.path.read_bytes()
    ids = [p["id"] for p in context_zh["appendix"]["provenance"]]
    assert len(ids) > 100
    missing = [i for i in ids if f"(prov-{i})".encode() not in data]
    assert not missing, missing[:10]
    assert b"/URI" not in data


def test_a_link_to_nowhere_is_an_error(context_zh: dict[str, Any], tmp_path: Path) -> None:
    broken = {**context_zh, "published": [dict(context_zh["published"][0], href="#prov-NOPE")]}
    with pytest.raises(PdfError, match="prov-NOPE"):
        render_pdf(broken, tmp_path / "broken.pdf")
    assert not (tmp_path / "broken.pdf").exists()


def test_fonts_are_embedded_and_cjk_is_noto(pdf: Rendered) -> None:
    rows = _run("pdffonts", str(pdf.result.path)).splitlines()[2:]
    assert rows
    names = [row.split()[0] for row in rows]
    assert any("NotoSansCJKsc-Regular" in name for name in names), names
    for row in rows:
        # columns: name, type (1-3 words), encoding, emb, sub, uni, object, generation
        assert "Noto" in row.split()[0], f"not one of the report's fonts: {row}"
        emb = row.split()[-5]
        assert emb == "yes", f"font not embedded: {row}"
        assert "Type 3" not in row, f"bitmap fallback font: {row}"


def test_first_pages_render(pdf: Rendered, tmp_path: Path) -> None:
    last = min(3, pdf.result.pages)
    subprocess.run(
        [
            *("pdftoppm", "-png", "-r", "60", "-f", "1", "-l", str(last)),
            *(str(pdf.result.path), str(tmp_path / "p")),
        ],
        check=True,
        capture_output=True,
    )
    pngs = sorted(tmp_path.glob("p-*.png"))
    assert len(pngs) == last
    for png in pngs:
        img = np.asarray(Image.open(png).convert("L"))
        assert img.shape[0] > img.shape[1] > 400  # A4 portrait at 60 dpi: 496 x 702
        ink = float(np.mean(img < 128))
        assert 0.001 < ink < 0.5, (png.name, ink)


def _cjk_words(pdf_path: Path, limit: int = 6) -> list[tuple[int, str, tuple[float, ...]]]:
    """Up to ``limit`` words of at least 3 different CJK characters, from pdftotext's word
    boxes: (page, word, (x0, y0, x1, y1) in points)."""
    xml = _run("pdftotext", "-bbox", "-enc", "UTF-8", str(pdf_path), "-")
    words: list[tuple[int, str, tuple[float, ...]]] = []
    page = 0
    pattern = re.compile(
        r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">(.*?)</word>'
    )
    for line in xml.splitlines():
        if "<page " in line:
            page += 1
        match = pattern.search(line)
        if match and _CJK.match(match.group(5)) and len(set(match.group(5))) >= 3:
            words.append((page, match.group(5), tuple(float(v) for v in match.groups()[:4])))
            if len(words) == limit:
                break
    return words


def _cjk_cells_differ(pdf_path: Path, dpi: int = 150) -> list[tuple[str, float]]:
    """For a few all-CJK words of the PDF: the smallest share of pixels in which the images of
    two different characters of the word differ. Real glyphs differ (about 0.2 for 1 em cells);
    tofu does not: every missing glyph is drawn as the same .notdef box (0.0)."""
    out: list[tuple[str, float]] = []
    pages: dict[int, np.ndarray] = {}
    for page, word, (x0, y0, x1, y1) in _cjk_words(pdf_path):
        if page not in pages:
            png = subprocess.run(
                [
                    *("pdftoppm", "-gray", "-png", "-r", str(dpi)),
                    *("-f", str(page), "-l", str(page), str(pdf_path)),
                ],
                capture_output=True,
                check=True,
            ).stdout
            pages[page] = np.asarray(Image.open(io.BytesIO(png))) < 128
        img, scale = pages[page], dpi / 72
        width = (x1 - x0) * scale / len(word)
        top, bottom = round(y0 * scale), round(y1 * scale)
        cells = {
            char: img[top:bottom, round(x0 * scale + i * width) :][:, : int(width)]
            for i, char in enumerate(word)
        }
        chars = list(cells)
        diffs = [
            float(np.mean(cells[a] != cells[b]))
            for i, a in enumerate(chars)
            for b in chars[i + 1 :]
        ]
        out.append((word, min(diffs)))
    return out


def test_chinese_glyphs_are_not_tofu(pdf: Rendered) -> None:
    found = _cjk_cells_differ(pdf.result.path)
    assert len(found) >= 3, found
    tofu = [(word, diff) for word, diff in found if diff < 0.05]
    assert not tofu, f"Chinese drawn as identical boxes (missing font): {tofu}"


def test_tofu_check_catches_a_missing_cjk_font(context_zh: dict[str, Any], tmp_path: Path) -> None:
    """The check above, on the report typeset with DejaVu only: it finds the tofu. write_pdf
    itself refuses to run where the CJK font is missing (next test)."""
    path = tmp_path / "tofu.pdf"
    render_pdf(context_zh, path, font_paths=[Path("/usr/share/fonts/truetype/dejavu")])
    found = _cjk_cells_differ(path)
    assert found and all(diff < 0.05 for _, diff in found), found


def test_a_machine_without_the_cjk_font_is_refused(tmp_path: Path) -> None:
    """Where fontconfig knows no CJK font, the PDF writer says which package to install."""
    conf = tmp_path / "fonts.conf"
    conf.write_text(
        '<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig>'
        f"<dir>/usr/share/fonts/truetype/dejavu</dir><cachedir>{tmp_path}/fc</cachedir>"
        "</fontconfig>"
    )
    script = (
        "import sys; from pathlib import Path; import impactstudy.report.pdf as p\n"
        "try:\n    p.write_pdf({}, Path(sys.argv[1]))\n"
        "except p.PdfError as e:\n    print('refused:', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "none.pdf")],
        env={**os.environ, "FONTCONFIG_FILE": str(conf)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "refused:" in out and "fonts-noto-cjk" in out
    assert not (tmp_path / "none.pdf").exists()


def test_missing_font_is_a_clear_error() -> None:
    with pytest.raises(FontError, match="not installed"):
        cjk_font_file("No Such Font CJK")
    assert cjk_font_file().is_file()
    assert cjk_font_file(CJK_FAMILY).name.startswith("NotoSansCJK")


def test_charts_are_drawn(pdf: Rendered, context_zh: dict[str, Any]) -> None:
    """Every chart's caption is printed under a drawing: the pages with a chart caption show
    the charts' bar colours (charts are vector drawings, their labels outlines)."""
    notes = {context_zh["t"][k]["zh"] for k in ("waterfall_note", "survey_chart_note")}
    pages = _run("pdftotext", "-enc", "UTF-8", str(pdf.result.path), "-").split("\f")
    with_chart = [i + 1 for i, page in enumerate(pages) if any(n in _squash(page) for n in notes)]
    assert len(with_chart) >= 4, with_chart
    # impactstudy.report.charts.BLUE, as drawn (waterfall) and at alpha 0.8 on white (bars); a
    # page with a section heading alone (its rule is the same blue) has 0.2% of such pixels
    blues = np.array([[0x2B, 0x6C, 0xB0], [85, 137, 192]])
    for n in with_chart[:4]:
        png = subprocess.run(
            ["pdftoppm", "-png", "-r", "40", "-f", str(n), "-l", str(n), str(pdf.result.path)],
            capture_output=True,
            check=True,
        ).stdout
        rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
        near = (np.abs(rgb[:, :, None, :] - blues).sum(axis=3) < 40).any(axis=2)
        assert near.mean() > 0.01, (n, near.mean())
