"""Consistency audit: identities among published (or modelled) figures.

A rules file (TOML) declares checks over named figures: a stated multiple against a stated
CAGR, a share against its denominator, parts that must sum to a total, a growth between two
years, a part that must not exceed its total, and a growth chain (the growth of a remainder
forced by a total's and a part's growth). Figures come from a table with columns ``id`` and
``value``; text values are parsed from the report's printed formats (万, 亿, %, 约, 超过, 以上,
七成, ...) into the interval of true values consistent with their printed rounding.

Each check yields a finding with one of three verdicts:

* ``consistent``: the printed values satisfy the identity (the implied value reproduces the
  stated one at its printed precision, or the stated relation holds);
* ``tension``: the printed values do not, but some values within the printed rounding do
  (e.g. "2.5x over 4 years" against "over 26% a year": holds only if 2.5 is a rounded
  2.520-2.55), or a plausibility bound marked ``severity = "tension"`` is exceeded;
* ``conflict``: no values consistent with the printed rounding satisfy the identity.

The admissible interval of an implied value is computed from the corners of the box of its
inputs' rounding intervals: exact for every identity used here, which are monotone in each
input (sums, products, quotients and powers of positive numbers).
"""

from __future__ import annotations

import ast
import itertools
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl

__all__ = [
    "KINDS",
    "AuditError",
    "Check",
    "Printed",
    "Rules",
    "audit",
    "bundled_figures",
    "bundled_rules",
    "figures_table",
    "load_rules",
    "parse_printed",
    "read_figures",
]

KINDS = ("multiple_vs_cagr", "share_of", "sum_to", "growth", "part_le_total", "chain")
RELATIONS = {
    "≈": "≈",
    "~": "≈",
    "=": "≈",
    "==": "≈",
    ">": ">",
    ">=": ">=",
    "≥": ">=",
    "<": "<",
    "<=": "<=",
    "≤": "<=",
}
VERDICT_ORDER = {"conflict": 0, "tension": 1, "consistent": 2}
BUNDLED_RULES = "audit_wechat_2018.toml"
BUNDLED_FIGURES = "audit_figures_wechat_2019.csv"


class AuditError(ValueError):
    """Bad audit input: the message names the file, row, column or key at fault."""


# --------------------------------------------------------------------------- printed values


@dataclass(frozen=True)
class Printed:
    """A printed figure: its point value and the interval of values it may stand for."""

    value: float
    lo: float
    hi: float
    text: str = ""

    @classmethod
    def exact(cls, x: float, text: str = "") -> Printed:
        """A value known exactly (a model output, a literal in a rule)."""
        return cls(x, x, x, text or _fmt_plain(x))


_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}
_CN_DIGITS.update({"六": 6, "七": 7, "八": 8, "九": 9})
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_MAGNITUDES = (("万亿", 1e12), ("亿", 1e8), ("万", 1e4))
_OVER_PREFIX = ("超过", "超出", "突破", "高达", "超", "逾", "破")
_NEAR_PREFIX = ("将近", "接近", "近")
_ABOUT_PREFIX = ("大约", "约")
_NOISE_PREFIX = ("最高达", "达到", "达")
_OVER_SUFFIX = ("以上",)
_MANY_SUFFIX = ("多", "余")
_ABOUT_SUFFIX = ("左右", "上下")
_NUM = re.compile(r"^\d+(?:\.\d+)?")
_RANGE_SPLIT = re.compile(
    r"(?<=[\d%万亿十百千成])\s*(?:到|至|-|–|—|~|～)\s*(?=[\d约近超一二两三四五六七八九十])"
)


def _unit_scale(unit: str | None) -> float:
    """The factor a unit column puts on a bare number (万 → 1e4, % → 0.01, 亿元 → 1e8)."""
    if not unit:
        return 1.0
    u = unit.strip()
    if u.startswith(("%", "％")) or u.startswith("个百分点") or u == "百分点":
        return 0.01
    if u == "成":
        return 0.1
    for mark, factor in _MAGNITUDES:
        if u.startswith(mark):
            return factor
    return 1.0


