"""`write_report`: the report's files in one folder."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from impactstudy.report.html import render_html
from impactstudy.report.inputs import ReportInputs
from impactstudy.report.pdf import write_pdf
from impactstudy.report.xlsx import write_xlsx

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
    """Write ``report.html`` (in ``lang``), ``report.pdf`` (the same page printed, unless
    ``pdf=False``), ``estimates.xlsx`` and ``estimates.parquet`` in the folder ``out``
    (created). With an ``executor`` (e.g. `impactstudy.helper.Helper`) the PDF is printed there
    while this process writes the workbook."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    page = render_html(inputs, lang)
    html = root / "report.html"
    html.write_text(page, encoding="utf-8")
    printing = (
        executor.submit(write_pdf, page, root / "report.pdf", lang=lang)
        if pdf and executor is not None
        else None
    )
    xlsx = write_xlsx(inputs, root / "estimates.xlsx")
    parquet = root / "estimates.parquet"
    inputs.estimates.table.write_parquet(parquet)
    if printing is not None:
        printed: Path | None = printing.result()
    else:
        printed = write_pdf(page, root / "report.pdf", lang=lang) if pdf else None
    return ReportFiles(html=html, xlsx=xlsx, parquet=parquet, pdf=printed)
