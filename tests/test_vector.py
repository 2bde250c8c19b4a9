"""The Polars backend gives, row by row, what the scalar evaluator gives.

The hand-computed table of test_expr.py, then differential tests: random expressions over a
random table, the vectorised column against the scalar evaluator applied to each row; and
focused differentials for the parts Polars does differently on its own (float formatting,
decimal rounding, remainder, powers, regex syntax, number parsing)."""

from __future__ import annotations

import datetime as dt
import math
import random
import struct
from collections.abc import Callable

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from impactstudy.forms.expr import (
    ExpressionError,
    MappingScope,
    Value,
    parse,
    to_boolean,
    to_number,
    to_string,
)
from impactstudy.forms.vector import ColumnKind, ResultKind, evaluate_frame, to_polars
from test_expr import CASES, expression_strategy

TODAY = dt.date(2018, 10, 1)


def _frame(
    answers: dict[str, object], refs: frozenset[str]
) -> tuple[pl.DataFrame, dict[str, ColumnKind]]:
    """One row holding `answers`: numbers in Float64 columns, everything else as text."""
    kinds: dict[str, ColumnKind] = {}
    data: dict[str, pl.Series] = {}
    for name in sorted(refs):
        v = answers.get(name)
        if isinstance(v, int | float) and not isinstance(v, bool):
            kinds[name] = "number"
            data[name] = pl.Series(name, [float(v)], pl.Float64)
        else:
            kinds[name] = "text"
            text = " ".join(v) if isinstance(v, list) else v
            data[name] = pl.Series(name, [text], pl.Utf8)
    df = pl.DataFrame(data) if data else pl.DataFrame({"row": [0]})
    return df, kinds


def _same(got: object, want: Value) -> bool:
    """Equal as the scalar evaluator means it: NaN equals NaN, floats to 1e-12 relative."""
    if isinstance(want, bool) or isinstance(got, bool):
        return type(got) is type(want) and got == want
    if isinstance(want, float):
        if not isinstance(got, float):
            return False
        if math.isnan(want) or math.isnan(got):
            return math.isnan(want) and math.isnan(got)
        if math.isinf(want) or math.isinf(got):
            return want == got
        return abs(got - want) <= 1e-12 * max(abs(got), abs(want))
    return type(got) is type(want) and got == want


def _flat(case: tuple[str, object, object]) -> bool:
    """A case the vector backend takes: no `.` and no repeat (a list of instances)."""
    source, answers, _ = case
    assert isinstance(answers, dict)
    repeats = any(isinstance(v, list) and v and isinstance(v[0], dict) for v in answers.values())
    return not parse(source).uses_current and not repeats


VECTOR_CASES = [c for c in CASES if _flat(c)]


def test_the_table_is_taken_whole() -> None:
    assert len(VECTOR_CASES) == len(CASES) > 60  # no case uses `.` or repeats today


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "unfolded"])
@pytest.mark.parametrize(("source", "answers", "expected"), VECTOR_CASES)
def test_table_of_cases(
    source: str, answers: dict[str, object], expected: Value, fold: bool
) -> None:
    ex = parse(source)
    df, kinds = _frame(answers, ex.refs)
    got = evaluate_frame(ex, df, kinds, today=TODAY, fold_constants=fold).to_list()
    assert len(got) == 1
    assert _same(got[0], expected), (source, got[0], expected)


# --- typed results and blanks ----------------------------------------------------------------


def test_result_dtypes_follow_the_value_type() -> None:
    df = pl.DataFrame({"a": [1.0, None], "b": ["x y", None]})
    kinds: dict[str, ColumnKind] = {"a": "number", "b": "text"}
    assert evaluate_frame(parse("${a} > 0"), df, kinds).dtype == pl.Boolean
    assert evaluate_frame(parse("${a} * 2"), df, kinds).dtype == pl.Float64
    assert evaluate_frame(parse("concat(${b}, '!')"), df, kinds).dtype == pl.Utf8
    # a number that may be blank: null where the scalar evaluator gives ""
    assert evaluate_frame(parse("${a}"), df, kinds).to_list() == [1.0, None]
    assert evaluate_frame(parse("if(${a} > 0, ${a}, '')"), df, kinds).to_list() == [1.0, None]
    assert evaluate_frame(parse("${b}"), df, kinds).to_list() == ["x y", ""]
    # a constant is one value per row
    assert evaluate_frame(parse("1 + 1"), df, kinds).to_list() == [2.0, 2.0]