def _cn_number(s: str) -> tuple[float, float] | None:
    """A Chinese numeral (八, 十亿, 千万, 一百五十) as (value, unit of its last place)."""
    if not s or any(c not in _CN_DIGITS and c not in _CN_UNITS and c not in "万亿" for c in s):
        return None
    total = 0.0
    section = 0.0
    digit: float | None = None
    last_place = 1.0
    for c in s:
        if c in _CN_DIGITS:
            digit = _CN_DIGITS[c]
            last_place = 1.0
        elif c in _CN_UNITS:
            section += (1 if digit is None else digit) * _CN_UNITS[c]
            last_place = _CN_UNITS[c]
            digit = None
        else:  # 万 / 亿: scale everything so far
            mult = 1e4 if c == "万" else 1e8
            section += digit or 0
            if section == 0:
                section = 1
            if total and c == "亿":
                total = (total + section) * mult
            else:
                total += section * mult
            last_place *= mult
            section = 0.0
            digit = None
    section += digit or 0
    return total + section, last_place


def _last_unit(num: str) -> float:
    """Unit of the last printed digit: 10.82 → 0.01, 2235 → 1."""
    return 10.0 ** -len(num.split(".")[1]) if "." in num else 1.0


def _nonzero_unit(num: str) -> float:
    """Unit of the last non-zero digit: 2200 → 100, 26 → 1, 4.1 → 0.1."""
    if "." in num:
        return _last_unit(num)
    stripped = num.rstrip("0")
    return 10.0 ** (len(num) - len(stripped)) if stripped else 1.0


def parse_printed(text: object, unit: str | None = None) -> Printed:
    """Parse a printed figure ("约11%", "2235万", "超5万亿", "七成以上", "9到10") into an interval.

    Plain numbers stand for ± half a unit of their last printed digit; 约/左右 likewise;
    超/超过/以上/突破 give [x, x + step] and 近 [x − step, x], where step is the unit of the last
    non-zero digit capped at 10% of x; 多/余 give [x, x + unit of the last non-zero digit]
    (2200多 = 2200-2300); ranges (9到10, 20%-30%, 三四十) give their ends. ``unit`` is the
    figure's unit column: it scales bare numbers (% → 0.01, 万 → 1e4, 亿元 → 1e8).
    Raises ValueError when the text is not a number.
    """
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a number")
    if isinstance(text, int | float):
        if not math.isfinite(float(text)):
            raise ValueError(f"{text!r} is not a finite number")
        return Printed.exact(float(text))
    raw = str(text)
    s = re.sub(r"[\s,，*]", "", raw)
    if not s:
        raise ValueError("empty value")
    rng = _RANGE_SPLIT.split(s)
    if len(rng) == 2:
        right = _parse_one(rng[1], unit, raw)
        left_text = rng[0]
        # "20%-30%" / "9到10倍": the left end borrows the right end's scale marks.
        tail = re.sub(r"^[\d.约近超一二两三四五六七八九十零]+", "", rng[1])
        if tail and not re.search(r"[%万亿成倍]", left_text):
            left_text += tail
        left = _parse_one(left_text, unit, raw)
        # A range states its ends: 9到10 = [9, 10].
        return Printed((left.value + right.value) / 2, left.value, right.value, raw)
    return _parse_one(s, unit, raw)


