"""Tables read from a file -> the Responses contract: columns recognised, cells typed and
checked a whole column at a time, repeats keyed to their submissions.

Every check is a boolean column; a problem is made only for the (few) rows it marks, and with
`lenient` the marked cells are null and the rule is written into the row's `_flags`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from impactstudy.forms.model import Field, Form
from impactstudy.ingest import values
from impactstudy.ingest.errors import ROWS_NAMED
from impactstudy.ingest.layout import REQUIRED, Headers, Source, Target, choice_labels, headers
from impactstudy.problems import Problem
from impactstudy.responses import (
    FLAGS,
    INDEX,
    PARENT_UUID,
    choice_codes,
    choice_column,
    table_fields,
    table_schema,
)

#: the row number of each record in its file, carried through every step
ROW = "__row__"
_INTEGERS = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)


@dataclass
class RawTable:
    """One table as read from a file: its own headers, every cell as found, and `ROW`."""

    frame: pl.DataFrame
    file: str
    sheet: str | None = None


@dataclass
class Check:
    """A rule applied to a column: `bad` and `shown` are columns of the table being built."""

    code: str
    field: str | None
    column: str | None
    bad: str
    shown: str
    message: Callable[[str], str]


@dataclass
class Table:
    """A table on its way to the contract: canonical columns, check columns, and the checks."""

    frame: pl.DataFrame
    file: str
    sheet: str | None
    header_of: dict[str, str]
    #: the language of the labels the file is headed with (None: XML names)
    language: str | None = None
    checks: list[Check] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def check(
        self,
        code: str,
        field_name: str | None,
        column: str | None,
        bad: pl.Expr,
        shown: pl.Expr,
        message: Callable[[str], str],
    ) -> None:
        """Add a rule evaluated on the table as it stands."""
        n = len(self.checks)
        self.frame = self.frame.with_columns(
            bad.fill_null(False).alias(f"__bad{n}"), shown.cast(pl.String).alias(f"__shown{n}")
        )
        self.checks.append(Check(code, field_name, column, f"__bad{n}", f"__shown{n}", message))

    def problem(self, message: str, code: str, column: str | None = None) -> None:
        self.problems.append(Problem(message, self.file, self.sheet, column=column, code=code))


def _quoted(v: str) -> str:
    return f'"{v}"'


def _choices_message(form: Form, f: Field) -> Callable[[str], str]:
    codes = choice_codes(form, f)
    listed = ", ".join(codes[:12]) + (", ..." if len(codes) > 12 else "")

    def message(v: str) -> str:
        return f"{_quoted(v)} is not in the choice list {f.choice_list} ({listed})"

    return message


def _resolve(h: Headers, header: str, form: Form) -> Target | list[Target] | None:
    found = h.resolve(header)
    if found is None and "/" in header:
        # a choice column of a code the list lacks (ODK Central splits on the values it saw)
        head, _, code = header.rpartition("/")
        parent = h.resolve(head)
        if isinstance(parent, Target) and parent.kind == "field":
            f = form.fields.get(parent.name)
            if f is not None and f.type == "select_multiple":
                return Target("choice", f.name, code, parent.language)
    return found


def _map_headers(
    raw: RawTable,
    form: Form,
    repeat: str | None,
    source: Source,
    table: Table,
    extra: set[str],
) -> tuple[dict[str, str], dict[str, dict[str, str]], str | None]:
    """Header of each canonical column; headers of the choice columns of each select_multiple;
    the language of the labels the file is headed with (None: names). `extra`: more meta
    columns the file may have (our own, listed in its manifest)."""
    h = headers(form, repeat, source)
    for name in extra:
        h.add_name(name, Target("meta", name))
    where = f"the {repeat} repeat of " if repeat else ""
    columns: dict[str, str] = {}
    split: dict[str, dict[str, str]] = {}
    languages: Counter[str] = Counter()
    for header in raw.frame.columns:
        if header == ROW:
            continue
        found = _resolve(h, header, form)
        if found is None:
            table.problem(
                f"unknown column: {where}questionnaire {form.form_id} has no field, choice or "
                "meta column of that name or label",
                "unknown_column",
                header,
            )
            continue
        if isinstance(found, list):
            names = ", ".join(sorted({t.name for t in found}))
            table.problem(
                f"ambiguous column: the label heads more than one column ({names}); export "
                "with XML names instead of labels",
                "ambiguous_column",
                header,
            )
            continue
        if found.language:
            languages[found.language] += 1
        if found.kind == "ignore":
            continue
        if found.kind == "choice":
            assert found.choice is not None
            taken = split.setdefault(found.name, {})
            if found.choice in taken:
                table.problem(
                    f"duplicate column: {taken[found.choice]!r} already holds choice "
                    f"{found.choice} of {found.name}",
                    "duplicate_column",
                    header,
                )
            taken[found.choice] = header
            continue
        if found.name in columns:
            table.problem(
                f"duplicate column: {columns[found.name]!r} already holds {found.name}",
                "duplicate_column",
                header,
            )
            continue
        columns[found.name] = header
    for name, (shown, holds) in REQUIRED[(source, repeat is not None)].items():
        if name not in columns:
            table.problem(f"no such column: it holds {holds}", "missing_column", shown)
    language = languages.most_common(1)[0][0] if languages else None
    return columns, split, language


def _parse(
    raw: RawTable,
    header: str,
    target: pl.DataType,
    keep_spaces: bool = False,
    naive: str = "UTC",
) -> tuple[pl.Expr, pl.Expr, str]:
    """Typed value, bad mask and rule code of one column (`naive`: the time zone of date-times
    written without an offset)."""
    src = raw.frame.schema[header]
    if isinstance(target, pl.Datetime):
        if isinstance(src, pl.Datetime):
            v = values.typed_instant(header, src, target, naive)
            return v, pl.lit(False), "not_datetime"
        v, bad = values.instant(_text(raw, header), target, naive)
        return v, bad, "not_datetime"
    if isinstance(target, pl.Date):
        if isinstance(src, pl.Date):
            return pl.col(header), pl.lit(False), "not_date"
        if isinstance(src, pl.Datetime):
            return pl.col(header).dt.date(), pl.lit(False), "not_date"
        v, bad = values.date(_text(raw, header))
        return v, bad, "not_date"
    if isinstance(target, _INTEGERS):
        if isinstance(src, _INTEGERS):
            return pl.col(header), pl.lit(False), "not_integer"
        v, bad = values.integer(_text(raw, header))
        return v, bad, "not_integer"
    if isinstance(target, pl.Float32 | pl.Float64):
        if src.is_numeric():
            v, bad = values.decimal(pl.col(header).cast(pl.String))
            return v, bad, "not_decimal"
        v, bad = values.decimal(_text(raw, header))
        return v, bad, "not_decimal"
    if keep_spaces and src == pl.String():
        return pl.col(header), pl.lit(False), ""
    return _text(raw, header), pl.lit(False), ""


def _text(raw: RawTable, header: str) -> pl.Expr:
    """A column as clean text: as `_prepare` left it, or cast from its type."""
    src = raw.frame.schema[header]
    return pl.col(header) if src == pl.String() else values.text(header, src)


def _prepare(
    raw: RawTable,
    form: Form,
    repeat: str | None,
    columns: dict[str, str],
    targets: dict[str, pl.DataType],
) -> RawTable:
    """Every text column cleaned once, in place, before the parsers read it (a column is read
    by several expressions): trimmed with empty cells null (text answers keep their spaces),
    date-times readied for `values.instant`, select_multiple codes single-spaced."""
    fields = {f.name: f for f in table_fields(form, repeat)}
    keep = {
        h for n, h in columns.items() if n == FLAGS or (n in fields and fields[n].type == "text")
    }
    instants = {h for n, h in columns.items() if isinstance(targets.get(n), pl.Datetime)}
    multi = {h for n, h in columns.items() if n in fields and fields[n].type == "select_multiple"}
    exprs: list[pl.Expr] = []
    for header, dtype in raw.frame.schema.items():
        if header == ROW or dtype != pl.String():
            continue
        e = pl.col(header)
        if header in keep:
            e = pl.when(e.str.strip_chars() == "").then(None).otherwise(e)
        else:
            e = values.text(header, dtype)
        if header in instants:
            e = values.instant_text(e)
        if header in multi:
            e = e.str.replace_all(r"\s+", " ")
        exprs.append(e.alias(header))
    return RawTable(raw.frame.with_columns(exprs), raw.file, raw.sheet)


_TYPE_WORDS = {
    "not_integer": "an integer",
    "not_decimal": "a number",
    "not_date": "a date (YYYY-MM-DD)",
    "not_datetime": "a date and time (ISO 8601)",
}


def _type_message(code: str) -> Callable[[str], str]:
    word = _TYPE_WORDS[code]

    def message(v: str) -> str:
        return f"{_quoted(v)} is not {word}"

    return message


def convert_table(
    raw: RawTable,
    form: Form,
    repeat: str | None,
    source: Source,
    dtypes: dict[str, pl.DataType] | None = None,
    naive: str = "UTC",
) -> Table:
    """Recognise, type and check one table; link columns of the source are kept for
    `link_repeat`. `dtypes` overrides the contract's column types (our manifest); `naive` is the
    time zone of date-time answers written without an offset."""
    table = Table(pl.DataFrame(), raw.file, raw.sheet, {})
    schema = table_schema(form, repeat)
    extra = {c for c in dtypes or {} if c.startswith("_") and c not in schema}
    columns, split, language = _map_headers(raw, form, repeat, source, table, extra)
    table.header_of = columns
    table.language = language
    targets = {**schema, **(dtypes or {})}
    raw = _prepare(raw, form, repeat, columns, targets)
    exprs: list[pl.Expr] = [pl.col(ROW)]
    pending: list[tuple[str, str | None, str, pl.Expr, pl.Expr, Callable[[str], str]]] = []

    def add(name: str, value: pl.Expr) -> None:
        exprs.append(value.alias(name))

    def rule(
        code: str,
        fname: str | None,
        col: str,
        bad: pl.Expr,
        shown: pl.Expr,
        msg: Callable[[str], str],
    ) -> None:
        pending.append((code, fname, col, bad, shown, msg))

    # meta and link columns
    for name, meta_header in columns.items():
        if name in form.fields:
            continue
        index = name in ("kobo:_index", "kobo:_parent_index", INDEX)
        target = pl.Int64() if index else targets.get(name, pl.String())
        v, bad, code = _parse(raw, meta_header, target, keep_spaces=name == FLAGS)
        if code:
            rule(code, name, meta_header, bad, pl.col(meta_header), _type_message(code))
        add(name, v)

    # fields
    for f in table_fields(form, repeat):
        target = targets.get(f.name, pl.String())
        found = columns.get(f.name)
        if f.type == "select_multiple":
            _select_multiple(raw, form, f, found, split.get(f.name, {}), language, add, rule)
            continue
        if found is None:
            add(f.name, pl.lit(None, dtype=target))
            continue
        header = found
        if f.type == "select_one":
            r = _text(raw, header)
            if language:
                r = r.replace(choice_labels(form, f, language))
            bad = r.is_not_null() & ~r.is_in(list(choice_codes(form, f)))
            rule("not_in_choices", f.name, header, bad, pl.col(header), _choices_message(form, f))
            add(f.name, pl.when(bad).then(None).otherwise(r))
            continue
        v, bad, code = _parse(raw, header, target, keep_spaces=f.type == "text", naive=naive)
        if code:
            rule(code, f.name, header, bad, pl.col(header), _type_message(code))
        add(f.name, v)

    bad_exprs = [
        b.fill_null(False).alias(f"__bad{i}") for i, (_, _, _, b, _, _) in enumerate(pending)
    ]
    shown_exprs = [
        s.cast(pl.String).alias(f"__shown{i}") for i, (_, _, _, _, s, _) in enumerate(pending)
    ]
    table.frame = raw.frame.select(*exprs, *bad_exprs, *shown_exprs)
    for i, (code, fname, col, _, _, msg) in enumerate(pending):
        table.checks.append(Check(code, fname, col, f"__bad{i}", f"__shown{i}", msg))
    _derive_meta(table, form, repeat, source)
    return table


def _select_multiple(
    raw: RawTable,
    form: Form,
    f: Field,
    header: str | None,
    split: dict[str, str],
    language: str | None,
    add: Callable[[str, pl.Expr], None],
    rule: Callable[[str, str | None, str, pl.Expr, pl.Expr, Callable[[str], str]], None],
) -> None:
    """The space-separated codes and one 0/1 column per choice, from whichever the file has."""
    codes = list(choice_codes(form, f))
    if header is not None:
        r = _text(raw, header)
        if language:
            labels = choice_labels(form, f, language)
            alt = values.alternation([*labels, *codes])
            covered = r.str.replace_all(alt, "\x01").str.contains(r"^\x01(?: \x01)*$")
            tokens = r.str.extract_all(alt).list.eval(pl.element().replace(labels))
            bad = r.is_not_null() & ~covered
            shown = pl.col(header).cast(pl.String)
        else:
            tokens = r.str.split(" ")
            unknown = tokens.list.eval(pl.element().filter(~pl.element().is_in(codes)))
            bad = r.is_not_null() & (unknown.list.len() > 0)
            shown = unknown.list.join(" ")
        rule("not_in_choices", f.name, header, bad, shown, _choices_message(form, f))
        value = pl.when(bad | r.is_null()).then(None).otherwise(tokens.list.join(" "))
        add(f.name, value)
        for code in codes:
            add(
                choice_column(f.name, code),
                pl.when(value.is_null())
                .then(None)
                .otherwise(tokens.list.contains(code).cast(pl.Int8)),
            )
        return
    if not split:
        add(f.name, pl.lit(None, dtype=pl.String))
        for code in codes:
            add(choice_column(f.name, code), pl.lit(None, dtype=pl.Int8))
        return
    # only the choice columns: rebuild the codes from them
    bits: dict[str, pl.Expr] = {}
    any_bad: list[pl.Expr] = []
    for code, col in split.items():
        b, bad = values.binary(_text(raw, col))
        rule("not_binary", f.name, col, bad, pl.col(col), lambda v: f"{_quoted(v)} is not 0 or 1")
        any_bad.append(bad)
        bits[code] = b
        if code not in codes:
            outside = b == 1
            rule(
                "not_in_choices",
                f.name,
                col,
                outside,
                pl.lit(code),
                _choices_message(form, f),
            )
            any_bad.append(outside)
    answered = pl.any_horizontal([b.is_not_null() for b in bits.values()])
    tokens = pl.concat_list(
        [
            pl.when(b == 1).then(pl.lit(code)).otherwise(None)
            for code, b in bits.items()
            if code in codes
        ]
        or [pl.lit(None, dtype=pl.String)]
    ).list.drop_nulls()
    failed = pl.any_horizontal([b.fill_null(False) for b in any_bad])
    value = pl.when(answered & ~failed).then(tokens.list.join(" ")).otherwise(None)
    add(f.name, value)
    for code in codes:
        add(
            choice_column(f.name, code),
            pl.when(value.is_null()).then(None).otherwise(tokens.list.contains(code).cast(pl.Int8)),
        )


def _derive_meta(table: Table, form: Form, repeat: str | None, source: Source) -> None:
    """The contract's meta columns from the source's: instanceID, device, duration."""
    cols = set(table.frame.columns)

    def col(name: str) -> pl.Expr:
        return pl.col(name) if name in cols else pl.lit(None, dtype=pl.String)

    if repeat is not None:
        return
    new: dict[str, pl.Expr] = {}
    if source == "odk":
        new["_uuid"] = pl.coalesce(col("odk:KEY"), col("odk:instanceID"))
    elif source == "kobo":
        bare = col("kobo:_uuid")
        uuid = pl.when(bare.str.starts_with("uuid:")).then(bare).otherwise(pl.lit("uuid:") + bare)
        new["_uuid"] = pl.coalesce(uuid, col("kobo:instanceID"))
    if source != "impactstudy":
        by_type = {f.type: f.name for f in table_fields(form)}
        device = col(by_type["deviceid"]) if "deviceid" in by_type else pl.lit(None, pl.String)
        new["_deviceid"] = pl.coalesce(device, col("odk:DeviceID"))
        if "start" in by_type and "end" in by_type:
            span = pl.col(by_type["end"]) - pl.col(by_type["start"])
            # through Decimal: Polars divides a float column by a constant as a product with
            # its inverse, which is not the nearest double (227867 ms -> 227.86700000000002)
            ms = span.dt.total_milliseconds().cast(pl.Decimal(38, 0)).cast(pl.Decimal(38, 3))
            new["_duration_s"] = (ms / 1000).cast(pl.Float64)
    table.frame = table.frame.with_columns(**new)


def check_uuids(table: Table, instance_header: str) -> None:
    """Every submission has an instanceID, and no two the same."""
    uuid = pl.col("_uuid")
    table.check(
        "missing_uuid",
        None,
        instance_header,
        uuid.is_null(),
        pl.lit(""),
        lambda _: "no instanceID: the submission cannot be told apart from others",
    )
    first = pl.col(ROW).min().over("_uuid")
    table.check(
        "duplicate_uuid",
        None,
        instance_header,
        uuid.is_not_null() & (pl.col(ROW) != first),
        pl.concat_str(uuid, pl.lit("\x00"), first.cast(pl.String)),
        lambda v: "instanceID {} is already in row {}".format(*v.split("\x00")),
    )


def link_repeat(child: Table, parent: Table, source: Source, repeat: str, parent_file: str) -> None:
    """`_parent_uuid` and `_index` of each repeat row, from the keys the source uses."""
    if source == "impactstudy":
        link_header = child.header_of.get(PARENT_UUID, PARENT_UUID)
        parent_value = pl.col(PARENT_UUID)
    elif source == "odk":
        link_header = child.header_of.get("odk:PARENT_KEY", "PARENT_KEY")
        key = pl.col("odk:KEY") if "odk:KEY" in child.frame.columns else pl.lit(None, pl.String)
        child.frame = child.frame.with_columns(
            pl.col("odk:PARENT_KEY").str.extract(r"^([^/]+)", 1).alias(PARENT_UUID),
            key.str.extract(r"\[(\d+)\]$", 1).cast(pl.Int64, strict=False).alias(INDEX),
        )
        parent_value = pl.col("odk:PARENT_KEY")
    else:
        link_header = child.header_of.get("kobo:_parent_index", "_parent_index")
        keys = (
            parent.frame.select(
                pl.col("kobo:_index").alias("kobo:_parent_index"),
                pl.col("_uuid").alias(PARENT_UUID),
            )
            if "kobo:_index" in parent.frame.columns
            else pl.DataFrame(schema={"kobo:_parent_index": pl.Int64, PARENT_UUID: pl.String})
        )
        keys = keys.filter(pl.col("kobo:_parent_index").is_not_null()).unique(
            "kobo:_parent_index", keep="first", maintain_order=True
        )
        child.frame = child.frame.join(
            keys, on="kobo:_parent_index", how="left", maintain_order="left"
        )
        parent_value = pl.col("kobo:_parent_index")
        child.frame = child.frame.with_columns(pl.lit(None, pl.Int64).alias(INDEX))
    # rows without a usable index are numbered in file order within their parent
    order = pl.int_range(1, pl.len() + 1).over(PARENT_UUID).cast(pl.Int64)
    child.frame = child.frame.with_columns(pl.coalesce(pl.col(INDEX), order).alias(INDEX))
    known = parent.frame.get_column("_uuid").drop_nulls().unique()
    child.check(
        "orphan_repeat",
        None,
        link_header,
        ~pl.col(PARENT_UUID).is_in(known.implode()) | pl.col(PARENT_UUID).is_null(),
        parent_value.cast(pl.String).fill_null(""),
        lambda v: (
            f"{_quoted(v)} matches no submission in {parent_file}: the {repeat} row has no parent"
        ),
    )


def finish(table: Table, columns: dict[str, pl.DataType], lenient: bool) -> pl.DataFrame:
    """Problems from the checks; the contract's columns in order; `_flags` when lenient."""
    marked = (
        table.frame.select(pl.col(c.bad).sum() for c in table.checks).row(0) if table.checks else ()
    )
    flags: list[pl.Expr] = []
    for check, count in zip(table.checks, marked, strict=True):
        if not count:
            continue
        flags.append(
            pl.when(pl.col(check.bad)).then(
                pl.lit(f"{check.code}:{check.field}" if check.field else check.code)
            )
        )
        rows = table.frame.filter(pl.col(check.bad)).select(ROW, check.shown).head(ROWS_NAMED)
        for row, shown in rows.iter_rows():
            table.problems.append(
                Problem(
                    check.message(shown or ""),
                    table.file,
                    table.sheet,
                    row=row,
                    column=check.column,
                    code=check.code,
                )
            )
        if count > ROWS_NAMED:
            table.problems.append(
                Problem(
                    f"... and {count - ROWS_NAMED} more rows with the same problem "
                    f"({count} in all)",
                    table.file,
                    table.sheet,
                    column=check.column,
                    code=check.code,
                )
            )
    out: list[pl.Expr] = []
    for name, dtype in columns.items():
        e = pl.col(name) if name in table.frame.columns else pl.lit(None)
        out.append(e.cast(dtype).alias(name))
    if lenient:
        found = pl.concat_str(flags, separator=";", ignore_nulls=True) if flags else pl.lit(None)
        earlier = pl.col(FLAGS) if FLAGS in table.frame.columns else pl.lit(None, pl.String)
        joined = pl.concat_str([earlier, found], separator=";", ignore_nulls=True)
        out.append(pl.when(joined == "").then(None).otherwise(joined).cast(pl.String).alias(FLAGS))
    elif FLAGS in table.frame.columns and FLAGS not in columns:
        out.append(pl.col(FLAGS).cast(pl.String))
    return table.frame.select(out)