def test_mixed_results_need_a_view() -> None:
    df = pl.DataFrame({"a": [1.0, -1.0]})
    kinds: dict[str, ColumnKind] = {"a": "number"}
    ex = parse("if(${a} > 0, 5, 'none')")
    with pytest.raises(ExpressionError, match="depending on the row"):
        to_polars(ex, kinds)
    assert evaluate_frame(ex, df, kinds, result="string").to_list() == ["5", "none"]
    assert evaluate_frame(ex, df, kinds, result="number").to_list()[0] == 5.0
    assert evaluate_frame(ex, df, kinds, result="boolean").to_list() == [True, True]


def test_date_columns_may_be_polars_dates() -> None:
    df = pl.DataFrame({"d": [dt.date(2018, 9, 1), None]})
    ex = parse("today() - ${d}")
    assert evaluate_frame(ex, df, {"d": "date"}, today=TODAY).to_list()[0] == 30.0
    assert math.isnan(evaluate_frame(ex, df, {"d": "date"}, today=TODAY).to_list()[1])
    assert evaluate_frame(ex, df, today=TODAY).to_list()[0] == 30.0  # kinds inferred


UNVECTORISABLE = [
    (". > 1", "'.' (the current answer"),
    ("string-length()", "string-length() of '.'"),
    ("count(${a})", "count() (repeats live in child tables)"),
    ("${missing} > 1", "not a column of the table"),
    ("regex(${b}, ${b})", "pattern that is not a constant"),
    ("regex(${b}, '(?<=a)b')", "a look-around"),
    ("regex(${b}, '(a)\\1')", "a back-reference"),
    ("regex(${b}, '\\bword')", "a word boundary"),
    ("regex(${b}, '(?i)abc')", "inline flags"),
    ("regex(${b}, 'a$b')", "'$' followed by more pattern"),
    ("today() = ${b}", "pass today="),
]


@pytest.mark.parametrize(("source", "message"), UNVECTORISABLE)
def test_what_cannot_be_vectorised_fails_at_compile_time(source: str, message: str) -> None:
    kinds: dict[str, ColumnKind] = {"a": "number", "b": "text"}
    with pytest.raises(ExpressionError) as err:
        to_polars(parse(source), kinds)
    assert message in str(err.value)


def test_bare_names_cannot_be_vectorised() -> None:
    with pytest.raises(ExpressionError, match="bare name 'region'"):
        to_polars(parse("region = ${r}", bare_names="choice"), {"r": "text"})


def test_substituted_current_and_bare_names_vectorise() -> None:
    df = pl.DataFrame({"age": [5.0, 12.0, None], "total": [10.0, 10.0, 10.0], "r": ["e", "e", "w"]})
    kinds: dict[str, ColumnKind] = {"age": "number", "total": "number", "r": "text"}
    ex = parse(". >= 0 and . <= ${total}").substitute(current="age")
    assert evaluate_frame(ex, df, kinds).to_list() == [True, False, False]
    choice = parse("region = ${r}", bare_names="choice").substitute(bare={"region": "e"})
    assert evaluate_frame(choice, df, kinds).to_list() == [True, True, False]


# --- differential: random expressions over a random table --------------------------------------

NUMBERS = st.one_of(
    st.none(),
    st.integers(-1000, 1000).map(float),
    st.floats(-1e6, 1e6).map(lambda x: round(x, 3)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.5, 2.5, -2.5, 1e16, 1.5e-5, 0.1]),
)
TEXTS = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "",
            "x",
            "y",
            "x y",
            " y  z ",
            "z\tx",
            "12",
            " 3.5 ",
            "-.5",
            "１２",
            "\u30005\u3000",
            "\x1c5",
            "1e5",
            "abc",
            "2018-10-01",
            " 2018-02-30 ",
            "2018-10-01T12:30:00.5+08:00",
            "2018-10-01T23:59Z",
            "0000-01-01",
            "NaN",
            "true",
            "微信 支付",
            "a\n",
        ]
    ),
    st.text(max_size=8),
)
DATES = st.one_of(
    st.none(),
    st.just(""),
    st.just("2018-02-30"),
    st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31)).map(dt.date.isoformat),
)
ROWS = 50
frames_st = st.tuples(
    st.lists(NUMBERS, min_size=ROWS, max_size=ROWS),
    st.lists(TEXTS, min_size=ROWS, max_size=ROWS),
    st.lists(DATES, min_size=ROWS, max_size=ROWS),
)
KINDS: dict[str, ColumnKind] = {"a": "number", "b": "text", "c": "date"}

