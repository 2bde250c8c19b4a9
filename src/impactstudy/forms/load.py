"""Read an XLSForm with pyxform and build the form model, checking everything up front.

pyxform parses the workbook (we never parse XLSForm ourselves). On top of what pyxform
checks, every expression is parsed here, references are resolved, calculations are checked
for cycles, names must be unique in the whole form (so `${name}` is unambiguous), and every
label exists in every language of the form. All problems are collected and raised together,
each naming the file, sheet, row and column.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from impactstudy.forms.expr import Expression, ExpressionError, Node, parse
from impactstudy.forms.model import SELECT_TYPES, Choice, ChoiceList, Field, Form
from impactstudy.problems import Problem

__all__ = ["FormError", "load_form"]

SUPPORTED_SUFFIXES = (".xlsx", ".xlsm", ".xls", ".md", ".csv")

# pyxform's JSON type names -> ours
_TYPE_NAMES = {
    "select one": "select_one",
    "select all that apply": "select_multiple",
    "integer": "integer",
    "int": "integer",
    "decimal": "decimal",
    "text": "text",
    "string": "text",
    "note": "note",
    "calculate": "calculate",
    "date": "date",
    "time": "time",
    "dateTime": "datetime",
    "group": "group",
    "repeat": "repeat",
    "start": "start",
    "end": "end",
    "today": "today",
    "deviceid": "deviceid",
}
_YES = {"yes", "true", "true()", "1"}
_NO = {"no", "false", "false()", "0", ""}
_ROW_RE = re.compile(r"^\[row : (\d+)\]\s*")


class FormError(Exception):
    """A questionnaire that cannot be used; `problems` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass
class _Sheets:
    """Where each survey name and choice sits in the workbook (for messages only)."""

    survey_rows: dict[str, list[int]] = field(default_factory=dict)
    type_rows: dict[str, list[int]] = field(default_factory=dict)
    choice_rows: dict[tuple[str, str], int] = field(default_factory=dict)


def _cell(v: object) -> str:
    return "" if v is None else str(v).strip()


def _locate(path: Path) -> _Sheets:
    sheets = _Sheets()
    if path.suffix.lower() not in (".xlsx", ".xlsm"):
        return sheets
    import openpyxl

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception:  # pyxform reports unreadable workbooks itself
        return sheets
    try:
        names = {n.lower(): n for n in wb.sheetnames}
        if "survey" in names:
            rows = wb[names["survey"]].iter_rows(values_only=True)
            header = [_cell(c).lower() for c in next(rows, ())]
            i_name = header.index("name") if "name" in header else None
            i_type = header.index("type") if "type" in header else None
            for r, row in enumerate(rows, start=2):
                if i_name is not None and i_name < len(row) and _cell(row[i_name]):
                    sheets.survey_rows.setdefault(_cell(row[i_name]), []).append(r)
                if i_type is not None and i_type < len(row) and _cell(row[i_type]):
                    sheets.type_rows.setdefault(_cell(row[i_type]), []).append(r)
        if "choices" in names:
            rows = wb[names["choices"]].iter_rows(values_only=True)
            header = [_cell(c).lower().replace(" ", "_") for c in next(rows, ())]
            if "list_name" in header and "name" in header:
                i_list, i_name = header.index("list_name"), header.index("name")
                for r, row in enumerate(rows, start=2):
                    if max(i_list, i_name) < len(row):
                        key = (_cell(row[i_list]), _cell(row[i_name]))
                        sheets.choice_rows.setdefault(key, r)
    finally:
        wb.close()
    return sheets


def _translations(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items() if v is not None and str(v) != ""}
    return {"default": str(value)}


