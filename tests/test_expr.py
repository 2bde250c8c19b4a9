"""The expression evaluator, table-driven: each row is an expression, the answers it reads,
and the value XPath 1.0 (with ODK's functions) gives, worked out by hand."""

from __future__ import annotations

import contextlib
import datetime as dt
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from impactstudy.forms.expr import (
    ExpressionError,
    MappingScope,
    parse,
    to_boolean,
    to_number,
    to_string,
)

CASES = [
    # arithmetic and precedence
    ("1 + 2 * 3", {}, 7.0),
    ("(1 + 2) * 3", {}, 9.0),
    ("7 div 2", {}, 3.5),
    ("7 mod 3", {}, 1.0),
    ("-7 mod 3", {}, -1.0),  # XPath mod keeps the sign of the dividend
    ("- 2 + 5", {}, 3.0),
    ("1 div 0", {}, math.inf),
    ("-1 div 0", {}, -math.inf),
    ("10 - 2 - 3", {}, 5.0),  # left-associative
    ("${a}-${b}", {"a": 9, "b": 4}, 5.0),
    # references and blanks
    ("${age} >= 18", {"age": 20}, True),
    ("${age} >= 18", {"age": 17}, False),
    ("${age} >= 18", {}, False),  # blank is NaN: every comparison false
    ("${age} < 18", {}, False),
    ("${name} = ''", {}, True),
    ("${name} != ''", {"name": "张三"}, True),
    ("${age} + 1", {}, math.nan),
    ("${age} = '20'", {"age": 20}, True),  # number vs string compares as numbers
    ("${choice} = 'yes'", {"choice": "yes"}, True),
    # boolean logic
    ("${a} > 1 and ${b} > 1", {"a": 2, "b": 0}, False),
    ("${a} > 1 or ${b} > 1", {"a": 2, "b": 0}, True),
    ("not(${a} > 1)", {"a": 0}, True),
    ("true() and not(false())", {}, True),
    ("1 < 2 = true()", {}, True),  # relational binds tighter than equality
    # selects
    ("selected(${pay}, 'retail')", {"pay": "cash retail wechat"}, True),
    ("selected(${pay}, 'ret')", {"pay": "cash retail wechat"}, False),
    ("selected(${pay}, 'retail')", {"pay": ["cash", "retail"]}, True),
    ("count-selected(${pay})", {"pay": "cash retail wechat"}, 3.0),
    ("count-selected(${pay})", {}, 0.0),
    ("selected-at(${pay}, 0)", {"pay": "cash retail wechat"}, "cash"),
    ("selected-at(${pay}, 5)", {"pay": "cash retail"}, ""),
    # ODK functions
    ("if(${a} > 1, 'x', 'y')", {"a": 2}, "x"),
    ("if(${a} > 1, 'x', 'y')", {"a": 1}, "y"),
    ("coalesce(${nick}, ${name})", {"name": "张三"}, "张三"),
    ("coalesce(${nick}, ${name})", {"nick": "小张", "name": "张三"}, "小张"),
    ("string-length(${name})", {"name": "张三丰"}, 3.0),
    ("concat(${a}, '-', ${b})", {"a": "x", "b": 2}, "x-2"),
    ("regex(${phone}, '^1[3-9][0-9]{9}$')", {"phone": "13812345678"}, True),
    ("regex(${phone}, '^1[3-9][0-9]{9}$')", {"phone": "12345"}, False),
    ("round(2.5)", {}, 3.0),
    ("round(-2.5)", {}, -2.0),  # XPath round: floor(x + 0.5)
    ("round(2.345, 2)", {}, 2.35),  # ODK two-argument round: half up
    ("round(1.005, 2)", {}, 1.01),  # on the decimal written, not the binary float
    ("int(-2.7)", {}, -2.0),
    ("int(2.7)", {}, 2.0),
    ("number('3.5')", {}, 3.5),
    ("number('abc')", {}, math.nan),
    ("number('')", {}, math.nan),
    ("number(true())", {}, 1.0),
    ("string(3)", {}, "3"),
    ("string(0.5)", {}, "0.5"),
    ("boolean('')", {}, False),
    ("boolean(0)", {}, False),
    ("boolean('0')", {}, True),  # a non-empty string is true
    ("min(3, 1, 2)", {}, 1.0),
    ("max(3, ${x})", {"x": 7}, 7.0),
    ("contains(${s}, '微信')", {"s": "使用微信支付"}, True),
    ("substr('abcdef', 1, 3)", {}, "bc"),
    ("floor(-1.5) + ceiling(1.2)", {}, 0.0),
    ("abs(-3)", {}, 3.0),
    ("pow(2, 10)", {}, 1024.0),
    # dates count as days since 1970-01-01
    ("today()", {}, "2018-10-01"),
    ("${d} < today()", {"d": "2018-09-30"}, True),
    ("${d} <= today()", {"d": "2018-10-02"}, False),
    ("today() - ${d}", {"d": "2018-09-01"}, 30.0),
    ("number('1970-01-11')", {}, 10.0),
    ("date(17805)", {}, "2018-10-01"),
]


