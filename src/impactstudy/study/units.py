"""Units of model quantities, and the check that a formula's unit is the one it declares.

A unit is a scale and a dimension: money (元 / yuan, with 万, 亿, 万亿 prefixes) and data volume
(GB); counts of people or things (人, persons, 万人, accounts, organisations, ...) and shares (%,
share, 1) are dimensionless, with a scale. So ``yuan + 亿元`` and ``persons + 万人`` are errors
(same dimension, different scale), ``persons * 元`` is money, and ``元 div 元`` is a plain number.
Percent is a plain number: model formulas divide 0-100 answers by 100 themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from impactstudy.forms.expr import Node

__all__ = ["DIMENSIONLESS", "Unit", "UnitError", "formula_unit", "parse_unit"]


class UnitError(ValueError):
    """A unit that cannot be read, or a formula whose units do not agree."""


@dataclass(frozen=True)
class Unit:
    """``scale`` times the product of dimensions with their exponents (sorted, non-zero)."""

    dims: tuple[tuple[str, int], ...] = ()
    scale: float = 1.0

    def __mul__(self, other: Unit) -> Unit:
        return Unit(_combine(self.dims, other.dims, 1), self.scale * other.scale)

    def __truediv__(self, other: Unit) -> Unit:
        return Unit(_combine(self.dims, other.dims, -1), self.scale / other.scale)

    def same(self, other: Unit) -> bool:
        return self.dims == other.dims and math.isclose(self.scale, other.scale, rel_tol=1e-12)

    @property
    def dimensionless(self) -> bool:
        return not self.dims

    def __str__(self) -> str:
        dims = " ".join(d if e == 1 else f"{d}^{e}" for d, e in self.dims) or "number"
        return dims if self.scale == 1 else f"{self.scale:g} {dims}"


DIMENSIONLESS = Unit()


def _combine(
    a: tuple[tuple[str, int], ...], b: tuple[tuple[str, int], ...], sign: int
) -> tuple[tuple[str, int], ...]:
    out = dict(a)
    for d, e in b:
        out[d] = out.get(d, 0) + sign * e
    return tuple(sorted((d, e) for d, e in out.items() if e != 0))


_PREFIXES = (("万亿", 1e12), ("十亿", 1e9), ("百万", 1e6), ("亿", 1e8), ("千", 1e3), ("万", 1e4))
_MONEY = Unit((("money", 1),))
_BASE: dict[str, Unit] = {
    "元": _MONEY,
    "yuan": _MONEY,
    "cny": _MONEY,
    "gb": Unit((("data", 1),)),
    "%": DIMENSIONLESS,
    "1": DIMENSIONLESS,
    "": DIMENSIONLESS,
    "share": DIMENSIONLESS,
    "unit": DIMENSIONLESS,
    "分": DIMENSIONLESS,
    "年": DIMENSIONLESS,
    "月": DIMENSIONLESS,
    "month": DIMENSIONLESS,
    "year": DIMENSIONLESS,
    # counts of people or things: numbers with a scale
    "人": DIMENSIONLESS,
    "个": DIMENSIONLESS,
    "家": DIMENSIONLESS,
    "person": DIMENSIONLESS,
    "persons": DIMENSIONLESS,
    "jobs": DIMENSIONLESS,
    "accounts": DIMENSIONLESS,
    "monthly_active_accounts": DIMENSIONLESS,
    "organisations": DIMENSIONLESS,
    "organizations": DIMENSIONLESS,
    "merchants": DIMENSIONLESS,
    "mini_programs": DIMENSIONLESS,
    "households": DIMENSIONLESS,
    "users": DIMENSIONLESS,
}


def parse_unit(text: str) -> Unit:
    """The unit of a unit string: ``亿元``, ``yuan``, ``万人``, ``persons``, ``元/人``, ``%``."""
    raw = text.strip()
    if "/" in raw:
        num, _, den = raw.partition("/")
        return parse_unit(num) / parse_unit(den)
    scale = 1.0
    base = raw
    for prefix, factor in _PREFIXES:
        if raw.startswith(prefix) and raw != prefix:
            scale, base = factor, raw[len(prefix) :]
            break
    else:
        if raw in ("万", "亿", "万亿"):  # a bare count prefix: 万 = 10,000 (things)
            return Unit((), dict(_PREFIXES)[raw])
    unit = _BASE.get(base.lower())
    if unit is None:
        known = ", ".join(sorted(k for k in _BASE if k))
        raise UnitError(f"unknown unit {text!r} (known: {known}, with 万/亿/万亿 prefixes)")
    return Unit(unit.dims, unit.scale * scale)


def formula_unit(tree: Node, unit_of: Callable[[str], Unit]) -> Unit:
    """The unit of a formula's value, from the units of the names it reads (``unit_of``).

    Sums, differences, comparisons and ``if``/``min``/``max`` branches need equal units;
    products and quotients combine them; ``pow``, ``exp``, ``log`` need plain numbers. A number
    literal is a plain number, except that it takes the unit of the other side of a sum or a
    comparison (``x - 1`` for a share ``x``).
    """
    return _unit(tree, unit_of)


def _unit(node: Node, unit_of: Callable[[str], Unit]) -> Unit:
    kind = node.kind
    if kind in ("num", "str"):
        return DIMENSIONLESS
    if kind in ("ref", "bare"):
        return unit_of(str(node.value))
    if kind == "neg":
        return _unit(node.args[0], unit_of)
    if kind == "bin":
        op = str(node.value)
        left, right = (_unit(a, unit_of) for a in node.args)
        if op == "*":
            return left * right
        if op == "div":
            return left / right
        if op in ("+", "-", "mod", "=", "!=", "<", "<=", ">", ">="):
            literal = [a.kind == "num" for a in node.args]
            if not left.same(right) and not any(literal):
                raise UnitError(
                    f"'{op}' joins {left} and {right}: convert one side "
                    f"(e.g. multiply 亿元 by 1e8 to get yuan)"
                )
            if op in ("+", "-", "mod"):
                return right if literal[0] else left
            return DIMENSIONLESS
        return DIMENSIONLESS  # and, or
    if kind == "call":
        name = str(node.value)
        args = [_unit(a, unit_of) for a in node.args]
        if name in ("pow", "exp", "exp10", "log", "log10", "sqrt"):
            if name == "sqrt":
                return Unit(tuple((d, e // 2) for d, e in args[0].dims), math.sqrt(args[0].scale))
            if name == "pow" and args[0].dimensionless and args[0].scale == 1:
                return DIMENSIONLESS
            if any(not a.dimensionless for a in args):
                raise UnitError(f"{name}() needs plain numbers, got {', '.join(map(str, args))}")
            return DIMENSIONLESS
        if name in ("if",):
            branches = args[1:]
        elif name in ("min", "max", "coalesce"):
            branches = args
        else:
            return args[0] if args else DIMENSIONLESS
        for b in branches[1:]:
            if not b.same(branches[0]):
                raise UnitError(f"{name}() mixes {branches[0]} and {b}")
        return branches[0]
    return DIMENSIONLESS
