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

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from impactstudy.forms import parse
from impactstudy.forms.vector import to_polars
from impactstudy.study import Study
from impactstudy.study.schema import ModelFile, Prior

__all__ = ["ModelError", "ModelRun", "draw_prior", "run_model", "run_presets"]

FloatArray = npt.NDArray[np.float64]

#: quantiles reported for every quantity (the 5-95% interval and the median)
LOW, HIGH = 0.05, 0.95


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
    """Quantities in an order where each comes after those its formula names (the loader has
    refused cycles)."""
    deps = {
        name: {b for b in parse(q.formula, bare_names="model").bare_names if b in model.quantity}
        for name, q in model.quantity.items()
    }
    done: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for d in sorted(deps[name]):
            visit(d)
        done.append(name)

    for name in model.quantity:
        visit(name)
    return done


def _inputs(model: ModelFile) -> list[str]:
    names: set[str] = set()
    for q in model.quantity.values():
        names |= {b for b in parse(q.formula, bare_names="model").bare_names}
    return sorted(n for n in names if n not in model.quantity)


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


def _evaluate(model: ModelFile, order: list[str], frame: pl.DataFrame) -> pl.DataFrame:
    """Every quantity as a column of ``frame`` (one row per draw or scenario)."""
    for name in order:
        ex = parse(model.quantity[name].formula, bare_names="model").bare_as_refs()
        kinds = {r: "number" for r in ex.refs}
        frame = frame.with_columns(
            to_polars(ex, kinds, result="number").cast(pl.Float64).alias(name)  # type: ignore[arg-type]
        )
    return frame


def run_model(
    study: Study,
    estimates: object,
    *,
    preset: str | None = None,
    draws: int | None = None,
    seed: int | None = None,
) -> ModelRun:
    """Run model.toml over ``draws`` joint draws of its inputs (defaults from ``[model]``)."""
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
    table = _evaluate(model, order, pl.DataFrame(columns))
    scenarios = _scenarios(central, varied, columns)
    evaluated = _evaluate(model, order, scenarios.drop("input", "side"))
    return ModelRun(
        preset,
        seed,
        table,
        _summary(study, model, order, table, evaluated.row(0, named=True)),
        _tornado(model, order, scenarios, evaluated),
        {"draws": size, "inputs": inputs, "varied": varied},
    )


def run_presets(
    study: Study, estimates: object, *, draws: int | None = None, seed: int | None = None
) -> dict[str, ModelRun]:
    """Every preset of model.toml (caict and net for the WeChat study), same draws of the inputs
    that no preset fixes."""
    model = _model(study)
    return {
        p: run_model(study, estimates, preset=p, draws=draws, seed=seed)
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
    central: Mapping[str, object],
) -> pl.DataFrame:
    lang = study.config.study.default_language
    rows = []
    for name in order:
        q = model.quantity[name]
        x = table.get_column(name).to_numpy()
        p05, p50, p95 = (float(v) for v in np.quantile(x, [LOW, 0.5, HIGH]))
        rows.append(
            {
                "quantity": name,
                "label": q.label.get(lang, name),
                "unit": q.unit,
                "headline": q.headline,
                "central": float(central[name]),  # type: ignore[arg-type]
                "median": p50,
                "p05": p05,
                "p95": p95,
                "mean": float(x.mean()),
                "sd": float(x.std(ddof=1)) if len(x) > 1 else 0.0,
                "formula": q.formula,
            }
        )
    return pl.DataFrame(rows)


def _tornado(
    model: ModelFile, order: list[str], scenarios: pl.DataFrame, evaluated: pl.DataFrame
) -> pl.DataFrame:
    """Per headline quantity and varied input: the quantity at the input's 5% and 95%."""
    heads = [q for q in order if model.quantity[q].headline]
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
