"""Loading XLSForms and validating submissions, as a table of cases.

The fixture `household.md` is an XLSForm (pyxform reads the markdown layout as it reads a
workbook) that uses every supported type and column: metadata, note, select_one with a
choice_filter, select_multiple with or_other, integer/decimal/text/date with constraints
and messages in two languages, a relevant group, a counted repeat with a calculation, and
calculations over the repeat.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from impactstudy.forms import Form, FormError, fill_calculations, load_form, validate_submission

FIXTURES = Path(__file__).parent / "fixtures" / "forms"
TODAY = dt.date(2018, 10, 15)


@pytest.fixture(scope="module")
def form() -> Form:
    return load_form(FIXTURES / "household.md")


def good() -> dict[str, Any]:
    return {
        "start": "2018-10-15T09:00:00+08:00",
        "end": "2018-10-15T09:12:30+08:00",
        "today": "2018-10-15",
        "deviceid": "imei:356938035643809",
        "region": "east",
        "city": "hangzhou",
        "age": 41,
        "phone": "13812345678",
        "joined": "2013-05-01",
        "pay": "wechat cash",
        "spend": 1200.5,
        "incr": 30,
        "n_children": 2,
        "children": [{"child_age": 15, "child_uses": "yes"}, {"child_age": 8}],
    }


def test_form_model(form: Form) -> None:
    assert form.form_id == "household"
    assert form.version == "2018100101"
    assert form.default_language == "zh"
    assert form.languages == ("en", "zh")
    assert [f.name for f in form.questions] == [
        "region",
        "city",
        "age",
        "phone",
        "joined",
        "pay",
        "spend",
        "incr",
        "n_children",
        "child_age",
        "child_uses",
    ]
    assert form.fields["child_age"].repeats == ("children",)
    assert form.fields["incr"].ancestors == ("spending",)
    assert form.fields["incr"].default == "50"
    assert form.fields["city"].appearance == "minimal"
    assert form.fields["age"].hints == {"zh": "周岁", "en": "Years"}
    assert form.fields["pay_other"].generated
    assert form.choices("city").names == ("shanghai", "hangzhou", "chengdu")
    assert "<h:html" in form.xform  # pyxform built the XForm too


def test_a_good_submission_has_no_problem(form: Form) -> None:
    assert validate_submission(form, good(), today=TODAY) == []


def test_calculations_fill_in_over_repeats(form: Form) -> None:
    filled, problems = fill_calculations(form, good(), today=TODAY)
    assert problems == []
    assert [c["child_adult"] for c in filled["children"]] == [0.0, 0.0]
    assert filled["n_adult_kids"] == 0.0
    assert filled["age_band"] == "older"
    older = {
        **good(),
        "children": [{"child_age": 19, "child_uses": "no"}, {"child_age": 20, "child_uses": "no"}],
    }
    filled, _ = fill_calculations(form, older, today=TODAY)
    assert filled["n_adult_kids"] == 2.0


def _with(**changes: Any) -> dict[str, Any]:
    data = good()
    for k, v in changes.items():
        if v is ...:
            data.pop(k, None)
        else:
            data[k] = v
    return data


# (case, submission, expected [(field, code)])
CASES: list[tuple[str, dict[str, Any], list[tuple[str, str]]]] = [
    # a blank or non-numeric age is NaN, so the children's `. < ${age}` fails too (as in ODK)
    (
        "required missing",
        _with(age=...),
        [("age", "required"), ("child_age", "constraint"), ("child_age", "constraint")],
    ),
    ("required blank string", _with(region=""), [("region", "required"), ("city", "choice")]),
    (
        "integer type",
        _with(age="forty"),
        [("age", "type"), ("child_age", "constraint"), ("child_age", "constraint")],
    ),
    ("integer given as float", _with(age=41.5), [("age", "type")]),
    ("integer as digits is fine", _with(age="41"), []),
    ("decimal type", _with(spend="lots"), [("spend", "type"), ("incr", "relevance")]),
    ("date type", _with(joined="2013-13-01"), [("joined", "type")]),
    ("date in the future", _with(joined="2019-01-01"), [("joined", "constraint")]),
    ("constraint low", _with(age=15), [("age", "constraint"), ("child_age", "constraint")]),
    ("constraint regex", _with(phone="1234"), [("phone", "constraint")]),
    ("choice not in list", _with(region="north"), [("region", "choice"), ("city", "choice")]),
    ("choice filtered out", _with(city="chengdu"), [("city", "choice")]),
    ("multiple: unknown code", _with(pay="wechat bitcoin"), [("pay", "choice")]),
    ("multiple: as a list", _with(pay=["wechat", "cash"]), []),
    ("multiple: twice", _with(pay="wechat wechat"), [("pay", "choice")]),
    (
        "multiple: none with others",
        _with(pay="none cash"),
        [("pay", "constraint"), ("spend", "relevance"), ("incr", "relevance")],
    ),
    ("or_other: other and its text", _with(pay="other", pay_other="数字人民币"), []),
    ("or_other: text without other", _with(pay_other="x"), [("pay_other", "relevance")]),
    ("irrelevant group answered", _with(pay="none", spend=...), [("incr", "relevance")]),
    ("relevant follow-up skipped is fine", _with(incr=...), []),
    ("follow-up irrelevant", _with(spend=0), [("incr", "relevance")]),
    ("repeat count short", _with(n_children=3), [("children", "repeat_count")]),
    ("repeat not relevant", _with(n_children=0), [("children", "relevance")]),
    (
        "repeat constraint uses outer field",
        _with(children=[{"child_age": 45, "child_uses": "no"}, {"child_age": 8}]),
        [("child_age", "constraint")],
    ),
    (
        "repeat relevance per instance",
        _with(
            children=[{"child_age": 15, "child_uses": "yes"}, {"child_age": 8, "child_uses": "no"}]
        ),
        [("child_uses", "relevance")],
    ),
    (
        "repeat required per instance",
        _with(children=[{"child_age": 15}, {"child_age": 8}]),
        [("child_uses", "required")],
    ),
    ("repeat not a list", _with(children={"child_age": 3}), [("children", "type")]),
    ("note answered", _with(intro="hello"), [("intro", "note")]),
    ("unknown field", _with(income=5000), [("income", "unknown")]),
    ("repeat field at top level", _with(child_age=5), [("child_age", "unknown")]),
    ("calculation disagrees", _with(age_band="young"), [("age_band", "calculation")]),
    ("calculation agrees", _with(age_band="older"), []),
    ("start not a timestamp", _with(start="yesterday"), [("start", "type")]),
]


@pytest.mark.parametrize(
    ("submission", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_validate_submission(
    form: Form, submission: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    problems = validate_submission(form, submission, today=TODAY)
    assert sorted((p.field or "", p.code) for p in problems) == sorted(expected)


def test_problem_places_repeat_instance_and_message_language(form: Form) -> None:
    sub = _with(
        children=[{"child_age": 15, "child_uses": "yes"}, {"child_age": 50, "child_uses": "no"}]
    )
    (p,) = validate_submission(form, sub, today=TODAY)
    assert p.instance == (1,)
    assert "child_age[2]" in str(p)
    assert "须小于本人年龄" in p.message
    (p_en,) = validate_submission(form, sub, today=TODAY, language="en")
    assert "Must be below your age" in p_en.message


def test_not_a_mapping(form: Form) -> None:
    (p,) = validate_submission(form, ["age", 41], today=TODAY)  # type: ignore[arg-type]
    assert p.code == "type"


# --- loading problems -------------------------------------------------------------------------


def _xlsx(
    path: Path,
    survey: list[list[Any]],
    choices: list[list[Any]] | None = None,
    settings: list[list[Any]] | None = None,
) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "survey"
    for row in survey:
        ws.append(row)
    if choices is not None:
        c = wb.create_sheet("choices")
        for row in choices:
            c.append(row)
    if settings is not None:
        s = wb.create_sheet("settings")
        for row in settings:
            s.append(row)
    wb.save(path)
    return path


HEAD = ["type", "name", "label::zh", "label::en", "relevant", "constraint", "calculation"]
CHOICES = [
    ["list_name", "name", "label::zh", "label::en"],
    ["yn", "yes", "是", "Yes"],
    ["yn", "no", "否", "No"],
]

LOAD_CASES: list[tuple[str, list[list[Any]], list[tuple[int | None, str | None, str]]]] = [
    (
        "malformed relevant",
        [HEAD, ["integer", "a", "甲", "A"], ["integer", "b", "乙", "B", "${a} >"]],
        [(3, "relevant", "relevant of 'b' is malformed")],
    ),
    (
        "unknown function",
        [HEAD, ["integer", "a", "甲", "A", None, "sqrt(.) > 1"]],
        [(2, "constraint", "unknown function sqrt()")],
    ),
    (
        "two problems at once",
        [HEAD, ["integer", "a", "甲", "A", "${a} >"], ["integer", "b", "乙", None]],
        [(2, "relevant", "malformed"), (3, "label::en", "missing in language 'en'")],
    ),
    (
        "cyclic calculations",
        [
            HEAD,
            ["integer", "a", "甲", "A"],
            ["calculate", "x", None, None, None, None, "${y} + ${a}"],
            ["calculate", "y", None, None, None, None, "${x} * 2"],
        ],
        [(3, "calculation", "calculations form a cycle: x -> y -> x")],
    ),
    (
        "choice code typo in a relevant",
        [HEAD, ["select_one yn", "a", "甲", "A"], ["integer", "b", "乙", "B", "${a} = 'yse'"]],
        [(3, "relevant", "'yse' is not a choice of ${a}")],
    ),
    (
        "no questions",
        [HEAD, ["calculate", "x", None, None, None, None, "1 + 1"]],
        [(None, None, "the questionnaire has no questions")],
    ),
    (
        "same name in two groups",
        [
            HEAD,
            ["begin_group", "g", "组", "G"],
            ["integer", "a", "甲", "A"],
            ["end_group"],
            ["integer", "a", "乙", "B"],
        ],
        [(5, "name", "field name 'a' is used twice (rows 3, 5)")],
    ),
    (
        "dot outside a constraint",
        [HEAD, ["integer", "a", "甲", "A", ". > 1"]],
        [(2, "relevant", "only means something in a constraint")],
    ),
    (
        "unknown question type (pyxform)",
        [HEAD, ["intger", "a", "甲", "A"]],
        [(2, "type", "nknown or unsupported question type 'intger'")],
    ),
    (
        "unknown reference (pyxform)",
        [HEAD, ["integer", "a", "甲", "A", "${zz} > 1"]],
        [(2, None, "Could not find the name 'zz'")],
    ),
]


@pytest.mark.parametrize(
    ("survey", "expected"), [c[1:] for c in LOAD_CASES], ids=[c[0] for c in LOAD_CASES]
)
def test_load_problems_name_row_and_column(
    tmp_path: Path, survey: list[list[Any]], expected: list[tuple[int | None, str | None, str]]
) -> None:
    path = _xlsx(tmp_path / "f.xlsx", survey, CHOICES)
    with pytest.raises(FormError) as err:
        load_form(path, languages=["zh", "en"])
    got = err.value.problems
    assert len(got) == len(expected), [str(p) for p in got]
    for p, (row, column, text) in zip(got, expected, strict=True):
        assert p.row == row, str(p)
        assert p.column == column, str(p)
        assert text in p.message, str(p)
        assert p.file == str(path)


def test_empty_and_fake_workbooks(tmp_path: Path) -> None:
    empty = tmp_path / "empty.xlsx"
    empty.write_bytes(b"")
    with pytest.raises(FormError, match="the file is empty"):
        load_form(empty)
    fake = tmp_path / "fake.xlsx"
    fake.write_text("type,name\ninteger,a\n", encoding="utf-8")
    with pytest.raises(FormError, match=r"not a valid \.xlsx workbook"):
        load_form(fake)
    with pytest.raises(FormError, match="not found"):
        load_form(tmp_path / "missing.xlsx")


# --- property: validation never raises, whatever a client sends ------------------------------

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**15), 10**15),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["yes", "no", "1", "5", "beijing", "2018-10-01", "retail catering", "other"]),
    st.lists(st.sampled_from(["retail", "catering", "none", "x"]), max_size=3),
    st.dates(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_validation_returns_problems_and_never_raises(form: Form, data: st.DataObject) -> None:
    names = [*sorted(form.fields), "not_a_field"]
    answers = data.draw(st.dictionaries(st.sampled_from(names), _values, max_size=12))
    if "children" in answers and data.draw(st.booleans()):
        answers["children"] = data.draw(
            st.lists(
                st.dictionaries(st.sampled_from(["child_age", "child_uses", "x"]), _values),
                max_size=3,
            )
        )
    problems = validate_submission(form, answers, today=TODAY)
    assert all(isinstance(p.message, str) and p.code for p in problems)
