"""Load a study folder and validate all of it, reporting every problem with its place."""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from impactstudy.forms import Expression, ExpressionError, Form, FormError, load_form, parse
from impactstudy.forms.expr import Node
from impactstudy.forms.load import literal_choice_problems
from impactstudy.problems import Problem, rel
from impactstudy.study import schema
from impactstudy.study.model import (
    Frames,
    Group,
    HistoryPoint,
    Indicator,
    Margin,
    Population,
    Province,
    Statistic,
    Study,
)
from impactstudy.study.simspec import SimulationFile
from impactstudy.study.tables import Column, Table, duplicates, read_table, read_text
from impactstudy.study.units import DIMENSIONLESS, Unit, UnitError, formula_unit, parse_unit

__all__ = ["StudyError", "load"]

M = TypeVar("M", bound=BaseModel)
_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")
_CODE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class StudyError(Exception):
    """A study that cannot be used; `problems` lists every problem, each with its place."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        n = len(problems)
        lines = [f"{n} problem{'s' if n != 1 else ''} in the study:"]
        lines += [f"  {p}" for p in problems]
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[type[StudyError], tuple[list[Problem]]]:
        return (StudyError, (self.problems,))  # from a helper process, problems intact


class _Loader:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[Problem] = []

    def shown(self, path: Path) -> str:
        return rel(path, self.root)

    def add(self, message: str, **place: Any) -> None:
        self.problems.append(Problem(message, **place))

    # -- files ---------------------------------------------------------------------------

    def resolve(self, relpath: str, key: str) -> Path | None:
        p = Path(relpath)
        if p.is_absolute() or ".." in p.parts:
            self.add("must be a path inside the study folder", file="study.toml", key=key)
            return None
        return self.root / p

    def toml(self, name: str, model: type[M], *, list_key: str | None = None) -> M | None:
        path = self.root / name
        text = read_text(path, name, self.problems)
        if text is None:
            return None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            msg = str(exc)
            m = _TOML_AT.search(msg)
            row = int(m.group(1)) if m else None
            col = m.group(2) if m else None
            self.add(
                f"TOML syntax error: {_TOML_AT.sub('', msg).strip()}"
                + (f" (column {col})" if col else ""),
                file=name,
                row=row,
            )
            return None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            for err in exc.errors():
                self.add(_pydantic_message(err), file=name, key=_loc(err["loc"], data, list_key))
            return None

    # -- expressions ---------------------------------------------------------------------

    def expression(
        self, source: str | None, *, file: str, key: str, forms: Iterable[Form], bare: str = "error"
    ) -> Expression | None:
        if source is None:
            return None
        try:
            ex = parse(source, bare_names=bare)  # type: ignore[arg-type]
        except ExpressionError as exc:
            self.add(f"malformed expression {source!r}: {exc}", file=file, key=key)
            return None
        for form in forms:
            for ref in sorted(ex.refs - form.fields.keys()):
                self.add(
                    f"${{{ref}}} is not a field of questionnaire {form.form_id!r}",
                    file=file,
                    key=key,
                )
            for msg in literal_choice_problems(form, ex):
                self.add(msg, file=file, key=key)
        if ex.uses_current:
            self.add(
                f"{source!r} uses '.', which only means something in a questionnaire "
                "constraint; refer to the field as ${name}",
                file=file,
                key=key,
            )
        return ex


def _loc(loc: tuple[int | str, ...], data: Any, list_key: str | None) -> str:
    parts: list[str] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(part, int):
            label = f"[{part + 1}]"
            if i == 1 and list_key and isinstance(node, list) and part < len(node):
                item = node[part]
                if isinstance(item, dict) and "id" in item:
                    label += f" (id {item['id']})"
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(part))
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return "".join(parts)


def _pydantic_message(err: Any) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = str(err.get("msg", "invalid"))
    msg = msg.removeprefix("Value error, ")
    value = err.get("input")
    if (
        kind not in ("model_type", "dict_type")
        and value is not None
        and not isinstance(value, dict | list)
    ):
        msg += f" (got {value!r})"
    return msg


# --- frames -------------------------------------------------------------------------------

GEOGRAPHY = [
    Column("code", "nonempty"),
    Column("region", "nonempty"),
    Column("population", "int"),
    Column("year", "int"),
    Column("source", "nonempty"),
    Column("note", optional=True),
]
POPULATIONS = [
    Column("group", "nonempty"),
    Column("population", "number"),
    Column("unit", "nonempty"),
    Column("year", "int"),
    Column("basis", "nonempty"),
    Column("source", "nonempty"),
    Column("note", optional=True),
]
MARGINS = [
    Column("group", "nonempty"),
    Column("variable", "nonempty"),
    Column("category", "nonempty"),
    Column("share", "number"),
    Column("source", "nonempty"),
    Column("note", optional=True),
]
STATISTICS = [
    Column("key", "nonempty"),
    Column("value", "number"),
    Column("unit", "nonempty"),
    Column("year", "int"),
    Column("source", "nonempty"),
    Column("note", optional=True),
]
HISTORY = [
    Column("series", "nonempty"),
    Column("year", "int"),
    Column("value", "number"),
    Column("unit", "nonempty"),
    Column("definition", "nonempty"),
    Column("source", "nonempty"),
    Column("note", optional=True),
]


def _rows(t: Table) -> Iterable[tuple[int, dict[str, str]]]:
    return zip(t.row_numbers, t.rows, strict=True)


def _load_frames(ld: _Loader, cfg: schema.StudyConfig, groups: dict[str, Group]) -> Frames:
    fr = cfg.frames
    frames = Frames()
    langs = cfg.study.languages
    ok = len(ld.problems)

    path = ld.resolve(fr.geography, "frames.geography")
    geo_cols = [*GEOGRAPHY, *[Column(f"name_{lang}", "nonempty") for lang in langs]]
    t = read_table(path, ld.shown(path), geo_cols, ld.problems) if path else None
    if t and len(ld.problems) == ok:
        duplicates(t, ["code"], ld.problems)
        for n, r in _rows(t):
            if not _CODE.match(r["code"]):
                ld.add(
                    f"code {r['code']!r} must be ASCII letters, digits and _",
                    file=t.file,
                    row=n,
                    column="code",
                )
            frames.geography.append(
                Province(
                    r["code"],
                    {lang: r[f"name_{lang}"] for lang in langs},
                    r["region"],
                    int(float(r["population"])),
                    int(float(r["year"])),
                    r["source"],
                )
            )

    path = ld.resolve(fr.populations, "frames.populations")
    ok = len(ld.problems)
    t = read_table(path, ld.shown(path), POPULATIONS, ld.problems) if path else None
    if t and len(ld.problems) == ok:
        duplicates(t, ["group"], ld.problems)
        for n, r in _rows(t):
            if r["group"] not in cfg.groups:
                ld.add(
                    f"group {r['group']!r} is not a group of study.toml ({', '.join(cfg.groups)})",
                    file=t.file,
                    row=n,
                    column="group",
                )
            if r["basis"] not in ("published", "assumption", "estimate"):
                ld.add(
                    "basis must be published, assumption or estimate",
                    file=t.file,
                    row=n,
                    column="basis",
                )
            if float(r["population"]) <= 0:
                ld.add("population must be positive", file=t.file, row=n, column="population")
            frames.populations[r["group"]] = Population(
                r["group"],
                float(r["population"]),
                r["unit"],
                int(float(r["year"])),
                r["basis"],
                r["source"],
                r.get("note", ""),
            )
        for g in cfg.groups:
            if g not in frames.populations:
                ld.add(f"no population for group {g!r}", file=t.file)

    if fr.margins:
        path = ld.resolve(fr.margins, "frames.margins")
        ok = len(ld.problems)
        t = read_table(path, ld.shown(path), MARGINS, ld.problems) if path else None
        if t and len(ld.problems) == ok:
            _margins(ld, t, groups, frames, set(cfg.groups))

    if fr.statistics:
        path = ld.resolve(fr.statistics, "frames.statistics")
        ok = len(ld.problems)
        t = read_table(path, ld.shown(path), STATISTICS, ld.problems) if path else None
        if t and len(ld.problems) == ok:
            duplicates(t, ["key"], ld.problems)
            for n, r in _rows(t):
                if not re.match(r"^[a-z][a-z0-9_]*$", r["key"]):
                    ld.add(
                        f"key {r['key']!r} must be lower snake_case",
                        file=t.file,
                        row=n,
                        column="key",
                    )
                frames.statistics[r["key"]] = Statistic(
                    r["key"], float(r["value"]), r["unit"], int(float(r["year"])), r["source"]
                )
    return frames


def _margins(
    ld: _Loader, t: Table, groups: dict[str, Group], frames: Frames, declared: set[str]
) -> None:
    duplicates(t, ["group", "variable", "category"], ld.problems)
    collected: dict[tuple[str, str], list[tuple[int, str, float, str]]] = {}
    for n, r in _rows(t):
        share = float(r["share"])
        if not 0 <= share <= 1:
            ld.add(f"share {share} is not between 0 and 1", file=t.file, row=n, column="share")
        collected.setdefault((r["group"], r["variable"]), []).append(
            (n, r["category"], share, r["source"])
        )
    for (g, var), items in collected.items():
        first = items[0][0]
        group = groups.get(g)
        if group is None and g in declared:
            continue  # its questionnaire could not be loaded: that problem is reported
        if group is None:
            ld.add(
                f"group {g!r} is not a group of the study", file=t.file, row=first, column="group"
            )
            continue
        f = group.form.fields.get(var)
        if f is None:
            ld.add(
                f"variable {var!r} is not a field of questionnaire {g!r}",
                file=t.file,
                row=first,
                column="variable",
            )
            continue
        categories = _categories(group.form, var)
        if categories is None:
            ld.add(
                f"variable {var!r} is a {f.type}; margins need a select_one, or a calculate "
                "whose categories are string literals",
                file=t.file,
                row=first,
                column="variable",
            )
        else:
            for n, cat, _, _ in items:
                if cat not in categories:
                    what = (
                        f"a choice of {var!r}"
                        if f.type == "select_one"
                        else f"a value the calculation of {var!r} yields"
                    )
                    ld.add(
                        f"category {cat!r} is not {what} in questionnaire {g!r} "
                        f"({', '.join(categories)})",
                        file=t.file,
                        row=n,
                        column="category",
                    )
            missing = [c for c in categories if c not in {i[1] for i in items}]
            if missing:
                ld.add(
                    f"margin {g}/{var} has no share for {', '.join(missing)} (give 0 "
                    "if the category is empty in the population)",
                    file=t.file,
                    row=first,
                    column="category",
                )
        total = math.fsum(i[2] for i in items)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            ld.add(
                f"shares of {g}/{var} sum to {total:.9g}, not 1",
                file=t.file,
                row=first,
                column="share",
            )
        frames.margins.setdefault(g, {})[var] = Margin(
            g, var, {i[1]: i[2] for i in items}, tuple(sorted({i[3] for i in items}))
        )


def _categories(form: Form, name: str) -> tuple[str, ...] | None:
    """The values a weighting variable takes: a select_one's choices, or the string
    literals a calculate can yield (`if(${age} < 30, 'young', 'older')`)."""
    f = form.fields[name]
    if f.type == "select_one" and f.choice_list in form.choice_lists:
        return form.choice_lists[f.choice_list].names
    if f.type == "calculate" and f.calculation is not None:
        found: list[str] = []

        def walk(n: Node, in_condition: bool) -> None:
            if n.kind == "str" and not in_condition and str(n.value) not in found:
                found.append(str(n.value))
            if n.kind == "call" and n.value == "if":
                walk(n.args[0], True)
                walk(n.args[1], in_condition)
                walk(n.args[2], in_condition)
                return
            for arg in n.args:
                walk(arg, in_condition or n.kind == "bin")

        walk(f.calculation.tree, False)
        return tuple(found) or None
    return None


# --- groups ---------------------------------------------------------------------------------


def _load_groups(ld: _Loader, cfg: schema.StudyConfig) -> dict[str, Group]:
    groups: dict[str, Group] = {}
    for gid, spec in cfg.groups.items():
        key = f"groups.{gid}"
        for lang in cfg.study.languages:
            if lang not in spec.label:
                ld.add(
                    f"label is missing in language {lang!r}", file="study.toml", key=f"{key}.label"
                )
        for mode in spec.sample.modes:
            if mode not in cfg.fieldwork.modes:
                ld.add(
                    f"mode {mode!r} is not a fieldwork mode ({cfg.fieldwork.modes})",
                    file="study.toml",
                    key=f"{key}.sample.modes",
                )
        path = ld.resolve(spec.questionnaire, f"{key}.questionnaire")
        if path is None:
            continue
        try:
            form = load_form(path, languages=cfg.study.languages, shown_as=ld.shown(path))
        except FormError as exc:
            ld.problems.extend(exc.problems)
            continue
        if form.form_id != gid:
            ld.add(
                f"settings form_id is {form.form_id!r}; it must be the group id {gid!r}",
                file=ld.shown(path),
                sheet="settings",
                column="form_id",
            )
        if cfg.sample.stratify_by not in form.fields:
            ld.add(
                f"questionnaire has no field {cfg.sample.stratify_by!r} to stratify by "
                "(sample.stratify_by)",
                file=ld.shown(path),
            )
        groups[gid] = Group(gid, spec, form)
    for gid, group in groups.items():
        _check_group_quality(ld, gid, group)
    return groups


def _check_group_quality(ld: _Loader, gid: str, group: Group) -> None:
    spec, form = group.spec, group.form
    for i, chk in enumerate(spec.quality.attention_checks):
        key = f"groups.{gid}.quality.attention_checks[{i + 1}]"
        if chk.field not in form.fields:
            ld.add(
                f"{chk.field!r} is not a field of questionnaire {gid!r}", file="study.toml", key=key
            )
        ld.expression(chk.pass_, file="study.toml", key=f"{key}.pass", forms=[form])
    for i, bat in enumerate(spec.quality.batteries):
        key = f"groups.{gid}.quality.batteries[{i + 1}]"
        for item in bat.items:
            f = form.fields.get(item)
            if f is None:
                ld.add(
                    f"{item!r} is not a field of questionnaire {gid!r}", file="study.toml", key=key
                )
            elif f.type != "select_one":
                ld.add(
                    f"battery item {item!r} is a {f.type}, not a select_one",
                    file="study.toml",
                    key=key,
                )
        lists = {form.fields[i].choice_list for i in bat.items if i in form.fields}
        if len(lists) > 1:
            ld.add(
                f"battery items use different scales: {sorted(map(str, lists))}",
                file="study.toml",
                key=key,
            )
    for var in spec.weighting.margins:
        if var not in form.fields:
            ld.add(
                f"weighting margin {var!r} is not a field of questionnaire {gid!r}",
                file="study.toml",
                key=f"groups.{gid}.weighting.margins",
            )


# --- indicators -----------------------------------------------------------------------------


def _load_indicators(
    ld: _Loader, cfg: schema.StudyConfig, groups: dict[str, Group]
) -> dict[str, Indicator]:
    out: dict[str, Indicator] = {}
    spec = ld.toml("indicators.toml", schema.IndicatorsFile, list_key="indicator")
    if spec is None:
        return out
    for i, ind in enumerate(spec.indicator):
        key = f"indicator[{i + 1}] (id {ind.id})"
        if ind.id in out:
            ld.add(f"indicator id {ind.id!r} is used twice", file="indicators.toml", key=key)
            continue
        for lang in cfg.study.languages:
            if lang not in ind.label:
                ld.add(
                    f"label is missing in language {lang!r}",
                    file="indicators.toml",
                    key=f"{key}.label",
                )
        forms: list[Form] = []
        for g in ind.groups:
            if g not in cfg.groups:
                ld.add(
                    f"group {g!r} is not a group of study.toml",
                    file="indicators.toml",
                    key=f"{key}.group",
                )
            elif g in groups:
                forms.append(groups[g].form)
        ex = ld.expression(
            ind.expression, file="indicators.toml", key=f"{key}.expression", forms=forms
        )
        dom = ld.expression(ind.domain, file="indicators.toml", key=f"{key}.domain", forms=forms)
        den = ld.expression(
            ind.denominator, file="indicators.toml", key=f"{key}.denominator", forms=forms
        )
        if ex is not None:
            out[ind.id] = Indicator(ind, ex, dom, den)
    return out


# --- model and history ----------------------------------------------------------------------


def _load_history(ld: _Loader) -> list[HistoryPoint]:
    path = ld.root / "history.csv"
    ok = len(ld.problems)
    t = read_table(path, "history.csv", HISTORY, ld.problems)
    out: list[HistoryPoint] = []
    if t is None or len(ld.problems) > ok:
        return out
    duplicates(t, ["series", "year"], ld.problems)
    for n, r in _rows(t):
        if not re.match(r"^[a-z][a-z0-9_]*$", r["series"]):
            ld.add(
                f"series {r['series']!r} must be lower snake_case",
                file="history.csv",
                row=n,
                column="series",
            )
        out.append(
            HistoryPoint(
                r["series"],
                int(float(r["year"])),
                float(r["value"]),
                r["unit"],
                r["definition"],
                r["source"],
            )
        )
    return out


def _load_model(
    ld: _Loader,
    frames: Frames,
    indicators: dict[str, Indicator],
    history: list[HistoryPoint],
    cfg: schema.StudyConfig,
) -> schema.ModelFile | None:
    model = ld.toml("model.toml", schema.ModelFile)
    if model is None:
        return None
    hist = {f"{h.series}.{h.year}" for h in history}
    frame_keys = frames.keys()
    deps: dict[str, set[str]] = {}
    for name, param in model.param.items():
        _languages(ld, param.label, cfg.study.languages, "model.toml", f"param.{name}.label")
        for preset in param.presets:
            if preset not in model.model.presets:
                ld.add(
                    f"preset {preset!r} is not declared in model.presets",
                    file="model.toml",
                    key=f"param.{name}.presets",
                )
    if model.model.default_preset not in model.model.presets:
        ld.add(
            f"default_preset {model.model.default_preset!r} is not one of presets",
            file="model.toml",
            key="model.default_preset",
        )
    for name, q in model.quantity.items():
        key = f"quantity.{name}.formula"
        for lang in cfg.study.languages:
            if lang not in q.label:
                ld.add(
                    f"label is missing in language {lang!r}",
                    file="model.toml",
                    key=f"quantity.{name}.label",
                )
        try:
            ex = parse(q.formula, bare_names="model")
        except ExpressionError as exc:
            ld.add(f"malformed formula {q.formula!r}: {exc}", file="model.toml", key=key)
            continue
        if ex.uses_current:
            ld.add(
                "'.' means nothing in a formula: name the input (est.<indicator>, ...)",
                file="model.toml",
                key=key,
            )
        if ex.refs:
            ld.add(
                "formulas name inputs as est.<indicator>, frame.<key>, param.<name>, "
                f"hist.<series>.<year> or a quantity, not ${{...}}: {sorted(ex.refs)}",
                file="model.toml",
                key=key,
            )
        deps[name] = set()
        for bare in sorted(ex.bare_names):
            space, _, rest = bare.partition(".")
            if space == "est" and rest:
                if rest not in indicators:
                    ld.add(
                        f"{bare}: no indicator {rest!r} in indicators.toml",
                        file="model.toml",
                        key=key,
                    )
            elif space == "frame" and rest:
                if rest not in frame_keys:
                    ld.add(
                        f"{bare}: no frame statistic {rest!r} (frames: "
                        "statistics keys or population.<group>)",
                        file="model.toml",
                        key=key,
                    )
            elif space == "param" and rest:
                if rest not in model.param:
                    ld.add(
                        f"{bare}: no parameter {rest!r} in model.toml", file="model.toml", key=key
                    )
            elif space == "hist" and rest:
                if rest not in hist:
                    ld.add(
                        f"{bare}: no history point {rest!r} in history.csv",
                        file="model.toml",
                        key=key,
                    )
            elif space == "io" and rest:
                jobs = model.io.jobs if model.io is not None else {}
                base = rest.removesuffix("_induced")
                if base not in jobs or (rest != base and not jobs[base].induced):
                    ld.add(
                        f"{bare}: no io.jobs.{base}"
                        + (" with induced = true" if rest != base and base in jobs else "")
                        + " in model.toml",
                        file="model.toml",
                        key=key,
                    )
                elif jobs[base].input in model.quantity:
                    deps[name].add(jobs[base].input)
            elif bare in model.quantity:
                deps[name].add(bare)
            else:
                ld.add(
                    f"unknown name {bare!r}: use est.<indicator>, frame.<key>, "
                    "param.<name>, hist.<series>.<year> or another quantity",
                    file="model.toml",
                    key=key,
                )
    if model.io is not None:
        for jname, job in model.io.jobs.items():
            jkey = f"io.jobs.{jname}"
            _languages(ld, job.label, cfg.study.languages, "model.toml", f"{jkey}.label")
            if job.input not in model.quantity:
                ld.add(
                    f"input {job.input!r} is not a quantity of model.toml",
                    file="model.toml",
                    key=f"{jkey}.input",
                )
            if abs(sum(job.split.values()) - 1.0) > 1e-9:
                ld.add(
                    f"split shares sum to {sum(job.split.values()):g}, not 1",
                    file="model.toml",
                    key=f"{jkey}.split",
                )
    for name, q in model.quantity.items():
        if isinstance(q.published, str):
            space, _, rest = q.published.partition(".")
            if space != "hist" or rest not in hist:
                ld.add(
                    f"published {q.published!r} is not a history point (hist.<series>.<year> "
                    "of history.csv)",
                    file="model.toml",
                    key=f"quantity.{name}.published",
                )
    cycle = _find_cycle(deps)
    if cycle:
        ld.add(
            f"quantities form a cycle: {' -> '.join(cycle)}",
            file="model.toml",
            key=f"quantity.{cycle[0]}.formula",
        )
    if not ld.problems:
        _check_units(ld, model, frames, indicators, history)
    return model


def _unit_or_none(text: str, want: Unit) -> bool:
    """Whether ``text`` reads as the unit ``want`` (an unreadable unit is reported elsewhere)."""
    try:
        return parse_unit(text).same(want)
    except UnitError:
        return True


def _check_units(
    ld: _Loader,
    model: schema.ModelFile,
    frames: Frames,
    indicators: dict[str, Indicator],
    history: list[HistoryPoint],
) -> None:
    """Every quantity's formula has the unit it declares, and sums join equal units."""
    hist_units = {f"{h.series}.{h.year}": h.unit for h in history}

    def unit_of(name: str) -> Unit:
        space, _, rest = name.partition(".")
        if space == "est":
            spec = indicators[rest].spec
            # a proportion is a fraction in formulas, whatever unit it is shown in
            return DIMENSIONLESS if spec.statistic == "proportion" else parse_unit(spec.unit)
        if space == "frame":
            if rest.startswith("population."):
                return parse_unit(frames.populations[rest.split(".", 1)[1]].unit)
            return parse_unit(frames.statistics[rest].unit)
        if space == "param":
            return parse_unit(model.param[rest].unit)
        if space == "hist":
            return parse_unit(hist_units[rest])
        if space == "io":
            return parse_unit("persons")
        return parse_unit(model.quantity[name].unit)

    if model.io is not None:
        for jname, job in model.io.jobs.items():
            want = "persons" if job.kind == "indirect" else "yuan"
            q = model.quantity.get(job.input)
            if q is not None and not _unit_or_none(q.unit, parse_unit(want)):
                ld.add(
                    f"io.jobs.{jname} ({job.kind}) needs an input in {want}, but quantity "
                    f"{job.input!r} is in {q.unit!r}",
                    file="model.toml",
                    key=f"io.jobs.{jname}.input",
                )
    for name, q in model.quantity.items():
        key = f"quantity.{name}.formula"
        try:
            declared = parse_unit(q.unit)
            got = formula_unit(parse(q.formula, bare_names="model").tree, unit_of)
        except UnitError as exc:
            ld.add(f"quantity {name!r}: {exc}", file="model.toml", key=key)
            continue
        if not got.same(declared):
            ld.add(
                f"quantity {name!r}: the formula gives {got}, but the unit is {q.unit!r} "
                f"({declared})",
                file="model.toml",
                key=f"quantity.{name}.unit",
            )