class _Builder:
    def __init__(self, path: Path, shown: str, sheets: _Sheets) -> None:
        self.path = path
        self.shown = shown
        self.sheets = sheets
        self.problems: list[Problem] = []
        self.fields: dict[str, Field] = {}
        self.languages: set[str] = set()
        #: names of rows that could not be built (already reported; not "unknown" elsewhere)
        self.broken: set[str] = set()

    def row_of(self, name: str) -> int | None:
        rows = self.sheets.survey_rows.get(name)
        return rows[0] if rows else None

    def problem(
        self, message: str, *, row: int | None, column: str | None, sheet: str = "survey"
    ) -> None:
        self.problems.append(Problem(message, file=self.shown, sheet=sheet, row=row, column=column))

    def expression(
        self, source: object, *, field: str, column: str, bare: str = "error"
    ) -> Expression | None:
        if source is None or str(source).strip() == "":
            return None
        try:
            return parse(str(source), bare_names=bare)  # type: ignore[arg-type]
        except ExpressionError as exc:
            self.problem(
                f"{column} of {field!r} is malformed: {exc} (in {str(source)!r})",
                row=self.row_of(field),
                column=column,
            )
            return None

    def build(
        self, items: Iterable[dict[str, Any]], ancestors: tuple[str, ...], repeats: tuple[str, ...]
    ) -> list[Field]:
        out: list[Field] = []
        for item in items:
            f = self.field(item, ancestors, repeats)
            if f is not None:
                out.append(f)
        return out

    def field(
        self, item: dict[str, Any], ancestors: tuple[str, ...], repeats: tuple[str, ...]
    ) -> Field | None:
        raw_type = str(item.get("type", ""))
        name = str(item.get("name", ""))
        bind: dict[str, Any] = item.get("bind") or {}
        control: dict[str, Any] = item.get("control") or {}
        ftype = _TYPE_NAMES.get(raw_type)
        if name == "meta" and raw_type == "group":
            ftype = "group"
        if name == "instanceID":
            ftype = "instanceID"
        row = self.row_of(name)
        if ftype is None:
            self.broken.add(name)
            self.problem(
                f"unknown or unsupported question type {raw_type!r} of {name!r}",
                row=row,
                column="type",
            )
            return None
        generated = name in ("meta", "instanceID") or (
            name.endswith("_other")
            and isinstance(item.get("label"), str)
            and "relevant" in bind
            and "'other'" in str(bind.get("relevant"))
        )
        f = Field(
            name=name,
            type=ftype,
            ancestors=ancestors,
            repeats=repeats,
            generated=generated,
            row=row,
        )
        f.labels = _translations(item.get("label"))
        f.hints = _translations(item.get("hint"))
        f.constraint_message = _translations(bind.get("jr:constraintMsg"))
        for tr in (f.labels, f.hints, f.constraint_message):
            self.languages.update(k for k in tr if k != "default")
        required = bind.get("required")
        if required is not None:
            text = str(required).strip()
            if text.lower() in _YES:
                f.required = True
            elif text.lower() not in _NO:
                f.required_if = self.expression(text, field=name, column="required")
        f.relevant = self.expression(bind.get("relevant"), field=name, column="relevant")
        f.constraint = self.expression(bind.get("constraint"), field=name, column="constraint")
        if ftype == "calculate":
            f.calculation = self.expression(bind.get("calculate"), field=name, column="calculation")
            if not _cell(bind.get("calculate")) and not generated:
                self.problem(
                    f"calculate {name!r} has no calculation", row=row, column="calculation"
                )
        f.choice_filter = self.expression(
            item.get("choice_filter"), field=name, column="choice_filter", bare="choice"
        )
        f.repeat_count = self.expression(control.get("jr:count"), field=name, column="repeat_count")
        appearance = control.get("appearance")
        f.appearance = str(appearance) if appearance else None
        default = item.get("default")
        f.default = str(default) if default not in (None, "") else None
        if ftype in SELECT_TYPES:
            f.choice_list = str(item.get("itemset") or item.get("list_name") or "")
            if Path(f.choice_list).suffix.lower() in (".csv", ".xml", ".geojson"):
                self.problem(
                    f"{name!r} selects from the external file {f.choice_list!r}, which is not "
                    "supported: put the choices in the choices sheet",
                    row=row,
                    column="type",
                )
        if name in self.fields:
            rows = self.sheets.survey_rows.get(name, [])
            self.problem(
                f"field name {name!r} is used twice (rows {', '.join(map(str, rows))}); "
                "names must be unique in the whole form so that ${" + name + "} is unambiguous",
                row=rows[-1] if rows else None,
                column="name",
            )
        else:
            self.fields[name] = f
        if ftype in ("group", "repeat"):
            inner_repeats = (*repeats, name) if ftype == "repeat" else repeats
            f.children = self.build(item.get("children") or [], (*ancestors, name), inner_repeats)
        return f


