"""The impact model of model.toml, evaluated over Monte Carlo draws of all its inputs at once.

`run_model(study, estimates, preset=...) -> ModelRun`. Inputs are drawn jointly and seeded:
survey estimates (``est.<indicator>``) from the multivariate normal of `Estimates` (point
estimates and their covariance, in model scale: a proportion is a fraction), parameters
(``param.<name>``) from their priors or fixed by the preset, frames (``frame.<key>``) and history
(``hist.<series>.<year>``) as constants. Every quantity is a Polars expression over the table of
draws (one row per draw), compiled once from its formula: no per-draw Python. A one-at-a-time
sensitivity (tornado) moves each uncertain input from its 5% to its 95% quantile with the others
at their central values.
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
from numpy.typing import NDArray

from impactstudy.forms import parse
from impactstudy.forms.vector import to_polars
from impactstudy.impact import io as iot
from impactstudy.study import Study
from impactstudy.study.schema import ModelFile, Prior

__all__ = [
    "IODraws",
    "ModelError",
    "ModelRun",
    "audit_outputs",
    "draw_prior",
    "io_draws",
    "run_model",
    "run_presets",
]

FloatArray = npt.NDArray[np.float64]

#: quantiles reported for every quantity (the 5-95% interval and the median)
LOW, HIGH = 0.05, 0.95


#: column types of summary.csv that a CSV cannot carry when a column is empty
_SUMMARY_TYPES: dict[str, pl.DataType] = {
    "headline": pl.Boolean(),
    "published": pl.Float64(),
    "published_inside": pl.Boolean(),
}


class ModelError(ValueError):
    """A model that cannot run on the estimates given (an input missing, a covariance unusable)."""


@dataclass
class ModelRun:
    """One preset's run: the draws (inputs and quantities), their summary, the tornado."""

    preset: str
    seed: int
    draws: pl.DataFrame
    summary: pl.DataFrame
    sensitivity: pl.DataFrame
    provenance: dict[str, object] = field(default_factory=dict)

    def quantity(self, name: str) -> FloatArray:
        """The draws of one quantity."""
        out: FloatArray = self.draws.get_column(name).to_numpy()
        return out

    def write(self, path: Path | str) -> Path:
        """``summary.csv``, ``sensitivity.csv``, ``draws.parquet`` and ``model.json`` in the
        folder ``path``."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self.summary.write_csv(root / "summary.csv")
        self.sensitivity.write_csv(root / "sensitivity.csv")
        self.draws.write_parquet(root / "draws.parquet")
        meta = {"preset": self.preset, "seed": self.seed, **self.provenance}
        (root / "model.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return root

    @classmethod
    def read(cls, path: Path | str) -> ModelRun:
        """Read the folder `write` wrote."""
        root = Path(path)
        for name in ("summary.csv", "sensitivity.csv", "draws.parquet", "model.json"):
            if not (root / name).is_file():
                raise ModelError(f"{root}: no {name} (not a model run folder)")
        meta = json.loads((root / "model.json").read_text())
        preset, seed = str(meta.pop("preset")), int(meta.pop("seed"))
        return cls(
            preset,
            seed,
            pl.read_parquet(root / "draws.parquet"),
            pl.read_csv(root / "summary.csv", schema_overrides=_SUMMARY_TYPES),
            pl.read_csv(root / "sensitivity.csv"),
            meta,
        )


def _model(study: Study) -> ModelFile:
    if study.model is None:
        raise ModelError(f"study {study.id!r} has no model.toml")
    return study.model


def _stream(seed: int, name: str) -> np.random.Generator:
    """One generator per input, keyed by its name: adding an input leaves the others' draws."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def draw_prior(prior: Prior, size: int, rng: np.random.Generator) -> FloatArray:
    """``size`` draws from a prior of model.toml."""
    d = prior.dist
    if d == "fixed":
        return np.full(size, float(prior.value or 0.0))
    if d == "beta":
        return rng.beta(float(prior.a or 0.0), float(prior.b or 0.0), size)
    if d == "uniform":
        return rng.uniform(float(prior.low or 0.0), float(prior.high or 0.0), size)
    if d == "triangular":
        return rng.triangular(
            float(prior.low or 0.0), float(prior.mode or 0.0), float(prior.high or 0.0), size
        )
    if d == "normal":
        return rng.normal(float(prior.mean or 0.0), float(prior.sd or 0.0), size)
    return rng.lognormal(float(prior.meanlog or 0.0), float(prior.sdlog or 0.0), size)