def _find_cycle(deps: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(n: str, trail: list[str]) -> list[str] | None:
        if state.get(n) == 1:
            return [*trail[trail.index(n) :], n]
        if state.get(n) == 2:
            return None
        state[n] = 1
        for d in sorted(deps.get(n, ())):
            found = visit(d, [*trail, n])
            if found:
                return found
        state[n] = 2
        return None

    for n in sorted(deps):
        found = visit(n, [])
        if found:
            return found
    return None


# --- cross checks ---------------------------------------------------------------------------


def _cross_checks(
    ld: _Loader, cfg: schema.StudyConfig, groups: dict[str, Group], frames: Frames
) -> None:
    total = sum(g.sample.target_valid for g in cfg.groups.values())
    if total != cfg.sample.target_valid:
        ld.add(
            f"group targets sum to {total}, but sample.target_valid is {cfg.sample.target_valid}",
            file="study.toml",
            key="sample.target_valid",
        )
    codes = [p.code for p in frames.geography]
    strat = cfg.sample.stratify_by
    for gid, group in groups.items():
        f = group.form.fields.get(strat)
        if codes and f is not None and f.choice_list in group.form.choice_lists:
            names = group.form.choice_lists[f.choice_list].names
            if set(names) != set(codes):
                diff = sorted(set(names) ^ set(codes))
                ld.add(
                    f"the choices of {strat!r} differ from the geography frame's codes: "
                    f"{', '.join(diff[:8])}",
                    file=ld.shown(group.form.source or ld.root),
                    sheet="choices",
                )
        for var in group.spec.weighting.margins:
            if var not in frames.margins.get(gid, {}):
                ld.add(
                    f"no margin for {gid}/{var} in the margins frame",
                    file="study.toml",
                    key=f"groups.{gid}.weighting.margins",
                )


def _check_quality_rules(ld: _Loader, cfg: schema.StudyConfig, groups: dict[str, Group]) -> None:
    """[[quality.rule]] against the groups: group names, modes, expressions, check counts."""
    for rule in cfg.quality.rule:
        key = f"quality.rule ({rule.id})"
        unknown = sorted(set(rule.groups or ()) - groups.keys())
        if unknown:
            ld.add(f"no such group: {', '.join(unknown)}", file="study.toml", key=f"{key}.groups")
        modes = sorted(set(rule.modes or ()) - set(cfg.fieldwork.modes))
        if modes:
            ld.add(
                f"mode {', '.join(modes)} is not in fieldwork.modes",
                file="study.toml",
                key=f"{key}.modes",
            )
        applies = [g for gid, g in groups.items() if rule.groups is None or gid in rule.groups]
        ld.expression(
            rule.expression,
            file="study.toml",
            key=f"{key}.expression",
            forms=[g.form for g in applies],
        )
        if rule.kind == "attention" and rule.threshold is not None:
            for g in applies:
                n = len(g.spec.quality.attention_checks)
                if 0 < n < rule.threshold:
                    ld.add(
                        f"threshold {rule.threshold:g} is more than the {n} attention "
                        f"check{'s' if n != 1 else ''} of group {g.id!r}",
                        file="study.toml",
                        key=f"{key}.threshold",
                    )


def _load_simulation(
    ld: _Loader, groups: dict[str, Group], frames: Frames, indicators: dict[str, Indicator]
) -> SimulationFile | None:
    if not (ld.root / "simulation.toml").exists():
        return None
    sim = ld.toml("simulation.toml", SimulationFile)
    if sim is None:
        return None
    file = "simulation.toml"
    for gid, gs in sim.groups.items():
        group = groups.get(gid)
        if group is None:
            ld.add(f"{gid!r} is not a group of the study", file=file, key=f"groups.{gid}")
            continue
        form = group.form
        for name, gen in gs.fields.items():
            key = f"groups.{gid}.fields.{name}"
            f = form.fields.get(name)
            if f is None:
                ld.add(f"{name!r} is not a field of questionnaire {gid!r}", file=file, key=key)
                continue
            if gen.probs and f.choice_list in form.choice_lists:
                names = form.choice_lists[f.choice_list].names
                for code in gen.probs:
                    if code not in names:
                        ld.add(
                            f"{code!r} is not a choice of {name!r}", file=file, key=f"{key}.probs"
                        )
            elif gen.probs:
                ld.add(
                    f"probs are for select questions; {name!r} is a {f.type}",
                    file=file,
                    key=f"{key}.probs",
                )
            if gen.of is not None and gen.of not in form.fields:
                ld.add(
                    f"{gen.of!r} is not a field of questionnaire {gid!r}",
                    file=file,
                    key=f"{key}.of",
                )
            if gen.margin is not None:
                margin = frames.margins.get(gid, {}).get(gen.margin)
                if margin is None:
                    ld.add(
                        f"no margin {gid}/{gen.margin} in the margins frame",
                        file=file,
                        key=f"{key}.margin",
                    )
                elif set(gen.ranges) != set(margin.shares):
                    ld.add(
                        f"ranges must cover the categories of margin {gen.margin!r} "
                        f"exactly ({', '.join(margin.shares)})",
                        file=file,
                        key=f"{key}.ranges",
                    )
        for i, src in enumerate(gs.response.effects):
            ld.expression(
                src, file=file, key=f"groups.{gid}.response.effects[{i + 1}]", forms=[form]
            )
        for ind_id in gs.targets:
            ind = indicators.get(ind_id)
            if ind is None or gid not in ind.groups:
                ld.add(
                    f"{ind_id!r} is not an indicator of group {gid!r}",
                    file=file,
                    key=f"groups.{gid}.targets",
                )
        for name in gs.totals:
            f = form.fields.get(name)
            if f is None or f.type not in ("integer", "decimal"):
                ld.add(
                    f"totals are for integer or decimal fields; {name!r} is not one",
                    file=file,
                    key=f"groups.{gid}.totals",
                )
    return sim


def _languages(
    ld: _Loader, text: dict[str, str] | None, langs: list[str], file: str, key: str
) -> None:
    if text is None:
        return
    for lang in langs:
        if not text.get(lang):
            ld.add(f"missing in language {lang!r}", file=file, key=key)


def _check_study_texts(ld: _Loader, cfg: schema.StudyConfig) -> None:
    langs = cfg.study.languages
    for key, text in (
        ("study.title", cfg.study.title),
        ("study.subtitle", cfg.study.subtitle),
        ("study.publisher", cfg.study.publisher),
        ("study.description", cfg.study.description),
        ("report.title", cfg.report.title),
    ):
        _languages(ld, text, langs, "study.toml", key)
    for rule in cfg.quality.rule:
        _languages(
            ld, rule.description, langs, "study.toml", f"quality.rule ({rule.id}).description"
        )


def load(path: Path | str) -> Study:
    """Load and validate the study folder at `path`; raise StudyError listing every problem."""
    root = Path(path)
    if not root.is_dir():
        raise StudyError([Problem("not a study folder (no such directory)", file=str(root))])
    ld = _Loader(root)
    cfg = ld.toml("study.toml", schema.StudyConfig)
    if cfg is None:
        # The other files are still worth checking for syntax, so all problems show at once.
        ld.toml("indicators.toml", schema.IndicatorsFile, list_key="indicator")
        ld.toml("model.toml", schema.ModelFile)
        raise StudyError(ld.problems)
    _check_study_texts(ld, cfg)
    groups = _load_groups(ld, cfg)
    frames = _load_frames(ld, cfg, groups)
    indicators = _load_indicators(ld, cfg, groups)
    history = _load_history(ld)
    model = _load_model(ld, frames, indicators, history, cfg)
    _cross_checks(ld, cfg, groups, frames)
    _check_quality_rules(ld, cfg, groups)
    simulation = _load_simulation(ld, groups, frames, indicators)
    if ld.problems or model is None:
        raise StudyError(ld.problems or [Problem("model.toml could not be read")])
    return Study(root, cfg, groups, frames, indicators, model, history, simulation)
