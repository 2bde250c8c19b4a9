"""Totals, means, proportions, domains and ratios with standard errors and intervals, as R survey.

Every estimator reduces the data to linearised scores ``z`` (one column per estimate) and an
estimator-of-the-weights ``point``, and takes its variance from `variance.variance`: R survey's
``svyrecvar`` on ``z`` (residualised by the design, which makes calibrated designs
calibration-aware) or the replicate variance of ``point``.

Domains (`by`) never build a dense rows x (domains x levels) score matrix. When the design's
``residualise`` is the identity and it has no replicates, the scores of a domain estimate are
summed per (cluster, domain) with one ``bincount`` over combined codes, and the variance is taken
on those cluster totals through a design with one row per cluster (same strata, clusters and fpc),
which gives exactly the variance of the row-level scores. Otherwise (calibrated or replicate
designs) the row-level scores are built and passed to `variance` a chunk of domains at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import polars as pl

from .design import Design, DesignError
from .variance import Point, variance

__all__ = [
    "RESULT_SCHEMA",
    "Z_95",
    "CIMethod",
    "by",
    "design_df",
    "mean",
    "norm_quantile",
    "ratio",
    "t_quantile",
    "total",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

CIMethod = Literal["wald", "logit", "wilson"]

RESULT_SCHEMA: dict[str, pl.DataType] = {
    "variable": pl.String(),
    "level": pl.String(),
    "estimate": pl.Float64(),
    "se": pl.Float64(),
    "domain": pl.String(),
    "n": pl.Int64(),
    "ci_low": pl.Float64(),
    "ci_high": pl.Float64(),
    "deff": pl.Float64(),
    "n_eff": pl.Float64(),
    "df": pl.Int64(),
    "method": pl.String(),
    "ci_method": pl.String(),
}
"""Columns of every estimate. ``n``: rows used (non-zero weight, value observed, in the domain);
``deff``: R's ``deff="replace"``; ``n_eff``: effective sample size; ``df``: design degrees of
freedom of the estimate (its domain); ``method``: ``"taylor"`` or ``"replicate:<type>"``;
``ci_method``: how ``ci_low``/``ci_high`` were computed (``"wald"``, ``"logit"``, ``"wilson"``,
``"woodruff"``)."""

Z_95 = 1.959963984540054  # the 0.975 quantile of the standard normal: Wald 95% intervals

_BOUNDARY = 1e-12  # a proportion this close to 0 or 1 is at the boundary
_CHUNK_ELEMENTS = 1 << 24  # the general domain path builds at most this many scores at once


# Reference distributions (no SciPy at run time).


def norm_quantile(p: float) -> float:
    """Quantile of the standard normal (R's ``qnorm(p)``), by bisection on ``erfc``."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.975:
        return Z_95
    if p == 0.5:
        return 0.0
    target = abs(p - 0.5) * 2.0  # P(|Z| < z)
    lo, hi = 0.0, 1.0
    while math.erf(hi / math.sqrt(2.0)) < target:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if math.erf(mid / math.sqrt(2.0)) < target:
            lo = mid
        else:
            hi = mid
    z = 0.5 * (lo + hi)
    return z if p > 0.5 else -z


def _t_abs_cdf(t: float, df: int) -> float:
    """P(|T| < t) for Student's T with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    c2 = c * c
    if df % 2 == 0:
        k = np.arange(1, (df - 2) // 2 + 1, dtype=np.float64)
        coef = np.cumprod((2 * k - 1) / (2 * k) * c2)
        return s * (1.0 + float(coef.sum()))
    if df == 1:
        return 2.0 * theta / math.pi
    k = np.arange(1, (df - 3) // 2 + 1, dtype=np.float64)
    coef = np.cumprod((2 * k) / (2 * k + 1) * c2)
    return 2.0 / math.pi * (theta + s * c * (1.0 + float(coef.sum())))


_T_SERIES_DF = 2000  # above this df, t from the normal quantile by A&S 26.7.5 (error < 1e-14)


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t with a positive integer ``df`` (R's ``qt(p, df)``): bisection on the
    exact distribution function, or for large ``df`` the Cornish-Fisher series in ``1/df``."""
    if df < 1:
        raise DesignError(f"the design has {df} degrees of freedom; a t quantile needs at least 1")
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if df > _T_SERIES_DF:
        z = norm_quantile(p)
        g1 = (z**3 + z) / 4
        g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
        g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
        g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
        v = float(df)
        return z + g1 / v + g2 / v**2 + g3 / v**3 + g4 / v**4
    target = abs(2.0 * p - 1.0)
    lo, hi = 0.0, 1.0
    while _t_abs_cdf(hi, df) < target:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _t_abs_cdf(mid, df) < target:
            lo = mid
        else:
            hi = mid
    t = 0.5 * (lo + hi)
    return t if p > 0.5 else -t


# Responses, domains, degrees of freedom.


class _Block(NamedTuple):
    """A response: ``values`` (n x 1) for a numeric variable, or ``codes`` (level per row, -1 where
    missing) for a categorical one; its level labels (``[None]`` when numeric); the weights with
    missing rows zeroed."""

    values: FloatArray | None
    codes: IntArray | None
    levels: list[str | None]
    w: FloatArray

    def dense(self) -> FloatArray:
        """The (n x k) matrix of the response: the values, or the level indicators."""
        if self.values is not None:
            return self.values
        assert self.codes is not None
        matrix = np.zeros((len(self.codes), len(self.levels)), dtype=np.float64)
        ok = self.codes >= 0
        matrix[np.flatnonzero(ok), self.codes[ok]] = 1.0
        return matrix


def _block(design: Design, y: str, na_rm: bool) -> _Block:
    """Read the response ``y``: missing values need ``na_rm`` and get a zero weight."""
    if y not in design.data.columns:
        raise DesignError(f"variable {y!r} is not in the data")
    col = design.data.get_column(y)
    has_nan = col.dtype.is_float() and bool(col.is_nan().any())
    if col.null_count() or has_nan:
        missing = col.is_null().to_numpy()
        if col.dtype.is_float():
            missing = missing | col.is_nan().fill_null(True).to_numpy()
        if not na_rm:
            raise DesignError(
                f"variable {y!r} has {int(missing.sum())} missing values; pass na_rm=True"
            )
        w = np.where(missing, 0.0, design.weights)
    else:
        w = design.weights  # shared, never written to
    if col.dtype.is_numeric():
        values = col.cast(pl.Float64).fill_null(0.0).fill_nan(0.0).to_numpy()
        return _Block(values[:, None], None, [None], w)
    codes, levels = _level_codes(col, y)
    if codes is None:
        raise DesignError(
            f"variable {y!r} has type {col.dtype}, which is neither numeric nor categorical"
        )
    return _Block(None, codes, list(levels), w)


def _response(
    design: Design, y: str, na_rm: bool
) -> tuple[FloatArray, list[str | None], FloatArray]:
    """The response as an (n x k) matrix, its level labels, and the weights with NA rows zeroed."""
    block = _block(design, y, na_rm)
    return block.dense(), block.levels, block.w


def _level_codes(col: pl.Series, name: str) -> tuple[IntArray | None, list[str]]:
    """Codes 0..L-1 of a categorical column (-1 for nulls) and its level labels: sorted labels for
    strings and booleans, the declared order for an enum (R's factor levels). ``None`` when the
    column is not categorical."""
    if isinstance(col.dtype, pl.Enum):
        levels = [str(v) for v in col.dtype.categories.to_list()]
        phys = col.to_physical().cast(pl.Int64).fill_null(-1).to_numpy()
        return phys.astype(np.int64), levels
    if col.dtype in (pl.String, pl.Categorical) or col.dtype == pl.Boolean:
        labels = col.cast(pl.String)
        uniq = labels.drop_nulls().unique().sort()
        codes = labels.replace_strict(
            uniq, pl.Series(np.arange(len(uniq), dtype=np.int64)), return_dtype=pl.Int64
        )
        return codes.fill_null(-1).to_numpy().astype(np.int64), [str(v) for v in uniq]
    return None, []


def _domain_codes(design: Design, columns: Sequence[str]) -> tuple[IntArray, list[str]]:
    """Dense codes of the (non-empty) combinations of the domain columns, and their labels.

    Domains are ordered by the first column, then the second, ...; within a column numbers sort
    numerically, strings alphabetically and enums in their declared order. The label is the value
    itself for one column and ``"a=x, b=y"`` for several.
    """
    if not columns:
        raise DesignError("by needs at least one domain column")
    code = np.zeros(design.n, dtype=np.int64)
    per_column: list[list[str]] = []
    for name in columns:
        if name not in design.data.columns:
            raise DesignError(f"domain column {name!r} is not in the data")
        col = design.data.get_column(name)
        if col.null_count():
            raise DesignError(f"domain column {name!r} has {col.null_count()} missing values")
        c, labels = _level_codes(col, name)
        if c is None:
            c, labels = _numeric_codes(col)
        code = c if len(columns) == 1 else code * max(len(labels), 1) + c
        per_column.append(labels)
    if len(columns) == 1:  # the codes of one column are dense already
        return code, per_column[0]
    sizes = [len(labels) for labels in per_column]
    space = int(np.prod(sizes, dtype=np.float64))
    if space <= 4 * design.n + 1024:
        present = np.flatnonzero(np.bincount(code, minlength=space))
        remap = np.full(space, -1, dtype=np.int64)
        remap[present] = np.arange(len(present))
        dense = remap[code]
    else:
        present, inverse = np.unique(code, return_inverse=True)
        dense = inverse.reshape(-1).astype(np.int64)
    idx = np.stack(np.unravel_index(present, sizes), axis=1) if present.size else np.zeros((0, 0))
    if len(columns) == 1:
        names = [per_column[0][int(i[0])] for i in idx]
    else:
        names = [
            ", ".join(f"{c}={per_column[j][int(i[j])]}" for j, c in enumerate(columns)) for i in idx
        ]
    return dense, names


def _numeric_codes(col: pl.Series) -> tuple[IntArray, list[str]]:
    """Codes of a numeric domain column in numeric order, and its values as text."""
    values = col.to_numpy()
    if np.issubdtype(values.dtype, np.integer):
        lo, hi = int(values.min()), int(values.max())
        if hi - lo <= 4 * len(values) + 1024:
            shifted = values.astype(np.int64, copy=False) - lo
            present = np.flatnonzero(np.bincount(shifted))
            remap = np.zeros(hi - lo + 1, dtype=np.int64)
            remap[present] = np.arange(len(present))
            return remap[shifted], [str(int(v) + lo) for v in present]
    uniq, inverse = np.unique(values, return_inverse=True)
    labels = pl.Series(uniq).cast(pl.String).to_list()
    return inverse.reshape(-1).astype(np.int64), [str(v) for v in labels]


def _method(design: Design) -> str:
    """``"taylor"`` or ``"replicate:<type>"``: how the variance is computed."""
    rep = design.replicates
    return "taylor" if rep is None else f"replicate:{rep.type}"


def design_df(
    design: Design,
    codes: IntArray | None = None,
    n_domains: int = 1,
    *,
    key: IntArray | None = None,
    present: BoolArray | None = None,
) -> IntArray:
    """Degrees of freedom of each domain (R's ``degf`` of the domain's subset design).

    Taylor: first-stage PSUs minus strata, counting only those holding a row of the domain with a
    non-zero sampling weight (R ``degf.survey.design2``). Replicates: the rank of the domain rows'
    replicate weights minus one (R ``degf.svyrep.design``, ``qr(..., tol=1e-5)$rank - 1``; svy uses
    the number of replicates minus one, which is the same for the whole sample of a JK1 design but
    larger for domains that miss some PSUs).
    ``codes`` are the rows' domains (0..n_domains-1; all one domain without them); ``key``, if
    given, is ``first-stage PSU * n_domains + codes``, already computed by the caller, and
    ``present`` (first-stage PSUs x domains), if given, which of them hold a row of the domain
    with a positive weight.
    """
    if design.replicates is not None:
        return _replicate_df(design.replicates.weights, codes, n_domains)
    first = design.stages[0]
    n_psu = int(first.psu.max()) + 1
    n_strata = int(first.stratum.max()) + 1
    if key is None:
        key = first.psu if codes is None else first.psu * n_domains + codes
    if present is None:
        positive = design.weights > 0
        if not positive.all():
            key = key[positive]
        present = np.bincount(key, minlength=n_psu * n_domains).reshape(n_psu, n_domains) > 0
    strata_present = np.zeros((n_strata, n_domains), dtype=np.int64)
    np.add.at(strata_present, first.stratum[first.psu_first], present.astype(np.int64))
    out: IntArray = present.sum(axis=0) - (strata_present > 0).sum(axis=0)
    return out.astype(np.int64)


_QR_TOL = 1e-5  # R's degf.svyrep.design: qr(weights, tol = 1e-5)


def _replicate_df(weights: FloatArray, codes: IntArray | None, n_domains: int) -> IntArray:
    """Rank of each domain's rows of the replicate weights, minus one: one Gram matrix per domain
    (rows grouped by domain once), ranked by `_qr_rank`."""
    if codes is None:
        return np.array([_qr_rank(weights.T @ weights, weights.shape[0]) - 1], dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(n_domains + 1))
    grouped = weights[order]
    out = np.empty(n_domains, dtype=np.int64)
    for d in range(n_domains):  # one BLAS product per domain, not per row
        rows = grouped[bounds[d] : bounds[d + 1]]
        out[d] = _qr_rank(rows.T @ rows, rows.shape[0]) - 1
    return out


def _qr_rank(gram: FloatArray, n_rows: int) -> int:
    """The rank R's ``qr()`` (LINPACK ``dqrdc2``, limited pivoting) gives a matrix with this Gram
    matrix: columns taken in order, a column whose norm after projecting out the columns kept so
    far is below ``tol`` times its own norm is moved to the end and not counted."""
    p = gram.shape[0]
    norm2 = np.diag(gram).copy()
    original = np.where(norm2 > 0, norm2, 1.0)
    r = np.zeros((p, p))
    kept: list[int] = []
    for j in range(p):
        rest = norm2[j] - float(r[kept, j] @ r[kept, j]) if kept else norm2[j]
        if rest < (_QR_TOL**2) * original[j] or rest <= 0:
            continue
        r_jj = math.sqrt(rest)
        later = np.arange(j + 1, p)
        idx = np.asarray(kept, dtype=np.int64)
        r[j, later] = (gram[j, later] - r[idx, j] @ r[np.ix_(idx, later)]) / r_jj
        r[j, j] = r_jj
        kept.append(j)
    return min(len(kept), n_rows)


def _n_used(w: FloatArray) -> int:
    """Rows used by an estimate: those with a non-zero weight once missing values are zeroed."""
    return int(np.count_nonzero(w > 0))


def _srs_variance(values: FloatArray, w: FloatArray, statistic: str) -> FloatArray:
    """Variance of the same estimate under simple random sampling with replacement of the same
    size (R's ``deff="replace"`` denominator): ``s2 / n`` for a mean, ``W^2 s2 / n`` for a total,
    where ``s2`` is R's ``svyvar`` (weighted variance times n/(n-1)) over the rows used."""
    n_used = _n_used(w)
    weight_total = w.sum()
    if n_used < 2 or weight_total <= 0:
        return np.full(values.shape[1], np.nan)
    centre = (w @ values) / weight_total
    s2 = (w @ (values - centre[None, :]) ** 2) / weight_total * n_used / (n_used - 1)
    out: FloatArray = s2 / n_used
    if statistic == "total":
        out = out * weight_total**2
    return out


def _is_proportion(block: _Block) -> bool:
    """A categorical variable, or a numeric one that is 0/1 on the rows used."""
    if block.values is None:
        return True
    v = block.values[:, 0]
    if v.min() < 0.0 or v.max() > 1.0:  # cheap rejection of most numeric variables
        return False
    used = v[block.w > 0]
    return bool(np.all((used == 0.0) | (used == 1.0)))


# Result rows and intervals.


def _expit(x: FloatArray) -> FloatArray:
    out: FloatArray = 1.0 / (1.0 + np.exp(-x))
    return out


def _intervals(
    est: FloatArray,
    var: FloatArray,
    n_used: IntArray,
    df: IntArray,
    proportion: BoolArray,
    ci: CIMethod,
    level: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(ci_low, ci_high, n_eff of proportions): see `mean` for the three interval methods."""
    se = np.sqrt(np.maximum(var, 0.0))
    p = est
    boundary = (p <= _BOUNDARY) | (p >= 1.0 - _BOUNDARY)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff = np.where(boundary, np.nan, np.where(var > 0, p * (1.0 - p) / var, np.inf))
    if ci == "wald":
        z = norm_quantile(0.5 + level / 2.0)
        return est - z * se, est + z * se, n_eff
    low = np.full(len(est), np.nan)
    high = np.full(len(est), np.nan)
    if ci == "logit":
        crit = np.full(len(est), np.nan)
        for d in np.unique(df[df >= 1]):
            crit[df == d] = t_quantile(0.5 + level / 2.0, int(d))
        inside = ~boundary & (df >= 1)
        flat = inside & (se == 0)
        move = inside & (se > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            logit = np.log(p / (1.0 - p))
            half = crit * se / (p * (1.0 - p))
        low = np.where(move, _expit(logit - half), np.where(flat, p, np.nan))
        high = np.where(move, _expit(logit + half), np.where(flat, p, np.nan))
        return low, high, n_eff
    # Wilson score interval with n replaced by n_eff (n, the rows used, at the boundary)
    z = norm_quantile(0.5 + level / 2.0)
    m = np.where(boundary, n_used.astype(np.float64), n_eff)
    with np.errstate(divide="ignore", invalid="ignore"):
        z2m = np.where(np.isinf(m), 0.0, z * z / m)
        centre = (p + z2m / 2.0) / (1.0 + z2m)
        half = (
            z
            / (1.0 + z2m)
            * np.sqrt(
                np.maximum(
                    np.where(np.isinf(m), 0.0, p * (1.0 - p) / m) + z2m * z2m / (4 * z * z), 0
                )
            )
        )
    ok = m > 0
    low = np.where(ok, np.maximum(centre - half, 0.0), np.nan)
    high = np.where(ok, np.minimum(centre + half, 1.0), np.nan)
    return low, high, n_eff


def _result(
    design: Design,
    variables: list[str],
    levels: list[str | None],
    est: FloatArray,
    var: FloatArray,
    n_used: IntArray,
    df: IntArray,
    *,
    domains: list[str | None] | None = None,
    srs_var: FloatArray | None = None,
    proportion: BoolArray | None = None,
    ci: CIMethod = "wald",
    level: float = 0.95,
) -> pl.DataFrame:
    """The result frame (`RESULT_SCHEMA`) of estimates ``est`` with variances ``var``."""
    if not 0.0 < level < 1.0:
        raise DesignError(f"the confidence level must be in (0, 1), got {level}")
    k = len(levels)
    is_prop = np.zeros(k, dtype=bool) if proportion is None else proportion
    se = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        deff = (
            np.full(k, np.nan) if srs_var is None else np.where(srs_var > 0, var / srs_var, np.nan)
        )
    low, high, n_eff_prop = _intervals(est, var, n_used, df, is_prop, ci, level)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_eff_other = np.where(deff > 0, n_used / deff, np.where(deff == 0, np.inf, np.nan))
    n_eff = np.where(is_prop, n_eff_prop, n_eff_other)
    return pl.DataFrame(
        {
            "variable": variables,
            "level": levels,
            "estimate": est,
            "se": se,
            "domain": domains if domains is not None else [None] * k,
            "n": n_used,
            "ci_low": low,
            "ci_high": high,
            "deff": deff,
            "n_eff": n_eff,
            "df": df,
            "method": [_method(design)] * k,
            "ci_method": [ci] * k,
        },
        schema=RESULT_SCHEMA,
    ).with_columns(pl.col("ci_low", "ci_high", "deff", "n_eff").fill_nan(None))


def _check_ci(ci: str, proportion: bool, y: str) -> None:
    if ci not in ("wald", "logit", "wilson"):
        raise DesignError(f"ci must be 'wald', 'logit' or 'wilson', got {ci!r}")
    if ci != "wald" and not proportion:
        raise DesignError(f"ci={ci!r} is for proportions; {y!r} is neither categorical nor 0/1")


# Estimators.


def total(
    design: Design, y: str | Sequence[str], *, na_rm: bool = False, level: float = 0.95
) -> pl.DataFrame:
    """Estimated population total of ``y`` (R's ``svytotal``), with its SE.

    ``y`` may name several columns (R's ``~a+b``): their rows in order, from one pass over the
    design where it takes the cluster-sum path.

    For a categorical ``y`` (string, categorical, enum or boolean) one row per level: the estimated
    number of population units in each category. Columns: `RESULT_SCHEMA`; the interval is Wald
    (estimate -/+ the normal quantile at ``level`` times se, as R's ``confint``); ``deff`` is
    the variance over the variance of simple random sampling with replacement of the same n (R's
    ``deff="replace"``) and ``n_eff`` is ``n / deff``.
    """
    if not isinstance(y, str):
        return _several(design, list(y), "total", na_rm, "wald", level)
    block = _block(design, y, na_rm)
    k = len(block.levels)
    if _fast(design):  # one domain holding every row
        est, var, srs, n_used, df = _by_fast(design, [block], _one_domain(design), 1, "total", [y])
        return _result(
            design,
            [y] * k,
            block.levels,
            est[0],
            var[0],
            n_used[0],
            np.repeat(df, k),
            srs_var=srs[0],
            level=level,
        )
    values, w = block.dense(), block.w
    z = values * w[:, None]
    est = z.sum(axis=0)
    return _result(
        design,
        [y] * k,
        block.levels,
        est,
        variance(design, z, _total_point(values, w > 0), est),
        np.full(k, _n_used(w), dtype=np.int64),
        np.repeat(design_df(design), k),
        srs_var=_srs_variance(values, w, "total"),
        level=level,
    )


def mean(
    design: Design,
    y: str | Sequence[str],
    *,
    na_rm: bool = False,
    ci: CIMethod = "wald",
    level: float = 0.95,
) -> pl.DataFrame:
    """Estimated population mean of ``y`` (R's ``svymean``), the ratio of two weighted totals.

    Its SE is that of the linearised variable ``w * (y - mean) / sum(w)``. For a categorical ``y``,
    one row per level: the estimated proportion of each category. ``y`` may name several columns
    (R's ``~a+b``), as `total`. Columns: `RESULT_SCHEMA`.

    ``ci`` (at confidence ``level``):

    - ``"wald"``: estimate -/+ ``qnorm((1 + level) / 2) * se`` (R's ``confint``).
    - ``"logit"`` (proportions): R's ``svyciprop(method="logit")``,
      ``expit(logit(p) -/+ qt((1 + level) / 2, df) * se / (p (1 - p)))`` with the design (domain)
      df; ``(p, p)`` when se = 0 and 0 < p < 1; null at p = 0 or 1 and when df < 1 (R: NaN).
    - ``"wilson"`` (proportions, not in R survey): the Wilson score interval with the effective
      sample size ``m = n_eff`` in place of n and ``z = qnorm((1 + level) / 2)``:
      ``(p + z^2/(2m)) / (1 + z^2/m) -/+ z / (1 + z^2/m) * sqrt(p (1 - p)/m + z^2/(4 m^2))``;
      at p = 0 or 1, where n_eff is undefined, ``m`` is ``n`` (the rows used).

    ``n_eff``: for proportions R's ``svyciprop`` ``n.eff = p (1 - p) / var`` (null at p = 0 or
    1, infinite when var = 0); otherwise ``n / deff``.
    """
    if not isinstance(y, str):
        return _several(design, list(y), "mean", na_rm, ci, level)
    block = _block(design, y, na_rm)
    levels = block.levels
    prop = _is_proportion(block)
    _check_ci(ci, prop, y)
    weight_total = block.w.sum()
    if weight_total <= 0:
        raise DesignError(f"the weights of the rows with {y!r} observed sum to zero")
    k = len(levels)
    if _fast(design):  # one domain holding every row
        est_, var, srs, n_used, df = _by_fast(design, [block], _one_domain(design), 1, "mean", [y])
        return _result(
            design,
            [y] * k,
            levels,
            est_[0],
            var[0],
            n_used[0],
            np.repeat(df, k),
            srs_var=srs[0],
            proportion=np.full(k, prop),
            ci=ci,
            level=level,
        )
    values, w = block.dense(), block.w
    est = (w @ values) / weight_total
    z = (values - est[None, :]) * (w / weight_total)[:, None]
    return _result(
        design,
        [y] * k,
        levels,
        est,
        variance(design, z, _mean_point(values, w > 0), est),
        np.full(k, _n_used(w), dtype=np.int64),
        np.repeat(design_df(design), k),
        srs_var=_srs_variance(values, w, "mean"),
        proportion=np.full(k, prop),
        ci=ci,
        level=level,
    )


def _several(
    design: Design, ys: list[str], statistic: str, na_rm: bool, ci: CIMethod, level: float
) -> pl.DataFrame:
    """`mean` or `total` of several columns: on the cluster-sum path in one pass (one domain
    holding every row), else one column at a time."""
    if not ys:
        raise DesignError(f"{statistic} needs at least one variable")
    if len(ys) == 1 or not _fast(design):
        if statistic == "mean":
            return pl.concat([mean(design, v, na_rm=na_rm, ci=ci, level=level) for v in ys])
        return pl.concat([total(design, v, na_rm=na_rm, level=level) for v in ys])
    blocks = [_block(design, v, na_rm) for v in ys]
    props = [_is_proportion(b) for b in blocks]
    for v, prop, b in zip(ys, props, blocks, strict=True):
        _check_ci(ci, prop, v)
        if statistic == "mean" and b.w.sum() <= 0:
            raise DesignError(f"the weights of the rows with {v!r} observed sum to zero")
    est, var, srs, n_used, df = _by_fast(design, blocks, _one_domain(design), 1, statistic, ys)
    widths = [len(b.levels) for b in blocks]
    return _result(
        design,
        [v for v, k in zip(ys, widths, strict=True) for _ in range(k)],
        [lev for b in blocks for lev in b.levels],
        est[0],
        var[0],
        n_used[0],
        np.repeat(df, sum(widths)),
        srs_var=srs[0],
        proportion=np.concatenate([np.full(k, p) for k, p in zip(widths, props, strict=True)]),
        ci=ci,
        level=level,
    )


def _total_point(values: FloatArray, keep: BoolArray) -> Point:
    """The weighted total of ``values`` over the rows in ``keep``, as a function of the weights."""
    mask = keep.astype(np.float64)[:, None]

    def point(weights: FloatArray) -> FloatArray:
        out: FloatArray = (weights * mask).T @ values
        return out

    return point


def _mean_point(values: FloatArray, keep: BoolArray) -> Point:
    """The weighted mean of ``values`` over the rows in ``keep``, as a function of the weights."""
    mask = keep.astype(np.float64)[:, None]

    def point(weights: FloatArray) -> FloatArray:
        wk = weights * mask
        with np.errstate(divide="ignore", invalid="ignore"):
            out: FloatArray = (wk.T @ values) / wk.sum(axis=0)[:, None]
        return out

    return point


# Domains.


def _fast(design: Design) -> bool:
    """Whether the variance needs only cluster sums of the scores: no replicates, and the design's
    ``residualise`` is the identity (not calibrated)."""
    return design.replicates is None and type(design).residualise is Design.residualise


def _one_domain(design: Design) -> IntArray:
    return np.zeros(design.n, dtype=np.int64)


def _cluster_design(design: Design) -> tuple[Design, IntArray]:
    """A design with one row per cluster of the finest stage that enters the variance, and each
    row's cluster: `svyrecvar` of cluster totals on it equals `svyrecvar` of the rows' scores on
    ``design`` (same strata, clusters, counts, fpc and lonely-PSU rule, no residualisation).

    Built from the design's own columns at each cluster's first row, so stratum labels in
    errors are the user's. Every stage enters when the design has an fpc (R's recursion; a
    with-replacement stage zeroes the later terms), else only the first (ultimate cluster)."""
    n_used = len(design.stages) if design.fpc else 1
    last = design.stages[n_used - 1]
    rows = last.psu_first
    ids, strata, fpc = design.ids[:n_used], design.strata[:n_used], design.fpc[:n_used]
    columns = list(dict.fromkeys([*ids, *strata, *fpc]))
    weight = "_cluster_weight"
    while weight in columns:
        weight += "_"
    data = (
        design.data.select(columns)[rows]
        if columns
        else pl.DataFrame({"_row": np.arange(len(rows))})
    )
    cluster_design = Design(
        data.with_columns(pl.lit(1.0).alias(weight)),
        ids=ids or None,
        strata=strata or None,
        weights=weight,
        fpc=fpc or None,
        lonely_psu=design.lonely_psu,
    )
    return cluster_design, last.psu


def _no_replicates(weights: FloatArray) -> FloatArray:
    raise DesignError("cluster totals have no replicate weights")


def by(
    design: Design,
    y: str | Sequence[str],
    by_col: str | Sequence[str],
    *,
    statistic: Literal["mean", "total"] = "mean",
    na_rm: bool = False,
    ci: CIMethod = "wald",
    level: float = 0.95,
) -> pl.DataFrame:
    """Estimates of ``y`` in every domain of ``by_col`` (R's ``svyby(~y, ~by, design, svymean)``).

    Domains use the full design: a row outside the domain keeps its stratum and PSU and enters the
    linearised variable with weight zero, so the SE counts every PSU and stratum (never a subset);
    ``df`` counts the PSUs and strata holding the domain (R's ``degf`` of the subset).
    ``y`` may name several columns (R's ``~ell+meals``); a categorical ``y`` gives a row per level.
    ``by_col`` may name several columns (R's ``~a+b``): the domains are their non-empty
    combinations. One row per (domain, variable, level), domains ordered by the first column, then
    the next (numbers numerically, strings alphabetically, enums in declared order). ``domain``
    is the domain's value for one column and ``"a=x, b=y"`` for several; ``n`` the rows used in
    the domain. ``ci``, ``level``, ``n_eff``: as `mean` (``ci`` other than ``"wald"`` needs
    ``statistic="mean"`` and proportions). Columns: `RESULT_SCHEMA`.
    """
    ys = [y] if isinstance(y, str) else list(y)
    columns = [by_col] if isinstance(by_col, str) else list(by_col)
    if statistic not in ("mean", "total"):
        raise DesignError(f"statistic must be 'mean' or 'total', got {statistic!r}")
    codes, names = _domain_codes(design, columns)
    n_dom = len(names)
    blocks = [_block(design, v, na_rm) for v in ys]
    props = [_is_proportion(b) for b in blocks]
    for v, prop in zip(ys, props, strict=True):
        if ci != "wald" and statistic != "mean":
            raise DesignError(f"ci={ci!r} needs statistic='mean'")
        _check_ci(ci, prop, v)
    label = ", ".join(columns)
    if _fast(design):
        fast = _by_fast(design, blocks, codes, n_dom, statistic, ys, names, label)
        est, var, srs, n_used, dom_df = fast
    else:
        est, var, srs, n_used, dom_df = _by_general(
            design, blocks, codes, n_dom, statistic, ys, names, label
        )
    # rows in (domain, variable, level) order: est etc. are (n_dom x sum of levels)
    level_lists = [b.levels for b in blocks]
    widths = [len(levs) for levs in level_lists]
    variables = [v for v, k in zip(ys, widths, strict=True) for _ in range(k)] * n_dom
    levels_all = [lev for levs in level_lists for lev in levs] * n_dom
    domains: list[str | None] = [nm for nm in names for _ in range(sum(widths))]
    prop_row = np.tile(
        np.concatenate([np.full(k, p) for k, p in zip(widths, props, strict=True)]), n_dom
    )
    df = np.repeat(dom_df, sum(widths))
    return _result(
        design,
        variables,
        levels_all,
        est.reshape(-1),
        var.reshape(-1),
        n_used.reshape(-1),
        df,
        domains=domains,
        srs_var=srs.reshape(-1),
        proportion=prop_row,
        ci=ci,
        level=level,
    )


def _wsum(codes: IntArray, weights: FloatArray, minlength: int) -> FloatArray:
    """Sums of ``weights`` by ``codes`` (``np.bincount`` with weights, typed as floats)."""
    out: FloatArray = np.bincount(codes, weights=weights, minlength=minlength).astype(
        np.float64, copy=False
    )
    return out


Blocks = list[_Block]


def _by_fast(
    design: Design,
    blocks: Blocks,
    codes: IntArray,
    n_dom: int,
    statistic: str,
    ys: list[str],
    names: list[str] | None = None,
    label: str = "",
) -> tuple[FloatArray, FloatArray, FloatArray, IntArray, IntArray]:
    """Domain estimates from per-(cluster, domain) sums: one bincount over combined codes per
    score column, memory O(n + clusters x domains x levels). Returns (n_dom x K) arrays of
    estimates, variances, SRS variances and rows used, K being the total number of levels, and
    the domains' df."""
    cluster_design, cluster = _cluster_design(design)
    n_cl = cluster_design.n
    key = cluster * n_dom + codes
    size = n_cl * n_dom
    est_cols: list[FloatArray] = []
    tot_cols: list[FloatArray] = []  # each (n_cl, n_dom, k)
    srs_cols: list[FloatArray] = []
    used_cols: list[IntArray] = []
    present_cols: list[BoolArray] = []  # each (n_cl, n_dom, k): clusters R keeps in the subset
    all_rows: IntArray | None = None  # rows per domain, shared by variables without NAs
    all_present: BoolArray = np.zeros((0, 0), dtype=np.bool_)
    for v, block in zip(ys, blocks, strict=True):
        levels, w = block.levels, block.w
        k = len(levels)
        positive = w > 0
        if positive.all():  # shared by every variable without missing values
            if all_rows is None:
                per_cell = np.bincount(key, minlength=size).reshape(n_cl, n_dom)
                all_rows = per_cell.sum(axis=0).astype(np.int64)
                all_present = per_cell > 0
            n_used, in_cluster = all_rows, all_present
        else:
            n_used = np.bincount(codes[positive], minlength=n_dom).astype(np.int64)
            in_cluster = np.bincount(key[positive], minlength=size).reshape(n_cl, n_dom) > 0
        present_cols.append(np.repeat(in_cluster[:, :, None], k, axis=2))
        if block.values is not None:
            y = block.values[:, 0]
            multi_done = False
            if n_dom == 1:  # one domain: plain sums, no bincount by domain
                w_dom = np.array([w.sum()])
                _check_domain_weight(statistic, w_dom, names, label, v)
                t_dom = np.array([w @ y])
                centre = np.nan_to_num(t_dom / w_dom) if w_dom[0] > 0 else np.zeros(1)
                dev = y - centre[0]
                wc = w * dev
                ss = np.array([[wc @ dev]])
                if statistic == "total":
                    s_wy = _wsum(key, w * y, minlength=size)
            else:
                # per (cluster, domain) sums of w, w y' and w y'^2 with y' = y - m (m the overall
                # weighted mean, so that centring within domains loses no digits): the domain
                # scores are their combinations, with no second pass over the rows
                total_w = w.sum()
                m = float(w @ y) / total_w if total_w > 0 else 0.0
                shifted = y - m
                wy = w * shifted
                s_w = _wsum(key, w, minlength=size).reshape(n_cl, n_dom)
                s_wys = _wsum(key, wy, minlength=size).reshape(n_cl, n_dom)
                s_wyy = _wsum(key, wy * shifted, minlength=size).reshape(n_cl, n_dom)
                w_dom = s_w.sum(axis=0)
                _check_domain_weight(statistic, w_dom, names, label, v)
                t_shift = s_wys.sum(axis=0)
                with np.errstate(divide="ignore", invalid="ignore"):
                    centre_shift = np.nan_to_num(t_shift / w_dom)
                ss = (s_wyy.sum(axis=0) - centre_shift * t_shift)[:, None]
                if statistic == "mean":
                    est = (m + centre_shift)[:, None]
                    with np.errstate(divide="ignore", invalid="ignore"):
                        scores_cd = (s_wys - centre_shift[None, :] * s_w) / w_dom[None, :]
                    tot = scores_cd[:, :, None]
                else:
                    est = (t_shift + m * w_dom)[:, None]
                    tot = (s_wys + m * s_w)[:, :, None]
                multi_done = True
            if multi_done:
                pass
            elif statistic == "mean":
                est = centre[:, None]
                scores = _wsum(key, wc, minlength=size)
                tot = (scores.reshape(n_cl, n_dom) / w_dom[None, :])[:, :, None]
            else:
                est = t_dom[:, None]
                tot = s_wy.reshape(n_cl, n_dom, 1)
        else:
            assert block.codes is not None
            lev = np.maximum(block.codes, 0)  # missing rows (-1) have weight 0
            s_wl = _wsum(key * k + lev, w, minlength=size * k).reshape(n_cl, n_dom, k)
            s_w = s_wl.sum(axis=2)
            w_dom = s_w.sum(axis=0)
            _check_domain_weight(statistic, w_dom, names, label, v)
            t_dom2 = s_wl.sum(axis=0)  # (n_dom, k)
            with np.errstate(divide="ignore", invalid="ignore"):
                p = t_dom2 / w_dom[:, None]
            ss = w_dom[:, None] * p * (1.0 - p)
            if statistic == "mean":
                est = p
                tot = (s_wl - p[None, :, :] * s_w[:, :, None]) / w_dom[None, :, None]
            else:
                est = t_dom2
                tot = s_wl
        with np.errstate(divide="ignore", invalid="ignore"):
            n_f = n_used.astype(np.float64)[:, None]
            s2 = ss / w_dom[:, None] * n_f / (n_f - 1.0)
            srs = np.where((n_f >= 2) & (w_dom[:, None] > 0), s2 / n_f, np.nan)
        if statistic == "total":
            srs = srs * (w_dom**2)[:, None]
        est_cols.append(est)
        tot_cols.append(tot)
        srs_cols.append(srs)
        used_cols.append(np.repeat(n_used[:, None], k, axis=1))
    totals = np.concatenate(tot_cols, axis=2)  # (n_cl, n_dom, K)
    est_all = np.concatenate(est_cols, axis=1)
    flat = totals.reshape(n_cl, -1)
    present = np.concatenate(present_cols, axis=2).reshape(n_cl, -1)
    var = variance(cluster_design, flat, _no_replicates, est_all.reshape(-1), present=present)
    one_stage = cluster is design.stages[0].psu
    shared = one_stage and all_present.size > 0 and len(ys) == 1
    df = design_df(
        design,
        codes,
        n_dom,
        key=key if one_stage else None,
        present=all_present if shared else None,
    )
    return (
        est_all,
        var.reshape(est_all.shape),
        np.concatenate(srs_cols, axis=1),
        np.concatenate(used_cols, axis=1),
        df,
    )


def _check_domain_weight(
    statistic: str, w_dom: FloatArray, names: list[str] | None, label: str, y: str
) -> None:
    """A domain mean needs some weight in the domain with ``y`` observed."""
    if statistic == "mean" and np.any(w_dom <= 0):
        if names is None:
            raise DesignError(f"the weights of the rows with {y!r} observed sum to zero")
        bad = names[int(np.flatnonzero(w_dom <= 0)[0])]
        raise DesignError(f"domain {label}={bad!r} has no weight with {y!r} observed")


def _by_general(
    design: Design,
    blocks: Blocks,
    codes: IntArray,
    n_dom: int,
    statistic: str,
    ys: list[str],
    names: list[str],
    label: str,
) -> tuple[FloatArray, FloatArray, FloatArray, IntArray, IntArray]:
    """Domain estimates from row-level scores, a chunk of domains at a time (calibrated and
    replicate designs: their variance needs the rows). Same outputs as `_by_fast`."""
    width = sum(len(b.levels) for b in blocks)
    dense = [(b.dense(), b.levels, b.w) for b in blocks]
    chunk = max(1, _CHUNK_ELEMENTS // max(design.n * width, 1))
    est_rows: list[FloatArray] = []
    var_rows: list[FloatArray] = []
    srs_rows: list[FloatArray] = []
    used_rows: list[IntArray] = []
    for start in range(0, n_dom, chunk):
        z_cols: list[FloatArray] = []
        points: list[Point] = []
        ests: list[FloatArray] = []
        for d in range(start, min(start + chunk, n_dom)):
            in_d = codes == d
            for v, (values, levels, w) in zip(ys, dense, strict=True):
                wd = np.where(in_d, w, 0.0)
                if statistic == "total":
                    z = values * wd[:, None]
                    est = z.sum(axis=0)
                    points.append(_total_point(values, wd > 0))
                else:
                    w_total = wd.sum()
                    if w_total <= 0:
                        raise DesignError(
                            f"domain {label}={names[d]!r} has no weight with {v!r} observed"
                        )
                    est = (wd @ values) / w_total
                    z = (values - est[None, :]) * (wd / w_total)[:, None]
                    points.append(_mean_point(values, wd > 0))
                z_cols.append(z)
                ests.append(est)
                srs_rows.append(_srs_variance(values, wd, statistic))
                used_rows.append(np.full(len(levels), _n_used(wd), dtype=np.int64))
        est_chunk = np.concatenate(ests)
        chunk_points = list(points)

        def point(weights: FloatArray, ps: list[Point] = chunk_points) -> FloatArray:
            return np.hstack([p(weights) for p in ps])

        var_rows.append(variance(design, np.hstack(z_cols), point, est_chunk))
        est_rows.append(est_chunk)
    shape = (n_dom, width)
    return (
        np.concatenate(est_rows).reshape(shape),
        np.concatenate(var_rows).reshape(shape),
        np.concatenate(srs_rows).reshape(shape),
        np.concatenate(used_rows).reshape(shape),
        design_df(design, codes, n_dom),
    )


def ratio(
    design: Design,
    numerator: str,
    denominator: str,
    *,
    na_rm: bool = False,
    level: float = 0.95,
) -> pl.DataFrame:
    """Ratio of two population totals (R's ``svyratio(~numerator, ~denominator)``).

    The estimate is ``sum(w num) / sum(w den)``; its SE is that of the linearised variable
    ``w (num - R den) / sum(w den)``. With ``na_rm=True`` a row missing either drops out (zero
    weight). One row, ``variable`` is ``"numerator/denominator"``; ``deff`` and ``n_eff`` are
    null. Columns: `RESULT_SCHEMA`.
    """
    num, num_levels, w_num = _response(design, numerator, na_rm)
    den, den_levels, w_den = _response(design, denominator, na_rm)
    if num_levels != [None] or den_levels != [None]:
        raise DesignError("ratio needs numeric numerator and denominator columns")
    w = np.minimum(w_num, w_den)  # zero where either is missing
    den_total = float(w @ den[:, 0])
    if den_total == 0:
        raise DesignError(f"the estimated total of {denominator!r} is zero")
    est = float(w @ num[:, 0]) / den_total
    z = (w * (num[:, 0] - est * den[:, 0]) / den_total)[:, None]
    mask = (w > 0).astype(np.float64)[:, None]

    def point(weights: FloatArray) -> FloatArray:
        wk = weights * mask
        with np.errstate(divide="ignore", invalid="ignore"):
            out: FloatArray = (wk.T @ num) / (wk.T @ den)
        return out

    return _result(
        design,
        [f"{numerator}/{denominator}"],
        [None],
        np.array([est]),
        variance(design, z, point, np.array([est])),
        np.array([_n_used(w)], dtype=np.int64),
        design_df(design),
        level=level,
    )