@pytest.mark.parametrize(("source", "answers", "expected"), CASES)
def test_evaluates_like_xpath(source: str, answers: dict[str, object], expected: object) -> None:
    got = parse(source).evaluate(MappingScope(answers, today_date=dt.date(2018, 10, 1)))
    if isinstance(expected, float) and math.isnan(expected):
        assert isinstance(got, float) and math.isnan(got)
    else:
        assert got == expected
        assert type(got) is type(expected)


def test_current_value_is_dot() -> None:
    ex = parse(". >= 0 and . <= ${total}")
    assert ex.uses_current
    assert ex.evaluate(MappingScope({"total": 10}, current_value=10)) is True
    assert ex.evaluate(MappingScope({"total": 10}, current_value=11)) is False


def test_choice_filter_reads_choice_columns() -> None:
    ex = parse("region = ${region}", bare_names="choice")
    assert ex.bare_names == {"region"}
    assert ex.boolean(MappingScope({"region": "east"}, choice={"region": "east"}))
    assert not ex.boolean(MappingScope({"region": "east"}, choice={"region": "west"}))


def test_model_formula_names() -> None:
    ex = parse("est.W088 * frame.wechat_mau + hist.jobs_driven.2017", bare_names="model")
    assert ex.bare_names == {"est.W088", "frame.wechat_mau", "hist.jobs_driven.2017"}


def test_model_formulas_may_write_exponents() -> None:
    ex = parse("frame.x * 1e-2 + 2.5E3", bare_names="model")
    assert ex.evaluate(MappingScope({}, choice={"frame.x": 100})) == 2501.0


def test_refs_are_collected() -> None:
    ex = parse("if(selected(${a}, 'x'), ${b}, coalesce(${c}, ../d))")
    assert ex.refs == {"a", "b", "c", "d"}


BAD = [
    ("", "empty expression"),
    ("${a} >", "unexpected end of expression"),
    ("(${a} > 1", "expected ')'"),
    ("${a} > 1)", "unexpected ')'"),
    ("foo(${a})", "unknown function foo()"),
    ("selected(${a})", "selected() takes 2 arguments, got 1"),
    ("if(${a}, 1)", "if() takes 3 arguments, got 2"),
    ("today(1)", "today() takes 0 arguments, got 1"),
    ("age > 18", "refer to a field as ${age}"),
    ("${a b} = 1", "bad field reference"),
    ("${a} = 'open", "unexpected character"),
    ("regex(${a}, '[0-9')", "regex(): bad pattern"),
    ("${a} # 1", "unexpected character '#'"),
    ("1 2", "unexpected '2'"),
    ("${a} > 1e6", "XPath numbers have no exponent"),
]


