"""Ingest: submissions from files into Responses, and Responses to files.

`read_responses(path, study)` reads our own interchange folder (see `native`), one table of it,
or a real export of one questionnaire: ODK Central's CSV export (its zip, or the main CSV with
its `<form>-<repeat>.csv` files beside it) and KoboToolbox's CSV and XLSX exports, headed with
XML names or with labels in any of the form's languages. `write_responses` writes the folder.

Every problem in the files (encoding, unknown or missing columns, values outside a choice list
or of the wrong type, duplicate instanceIDs, repeat rows without a submission) is collected and
raised at once as `IngestError`, each naming its file, row and column. With `lenient=True` the
bad cells are null, each row's problems are in its `_flags` column and the problems are returned
in `provenance["problems"]`; only problems that leave no table to read still raise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from impactstudy.forms.model import Form
from impactstudy.ingest.convert import (
    RawTable,
    Table,
    check_uuids,
    convert_table,
    finish,
    link_repeat,
)
from impactstudy.ingest.errors import FATAL, IngestError
from impactstudy.ingest.layout import Source, Target, headers
from impactstudy.ingest.native import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    PARADATA,
    dtype_of,
    write_responses,
)
from impactstudy.ingest.readers import read_csv, read_parquet, read_xlsx, read_zip, source_of
from impactstudy.problems import Problem
from impactstudy.responses import (
    FLAGS,
    PARADATA_DTYPES,
    GroupResponses,
    Responses,
    repeat_names,
    table_schema,
)
from impactstudy.study import Study

__all__ = ["FORMAT", "FORMAT_VERSION", "IngestError", "read_responses", "write_responses"]

SOURCE_NAMES: dict[Source, str] = {
    "impactstudy": "impactstudy",
    "odk": "ODK Central CSV export",
    "kobo": "KoboToolbox export",
}
_UUID_HEADER: dict[Source, str] = {"impactstudy": "_uuid", "odk": "odk:KEY", "kobo": "kobo:_uuid"}
#: one table's layout from a manifest: in-memory name -> dtype, in order
Columns = dict[str, pl.DataType]


def read_responses(
    path: Path,
    study: Study,
    *,
    lenient: bool = False,
    group: str | None = None,
    timezone: str = "UTC",
) -> Responses:
    """Read submissions into Responses: our folder (manifest.json) or one table of it, or an
    ODK Central / KoboToolbox export of one questionnaire (which one: `group`, else the file's
    form id or columns).

    `timezone`: where date-time answers written without a UTC offset were recorded (KoboToolbox
    XLSX exports that store dates as dates drop the offset); submission times stay UTC."""
    path = Path(path)
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise IngestError(
            [Problem(f"unknown time zone {timezone!r}", str(path), code="format")]
        ) from None
    if path.is_dir():
        return _read_folder(path, study, lenient)
    if not path.is_file():
        raise IngestError([Problem("no such file or folder", str(path), code="unreadable")])
    return _read_export(path, study, lenient, group, timezone)


def _raise_or_keep(problems: list[Problem], lenient: bool) -> None:
    """Raise when a problem stops the read; problems in file, row order either way."""
    problems.sort(key=lambda p: (p.file or "", p.sheet or "", p.row or 0))
    if any(p.code in FATAL for p in problems) or (problems and not lenient):
        raise IngestError(problems)


def _empty(form: Form, repeat: str | None, columns: Columns | None, lenient: bool) -> pl.DataFrame:
    schema = dict(columns or table_schema(form, repeat))
    if lenient:
        schema[FLAGS] = pl.String()
    return pl.DataFrame(schema=schema)


def _read_group(
    gid: str,
    form: Form,
    source: Source,
    root: RawTable,
    repeats: dict[str, RawTable],
    lenient: bool,
    layouts: dict[str | None, Columns] | None = None,
    naive: str = "UTC",
) -> tuple[GroupResponses | None, list[Problem], str | None]:
    """One questionnaire's tables converted; None when a table cannot be read at all."""
    layouts = layouts or {}
    top = convert_table(root, form, None, source, layouts.get(None), naive)
    if any(p.code in FATAL for p in top.problems):
        return None, top.problems, top.language
    if source == "kobo" and repeats and "kobo:_index" not in top.frame.columns:
        top.problem(
            "no such column: it holds the number the repeat sheets' _parent_index refers to",
            "missing_column",
            "_index",
        )
        return None, top.problems, top.language
    check_uuids(top, top.header_of.get(_UUID_HEADER[source], "_uuid"))
    children: dict[str, pl.DataFrame] = {}
    done: list[Table] = []
    for r in repeat_names(form):
        raw = repeats.get(r)
        if raw is None:
            children[r] = _empty(form, r, layouts.get(r), lenient)
            continue
        child = convert_table(raw, form, r, source, layouts.get(r), naive)
        done.append(child)
        if any(p.code in FATAL for p in child.problems):
            continue
        link_repeat(child, top, source, r, root.file)
        children[r] = finish(child, layouts.get(r) or table_schema(form, r), lenient)
    submissions = finish(top, layouts.get(None) or table_schema(form), lenient)
    problems = top.problems + [p for t in done for p in t.problems]
    if any(p.code in FATAL for p in problems):
        return None, problems, top.language
    return GroupResponses(gid, submissions, children), problems, top.language


