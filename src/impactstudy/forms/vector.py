"""The XLSForm expression language over a whole table at once: a Polars backend.

`expr.py` parses an expression once and evaluates it per submission. The simulator, the
estimates and the quality rules need the same expressions over thousands of responses, so
this module compiles the same parsed tree (`Expression.tree`) to one `polars.Expr` that gives,
row by row, the value the scalar evaluator gives, with no Python per row.

XPath values are dynamically typed: `${income}` is a number, or the empty string when it is
blank; `if(c, 1, 'x')` is a number on some rows and a string on others. So a compiled value
carries one Polars expression per type it can take (number, string, boolean); on a row,
exactly one of them is non-null. Conversions, comparisons and functions dispatch on that,
exactly as `to_number`, `to_string`, `to_boolean` and `_compare` do.

The result (`result="value"`) is Float64, Utf8 or Boolean. A number or boolean that may be
blank is Float64 or Boolean with null where the scalar evaluator returns "". An expression
that is a number on some rows and text on others cannot be one column: ask for
`result="number" | "string" | "boolean"` (the `Expression.number/string/boolean` views).

Exactness. Polars' own float kernels take shortcuts the scalar code does not: `x / c` with a
constant is `x * (1 / c)`, `x + 0.0` keeps -0.0, `pow(x, 0.5)` is `sqrt`, `%` is floored and
inexact, float-to-string is not Python's `repr`. The helpers below avoid each of them (see
`_ones`, `_fmod`, `_num_to_string`, `_round_half_up`), so results are the scalar ones bit
for bit, with one known exception: a datetime string before 1685 or after 2255 may differ in
the last bit of its day count (`_datetime_days`).

Size. Every operator binds its operands once (`_let`, a struct evaluated once), so the
Polars expression grows linearly with the XLSForm expression; without it, each reuse of an
operand would copy its whole subtree.

What cannot be vectorised raises `ExpressionError` at compile time, naming the construct:
`.` (the current answer), bare names (choice_filter columns), `count()` (repeats live in
child tables), a field that is not a column of the table, `regex()` whose pattern is not a
constant or uses what Rust's engine does differently (look-around, back-references, `\\b`,
flags, `$` before more pattern), and `today()`/`now()` when their value was not given.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import importlib
import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

from impactstudy.forms.expr import (
    FUNCTIONS,
    Expression,
    ExpressionError,
    Node,
    NodeSet,
    Value,
    _compile,
    to_boolean,
    to_number,
    to_string,
)
from impactstudy.forms.model import Field, Form

__all__ = ["ColumnKind", "ResultKind", "column_kinds", "evaluate_frame", "field_kind", "to_polars"]

ColumnKind = Literal["number", "text", "date"]
ResultKind = Literal["value", "number", "string", "boolean"]

F64 = pl.Float64
I64 = pl.Int64
I128 = pl.Int128
NAN = math.nan
INF = math.inf
_MIN_DAY = (dt.date.min - dt.date(1970, 1, 1)).days  # -719162, 0001-01-01
_MAX_DAY = (dt.date.max - dt.date(1970, 1, 1)).days  # 2932896, 9999-12-31

# ---------------------------------------------------------------------------------------
# Python's character classes, as Rust regex classes and plain character sets.
# Python's str.split/strip and re's \s, \d, \w are Unicode-aware with their own tables;
# Rust's differ at the edges (U+001C-U+001F are whitespace to Python only), so both sides
# use Python's own tables.


@functools.cache
def _ranges(category: str) -> tuple[tuple[int, int], ...]:
    """Code point ranges Python's `re` matches with `\\s`, `\\d` or `\\w` (no surrogates)."""
    out: list[tuple[int, int]] = []
    for lo, hi in ((0, 0xD800), (0xE000, 0x110000)):  # runs of consecutive code points
        text = "".join(map(chr, range(lo, hi)))
        out.extend((lo + m.start(), lo + m.end() - 1) for m in re.finditer(category + "+", text))
    return tuple(out)


def _rx_char(cp: int) -> str:
    c = chr(cp)
    return c if c.isascii() and c.isalnum() else f"\\x{{{cp:x}}}"


def _rx_ranges(ranges: Sequence[tuple[int, int]]) -> str:
    return "".join(_rx_char(a) if a == b else f"{_rx_char(a)}-{_rx_char(b)}" for a, b in ranges)


def _rx_class(category: str, negate: bool = False) -> str:
    return ("[^" if negate else "[") + _rx_ranges(_ranges(category)) + "]"


@functools.cache
def _space_chars() -> str:
    """Python's whitespace (str.isspace: what str.split and str.strip use)."""
    return "".join(chr(c) for a, b in _ranges(r"\s") for c in range(a, b + 1))


@functools.cache
def _float_space_chars() -> str:
    """The whitespace float() strips: Python's, less U+001C-U+001F."""
    return "".join(c for c in _space_chars() if not "\x1c" <= c <= "\x1f")


@functools.cache
def _digit_map() -> tuple[list[str], list[str]]:
    """Non-ASCII decimal digits (which float() accepts) and their ASCII values."""
    digits = [chr(c) for a, b in _ranges(r"\d") for c in range(a, b + 1) if c > 0x7F]
    return digits, [str(unicodedata.decimal(d)) for d in digits]


@functools.cache
def _number_pattern() -> str:
    """`expr._NUMBER_RE` (with the strings float() then accepts), in Rust syntax."""
    ws = "[" + "".join(_rx_char(ord(c)) for c in _float_space_chars()) + "]"
    d = _rx_class(r"\d")
    return rf"\A{ws}*-?(?:{d}+(?:\.{d}*)?|\.{d}+){ws}*\z"


_DATE_PATTERN = r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}\z"
_DATETIME_PATTERN = (
    r"\A([0-9]{4}-[0-9]{2}-[0-9]{2})T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?"
    r"(?:(Z)|([+-])([0-9]{2}):?([0-9]{2}))?\z"
)
_FLOAT_TEXT = r"\A([0-9]+)(?:\.([0-9]+))?(?:e([+-]?[0-9]+))?\z"

# ---------------------------------------------------------------------------------------
# Bindings and exact float kernels

_BOUND_ONES: contextvars.ContextVar[pl.Expr | None] = contextvars.ContextVar(
    "_BOUND_ONES", default=None
)


