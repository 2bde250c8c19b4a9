"""Our interchange format on disk: a folder with one Parquet and one CSV file per table and a
`manifest.json`.

Tables: `<group>` (the submissions), `<group>__<repeat>` (one per repeat of the form) and
`<group>__paradata` (when there is paradata). Field columns are headed with their KoboToolbox
group path (`basic/province`, `children/child_age`, choice columns `spending/pay_scenes/retail`);
meta columns keep their `_` names. The manifest names the format and its version, the study,
each group's form id and version, every table's rows, files and columns (with their dtypes, so
the CSV files read back to the same types), and the provenance of the responses.

The bytes depend only on the responses: no time of writing, JSON with sorted keys, Parquet
with fixed options (zstd level 3, no statistics), CSV with fixed formats.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import polars as pl

from impactstudy.forms.model import Form
from impactstudy.responses import (
    FLAGS,
    PARADATA_DTYPES,
    Responses,
    choice_codes,
    choice_column,
    repeat_names,
    table_fields,
    table_schema,
)
from impactstudy.study import Study

FORMAT = "impactstudy-responses"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PARADATA = "paradata"

_SIMPLE = {
    "String": pl.String(),
    "Boolean": pl.Boolean(),
    "Int8": pl.Int8(),
    "Int16": pl.Int16(),
    "Int32": pl.Int32(),
    "Int64": pl.Int64(),
    "UInt8": pl.UInt8(),
    "UInt16": pl.UInt16(),
    "UInt32": pl.UInt32(),
    "UInt64": pl.UInt64(),
    "Float32": pl.Float32(),
    "Float64": pl.Float64(),
    "Date": pl.Date(),
}
_DATETIME = re.compile(r"^Datetime\((ms|us|ns)(?:, ?(.+))?\)$")


def dtype_name(dtype: pl.DataType) -> str:
    """A column type as the manifest spells it."""
    if isinstance(dtype, pl.Datetime):
        tz = f", {dtype.time_zone}" if dtype.time_zone else ""
        return f"Datetime({dtype.time_unit}{tz})"
    name = type(dtype).__name__
    if name not in _SIMPLE:
        raise ValueError(f"column type {dtype} cannot be written to the interchange format")
    return name


def dtype_of(name: str) -> pl.DataType | None:
    """The column type a manifest names (None when it names none we know)."""
    if name in _SIMPLE:
        return _SIMPLE[name]
    m = _DATETIME.match(name)
    if m is None:
        return None
    return pl.Datetime(m.group(1), m.group(2))  # type: ignore[arg-type]


def disk_names(form: Form, repeat: str | None) -> dict[str, str]:
    """Column name in memory -> header on disk, for the field and choice columns of a table."""
    out: dict[str, str] = {}
    for f in table_fields(form, repeat):
        path = "/".join((*f.ancestors, f.name))
        out[f.name] = path
        if f.type == "select_multiple":
            for code in choice_codes(form, f):
                out[choice_column(f.name, code)] = f"{path}/{code}"
    return out


def conform(frame: pl.DataFrame, form: Form, repeat: str | None, what: str) -> pl.DataFrame:
    """A table in the contract's column order: missing fields null, choice columns made from the
    codes when absent; other `_` columns kept after the meta, `_flags` last."""
    schema = table_schema(form, repeat)
    unknown = [c for c in frame.columns if c not in schema and not c.startswith("_")]
    if unknown:
        raise ValueError(
            f"{what}: columns not in questionnaire {form.form_id}: {', '.join(unknown)}"
        )
    fields = {f.name: f for f in table_fields(form, repeat)}
    meta = [c for c in schema if c not in disk_names(form, repeat)]
    extra = [c for c in frame.columns if c not in schema and c != FLAGS]
    exprs: list[pl.Expr] = []
    for name in [*meta, *extra, *disk_names(form, repeat)]:
        if name in frame.columns:
            untyped = frame.schema[name] == pl.Null() and name in schema
            exprs.append(pl.col(name).cast(schema[name]) if untyped else pl.col(name))
            continue
        field_name, _, code = name.partition("/")
        if code and field_name in frame.columns and fields[field_name].type == "select_multiple":
            value = pl.col(field_name)
            tokens = value.str.split(" ")
            exprs.append(
                pl.when(value.is_null())
                .then(None)
                .otherwise(tokens.list.contains(code).cast(pl.Int8))
                .alias(name)
            )
            continue
        exprs.append(pl.lit(None, dtype=schema[name]).alias(name))
    if FLAGS in frame.columns:
        exprs.append(pl.col(FLAGS))
    return frame.select(exprs)


def _csv_ready(frame: pl.DataFrame) -> pl.DataFrame:
    """Instants as ISO 8601 text with their offset, at the precision of their type."""
    digits = {"ms": 3, "us": 6, "ns": 9}
    exprs = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.Datetime):
            fmt = f"%Y-%m-%dT%H:%M:%S%.{digits[dtype.time_unit]}f"
            fmt += "%:z" if dtype.time_zone else ""
            exprs.append(pl.col(name).dt.to_string(fmt))
        else:
            exprs.append(pl.col(name))
    return frame.select(exprs)


def _write_table(
    frame: pl.DataFrame, headers: dict[str, str], stem: Path, written: list[Path]
) -> dict[str, Any]:
    columns = [
        {"name": headers.get(c, c), "column": c, "dtype": dtype_name(t)}
        for c, t in frame.schema.items()
    ]
    disk = frame.rename({c: headers[c] for c in frame.columns if c in headers})
    parquet, text = stem.with_suffix(".parquet"), stem.with_suffix(".csv")
    disk.write_parquet(parquet, compression="zstd", compression_level=3, statistics=False)
    _csv_ready(disk).write_csv(text, line_terminator="\n")
    written += [parquet, text]
    return {"rows": frame.height, "files": [parquet.name, text.name], "columns": columns}


def _jsonable(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: v for k, v in dataclasses.asdict(value).items() if v not in (None, (), "")}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=str) if isinstance(value, set | frozenset) else list(value)
    return str(value)


def write_responses(responses: Responses, study: Study, out_dir: Path) -> list[Path]:
    """Write every group's tables and the manifest into `out_dir`; the paths written, in order.

    Raises ValueError for responses that do not fit the study (another study, an unknown group,
    repeat or column)."""
    if responses.study_id != study.id:
        raise ValueError(f"responses of study {responses.study_id!r}, not of {study.id!r}")
    unknown = sorted(set(responses.groups) - set(study.groups))
    if unknown:
        raise ValueError(f"groups not in study {study.id}: {', '.join(unknown)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    groups: dict[str, Any] = {}
    for gid in study.groups:
        if gid not in responses.groups:
            continue
        gr = responses.groups[gid]
        form = study.groups[gid].form
        repeats = repeat_names(form)
        stray = sorted(set(gr.repeats) - set(repeats))
        if stray or PARADATA in repeats:
            raise ValueError(
                f"group {gid}: repeats not in the form: {', '.join(stray or [PARADATA])}"
            )
        entry: dict[str, Any] = {
            "form_id": form.form_id,
            "form_version": form.version,
            "rows": len(gr),
            "submissions": _write_table(
                conform(gr.submissions, form, None, gid),
                disk_names(form, None),
                out_dir / gid,
                written,
            ),
            "repeats": {},
        }
        for r in repeats:
            child = gr.repeats.get(r)
            if child is None:
                child = pl.DataFrame(schema=table_schema(form, r))
            entry["repeats"][r] = _write_table(
                conform(child, form, r, f"{gid} repeat {r}"),
                disk_names(form, r),
                out_dir / f"{gid}__{r}",
                written,
            )
        if gr.paradata is not None:
            missing = [c for c in PARADATA_DTYPES if c not in gr.paradata.columns]
            if missing:
                raise ValueError(f"group {gid}: paradata lacks {', '.join(missing)}")
            entry["paradata"] = _write_table(
                gr.paradata, {}, out_dir / f"{gid}__{PARADATA}", written
            )
        groups[gid] = entry
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "study": study.id,
        "groups": groups,
        "provenance": responses.provenance,
    }
    path = out_dir / MANIFEST
    text = json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=False, default=_jsonable)
    path.write_text(text + "\n", encoding="utf-8")
    written.append(path)
    return written
