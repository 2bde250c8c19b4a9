"""The synthetic population of one respondent group: every unit's true answers.

Fields are generated in questionnaire order, whole columns at a time: a base draw (the
study's simulation.toml, else defaults from the form: margins, choices, constraint bounds),
then relevance (blank where a question would not be asked), constraints (redrawn until they
hold), calculations (the form's own, through the vectorised evaluator), and calibration: the
population value of every published figure is set exactly to its target by moving the fewest
units across the figure's condition, and numeric totals are scaled to the study's totals.
Battery items follow one latent attitude per battery (reverse-keyed items its opposite), so
answers are correlated as real ones are.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from impactstudy.forms import Expression, Field, Form
from impactstudy.forms.expr import Node, _expression
from impactstudy.forms.vector import ColumnKind, column_kinds, field_kind, to_polars
from impactstudy.study import Study
from impactstudy.study.simspec import Generator, GroupSimulation

__all__ = [
    "Population",
    "SimulationError",
    "Target",
    "build_population",
    "column_kinds",
    "population_size",
    "targets_of",
]

#: fields the client fills in: made with the paradata, not in the population
META_FIELDS = frozenset({"start", "end", "today", "deviceid", "instanceID"})
LIKERT_BASE = (0.05, 0.12, 0.28, 0.38, 0.17)  # default shares of 1..5 on an agreement scale
MAX_ROUNDS = 200


class SimulationError(Exception):
    """The study cannot be simulated as configured; the message names the field or figure."""


@dataclass(frozen=True)
class Target:
    """A population value the simulation must reproduce: a proportion or mean in a domain."""

    indicator: str
    statistic: str  # proportion | mean
    value: float  # a fraction for proportions
    expression: Expression
    domain: Expression | None
    source: str  # "published" or "simulation.toml"


@dataclass
class Population:
    group: str
    frame: pl.DataFrame
    #: real units each synthetic unit stands for
    weight: float
    repeats: dict[str, pl.DataFrame] = field(default_factory=dict)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        """Pickled (to or from a helper process) as zstd Arrow IPC: a tenth of the bytes of
        Polars' own pickling of 400,000 answers, and a third of the time."""
        repeats = {k: _ipc(v) for k, v in self.repeats.items()}
        return (_population, (self.group, _ipc(self.frame), self.weight, repeats))


def _ipc(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_ipc(buf, compression="zstd")
    return buf.getvalue()


def _population(group: str, frame: bytes, weight: float, repeats: dict[str, bytes]) -> Population:
    # one chunk per column, as built: sums over chunks could round differently
    def read(data: bytes) -> pl.DataFrame:
        return pl.read_ipc(io.BytesIO(data)).rechunk()

    return Population(group, read(frame), weight, {k: read(v) for k, v in repeats.items()})


def population_size(study: Study, group: str) -> int:
    """Synthetic units of a group: simulation.toml's ``size``, else 10,000."""
    spec = study.simulation.groups.get(group) if study.simulation else None
    return spec.size if spec is not None else 10_000


def targets_of(study: Study, group: str) -> list[Target]:
    """The figures a group's population must reproduce, with their values as fractions."""
    sim = study.simulation
    spec = sim.groups.get(group) if sim else None
    out: list[Target] = []
    for ind in study.indicators.values():
        if group not in ind.groups or ind.spec.statistic not in ("proportion", "mean"):
            continue
        pub = ind.spec.published
        value: float | None = None
        source = "published"
        if spec is not None and ind.id in spec.targets:
            value, source = spec.targets[ind.id], "simulation.toml"
        elif pub is not None and pub.value is not None and pub.relation in ("=", "approx"):
            value = pub.value
        if value is None:
            continue
        if ind.spec.statistic == "proportion" and ind.spec.unit == "%":
            value /= 100
        out.append(Target(ind.id, ind.spec.statistic, value, ind.expression, ind.domain, source))
    # one target per (expression, domain): the first (published before phrase) wins
    seen: set[tuple[str, str]] = set()
    unique: list[Target] = []
    for t in out:
        key = (t.expression.source, t.domain.source if t.domain else "")
        if key not in seen:
            seen.add(key)
            unique.append(t)
    return unique


def _literal_bounds(f: Field) -> tuple[float | None, float | None]:
    """Bounds a constraint states with literals: `. >= 0 and . <= 100` gives (0, 100)."""
    lo: float | None = None
    hi: float | None = None
    if f.constraint is None:
        return lo, hi
    step = 1.0 if f.type == "integer" else 1e-6

    def walk(n: Node) -> None:
        nonlocal lo, hi
        if n.kind == "bin" and n.value in ("<", "<=", ">", ">="):
            a, b = n.args
            op = str(n.value)
            if a.kind == "num" and b.kind == "cur":
                a, b = b, a
                op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}[op]
            if a.kind == "cur" and b.kind == "num":
                x = float(b.value)  # type: ignore[arg-type]
                if op == ">=":
                    lo = x if lo is None else max(lo, x)
                elif op == ">":
                    lo = x + step if lo is None else max(lo, x + step)
                elif op == "<=":
                    hi = x if hi is None else min(hi, x)
                else:
                    hi = x - step if hi is None else min(hi, x - step)
        if n.kind == "bin" and n.value == "and":
            for arg in n.args:
                walk(arg)

    walk(f.constraint.tree)
    return lo, hi


def _field_upper_bound(f: Field) -> str | None:
    """The field a constraint caps the answer by: `. <= ${staff_total}` gives staff_total."""
    if f.constraint is None:
        return None
    found: list[str] = []

    def walk(n: Node) -> None:
        if n.kind == "bin" and n.value in ("<", "<=") and len(n.args) == 2:
            a, b = n.args
            if a.kind == "cur" and b.kind == "ref":
                found.append(str(b.value))
        if n.kind == "bin" and n.value == "and":
            for arg in n.args:
                walk(arg)

    walk(f.constraint.tree)
    return found[0] if found else None