def _order(model: ModelFile) -> list[str]:
    """Quantities and IO jobs (``io.<name>``) in an order where each comes after what it reads
    (the loader has refused cycles)."""
    jobs = model.io.jobs if model.io is not None else {}
    deps: dict[str, set[str]] = {}
    for name, q in model.quantity.items():
        names = parse(q.formula, bare_names="model").bare_names
        deps[name] = {b for b in names if b in model.quantity}
        deps[name] |= {f"io.{b[3:].removesuffix('_induced')}" for b in names if b.startswith("io.")}
    for jname, job in jobs.items():
        deps[f"io.{jname}"] = {job.input}
    done: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for d in sorted(deps.get(name, ())):
            visit(d)
        done.append(name)

    for name in deps:
        visit(name)
    return done


def _inputs(model: ModelFile) -> list[str]:
    names: set[str] = set()
    for q in model.quantity.values():
        names |= {b for b in parse(q.formula, bare_names="model").bare_names}
    return sorted(n for n in names if n not in model.quantity and not n.startswith("io."))


class _Estimates:
    """What the model reads of `impactstudy.estimate.Estimates`, in model scale."""

    def __init__(self, estimates: object, study: Study) -> None:
        table = getattr(estimates, "table", None)
        ids = getattr(estimates, "ids", None)
        cov = getattr(estimates, "covariance", None)
        if not isinstance(table, pl.DataFrame) or ids is None or cov is None:
            raise ModelError("estimates must be an impactstudy.estimate.Estimates")
        overall = table.filter(pl.col("by").is_null())
        value = dict(zip(overall["indicator"], overall["estimate"], strict=True))
        self.ids: list[str] = list(ids)
        self.cov: FloatArray = np.asarray(cov, dtype=np.float64)
        # a proportion is a fraction in formulas; the table shows % proportions in percent
        scale = []
        for i in self.ids:
            spec = study.indicators[i].spec if i in study.indicators else None
            pct = spec is not None and spec.statistic == "proportion" and spec.unit == "%"
            scale.append(0.01 if pct else 1.0)
        self.scale = np.asarray(scale)
        self.value = {i: float(value[i]) * s for i, s in zip(self.ids, scale, strict=True)}

    def draws(self, wanted: Sequence[str], size: int, seed: int) -> dict[str, FloatArray]:
        missing = [w for w in wanted if w not in self.value]
        if missing:
            raise ModelError(f"the estimates have no overall value for {missing}")
        if not wanted:
            return {}
        pos = [self.ids.index(w) for w in wanted]
        mean = np.array([self.value[w] for w in wanted])
        s = self.scale[pos]
        cov = self.cov[np.ix_(pos, pos)] * np.outer(s, s)
        # eigen-decomposition: the covariance can be singular (indicators that are the same
        # column), never negative beyond rounding
        vals, vecs = np.linalg.eigh(cov)
        if vals.min(initial=0.0) < -1e-8 * max(vals.max(initial=0.0), 1e-300):
            raise ModelError("the estimates' covariance is not positive semi-definite")
        root = vecs * np.sqrt(np.clip(vals, 0.0, None))[None, :]
        z = _stream(seed, "est").standard_normal((size, len(wanted)))
        x = mean[None, :] + z @ root.T
        return {f"est.{w}": x[:, j] for j, w in enumerate(wanted)}


def _constant(study: Study, name: str) -> float:
    space, _, rest = name.partition(".")
    if space == "frame":
        return float(study.frames.value(rest))
    if space == "hist":
        series, _, year = rest.rpartition(".")
        for h in study.history:
            if h.series == series and str(h.year) == year:
                return float(h.value)
    raise ModelError(f"no value for {name!r}")


def _evaluate(
    model: ModelFile, order: list[str], frame: pl.DataFrame, io: _IOJobs | None
) -> pl.DataFrame:
    """Every quantity (and IO job) as a column of ``frame`` (one row per draw or scenario)."""
    for name in order:
        if name.startswith("io."):
            assert io is not None
            frame = frame.with_columns(io.columns(name[3:], frame))
            continue
        ex = parse(model.quantity[name].formula, bare_names="model").bare_as_refs()
        kinds = {r: "number" for r in ex.refs}
        frame = frame.with_columns(
            to_polars(ex, kinds, result="number").cast(pl.Float64).alias(name)  # type: ignore[arg-type]
        )
    return frame


