"""The XLSForm expression language: one parser, one evaluator.

XLSForm expressions are XPath 1.0 with ODK's function library, written with `${field}`
references. This module parses them once (when a study loads, so a malformed expression
fails then, naming its field) into a small tree, checks function names and arities, and
compiles the tree into Python closures that evaluate against a `Scope`.

Values follow XPath 1.0: strings, numbers (float), booleans and node-sets (`NodeSet`, the
values of a field across repeat instances). An unanswered field is the empty string, which
is NaN as a number, so `${age} >= 18` is false when age is blank. Dates are ISO strings and
count as days since 1970-01-01 in arithmetic and comparisons, as in ODK.

Evaluation never raises anything but `ExpressionError`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Literal, Protocol

__all__ = [
    "Expression",
    "ExpressionError",
    "NodeSet",
    "Scope",
    "Value",
    "as_value",
    "parse",
    "to_boolean",
    "to_number",
    "to_string",
]


class ExpressionError(Exception):
    """A malformed expression, or one that cannot be evaluated."""


class NodeSet(list[object]):
    """The values of one field across repeat instances (an XPath node-set)."""


Value = str | float | bool | NodeSet


class Scope(Protocol):
    """What an expression can read while it is evaluated."""

    def lookup(self, name: str) -> Value:
        """Value of `${name}` from where the expression stands (a NodeSet across repeats)."""
        ...

    def current(self) -> Value:
        """Value of `.`: the answer being constrained."""
        ...

    def item(self, column: str) -> Value:
        """A column of the choice being filtered (bare names in choice_filter)."""
        ...

    def today(self) -> dt.date:
        """The date `today()` returns."""
        ...

    def now(self) -> dt.datetime:
        """The timestamp `now()` returns."""
        ...


# ---------------------------------------------------------------------------------------
# Conversions (XPath 1.0 section 4, with ODK's date extension)

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$")
_NUMBER_RE = re.compile(r"^\s*-?(\d+(\.\d*)?|\.\d+)\s*$")
_EPOCH = dt.date(1970, 1, 1)


def as_value(value: object) -> Value:
    """Normalise an answer stored by a caller (int, float, str, None, date) to a Value."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    if isinstance(value, str):
        return value
    return str(value)


def to_string(value: object) -> str:
    if isinstance(value, NodeSet):
        return to_string(value[0]) if value else ""
    v = as_value(value)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        if v == int(v) and abs(v) < 1e16:
            return str(int(v))
        return repr(v)
    return str(v)