expressions_st = expression_strategy(
    ["a", "b", "c"],
    ["'x'", "''", "'x y'", "'2018-10-01'", "' 7 '", "'[a-'", "0.5", "today()", "'^x'", "2"],
    max_leaves=10,
)
VIEWS: list[tuple[ResultKind, Callable[[Value], Value]]] = [
    ("number", to_number),
    ("string", to_string),
    ("boolean", to_boolean),
]
ALLOWED = ("pattern that is not a constant", "depending on the row", "bad pattern")


def _check_like_scalar(source: str, df: pl.DataFrame, fold: bool) -> None:
    try:
        ex = parse(source)
    except ExpressionError:
        return
    try:
        exprs = [
            to_polars(ex, KINDS, today=TODAY, result=view, fold_constants=fold).alias(view)
            for view, _ in VIEWS
        ]
    except ExpressionError as exc:
        assert any(a in str(exc) for a in ALLOWED), str(exc)
        return
    try:
        exprs.append(to_polars(ex, KINDS, today=TODAY, fold_constants=fold).alias("value"))
    except ExpressionError as exc:
        assert "depending on the row" in str(exc)
    out = df.select(exprs)
    for i, row in enumerate(df.iter_rows(named=True)):
        want = ex.evaluate(MappingScope(row, today_date=TODAY))
        for view, convert in VIEWS:
            got = out[view][i]
            expect = convert(want)
            assert _same(got, expect), (source, view, row, got, expect)
        if "value" in out.columns:
            got = out["value"][i]
            if got is None:
                assert want == "", (source, row, got, want)
            else:
                assert _same(got, want), (source, row, got, want)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=expressions_st, table=frames_st, fold=st.booleans())
def test_vectorised_equals_scalar_row_by_row(
    source: str, table: tuple[list[float | None], list[str | None], list[str | None]], fold: bool
) -> None:
    a, b, c = table
    df = pl.DataFrame(
        {"a": a, "b": b, "c": c}, schema={"a": pl.Float64, "b": pl.Utf8, "c": pl.Utf8}
    )
    _check_like_scalar(source, df, fold)


# --- focused differentials ----------------------------------------------------------------------


