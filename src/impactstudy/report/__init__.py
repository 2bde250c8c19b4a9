"""Report: the bilingual report (HTML, PDF, XLSX) in which every number carries its interval and
provenance.

``write_report(inputs, out, lang="zh")`` writes ``report.html``, ``report.pdf`` (Typst, embedded
Noto Sans CJK), ``estimates.xlsx`` and ``estimates.parquet``. The page and the PDF are made from
one context, ``report_context(inputs, lang)``: ``html_page(context)`` and ``write_pdf(context,
path)``.
"""

from impactstudy.report.html import html_page, render_html, report_context
from impactstudy.report.inputs import ReportInputs
from impactstudy.report.pdf import PdfError, write_pdf
from impactstudy.report.writer import ReportFiles, write_report

__all__ = [
    "PdfError",
    "ReportFiles",
    "ReportInputs",
    "html_page",
    "render_html",
    "report_context",
    "write_pdf",
    "write_report",
]
