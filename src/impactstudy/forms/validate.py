"""Check one submission against its form: what a server must refuse and a simulator never make.

A submission is a mapping from field name to answer (groups do not nest the mapping; a
repeat maps to a list of such mappings, one per instance). Answers are Python values
(int, float, str, datetime.date) or the strings an export holds; select_multiple is a
space-separated string or a list of choice names.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from impactstudy.forms.expr import (
    Expression,
    ExpressionError,
    NodeSet,
    Value,
    as_value,
    to_boolean,
    to_number,
    to_string,
)
from impactstudy.forms.load import calculation_order
from impactstudy.forms.model import Field, Form
from impactstudy.problems import Problem

__all__ = ["FormScope", "fill_calculations", "is_empty", "validate_submission"]

_INT_RE = re.compile(r"^\s*[-+]?\d+\s*$")
_DEC_RE = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")
_TIME_RE = re.compile(r"^\d{2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}:?\d{2}|Z)?$")

Stack = tuple[tuple[str, int, Mapping[str, Any]], ...]


def is_empty(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str):
        return value.strip() == ""
    if isinstance(value, list | tuple):
        return len(value) == 0
    return False


@dataclass
class FormScope:
    """Evaluates expressions inside one submission, from one place in its repeats."""

    form: Form
    root: Mapping[str, Any]
    stack: Stack = ()
    current_value: object = None
    choice: Mapping[str, object] | None = None
    today_date: dt.date | None = None

    def at(self, stack: Stack, current: object = None) -> FormScope:
        return FormScope(self.form, self.root, stack, current, None, self.today_date)

    def lookup(self, name: str) -> Value:
        f = self.form.fields.get(name)
        if f is None:
            return ""
        data: Mapping[str, Any] = self.root
        for depth, rep in enumerate(f.repeats):
            if depth < len(self.stack) and self.stack[depth][0] == rep:
                data = self.stack[depth][2]
                continue
            return NodeSet(self._gather(data, f.repeats[depth:], name, f.type == "repeat"))
        value = data.get(name)
        if f.type == "repeat":
            return NodeSet(value if isinstance(value, list) else [])
        return as_value(value)

    def _gather(
        self, data: Mapping[str, Any], chain: tuple[str, ...], name: str, is_repeat: bool
    ) -> list[object]:
        out: list[object] = []
        instances = data.get(chain[0])
        if not isinstance(instances, list):
            return out
        for inst in instances:
            if not isinstance(inst, Mapping):
                continue
            if len(chain) > 1:
                out.extend(self._gather(inst, chain[1:], name, is_repeat))
            elif is_repeat:
                inner = inst.get(name)
                if isinstance(inner, list):
                    out.extend(inner)
            else:
                out.append(as_value(inst.get(name)))
        return out

    def current(self) -> Value:
        return as_value(self.current_value)

    def item(self, column: str) -> Value:
        if self.choice is None:
            return ""
        return as_value(self.choice.get(column))

    def today(self) -> dt.date:
        return self.today_date or dt.date.today()

    def now(self) -> dt.datetime:
        if self.today_date is None:
            return dt.datetime.now(dt.UTC)
        return dt.datetime.combine(self.today_date, dt.time(0, 0), tzinfo=dt.UTC)


def _instances(
    data: Mapping[str, Any], chain: tuple[str, ...], stack: Stack = ()
) -> Iterator[tuple[Stack, Mapping[str, Any]]]:
    """Every (stack, mapping) at the depth of `chain` (a field's enclosing repeats)."""
    if not chain:
        yield stack, data
        return
    items = data.get(chain[0])
    if not isinstance(items, list):
        return
    for i, inst in enumerate(items):
        if isinstance(inst, dict):
            yield from _instances(inst, chain[1:], (*stack, (chain[0], i, inst)))


def _relevant(form: Form, f: Field, scope: FormScope) -> bool:
    for name in f.ancestors:
        anc = form.fields[name]
        if anc.relevant is not None and not anc.relevant.boolean(scope):
            return False
    return f.relevant is None or f.relevant.boolean(scope)


def _same(a: object, b: object) -> bool:
    x, y = to_number(as_value(a)), to_number(as_value(b))
    if not (math.isnan(x) or math.isnan(y)):
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
    return to_string(as_value(a)) == to_string(as_value(b))


def _copy(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
            out[k] = [_copy(x) for x in v]
        else:
            out[k] = v
    return out


def fill_calculations(
    form: Form, answers: Mapping[str, Any], *, today: dt.date | None = None
) -> tuple[dict[str, Any], list[Problem]]:
    """A copy of the answers with every calculate field computed, and the problems where a
    submitted calculated value disagrees with the form's calculation."""
    filled = _copy(answers)
    problems: list[Problem] = []
    base = FormScope(form, filled, today_date=today)
    for name in calculation_order(form.fields):
        f = form.fields[name]
        ex = f.calculation
        assert ex is not None
        for stack, data in _instances(filled, f.repeats):
            scope = base.at(stack)
            try:
                value: object = ex.evaluate(scope) if _relevant(form, f, scope) else ""
            except ExpressionError as exc:
                problems.append(_p(f, stack, "expression", f"calculation failed: {exc}"))
                value = ""
            if isinstance(value, NodeSet):
                value = to_string(value)
            if isinstance(value, bool):
                value = "true" if value else "false"
            given = data.get(name)
            if not is_empty(given) and not _same(given, value):
                problems.append(
                    _p(
                        f,
                        stack,
                        "calculation",
                        f"submitted value {given!r} differs from the calculation "
                        f"{ex.source!r} = {to_string(as_value(value))!r}",
                    )
                )
            assert isinstance(data, dict)
            data[name] = value
    return filled, problems


def _p(f: Field, stack: Stack, code: str, message: str) -> Problem:
    return Problem(message, field=f.name, instance=tuple(i for _, i, _ in stack), code=code)


def _type_problem(f: Field, value: object) -> str | None:
    t = f.type
    if t == "integer":
        if isinstance(value, bool):
            return "an integer is expected"
        if isinstance(value, int):
            return None
        if isinstance(value, float) and value.is_integer():
            return None
        if isinstance(value, str) and _INT_RE.match(value):
            return None
        return f"{value!r} is not an integer"
    if t == "decimal":
        if isinstance(value, bool):
            return "a number is expected"
        if isinstance(value, int | float) and math.isfinite(value):
            return None
        if isinstance(value, str) and _DEC_RE.match(value):
            return None
        return f"{value!r} is not a number"
    if t in ("date", "today"):
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return None
        if isinstance(value, str):
            try:
                dt.date.fromisoformat(value.strip()[:10])
                if len(value.strip()) == 10:
                    return None
            except ValueError:
                pass
        return f"{value!r} is not a date (YYYY-MM-DD)"
    if t in ("datetime", "start", "end"):
        if isinstance(value, dt.datetime):
            return None
        if isinstance(value, str):
            try:
                dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
                return None
            except ValueError:
                pass
        return f"{value!r} is not a date and time (ISO 8601)"
    if t == "time":
        if isinstance(value, dt.time) or (isinstance(value, str) and _TIME_RE.match(value)):
            return None
        return f"{value!r} is not a time (HH:MM:SS)"
    if t in ("text", "deviceid", "instanceID", "select_one"):
        return None if isinstance(value, str | int | float) else f"{value!r} is not text"
    if t == "select_multiple":
        if isinstance(value, str) or (
            isinstance(value, list | tuple) and all(isinstance(x, str) for x in value)
        ):
            return None
        return f"{value!r} is not a list of choices"
    return None


def _choices_allowed(form: Form, f: Field, scope: FormScope) -> set[str] | None:
    if f.choice_list is None:
        return None
    cl = form.choice_lists.get(f.choice_list)
    if cl is None:
        return set()
    names = set(cl.names)
    if f.choice_filter is not None:
        filtered: set[str] = set()
        for c in cl.choices:
            item: dict[str, object] = {**c.columns, "name": c.name}
            s = FormScope(form, scope.root, scope.stack, None, item, scope.today_date)
            if f.choice_filter.boolean(s):
                filtered.add(c.name)
        names = filtered
    return names


def _check_value(
    form: Form, f: Field, value: object, scope: FormScope, stack: Stack, language: str
) -> list[Problem]:
    msg = _type_problem(f, value)
    if msg is not None:
        return [_p(f, stack, "type", msg)]
    out: list[Problem] = []
    if f.type in ("select_one", "select_multiple"):
        allowed = _choices_allowed(form, f, scope) or set()
        if form.accepts_other(f.name):
            allowed = allowed | {"other"}
        if f.type == "select_one":
            picked = [to_string(as_value(value)).strip()]
        elif isinstance(value, str):
            picked = value.split()
        elif isinstance(value, list | tuple):
            picked = [str(x) for x in value]
        else:
            picked = [to_string(value)]
        for code in picked:
            if code not in allowed:
                out.append(
                    _p(
                        f,
                        stack,
                        "choice",
                        f"{code!r} is not a choice of list {f.choice_list!r}"
                        + (" (after the choice filter)" if f.choice_filter else ""),
                    )
                )
        if len(set(picked)) != len(picked):
            out.append(_p(f, stack, "choice", "a choice is selected twice"))
    if f.constraint is not None and not out:
        current = " ".join(value) if isinstance(value, list | tuple) else value
        try:
            ok = f.constraint.boolean(scope.at(stack, current))
        except ExpressionError as exc:
            return [_p(f, stack, "expression", f"constraint failed: {exc}")]
        if not ok:
            text = f.constraint_message.get(language) or next(
                iter(f.constraint_message.values()), ""
            )
            detail = f": {text}" if text else ""
            out.append(
                _p(
                    f,
                    stack,
                    "constraint",
                    f"answer {value!r} breaks the constraint {f.constraint.source!r}" + detail,
                )
            )
    return out


def _eval_bool(ex: Expression, scope: FormScope) -> bool:
    return to_boolean(ex.evaluate(scope))


def validate_submission(
    form: Form,
    answers: Mapping[str, Any],
    *,
    today: dt.date | None = None,
    language: str | None = None,
) -> list[Problem]:
    """Every problem with one submission: required, type, constraint, relevance, choices,
    repeat counts, calculations, unknown fields. An empty list means it is valid."""
    if not isinstance(answers, Mapping):
        return [
            Problem(
                f"a submission is a mapping of field names to answers, "
                f"not {type(answers).__name__}",
                code="type",
            )
        ]
    lang = language or form.default_language
    filled, problems = fill_calculations(form, answers, today=today)
    base = FormScope(form, filled, today_date=today)

    def level(children: list[Field], data: Mapping[str, Any], stack: Stack, relevant: bool) -> None:
        allowed: set[str] = set()
        for f in children:
            walk(f, data, stack, relevant, allowed)
        for key in data:
            if key not in allowed:
                problems.append(
                    Problem(
                        f"{key!r} is not a field of form {form.form_id!r}"
                        + (" at this level" if key in form.fields else ""),
                        field=str(key),
                        instance=tuple(i for _, i, _ in stack),
                        code="unknown",
                    )
                )

    def walk(
        f: Field, data: Mapping[str, Any], stack: Stack, parent_relevant: bool, allowed: set[str]
    ) -> None:
        scope = base.at(stack)
        try:
            rel = parent_relevant and (f.relevant is None or _eval_bool(f.relevant, scope))
        except ExpressionError as exc:
            problems.append(_p(f, stack, "expression", f"relevant failed: {exc}"))
            rel = True
        if f.type == "group":
            for child in f.children:
                walk(child, data, stack, rel, allowed)
            return
        allowed.add(f.name)
        value = data.get(f.name)
        if f.type == "repeat":
            walk_repeat(f, value, stack, rel)
            return
        if f.type == "calculate" or f.type == "instanceID":
            return
        empty = is_empty(value)
        if f.type == "note":
            if not empty:
                problems.append(_p(f, stack, "note", "a note takes no answer"))
            return
        if not rel:
            if not empty:
                problems.append(
                    _p(
                        f,
                        stack,
                        "relevance",
                        f"answered although not relevant ({f.relevant.source!r} "
                        "or an enclosing group's relevance is false)"
                        if f.relevant
                        else "answered although an enclosing group is not relevant",
                    )
                )
            return
        if empty:
            required = f.required
            if f.required_if is not None:
                try:
                    required = _eval_bool(f.required_if, scope)
                except ExpressionError as exc:
                    problems.append(_p(f, stack, "expression", f"required failed: {exc}"))
            if required:
                problems.append(_p(f, stack, "required", "a required question is unanswered"))
            return
        problems.extend(_check_value(form, f, value, scope, stack, lang))

    def walk_repeat(f: Field, value: object, stack: Stack, rel: bool) -> None:
        if value is None:
            instances: list[Any] = []
        elif isinstance(value, list) and all(isinstance(x, Mapping) for x in value):
            instances = value
        else:
            problems.append(_p(f, stack, "type", "a repeat is a list of instances (mappings)"))
            return
        if not rel:
            if instances:
                problems.append(
                    _p(f, stack, "relevance", f"{len(instances)} instance(s) although not relevant")
                )
            return
        if f.repeat_count is not None:
            try:
                n = to_number(f.repeat_count.evaluate(base.at(stack)))
            except ExpressionError as exc:
                problems.append(_p(f, stack, "expression", f"repeat_count failed: {exc}"))
                n = math.nan
            expected = 0 if math.isnan(n) else max(0, int(n))
            if len(instances) != expected:
                problems.append(
                    _p(
                        f,
                        stack,
                        "repeat_count",
                        f"{len(instances)} instance(s), but repeat_count "
                        f"{f.repeat_count.source!r} = {expected}",
                    )
                )
        for i, inst in enumerate(instances):
            level(f.children, inst, (*stack, (f.name, i, inst)), True)

    level(form.children, filled, (), True)
    return problems