def _parse_one(s: str, unit: str | None, raw: str) -> Printed:
    mode = "plain"
    for group, name in (
        (_NOISE_PREFIX, "plain"),
        (_OVER_PREFIX, "over"),
        (_NEAR_PREFIX, "near"),
        (_ABOUT_PREFIX, "plain"),
    ):
        for p in group:
            if s.startswith(p) and len(s) > len(p):
                s = s[len(p) :]
                mode = name if name != "plain" else mode
                break
    suffixes: tuple[tuple[tuple[str, ...], str], ...] = (
        (_OVER_SUFFIX, "over"),
        (_ABOUT_SUFFIX, "plain"),
    )
    for sgroup, name in suffixes:
        for p in sgroup:
            if s.endswith(p) and len(s) > len(p):
                s = s[: -len(p)]
                mode = name if name != "plain" else mode
    scale = 1.0
    scaled = False
    if s.endswith(("%", "％")):
        s, scale, scaled = s[:-1], 0.01, True
    elif s.endswith("个百分点"):
        s, scale, scaled = s[:-4], 0.01, True
    elif s.endswith("百分点"):
        s, scale, scaled = s[:-3], 0.01, True
    elif s.endswith("倍"):
        s = s[:-1]
    for sfx in _MANY_SUFFIX:  # "9亿多": 多 after the magnitude
        if s.endswith(sfx) and len(s) > 1:
            s, mode = s[: -len(sfx)], "many"
    if s.endswith("成") and len(s) > 1:
        s, scale, scaled = s[:-1], 0.1, True
    elif s.endswith("数") and len(s) > 1 and s[:-1] in ("半",):
        s, scale, scaled = s[:-1], 1.0, True
    for mark, factor in _MAGNITUDES:
        if s.endswith(mark) and len(s) > len(mark) and not _cn_only(s):
            s, scale, scaled = s[: -len(mark)], scale * factor, True
            break
    for sfx in _MANY_SUFFIX:  # "20多万"
        if s.endswith(sfx) and len(s) > 1:
            s, mode = s[: -len(sfx)], "many"
    if not scaled:
        scale = _unit_scale(unit)
    if s == "半":
        # 半 = one half; 半数 a share of one half; 半成 = 5%.
        v = 0.5 * scale
        return _interval(v, 0.5 * scale * 0.2, 0.5 * scale * 0.2, mode, raw)
    m = re.fullmatch(r"(两|一|二|三|四|五|六|七|八|九)位数", s)
    if m:
        n = _CN_DIGITS[m.group(1)]
        return Printed(10.0 ** (n - 1) * scale, 10.0 ** (n - 1) * scale, 10.0**n * scale, raw)
    m = re.fullmatch(r"第(.+)", s)
    if m:
        s = m.group(1)
    place: float
    pair = re.fullmatch(r"([一二两三四五六七八九])([一二两三四五六七八九])([十百千]?)", s)
    if pair and _CN_DIGITS[pair.group(2)] == _CN_DIGITS[pair.group(1)] + 1:
        place = _CN_UNITS.get(pair.group(3), 1)
        a, b = _CN_DIGITS[pair.group(1)] * place, _CN_DIGITS[pair.group(2)] * place
        return Printed((a + b) / 2 * scale, a * scale, b * scale, raw)
    if s.startswith("数") and (len(s) == 1 or _cn_only(s[1:])):
        cn_place = _cn_number(s[1:]) if len(s) > 1 else None
        place = cn_place[0] if cn_place is not None else 1.0
        return Printed(5 * place * scale, 2 * place * scale, 9 * place * scale, raw)
    num = _NUM.fullmatch(s)
    x: float
    if num:
        x = float(s)
        return _interval(x * scale, _last_unit(s) * scale, _nonzero_unit(s) * scale, mode, raw)
    cn = _cn_number(s)
    if cn is not None:
        x, place = cn
        return _interval(x * scale, place * scale, place * scale, mode, raw)
    raise ValueError(f"{raw!r} is not a number")


def _cn_only(s: str) -> bool:
    return bool(s) and all(c in _CN_DIGITS or c in _CN_UNITS or c in "万亿" for c in s)


def _interval(x: float, last: float, step: float, mode: str, raw: str) -> Printed:
    if mode == "over":
        return Printed(x, x, x + min(step, 0.1 * abs(x)) if x else x + step, raw)
    if mode == "near":
        return Printed(x, x - min(step, 0.1 * abs(x)) if x else x - step, x, raw)
    if mode == "many":
        return Printed(x, x, x + step, raw)
    return Printed(x, x - last / 2, x + last / 2, raw)


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Anchor:
    """A figure given in the rules file itself, with its source."""

    name: str
    value: Printed
    source: str


@dataclass(frozen=True)
class Check:
    """One declared check: its kind, its expressions by role, relation and notes."""

    id: str
    kind: str
    exprs: dict[str, str]
    relation: str
    years: float = 1.0
    solve: str = "share"
    severity: str = "conflict"
    display: str = "auto"
    note_en: str = ""
    note_zh: str = ""
    key: str = ""

    def names(self) -> list[str]:
        """Every figure id or anchor name the check refers to, in order of appearance."""
        out: list[str] = []
        for e in self.exprs.values():
            for n in _expr_names(e):
                if n not in out:
                    out.append(n)
        return out


@dataclass(frozen=True)
class Rules:
    """A parsed rules file: its anchors and checks."""

    checks: list[Check]
    anchors: dict[str, Anchor] = field(default_factory=dict)
    source: str = "<rules>"
    title: str = ""


_ROLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # kind: (required expression keys, optional expression keys)
    "multiple_vs_cagr": (("multiple", "cagr"), ()),
    "share_of": (("part", "whole", "share"), ()),
    "sum_to": (("total",), ()),
    "growth": (("start", "end", "growth"), ()),
    "part_le_total": (("part", "total"), ()),
    "chain": (("total", "total_growth", "part", "part_growth", "bound"), ()),
}
_DEFAULT_RELATION = {
    "multiple_vs_cagr": None,
    "share_of": "≈",
    "sum_to": "≈",
    "growth": "≈",
    "part_le_total": "<=",
    "chain": None,
}
_KNOWN_KEYS = {
    "id",
    "kind",
    "relation",
    "years",
    "solve",
    "severity",
    "display",
    "note_en",
    "note_zh",
    "parts",
}