def _which_group(study: Study, stem: str, root: RawTable, source: Source) -> str:
    """The questionnaire a file holds: by group id or form id in its name, else by columns."""
    by_form = {g.form.form_id: gid for gid, g in study.groups.items()}
    for name in (stem, stem.split("__")[0]):
        if name in study.groups:
            return name
        if name in by_form:
            return by_form[name]
    if root.sheet is not None:
        for gid, g in study.groups.items():
            title, sheet = g.form.title, root.sheet.strip()
            # KoboToolbox cuts a long title to 31 characters, ending it with "..."
            if title and (sheet in (title, title[:31]) or sheet == title[:28] + "..."):
                return gid
    scores: dict[str, int] = {}
    for gid, g in study.groups.items():
        h = headers(g.form, None, source)
        scores[gid] = sum(
            1
            for c in root.frame.columns
            if isinstance(t := h.resolve(c), Target) and t.kind in ("field", "choice")
        )
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    if not ranked or ranked[0][1] == 0 or (len(ranked) > 1 and ranked[1][1] == ranked[0][1]):
        raise IngestError(
            [
                Problem(
                    "cannot tell which questionnaire the file holds (its name is no form id "
                    f"and its columns fit {'several' if ranked and ranked[0][1] else 'none'}); "
                    f"name the group, one of: {', '.join(study.groups)}",
                    root.file,
                    root.sheet,
                    code="unknown_group",
                )
            ]
        )
    return ranked[0][0]


def _sheet_repeats(form: Form, sheets: list[RawTable]) -> tuple[dict[str, RawTable], list[str]]:
    """KoboToolbox names a repeat's sheet after the repeat (cut to 31 characters); else the
    sheet's columns tell."""
    names = repeat_names(form)
    found: dict[str, RawTable] = {}
    strays: list[str] = []
    for sheet in sheets:
        title = (sheet.sheet or "").strip()
        match = next((r for r in names if title in (r, r[:31]) or title.startswith(r[:28])), None)
        if match is None:
            scores = {
                r: sum(
                    1
                    for c in sheet.frame.columns
                    if isinstance(t := headers(form, r, "kobo").resolve(c), Target)
                    and t.kind in ("field", "choice")
                )
                for r in names
            }
            best = max(scores.items(), key=lambda kv: kv[1], default=(None, 0))
            match = best[0] if best[1] else None
        if match is None or match in found:
            strays.append(title)
        else:
            found[match] = sheet
    return found, strays