def to_number(value: object) -> float:
    if isinstance(value, NodeSet):
        return to_number(to_string(value))
    v = as_value(value)
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    if isinstance(v, float):
        return v
    s = str(v)
    if _NUMBER_RE.match(s):
        try:
            return float(s)
        except ValueError:  # `\s` also matches U+001C-U+001F, which float() rejects
            return math.nan
    s = s.strip()
    if _DATE_RE.match(s):
        try:
            return float((dt.date.fromisoformat(s) - _EPOCH).days)
        except ValueError:
            return math.nan
    if _DATETIME_RE.match(s):
        try:
            stamp = dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
        except ValueError:
            return math.nan
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=dt.UTC)
        return (stamp - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds() / 86400.0
    return math.nan


def to_boolean(value: object) -> bool:
    if isinstance(value, NodeSet):
        return len(value) > 0
    v = as_value(value)
    if isinstance(v, bool):
        return v
    if isinstance(v, float):
        return not (v == 0 or math.isnan(v))
    return v != ""


# ---------------------------------------------------------------------------------------
# Tokens and syntax tree

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<ref>\$\{(?P<refname>[^}]*)\})
  | (?P<number>(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)
  | (?P<string>'[^']*'|"[^"]*")
  | (?P<parent>\.\./(?P<parentname>[A-Za-z_][A-Za-z0-9_.]*))
  | (?P<op>!=|<=|>=|=|<|>|\+|-|\*|\(|\)|,|\.)
  | (?P<name>[A-Za-z_][A-Za-z0-9_.]*(?:-[A-Za-z_][A-Za-z0-9_.]*)*)
    """,
    re.VERBOSE,
)
_FIELD_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class Token:
    kind: str  # number string ref name op end
    text: str
    pos: int


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(source):
        m = _TOKEN_RE.match(source, pos)
        if m is None:
            raise ExpressionError(f"unexpected character {source[pos]!r} at position {pos + 1}")
        if m.group("ref") is not None:
            name = m.group("refname").strip()
            if not _FIELD_NAME_RE.match(name):
                raise ExpressionError(f"bad field reference ${{{name}}} at position {pos + 1}")
            tokens.append(Token("ref", name, pos))
        elif m.group("parent") is not None:
            tokens.append(Token("ref", m.group("parentname"), pos))
        elif m.group("ws") is None:
            text = m.group(0)
            kind = next(k for k in ("number", "string", "op", "name") if m.group(k) is not None)
            tokens.append(Token(kind, text, pos))
        pos = m.end()
    tokens.append(Token("end", "", len(source)))
    return tokens


@dataclass(frozen=True)
class Node:
    kind: str  # num str ref bare cur neg bin call
    value: object = None
    args: tuple[Node, ...] = ()


_BINARY_POWER = {
    "or": 1,
    "and": 2,
    "=": 3,
    "!=": 3,
    "<": 4,
    "<=": 4,
    ">": 4,
    ">=": 4,
    "+": 5,
    "-": 5,
    "*": 6,
    "div": 6,
    "mod": 6,
}
_UNARY_POWER = 7

BareNames = Literal["error", "choice", "model"]


class _Parser:
    def __init__(self, source: str, bare: BareNames) -> None:
        self.source = source
        self.tokens = tokenize(source)
        self.i = 0
        self.bare = bare

    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.next()
        if tok.text != text or tok.kind not in ("op",):
            found = "end of expression" if tok.kind == "end" else repr(tok.text)
            raise ExpressionError(f"expected {text!r} at position {tok.pos + 1}, found {found}")

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise ExpressionError("empty expression")
        node = self.expression(0)
        tok = self.peek()
        if tok.kind != "end":
            raise ExpressionError(f"unexpected {tok.text!r} at position {tok.pos + 1}")
        return node

    def infix_op(self, tok: Token) -> str | None:
        if tok.kind == "op" and tok.text in _BINARY_POWER:
            return tok.text
        if tok.kind == "name" and tok.text in ("and", "or", "div", "mod"):
            return tok.text
        return None

    def expression(self, min_power: int) -> Node:
        left = self.prefix()
        while True:
            op = self.infix_op(self.peek())
            if op is None:
                return left
            power = _BINARY_POWER[op]
            if power <= min_power:
                return left
            self.next()
            right = self.expression(power)
            left = Node("bin", op, (left, right))

    def prefix(self) -> Node:
        tok = self.next()
        if tok.kind == "number":
            if "e" in tok.text.lower() and self.bare != "model":
                raise ExpressionError(
                    f"{tok.text!r} at position {tok.pos + 1}: XPath numbers have no exponent"
                )
            return Node("num", float(tok.text))
        if tok.kind == "string":
            return Node("str", tok.text[1:-1])
        if tok.kind == "ref":
            return Node("ref", tok.text)
        if tok.kind == "op":
            if tok.text == "(":
                inner = self.expression(0)
                self.expect(")")
                return inner
            if tok.text == "-":
                return Node("neg", None, (self.expression(_UNARY_POWER - 1),))
            if tok.text == ".":
                return Node("cur")
        if tok.kind == "name":
            if self.peek().text == "(" and self.peek().kind == "op":
                return self.call(tok)
            if "-" in tok.text:
                raise ExpressionError(
                    f"{tok.text!r} at position {tok.pos + 1} is one name in XPath; "
                    "put spaces around '-' to subtract"
                )
            if self.bare == "error":
                raise ExpressionError(
                    f"bare name {tok.text!r} at position {tok.pos + 1}: "
                    f"refer to a field as ${{{tok.text}}}"
                )
            return Node("bare", tok.text)
        found = "end of expression" if tok.kind == "end" else repr(tok.text)
        raise ExpressionError(f"unexpected {found} at position {tok.pos + 1}")

    def call(self, name_tok: Token) -> Node:
        self.expect("(")
        args: list[Node] = []
        if not (self.peek().kind == "op" and self.peek().text == ")"):
            while True:
                args.append(self.expression(0))
                if self.peek().kind == "op" and self.peek().text == ",":
                    self.next()
                    continue
                break
        self.expect(")")
        name = name_tok.text
        spec = FUNCTIONS.get(name)
        if spec is None:
            raise ExpressionError(f"unknown function {name}() at position {name_tok.pos + 1}")
        low, high = spec.arity
        if len(args) < low or (high is not None and len(args) > high):
            if high is None:
                want = f"at least {low}"
            elif low == high:
                want = str(low)
            else:
                want = f"{low} to {high}"
            raise ExpressionError(
                f"{name}() takes {want} argument{'s' if want != '1' else ''}, got {len(args)}"
            )
        if name == "regex" and args[1].kind == "str":
            try:
                re.compile(str(args[1].value))
            except re.error as exc:
                raise ExpressionError(f"regex(): bad pattern {args[1].value!r}: {exc}") from None
        return Node("call", name, tuple(args))


# ---------------------------------------------------------------------------------------
# Compilation to closures

Compiled = Callable[[Scope], Value]


def _compile(node: Node) -> Compiled:
    kind = node.kind
    if kind == "num":
        num = float(node.value)  # type: ignore[arg-type]
        return lambda s: num
    if kind == "str":
        text = str(node.value)
        return lambda s: text
    if kind == "ref":
        name = str(node.value)
        return lambda s: s.lookup(name)
    if kind == "bare":
        column = str(node.value)
        return lambda s: s.item(column)
    if kind == "cur":
        return lambda s: s.current()
    if kind == "neg":
        inner = _compile(node.args[0])
        return lambda s: -to_number(inner(s))
    if kind == "bin":
        return _compile_binary(str(node.value), _compile(node.args[0]), _compile(node.args[1]))
    if kind == "call":
        spec = FUNCTIONS[str(node.value)]
        args = [_compile(a) for a in node.args]
        return spec.build(args)
    raise AssertionError(kind)  # pragma: no cover


def _compare(op: str, a: Value, b: Value) -> bool:
    if isinstance(a, NodeSet) or isinstance(b, NodeSet):
        left = a if isinstance(a, NodeSet) else NodeSet([a])
        right = b if isinstance(b, NodeSet) else NodeSet([b])
        return any(_compare(op, as_value(x), as_value(y)) for x in left for y in right)
    if op in ("=", "!="):
        if isinstance(a, bool) or isinstance(b, bool):
            equal = to_boolean(a) == to_boolean(b)
        elif isinstance(a, float) or isinstance(b, float):
            equal = to_number(a) == to_number(b)
        else:
            equal = a == b
        return equal if op == "=" else not equal
    x, y = to_number(a), to_number(b)
    if op == "<":
        return x < y
    if op == "<=":
        return x <= y
    if op == ">":
        return x > y
    return x >= y


def _arith(op: str, x: float, y: float) -> float:
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    if op == "div":
        if y == 0:
            if x == 0 or math.isnan(x):
                return math.nan
            return math.copysign(math.inf, x) * (math.copysign(1.0, y))
        return x / y
    # mod: XPath truncates towards zero (sign of the dividend)
    if y == 0 or math.isinf(x) or math.isnan(x) or math.isnan(y):
        return math.nan
    return math.fmod(x, y)


def _compile_binary(op: str, left: Compiled, right: Compiled) -> Compiled:
    if op == "and":
        return lambda s: to_boolean(left(s)) and to_boolean(right(s))
    if op == "or":
        return lambda s: to_boolean(left(s)) or to_boolean(right(s))
    if op in ("=", "!=", "<", "<=", ">", ">="):
        return lambda s: _compare(op, left(s), right(s))

    def arith(s: Scope) -> Value:
        x, y = to_number(left(s)), to_number(right(s))
        try:
            return _arith(op, x, y)
        except OverflowError:
            return math.inf
        except (ValueError, ZeroDivisionError):
            return math.nan

    return arith


# ---------------------------------------------------------------------------------------
# Function library

Builder = Callable[[list[Compiled]], Compiled]


@dataclass(frozen=True)
class FunctionSpec:
    arity: tuple[int, int | None]
    build: Builder


def _flatten(values: list[Value]) -> list[object]:
    out: list[object] = []
    for v in values:
        if isinstance(v, NodeSet):
            out.extend(v)
        else:
            out.append(v)
    return out


def _round_half_up(x: float, digits: int) -> float:
    if math.isnan(x) or math.isinf(x):
        return x
    try:
        q = Decimal(1).scaleb(-digits)
        return float(Decimal(repr(x)).quantize(q, rounding=ROUND_HALF_UP))
    except (InvalidOperation, ValueError, OverflowError):
        return math.nan


def _regex(s: Scope, subject: Compiled, pattern: Compiled) -> bool:
    pat = to_string(pattern(s))
    try:
        return re.search(pat, to_string(subject(s))) is not None
    except re.error as exc:
        raise ExpressionError(f"regex(): bad pattern {pat!r}: {exc}") from None


def _int(x: float) -> float:
    if math.isnan(x) or math.isinf(x):
        return x
    return float(math.trunc(x))


def _xpath_round(x: float) -> float:
    if math.isnan(x) or math.isinf(x):
        return x
    return float(math.floor(x + 0.5))


def _substr(s: str, start: float, end: float | None) -> str:
    if math.isnan(start):
        return ""
    n = float(len(s))  # clamp first: int() of an infinite index would raise
    i = int(min(max(start, 0.0), n))
    if end is None:
        return s[i:]
    if math.isnan(end):
        return ""
    return s[i : max(i, int(min(max(end, 0.0), n)))]


def _min_max(pick: Callable[[list[float]], float]) -> Builder:
    def build(args: list[Compiled]) -> Compiled:
        def fn(s: Scope) -> Value:
            nums = [to_number(v) for v in _flatten([a(s) for a in args])]
            if not nums or any(math.isnan(n) for n in nums):
                return math.nan
            return pick(nums)

        return fn

    return build


def _fn1(f: Callable[[Value], Value]) -> Builder:
    return lambda a: lambda s: f(a[0](s))


def _fn2(f: Callable[[Value, Value], Value]) -> Builder:
    return lambda a: lambda s: f(a[0](s), a[1](s))


def _selected_at(v: Value, n: Value) -> str:
    items = to_string(v).split()
    k = to_number(n)
    if math.isnan(k) or math.isinf(k) or k < 0 or k != int(k) or int(k) >= len(items):
        return ""
    return items[int(k)]


def _coalesce(args: list[Compiled]) -> Compiled:
    def fn(s: Scope) -> Value:
        for a in args:
            v = a(s)
            if to_string(v) != "":
                return v
        return ""

    return fn


def _if(args: list[Compiled]) -> Compiled:
    cond, yes, no = args
    return lambda s: yes(s) if to_boolean(cond(s)) else no(s)


def _round(args: list[Compiled]) -> Compiled:
    if len(args) == 1:
        return lambda s: _xpath_round(to_number(args[0](s)))

    def fn(s: Scope) -> Value:
        digits = to_number(args[1](s))
        if math.isnan(digits) or abs(digits) > 300:
            return math.nan
        return _round_half_up(to_number(args[0](s)), int(digits))

    return fn


def _string_length(args: list[Compiled]) -> Compiled:
    if not args:
        return lambda s: float(len(to_string(s.current())))
    return lambda s: float(len(to_string(args[0](s))))


def _string(args: list[Compiled]) -> Compiled:
    if not args:
        return lambda s: to_string(s.current())
    return lambda s: to_string(args[0](s))


def _concat(args: list[Compiled]) -> Compiled:
    return lambda s: "".join(to_string(as_value(v)) for v in _flatten([a(s) for a in args]))


def _join(args: list[Compiled]) -> Compiled:
    sep, rest = args[0], args[1:]
    return lambda s: to_string(sep(s)).join(
        to_string(as_value(v)) for v in _flatten([a(s) for a in rest])
    )


def _count(v: Value) -> float:
    if isinstance(v, NodeSet):
        return float(len(v))
    raise ExpressionError("count() needs a repeat or a field inside a repeat")


def _sum(v: Value) -> float:
    if isinstance(v, NodeSet):
        return float(sum(to_number(as_value(x)) for x in v))
    return to_number(v)


def _substr_fn(args: list[Compiled]) -> Compiled:
    def fn(s: Scope) -> Value:
        end = to_number(args[2](s)) if len(args) == 3 else None
        return _substr(to_string(args[0](s)), to_number(args[1](s)), end)

    return fn


def _pow(x: Value, y: Value) -> float:
    try:
        return float(math.pow(to_number(x), to_number(y)))
    except (OverflowError, ValueError):
        return math.nan


def _date(v: Value) -> str:
    n = to_number(v)
    if math.isnan(n) or abs(n) > 2_000_000:
        return ""
    try:
        return (_EPOCH + dt.timedelta(days=math.floor(n))).isoformat()
    except OverflowError:  # before year 1
        return ""


FUNCTIONS: dict[str, FunctionSpec] = {
    "selected": FunctionSpec(
        (2, 2), _fn2(lambda v, c: to_string(c).strip() in to_string(v).split())
    ),
    "count-selected": FunctionSpec((1, 1), _fn1(lambda v: float(len(to_string(v).split())))),
    "selected-at": FunctionSpec((2, 2), _fn2(_selected_at)),
    "if": FunctionSpec((3, 3), _if),
    "coalesce": FunctionSpec((2, None), _coalesce),
    "string-length": FunctionSpec((0, 1), _string_length),
    "concat": FunctionSpec((1, None), _concat),
    "join": FunctionSpec((2, None), _join),
    "regex": FunctionSpec((2, 2), lambda a: lambda s: _regex(s, a[0], a[1])),
    "round": FunctionSpec((1, 2), _round),
    "int": FunctionSpec((1, 1), _fn1(lambda v: _int(to_number(v)))),
    "number": FunctionSpec((1, 1), _fn1(to_number)),
    "string": FunctionSpec((0, 1), _string),
    "boolean": FunctionSpec((1, 1), _fn1(to_boolean)),
    "not": FunctionSpec((1, 1), _fn1(lambda v: not to_boolean(v))),
    "true": FunctionSpec((0, 0), lambda a: lambda s: True),
    "false": FunctionSpec((0, 0), lambda a: lambda s: False),
    "today": FunctionSpec((0, 0), lambda a: lambda s: s.today().isoformat()),
    "now": FunctionSpec((0, 0), lambda a: lambda s: s.now().isoformat()),
    "date": FunctionSpec((1, 1), _fn1(_date)),
    "count": FunctionSpec((1, 1), _fn1(_count)),
    "sum": FunctionSpec((1, 1), _fn1(_sum)),
    "min": FunctionSpec((1, None), _min_max(min)),
    "max": FunctionSpec((1, None), _min_max(max)),
    "floor": FunctionSpec((1, 1), _fn1(lambda v: _floor_ceil(math.floor, v))),
    "ceiling": FunctionSpec((1, 1), _fn1(lambda v: _floor_ceil(math.ceil, v))),
    "abs": FunctionSpec((1, 1), _fn1(lambda v: abs(to_number(v)))),
    "pow": FunctionSpec((2, 2), _fn2(_pow)),
    "contains": FunctionSpec((2, 2), _fn2(lambda a, b: to_string(b) in to_string(a))),
    "starts-with": FunctionSpec((2, 2), _fn2(lambda a, b: to_string(a).startswith(to_string(b)))),
    "ends-with": FunctionSpec((2, 2), _fn2(lambda a, b: to_string(a).endswith(to_string(b)))),
    "substr": FunctionSpec((2, 3), _substr_fn),
    "normalize-space": FunctionSpec((1, 1), _fn1(lambda v: " ".join(to_string(v).split()))),
}


def _floor_ceil(f: Callable[[float], int], v: Value) -> float:
    x = to_number(v)
    if math.isnan(x) or math.isinf(x):
        return x
    return float(f(x))


# ---------------------------------------------------------------------------------------
# Public entry


@dataclass(frozen=True)
class Expression:
    """A parsed expression: its source, the fields it reads, and a compiled evaluator."""

    source: str
    tree: Node
    refs: frozenset[str]
    bare_names: frozenset[str]
    uses_current: bool
    _fn: Compiled

    def evaluate(self, scope: Scope) -> Value:
        try:
            return self._fn(scope)
        except ExpressionError:
            raise
        except RecursionError:
            raise ExpressionError(f"{self.source!r}: nested too deeply") from None
        except (ArithmeticError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise ExpressionError(f"{self.source!r}: {exc}") from None

    def substitute(
        self, *, current: str | None = None, bare: Mapping[str, str] | None = None
    ) -> Expression:
        """The same expression with `.` read as `${current}` and bare names (choice_filter
        columns) replaced by the given string values: what a whole-table evaluation needs."""

        def rewrite(n: Node) -> Node:
            if n.kind == "cur" and current is not None:
                return Node("ref", current)
            if n.kind == "bare" and bare is not None and str(n.value) in bare:
                return Node("str", bare[str(n.value)])
            if n.args:
                return Node(n.kind, n.value, tuple(rewrite(a) for a in n.args))
            return n

        tree = rewrite(self.tree)
        return _expression(self.source, tree)

    def bare_as_refs(self) -> Expression:
        """The same expression with every bare name read as a column reference: how a model
        formula (``est.W088 * param.deadweight``) is evaluated over a table of draws."""

        def rewrite(n: Node) -> Node:
            if n.kind == "bare":
                return Node("ref", n.value)
            if n.args:
                return Node(n.kind, n.value, tuple(rewrite(a) for a in n.args))
            return n

        return _expression(self.source, rewrite(self.tree))

    def boolean(self, scope: Scope) -> bool:
        return to_boolean(self.evaluate(scope))

    def number(self, scope: Scope) -> float:
        return to_number(self.evaluate(scope))

    def string(self, scope: Scope) -> str:
        return to_string(self.evaluate(scope))


def _collect(node: Node, refs: set[str], bare: set[str], flags: set[str]) -> None:
    if node.kind == "ref":
        refs.add(str(node.value))
    elif node.kind == "bare":
        bare.add(str(node.value))
    elif node.kind == "cur":
        flags.add("cur")
    for arg in node.args:
        _collect(arg, refs, bare, flags)


def parse(source: str, *, bare_names: BareNames = "error") -> Expression:
    """Parse an expression; raise ExpressionError saying what is wrong and where.

    `bare_names`: "error" for XLSForm fields (references are `${name}`), "choice" for
    choice_filter (bare names are columns of the choices sheet), "model" for model formulas
    (bare dotted names such as `est.W088`).
    """
    if not isinstance(source, str):
        raise ExpressionError(f"expression must be text, got {type(source).__name__}")
    try:
        tree = _Parser(source, bare_names).parse()
        fn = _compile(tree)
    except RecursionError:
        raise ExpressionError("expression nested too deeply") from None
    return _expression(source, tree, fn)


def _expression(source: str, tree: Node, fn: Compiled | None = None) -> Expression:
    refs: set[str] = set()
    bare: set[str] = set()
    flags: set[str] = set()
    _collect(tree, refs, bare, flags)
    if fn is None:
        fn = _compile(tree)
    return Expression(source, tree, frozenset(refs), frozenset(bare), "cur" in flags, fn)


@dataclass
class MappingScope:
    """A Scope over a flat mapping of field values: the simplest way to evaluate."""

    values: Mapping[str, object]
    current_value: object = None
    choice: Mapping[str, object] | None = None
    today_date: dt.date = dt.date(2018, 10, 1)

    def lookup(self, name: str) -> Value:
        v = self.values.get(name)
        if isinstance(v, list) and v and isinstance(v[0], dict):
            return NodeSet(v)
        return as_value(v)

    def current(self) -> Value:
        return as_value(self.current_value)

    def item(self, column: str) -> Value:
        if self.choice is None:
            return ""
        return as_value(self.choice.get(column))

    def today(self) -> dt.date:
        return self.today_date

    def now(self) -> dt.datetime:
        return dt.datetime.combine(self.today_date, dt.time(0, 0), tzinfo=dt.UTC)