class _IOJobs:
    """The IO jobs of model.toml: per draw, jobs per unit of each split sector's output (or
    spending), from the Dirichlet-perturbed table (`impactstudy.impact.io`); the central row uses
    the table as published. Type II induced jobs use the published table."""

    def __init__(
        self,
        model: ModelFile,
        size: int,
        seed: int,
        central: bool,
        ahead: IODraws | None = None,
    ) -> None:
        spec = model.io
        assert spec is not None
        self.spec = spec
        table = _table(spec.year, spec.sectors)
        l_all = iot.employment_coefficients(table, spec.year)
        self.per_unit: dict[str, FloatArray] = {}  # job -> (rows, k) jobs per 万元 of f_j
        self.induced: dict[str, FloatArray] = {}
        self.scale: dict[str, FloatArray] = {}  # job -> (k,) 万元 of f_j per unit of input
        key = _io_key(model, size, seed)
        all_excluded = key[-1]
        if ahead is not None and ahead.key != key:
            raise ModelError(
                f"the input-output draws given were made for {ahead.key}, this run needs {key}"
            )
        for name, job in spec.jobs.items():
            where = f"io.jobs.{name}"
            cols = _positions(table, list(job.split), f"{where}.split")
            excluded = _positions(table, job.exclude, f"{where}.exclude")
            keep = np.ones(table.n)
            keep[excluded] = 0.0
            unit = np.zeros((len(cols), table.n))
            unit[np.arange(len(cols)), cols] = 1.0
            if central:
                m = ((keep * l_all) @ (table.L - np.eye(table.n)))[cols][None, :]
            else:
                rows = ahead.rows if ahead is not None else _io_rows(*key)
                at = [all_excluded.index(int(e)) + 1 for e in excluded]
                # lk′L_r = l′L_r − Σ_e l_e e_e′L_r, then minus lk (the direct part)
                lkl = rows[:, 0, :] - np.einsum("e,ren->rn", l_all[excluded], rows[:, at, :])
                m = (lkl - (keep * l_all)[None, :])[:, cols]
            shares = np.array(list(job.split.values()))
            if job.kind == "indirect":  # route A: f_j = D share_j / l_j (万元)
                self.scale[name] = shares / l_all[cols]
                self.per_unit[name] = m
            else:  # spending in yuan: f_j = C share_j / 1e4 (万元); jobs l'L f
                self.scale[name] = shares / 1e4
                self.per_unit[name] = m + (keep * l_all)[cols][None, :]
            if job.induced:
                l2 = iot.type2_leontief(table)
                self.induced[name] = ((keep * l_all) @ (l2 - table.L))[cols]

    def columns(self, name: str, frame: pl.DataFrame) -> list[pl.Series]:
        job = self.spec.jobs[name]
        x = frame.get_column(job.input).to_numpy()
        f = x[:, None] * self.scale[name][None, :]  # rows x k, 万元
        per_unit = self.per_unit[name]
        rows = per_unit if per_unit.shape[0] == len(x) else np.broadcast_to(per_unit, f.shape)
        out = [pl.Series(f"io.{name}", (rows * f).sum(axis=1))]
        if name in self.induced:
            out.append(pl.Series(f"io.{name}_induced", f @ self.induced[name]))
        return out


@functools.lru_cache(maxsize=4)
def _table(year: int, sectors: int) -> iot.IOTable:
    return iot.load_table(year, sectors)


def _positions(table: iot.IOTable, codes: list[str], key: str) -> NDArray[np.intp]:
    known = set(table.codes)
    unknown = [c for c in codes if c not in known]
    if unknown:
        raise ModelError(f"model.toml {key}: sectors {unknown} are not in the {table.source} table")
    return table.index(codes) if codes else np.zeros(0, dtype=np.intp)


IOKey = tuple[int, int, float, int, int, tuple[int, ...]]


@dataclass(frozen=True)
class IODraws:
    """The perturbed input-output table's rows a run reads (``l′L_r`` and ``e_e′L_r`` per draw
    ``r``), made apart from the survey estimates, which they do not depend on: `io_draws` can
    run ahead, e.g. in another process, and `run_presets` takes them (``key``: table year,
    sectors, Dirichlet alpha, draws, seed, excluded sectors)."""

    key: IOKey
    rows: FloatArray


def io_draws(study: Study, *, draws: int | None = None, seed: int | None = None) -> IODraws | None:
    """The input-output draws `run_model` would make for ``study`` with ``draws`` and ``seed``
    (defaults from ``[model]``); None for a model without ``[io]`` jobs."""
    model = _model(study)
    if model.io is None:
        return None
    key = _io_key(model, draws or model.model.draws, model.model.seed if seed is None else seed)
    return IODraws(key, _io_rows(*key))