def _random_floats(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    out: list[float] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.4:
            out.append(struct.unpack("d", struct.pack("Q", rng.getrandbits(64)))[0])
        elif r < 0.7:
            out.append(round(rng.uniform(-1000, 1000), rng.randint(0, 6)))
        elif r < 0.9:
            out.append(float(rng.randint(-100, 100)))
        else:
            out.append(rng.choice([0.0, -0.0, math.inf, -math.inf, math.nan, 1e16, 1e-5, 5e-324]))
    return out


def _column_check(source: str, data: dict[str, list[object]], kinds: dict[str, ColumnKind]) -> None:
    ex = parse(source)
    df = pl.DataFrame(
        data, schema={k: pl.Float64 if v == "number" else pl.Utf8 for k, v in kinds.items()}
    )
    got = evaluate_frame(ex, df, kinds, today=TODAY, result="string").to_list()
    for row, g in zip(df.iter_rows(named=True), got, strict=True):
        want = to_string(ex.evaluate(MappingScope(row, today_date=TODAY)))
        assert g == want, (source, row, g, want)  # exact: the string shows every bit


@pytest.mark.parametrize(
    "source",
    [
        "${x}",  # number to string: Python's repr
        "${x} + ${y}",
        "${x} - ${y}",
        "${x} * ${y}",
        "${x} div ${y}",
        "${x} mod ${y}",
        "pow(${x}, ${y})",
        "round(${x}, ${k})",
        "round(${x})",
        "int(${x}) + floor(${y}) + ceiling(${x})",
        "min(${x}, ${y}, 0)",
        "max(-0, ${x}, ${y})",
        "${x} div 3",  # constant operands take other Polars kernels
        "3 - ${x}",
        "${x} + 0",
        "pow(${x}, 0.5)",
        "pow(2, ${x})",
        "pow(${x}, 2)",
        "${x} mod 0.1",
        "date(${x})",
        "1 div if(${k} = ${k}, 3, 3)",
    ],
)
def test_numbers_are_bit_for_bit(source: str) -> None:
    n = 20_000
    xs, ys = _random_floats(n, 1), _random_floats(n, 2)
    rng = random.Random(3)
    ks = [float(rng.randint(-20, 20)) + rng.choice([0.0, 0.0, 0.5, -0.7]) for _ in range(n)]
    data: dict[str, list[object]] = {"x": list(xs), "y": list(ys), "k": list(ks)}
    kinds: dict[str, ColumnKind] = {"x": "number", "y": "number", "k": "number"}
    _column_check(source, data, kinds)


TRICKY_TEXT = [
    "",
    "12",
    " 12 ",
    "\t-3.25\n",
    "-.5",
    "5.",
    ".",
    "-",
    "+5",
    "1e5",
    "0x10",
    "１２３",
    "\u3000４\u3000",
    "٣.٥",
    "\x1c5",
    "5\x1f",
    "\xa07",
    "007",
    "-0",
    "9" * 400,
    "0." + "0" * 400 + "1",
    "2018-10-01",
    " 2018-10-01\n",
    "2018-02-29",
    "2016-02-29",
    "0000-01-01",
    "0001-01-01",
    "9999-12-31",
    "2018-1-01",
    "２０１８-10-01",
    "2018-10-01T12:30",
    "2018-10-01T12:30:15",
    "2018-10-01T12:30:15.1234567",
    "2018-10-01T12:30:15.5Z",
    "2018-10-01T12:30+08:00",
    "2018-10-01T12:30-0530",
    "2018-10-01T12:30+05:75",
    "2018-10-01T12:30+24:00",
    "2018-10-01T24:00",
    "2018-10-01T12:60",
    "2018-10-01T12:30:60",
    "1600-03-01T00:00:00.000001",
    "2018-10-01 12:30",
    "NaN",
    "Infinity",
    "true",
    "微信",
]


@pytest.mark.parametrize(
    "source",
    [
        "number(${s})",
        "${s} + 0",
        "${s} < 17805",
        "${s} = 12",
        "${s} = '12'",
        "boolean(${s})",
        "string-length(${s})",
        "normalize-space(${s})",
        "count-selected(${s})",
        "selected(${s}, '12')",
        "selected-at(${s}, 1)",
        "substr(${s}, 1, 3)",
    ],
)
def test_text_conversions_are_exact(source: str) -> None:
    _column_check(source, {"s": list(TRICKY_TEXT)}, {"s": "text"})


REGEXES = [
    "^1[3-9][0-9]{9}$",
    r"^\d+$",
    r"\w+@\w+\.com",
    r"^\s*$",
    "^(yes|no)$",
    "a|b$",
    "^$",
    "x?$",
    r"[^\d\s]",
    "[]a]",
    r"\.",
    "^.$",
    "a{2,3}?",
    r"\Aab\Z",
    "(ab)+$",
    "微信",
    "[a-c&&b]",
    "[[]",
    "a[-]b",
    r"\x41",
    "^[^a]$",
    "",
]
SUBJECTS = [
    "",
    "13812345678",
    "13812345678\n",
    "12345",
    "٣٤",
    "abc",
    "a@b.com",
    " \n",
    "\n",
    "yes",
    "yes\n",
    "no\n\n",
    "x\n",
    "\x1c",
    "a",
    "b\n",
    "aaa",
    "ab",
    "ab\n",
    "使用微信支付",
    "]",
    "[",
    "&",
    "a-b",
    "A",
    "\n\n",
    "²",
]


@pytest.mark.filterwarnings("ignore::FutureWarning")  # Python warns about "&&" and "[["
@pytest.mark.parametrize("pattern", REGEXES)
def test_regex_matches_python_re(pattern: str) -> None:
    source = "regex(${s}, '" + pattern + "')"
    _column_check(source, {"s": list(SUBJECTS)}, {"s": "text"})