def bundled_rules() -> Path:
    """The shipped rules for the WeChat 2018 report (the 2019 edition)."""
    return Path(str(resources.files("impactstudy.impact").joinpath(BUNDLED_RULES)))


def bundled_figures() -> Path:
    """The shipped copy of the report's 307 figures (CAICT and Tencent, 2019)."""
    return Path(str(resources.files("impactstudy.impact").joinpath(BUNDLED_FIGURES)))


def load_rules(path: str | Path | None = None) -> Rules:
    """Read and validate a rules TOML file (default: the bundled WeChat 2018 rules)."""
    p = Path(path) if path is not None else bundled_rules()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AuditError(f"{p}: no such rules file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditError(f"{p}: cannot read rules file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise AuditError(f"{p}: not valid TOML: {exc}") from None
    return rules_from_dict(data, source=str(p))


def rules_from_dict(data: Mapping[str, Any], source: str = "<rules>") -> Rules:
    """Build rules from an already parsed mapping (a TOML document); errors name the key."""
    anchors: dict[str, Anchor] = {}
    raw_anchors = data.get("anchors", {})
    if not isinstance(raw_anchors, Mapping):
        raise AuditError(f"{source}: [anchors] must be a table")
    for name, a in raw_anchors.items():
        where = f"{source}: anchors.{name}"
        if not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise AuditError(f"{where}: an anchor name must be an identifier")
        if not isinstance(a, Mapping) or "value" not in a or "source" not in a:
            raise AuditError(f"{where}: needs value and source")
        try:
            value = parse_printed(a["value"], a.get("unit"))
        except ValueError as exc:
            raise AuditError(f"{where}.value: {exc}") from None
        anchors[name] = Anchor(name, value, str(a["source"]))
    raw_checks = data.get("checks", [])
    if not isinstance(raw_checks, list) or not raw_checks:
        raise AuditError(f"{source}: no [[checks]]")
    checks: list[Check] = []
    seen: set[str] = set()
    for i, c in enumerate(raw_checks):
        checks.append(_check_from_dict(c, i, source, seen))
    meta = data.get("audit", {})
    title = str(meta.get("title", "")) if isinstance(meta, Mapping) else ""
    return Rules(checks, anchors, source, title)


def _check_from_dict(c: object, i: int, source: str, seen: set[str]) -> Check:
    where = f"{source}: checks[{i}]"
    if not isinstance(c, Mapping):
        raise AuditError(f"{where}: must be a table")
    cid = c.get("id")
    if not isinstance(cid, str) or not cid:
        raise AuditError(f"{where}: missing id")
    where = f"{source}: checks[{i}] (id {cid!r})"
    if cid in seen:
        raise AuditError(f"{where}: duplicate id")
    seen.add(cid)
    kind = c.get("kind")
    if kind not in _ROLES:
        raise AuditError(f"{where}.kind: {kind!r} is not one of {', '.join(KINDS)}")
    required, optional = _ROLES[kind]
    exprs: dict[str, str] = {}
    for key in (*required, *optional):
        if key not in c:
            if key in required:
                raise AuditError(f"{where}: kind {kind} needs key {key!r}")
            continue
        exprs[key] = _expr_text(c[key], f"{where}.{key}")
    if kind == "sum_to":
        parts = c.get("parts")
        if not isinstance(parts, list) or len(parts) < 2:
            raise AuditError(f"{where}.parts: needs a list of at least two figures")
        for j, p in enumerate(parts):
            exprs[f"part{j + 1}"] = _expr_text(p, f"{where}.parts[{j}]")
    unknown = set(c) - _KNOWN_KEYS - set(required) - set(optional)
    if unknown:
        raise AuditError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    rel_raw = c.get("relation", _DEFAULT_RELATION[kind])
    if rel_raw is None:
        raise AuditError(f"{where}: kind {kind} needs key 'relation' (>, >=, ≈, <=, <)")
    if str(rel_raw) not in RELATIONS:
        raise AuditError(f"{where}.relation: {rel_raw!r} is not one of >, >=, ≈, <=, <")
    years = c.get("years", 1)
    if kind == "multiple_vs_cagr" and "years" not in c:
        raise AuditError(f"{where}: kind multiple_vs_cagr needs key 'years'")
    if isinstance(years, bool) or not isinstance(years, int | float) or years <= 0:
        raise AuditError(f"{where}.years: must be a positive number, not {years!r}")
    solve = str(c.get("solve", "share"))
    if kind == "share_of" and solve not in ("share", "whole", "part"):
        raise AuditError(f"{where}.solve: {solve!r} is not one of share, whole, part")
    severity = str(c.get("severity", "conflict"))
    if severity not in ("conflict", "tension"):
        raise AuditError(f"{where}.severity: {severity!r} is not one of conflict, tension")
    display = str(c.get("display", "auto"))
    if display not in _DISPLAYS:
        raise AuditError(f"{where}.display: {display!r} is not one of {', '.join(_DISPLAYS)}")
    return Check(
        id=cid,
        kind=kind,
        exprs=exprs,
        relation=RELATIONS[str(rel_raw)],
        years=float(years),
        solve=solve,
        severity=severity,
        display=display,
        note_en=str(c.get("note_en", "")),
        note_zh=str(c.get("note_zh", "")),
        key=where,
    )


# --------------------------------------------------------------------------- expressions

_ALLOWED_BIN: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
    ast.Pow: lambda a, b: a**b,
}


