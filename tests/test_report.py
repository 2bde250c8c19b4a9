"""The report stage: self-contained bilingual HTML, the estimates workbook, and the numbers in one
equal to the numbers in the other."""

from __future__ import annotations

import re
import warnings
from dataclasses import replace
from pathlib import Path

import openpyxl
import polars as pl
import pytest

from impactstudy.report import ReportFiles, ReportInputs, render_html, write_report
from impactstudy.report.fonts import CJK_FONT_FILES
from impactstudy.report.html import strings


@pytest.fixture(scope="module")
def inputs(report_inputs: ReportInputs) -> ReportInputs:
    return report_inputs


@pytest.fixture(scope="module")
def written(inputs: ReportInputs, tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files = write_report(inputs, tmp_path_factory.mktemp("report"), pdf=False)
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    if any(p.exists() for p in CJK_FONT_FILES):
        assert not missing, missing[:3]
    return files


@pytest.fixture(scope="module")
def html_zh(written: ReportFiles) -> str:
    return written.html.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def html_en(inputs: ReportInputs) -> str:
    return render_html(inputs, "en")


def test_files_written(written: ReportFiles) -> None:
    assert written.html.name == "report.html" and written.html.stat().st_size > 10_000
    assert written.xlsx.exists() and written.parquet.exists()
    assert pl.read_parquet(written.parquet).height > 0


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_self_contained(lang: str, html_zh: str, html_en: str) -> None:
    page = html_zh if lang == "zh" else html_en
    assert "<script" not in page.lower()
    refs = re.findall(r'\b(?:src|href)\s*=\s*["\']([^"\']*)["\']', page, flags=re.I)
    external = [r for r in refs if re.match(r"^\s*(https?:|//|ftp:|file:)", r, flags=re.I)]
    assert not external, external[:5]
    assert "@import" not in page and "url(http" not in page and "<link" not in page.lower()
    assert "@page" in page and "A4" in page  # printable
    assert 'name="viewport"' in page and "overflow-x: auto" in page  # phones


def test_section_headings_in_both_languages(
    html_zh: str, html_en: str, inputs: ReportInputs
) -> None:
    text = strings()
    sections = inputs.study.config.report.sections
    for name in sections:
        assert name in html_zh
        assert text["sections"][name]["en"] in html_en
    for key in ("foreword", "published_vs", "provenance", "audit"):
        assert text["text"][key]["zh"] in html_zh
        assert text["text"][key]["en"] in html_en
    assert inputs.study.config.study.title["zh"] in html_zh
    assert inputs.study.config.study.title["en"] in html_en
    assert "数据来源：国家统计局" in html_zh
    # table of contents: every anchor resolves to an id in the page
    ids = set(re.findall(r'(?<![-\w])id="([^"]+)"', html_zh))
    anchors = re.findall(r'href="#([^"]+)"', html_zh)
    assert anchors and all(a in ids for a in anchors)


def _published_section(page: str) -> str:
    start = page.index('<section id="published">')
    return page[start : page.index("</section>", start)]


def test_every_published_figure_in_table(html_zh: str, inputs: ReportInputs) -> None:
    published = inputs.estimates.overall().filter(pl.col("published_text").is_not_null())
    block = _published_section(html_zh)
    rows = set(re.findall(r'<tr data-id="([^"]+)"', block))
    assert set(published["indicator"]) == rows
    assert published.height > 30


def test_numbers_equal_workbook(written: ReportFiles, html_zh: str, html_en: str) -> None:
    wb = openpyxl.load_workbook(written.xlsx, read_only=True)
    ws = wb["user"]
    rows = ws.iter_rows(values_only=True)
    header = list(next(rows))
    ix = {c: i for i, c in enumerate(header)}
    values = {r[ix["indicator"]]: r[ix["estimate"]] for r in rows if r[ix["by"]] is None}
    checked = 0
    for ind in ("W077", "W088", "W134", "W181", "W230"):
        for page in (html_zh, html_en):
            m = re.search(rf'<tr data-id="{ind}" data-value="([^"]+)"', page)
            assert m is not None, ind
            # data-value is the exact double (as in estimates.parquet); openpyxl writes numbers
            # with 16 significant digits ("%.16g"), so the workbook holds that rounding of it
            assert float(f"{float(m.group(1)):.16g}") == values[ind]
            # the formatted value is in the same row, linked to its provenance
            row = page[m.start() : page.index("</tr>", m.start())]
            assert f'href="#prov-{ind}"' in row
            assert f"{values[ind]:.1f}%" in row
            checked += 1
    assert checked == 10
    assert 'id="prov-W077"' in html_zh
    sheets = set(wb.sheetnames)
    assert {"user", "oa_operator", "model_caict", "model_net", "sensitivity", "audit"} <= sheets
    wb.close()


def test_workbook_layout(written: ReportFiles, inputs: ReportInputs) -> None:
    wb = openpyxl.load_workbook(written.xlsx)
    for name in inputs.study.config.groups:
        ws = wb[name]
        assert ws.freeze_panes == "A2"
        assert ws.cell(1, 1).font.bold
        assert [c.value for c in ws[1]] == inputs.estimates.table.columns
    # an indicator over two groups appears in both sheets
    eco = {r[0] for r in wb["eco_provider"].iter_rows(min_row=2, values_only=True)}
    wecom = {r[0] for r in wb["wecom_provider"].iter_rows(min_row=2, values_only=True)}
    assert "W059" in eco and "W059" in wecom
    wb.close()


def test_charts_present(html_zh: str) -> None:
    n = html_zh.count("<svg") + html_zh.count('<img src="data:')
    assert n >= 7  # survey bars, waterfall, 2 tornados, history, province
    ids = re.findall(r'(?<![-\w])id="([^"]+)"', html_zh)
    assert len(ids) == len(set(ids))  # the charts' ids do not collide


def test_model_headline_both_presets(html_zh: str, inputs: ReportInputs) -> None:
    start = html_zh.index('<section id="foreword">')
    block = html_zh[start : html_zh.index("</section>", start)]
    for preset in ("caict", "net"):
        assert strings()["presets"][preset]["zh"] in block
        med = inputs.runs[preset].summary.filter(pl.col("quantity") == "jobs_driven")["median"]
        assert f'data-value="{med[0]!r}"' in block


def test_without_optional_inputs(inputs: ReportInputs) -> None:
    """No audit, no truth, no by-province estimates: the report still renders, saying so."""
    overall = inputs.estimates.table.filter(pl.col("by").is_null())
    bare = replace(
        inputs,
        audit=None,
        truth=None,
        estimates=replace(inputs.estimates, table=overall),
    )
    page = render_html(bare, "en")
    assert 'id="audit"' not in page
    assert strings()["text"]["by_province_missing"]["en"].split("(")[0] in page
    assert strings()["text"]["truth"]["en"] not in page


def test_unknown_language(inputs: ReportInputs) -> None:
    with pytest.raises(ValueError, match="language"):
        render_html(inputs, "fr")


def test_font_file_constant() -> None:
    assert all(isinstance(p, Path) for p in CJK_FONT_FILES)


def test_same_inputs_same_bytes(inputs: ReportInputs, written: ReportFiles, tmp_path: Path) -> None:
    """The page and the workbook are byte-identical when written again (no timestamps, no
    thread-order sums)."""
    again = write_report(inputs, tmp_path, lang="zh", pdf=False)
    assert again.html.read_bytes() == written.html.read_bytes()
    assert again.xlsx.read_bytes() == written.xlsx.read_bytes()