def _choice_lists(d: dict[str, Any], b: _Builder) -> dict[str, ChoiceList]:
    out: dict[str, ChoiceList] = {}
    for list_name, items in (d.get("choices") or {}).items():
        choices: list[Choice] = []
        seen: set[str] = set()
        for it in items:
            name = str(it.get("name", ""))
            row = b.sheets.choice_rows.get((list_name, name))
            if name in seen:
                b.problem(
                    f"choice {name!r} appears twice in list {list_name!r}",
                    row=row,
                    column="name",
                    sheet="choices",
                )
            seen.add(name)
            labels = _translations(it.get("label"))
            b.languages.update(k for k in labels if k != "default")
            extra = {str(k): str(v) for k, v in it.items() if k not in ("name", "label")}
            choices.append(Choice(name=name, labels=labels, columns=extra, row=row))
        out[str(list_name)] = ChoiceList(str(list_name), tuple(choices))
    return out


def _check_languages(
    b: _Builder, fields: Iterable[Field], lists: dict[str, ChoiceList], languages: Sequence[str]
) -> None:
    for f in fields:
        if f.generated:
            continue
        for column, tr in (
            ("label", f.labels),
            ("hint", f.hints),
            ("constraint_message", f.constraint_message),
        ):
            if not tr:
                continue
            if "default" in tr and len(languages) > 0:
                b.problem(
                    f"{column} of {f.name!r} has no language; use {column}::"
                    + f"{languages[0]} etc.",
                    row=f.row,
                    column=column,
                )
                continue
            for lang in languages:
                if lang not in tr:
                    b.problem(
                        f"{column} of {f.name!r} is missing in language {lang!r}",
                        row=f.row,
                        column=f"{column}::{lang}",
                    )
    for cl in lists.values():
        for c in cl.choices:
            for lang in languages:
                if lang not in c.labels:
                    b.problem(
                        f"label of choice {c.name!r} in list {cl.name!r} is missing in "
                        f"language {lang!r}",
                        row=c.row,
                        column=f"label::{lang}",
                        sheet="choices",
                    )


def _check_references(b: _Builder, form: Form) -> None:
    form_fields, lists = form.fields, form.choice_lists
    for f in form_fields.values():
        for column, ex in (
            ("relevant", f.relevant),
            ("constraint", f.constraint),
            ("calculation", f.calculation),
            ("choice_filter", f.choice_filter),
            ("repeat_count", f.repeat_count),
            ("required", f.required_if),
        ):
            if ex is None:
                continue
            for ref in sorted(ex.refs - form_fields.keys() - b.broken):
                b.problem(
                    f"{column} of {f.name!r} refers to unknown field ${{{ref}}}",
                    row=f.row,
                    column=column,
                )
            for message in literal_choice_problems(form, ex):
                b.problem(f"{column} of {f.name!r}: {message}", row=f.row, column=column)
            if ex.uses_current and column not in ("constraint", "required"):
                b.problem(
                    f"{column} of {f.name!r} uses '.', which only means something in a constraint",
                    row=f.row,
                    column=column,
                )
            if column == "choice_filter" and f.choice_list in lists:
                known = {"name"} | {k for c in lists[f.choice_list].choices for k in c.columns}
                for bare in sorted(ex.bare_names - known):
                    b.problem(
                        f"choice_filter of {f.name!r} uses column {bare!r}, which list "
                        f"{f.choice_list!r} does not have",
                        row=f.row,
                        column=column,
                    )


def literal_choice_problems(form: Form, ex: Expression) -> list[str]:
    """Choice codes written as literals next to a select field that are not its choices:
    `selected(${pay}, 'retial')`, `${org_type} = 'goverment'`."""
    out: list[str] = []

    def check(ref: Node, lit: Node) -> None:
        if ref.kind != "ref" or lit.kind != "str":
            return
        f = form.fields.get(str(ref.value))
        if f is None or f.type not in SELECT_TYPES or f.choice_list not in form.choice_lists:
            return
        names = form.choice_lists[f.choice_list].names
        code = str(lit.value)
        if code not in names and not (code == "other" and form.accepts_other(f.name)):
            out.append(
                f"{code!r} is not a choice of ${{{f.name}}} in questionnaire "
                f"{form.form_id!r} (list {f.choice_list!r})"
            )

    def walk(n: Node) -> None:
        if n.kind == "call" and n.value == "selected" and len(n.args) == 2:
            check(n.args[0], n.args[1])
        if n.kind == "bin" and n.value in ("=", "!="):
            a, b = n.args
            check(a, b)
            check(b, a)
        for arg in n.args:
            walk(arg)

    walk(ex.tree)
    return out