class _Builder:
    def __init__(self, study: Study, group: str, seed: int) -> None:
        self.study = study
        self.group = group
        g = study.groups[group]
        self.form: Form = g.form
        sim = study.simulation
        self.spec: GroupSimulation | None = sim.groups.get(group) if sim else None
        self.size = population_size(study, group)
        self.weight = study.frames.populations[group].population / self.size
        self.rng = np.random.default_rng([seed, _stable_hash(group)])
        self.today = study.config.fieldwork.start
        self.strat = study.config.sample.stratify_by
        self.kinds: dict[str, ColumnKind] = {}
        self.version: dict[str, int] = {}
        self.scope = ""  # the repeat being generated, "" for the questionnaire itself
        self.cache: dict[tuple[object, ...], np.ndarray] = {}
        # pure functions of the form, asked for again and again: computed once
        self.compiled: dict[tuple[object, ...], pl.Expr] = {}
        self.constraints: dict[str, Expression] = {}
        self.exclusive: dict[str, set[str]] = {}
        self.sides: dict[tuple[str, str], np.ndarray] = {}
        self.targets = targets_of(study, group)
        self.margins = study.frames.margins.get(group, {})
        self.attention = {c.field: c.pass_ for c in g.spec.quality.attention_checks}
        self.battery_of: dict[str, tuple[str, float]] = {}
        for bat in g.spec.quality.batteries:
            for item in bat.items:
                self.battery_of[item] = (bat.name, -1.0 if item in bat.reverse_keyed else 1.0)
        self.traits = {
            bat.name: self.rng.standard_normal(self.size) for bat in g.spec.quality.batteries
        }
        self.targets_by_field: dict[str, list[Target]] = {}
        self.deferred: list[tuple[Field, Target]] = []
        self.inlined: dict[str, Expression] = {}
        for t in self.targets:
            self.targets_by_field.setdefault(self._driver(t), []).append(t)
            self.inlined[t.indicator] = self._inline(t.expression)

    # -- helpers ---------------------------------------------------------------------------

    def gen(self, name: str) -> Generator | None:
        return self.spec.fields.get(name) if self.spec else None

    def compile(self, ex: Expression, result: str = "value") -> pl.Expr:
        """The Polars expression, compiled once per tree, result and kinds of the columns it
        reads (compiling costs about a millisecond; the simulator asks thousands of times)."""
        key = (ex.tree, result, tuple(sorted((r, self.kinds.get(r)) for r in ex.refs)))
        hit = self.compiled.get(key)
        if hit is None:
            hit = to_polars(ex, self.kinds, today=self.today, result=result)  # type: ignore[arg-type]
            self.compiled[key] = hit
        return hit

    def mask(
        self, df: pl.DataFrame, ex: Expression | None, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """The expression as a boolean per row (blank is false), on `rows` only if given."""
        n = df.height if rows is None else len(rows)
        if ex is None:
            return np.ones(n, dtype=bool)
        if rows is not None and n == df.height:
            # every row (expressions are row-wise): evaluate in place rather than gather a copy
            return np.asarray(self.mask(df, ex)[rows])
        if rows is not None:
            df = df.select(sorted(ex.refs)).gather(rows) if ex.refs else df.gather(rows)
        elif ex.refs:
            df = df.select(sorted(ex.refs))
        if df.height >= DISTINCT_MIN_ROWS and _costly_on_text(df, ex):
            return self._mask_by_value(df, ex)
        s = df.select(self.compile(ex, "boolean").fill_null(False)).to_series()
        return s.to_numpy().astype(bool)

    def _mask_by_value(self, df: pl.DataFrame, ex: Expression) -> np.ndarray:
        """A row-wise expression of one text column, evaluated once per distinct answer (a
        select's few codes) instead of once per unit: string functions and text-to-number
        conversions over 400,000 rows cost more than hashing them. Same values."""
        (name,) = ex.refs
        col = df.get_column(name)
        distinct = col.unique().to_frame()
        if distinct.height * 4 > col.len():  # free text: no saving
            s = df.select(self.compile(ex, "boolean").fill_null(False)).to_series()
            return s.to_numpy().astype(bool)
        table = distinct.with_columns(self.compile(ex, "boolean").fill_null(False).alias("_v"))
        known = pl.col(name).is_not_null()
        true = table.filter(known & pl.col("_v")).get_column(name)
        on_blank = bool(table.filter(~known).get_column("_v").any())
        hit = col.is_in(true.implode()).fill_null(False)
        hit = hit | col.is_null() if on_blank else hit & col.is_not_null()
        return hit.to_numpy().astype(bool)

    def relevant(self, df: pl.DataFrame, f: Field) -> np.ndarray:
        m = np.ones(df.height, dtype=bool)
        for name in (*f.ancestors, f.name):
            anc = self.form.fields[name]
            if anc.relevant is not None:
                m &= self._cached(df, anc.relevant)
        return m

    def _cached(self, df: pl.DataFrame, ex: Expression) -> np.ndarray:
        """Relevance masks are read by every question of a group: keep them until a field
        they read changes."""
        versions = tuple(self.version.get(r, 0) for r in sorted(ex.refs))
        key = (self.scope, df.height, ex.source, versions)
        hit = self.cache.get(key)
        if hit is None:
            hit = self.mask(df, ex)
            self.cache[key] = hit
        return hit

    def _inline(self, ex: Expression) -> Expression:
        """The expression with every calculated field replaced by its calculation, so it can
        be evaluated while the calculation's inputs are being generated."""

        def rewrite(n: Node) -> Node:
            if n.kind == "ref":
                f = self.form.fields.get(str(n.value))
                if f is not None and f.calculation is not None:
                    return rewrite(f.calculation.tree)
            if n.args:
                return Node(n.kind, n.value, tuple(rewrite(a) for a in n.args))
            return n

        return _expression(ex.source, rewrite(ex.tree))

    def _driver(self, t: Target) -> str:
        """The one generated field a figure depends on (through calculations)."""
        base: set[str] = set()

        def resolve(name: str) -> None:
            f = self.form.fields[name]
            if f.calculation is not None:
                for r in f.calculation.refs:
                    resolve(r)
            else:
                base.add(name)

        for r in t.expression.refs:
            resolve(r)
        if len(base) != 1:
            raise SimulationError(
                f"figure {t.indicator} of {self.group!r} depends on {sorted(base)}; "
                "the simulator calibrates figures that depend on one question"
            )
        return next(iter(base))

    # -- base draws ------------------------------------------------------------------------

    def choice_probs(self, f: Field, codes: tuple[str, ...]) -> np.ndarray:
        gen = self.gen(f.name)
        margin = self.margins.get(f.name)
        if gen is not None and gen.probs:
            p = np.array([gen.probs.get(c, 0.0) for c in codes], dtype=float)
        elif margin is not None:
            p = np.array([margin.shares.get(c, 0.0) for c in codes], dtype=float)
        elif f.name == self.study.config.sample.stratify_by:  # as the quotas are allocated
            pops = {pr.code: float(pr.population) for pr in self.study.frames.geography}
            p = np.array([pops.get(c, 0.0) for c in codes], dtype=float)
        elif f.choice_list == "likert5" or codes == ("1", "2", "3", "4", "5"):
            # negatively keyed statements are agreed with as rarely as positive ones are not
            reverse = self.battery_of.get(f.name, ("", 1.0))[1] < 0
            p = np.array(LIKERT_BASE[::-1] if reverse else LIKERT_BASE)
        else:
            p = np.array([0.03 if c == "other" else 1.0 for c in codes], dtype=float)
        p = self._aim(f, codes, p)
        if f.type == "select_one":
            if p.sum() <= 0:
                raise SimulationError(f"{self.group}.{f.name}: probabilities are all zero")
            return np.asarray(p / p.sum(), dtype=float)
        if gen is None or not gen.probs:
            p = self._aim(f, codes, np.where(np.array(codes) == "other", 0.03, 0.3))
        return p

    def _aim(self, f: Field, codes: tuple[str, ...], p: np.ndarray) -> np.ndarray:
        """Base probabilities already at the field's targets, so calibration moves few units."""
        arr = np.array(codes, dtype=object)
        for t in self.targets_by_field.get(f.name, []):
            if t.statistic != "proportion":
                continue
            on = self._sides(f, t, arr)
            if f.type == "select_multiple":
                if on.sum() == 1:
                    p = np.where(on, t.value, p)
            elif 0 < p[on].sum() < p.sum() and 0 < t.value < 1:
                p = p / p.sum()
                p = np.where(on, p * t.value / p[on].sum(), p * (1 - t.value) / p[~on].sum())
        return p

    def draw_select_one(self, f: Field, n: int, rows: np.ndarray, df: pl.DataFrame) -> np.ndarray:
        codes = self.form.choices(f.name).names
        p = self.choice_probs(f, codes)
        if f.name in self.battery_of:
            bat, sign = self.battery_of[f.name]
            z = sign * self.traits[bat][rows] * 0.9 + self.rng.standard_normal(n) * 0.6
            cuts = np.quantile(z, np.cumsum(p)[:-1]) if n > 1 else np.array([])
            return np.asarray(np.array(codes, dtype=object)[np.searchsorted(cuts, z)])
        exact = self.margins.get(f.name) is not None or f.name == self.strat
        if exact and n == self.size:
            counts = _largest_remainder(p, n)
            out = np.repeat(np.array(codes, dtype=object), counts)
            return self.rng.permutation(out)
        allowed = self.allowed(f, df, rows)
        if allowed is None:
            return np.array(codes, dtype=object)[self.rng.choice(len(codes), size=n, p=p)]
        w = allowed * p
        w_sum = w.sum(axis=1, keepdims=True)
        w = np.where(w_sum > 0, w / np.where(w_sum > 0, w_sum, 1), 0)
        u = self.rng.random(n)[:, None]
        idx = (u > np.cumsum(w, axis=1)).sum(axis=1).clip(0, len(codes) - 1)
        out = np.array(codes, dtype=object)[idx]
        out[w_sum[:, 0] == 0] = None
        return np.asarray(out)

    def allowed(self, f: Field, df: pl.DataFrame, rows: np.ndarray) -> np.ndarray | None:
        """Choices the choice_filter allows, per row (rows x choices), or None."""
        if f.choice_filter is None:
            return None
        cl = self.form.choices(f.name)
        exs = [f.choice_filter.substitute(bare={**c.columns, "name": c.name}) for c in cl.choices]
        if not exs:
            return None
        refs = sorted(set().union(*(ex.refs for ex in exs)))
        if not refs:  # pragma: no cover - a filter on the choices' own columns only
            sub = df[rows] if rows.dtype != bool else df.filter(pl.Series(rows))
            return np.column_stack([self.mask(sub, ex) for ex in exs])
        # only the columns the filter reads, and every choice in one pass
        sub = df.select(refs)
        sub = sub.gather(rows) if rows.dtype != bool else sub.filter(pl.Series(rows))
        tests = [
            self.compile(ex, "boolean").fill_null(False).alias(f"c{i}") for i, ex in enumerate(exs)
        ]
        return sub.select(tests).to_numpy().astype(bool)

    def exclusive_codes(self, f: Field) -> set[str]:
        """select_multiple choices the constraint allows only alone (e.g. 'none')."""
        if f.name in self.exclusive:
            return set(self.exclusive[f.name])
        if f.constraint is None:
            return set()
        codes = self.form.choices(f.name).names
        others = [c for c in codes]
        ex = f.constraint.substitute(current=f.name)
        rows = []
        for c in codes:
            partner = next((o for o in others if o != c), c)
            rows.append((c, f"{c} {partner}"))
        test = pl.DataFrame({f.name: [v for pair in rows for v in pair]})
        kinds = {f.name: "text"}
        ok = (
            test.select(to_polars(ex, kinds, result="boolean").fill_null(False))  # type: ignore[arg-type]
            .to_series()
            .to_list()
        )
        found = {c for i, (c, _) in enumerate(rows) if ok[2 * i] and not ok[2 * i + 1]}
        self.exclusive[f.name] = found
        return set(found)

    def draw_select_multiple(
        self, f: Field, n: int, rows: np.ndarray, df: pl.DataFrame
    ) -> np.ndarray:
        codes = np.array(self.form.choices(f.name).names, dtype=object)
        p = self.choice_probs(f, tuple(codes))
        excl = self.exclusive_codes(f)
        is_excl = np.isin(codes, list(excl))
        ticks = self.rng.random((n, len(codes))) < p[None, :]
        ticks[:, is_excl] = False
        allowed = self.allowed(f, df, rows)
        if allowed is not None:
            ticks &= allowed
        none = ~ticks.any(axis=1)
        if excl:
            first_excl = int(np.flatnonzero(is_excl)[0])
            ticks[none, first_excl] = True
        elif f.required:
            pick = self.rng.integers(0, len(codes), size=n)
            ticks[np.flatnonzero(none), pick[none]] = True
        return _join_ticks(ticks, codes)

    def draw_number(self, f: Field, n: int, df: pl.DataFrame, rows: np.ndarray) -> np.ndarray:
        gen = self.gen(f.name)
        lo, hi = _literal_bounds(f)
        if gen is not None:
            lo = gen.min if gen.min is not None else lo
            hi = gen.max if gen.max is not None else hi
        upper = _field_upper_bound(f) if gen is None else None
        if upper is not None and upper in df.columns:  # `. <= ${staff_total}`: a part of it
            of = np.nan_to_num(df[upper].cast(pl.Float64).to_numpy()[rows])
            share = self.rng.beta(1.0, 2.0, n)
            x = (
                of * share
                if f.type == "decimal"
                else self.rng.binomial(np.maximum(of, 0).astype(int), share).astype(float)
            )
        elif gen is None:
            if lo is not None and hi is not None and hi - lo <= 100:
                x = self.rng.uniform(lo, hi, n)
            else:
                x = np.exp(np.log(5.0) + self.rng.standard_normal(n))
        elif gen.dist == "uniform":
            assert gen.low is not None and gen.high is not None
            x = self.rng.uniform(gen.low, gen.high, n)
        elif gen.dist == "lognormal":
            assert gen.median is not None and gen.sigma is not None
            x = np.exp(np.log(gen.median) + gen.sigma * self.rng.standard_normal(n))
        elif gen.dist == "normal":
            assert gen.mean is not None and gen.sd is not None
            x = gen.mean + gen.sd * self.rng.standard_normal(n)
        elif gen.dist == "constant":
            x = np.full(n, float(gen.value))  # type: ignore[arg-type]
        elif gen.dist == "share_of":
            assert gen.of is not None and gen.mean is not None
            of = df[gen.of].to_numpy()[rows].astype(float)
            of = np.nan_to_num(of)
            a = 2.0
            share = self.rng.beta(a * gen.mean / (1 - gen.mean + 1e-9) + 1e-9, a, n)
            x = (
                of * share
                if f.type == "decimal"
                else self.rng.binomial(of.astype(int), share).astype(float)
            )
        elif gen.dist == "margin_ranges":
            x = self._margin_ranges(f, gen, n)
        else:
            raise SimulationError(f"{self.group}.{f.name}: dist {gen.dist!r} does not make numbers")
        x = np.asarray(x, dtype=float)
        if lo is not None:
            x = np.maximum(x, lo)
        if hi is not None:
            x = np.minimum(x, hi)
        return self._round(f, x)

    def _round(self, f: Field, x: np.ndarray) -> np.ndarray:
        if f.type == "integer":
            return np.round(x)
        gen = self.gen(f.name)
        digits = gen.digits if gen is not None and gen.digits is not None else 1
        return np.round(x, digits)

    def _margin_ranges(self, f: Field, gen: Generator, n: int) -> np.ndarray:
        assert gen.margin is not None
        margin = self.margins[gen.margin]
        cats = list(gen.ranges)
        p = np.array([margin.shares[c] for c in cats])
        counts = _largest_remainder(p / p.sum(), n)
        lows = np.repeat([gen.ranges[c][0] for c in cats], counts)
        highs = np.repeat([gen.ranges[c][1] for c in cats], counts)
        step = 1.0 if f.type == "integer" else 0.0
        x = lows + self.rng.random(n) * (highs - lows + step)
        x = np.floor(x) if f.type == "integer" else x
        return self.rng.permutation(np.minimum(x, highs))

    def draw(self, f: Field, df: pl.DataFrame, rows: np.ndarray) -> np.ndarray:
        n = len(rows)
        if f.name in self.attention:
            return self._attentive(f, n)
        gen = self.gen(f.name)
        if f.type == "select_one":
            return self.draw_select_one(f, n, rows, df)
        if f.type == "select_multiple":
            return self.draw_select_multiple(f, n, rows, df)
        if f.type in ("integer", "decimal"):
            return self.draw_number(f, n, df, rows)
        if f.type == "date":
            start = (self.today - dt.date(1970, 1, 1)).days
            days = self.rng.integers(start - 3 * 365, start + 1, n)
            return days.astype("datetime64[D]").astype(str).astype(object)
        values = gen.values if gen is not None and gen.values else ["示例回答"]
        return np.array(values, dtype=object)[self.rng.integers(0, len(values), n)]

    def _attentive(self, f: Field, n: int) -> np.ndarray:
        src = self.attention[f.name]
        from impactstudy.forms import parse

        tree = parse(src).tree
        if tree.kind == "bin" and tree.value == "=" and tree.args[0].kind == "ref":
            lit = tree.args[1]
            value: object = lit.value
            if f.type in ("integer", "decimal"):
                return np.full(n, float(value))  # type: ignore[arg-type]
            return np.full(n, str(value), dtype=object)
        raise SimulationError(
            f"attention check {f.name!r} of {self.group!r}: write its pass expression as "
            "${field} = value so the simulator knows the attentive answer"
        )

    # -- assembling ------------------------------------------------------------------------

    def set_column(
        self, df: pl.DataFrame, f: Field, values: np.ndarray, rows: np.ndarray
    ) -> pl.DataFrame:
        full: np.ndarray
        if f.type in ("integer", "decimal"):
            full = np.full(df.height, np.nan)
            full[rows] = values.astype(float)
        else:
            full = np.full(df.height, None, dtype=object)
            full[rows] = values
        self.kinds[f.name] = field_kind(f)
        self.version[f.name] = self.version.get(f.name, 0) + 1
        return df.with_columns(_column(f, full))

    def constraint(self, f: Field) -> Expression | None:
        """The field's constraint with `.` read as the field (rewritten once)."""
        if f.constraint is None:
            return None
        if f.name not in self.constraints:
            self.constraints[f.name] = f.constraint.substitute(current=f.name)
        return self.constraints[f.name]

    def check_constraint(self, df: pl.DataFrame, f: Field, rows: np.ndarray) -> np.ndarray:
        """Rows (of `rows`) whose answer breaks the field's constraint."""
        ex = self.constraint(f)
        if ex is None or len(rows) == 0:
            return np.zeros(len(rows), dtype=bool)
        return ~self.mask(df, ex, rows)

    def trial(
        self, df: pl.DataFrame, f: Field, rows: np.ndarray, new: pl.Series, reads: set[str]
    ) -> pl.DataFrame:
        """The columns `reads` of `rows` only, with `new` as the field's answers: what a
        constraint or a figure's condition is tested on before an answer is changed, without
        rebuilding the whole column."""
        others = sorted(reads - {f.name})
        part = df.select(others).gather(rows) if others else pl.DataFrame()
        return part.with_columns(new.alias(f.name)) if others else new.alias(f.name).to_frame()

    def breaks(
        self, df: pl.DataFrame, f: Field, rows: np.ndarray, values: np.ndarray
    ) -> np.ndarray:
        """Which of `values` (answers for `rows`) would break the field's constraint."""
        ex = self.constraint(f)
        if ex is None or len(rows) == 0:
            return np.zeros(len(rows), dtype=bool)
        self.kinds[f.name] = field_kind(f)
        new = _column(f, values if f.type not in ("integer", "decimal") else values.astype(float))
        return ~self.mask(self.trial(df, f, rows, new, set(ex.refs)), ex)

    def generate_field(self, df: pl.DataFrame, f: Field) -> pl.DataFrame:
        if f.calculation is not None:
            expr = self.compile(f.calculation)
            rel = self.relevant(df, f)
            df = df.with_columns(expr.alias(f.name))
            col = df[f.name]
            if col.dtype == pl.Boolean:
                col = col.cast(pl.String).str.replace("true", "true")
            if col.dtype.is_numeric():
                col = col.cast(pl.Float64)
                self.kinds[f.name] = "number"
            else:
                col = col.cast(pl.String)
                self.kinds[f.name] = "text"
            col = pl.Series(f.name, col).set(pl.Series(~rel), None)
            self.version[f.name] = self.version.get(f.name, 0) + 1  # cached masks reading it
            return df.with_columns(col)
        rel = np.flatnonzero(self.relevant(df, f))
        values = self.draw(f, df, rel)
        df = self.set_column(df, f, values, rel)
        df = self._satisfy(df, f, rel, values)
        for t in self.targets_by_field.get(f.name, []):
            if t.domain is not None and not t.domain.refs <= set(df.columns):
                self.deferred.append((f, t))  # its domain is asked later in the form
                continue
            df = self.calibrate(df, f, t)
        if self.spec is not None and f.name in self.spec.totals:
            df = self.scale_total(df, f, self.spec.totals[f.name])
        return df

    def _satisfy(
        self, df: pl.DataFrame, f: Field, rows: np.ndarray, values: np.ndarray
    ) -> pl.DataFrame:
        """Redraw the answers (`values`, of `rows`, already in the column) that break the
        constraint until they hold: the redraws are tested on the redrawn units alone, and
        written into the column once, at the end."""
        bad = np.flatnonzero(self.check_constraint(df, f, rows))  # positions in rows
        if len(bad) == 0:
            return df
        number = f.type in ("integer", "decimal")
        values = values.astype(float) if number else values.astype(object)
        redrawn = bad
        for _ in range(MAX_ROUNDS):
            if len(bad) == 0:
                return self._assign(df, f, rows[redrawn], values[redrawn])
            values[bad] = self.draw(f, df, rows[bad])
            bad = bad[self.breaks(df, f, rows[bad], values[bad])]
        raise SimulationError(
            f"{self.group}.{f.name}: {len(bad)} units still break the constraint "
            f"{f.constraint.source if f.constraint else ''!r} after {MAX_ROUNDS} redraws; "
            "give the field a generator in simulation.toml"
        )

    # -- calibration -----------------------------------------------------------------------

    def calibrate(self, df: pl.DataFrame, f: Field, t: Target) -> pl.DataFrame:
        # figures share domains: cached like relevance, until a field the domain reads changes
        dom = self.relevant(df, f)
        if t.domain is not None:
            dom = dom & self._cached(df, t.domain)
        rows = np.flatnonzero(dom)
        if len(rows) == 0:
            raise SimulationError(
                f"figure {t.indicator}: no unit of {self.group!r} is in its domain "
                f"({t.domain.source if t.domain else 'all'}) when {f.name!r} is generated"
            )
        if t.statistic == "mean":
            return self._calibrate_mean(df, f, t, rows)
        expression = self.inlined[t.indicator]
        truth = self.mask(df, expression, rows)
        want = round(t.value * len(rows))
        have = int(truth.sum())
        if want == have:
            return df
        score = self._score(f, rows)
        # move the units most inclined to the other side first (latent attitude), others at random
        if want > have:
            cand = rows[~truth]
            order = np.argsort(-score[~truth], kind="stable")
        else:
            cand = rows[truth]
            order = np.argsort(score[truth], kind="stable")
        need = abs(want - have)
        return self._flip(df, f, t, cand[order], need, into_true=want > have)

    def _score(self, f: Field, rows: np.ndarray) -> np.ndarray:
        noise = self.rng.random(len(rows))
        if f.name in self.battery_of:
            bat, sign = self.battery_of[f.name]
            return np.asarray(
                sign * self.traits[bat][rows] + 0.5 * self.rng.standard_normal(len(rows))
            )
        return noise

    def _flip(
        self, df: pl.DataFrame, f: Field, t: Target, cand: np.ndarray, need: int, into_true: bool
    ) -> pl.DataFrame:
        """Give `need` of the candidate units (in order of preference) an answer on the other
        side of the figure's condition, keeping the constraint."""
        done = 0
        pos = 0
        condition, constraint = self.inlined[t.indicator], self.constraint(f)
        reads = set(condition.refs) | (set(constraint.refs) if constraint is not None else set())
        for _ in range(MAX_ROUNDS):
            if done >= need or pos >= len(cand):
                break
            take = cand[pos : pos + (need - done)]
            pos += len(take)
            proposal = self._propose(df, f, t, take, into_true)
            # test the proposal on the moved units only, not on a rebuilt column
            part = self.trial(df, f, take, _column(f, proposal), reads)
            side = self.mask(part, condition) == into_true
            ok = side & (self.mask(part, constraint) if constraint is not None else True)
            keep = take[ok]
            if len(keep):
                df = self._assign(df, f, keep, proposal[ok])
                done += len(keep)
        if done < need:
            raise SimulationError(
                f"figure {t.indicator}: could move only {done} of {need} units of "
                f"{self.group!r} to reach {t.value:.4g}; check its question {f.name!r}"
            )
        return df

    def _assign(
        self, df: pl.DataFrame, f: Field, rows: np.ndarray, values: np.ndarray
    ) -> pl.DataFrame:
        self.version[f.name] = self.version.get(f.name, 0) + 1
        col = df[f.name].clone()
        if len(rows) == 0:
            return df
        if f.type in ("integer", "decimal"):
            new = pl.Series(values.astype(float)).fill_nan(None).cast(col.dtype)
        else:
            new = pl.Series(values.tolist(), dtype=pl.String)
        return df.with_columns(col.scatter(rows, new))

    def _propose(
        self, df: pl.DataFrame, f: Field, t: Target, rows: np.ndarray, into_true: bool
    ) -> np.ndarray:
        """New answers for `rows` that (probably) lie on the wanted side of the figure."""
        n = len(rows)
        if f.type == "select_one":
            codes = np.array(self.form.choices(f.name).names, dtype=object)
            p = self.choice_probs(f, tuple(codes))
            side = self._sides(f, t, codes)
            w = np.where(side == into_true, p, 0.0)
            if w.sum() == 0:
                w = (side == into_true).astype(float)
            if w.sum() == 0:
                raise SimulationError(
                    f"figure {t.indicator}: no choice of {f.name!r} makes it "
                    f"{'true' if into_true else 'false'}"
                )
            return codes[self.rng.choice(len(codes), size=n, p=w / w.sum())]
        if f.type == "select_multiple":
            return self._toggle(df, f, t, rows, into_true)
        return self.draw_number(f, n, df, rows)

    def _sides(self, f: Field, t: Target, codes: np.ndarray) -> np.ndarray:
        """For each code alone as the answer: is the figure's condition true?"""
        key = (t.indicator, "\x00".join(str(c) for c in codes))
        if key not in self.sides:
            self.sides[key] = self._sides_of(f, t, codes)
        return self.sides[key].copy()

    def _sides_of(self, f: Field, t: Target, codes: np.ndarray) -> np.ndarray:
        test = pl.DataFrame({f.name: pl.Series(codes.tolist(), dtype=pl.String)})
        if f.type in ("integer", "decimal"):
            test = test.with_columns(pl.col(f.name).cast(pl.Float64))
        kinds: dict[str, ColumnKind] = {f.name: field_kind(f)}
        ex = to_polars(self.inlined[t.indicator], kinds, today=self.today, result="boolean")
        return test.select(ex.fill_null(False)).to_series().to_numpy().astype(bool)

    def _toggle(
        self, df: pl.DataFrame, f: Field, t: Target, rows: np.ndarray, into_true: bool
    ) -> np.ndarray:
        codes = np.array(self.form.choices(f.name).names, dtype=object)
        on = set(codes[self._sides(f, t, codes)])
        if not on:
            raise SimulationError(f"figure {t.indicator}: no choice of {f.name!r} makes it true")
        excl = self.exclusive_codes(f)
        plain = [c for c in codes if c not in excl and c not in on and c != "other"]
        index = {str(c): i for i, c in enumerate(codes)}
        # the current answers of the moved units as ticks (rows x choices), the exclusive
        # choices dropped
        current = df[f.name].gather(rows).fill_null("").str.split(" ")
        ticks = (
            pl.DataFrame(
                [current.list.contains(str(c)).alias(f"c{i}") for i, c in enumerate(codes)]
            )
            .to_numpy()
            .astype(bool)
            if len(rows)
            else np.zeros((0, len(codes)), dtype=bool)
        )
        ticks[:, [index[c] for c in excl]] = False
        if into_true:
            # tick the first choice (alphabetically) that makes it true and is not ticked yet
            cols = np.array([index[c] for c in sorted(on)])
            missing = ~ticks[:, cols]
            some = np.flatnonzero(missing.any(axis=1))
            ticks[some, cols[missing[some].argmax(axis=1)]] = True
        else:
            ticks[:, [index[c] for c in on]] = False
            empty = np.flatnonzero(~ticks.any(axis=1))
            if excl:
                ticks[empty, index[sorted(excl)[0]]] = True
            elif len(empty):
                # one draw per emptied unit, in the units' order
                pick = self.rng.integers(len(plain), size=len(empty))
                ticks[empty, np.array([index[c] for c in plain])[pick]] = True
        return _join_ticks(ticks, codes)

    def _bounds(self, f: Field) -> tuple[float, float]:
        lo, hi = _literal_bounds(f)
        gen = self.gen(f.name)
        if gen is not None:
            lo = gen.min if gen.min is not None else lo
            hi = gen.max if gen.max is not None else hi
        return (lo if lo is not None else -np.inf, hi if hi is not None else np.inf)

    def _nudge(
        self, df: pl.DataFrame, f: Field, rows: np.ndarray, want: float, step: float, what: str
    ) -> pl.DataFrame:
        """Move values of `rows` by one step at a time, within bounds and the constraint,
        until they sum to `want`."""
        lo, hi = self._bounds(f)
        # the column's values, moved here and written back once
        values = df[f.name].cast(pl.Float64).to_numpy().copy()
        moved = np.zeros(len(values), dtype=bool)
        for _ in range(MAX_ROUNDS * 10):
            diff = want - float(np.nansum(values[rows]))
            k = round(abs(diff) / step)
            if k == 0:
                return (
                    self._assign(df, f, np.flatnonzero(moved), values[moved]) if moved.any() else df
                )
            sign = 1.0 if diff > 0 else -1.0
            room = values[rows] + sign * step
            eligible = rows[(room >= lo) & (room <= hi)]
            if len(eligible) == 0:
                break
            take = self.rng.permutation(eligible)[: min(k, len(eligible))]
            ok = take[~self.breaks(df, f, take, values[take] + sign * step)]
            if len(ok) == 0:
                break
            values[ok] = values[ok] + sign * step
            moved[ok] = True
        raise SimulationError(
            f"{self.group}.{f.name}: cannot reach {what} within its bounds and constraint"
        )

    def _calibrate_mean(
        self, df: pl.DataFrame, f: Field, t: Target, rows: np.ndarray
    ) -> pl.DataFrame:
        if f.type not in ("integer", "decimal"):
            raise SimulationError(f"figure {t.indicator}: a mean needs a number, not {f.type}")
        step = 1.0 if f.type == "integer" else 10.0 ** -(self._digits(f))
        want = round(t.value * len(rows) / step) * step
        return self._nudge(df, f, rows, want, step, f"the mean {t.value:g} of {t.indicator}")

    def _digits(self, f: Field) -> int:
        gen = self.gen(f.name)
        return gen.digits if gen is not None and gen.digits is not None else 1

    def scale_total(self, df: pl.DataFrame, f: Field, total: float) -> pl.DataFrame:
        """Scale a numeric field so its population total (in real units) is `total`."""
        values = df[f.name].cast(pl.Float64).to_numpy()
        rows = np.flatnonzero(~np.isnan(values))
        have = float(np.nansum(values))
        want_synthetic = total / self.weight
        if have <= 0:
            raise SimulationError(f"{self.group}.{f.name}: all zero, cannot scale to a total")
        lo, hi = self._bounds(f)
        scaled = np.clip(self._round(f, values[rows] * want_synthetic / have), lo, hi)
        df = self._assign(df, f, rows, scaled)
        bad = rows[self.check_constraint(df, f, rows)]
        if len(bad):  # e.g. WeChat staff above all staff: cap at the old value
            df = self._assign(df, f, bad, values[bad])
        step = 1.0 if f.type == "integer" else 10.0 ** -(self._digits(f))
        want = round(want_synthetic / step) * step
        return self._nudge(df, f, rows, want, step, f"the total {total:g}")

    # -- the whole group -------------------------------------------------------------------

    def build(self) -> Population:
        df = pl.DataFrame({"_unit": np.arange(self.size, dtype=np.int64)})
        for f in self.form.walk():
            if f.is_container or f.type == "note" or f.name in META_FIELDS or f.repeats:
                continue
            df = self.generate_field(df, f)
        for f, t in self.deferred:
            self._check_deferrable(f, t)
            df = self.calibrate(df, f, t)
        if self.deferred:  # calculations read the calibrated answers
            for f in self.form.walk():
                if f.calculation is not None and not f.repeats:
                    df = self.generate_field(df, f)
        repeats = {
            f.name: self.build_repeat(df, f)
            for f in self.form.walk()
            if f.type == "repeat" and len(f.repeats) == 0
        }
        return Population(self.group, df, self.weight, repeats)

    def build_repeat(self, df: pl.DataFrame, rep: Field) -> pl.DataFrame:
        """The repeat's instances: as many per unit as its repeat_count says (0 where the
        repeat is not relevant), each answering the repeat's questions."""
        if len(rep.children) and any(c.type == "repeat" for c in rep.children):
            raise SimulationError(f"{self.group}.{rep.name}: nested repeats are not simulated")
        relevant = self.relevant(df, rep)
        if rep.repeat_count is not None:
            count = df.select(self.compile(rep.repeat_count, "number")).to_series().to_numpy()
            count = np.nan_to_num(count.astype(float), nan=0.0).clip(0, 1000).astype(int)
        else:
            count = np.ones(df.height, dtype=int)
        count = np.where(relevant, count, 0)
        parent = np.repeat(np.arange(df.height), count)
        index = np.arange(len(parent)) - np.repeat(np.cumsum(count) - count, count) + 1
        child = df[parent].with_columns(
            pl.Series("_parent_unit", df["_unit"].to_numpy()[parent]),
            pl.Series("_index", index.astype(np.int64)),
        )
        inner = [
            f
            for f in self.form.walk()
            if f.repeats and f.repeats[0] == rep.name and not f.is_container and f.type != "note"
        ]
        self.scope = rep.name
        for f in inner:
            child = self.generate_field(child, f)
        self.scope = ""
        return child.select("_parent_unit", "_index", *[f.name for f in inner])

    def _check_deferrable(self, f: Field, t: Target) -> None:
        """A figure calibrated after the whole form is generated must not change which
        questions are asked or what they allow."""
        for other in self.form.fields.values():
            for ex in (other.relevant, other.constraint, other.choice_filter):
                if ex is not None and f.name in ex.refs:
                    raise SimulationError(
                        f"figure {t.indicator}: its domain ({t.domain.source if t.domain else ''})"
                        f" is asked after {f.name!r}, and {other.name!r} depends on {f.name!r}; "
                        "the simulator cannot calibrate it"
                    )


def _join_ticks(ticks: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Rows of 0/1 ticks as space-separated codes, in choice order (vectorised): each
    distinct combination is joined once, and rows share its string."""
    if ticks.shape[0] == 0:
        return np.array([], dtype=object)
    ticks = np.asarray(ticks, dtype=bool)
    if ticks.shape[1] <= 62:  # a combination as one integer
        bits = np.int64(1) << np.arange(ticks.shape[1], dtype=np.int64)
        _, first, inverse = np.unique(ticks @ bits, return_index=True, return_inverse=True)
        combos = ticks[first]
    else:  # pragma: no cover - a choice list longer than 62
        combos, inverse = np.unique(ticks, axis=0, return_inverse=True)
    frame = pl.DataFrame({f"c{i}": combos[:, i] for i in range(len(codes))})
    parts = [pl.when(pl.col(f"c{i}")).then(pl.lit(str(c))) for i, c in enumerate(codes)]
    joined = frame.select(pl.concat_str(parts, separator=" ", ignore_nulls=True)).to_series()
    return np.asarray(np.array(joined.to_list(), dtype=object)[np.asarray(inverse).reshape(-1)])


#: frames from which a costly expression of one text column is evaluated per distinct value
DISTINCT_MIN_ROWS = 20_000
_COSTLY_OPS = frozenset({"<", "<=", ">", ">=", "+", "-", "*", "div", "mod"})


def _costly_on_text(df: pl.DataFrame, ex: Expression) -> bool:
    """Whether the expression reads one String column and does more than compare it to a
    text (a function, or an order or arithmetic that converts the text to a number)."""
    if len(ex.refs) != 1 or df.schema.get(next(iter(ex.refs))) != pl.String:
        return False

    def costly(n: Node) -> bool:
        if n.kind == "call" or (n.kind == "bin" and n.value in _COSTLY_OPS):
            return True
        return any(costly(a) for a in n.args)

    return costly(ex.tree)


def _column(f: Field, values: np.ndarray) -> pl.Series:
    """A field's answers as its population column: Int64 for integers, Float64 for decimals
    (NaN is blank), String otherwise (None is blank)."""
    if f.type in ("integer", "decimal"):
        col = pl.Series(f.name, np.asarray(values, dtype=float)).fill_nan(None)
        return col.cast(pl.Int64) if f.type == "integer" else col
    return pl.Series(f.name, np.asarray(values, dtype=object).tolist(), dtype=pl.String)


def _largest_remainder(p: np.ndarray, n: int) -> np.ndarray:
    """Counts summing to n with shares as close to p as integers allow."""
    raw = p * n
    counts = np.floor(raw).astype(int)
    short = n - counts.sum()
    if short > 0:
        counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    return np.asarray(counts, dtype=int)


def _stable_hash(text: str) -> int:
    h = 2166136261
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 16777619) % 2**32
    return h


def build_population(study: Study, group: str, seed: int) -> Population:
    """The synthetic population of one group, calibrated to the study's figures."""
    return _Builder(study, group, seed).build()