def _ones() -> pl.Expr:
    """A materialised column of 1.0.

    Polars evaluates `x op c` with a constant (or constant-looking) operand by shortcut
    kernels that are not IEEE: `x / c` is `x * (1 / c)`, `x + 0.0` keeps -0.0, `pow` with
    a constant exponent becomes `sqrt` or repeated multiplication. Multiplying an operand
    by this column (exact: x * 1.0 == x, signs and NaN kept) forces the exact kernels.
    """
    bound = _BOUND_ONES.get()
    if bound is not None:
        return bound
    return pl.int_range(pl.len()).cast(F64) * 0.0 + 1.0


def _m(x: pl.Expr) -> pl.Expr:
    return x * _ones()


def _let(body: Callable[..., pl.Expr], *inputs: pl.Expr) -> pl.Expr:
    """`body(*inputs)` with each input evaluated once: a struct of the inputs, and `body`
    over its fields. `body` must read nothing but its arguments (and literals): inside the
    struct, `pl.field` sees only this struct's fields."""
    names = [f"_{i}" for i in range(len(inputs))]
    fields = [_ones().alias("_one"), *(e.alias(n) for e, n in zip(inputs, names, strict=True))]
    token = _BOUND_ONES.set(pl.field("_one"))
    try:
        out = body(*(pl.field(n) for n in names))
    finally:
        _BOUND_ONES.reset(token)
    return pl.struct(fields).struct.with_fields(out.alias("_out")).struct.field("_out")


def _nan_safe(op: Callable[[pl.Expr, pl.Expr], pl.Expr], x: pl.Expr, y: pl.Expr) -> pl.Expr:
    """A float comparison as Python makes it: false whenever a side is NaN."""
    return _let(lambda x, y: op(x, y) & x.is_not_nan() & y.is_not_nan(), x, y)


def _arith(op: str, x: pl.Expr, y: pl.Expr) -> pl.Expr:
    if op == "+":
        return _m(x) + _m(y)
    if op == "-":
        return _m(x) - _m(y)
    if op == "*":
        return x * y
    if op == "div":
        return x / _m(y)  # IEEE division is XPath's: ±Infinity, NaN for 0 div 0
    return _fmod(x, y)


def _pow2(k: pl.Expr) -> pl.Expr:
    """2.0 ** k for an integral k in [-1074, 1023] (exact)."""
    return _m(pl.lit(2.0)).pow(_m(k.cast(F64)))


def _split(a: pl.Expr) -> pl.Expr:
    """A finite positive float as a struct {m: Int128, q: Int64} with a == m * 2**q, m < 2**53."""

    def exponent(a: pl.Expr, e: pl.Expr) -> pl.Expr:  # log2 may round across a power of two
        return pl.when(_pow2(e) > a).then(e - 1).when(_pow2(e + 1) <= a).then(e + 1).otherwise(e)

    def mantissa(a: pl.Expr, e: pl.Expr) -> pl.Expr:
        q = (e - 52).clip(-1074)
        half = (-q) // 2  # scale in two steps: 2**1074 is not a float
        m = (a * _pow2(half) * _pow2(-q - half)).cast(I128, strict=False)
        return pl.struct(m=m, q=q)

    e = _let(exponent, a, a.log(2.0).floor().cast(I64, strict=False))
    return _let(mantissa, a, e)


