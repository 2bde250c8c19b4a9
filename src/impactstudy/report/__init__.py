"""Report: the bilingual report (HTML, XLSX; PDF from the same HTML) in which every number carries
its interval and provenance.

``write_report(inputs, out, lang="zh")`` writes ``report.html``, ``report.pdf`` (WeasyPrint,
embedded Noto Sans CJK), ``estimates.xlsx`` and ``estimates.parquet``; ``render_html(inputs,
lang)`` gives the page that ``write_pdf`` prints.
"""

from impactstudy.report.html import render_html
from impactstudy.report.inputs import ReportInputs
from impactstudy.report.pdf import PdfError, write_pdf
from impactstudy.report.writer import ReportFiles, write_report

__all__ = ["PdfError", "ReportFiles", "ReportInputs", "render_html", "write_pdf", "write_report"]
