"""Speed of the XLSForm expression evaluator against XPath engines used for ODK forms.

Peers: elementpath (pure-Python XPath 1.0, with ODK functions registered on a parser
subclass) and lxml (libxml2's C XPath, with ODK functions as Python extensions). Each
expression is compiled once and evaluated N times against one submission; every engine must
give the same value.

Run: .venv/bin/pip install elementpath lxml && .venv/bin/python bench/bench_expr.py
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from typing import Any

from impactstudy.forms.expr import MappingScope, parse

N = 100_000
ANSWERS: dict[str, object] = {
    "age": 20,
    "total": 10,
    "a": 2,
    "pay": "cash retail wechat",
    "phone": "13812345678",
}
CURRENT = 7
EXPRESSIONS = [
    "${age} >= 18 and selected(${pay}, 'retail')",
    ". >= 0 and . <= ${total}",
    "count-selected(${pay}) > 2",
    "if(${a} > 1, 'x', 'y')",
    "regex(${phone}, '^1[3-9][0-9]{9}$')",
]


def to_xpath(expr: str) -> str:
    return re.sub(r"\$\{(\w+)\}", r"/data/\1", expr)


def ours() -> tuple[str, Callable[[str], Callable[[], object]]]:
    scope = MappingScope(ANSWERS, current_value=CURRENT)

    def compile_(expr: str) -> Callable[[], object]:
        ex = parse(expr)
        return lambda: ex.evaluate(scope)

    return "impactstudy", compile_


def elementpath_engine() -> tuple[str, Callable[[str], Callable[[], object]]] | None:
    try:
        from xml.etree import ElementTree

        from elementpath import XPath1Parser, XPathContext
    except ImportError:
        return None

    class ODKParser(XPath1Parser):  # type: ignore[misc]
        pass

    def arg(tok: Any, ctx: Any, i: int) -> str:
        return str(tok.string_value(tok.get_argument(ctx, index=i)))

    method, function = ODKParser.method, ODKParser.function

    @method(function("selected", nargs=2))  # type: ignore[untyped-decorator]
    def evaluate(self: Any, context: Any = None) -> bool:
        return arg(self, context, 1).strip() in arg(self, context, 0).split()

    @method(function("count-selected", nargs=1))  # type: ignore[untyped-decorator]
    def evaluate(self: Any, context: Any = None) -> float:  # noqa: F811
        return float(len(arg(self, context, 0).split()))

    @method(function("regex", nargs=2))  # type: ignore[untyped-decorator]
    def evaluate(self: Any, context: Any = None) -> bool:  # noqa: F811
        return re.search(arg(self, context, 1), arg(self, context, 0)) is not None

    @method(function("if", nargs=3))  # type: ignore[untyped-decorator]
    def evaluate(self: Any, context: Any = None) -> object:  # noqa: F811
        cond = self.boolean_value(self[0].select(context))
        return self[1].evaluate(context) if cond else self[2].evaluate(context)

    root = ElementTree.Element("data")
    for k, v in ANSWERS.items():
        ElementTree.SubElement(root, k).text = str(v)
    cur = ElementTree.SubElement(root, "current")
    cur.text = str(CURRENT)
    context = XPathContext(ElementTree.ElementTree(root), item=cur)

    def compile_(expr: str) -> Callable[[], object]:
        tok = ODKParser().parse(to_xpath(expr))
        return lambda: tok.evaluate(context)

    return "elementpath", compile_


def lxml_engine() -> tuple[str, Callable[[str], Callable[[], object]]] | None:
    try:
        from lxml import etree
    except ImportError:
        return None

    def s(v: object) -> str:
        if isinstance(v, list):
            return str(v[0].text or "") if v else ""
        return str(v)

    ext = {
        (None, "selected"): lambda ctx, a, b: s(b).strip() in s(a).split(),
        (None, "count-selected"): lambda ctx, a: float(len(s(a).split())),
        (None, "regex"): lambda ctx, a, b: re.search(s(b), s(a)) is not None,
        (None, "if"): lambda ctx, c, a, b: a if c else b,
    }
    root = etree.Element("data")
    for k, v in ANSWERS.items():
        etree.SubElement(root, k).text = str(v)
    cur = etree.SubElement(root, "current")
    cur.text = str(CURRENT)

    def compile_(expr: str) -> Callable[[], object]:
        xp = etree.XPath(to_xpath(expr), extensions=ext)
        return lambda: xp(cur)

    return "lxml", compile_


def normalise(v: object) -> object:
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return float(v)
    return str(v)


def main() -> None:
    engines = [e for e in (ours(), elementpath_engine(), lxml_engine()) if e is not None]
    print(f"Python {sys.version.split()[0]}; {N:,} evaluations per expression\n")
    print("| expression | " + " | ".join(f"{name} µs/eval" for name, _ in engines) + " |")
    print("| --- |" + " --- |" * len(engines))
    totals = dict.fromkeys((name for name, _ in engines), 0.0)
    for expr in EXPRESSIONS:
        row, values = [], []
        for name, compile_ in engines:
            fn = compile_(expr)
            values.append(normalise(fn()))
            t0 = time.perf_counter()
            for _ in range(N):
                fn()
            dt = time.perf_counter() - t0
            totals[name] += dt
            row.append(f"{dt / N * 1e6:.2f}")
        same = all(v == values[0] for v in values)
        print(f"| `{expr}` | " + " | ".join(row) + " |" + ("" if same else f" DIFFER {values}"))
    print("| total, s | " + " | ".join(f"{t:.2f}" for t in totals.values()) + " |")


if __name__ == "__main__":
    main()
