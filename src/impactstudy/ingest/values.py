"""Cell parsers as Polars expressions: each turns a column of text into its typed column and a
mask of the cells that did not parse, so a whole column is checked at once."""

from __future__ import annotations

import re

import polars as pl

#: a date, alone or as a midnight timestamp (what a spreadsheet makes of a date)
_DATE = r"^(\d{4}-\d{2}-\d{2})(?:[T ]00:00(?::00(?:\.0+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
_BINARY = {
    "1": 1,
    "1.0": 1,
    "true": 1,
    "True": 1,
    "TRUE": 1,
    "0": 0,
    "0.0": 0,
    "false": 0,
    "False": 0,
    "FALSE": 0,
}


def text(column: str, dtype: pl.DataType) -> pl.Expr:
    """A column as text, trimmed, with empty cells null (exports write missing as "")."""
    e = pl.col(column)
    if dtype != pl.String():
        e = e.cast(pl.String)
    e = e.str.strip_chars()
    return pl.when(e == "").then(None).otherwise(e)


def integer(raw: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """Whole numbers; "12.0" (a spreadsheet's integer) is accepted."""
    value = raw.str.replace(r"^([+-]?\d+)\.0*$", "${1}").cast(pl.Int64, strict=False)
    return value, raw.is_not_null() & value.is_null()


def decimal(raw: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """Finite decimal numbers."""
    parsed = raw.cast(pl.Float64, strict=False)
    bad = raw.is_not_null() & (parsed.is_null() | ~parsed.is_finite())
    return pl.when(bad).then(None).otherwise(parsed), bad


def date(raw: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """ISO dates."""
    value = raw.str.extract(_DATE, 1).str.to_date("%Y-%m-%d", strict=False)
    return value, raw.is_not_null() & value.is_null()


#: date-time shapes with an offset (`%#z`: Z, +08:00 or +0800), then without one
_AWARE = ("%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M%#z")
_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M")
_UTC = ("%Y-%m-%dT%H:%M:%S%.fZ", "%Y-%m-%dT%H:%M:%S%.fUTC")


def instant_text(raw: pl.Expr) -> pl.Expr:
    """Date-time text with any space before its offset removed, ready for `instant`."""
    return raw.str.replace(r"\s+(Z|UTC|[+-]\d)", "${1}")


def instant(raw: pl.Expr, dtype: pl.Datetime, naive: str = "UTC") -> tuple[pl.Expr, pl.Expr]:
    """ISO timestamps as `dtype`; one without an offset is a wall-clock time in zone `naive`.

    Each accepted shape is tried as a format of its own and the first that parses wins: a
    handful of strict parses is far cheaper than taking the text apart with regexes. `raw` has
    been through `instant_text`."""
    s = raw
    unit = dtype.time_unit
    aware = [s.str.to_datetime(f, time_unit=unit, time_zone="UTC", strict=False) for f in _AWARE]
    utc = [
        s.str.to_datetime(f, time_unit=unit, strict=False).dt.replace_time_zone("UTC") for f in _UTC
    ]
    local = [s.str.to_datetime(f, time_unit=unit, strict=False) for f in _NAIVE]
    if naive == "UTC":
        placed = [e.dt.replace_time_zone("UTC") for e in local]
    else:
        placed = [
            e.dt.replace_time_zone(
                naive, ambiguous="earliest", non_existent="null"
            ).dt.convert_time_zone("UTC")
            for e in local
        ]
    value = pl.coalesce(*aware, *utc, *placed)
    return retime(value, dtype), raw.is_not_null() & value.is_null()


def retime(value: pl.Expr, dtype: pl.Datetime) -> pl.Expr:
    """A UTC instant in the time zone of `dtype` (none: the UTC wall time)."""
    if dtype.time_zone is None:
        return value.dt.replace_time_zone(None)
    if dtype.time_zone != "UTC":
        return value.dt.convert_time_zone(dtype.time_zone)
    return value


def typed_instant(
    column: str, source: pl.Datetime, dtype: pl.Datetime, naive: str = "UTC"
) -> pl.Expr:
    """An instant column already typed (Parquet, spreadsheet dates) converted to `dtype`; one
    without a time zone is a wall-clock time in zone `naive`."""
    e = pl.col(column)
    if source.time_zone is None:
        e = e.dt.replace_time_zone(naive, ambiguous="earliest", non_existent="null")
    e = e.dt.convert_time_zone("UTC")
    return retime(e.dt.cast_time_unit(dtype.time_unit), dtype)


def binary(raw: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """A 0/1 choice column."""
    value = raw.replace_strict(_BINARY, default=None, return_dtype=pl.Int8)
    return value, raw.is_not_null() & value.is_null()


def alternation(options: list[str]) -> str:
    """A regex matching any of `options`, longest first (labels may contain spaces)."""
    ordered = sorted(set(options), key=lambda s: (-len(s), s))
    return "|".join(re.escape(o) for o in ordered)