@pytest.mark.parametrize(("source", "message"), BAD)
def test_malformed_expressions_fail_at_parse_time(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=None) as err:
        parse(source)
    assert message in str(err.value)


def test_minus_inside_a_bare_name_is_explained() -> None:
    with pytest.raises(ExpressionError, match="put spaces around '-'"):
        parse("est.a-est.b", bare_names="model")


def test_conversions_follow_xpath() -> None:
    assert to_string(1.0) == "1"
    assert to_string(math.nan) == "NaN"
    assert to_string(True) == "true"
    assert to_number("  42 ") == 42.0
    assert to_boolean(math.nan) is False
    assert to_boolean("false") is True  # any non-empty string


# --- property: evaluation raises nothing but ExpressionError --------------------------------

FIELDS = ["a", "b", "c"]
answers_st = st.dictionaries(
    st.sampled_from(FIELDS),
    st.one_of(
        st.none(),
        st.integers(-(10**12), 10**12),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
        st.lists(st.sampled_from(["x", "y", "z"]), max_size=3),
        st.dates().map(dt.date.isoformat),
    ),
)


def expression_strategy(
    fields: list[str], literals: list[str], max_leaves: int
) -> st.SearchStrategy[str]:
    """Random expressions over `${field}` references and literals, through every operator and
    most functions: shared by the scalar and the vectorised evaluators' property tests."""
    atoms = st.one_of(
        st.sampled_from([f"${{{f}}}" for f in fields]),
        st.integers(-1000, 1000).map(str),
        st.sampled_from(literals),
    )
    return st.recursive(atoms, _combine, max_leaves=max_leaves)


def _combine(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    ops = ["+", "-", "*", "div", "mod", "=", "!=", "<", "<=", ">", ">=", "and", "or"]
    funcs1 = [
        "not",
        "number",
        "string",
        "int",
        "round",
        "count-selected",
        "string-length",
        "boolean",
        "floor",
        "ceiling",
        "abs",
        "date",
        "sum",
        "normalize-space",
    ]
    funcs2 = [
        "selected",
        "coalesce",
        "regex",
        "round",
        "selected-at",
        "contains",
        "starts-with",
        "ends-with",
        "pow",
        "min",
        "max",
        "substr",
        "join",
    ]
    return st.one_of(
        st.tuples(children, st.sampled_from(ops), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})"
        ),
        st.tuples(st.sampled_from(funcs1), children).map(lambda t: f"{t[0]}({t[1]})"),
        st.tuples(st.sampled_from(funcs2), children, children).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]})"
        ),
        st.tuples(children, children, children).map(lambda t: f"if({t[0]}, {t[1]}, {t[2]})"),
        st.tuples(children, children, children).map(lambda t: f"substr({t[0]}, {t[1]}, {t[2]})"),
        st.tuples(children, children, children).map(lambda t: f"max({t[0]}, {t[1]}, {t[2]})"),
        st.tuples(children, children).map(lambda t: f"concat({t[0]}, {t[1]})"),
        children.map(lambda c: f"-{c}"),
    )


expressions_st = expression_strategy(
    FIELDS, ["'x'", "''", "'2018-10-01'", "'[a-'", "0.5", "today()"], max_leaves=12
)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
@settings(max_examples=600, deadline=None)
@given(source=expressions_st, answers=answers_st)
def test_evaluation_raises_only_its_own_error(source: str, answers: dict[str, object]) -> None:
    try:
        ex = parse(source)
    except ExpressionError:  # e.g. a literal regex that does not compile
        return
    try:
        value = ex.evaluate(MappingScope(answers))
    except ExpressionError:
        return
    assert isinstance(value, str | float | bool | list)
    # the conversions are total on every value the evaluator returns
    to_string(value)
    to_number(value)
    to_boolean(value)


@settings(max_examples=300, deadline=None)
@given(source=st.text(max_size=30))
def test_parsing_raises_only_its_own_error(source: str) -> None:
    with contextlib.suppress(ExpressionError):
        parse(source)