def _expr_text(v: object, where: str) -> str:
    """A rule's expression: a figure id, an anchor name, a number, or arithmetic of them."""
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise AuditError(f"{where}: must be a figure id, anchor name, number or expression")
    text = str(v)
    try:
        _expr_names(text)
    except (SyntaxError, ValueError) as exc:
        raise AuditError(f"{where}: bad expression {text!r}: {exc}") from None
    return text


def _prep(text: str) -> str:
    """Literal percentages (100%, 26%) become fractions."""
    return re.sub(r"(\d+(?:\.\d+)?)\s*%", r"(\1/100)", text)


def _expr_tree(text: str) -> ast.expr:
    tree = ast.parse(_prep(text), mode="eval").body
    for node in ast.walk(tree):
        allowed = (ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.operator)
        ok = isinstance(node, (*allowed, ast.USub, ast.UAdd, ast.Load))
        if not ok:
            raise ValueError(f"{type(node).__name__} is not allowed")
        if isinstance(node, ast.BinOp) and type(node.op) not in _ALLOWED_BIN:
            raise ValueError("only + - * / ** are allowed")
        if isinstance(node, ast.Constant) and (
            isinstance(node.value, bool) or not isinstance(node.value, int | float)
        ):
            raise ValueError(f"{node.value!r} is not a number")
    return tree


def _expr_names(text: str) -> list[str]:
    tree = _expr_tree(text)
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in names:
            names.append(node.id)
    return names


def _eval(tree: ast.expr, env: Mapping[str, float]) -> float:
    if isinstance(tree, ast.Constant) and isinstance(tree.value, int | float):
        return float(tree.value)
    if isinstance(tree, ast.Name):
        return env[tree.id]
    if isinstance(tree, ast.UnaryOp):
        v = _eval(tree.operand, env)
        return -v if isinstance(tree.op, ast.USub) else v
    if isinstance(tree, ast.BinOp):
        return _ALLOWED_BIN[type(tree.op)](_eval(tree.left, env), _eval(tree.right, env))
    raise ValueError(f"{type(tree).__name__} is not allowed")  # pragma: no cover


@dataclass(frozen=True)
class _Range:
    point: float
    lo: float
    hi: float


def _evaluate(
    fn: Callable[[Mapping[str, float]], float], names: list[str], env: Mapping[str, Printed]
) -> _Range:
    """Point value and the range over the corners of the inputs' rounding box."""
    point = fn({n: env[n].value for n in names})
    varying = [n for n in names if env[n].lo != env[n].hi]
    lo = hi = point
    if len(varying) <= 14:
        for corner in itertools.product((0, 1), repeat=len(varying)):
            vals = {n: env[n].value for n in names}
            for n, bit in zip(varying, corner, strict=True):
                vals[n] = env[n].hi if bit else env[n].lo
            v = fn(vals)
            lo, hi = min(lo, v), max(hi, v)
    else:  # pragma: no cover - no rule needs this many inputs
        raise AuditError("a check may use at most 14 rounded inputs")
    return _Range(point, lo, hi)


# --------------------------------------------------------------------------- the audit


