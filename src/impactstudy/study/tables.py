"""Strict reading of the study's CSV files: frames and history.

Each kind of table has fixed columns. Bad encodings, missing or unknown columns, blank
sources, numbers that are not numbers and duplicate keys are problems naming file, row and
column. Row numbers count the header as row 1, as a spreadsheet shows them.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from impactstudy.problems import Problem


@dataclass(frozen=True)
class Column:
    name: str
    kind: str = "text"  # text | number | int | nonempty
    optional: bool = False


@dataclass
class Table:
    file: str
    columns: list[str]
    rows: list[dict[str, str]]
    #: spreadsheet row number of each row (header = 1)
    row_numbers: list[int]


def read_text(path: Path, shown: str, problems: list[Problem]) -> str | None:
    """A UTF-8 text file (BOM allowed); None and a problem if missing, empty or not UTF-8."""
    if not path.is_file():
        problems.append(Problem("file not found", file=shown))
        return None
    data = path.read_bytes()
    if not data.strip():
        problems.append(Problem("the file is empty", file=shown))
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        hint = ""
        try:
            data.decode("gb18030")
            hint = " It looks like GBK/GB18030 (common for files saved by Excel in China):"
            hint += " save it as UTF-8."
        except UnicodeDecodeError:
            pass
        problems.append(
            Problem(
                f"not UTF-8 (byte {exc.start + 1} cannot be decoded).{hint}", file=shown, row=line
            )
        )
        return None


def read_table(
    path: Path,
    shown: str,
    columns: Sequence[Column],
    problems: list[Problem],
    *,
    extra_prefixes: Sequence[str] = (),
) -> Table | None:
    """Read a CSV with exactly `columns` (optional ones may be absent); check each cell kind."""
    text = read_text(path, shown, problems)
    if text is None:
        return None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except (StopIteration, csv.Error) as exc:
        problems.append(Problem(f"cannot read the header: {exc}", file=shown, row=1))
        return None
    known = {c.name for c in columns}
    start = len(problems)
    missing = [c.name for c in columns if not c.optional and c.name not in header]
    if missing:
        problems.append(
            Problem(
                f"missing column(s) {', '.join(missing)}; the columns are "
                f"{', '.join(c.name for c in columns)}",
                file=shown,
                row=1,
            )
        )
    for h in header:
        if h not in known and not any(h.startswith(p) for p in extra_prefixes):
            problems.append(
                Problem(
                    f"unknown column {h!r}; the columns are {', '.join(c.name for c in columns)}",
                    file=shown,
                    row=1,
                    column=h,
                )
            )
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        problems.append(Problem(f"column(s) {', '.join(dup)} appear twice", file=shown, row=1))
    if len(problems) > start:
        return None
    rows: list[dict[str, str]] = []
    numbers: list[int] = []
    kinds = {c.name: c for c in columns}
    line_no = 1
    try:
        for line_no, raw in enumerate(reader, start=2):
            if not any(cell.strip() for cell in raw):
                continue
            if len(raw) != len(header):
                problems.append(
                    Problem(
                        f"{len(raw)} cells, but the header has {len(header)}",
                        file=shown,
                        row=line_no,
                    )
                )
                continue
            row = {h: cell.strip() for h, cell in zip(header, raw, strict=True)}
            for name, value in row.items():
                col = kinds.get(name)
                if col is None:
                    continue
                msg = _check_cell(col, value)
                if msg:
                    problems.append(Problem(msg, file=shown, row=line_no, column=name))
            rows.append(row)
            numbers.append(line_no)
    except csv.Error as exc:
        # the record that could not be read is the one after the last good one
        problems.append(
            Problem(
                f"malformed CSV: {exc} (check the quotes from this row on)",
                file=shown,
                row=line_no + 1,
            )
        )
        return None
    if not rows:
        problems.append(Problem("the table has a header but no rows", file=shown))
    return Table(shown, header, rows, numbers)


def _check_cell(col: Column, value: str) -> str | None:
    if col.kind == "nonempty" and not value:
        return f"{col.name} must not be blank"
    if col.kind in ("number", "int"):
        if not value:
            return f"{col.name} must not be blank"
        try:
            x = float(value)
        except ValueError:
            return f"{value!r} is not a number"
        if not math.isfinite(x):
            return f"{value!r} is not a finite number"
        if col.kind == "int" and not x.is_integer():
            return f"{value!r} is not a whole number"
    return None


def duplicates(table: Table, keys: Sequence[str], problems: list[Problem]) -> None:
    seen: dict[tuple[str, ...], int] = {}
    for row, n in zip(table.rows, table.row_numbers, strict=True):
        key = tuple(row.get(k, "") for k in keys)
        if key in seen:
            problems.append(
                Problem(
                    f"duplicate {'/'.join(keys)} {'/'.join(key)!r} (first at row {seen[key]})",
                    file=table.file,
                    row=n,
                    column=keys[-1],
                )
            )
        else:
            seen[key] = n