def calculation_order(fields: dict[str, Field]) -> list[str]:
    """Calculate fields in dependency order; raises ValueError naming a cycle."""
    calcs = {n: f for n, f in fields.items() if f.calculation is not None}
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, trail: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cycle = [*trail[trail.index(n) :], n]
            raise ValueError(" -> ".join(cycle))
        state[n] = 1
        ex = calcs[n].calculation
        assert ex is not None
        for dep in sorted(ex.refs):
            if dep in calcs:
                visit(dep, [*trail, n])
        state[n] = 2
        order.append(n)

    for n in calcs:
        visit(n, [])
    return order


def load_form(
    path: Path | str, *, languages: Sequence[str] | None = None, shown_as: str | None = None
) -> Form:
    """Load an XLSForm (xlsx, xls, md or csv) into a Form; raise FormError listing problems.

    `languages`: the languages every label must have (default: all languages the form uses).
    `shown_as`: how the file is named in messages (default: the path as given).
    """
    path = Path(path)
    shown = shown_as or str(path)
    if not path.is_file():
        raise FormError([Problem("questionnaire file not found", file=shown)])
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise FormError(
            [Problem(f"not an XLSForm: use one of {', '.join(SUPPORTED_SUFFIXES)}", file=shown)]
        )
    if path.stat().st_size == 0:
        raise FormError([Problem("the file is empty", file=shown)])
    if path.suffix.lower() in (".xlsx", ".xlsm") and not _is_workbook(path):
        raise FormError(
            [Problem("not a valid .xlsx workbook (is it another format renamed?)", file=shown)]
        )

    from pyxform.errors import PyXFormError
    from pyxform.xls2json import parse_file_to_json

    sheets = _locate(path)
    warnings: list[str] = []
    try:
        d: dict[str, Any] = parse_file_to_json(str(path), warnings=warnings)
    except PyXFormError as exc:
        raise FormError([_pyxform_problem(str(exc), shown, sheets)]) from None
    except Exception as exc:  # pyxform raises assorted errors on broken workbooks
        raise FormError([Problem(f"cannot read the workbook: {exc}", file=shown)]) from None

    b = _Builder(path, shown, sheets)
    children = b.build(d.get("children") or [], (), ())
    lists = _choice_lists(d, b)
    langs = tuple(languages) if languages is not None else tuple(sorted(b.languages))
    form = Form(
        form_id=str(d.get("id_string") or path.stem),
        version=str(d.get("version") or ""),
        title=str(d.get("title") or d.get("id_string") or path.stem),
        default_language=str(d.get("default_language") or "default"),
        languages=langs,
        children=children,
        fields=b.fields,
        choice_lists=lists,
        source=path,
        warnings=tuple(warnings),
    )
    if not form.questions and not b.problems:
        b.problem("the questionnaire has no questions", row=None, column=None)
    _check_languages(b, b.fields.values(), lists, langs)
    _check_references(b, form)
    try:
        calculation_order(b.fields)
    except ValueError as exc:
        first = str(exc).split(" -> ")[0]
        b.problem(f"calculations form a cycle: {exc}", row=b.row_of(first), column="calculation")
    if b.problems:
        raise FormError(b.problems)

    try:
        from pyxform.builder import create_survey_element_from_dict

        form.xform = create_survey_element_from_dict(d).to_xml(validate=False)
    except PyXFormError as exc:
        raise FormError([_pyxform_problem(str(exc), shown, sheets)]) from None
    except Exception as exc:
        raise FormError([Problem(f"pyxform could not build the form: {exc}", file=shown)]) from None
    return form


def _is_workbook(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return "xl/workbook.xml" in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _pyxform_problem(message: str, shown: str, sheets: _Sheets) -> Problem:
    row: int | None = None
    m = _ROW_RE.match(message)
    if m:
        row = int(m.group(1))
        message = message[m.end() :]
    else:
        t = re.search(r"Unknown question type '([^']*)'", message)
        if t and sheets.type_rows.get(t.group(1)):
            row = sheets.type_rows[t.group(1)][0]
    sheet = "survey"
    on = re.search(r"On the '(\w+)' sheet", message)
    if on:
        sheet = on.group(1)
    elif "settings" in message and "sheet" in message:
        sheet = "settings"
    message = message.split(" Learn more:")[0].strip()
    dup = re.search(r"The name '([^']*)' appears more than once", message)
    if dup and len(sheets.survey_rows.get(dup.group(1), [])) > 1:
        rows = ", ".join(map(str, sheets.survey_rows[dup.group(1)]))
        message = message.replace(dup.group(0), f"{dup.group(0)} (survey rows {rows})")
    return Problem(
        message,
        file=shown,
        sheet=sheet if row is not None else None,
        row=row,
        column="type" if "question type" in message else None,
    )
