"""Every indicator of a study in one pass per group: `estimate_all(weighted, study) -> Estimates`.

The estimation stage's public entry in the pipeline. Per group, all indicator expressions (value,
denominator, domain) are evaluated at once with Polars into an (n x K) matrix; every estimate is a
linear form or a ratio of linear forms of the weights, so the K estimates, their linearised scores
and, through `variance`, their Taylor (or replicate) variances come from a few matrix products and
one variance call per group. Groups are independent samples: an indicator over several groups is
the ratio of sums over them and its variance the sum of the groups' variances. Domains (an
indicator's own ``domain`` and every breakdown level) zero the weights outside them and keep the
full design, never a filtered subset.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import numpy.typing as npt
import polars as pl

from impactstudy.forms.vector import column_kinds, to_polars
from impactstudy.study import Indicator, Study

from .design import Design, DesignError
from .quantile import quantile as _quantile
from .variance import svyreccov, variance

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ESTIMATES_SCHEMA", "Estimates", "estimate_all"]

FloatArray = npt.NDArray[np.float64]
Interval = Literal["wald", "logit", "wilson"]

ESTIMATES_SCHEMA: dict[str, pl.DataType] = {
    "indicator": pl.String(),
    "groups": pl.String(),
    "statistic": pl.String(),
    "unit": pl.String(),
    "by": pl.String(),
    "domain": pl.String(),
    "estimate": pl.Float64(),
    "se": pl.Float64(),
    "ci_low": pl.Float64(),
    "ci_high": pl.Float64(),
    "ci_method": pl.String(),
    "method": pl.String(),
    "n": pl.Int64(),
    "n_eff": pl.Float64(),
    "deff": pl.Float64(),
    "label": pl.String(),
    "expression": pl.String(),
    "domain_expression": pl.String(),
    "question": pl.String(),
    "quality_steps": pl.String(),
    "weighting_steps": pl.String(),
    "published_value": pl.Float64(),
    "published_text": pl.String(),
    "relation": pl.String(),
}


class _Weighted(Protocol):
    """What `estimate_all` reads of `impactstudy.weighting.WeightedSample`."""

    study_id: str
    quality_steps: tuple[str, ...]

    @property
    def groups(self) -> Mapping[str, _WeightedGroup]: ...


class _WeightedGroup(Protocol):
    design: Design
    steps: tuple[str, ...]


@dataclass
class Estimates:
    """Every indicator's estimate (overall and by each breakdown), with SE, interval, n, n_eff,
    deff and provenance; and the covariance of the overall estimates for joint draws."""

    table: pl.DataFrame
    #: ids of the overall estimates, in the order of `covariance`'s rows and columns
    ids: list[str]
    #: covariance of the overall estimates (presentation units), groups independent
    covariance: FloatArray
    provenance: dict[str, object] = field(default_factory=dict)

    def overall(self) -> pl.DataFrame:
        """The rows without a breakdown: one per indicator."""
        return self.table.filter(pl.col("by").is_null())

    def write(self, path: Path | str) -> Path:
        """``estimates.parquet`` and ``estimates.csv``, ``covariance.parquet`` (ids as columns) and
        ``estimates.json`` in the folder ``path``."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        self.table.write_parquet(root / "estimates.parquet")
        self.table.write_csv(root / "estimates.csv")
        pl.DataFrame(self.covariance, schema=self.ids, orient="row").write_parquet(
            root / "covariance.parquet"
        )
        (root / "estimates.json").write_text(
            json.dumps(self.provenance, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        return root

    @classmethod
    def read(cls, path: Path | str) -> Estimates:
        """Read the folder `write` wrote."""
        root = Path(path)
        for name in ("estimates.parquet", "covariance.parquet", "estimates.json"):
            if not (root / name).is_file():
                raise FileNotFoundError(f"{root}: no {name} (not an estimates folder)")
        table = pl.read_parquet(root / "estimates.parquet")
        cov = pl.read_parquet(root / "covariance.parquet")
        provenance = json.loads((root / "estimates.json").read_text(encoding="utf-8"))
        return cls(table, list(cov.columns), cov.to_numpy().astype(np.float64), provenance)


@dataclass
class _Column:
    """One estimate: an indicator in a domain."""

    indicator: Indicator
    by: str | None
    level: str | None


def _z(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2)


def _interval(
    est: FloatArray,
    se: FloatArray,
    n_eff: FloatArray,
    is_prop: npt.NDArray[np.bool_],
    method: Interval,
    level: float,
) -> tuple[FloatArray, FloatArray]:
    """Wald intervals, or for proportions (as fractions) logit (R's ``svyciprop(method="logit")``
    with a normal quantile) or Wilson on the effective sample size."""
    z = _z(level)
    lo, hi = est - z * se, est + z * se
    if method == "wald":
        return lo, hi
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "logit":
            p = np.clip(est, 1e-300, 1 - 1e-16)
            eta = np.log(p / (1 - p))
            se_eta = se / (p * (1 - p))
            plo = 1 / (1 + np.exp(-(eta - z * se_eta)))
            phi = 1 / (1 + np.exp(-(eta + z * se_eta)))
        else:
            n = n_eff
            centre = (est + z * z / (2 * n)) / (1 + z * z / n)
            half = z / (1 + z * z / n) * np.sqrt(est * (1 - est) / n + z * z / (4 * n * n))
            plo, phi = centre - half, centre + half
    ok = is_prop & np.isfinite(plo) & np.isfinite(phi)
    return np.where(ok, plo, lo), np.where(ok, phi, hi)


def _group_matrices(
    study: Study, gid: str, design: Design, columns: Sequence[_Column]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per estimate (column): value y, denominator x (1 for means, d for ratios, 0 for totals:
    unused), and the row filter (in domain and observed), each n x K."""
    form = study.groups[gid].form
    data = design.data
    kinds = column_kinds(form, data)
    today = study.config.fieldwork.start
    exprs: dict[str, pl.Expr] = {}
    indicators = {c.indicator.id: c.indicator for c in columns}
    for ind in indicators.values():
        kind = "boolean" if ind.spec.statistic == "proportion" else "number"
        exprs[f"y:{ind.id}"] = to_polars(ind.expression, kinds, today=today, result=kind)  # type: ignore[arg-type]
        if ind.denominator is not None:
            exprs[f"d:{ind.id}"] = to_polars(ind.denominator, kinds, today=today, result="number")
        if ind.domain is not None:
            dom = to_polars(ind.domain, kinds, today=today, result="boolean")
            exprs[f"in:{ind.id}"] = dom.fill_null(False)
    values = data.select([e.alias(k) for k, e in exprs.items()])
    n = data.height
    base: dict[str, tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]] = {}
    for ind in indicators.values():
        s = values.get_column(f"y:{ind.id}")
        if ind.spec.statistic == "proportion":
            y = s.cast(pl.Float64).fill_null(0.0).to_numpy()
            ok = np.ones(n, dtype=bool)
        else:
            yv = s.cast(pl.Float64)
            ok = ~(yv.is_null() | yv.is_nan()).fill_null(True).to_numpy()
            y = yv.fill_null(0.0).fill_nan(0.0).to_numpy()
        x = np.ones(n)
        if ind.denominator is not None:
            dv = values.get_column(f"d:{ind.id}").cast(pl.Float64)
            ok = ok & ~(dv.is_null() | dv.is_nan()).fill_null(True).to_numpy()
            x = dv.fill_null(0.0).fill_nan(0.0).to_numpy()
        if ind.domain is not None:
            ok = ok & values.get_column(f"in:{ind.id}").to_numpy().astype(bool)
        base[ind.id] = (y, x, ok)
    by_values: dict[str, npt.NDArray[np.str_]] = {}
    for col in columns:
        if col.by is not None and col.by not in by_values:
            if col.by not in data.columns:
                raise DesignError(f"group {gid!r} has no column {col.by!r} to break down by")
            by_values[col.by] = data.get_column(col.by).cast(pl.String).to_numpy().astype(str)
    order = list(base)
    at = {ind_id: j for j, ind_id in enumerate(order)}
    idx = np.array([at[c.indicator.id] for c in columns], dtype=np.intp)
    ys = np.column_stack([base[i][0] for i in order])[:, idx]
    xs = np.column_stack([base[i][1] for i in order])[:, idx]
    keep = np.column_stack([base[i][2] for i in order]).astype(np.float64)[:, idx]
    for b, labels in by_values.items():
        where = np.array([j for j, c in enumerate(columns) if c.by == b], dtype=np.intp)
        names, codes = np.unique(labels, return_inverse=True)
        code_of = {str(v): k for k, v in enumerate(names)}
        wanted = np.array([code_of.get(str(columns[j].level), -1) for j in where])
        keep[:, where] *= codes.reshape(-1)[:, None] == wanted[None, :]
    return ys, xs, keep


def _steps(group: _WeightedGroup) -> str:
    return "; ".join(group.steps)


def _question(study: Study, ind: Indicator) -> str:
    lang = study.config.study.default_language
    texts: list[str] = []
    for gid in ind.groups:
        form = study.groups[gid].form
        refs = set(ind.expression.refs)
        if ind.denominator is not None:
            refs |= ind.denominator.refs
        for name in sorted(refs):
            f = form.fields.get(name)
            if f is None:
                continue
            if f.labels:
                text = f"{gid}.{name}: {f.labels.get(lang) or next(iter(f.labels.values()))}"
            elif f.calculation is not None:
                text = f"{gid}.{name} = {f.calculation.source}"
            else:
                text = f"{gid}.{name}"
            if text not in texts:
                texts.append(text)
    return " | ".join(texts)


def estimate_all(
    weighted: _Weighted,
    study: Study,
    *,
    by: Sequence[str] = (),
    ci: Interval = "wald",
    level: float = 0.95,
) -> Estimates:
    """Every indicator of ``study`` over the weighted sample: overall and by each column in ``by``.

    Values are in the indicator's presentation unit (a proportion with unit ``%`` is in percent).
    ``ci`` chooses the interval of proportions (Wald for everything else). Quantiles use
    `quantile` (Woodruff) one at a time.
    """
    indicators = [
        ind for ind in study.indicators.values() if all(g in weighted.groups for g in ind.groups)
    ]
    linear = [i for i in indicators if i.spec.statistic != "quantile"]
    columns: list[_Column] = [_Column(i, None, None) for i in linear]
    for b in by:
        for ind in linear:
            levels: set[str] = set()
            for gid in ind.groups:
                data = weighted.groups[gid].design.data
                if b in data.columns:
                    levels |= {str(v) for v in data.get_column(b).drop_nulls().unique().to_list()}
            columns += [_Column(ind, b, lev) for lev in sorted(levels)]
    k = len(columns)
    stat = np.array([c.indicator.spec.statistic for c in columns])
    # per group: the column sums and the matrices, then the combined estimates
    parts: dict[str, tuple[npt.NDArray[np.int64], FloatArray, FloatArray, FloatArray]] = {}
    num = np.zeros(k)
    den = np.zeros(k)
    n_used = np.zeros(k, dtype=np.int64)
    for gid, group in weighted.groups.items():
        idx = np.array(
            [j for j, c in enumerate(columns) if gid in c.indicator.groups], dtype=np.int64
        )
        if len(idx) == 0:
            continue
        ys, xs, keep = _group_matrices(study, gid, group.design, [columns[j] for j in idx])
        w = group.design.weights
        wk = keep * w[:, None]
        num[idx] += (wk * ys).sum(axis=0)
        den[idx] += (wk * xs).sum(axis=0)
        n_used[idx] += (wk > 0).sum(axis=0)
        parts[gid] = (idx, ys, xs, keep)
    is_total = stat == "total"
    with np.errstate(divide="ignore", invalid="ignore"):
        est = np.where(is_total, num, num / den)
    var = np.zeros(k)
    srs = np.zeros(k)
    ov = np.array([c.by is None for c in columns])
    ov_index = np.flatnonzero(ov)
    cov = np.zeros((len(ov_index), len(ov_index)))
    pos = {int(j): i for i, j in enumerate(ov_index)}
    for gid, (idx, ys, xs, keep) in parts.items():
        design = weighted.groups[gid].design
        w = design.weights
        e = est[idx]
        tot = is_total[idx]
        scale = np.where(tot, 1.0, 1.0 / np.where(den[idx] == 0, np.nan, den[idx]))
        z = keep * w[:, None] * np.where(tot[None, :], ys, ys - e[None, :] * xs) * scale[None, :]
        z = np.nan_to_num(z)
        others_num = num[idx] - (keep * w[:, None] * ys).sum(axis=0)
        others_den = den[idx] - (keep * w[:, None] * xs).sum(axis=0)

        def point(
            weights: FloatArray,
            ys: FloatArray = ys,
            xs: FloatArray = xs,
            keep: FloatArray = keep,
            tot: npt.NDArray[np.bool_] = tot,
            on: FloatArray = others_num,
            od: FloatArray = others_den,
        ) -> FloatArray:
            a = weights.T @ (keep * ys) + on[None, :]
            b = weights.T @ (keep * xs) + od[None, :]
            with np.errstate(divide="ignore", invalid="ignore"):
                out: FloatArray = np.where(tot[None, :], a, a / b)
            return out

        var[idx] += variance(design, z, point, e)
        # the covariance of the overall estimates: the between-PSU covariance of their scores
        mine = [(i, int(j)) for i, j in enumerate(idx) if ov[j]]
        if mine and design.replicates is None:
            sub = z[:, [i for i, _ in mine]]
            cov_g = svyreccov(sub, design)
            where = [pos[j] for _, j in mine]
            cov[np.ix_(where, where)] += cov_g
        elif mine:
            rep = design.replicates
            assert rep is not None
            thetas = point(rep.weights)[:, [i for i, _ in mine]]
            centre = e[[i for i, _ in mine]] if rep.mse else thetas.mean(axis=0)
            dev = thetas - centre[None, :]
            where = [pos[j] for _, j in mine]
            cov[np.ix_(where, where)] += rep.scale * (dev * rep.rscales[:, None]).T @ dev
        # simple random sampling variance of the same n (deff denominator, R's deff="replace")
        wk = keep * w[:, None]
        sw = wk.sum(axis=0)
        nk = (wk > 0).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            centre_g = (wk * ys).sum(axis=0) / sw
            s2 = (wk * (ys - centre_g[None, :]) ** 2).sum(axis=0) / sw * nk / (nk - 1)
            srs_g = np.where(tot, s2 / nk * sw**2, s2 / nk * (sw / den[idx]) ** 2)
        srs[idx] += np.nan_to_num(srs_g)
    se = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        deff = np.where(srs > 0, var / srs, np.nan)
        n_eff = np.where(deff > 0, n_used / deff, np.nan)
    is_prop = stat == "proportion"
    lo, hi = _interval(est, se, n_eff, is_prop, ci, level)
    pct = np.array(
        [
            c.indicator.spec.statistic == "proportion" and c.indicator.spec.unit == "%"
            for c in columns
        ]
    )
    mult = np.where(pct, 100.0, 1.0)
    method = (
        "replicate"
        if any(g.design.replicates is not None for g in weighted.groups.values())
        else "taylor"
    )
    qsteps = "; ".join(weighted.quality_steps)
    rows: list[dict[str, object]] = []
    for j, c in enumerate(columns):
        ind = c.indicator
        pub = ind.spec.published
        rows.append(
            {
                "indicator": ind.id,
                "groups": ",".join(ind.groups),
                "statistic": ind.spec.statistic,
                "unit": ind.spec.unit,
                "by": c.by,
                "domain": c.level,
                "estimate": float(est[j] * mult[j]),
                "se": float(se[j] * mult[j]),
                "ci_low": float(lo[j] * mult[j]),
                "ci_high": float(hi[j] * mult[j]),
                "ci_method": ci if is_prop[j] else "wald",
                "method": method,
                "n": int(n_used[j]),
                "n_eff": None if np.isnan(n_eff[j]) else float(n_eff[j]),
                "deff": None if np.isnan(deff[j]) else float(deff[j]),
                "label": ind.spec.label.get(study.config.study.default_language)
                if isinstance(ind.spec.label, dict)
                else str(ind.spec.label),
                "expression": ind.spec.expression,
                "domain_expression": ind.spec.domain,
                "question": _question(study, ind),
                "quality_steps": qsteps,
                "weighting_steps": " | ".join(
                    f"{g}: {_steps(weighted.groups[g])}" for g in ind.groups
                ),
                "published_value": pub.value if pub else None,
                "published_text": pub.text if pub else None,
                "relation": pub.relation if pub else None,
            }
        )
    rows += _quantiles(weighted, study, [i for i in indicators if i.spec.statistic == "quantile"])
    table = pl.DataFrame(rows, schema=ESTIMATES_SCHEMA)
    m_ov = mult[ov_index]
    return Estimates(
        table,
        [columns[int(j)].indicator.id for j in ov_index],
        cov * m_ov[:, None] * m_ov[None, :],
        {"study": weighted.study_id, "method": method, "ci": ci, "level": level, "by": list(by)},
    )


def _quantiles(
    weighted: _Weighted, study: Study, indicators: Sequence[Indicator]
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for ind in indicators:
        if len(ind.groups) != 1:
            raise DesignError(
                f"indicator {ind.id!r}: a quantile over several groups is not supported"
            )
        gid = ind.groups[0]
        design = weighted.groups[gid].design
        kinds = column_kinds(study.groups[gid].form, design.data)
        today = study.config.fieldwork.start
        y = to_polars(ind.expression, kinds, today=today, result="number")
        cond = pl.lit(True)
        if ind.domain is not None:
            cond = to_polars(ind.domain, kinds, today=today, result="boolean").fill_null(False)
        data = design.data.with_columns(
            pl.when(cond).then(y.cast(pl.Float64)).otherwise(None).alias("_quantile_y")
        )
        qd = design.__class__.__new__(design.__class__)
        qd.__dict__.update(design.__dict__)
        qd.data = data
        res = _quantile(qd, "_quantile_y", ind.spec.quantile or 0.5, na_rm=True).row(0, named=True)
        pub = ind.spec.published
        rows.append(
            {
                "indicator": ind.id,
                "groups": gid,
                "statistic": "quantile",
                "unit": ind.spec.unit,
                "by": None,
                "domain": None,
                "estimate": res["estimate"],
                "se": res["se"],
                "ci_low": res["ci_low"],
                "ci_high": res["ci_high"],
                "ci_method": "woodruff",
                "method": "taylor",
                "n": res["n"],
                "n_eff": None,
                "deff": None,
                "label": str(ind.spec.label),
                "expression": ind.spec.expression,
                "domain_expression": ind.spec.domain,
                "question": _question(study, ind),
                "quality_steps": "; ".join(weighted.quality_steps),
                "weighting_steps": _steps(weighted.groups[gid]),
                "published_value": pub.value if pub else None,
                "published_text": pub.text if pub else None,
                "relation": pub.relation if pub else None,
            }
        )
    return rows
