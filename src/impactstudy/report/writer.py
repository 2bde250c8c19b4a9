"""`write_report`: the report's files in one folder."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from impactstudy.report.html import html_page, report_context
from impactstudy.report.inputs import ReportInputs
from impactstudy.report.pdf import write_pdf
from impactstudy.report.xlsx import sheets, write_sheets

__all__ = ["ReportFiles", "write_report"]


@dataclass(frozen=True)
class ReportFiles:
    """The paths written by `write_report`."""

    html: Path
    xlsx: Path
    parquet: Path
    pdf: Path | None = None


def write_report(
    inputs: ReportInputs,
    out: Path | str,
    *,
    lang: str = "zh",
    pdf: bool = True,
    executor: Executor | None = None,
) -> ReportFiles:
    """Write ``report.html`` (in ``lang``), ``report.pdf`` (the same report typeset, unless
    ``pdf=False``), ``estimates.xlsx`` and ``estimates.parquet`` in the folder ``out``
    (created). With an ``executor`` (e.g. `impactstudy.helper.Helper`) the workbook is
    written there while this process draws the charts and typesets the page and the PDF."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    workbook = root / "estimates.xlsx"
    writing = executor.submit(write_sheets, sheets(inputs), workbook) if executor else None
    context = report_context(inputs, lang)
    html = root / "report.html"
    html.write_text(html_page(context), encoding="utf-8")
    printed = write_pdf(context, root / "report.pdf") if pdf else None
    parquet = root / "estimates.parquet"
    inputs.estimates.table.write_parquet(parquet)
    xlsx = writing.result() if writing is not None else write_sheets(sheets(inputs), workbook)
    return ReportFiles(html=html, xlsx=xlsx, parquet=parquet, pdf=printed)