def read_figures(path: str | Path) -> pl.DataFrame:
    """Read a figures CSV (columns id and value; optional unit and quote) as text columns."""
    p = Path(path)
    try:
        df = pl.read_csv(p, infer_schema=False, comment_prefix="#")
    except FileNotFoundError:
        raise AuditError(f"{p}: no such figures file") from None
    except (OSError, pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        raise AuditError(f"{p}: cannot read as CSV: {str(exc).splitlines()[0]}") from None
    return df


def figures_table(values: Mapping[str, float | int | str]) -> pl.DataFrame:
    """A figures table from model outputs {id: value}: numbers are exact, text is parsed."""
    return pl.DataFrame(
        {"id": list(values), "value": [str(v) for v in values.values()]},
        schema={"id": pl.String, "value": pl.String},
    ).with_columns(
        exact=pl.Series([not isinstance(v, str) for v in values.values()], dtype=pl.Boolean)
    )


def _figure_env(
    figures: pl.DataFrame, needed: set[str], source: str
) -> tuple[dict[str, Printed], dict[str, str], set[str]]:
    missing_cols = [c for c in ("id", "value") if c not in figures.columns]
    if missing_cols:
        raise AuditError(
            f"{source}: no column {missing_cols[0]!r} (columns: {', '.join(figures.columns)})"
        )
    ids = [None if v is None else str(v) for v in figures["id"].to_list()]
    values = figures["value"].to_list()
    numeric = figures.schema["value"].is_numeric()
    units = figures["unit"].to_list() if "unit" in figures.columns else [None] * len(ids)
    quotes = figures["quote"].to_list() if "quote" in figures.columns else [None] * len(ids)
    exact = figures["exact"].to_list() if "exact" in figures.columns else [numeric] * len(ids)
    env: dict[str, Printed] = {}
    quote_of: dict[str, str] = {}
    present: set[str] = set()
    for row, (fid, val, unit, quote, ex) in enumerate(
        zip(ids, values, units, quotes, exact, strict=True), start=2
    ):
        if fid is None or fid == "":
            continue
        if fid in present:
            if fid in needed:
                raise AuditError(f"{source} row {row}, column id: duplicate id {fid!r}")
            continue
        present.add(fid)
        if fid not in needed:
            continue
        where = f"{source} row {row} (id {fid}), column value"
        if val is None or str(val).strip() == "":
            raise AuditError(f"{where}: empty, but a rule refers to {fid}")
        try:
            p = Printed.exact(float(val)) if ex else parse_printed(val, unit)
        except ValueError as exc:
            raise AuditError(f"{where}: {exc} (a rule refers to {fid})") from None
        env[fid] = p
        quote_of[fid] = str(quote) if quote else str(val)
    return env, quote_of, present


def audit(
    figures: pl.DataFrame,
    rules: Rules | str | Path | None = None,
    *,
    source: str = "figures",
    missing: str = "error",
) -> pl.DataFrame:
    """Run every check of ``rules`` on ``figures`` (columns id, value; optional unit, quote).

    Returns one row per check, conflicts first: check id, kind, figure ids and quotes, stated
    and implied values (point and admissible interval), relation, verdict and a one-line
    explanation in English and Chinese. ``missing="skip"`` drops checks that refer to ids the
    table lacks (useful on a partial table of model outputs); by default that is an error.
    """
    r = rules if isinstance(rules, Rules) else load_rules(rules)
    if missing not in ("error", "skip"):
        raise AuditError(f"missing must be 'error' or 'skip', not {missing!r}")
    needed = {n for c in r.checks for n in c.names() if n not in r.anchors}
    env, quote_of, present = _figure_env(figures, needed, source)
    for a in r.anchors.values():
        if a.name in present:
            raise AuditError(f"{r.source}: anchors.{a.name} has the same name as a figure id")
        env[a.name] = a.value
        quote_of[a.name] = f"{a.value.text} ({a.source})"
    rows: list[dict[str, Any]] = []
    for c in r.checks:
        absent = [n for n in c.names() if n not in env]
        if absent:
            if missing == "skip":
                continue
            raise AuditError(
                f"{c.key}: unknown figure id {absent[0]!r} (not in {source} nor in [anchors])"
            )
        rows.append(_run(c, env, quote_of))
    df = pl.DataFrame(rows, schema=_SCHEMA, orient="row")
    return df.sort(
        pl.col("verdict").replace_strict(VERDICT_ORDER, return_dtype=pl.Int8), maintain_order=True
    )


_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "check": pl.String,
    "kind": pl.String,
    "figures": pl.List(pl.String),
    "quotes": pl.String,
    "relation": pl.String,
    "stated": pl.Float64,
    "stated_lo": pl.Float64,
    "stated_hi": pl.Float64,
    "implied": pl.Float64,
    "implied_lo": pl.Float64,
    "implied_hi": pl.Float64,
    "stated_text": pl.String,
    "implied_text": pl.String,
    "admissible": pl.String,
    "verdict": pl.String,
    "explanation_en": pl.String,
    "explanation_zh": pl.String,
}


