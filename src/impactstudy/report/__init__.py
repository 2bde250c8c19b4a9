"""Report: the bilingual report (HTML, XLSX; PDF from the same HTML) in which every number carries
its interval and provenance.

``write_report(inputs, out, lang="zh")`` writes ``report.html``, ``estimates.xlsx`` and
``estimates.parquet``; ``render_html(inputs, lang)`` gives the page the PDF writer prints.
"""

from impactstudy.report.html import render_html
from impactstudy.report.inputs import ReportInputs
from impactstudy.report.writer import ReportFiles, write_report

__all__ = ["ReportFiles", "ReportInputs", "render_html", "write_report"]