def _read_export(
    path: Path, study: Study, lenient: bool, group: str | None, timezone: str
) -> Responses:
    file = path.name
    suffix = path.suffix.lower()
    siblings: dict[str, RawTable] = {}
    sheets: list[RawTable] = []
    if suffix == ".zip":
        members = read_zip(path, file)
        roots = [n for n, t in members.items() if "PARENT_KEY" not in t.frame.columns]
        if len(roots) != 1:
            raise IngestError(
                [Problem("expected one main CSV table in the zip", file, code="format")]
            )
        root = members[roots[0]]
        stem = Path(roots[0]).stem
        siblings = {Path(n).stem: t for n, t in members.items() if n != roots[0]}
    elif suffix in (".csv", ".txt"):
        root = read_csv(path.read_bytes(), file)
        stem = path.stem
    elif suffix in (".xlsx", ".xlsm"):
        sheets = read_xlsx(path, file)
        if not sheets:
            raise IngestError([Problem("the workbook has no table", file, code="format")])
        root, sheets = sheets[0], sheets[1:]
        stem = path.stem
    elif suffix == ".parquet":
        root = read_parquet(path, file)
        stem = path.stem
    else:
        raise IngestError(
            [
                Problem(
                    "not a file type read here: give a CSV, XLSX, Parquet or ODK Central zip",
                    file,
                    code="format",
                )
            ]
        )
    source = source_of(root.frame.columns)
    if source is None:
        raise IngestError(
            [
                Problem(
                    "not an export read here: no KEY and SubmissionDate (ODK Central), _uuid or "
                    "_submission_time (KoboToolbox), nor _uuid and _submitted (impactstudy) column",
                    file,
                    root.sheet,
                    code="format",
                )
            ]
        )
    if "PARENT_KEY" in root.frame.columns or "_parent_uuid" in root.frame.columns:
        raise IngestError(
            [
                Problem(
                    "this is a repeat's table: read the questionnaire's main table, and its "
                    "repeat tables beside it are read with it",
                    file,
                    code="format",
                )
            ]
        )
    if group is not None and group not in study.groups:
        raise IngestError(
            [Problem(f"no group {group!r} in study {study.id}", file, code="unknown_group")]
        )
    gid = group or _which_group(study, stem, root, source)
    form = study.groups[gid].form
    warnings: list[str] = []
    repeats: dict[str, RawTable] = {}
    files = [file]
    if sheets:
        repeats, strays = _sheet_repeats(form, sheets)
        warnings += [f"sheet {s!r} is no repeat of {form.form_id}: not read" for s in strays]
    else:
        stem_root = stem.split("__")[0] if source == "impactstudy" else stem
        for r in repeat_names(form):
            name = f"{stem_root}__{r}" if source == "impactstudy" else f"{stem_root}-{r}"
            if name in siblings:
                repeats[r] = siblings[name]
                files.append(f"{file}:{name}.csv")
                continue
            beside = path.with_name(name + path.suffix)
            if suffix != ".zip" and beside.is_file():
                repeats[r] = (
                    read_parquet(beside, beside.name)
                    if suffix == ".parquet"
                    else read_csv(beside.read_bytes(), beside.name)
                )
                files.append(beside.name)
            elif source == "kobo":
                warnings.append(
                    f"KoboToolbox CSV exports hold no repeats: repeat {r} read as empty "
                    "(export XLSX to have them)"
                )
            else:
                warnings.append(f"no table of repeat {r} ({name}{path.suffix}): read as empty")
    gr, problems, language = _read_group(gid, form, source, root, repeats, lenient, naive=timezone)
    _raise_or_keep(problems, lenient)
    assert gr is not None
    provenance: dict[str, object] = {
        "source": SOURCE_NAMES[source],
        "files": files,
        "group": gid,
        "headers": f"labels ({language})" if language else "names",
    }
    if warnings:
        provenance["warnings"] = warnings
    if lenient:
        provenance["problems"] = problems
    return Responses(study.id, {gid: gr}, provenance)


def _manifest_problem(folder: Path, message: str) -> IngestError:
    return IngestError([Problem(message, str(folder / MANIFEST), code="manifest")])