def _io_key(model: ModelFile, size: int, seed: int) -> IOKey:
    spec = model.io
    assert spec is not None
    table = _table(spec.year, spec.sectors)
    excluded = {
        int(e)
        for name, job in spec.jobs.items()
        for e in _positions(table, job.exclude, f"io.jobs.{name}.exclude")
    }
    return (spec.year, spec.sectors, spec.alpha, size, seed, tuple(sorted(excluded)))


@functools.lru_cache(maxsize=4)
def _io_rows(
    year: int, sectors: int, alpha: float, size: int, seed: int, excluded: tuple[int, ...]
) -> FloatArray:
    """Per draw, ``l′L_r`` and ``e_e′L_r`` for every sector ``e`` any job excludes: (draws, 1 + E,
    n), from one batched solve; computed once per run and shared by the presets."""
    table = _table(year, sectors)
    l_all = iot.employment_coefficients(table, year)
    rows = np.vstack([l_all[None, :], np.eye(table.n)[list(excluded)]])
    out: FloatArray = iot.leontief_rows_draws(table.A, rows, alpha=alpha, draws=size, seed=seed)
    return out


def run_model(
    study: Study,
    estimates: object,
    *,
    preset: str | None = None,
    draws: int | None = None,
    seed: int | None = None,
    io: IODraws | None = None,
) -> ModelRun:
    """Run model.toml over ``draws`` joint draws of its inputs (defaults from ``[model]``);
    ``io``: the input-output draws made ahead by `io_draws` (else made here)."""
    model = _model(study)
    preset = preset or model.model.default_preset
    if preset not in model.model.presets:
        raise ModelError(f"unknown preset {preset!r}; model.toml declares {model.model.presets}")
    size = draws or model.model.draws
    seed = model.model.seed if seed is None else seed
    est = _Estimates(estimates, study)
    inputs = _inputs(model)
    est_ids = [n.split(".", 1)[1] for n in inputs if n.startswith("est.")]
    columns: dict[str, FloatArray] = dict(est.draws(est_ids, size, seed))
    central: dict[str, float] = {f"est.{i}": est.value[i] for i in est_ids}
    varied: list[str] = [f"est.{i}" for i in est_ids]
    for name in inputs:
        space, _, rest = name.partition(".")
        if space == "param":
            param = model.param[rest]
            if preset in param.presets:
                columns[name] = np.full(size, float(param.presets[preset]))
                central[name] = float(param.presets[preset])
            else:
                columns[name] = draw_prior(param.prior, size, _stream(seed, name))
                central[name] = float(np.median(columns[name]))
                if param.prior.dist != "fixed":
                    varied.append(name)
        elif space in ("frame", "hist"):
            value = _constant(study, name)
            columns[name] = np.full(size, value)
            central[name] = value
    order = _order(model)
    jobs = _IOJobs(model, size, seed, central=False, ahead=io) if model.io is not None else None
    io_central = _IOJobs(model, 1, seed, central=True) if model.io is not None else None
    table = _evaluate(model, order, pl.DataFrame(columns), jobs)
    scenarios = _scenarios(central, varied, columns)
    evaluated = _evaluate(model, order, scenarios.drop("input", "side"), io_central)
    return ModelRun(
        preset,
        seed,
        table,
        _summary(study, model, order, table, evaluated.row(0, named=True)),
        _tornado(model, order, scenarios, evaluated),
        {"draws": size, "inputs": inputs, "varied": varied},
    )


def run_presets(
    study: Study,
    estimates: object,
    *,
    draws: int | None = None,
    seed: int | None = None,
    io: IODraws | None = None,
) -> dict[str, ModelRun]:
    """Every preset of model.toml (caict and net for the WeChat study), same draws of the inputs
    that no preset fixes; ``io`` as in `run_model`."""
    model = _model(study)
    return {
        p: run_model(study, estimates, preset=p, draws=draws, seed=seed, io=io)
        for p in model.model.presets
    }


def _scenarios(
    central: Mapping[str, float], varied: Sequence[str], columns: Mapping[str, FloatArray]
) -> pl.DataFrame:
    """Row 0: every input central; then, per varied input, its 5% and 95% quantile."""
    names = list(central)
    rows = [dict(central)]
    labels: list[tuple[str | None, str | None]] = [(None, None)]
    for v in varied:
        lo, hi = np.quantile(columns[v], [LOW, HIGH])
        rows += [{**central, v: float(lo)}, {**central, v: float(hi)}]
        labels += [(v, "low"), (v, "high")]
    frame = pl.DataFrame(rows, schema={n: pl.Float64 for n in names})
    return frame.with_columns(
        pl.Series("input", [a for a, _ in labels], dtype=pl.String),
        pl.Series("side", [b for _, b in labels], dtype=pl.String),
    )


