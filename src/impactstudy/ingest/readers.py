"""Files -> raw tables: CSV (UTF-8, `,` as ODK Central writes it or `;` as KoboToolbox does),
XLSX (KoboToolbox: the submissions on the first sheet, one sheet per repeat), Parquet (ours),
and ODK Central's zip of CSVs. Every cell is kept as found; typing is `convert`'s job."""

from __future__ import annotations

import csv
import datetime as dt
import io
import zipfile
from pathlib import Path
from typing import Any

import polars as pl

from impactstudy.ingest.convert import ROW, RawTable
from impactstudy.ingest.errors import IngestError
from impactstudy.ingest.layout import Source
from impactstudy.problems import Problem

_SEPARATORS = (",", ";", "\t")


def _fail(message: str, file: str, code: str, **place: Any) -> IngestError:
    return IngestError([Problem(message, file, code=code, **place)])


def decode(data: bytes, file: str) -> str:
    """UTF-8 text (a byte-order mark is dropped); anything else is refused, naming GBK when the
    bytes read as GB18030, the usual encoding of Chinese files saved by Excel or 问卷星."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        row = data[: e.start].count(b"\n") + 1
        try:
            data.decode("gb18030")
        except UnicodeDecodeError:
            why = f"byte 0x{data[e.start]:02x} cannot start a UTF-8 character"
        else:
            why = "it is encoded as GBK (GB18030), as Excel and 问卷星 save Chinese text"
        raise _fail(
            f"not UTF-8: {why}; save the file as UTF-8 (Excel: CSV UTF-8) and read it again",
            file,
            "encoding",
            row=row,
        ) from None
    return text.removeprefix("\ufeff")


def _header(text: str) -> tuple[list[str], str]:
    """The header record and the separator that splits it into the most columns."""
    best: tuple[list[str], str] = ([], ",")
    for sep in _SEPARATORS:
        reader = csv.reader(io.StringIO(text), delimiter=sep)
        first = next(reader, [])
        if len(first) > len(best[0]):
            best = (first, sep)
    return best


def _checked(columns: list[str], file: str, sheet: str | None = None) -> None:
    problems = []
    seen: set[str] = set()
    for i, c in enumerate(columns, start=1):
        if not c.strip():
            problems.append(Problem(f"column {i} has no header", file, sheet, row=1, code="format"))
        elif c in seen:
            problems.append(
                Problem(
                    "duplicate column: the header appears twice",
                    file,
                    sheet,
                    row=1,
                    column=c,
                    code="duplicate_column",
                )
            )
        seen.add(c)
    if problems:
        raise IngestError(problems)


def read_csv(data: bytes, file: str) -> RawTable:
    """One CSV table; every cell as text."""
    text = decode(data, file)
    columns, sep = _header(text)
    if not columns:
        raise _fail("the file is empty: no header row", file, "format")
    _checked(columns, file)
    try:
        frame = pl.read_csv(
            text.encode("utf-8"),
            separator=sep,
            infer_schema=False,
            raise_if_empty=False,
            quote_char='"',
        )
    except pl.exceptions.PolarsError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise _fail(f"not a well-formed CSV table: {first}", file, "format") from None
    return RawTable(_numbered(frame, 2), file)


def _numbered(frame: pl.DataFrame, first: int) -> pl.DataFrame:
    return frame.with_row_index(ROW, offset=first).with_columns(pl.col(ROW).cast(pl.Int64))


def _cell(v: object) -> str | None:
    """A spreadsheet cell as the text an export would have written."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    if isinstance(v, dt.datetime):
        return v.isoformat()
    if isinstance(v, dt.date | dt.time):
        return v.isoformat()
    return str(v)


def read_xlsx(path: Path, file: str) -> list[RawTable]:
    """Every sheet of a workbook, in order; cells as text (numbers and dates as ISO text)."""
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises many types for a broken workbook
        raise _fail(f"not a readable XLSX workbook: {e}", file, "unreadable") from None
    tables = []
    try:
        for sheet in book.worksheets:
            rows = sheet.iter_rows(values_only=True)
            head = next(rows, None)
            if head is None:
                continue
            width = len(head)
            while width and head[width - 1] in (None, ""):
                width -= 1
            columns = [_cell(h) or "" for h in head[:width]]
            _checked(columns, file, sheet.title)
            cells: list[list[str | None]] = [[] for _ in columns]
            for record in rows:
                texts = [_cell(v) for v in record[:width]]
                if not any(texts):
                    continue
                texts += [None] * (width - len(texts))
                for j, v in enumerate(texts):
                    cells[j].append(v)
            frame = pl.DataFrame(
                {c: pl.Series(c, v, dtype=pl.String) for c, v in zip(columns, cells, strict=True)}
            )
            tables.append(RawTable(_numbered(frame, 2), file, sheet.title))
    finally:
        book.close()
    return tables


def read_parquet(path: Path, file: str) -> RawTable:
    """A Parquet table (ours), typed as written; rows numbered from 1."""
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as e:
        raise _fail(f"not a readable Parquet file: {e}", file, "unreadable") from None
    return RawTable(_numbered(frame, 1), file)


def read_zip(path: Path, file: str) -> dict[str, RawTable]:
    """The CSV tables of an ODK Central export zip, by member name (media files skipped)."""
    try:
        with zipfile.ZipFile(path) as z:
            return {
                name: read_csv(z.read(name), f"{file}:{name}")
                for name in z.namelist()
                if name.lower().endswith(".csv") and "/" not in name.strip("/")
            }
    except zipfile.BadZipFile as e:
        raise _fail(f"not a readable zip file: {e}", file, "unreadable") from None


def source_of(columns: list[str]) -> Source | None:
    """Which tool wrote a table, from its meta columns."""
    have = set(columns)
    if "_uuid" in have and ("_submitted" in have or "_mode" in have):
        return "impactstudy"
    if "_parent_uuid" in have and "_index" in have:
        return "impactstudy"
    central = {"SubmissionDate", "PARENT_KEY", "SubmitterID", "AttachmentsExpected", "FormVersion"}
    if len(central & have) >= (1 if "KEY" in have else 2):
        return "odk"
    if {"_uuid", "_submission_time", "_id", "_parent_index"} & have:
        return "kobo"
    return None