def _layout(entry: Any, folder: Path, what: str) -> tuple[Columns, Path]:
    """A table's columns (dtype by in-memory name) and the file to read: Parquet if present."""
    try:
        columns = {c["column"]: dtype_of(c["dtype"]) for c in entry["columns"]}
        files = [folder / f for f in entry["files"]]
    except (KeyError, TypeError) as e:
        raise _manifest_problem(folder, f"{what}: malformed table entry ({e})") from None
    bad = [c for c, t in columns.items() if t is None]
    if bad:
        raise _manifest_problem(folder, f"{what}: unknown column types for {', '.join(bad)}")
    chosen = next((f for f in files if f.suffix == ".parquet" and f.is_file()), None)
    chosen = chosen or next((f for f in files if f.is_file()), None)
    if chosen is None:
        raise _manifest_problem(folder, f"{what}: none of its files is there ({entry['files']})")
    layout = {c: t for c, t in columns.items() if t is not None and c != FLAGS}
    return layout, chosen


def _read_raw(path: Path) -> RawTable:
    if path.suffix == ".parquet":
        return read_parquet(path, path.name)
    return read_csv(path.read_bytes(), path.name)


def _read_folder(folder: Path, study: Study, lenient: bool) -> Responses:
    path = folder / MANIFEST
    if not path.is_file():
        raise IngestError(
            [
                Problem(
                    "no manifest.json: not a folder written by write_responses (give an export "
                    "file instead)",
                    str(folder),
                    code="format",
                )
            ]
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _manifest_problem(folder, f"not readable JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _manifest_problem(folder, f"not a {FORMAT} manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise _manifest_problem(
            folder, f"format version {version!r}: this version reads up to {FORMAT_VERSION}"
        )
    if manifest.get("study") != study.id:
        raise _manifest_problem(
            folder, f"responses of study {manifest.get('study')!r}, not of {study.id!r}"
        )
    entries = manifest.get("groups")
    if not isinstance(entries, dict):
        raise _manifest_problem(folder, "no groups")
    unknown = [g for g in entries if g not in study.groups]
    if unknown:
        raise IngestError(
            [
                Problem(f"group {g!r} is not in study {study.id}", str(path), code="unknown_group")
                for g in unknown
            ]
        )
    groups: dict[str, GroupResponses] = {}
    problems: list[Problem] = []
    for gid in study.groups:
        if gid not in entries:
            continue
        entry = entries[gid]
        form = study.groups[gid].form
        try:
            layouts: dict[str | None, Columns] = {}
            layouts[None], root_file = _layout(entry["submissions"], folder, gid)
            repeats: dict[str, RawTable] = {}
            for r, sub in entry.get("repeats", {}).items():
                layouts[r], file = _layout(sub, folder, f"{gid} repeat {r}")
                repeats[r] = _read_raw(file)
        except (KeyError, AttributeError) as e:
            raise _manifest_problem(folder, f"group {gid}: malformed entry ({e})") from None
        gr, found, _ = _read_group(
            gid, form, "impactstudy", _read_raw(root_file), repeats, lenient, layouts
        )
        problems += found
        if gr is None:
            continue
        if PARADATA in entry:
            columns, file = _layout(entry[PARADATA], folder, f"{gid} {PARADATA}")
            frame = _read_raw(file).frame
            missing = [c for c in PARADATA_DTYPES if c not in frame.columns]
            if missing:
                problems.append(
                    Problem(
                        f"missing columns {', '.join(missing)}", file.name, code="missing_column"
                    )
                )
                continue
            gr.paradata = frame.select(
                pl.col(c).cast(t) for c, t in columns.items() if c in frame.columns
            )
        groups[gid] = gr
    _raise_or_keep(problems, lenient)
    provenance = dict(manifest.get("provenance") or {})
    if lenient:
        provenance["problems"] = problems
    return Responses(study.id, groups, provenance)