def _summary(
    study: Study,
    model: ModelFile,
    order: list[str],
    table: pl.DataFrame,
    central: Mapping[str, float],
) -> pl.DataFrame:
    lang = study.config.study.default_language
    rows = []
    for name in order:
        if name.startswith("io."):
            continue
        q = model.quantity[name]
        x = table.get_column(name).to_numpy()
        p05, p50, p95 = (float(v) for v in np.quantile(x, [LOW, 0.5, HIGH]))
        published = (
            _constant(study, q.published)
            if isinstance(q.published, str)
            else None
            if q.published is None
            else float(q.published)
        )
        rows.append(
            {
                "quantity": name,
                "label": q.label.get(lang, name),
                "unit": q.unit,
                "headline": q.headline,
                "central": float(central[name]),
                "median": p50,
                "p05": p05,
                "p95": p95,
                "mean": float(x.mean()),
                "sd": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
                "published": published,
                "published_inside": None if published is None else p05 <= published <= p95,
                "formula": q.formula,
            }
        )
    return pl.DataFrame(rows)


def _tornado(
    model: ModelFile, order: list[str], scenarios: pl.DataFrame, evaluated: pl.DataFrame
) -> pl.DataFrame:
    """Per headline quantity and varied input: the quantity at the input's 5% and 95%."""
    heads = [q for q in order if q in model.quantity and model.quantity[q].headline]
    base = evaluated.row(0, named=True)
    labelled = evaluated.with_columns(scenarios.select("input", "side"))
    rows = []
    for inp in scenarios.get_column("input").drop_nulls().unique(maintain_order=True).to_list():
        part = labelled.filter(pl.col("input") == inp)
        low = part.filter(pl.col("side") == "low").row(0, named=True)
        high = part.filter(pl.col("side") == "high").row(0, named=True)
        for q in heads:
            rows.append(
                {
                    "quantity": q,
                    "input": inp,
                    "input_low": float(low[inp]),
                    "input_high": float(high[inp]),
                    "central": float(base[q]),
                    "at_low": float(low[q]),
                    "at_high": float(high[q]),
                    "swing": abs(float(high[q]) - float(low[q])),
                }
            )
    out = pl.DataFrame(
        rows,
        schema={
            "quantity": pl.String,
            "input": pl.String,
            "input_low": pl.Float64,
            "input_high": pl.Float64,
            "central": pl.Float64,
            "at_low": pl.Float64,
            "at_high": pl.Float64,
            "swing": pl.Float64,
        },
    )
    return out.sort(["quantity", "swing"], descending=[False, True])


def audit_outputs(
    run: ModelRun,
    study: Study,
    figures: pl.DataFrame | None = None,
    rules: object = None,
) -> pl.DataFrame:
    """The consistency audit on the model's own outputs: the published figures table with every
    figure a quantity stands for (``figures`` in model.toml) replaced by the quantity's median
    under ``run``'s preset, in the figure's unit and printed to the same number of decimals (so
    that both tables are judged with the same rounding)."""
    from impactstudy.impact.audit import audit, bundled_figures, read_figures
    from impactstudy.study.units import parse_unit

    table = figures if figures is not None else read_figures(bundled_figures())
    model = _model(study)
    median = dict(zip(run.summary["quantity"], run.summary["median"], strict=True))
    printed = dict(
        zip(table["id"].to_list(), table["value"].cast(pl.String).to_list(), strict=True)
    )
    units = dict(zip(table["id"].to_list(), table["unit"].to_list(), strict=True))
    ours: dict[str, str] = {}
    for name, q in model.quantity.items():
        for fid in q.figures:
            if fid not in units:
                raise ModelError(f"quantity {name!r}: figure {fid!r} is not in the figures table")
            unit = str(units[fid] or "")
            value = median[name]
            value = 100 * value if unit == "%" else value / parse_unit(unit).scale
            text = str(printed[fid] or "")
            decimals = len(text.split(".", 1)[1]) if "." in text else 0
            ours[fid] = f"{value:.{decimals}f}"
    replaced = table.with_columns(
        pl.when(pl.col("id").is_in(list(ours)))
        .then(pl.col("id").replace_strict(ours, default=None, return_dtype=pl.String))
        .otherwise(pl.col("value").cast(pl.String))
        .alias("value")
    )
    return audit(replaced, rules, source="model outputs")  # type: ignore[arg-type]