def _fmod(x: pl.Expr, y: pl.Expr) -> pl.Expr:
    """C's fmod(x, y) (the remainder with the sign of the dividend), exactly.

    Polars' `%` is floored and computed as x - floor(x / y) * y, which is not exact. With
    x = mx * 2**qx and y = my * 2**qy (integers mx, my < 2**53), fmod is
    (mx * 2**(qx - qy) mod my) * 2**qy: integer arithmetic in Int128, with 2**(qx - qy)
    mod my built 64 bits at a time.
    """

    def split_both(x: pl.Expr, y: pl.Expr) -> pl.Expr:
        ax, ay = x.abs(), y.abs()
        special = (y == 0.0) | x.is_infinite() | x.is_nan() | y.is_nan()
        small = ax < ay  # includes y = ±Infinity and x = ±0
        work = ~special & ~small
        core = _let(remainder, x, _split(pl.when(work).then(ax)), _split(pl.when(work).then(ay)))
        return pl.when(special).then(pl.lit(NAN, F64)).when(small).then(x).otherwise(core)

    def remainder(x: pl.Expr, sx: pl.Expr, sy: pl.Expr) -> pl.Expr:
        mx, my, qy = sx.struct.field("m"), sy.struct.field("m"), sy.struct.field("q")
        d = sx.struct.field("q") - qy  # 0 <= d <= 2097
        one = pl.lit(1, I128)
        t = one
        for i in range(1, 2098 // 64 + 1):
            t = (t * pl.when(d >= 64 * i).then(pl.lit(2**64, I128)).otherwise(one)) % my
        rest = d % 64
        for b in range(6):
            step = pl.when((rest // (1 << b)) % 2 == 1).then(pl.lit(1 << (1 << b), I128))
            t = (t * step.otherwise(one)) % my
        r = ((mx % my) * t % my).cast(F64) * _pow2(qy)
        return _let(lambda r, x: pl.when(x < 0).then(-r).otherwise(r), r, x)

    return _let(split_both, x, y)


def _zero_to_positive(x: pl.Expr) -> pl.Expr:
    """Python's float(math.floor(...)) is never -0.0; IEEE floor/ceil/trunc can be."""
    return _let(lambda x: pl.when(x == 0.0).then(pl.lit(0.0, F64)).otherwise(x), x)


def _trunc(x: pl.Expr) -> pl.Expr:
    return _zero_to_positive(_let(lambda x: pl.when(x < 0).then(x.ceil()).otherwise(x.floor()), x))


def _xpath_pow(x: pl.Expr, y: pl.Expr) -> pl.Expr:
    """math.pow with its errors as NaN: C pow, but NaN where Python raises."""

    def body(x: pl.Expr, y: pl.Expr, r: pl.Expr) -> pl.Expr:
        raised = x.is_finite() & y.is_finite() & ~r.is_finite()
        return pl.when(raised).then(pl.lit(NAN, F64)).otherwise(r)

    return _let(lambda x, y: _let(body, x, y, _m(x).pow(_m(y))), x, y)


# ---------------------------------------------------------------------------------------
# Numbers as text and text as numbers (expr.to_string, expr.to_number)


def _float_digits(ax: pl.Expr) -> pl.Expr:
    """Shortest round-trip digits of a finite positive float and its decimal exponent,
    as a struct {d: Utf8, e: Int64}: 1.5e-05 gives ("15", -5).

    Polars prints the same shortest digits as Python's repr (checked on millions of
    floats), in its own layout; this takes the digits back out.
    """

    def body(g: pl.Expr) -> pl.Expr:
        ip = g.struct.field("1")
        full = ip + g.struct.field("2").fill_null("")
        lead = full.str.len_chars().cast(I64) - full.str.strip_chars_start("0").str.len_chars()
        exp = g.struct.field("3").cast(I64, strict=False)
        ip_len = ip.str.len_chars().cast(I64)
        e = pl.when(exp.is_not_null()).then(exp + ip_len - 1).otherwise(ip_len - 1 - lead)
        return pl.struct(d=full.str.strip_chars("0"), e=e)

    return _let(body, ax.cast(pl.Utf8).str.extract_groups(_FLOAT_TEXT))


def _repr_body(de: pl.Expr) -> pl.Expr:
    """Python's repr layout of digits d and exponent e: fixed from 1e-4 to below 1e16."""
    digits, e = de.struct.field("d"), de.struct.field("e")
    n = digits.str.len_chars().cast(I64)
    head = (e + 1).clip(0)
    whole = digits.str.slice(0, head).str.reverse().str.zfill(head).str.reverse()
    after = digits.str.slice(head)
    fixed = whole + "." + pl.when(after == "").then(pl.lit("0")).otherwise(after)
    small = "0." + digits.str.zfill(n + (-e - 1).clip(0))
    point = pl.when(n > 1).then("." + digits.str.slice(1)).otherwise(pl.lit(""))
    sign = pl.when(e >= 0).then(pl.lit("e+")).otherwise(pl.lit("e-"))
    sci = digits.str.slice(0, 1) + point + sign + e.abs().cast(pl.Utf8).str.zfill(2)
    return (
        pl.when((e >= 0) & (e <= 15)).then(fixed).when((e < 0) & (e >= -4)).then(small)
    ).otherwise(sci)


def _num_to_string(x: pl.Expr) -> pl.Expr:
    """`to_string` of a number: NaN, Infinity, an integer below 1e16, else Python's repr."""

    def body(x: pl.Expr) -> pl.Expr:
        ax = x.abs()
        integral = ax.is_finite() & (x == x.floor()) & (ax < 1e16)
        other = pl.when(ax.is_finite() & (ax > 0) & ~integral).then(ax)
        text = _let(_repr_body, _float_digits(other))
        return (
            pl.when(x.is_nan())
            .then(pl.lit("NaN"))
            .when(x == INF)
            .then(pl.lit("Infinity"))
            .when(x == -INF)
            .then(pl.lit("-Infinity"))
            .when(integral)
            .then(pl.when(integral).then(x).cast(I64, strict=False).cast(pl.Utf8))
            .otherwise(pl.when(x < 0).then(pl.lit("-")).otherwise(pl.lit("")) + text)
        )

    return _let(body, x)


def _text_to_number(t: pl.Expr) -> pl.Expr:
    """`to_number` of a string: a decimal number, an ISO date or an ISO datetime, else NaN.

    Mirrors `expr.to_number`: Python's `\\s` and `\\d` (Unicode) around and in a number, as
    float() accepts them (full-width digits included); a date as days since 1970-01-01; a
    datetime as days with a fraction.
    """

    def body(t: pl.Expr, is_num: pl.Expr) -> pl.Expr:
        bare = pl.when(is_num).then(t).str.strip_chars(_float_space_chars())
        digits, ascii_digits = _digit_map()

        def number(bare: pl.Expr) -> pl.Expr:
            wide = bare.str.contains(r"[^\x00-\x7f]")
            mapped = pl.when(wide).then(bare.str.replace_many(digits, ascii_digits))
            return mapped.otherwise(bare).cast(F64, strict=False)

        stripped = pl.when(~is_num).then(t).str.strip_chars(_space_chars())
        return (
            pl.when(is_num).then(_let(number, bare)).otherwise(_let(_date_or_stamp_days, stripped))
        )

    return _let(body, t, t.str.contains(_number_pattern()))


def _date_or_stamp_days(s: pl.Expr) -> pl.Expr:
    is_date = s.str.contains(_DATE_PATTERN).fill_null(False)
    day = pl.when(is_date).then(s).str.to_date("%Y-%m-%d", strict=False).cast(I64)
    date_days = pl.when(day >= _MIN_DAY).then(day.cast(F64))
    is_stamp = s.str.contains(_DATETIME_PATTERN).fill_null(False)
    stamp_days = _datetime_days(pl.when(is_stamp).then(s))
    return (
        pl.when(is_date)
        .then(date_days.fill_null(NAN))
        .when(is_stamp)
        .then(stamp_days)
        .otherwise(pl.lit(NAN, F64))
    )


def _datetime_days(s: pl.Expr) -> pl.Expr:
    """Days since the epoch of an ISO datetime string (already matched), NaN if invalid.

    As `(datetime.fromisoformat(s) - epoch).total_seconds() / 86400`: exact microseconds,
    divided by 10**6 through a decimal string (so correctly rounded, as Python's int
    division is), then by 86400. The microsecond count is exact; only its conversion to a
    float can differ in the last bit beyond 2**53 microseconds from 1970 (before 1685 or
    after 2255).
    """

    def body(g: pl.Expr) -> pl.Expr:
        def field(i: int) -> pl.Expr:
            return g.struct.field(str(i))

        def num(i: int) -> pl.Expr:
            return field(i).cast(I64, strict=False)

        day = field(1).str.to_date("%Y-%m-%d", strict=False).cast(I64)
        hh, mm, ss = num(2), num(3), num(4).fill_null(0)
        usec = (field(5).str.slice(0, 6) + "000000").str.slice(0, 6).cast(I64).fill_null(0)
        sign = pl.when(field(7) == "-").then(-1).otherwise(1)
        tz_min = num(8).fill_null(0) * 60 + num(9).fill_null(0)
        valid = (
            (day >= _MIN_DAY) & (hh <= 23) & (mm <= 59) & (ss <= 59) & (tz_min < 24 * 60)
        ).fill_null(False)
        seconds = day * 86400 + hh * 3600 + mm * 60 + ss - sign * tz_min * 60
        micros = pl.when(valid).then(seconds * 1_000_000 + usec)
        return _let(to_days, micros)

    def to_days(micros: pl.Expr) -> pl.Expr:
        a = micros.abs()
        text = (
            pl.when(micros < 0).then(pl.lit("-")).otherwise(pl.lit(""))
            + (a // 1_000_000).cast(pl.Utf8)
            + "."
            + (a % 1_000_000).cast(pl.Utf8).str.zfill(6)
        )
        days = text.cast(F64, strict=False) / _m(pl.lit(86400.0))
        return days.fill_null(NAN)

    return _let(body, s.str.extract_groups(_DATETIME_PATTERN))


def _round_half_up(x: pl.Expr, digits: pl.Expr) -> pl.Expr:
    """ODK's two-argument round: Decimal(repr(x)).quantize(10**-k, ROUND_HALF_UP), exactly.

    Works on the repr digits: keep the digits down to 10**-k, add one if the next is 5 or
    more, and let the decimal string convert to the nearest float (as float(Decimal) does).
    Decimal's 28-digit context makes a result with more digits NaN, as in the scalar code.
    """

    def body(x: pl.Expr, digits: pl.Expr, k: pl.Expr, de: pl.Expr) -> pl.Expr:
        ds, e = de.struct.field("d"), de.struct.field("e")
        keep = e + k + 1  # how many of the digits are kept
        head = ds.str.slice(0, keep.clip(0, 30)).cast(I64, strict=False).fill_null(0)
        up = (ds.str.slice(keep.clip(0, 30), 1) >= "5").fill_null(False)
        coeff = head + pl.when((keep >= 0) & up).then(1).otherwise(0)
        sign = pl.when(x < 0).then(pl.lit("-")).otherwise(pl.lit(""))
        rounded = (sign + coeff.cast(pl.Utf8) + "e" + (-k).cast(pl.Utf8)).cast(F64, strict=False)
        normal = x.is_finite() & (x != 0.0)
        return (
            pl.when(digits.is_nan() | (digits.abs() > 300))
            .then(pl.lit(NAN, F64))
            .when(~normal)
            .then(x)
            .when(keep > 28)
            .then(pl.lit(NAN, F64))
            .when(keep >= ds.str.len_chars().cast(I64))
            .then(x)
            .otherwise(rounded)
        )

    def bind(x: pl.Expr, digits: pl.Expr) -> pl.Expr:
        k = _trunc(pl.when(digits.abs() <= 300).then(digits)).cast(I64, strict=False)
        normal = pl.when(x.is_finite() & (x != 0.0)).then(x.abs())
        return _let(body, x, digits, k, _float_digits(normal))

    return _let(bind, x, digits)


# ---------------------------------------------------------------------------------------
# regex(): Python `re` syntax to Rust regex syntax


def _regex_to_rust(pattern: str) -> tuple[str, str | None]:
    """Translate a Python regex for `re.search` into Rust regex syntax.

    Python's own parser reads the pattern (so its quirks are read as Python reads them);
    the tree is written back with explicit Python character classes. Returns the pattern
    for the subject and, when the pattern uses `$` (which in Python also matches before a
    final newline), a second one to search in the subject without its final newline.
    Raises ExpressionError for what Rust's engine cannot do the same way.
    """
    parser: Any = importlib.import_module("re._parser")
    try:
        tree = parser.parse(pattern)
    except re.error as exc:
        raise ExpressionError(f"regex(): bad pattern {pattern!r}: {exc}") from None

    def unsupported(what: str) -> ExpressionError:
        return ExpressionError(f"regex(): {what} in {pattern!r} cannot be vectorised")

    if tree.state.flags & ~(re.UNICODE | re.VERBOSE):
        raise unsupported("inline flags")
    never, anything = r"[^\x{0}-\x{10ffff}]", r"[\x{0}-\x{10ffff}]"
    uses_end = False

    def category(cat: str) -> str:
        name = cat.removeprefix("CATEGORY_")
        base = {"DIGIT": r"\d", "SPACE": r"\s", "WORD": r"\w"}[name.removeprefix("NOT_")]
        return _rx_class(base, negate=name.startswith("NOT_"))

    def klass(items: list[tuple[Any, Any]]) -> str:
        neg, parts = False, []
        for op, av in items:
            name = str(op)
            if name == "NEGATE":
                neg = True
            elif name == "LITERAL":
                if not 0xD800 <= av <= 0xDFFF:
                    parts.append(_rx_char(av))
            elif name == "RANGE":
                lo, hi = av
                for a, b in ((lo, min(hi, 0xD7FF)), (max(lo, 0xE000), hi)):
                    if a <= b:
                        parts.append(f"{_rx_char(a)}-{_rx_char(b)}")
            elif name == "CATEGORY":
                parts.append(category(str(av)))
            else:
                raise unsupported(f"{name} in a character class")
        if not parts:
            return anything if neg else never
        return ("[^" if neg else "[") + "".join(parts) + "]"

    def seq(items: Any, tail: bool, whole: bool) -> str:
        nonlocal uses_end
        out: list[str] = []
        items = list(items)
        for i, (op, av) in enumerate(items):
            name = str(op)
            at_tail = tail and all(str(o) == "AT" for o, _ in items[i + 1 :])
            if name == "LITERAL":
                out.append(never if 0xD800 <= av <= 0xDFFF else _rx_char(av))
            elif name == "NOT_LITERAL":
                out.append(anything if 0xD800 <= av <= 0xDFFF else f"[^{_rx_char(av)}]")
            elif name == "ANY":
                out.append(".")
            elif name == "IN":
                out.append(klass(av))
            elif name in ("MAX_REPEAT", "MIN_REPEAT"):
                lo, hi, sub = av
                inner = seq(sub, at_tail and hi <= 1, whole)
                top = "" if hi == parser.MAXREPEAT else str(hi)
                lazy = "?" if name == "MIN_REPEAT" else ""
                out.append(f"(?:{inner}){{{lo},{top}}}{lazy}")
            elif name == "SUBPATTERN":
                _group, add, rem, sub = av
                if add or rem:
                    raise unsupported("inline flags")
                out.append(f"(?:{seq(sub, at_tail, whole)})")
            elif name == "BRANCH":
                out.append("(?:" + "|".join(seq(b, at_tail, whole) for b in av[1]) + ")")
            elif name == "AT":
                where = str(av)
                if where in ("AT_BEGINNING", "AT_BEGINNING_STRING"):
                    out.append(r"\A")
                elif where == "AT_END":
                    if not at_tail:
                        raise unsupported("'$' followed by more pattern")
                    uses_end = True
                    out.append(r"\z")
                elif where == "AT_END_STRING":  # \Z: the very end, never before a newline
                    out.append(r"\z" if whole else never)
                else:
                    raise unsupported(r"a word boundary (\b, \B)")
            else:
                what = {
                    "GROUPREF": "a back-reference",
                    "GROUPREF_EXISTS": "a conditional group",
                    "ASSERT": "a look-around",
                    "ASSERT_NOT": "a look-around",
                    "ATOMIC_GROUP": "an atomic group",
                    "POSSESSIVE_REPEAT": "a possessive repeat",
                }.get(name, name)
                raise unsupported(what)
        return "".join(out)

    full = seq(tree, True, True)
    trimmed = seq(tree, True, False) if uses_end else None
    for rx in (full, trimmed):
        if rx is not None:
            try:
                pl.select(pl.lit("").str.contains(rx))
            except pl.exceptions.PolarsError as exc:
                first = str(exc).strip().splitlines()[0]
                raise ExpressionError(
                    f"regex(): {pattern!r} cannot be vectorised: {first}"
                ) from None
    return full, trimmed


# ---------------------------------------------------------------------------------------
# Compiled values


@dataclass(frozen=True)
class _Val:
    """A compiled XPath value: one expression per type it can take on a row.

    With one component, that expression is never null. With several, exactly one is
    non-null on each row: the row's type. `blank` says the text component is "" wherever
    present (a blank number field), which keeps conversions cheap. `packed`, when set, is
    one struct holding the components (so a consumer binds it once); `const` is set when
    the value is the same literal on every row.
    """

    num: pl.Expr | None = None
    text: pl.Expr | None = None
    flag: pl.Expr | None = None
    blank: bool = False
    const: Value | None = None
    packed: pl.Expr | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k in ("num", "text", "flag") if getattr(self, k) is not None)

    @property
    def single(self) -> bool:
        return len(self.kinds) == 1

    def part(self, kind: str) -> pl.Expr | None:
        out: pl.Expr | None = getattr(self, kind)
        return out


Mask = pl.Expr | bool
Builder = Callable[[list[_Val]], _Val]


def _make(parts: Mapping[str, pl.Expr], blank: bool, packed: pl.Expr | None = None) -> _Val:
    return _Val(
        num=parts.get("num"),
        text=parts.get("text"),
        flag=parts.get("flag"),
        blank=blank,
        packed=packed,
    )


def _literal(value: Value) -> _Val:
    if isinstance(value, NodeSet):  # pragma: no cover - constants have no repeats
        raise ExpressionError("a node-set cannot be a constant")
    if isinstance(value, bool):
        return _Val(flag=pl.lit(value), const=value)
    if isinstance(value, float):
        return _Val(num=pl.lit(value, F64), const=value)
    return _Val(text=pl.lit(value, pl.Utf8), blank=value == "", const=value)


def _apply(build: Builder, args: Sequence[_Val]) -> _Val:
    """`build(args)`, with every non-constant argument bound once (see `_let`)."""
    inputs: list[pl.Expr] = []
    slots: list[tuple[_Val, list[int]]] = []
    for a in args:
        if a.const is not None:
            slots.append((a, []))
        elif a.packed is not None:
            slots.append((a, [len(inputs)]))
            inputs.append(a.packed)
        else:
            idx = list(range(len(inputs), len(inputs) + len(a.kinds)))
            inputs.extend(e for k in a.kinds if (e := a.part(k)) is not None)
            slots.append((a, idx))
    if not inputs:
        return build(list(args))
    made: list[_Val] = []

    def body(*fields: pl.Expr) -> pl.Expr:
        inner: list[_Val] = []
        for a, idx in slots:
            if not idx:
                inner.append(a)
            elif a.packed is not None:
                s = fields[idx[0]]
                inner.append(_make({k: s.struct.field(k) for k in a.kinds}, a.blank))
            else:
                parts = dict(zip(a.kinds, (fields[i] for i in idx), strict=True))
                inner.append(_make(parts, a.blank))
        out = build(inner)
        made.append(out)
        if out.single:
            part = out.part(out.kinds[0])
            assert part is not None
            return part
        return pl.struct([e.alias(k) for k in out.kinds if (e := out.part(k)) is not None])

    bound = _let(body, *inputs)
    out = made[0]
    if out.const is not None:
        return out
    if out.single:
        return _make({out.kinds[0]: bound}, out.blank)
    return _make({k: bound.struct.field(k) for k in out.kinds}, out.blank, packed=bound)


def _has(v: _Val, kind: str) -> Mask:
    """Rows where `v` is of `kind` (True/False when known at compile time)."""
    e = v.part(kind)
    if e is None:
        return False
    return True if v.single else e.is_not_null()


def _or(a: Mask, b: Mask) -> Mask:
    if a is True or b is True:
        return True
    if a is False:
        return b
    if b is False:
        return a
    assert isinstance(a, pl.Expr) and isinstance(b, pl.Expr)
    return a | b


def _guard(e: pl.Expr, src: pl.Expr, nullable: bool) -> pl.Expr:
    """Keep `e` null where `src` is (on rows of another type)."""
    return pl.when(src.is_not_null()).then(e) if nullable else e


def _to_number(v: _Val) -> pl.Expr:
    parts: list[pl.Expr] = []
    multi = not v.single
    if v.num is not None:
        parts.append(v.num)
    if v.flag is not None:
        parts.append(v.flag.cast(F64))
    if v.text is not None:
        if v.blank:
            parts.append(pl.lit(NAN, F64))  # last: where no other type is present
        else:
            parts.append(_guard(_text_to_number(v.text), v.text, multi))
    return parts[0] if len(parts) == 1 else pl.coalesce(parts)


def _to_string(v: _Val) -> pl.Expr:
    parts: list[pl.Expr] = []
    multi = not v.single
    if v.num is not None:
        parts.append(_guard(_num_to_string(v.num), v.num, multi))
    if v.flag is not None:
        text = pl.when(v.flag).then(pl.lit("true")).otherwise(pl.lit("false"))
        parts.append(_guard(text, v.flag, multi))
    if v.text is not None:
        parts.append(pl.lit("") if v.blank else v.text)
    return parts[0] if len(parts) == 1 else pl.coalesce(parts)


def _to_boolean(v: _Val) -> pl.Expr:
    parts: list[pl.Expr] = []
    multi = not v.single
    if v.num is not None:
        parts.append(_guard((v.num != 0.0) & v.num.is_not_nan(), v.num, multi))
    if v.flag is not None:
        parts.append(v.flag)
    if v.text is not None:
        parts.append(pl.lit(False) if v.blank else v.text != "")
    return parts[0] if len(parts) == 1 else pl.coalesce(parts)


def _text_only(v: _Val) -> pl.Expr:
    """The text of `v`, on rows where it is text."""
    assert v.text is not None
    return pl.lit("") if v.blank else v.text


# ---------------------------------------------------------------------------------------
# Operators and functions: builders over bound arguments


def _equal(args: list[_Val]) -> _Val:
    """`_compare` for =: booleans if a side is boolean, else numbers if a side is a number,
    else strings; decided per row."""
    a, b = args
    by_bool = _or(_has(a, "flag"), _has(b, "flag"))
    by_num = _or(_has(a, "num"), _has(b, "num"))

    def bools() -> pl.Expr:
        return _to_boolean(a) == _to_boolean(b)

    def nums() -> pl.Expr:
        return _let(lambda x, y: (x == y) & x.is_not_nan(), _to_number(a), _to_number(b))

    def texts() -> pl.Expr:
        return _text_only(a) == _text_only(b)

    if by_bool is True:
        return _Val(flag=bools())
    if by_num is True:
        rest = nums()
    elif by_num is False:
        rest = texts()
    else:
        assert isinstance(by_num, pl.Expr)
        rest = pl.when(by_num).then(nums()).otherwise(texts())
    if by_bool is False:
        return _Val(flag=rest)
    assert isinstance(by_bool, pl.Expr)
    return _Val(flag=pl.when(by_bool).then(bools()).otherwise(rest))


def _choose(branches: list[tuple[Mask, _Val]], default: _Val) -> _Val:
    """The value of the first branch whose condition holds, else `default`, per type."""
    live: list[tuple[pl.Expr, _Val]] = []
    for cond, val in branches:
        if cond is False:
            continue
        if cond is True:
            default = val
            break
        assert isinstance(cond, pl.Expr)
        live.append((cond, val))
    if not live:
        return default
    vals = [v for _, v in live] + [default]
    parts: dict[str, pl.Expr] = {}
    for k in ("num", "text", "flag"):
        if all(v.part(k) is None for v in vals):
            continue
        chain: Any = pl
        for cond, val in live:
            e = val.part(k)
            chain = chain.when(cond).then(e if e is not None else pl.lit(None))
        e = default.part(k)
        parts[k] = chain.otherwise(e if e is not None else pl.lit(None))
    texts = [v for v in vals if v.text is not None]
    return _make(parts, bool(texts) and all(v.blank for v in texts))


def _if(args: list[_Val]) -> _Val:
    cond, yes, no = args
    return _choose([(_to_boolean(cond), yes)], no)


def _coalesce(args: list[_Val]) -> _Val:
    """The first argument whose string value is not empty, else ""."""
    branches: list[tuple[Mask, _Val]] = []
    for v in args:
        if v.const is not None:
            nonblank: Mask = to_string(v.const) != ""
        elif v.text is None:
            nonblank = True
        elif v.single:
            nonblank = False if v.blank else v.text != ""
        elif v.blank:
            nonblank = v.text.is_null()
        else:
            nonblank = v.text.is_null() | (v.text != "")
        branches.append((nonblank, v))
    return _choose(branches, _literal(""))


def _binary(op: str) -> Builder:
    if op == "and":
        return lambda a: _Val(flag=_to_boolean(a[0]) & _to_boolean(a[1]))
    if op == "or":
        return lambda a: _Val(flag=_to_boolean(a[0]) | _to_boolean(a[1]))
    if op == "=":
        return _equal
    if op == "!=":
        return lambda a: _Val(flag=~_need(_equal(a).flag))
    compare: dict[str, Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
        "<": lambda p, q: p < q,
        "<=": lambda p, q: p <= q,
        ">": lambda p, q: p > q,
        ">=": lambda p, q: p >= q,
    }
    if op in compare:
        cmp = compare[op]
        return lambda a: _Val(flag=_nan_safe(cmp, _to_number(a[0]), _to_number(a[1])))
    return lambda a: _Val(num=_arith(op, _to_number(a[0]), _to_number(a[1])))


def _need(e: pl.Expr | None) -> pl.Expr:
    assert e is not None
    return e


def _num(f: Callable[..., pl.Expr]) -> Builder:
    return lambda args: _Val(num=f(*[_to_number(a) for a in args]))


def _test(f: Callable[..., pl.Expr]) -> Builder:
    return lambda args: _Val(flag=f(*[_to_string(a) for a in args]))


def _tokens(s: pl.Expr) -> pl.Expr:
    return s.str.extract_all(_rx_class(r"\s", negate=True) + "+")


def _selected(args: list[_Val]) -> _Val:
    values, choice = args
    s = _to_string(values)
    if choice.const is not None:
        code = to_string(choice.const).strip()
        if code == "" or any(c.isspace() for c in code):
            return _literal(False)
        ws = _rx_class(r"\s")
        lit = "".join(_rx_char(ord(c)) for c in code)
        return _Val(flag=s.str.contains(rf"(?:\A|{ws}){lit}(?:{ws}|\z)"))
    code_expr = _to_string(choice).str.strip_chars(_space_chars())
    return _Val(flag=_tokens(s).list.contains(code_expr).fill_null(False))


def _count_selected(args: list[_Val]) -> _Val:
    pattern = _rx_class(r"\s", negate=True) + "+"
    return _Val(num=_to_string(args[0]).str.count_matches(pattern).cast(F64))


def _selected_at(args: list[_Val]) -> _Val:
    def body(tokens: pl.Expr, k: pl.Expr) -> pl.Expr:
        ok = k.is_finite() & (k >= 0.0) & (k == k.floor()) & (k < tokens.list.len().cast(F64))
        index = pl.when(ok).then(k).cast(I64, strict=False).fill_null(0)
        item = tokens.list.get(index, null_on_oob=True)
        return pl.when(ok).then(item).otherwise(pl.lit("")).fill_null("")

    return _Val(text=_let(body, _tokens(_to_string(args[0])), _to_number(args[1])))


def _concat(args: list[_Val]) -> _Val:
    return _Val(text=pl.concat_str([_to_string(a) for a in args]))


def _join(args: list[_Val]) -> _Val:
    def body(sep: pl.Expr, *items: pl.Expr) -> pl.Expr:
        parts: list[pl.Expr] = []
        for i, item in enumerate(items):
            parts.extend([sep, item] if i else [item])
        return pl.concat_str(parts)

    return _Val(text=_let(body, *[_to_string(a) for a in args]))


def _round(args: list[_Val]) -> _Val:
    x = _to_number(args[0])
    if len(args) == 1:
        return _Val(num=_zero_to_positive((_m(x) + _m(pl.lit(0.5))).floor()))
    return _Val(num=_round_half_up(x, _to_number(args[1])))


def _substr(args: list[_Val]) -> _Val:
    """ODK substr(s, start[, end]): 0-based start, exclusive end, clamped to the string."""

    def body(s: pl.Expr, start: pl.Expr, end: pl.Expr) -> pl.Expr:
        n = s.str.len_chars().cast(F64)

        def index(x: pl.Expr) -> pl.Expr:
            return pl.min_horizontal(pl.max_horizontal(x, pl.lit(0.0)), n).floor()

        i, j = index(start), index(end)
        length = pl.max_horizontal(j - i, pl.lit(0.0)).cast(I64, strict=False).fill_null(0)
        out = s.str.slice(i.cast(I64, strict=False).fill_null(0), length)
        return pl.when(start.is_nan() | end.is_nan()).then(pl.lit("")).otherwise(out)

    end = _to_number(args[2]) if len(args) == 3 else pl.lit(INF, F64)
    return _Val(text=_let(body, _to_string(args[0]), _to_number(args[1]), end))


def _min_max(pick_min: bool) -> Builder:
    def body(*nums: pl.Expr) -> pl.Expr:
        best = pl.min_horizontal(nums) if pick_min else pl.max_horizontal(nums)
        any_nan = pl.any_horizontal([n.is_nan() for n in nums])
        # Python's min/max returns the first argument equal to the extreme (-0.0 or 0.0)
        first: Any = pl
        for n in nums:
            first = first.when(n == best).then(n)
        return pl.when(any_nan).then(pl.lit(NAN, F64)).otherwise(first.otherwise(best))

    return lambda args: _Val(num=_let(body, *[_to_number(a) for a in args]))


def _date(args: list[_Val]) -> _Val:
    def body(n: pl.Expr) -> pl.Expr:
        day = n.floor()
        ok = n.is_not_nan() & (n.abs() <= 2_000_000) & (day >= _MIN_DAY) & (day <= _MAX_DAY)
        text = pl.when(ok).then(day).cast(pl.Int32, strict=False).cast(pl.Date).cast(pl.Utf8)
        return pl.when(ok).then(text).otherwise(pl.lit(""))

    return _Val(text=_let(body, _to_number(args[0])))


def _normalize_space(args: list[_Val]) -> _Val:
    s = _to_string(args[0]).str.strip_chars(_space_chars())
    return _Val(text=s.str.replace_all(_rx_class(r"\s") + "+", " "))


def _floor_ceil(f: Callable[[pl.Expr], pl.Expr]) -> Builder:
    return _num(lambda x: _zero_to_positive(f(x)))


def _regex(whole: str, trimmed: str | None) -> Builder:
    def body(s: pl.Expr) -> pl.Expr:
        found = s.str.contains(whole)
        if trimmed is None:
            return found
        tail = pl.when(s.str.ends_with("\n")).then(s).str.strip_suffix("\n")
        return found | tail.str.contains(trimmed).fill_null(False)

    return lambda args: _Val(flag=_let(body, _to_string(args[0])))


_FUNCTIONS: dict[str, Builder] = {
    "selected": _selected,
    "count-selected": _count_selected,
    "selected-at": _selected_at,
    "if": _if,
    "coalesce": _coalesce,
    "string-length": lambda a: _Val(num=_to_string(a[0]).str.len_chars().cast(F64)),
    "concat": _concat,
    "join": _join,
    "round": _round,
    "int": _num(_trunc),
    "number": _num(lambda x: x),
    "string": lambda a: _Val(text=_to_string(a[0])),
    "boolean": lambda a: _Val(flag=_to_boolean(a[0])),
    "not": lambda a: _Val(flag=~_to_boolean(a[0])),
    "true": lambda a: _literal(True),
    "false": lambda a: _literal(False),
    "date": _date,
    "sum": _num(lambda x: x),  # of a field outside repeats: its number
    "min": _min_max(True),
    "max": _min_max(False),
    "floor": _floor_ceil(lambda x: x.floor()),
    "ceiling": _floor_ceil(lambda x: x.ceil()),
    "abs": _num(lambda x: x.abs()),
    "pow": _num(_xpath_pow),
    "contains": _test(lambda a, b: a.str.contains(b, literal=True)),
    "starts-with": _test(lambda a, b: a.str.starts_with(b)),
    "ends-with": _test(lambda a, b: a.str.ends_with(b)),
    "substr": _substr,
    "normalize-space": _normalize_space,
}
_SPECIAL = {"regex", "today", "now", "count"}
assert set(_FUNCTIONS) | _SPECIAL == set(FUNCTIONS)


# ---------------------------------------------------------------------------------------
# The compiler


@dataclass(frozen=True)
class _ConstScope:
    """The scope constant subexpressions are evaluated in (by the scalar evaluator)."""

    today_date: dt.date | None
    now_stamp: dt.datetime | None

    def lookup(self, name: str) -> Value:  # pragma: no cover - constants read no fields
        raise ExpressionError(f"${{{name}}} is not constant")

    def current(self) -> Value:  # pragma: no cover
        raise ExpressionError("'.' is not constant")

    def item(self, column: str) -> Value:  # pragma: no cover
        raise ExpressionError(f"{column} is not constant")

    def today(self) -> dt.date:
        if self.today_date is None:
            raise ExpressionError("today() needs the date: pass today= to to_polars")
        return self.today_date

    def now(self) -> dt.datetime:
        if self.now_stamp is None:
            raise ExpressionError("now() needs the time: pass now= to to_polars")
        return self.now_stamp


def _is_constant(node: Node) -> bool:
    if node.kind in ("ref", "bare", "cur"):
        return False
    return all(_is_constant(a) for a in node.args)


@dataclass(frozen=True)
class _Compiler:
    columns: Mapping[str, ColumnKind]
    scope: _ConstScope
    source: str
    fold: bool

    def fail(self, what: str) -> ExpressionError:
        return ExpressionError(f"{self.source!r}: {what} cannot be vectorised")

    def compile(self, node: Node) -> _Val:
        kind = node.kind
        if kind == "num":
            return _literal(float(node.value))  # type: ignore[arg-type]
        if kind == "str":
            return _literal(str(node.value))
        if self.fold and _is_constant(node):
            fn = _compile(node)
            folded = Expression(self.source, node, frozenset(), frozenset(), False, fn)
            try:
                return _literal(folded.evaluate(self.scope))
            except ExpressionError:
                pass  # compiled below, where it fails at compile time if it must
        if kind == "ref":
            return self.ref(str(node.value))
        if kind == "bare":
            raise self.fail(
                f"bare name {node.value!r} (a choice_filter column; see Expression.substitute)"
            )
        if kind == "cur":
            raise self.fail("'.' (the current answer; see Expression.substitute)")
        if kind == "neg":
            return _apply(lambda a: _Val(num=-_to_number(a[0])), [self.compile(node.args[0])])
        if kind == "bin":
            args = [self.compile(a) for a in node.args]
            return _apply(_binary(str(node.value)), args)
        if kind == "call":
            return self.call(str(node.value), node.args)
        raise AssertionError(kind)  # pragma: no cover

    def ref(self, name: str) -> _Val:
        kind = self.columns.get(name)
        if kind is None:
            raise ExpressionError(
                f"{self.source!r}: ${{{name}}} is not a column of the table "
                "(fields inside repeats live in child tables)"
            )
        col = pl.col(name)
        if kind == "number":
            num = col.cast(F64)
            return _Val(num=num, text=pl.when(col.is_null()).then(pl.lit("")), blank=True)
        if kind in ("text", "date"):
            return _Val(text=col.cast(pl.Utf8).fill_null(""))
        raise ExpressionError(f"column {name!r}: unknown kind {kind!r}")

    def call(self, name: str, nodes: tuple[Node, ...]) -> _Val:
        if name == "today":
            return _literal(self.scope.today().isoformat())
        if name == "now":
            return _literal(self.scope.now().isoformat())
        if name == "count":
            raise self.fail("count() (repeats live in child tables)")
        if name in ("string", "string-length") and not nodes:
            raise self.fail(f"{name}() of '.' (the current answer)")
        args = [self.compile(n) for n in nodes]
        if name == "regex":
            pattern = args[1].const
            if pattern is None:
                raise self.fail("regex() with a pattern that is not a constant")
            return _apply(_regex(*_regex_to_rust(to_string(pattern))), args[:1])
        return _apply(_FUNCTIONS[name], args)


# ---------------------------------------------------------------------------------------
# Public entry


def _output(v: _Val, result: ResultKind, source: str) -> _Val:
    if result == "number":
        return _apply(lambda a: _Val(num=_to_number(a[0])), [v])
    if result == "string":
        return _apply(lambda a: _Val(text=_to_string(a[0])), [v])
    if result == "boolean":
        return _apply(lambda a: _Val(flag=_to_boolean(a[0])), [v])
    kinds = set(v.kinds)
    if v.single or (v.blank and len(kinds) == 2):  # a number or boolean: null where blank
        return v
    names = {"num": "a number", "text": "text", "flag": "a boolean"}
    raise ExpressionError(
        f"{source!r} is {' or '.join(names[k] for k in v.kinds)} depending on the row; "
        "ask for result='number', 'string' or 'boolean'"
    )


def _convert(value: Value, result: ResultKind) -> Value:
    if result == "number":
        return to_number(value)
    if result == "string":
        return to_string(value)
    if result == "boolean":
        return to_boolean(value)
    return value


def to_polars(
    expr: Expression,
    columns: Mapping[str, ColumnKind],
    *,
    today: dt.date | None = None,
    now: dt.datetime | None = None,
    result: ResultKind = "value",
    fold_constants: bool = True,
) -> pl.Expr:
    """Compile a parsed expression to a Polars expression over a table of responses.

    `columns` says how each field is stored: "number" (Float64/Int, null = blank), "text"
    (Utf8, null or "" = blank; select answers as space-separated codes) or "date" (ISO
    Utf8 or pl.Date). `today`/`now` are the values of today() and now(). `result` is
    "value" (the expression's own type: Float64, Utf8 or Boolean, null where a number or
    boolean is blank) or the number/string/boolean view of it. Subexpressions that read no
    field are evaluated once by the scalar evaluator (`fold_constants=False`, for tests,
    compiles them to Polars too).

    Raises ExpressionError, naming the construct, for what cannot be vectorised.
    """
    compiler = _Compiler(columns, _ConstScope(today, now), expr.source, fold_constants)
    val = compiler.compile(expr.tree)
    if val.const is not None:  # a constant: one value per row, not a single row
        return pl.repeat(_convert(val.const, result), pl.len())
    out = _output(val, result, expr.source)
    if out.const is not None:
        return pl.repeat(out.const, pl.len())
    kinds = [k for k in out.kinds if not (k == "text" and out.blank and not out.single)]
    compiled = _need(out.part(kinds[0]))
    if not expr.refs:  # built from literals only (fold_constants=False): one row per row
        return pl.when(pl.int_range(pl.len()) >= 0).then(compiled)
    return compiled


def _infer_kind(dtype: pl.DataType) -> ColumnKind:
    if dtype.is_numeric():
        return "number"
    if dtype == pl.Date:
        return "date"
    return "text"


def evaluate_frame(
    expr: Expression,
    df: pl.DataFrame,
    columns: Mapping[str, ColumnKind] | None = None,
    *,
    today: dt.date | None = None,
    now: dt.datetime | None = None,
    result: ResultKind = "value",
    fold_constants: bool = True,
) -> pl.Series:
    """Evaluate an expression on every row of `df` (column kinds inferred if not given)."""
    kinds = columns if columns is not None else {n: _infer_kind(t) for n, t in df.schema.items()}
    compiled = to_polars(
        expr, kinds, today=today, now=now, result=result, fold_constants=fold_constants
    )
    return df.select(compiled.alias("value")).to_series()


def field_kind(f: Field) -> ColumnKind:
    """How expressions read a field's answers."""
    if f.type in ("integer", "decimal"):
        return "number"
    if f.type in ("date", "today"):
        return "date"
    return "text"


def column_kinds(form: Form, frame: pl.DataFrame) -> dict[str, ColumnKind]:
    """How each column of a population or response table is read by expressions."""
    out: dict[str, ColumnKind] = {}
    for name, dtype in frame.schema.items():
        f = form.fields.get(name)
        if f is not None and f.calculation is None:
            out[name] = field_kind(f)
        else:
            out[name] = "number" if dtype.is_numeric() else "text"
    return out
