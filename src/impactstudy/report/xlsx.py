"""The estimates workbook: one sheet per respondent group, the model per preset, the tornado and
the audit; header row bold and frozen."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from zipfile import ZIP_DEFLATED, ZipFile, ZipInfo

import polars as pl
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from impactstudy.report.inputs import ReportInputs

__all__ = ["sheets", "write_sheets", "write_xlsx"]

_BOLD = Font(bold=True)


def _flat(frame: pl.DataFrame) -> pl.DataFrame:
    """List columns joined with '; ' (a cell holds one value)."""
    lists = [c for c, t in frame.schema.items() if isinstance(t, pl.List)]
    return frame.with_columns(pl.col(c).list.join("; ") for c in lists) if lists else frame


def _sheet(wb: Workbook, title: str, frame: pl.DataFrame) -> None:
    ws: WriteOnlyWorksheet = wb.create_sheet(title[:31])
    ws.freeze_panes = "A2"
    header = []
    for name in frame.columns:
        cell = WriteOnlyCell(ws, value=name)
        cell.font = _BOLD
        header.append(cell)
    ws.append(header)
    for row in _flat(frame).iter_rows():
        ws.append(list(row))


def _group_rows(table: pl.DataFrame, group: str) -> pl.DataFrame:
    """The rows of one group (an indicator over several groups appears in each)."""
    return table.filter(pl.col("groups").str.split(",").list.contains(group))


def sheets(inputs: ReportInputs) -> list[tuple[str, pl.DataFrame]]:
    """The workbook's sheets, in order: each group's estimates, the model per preset, the
    tornado, the audit."""
    out = []
    table = inputs.estimates.table
    groups: Iterable[str] = inputs.study.config.groups
    for g in groups:
        out.append((g, _group_rows(table, g)))
    for preset, run in inputs.runs.items():
        out.append((f"model_{preset}", run.summary))
    if inputs.runs:
        sens = pl.concat(
            [
                run.sensitivity.select(pl.lit(p).alias("preset"), pl.all())
                for p, run in inputs.runs.items()
            ]
        )
        out.append(("sensitivity", sens))
    if inputs.audit is not None:
        out.append(("audit", inputs.audit))
    return out


def write_sheets(tables: Iterable[tuple[str, pl.DataFrame]], path: Path) -> Path:
    """Write the sheets as a workbook at ``path`` (a second for the WeChat study's 94,000 cells:
    another process can do it while the report is typeset)."""
    wb = Workbook(write_only=True)
    for title, frame in tables:
        _sheet(wb, title, frame)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)
    _same_bytes(path)
    return path


def write_xlsx(inputs: ReportInputs, path: Path) -> Path:
    """Write ``estimates.xlsx`` at ``path``."""
    return write_sheets(sheets(inputs), path)


#: the timestamp written into every workbook (its properties and its zip entries)
FIXED_TIME = "2000-01-01T00:00:00Z"


def _same_bytes(path: Path) -> None:
    """Same inputs, same bytes: openpyxl stamps the save time into docProps/core.xml and the zip
    entries carry the time they were written; both are replaced by `FIXED_TIME`."""
    with ZipFile(path) as archive:
        entries = [(info, archive.read(info.filename)) for info in archive.infolist()]
    stamp = FIXED_TIME.encode()
    tmp = path.with_suffix(".tmp")
    with ZipFile(tmp, "w", ZIP_DEFLATED) as out:
        for info, data in entries:
            if info.filename == "docProps/core.xml":
                data = re.sub(
                    rb"(<dcterms:(created|modified)[^>]*>)[^<]*(</dcterms:\2>)",
                    rb"\g<1>" + stamp + rb"\g<3>",
                    data,
                )
            fixed = ZipInfo(info.filename, date_time=(2000, 1, 1, 0, 0, 0))
            fixed.compress_type = ZIP_DEFLATED
            fixed.external_attr = info.external_attr
            out.writestr(fixed, data)
    tmp.replace(path)