def _fn(text: str) -> tuple[Callable[[Mapping[str, float]], float], list[str]]:
    tree = _expr_tree(text)
    return (lambda env: _eval(tree, env)), _expr_names(text)


def _implied_and_stated(
    c: Check,
) -> tuple[Callable[[Mapping[str, float]], float], Callable[[Mapping[str, float]], float], str]:
    """The implied value's function, the stated value's function and the implied formula."""
    f = {k: _fn(v)[0] for k, v in c.exprs.items()}
    x = c.exprs
    n = c.years
    if c.kind == "multiple_vs_cagr":
        label = f"({x['multiple']})^(1/{n:g}) − 1"
        return (lambda e: f["multiple"](e) ** (1 / n) - 1), f["cagr"], label
    if c.kind == "growth":
        label = (
            f"{x['end']}/{x['start']} − 1" if n == 1 else f"({x['end']}/{x['start']})^(1/{n:g}) − 1"
        )
        return (lambda e: (f["end"](e) / f["start"](e)) ** (1 / n) - 1), f["growth"], label
    if c.kind == "share_of":
        if c.solve == "whole":
            label = f"{x['part']}/{x['share']}"
            return (lambda e: f["part"](e) / f["share"](e)), f["whole"], label
        if c.solve == "part":
            label = f"{x['share']} × {x['whole']}"
            return (lambda e: f["share"](e) * f["whole"](e)), f["part"], label
        label = f"{x['part']}/{x['whole']}"
        return (lambda e: f["part"](e) / f["whole"](e)), f["share"], label
    if c.kind == "sum_to":
        keys = [k for k in c.exprs if k.startswith("part")]
        parts = [f[k] for k in keys]
        label = " + ".join(x[k] for k in keys)
        return (lambda e: sum(p(e) for p in parts)), f["total"], label
    if c.kind == "part_le_total":
        return f["part"], f["total"], x["part"]

    def residual(e: Mapping[str, float]) -> float:
        t1, p1 = f["total"](e), f["part"](e)
        t0 = t1 / (1 + f["total_growth"](e))
        p0 = p1 / (1 + f["part_growth"](e))
        return (t1 - p1) / (t0 - p0) - 1

    label = f"growth of {x['total']} − {x['part']}"
    return residual, f["bound"], label


def _run(c: Check, env: Mapping[str, Printed], quote_of: Mapping[str, str]) -> dict[str, Any]:
    implied_fn, stated_fn, label = _implied_and_stated(c)
    stated_keys = {
        "multiple_vs_cagr": ["cagr"],
        "growth": ["growth"],
        "share_of": [c.solve],
        "sum_to": ["total"],
        "part_le_total": ["total"],
        "chain": ["bound"],
    }[c.kind]
    s_names = [n for k in stated_keys for n in _expr_names(c.exprs[k])]
    i_names = [n for k, e in c.exprs.items() if k not in stated_keys for n in _expr_names(e)]
    i_names = list(dict.fromkeys(i_names))
    s_names = list(dict.fromkeys(s_names))
    try:
        imp = _evaluate(implied_fn, i_names, env)
        st = _evaluate(stated_fn, s_names, env)
    except (ZeroDivisionError, OverflowError, ValueError, TypeError) as exc:
        raise AuditError(f"{c.key}: cannot evaluate: {exc}") from None
    if isinstance(imp.lo, complex) or isinstance(st.lo, complex):
        raise AuditError(f"{c.key}: cannot evaluate: a negative number raised to a fraction")
    rel = c.relation
    if rel != "≈" and c.kind not in ("part_le_total", "sum_to"):
        # A stated bound ("超26%", "20%以上") is a threshold, not a rounded measurement.
        st = _Range(st.point, st.point, st.point)
    point_ok, interval_ok = _judge(rel, imp, st)
    if c.kind == "sum_to":
        # Printed parts routinely sum to 99.9% or 100.1%: a sum is judged on the rounding alone.
        point_ok = interval_ok
    if point_ok and interval_ok:
        verdict = "consistent"
    elif interval_ok or c.severity == "tension":
        verdict = "tension"
    else:
        verdict = "conflict"
    disp = _display(c, env)
    imp_t, st_t = _show(imp.point, disp), _show(st.point, disp)
    adm = f"{_show(imp.lo, disp)}–{_show(imp.hi, disp)}"
    st_adm = f" ({_show(st.lo, disp)}–{_show(st.hi, disp)})" if st.lo != st.hi else ""
    st_adm_zh = f"（{_show(st.lo, disp)}–{_show(st.hi, disp)}）" if st.lo != st.hi else ""
    names = c.names()
    en_rel = {"≈": "≈", ">": ">", ">=": "≥", "<": "<", "<=": "≤"}[rel]
    words_en = {
        "consistent": "consistent",
        "tension": "fails at the printed values, holds only within their rounding"
        if interval_ok
        else "outside the plausible bound",
        "conflict": "no values within the printed rounding satisfy it",
    }[verdict]
    words_zh = {
        "consistent": "一致",
        "tension": "按印刷数值不成立，仅在舍入范围内成立" if interval_ok else "超出合理范围",
        "conflict": "印刷舍入范围内无解，矛盾",
    }[verdict]
    en = f"{label} = {imp_t} (admissible {adm}) vs stated {en_rel} {st_t}{st_adm}: {words_en}"
    zh = f"推算值 {imp_t}（舍入容许范围 {adm}），报告值 {en_rel} {st_t}{st_adm_zh}：{words_zh}"
    if c.note_en:
        en += f". {c.note_en}"
    if c.note_zh:
        zh += f"。{c.note_zh}"
    return {
        "check": c.id,
        "kind": c.kind,
        "figures": names,
        "quotes": " | ".join(f"{n}: {quote_of.get(n, '')}" for n in names),
        "relation": rel,
        "stated": st.point,
        "stated_lo": st.lo,
        "stated_hi": st.hi,
        "implied": imp.point,
        "implied_lo": imp.lo,
        "implied_hi": imp.hi,
        "stated_text": st_t,
        "implied_text": imp_t,
        "admissible": adm,
        "verdict": verdict,
        "explanation_en": en,
        "explanation_zh": zh,
    }


def _judge(rel: str, imp: _Range, st: _Range) -> tuple[bool, bool]:
    """(printed values satisfy the relation, some admissible values satisfy it)."""
    eps = 1e-12 * max(1.0, abs(st.point), abs(imp.point))
    if rel == "≈":
        point = st.lo - eps <= imp.point <= st.hi + eps
        interval = imp.lo <= st.hi + eps and st.lo - eps <= imp.hi
    elif rel == ">":
        point, interval = imp.point > st.point + eps, imp.hi > st.lo + eps
    elif rel == ">=":
        point, interval = imp.point >= st.point - eps, imp.hi >= st.lo - eps
    elif rel == "<":
        point, interval = imp.point < st.point - eps, imp.lo < st.hi - eps
    else:
        point, interval = imp.point <= st.point + eps, imp.lo <= st.hi + eps
    return point, interval


# --------------------------------------------------------------------------- display

_DISPLAYS = ("auto", "%", "x", "万亿", "亿", "万", "number")


def _display(c: Check, env: Mapping[str, Printed]) -> str:
    if c.display != "auto":
        return c.display
    if c.kind in ("multiple_vs_cagr", "growth", "chain"):
        return "%"
    if c.kind == "share_of" and c.solve == "share":
        text = " ".join(env[n].text for n in _expr_names(c.exprs["share"]))
        return "%" if ("%" in text or "成" in text or env_is_fraction(c, env)) else "number"
    return "auto-magnitude"


def env_is_fraction(c: Check, env: Mapping[str, Printed]) -> bool:
    """Whether a share's stated value is a fraction (below 1.5) rather than a ratio."""
    return all(abs(env[n].value) < 1.5 for n in _expr_names(c.exprs["share"]))


def _fmt_plain(x: float) -> str:
    return f"{x:.6g}"


def _show(x: float, disp: str) -> str:
    if disp == "%":
        return f"{x * 100:.2f}%" if abs(x) < 0.1 else f"{x * 100:.1f}%"
    if disp == "x":
        return f"{x:.3f}×"
    for mark, factor in _MAGNITUDES:
        if disp == mark or (disp == "auto-magnitude" and abs(x) >= factor):
            return f"{x / factor:.4g}{mark}"
    return f"{x:.0f}" if abs(x) >= 1e4 else f"{x:.4g}"
