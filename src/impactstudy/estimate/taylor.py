"""Taylor-linearised estimates: totals, means and proportions with standard errors, as R survey.

Every estimator reduces the data to a linearised score ``z`` (one column per estimate), and
the variance is R survey's ``svyrecvar``: the between-PSU variance of the PSU totals of ``z``
within each stratum, with its fpc, plus, when the first stage is sampled without replacement and
the second stage has an fpc, the between-SSU variance within each PSU, scaled by the PSU's
first-stage sampling fraction. All of it is sums by (stratum, PSU) keys: no per-row Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl

from .design import Design, DesignError
from .variance import Point, variance

__all__ = ["RESULT_SCHEMA", "Z_95", "by", "mean", "ratio", "total"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

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
}

Z_95 = 1.959963984540054  # the 0.975 quantile of the standard normal: Wald 95% intervals


def _response(
    design: Design, y: str, na_rm: bool
) -> tuple[FloatArray, list[str | None], FloatArray]:
    """The response as an (n x k) matrix, its level labels, and the weights with NA rows zeroed."""
    if y not in design.data.columns:
        raise DesignError(f"variable {y!r} is not in the data")
    col = design.data.get_column(y)
    missing = col.is_null().to_numpy()
    if col.dtype.is_float():
        missing = missing | col.is_nan().fill_null(True).to_numpy()
    if missing.any() and not na_rm:
        raise DesignError(
            f"variable {y!r} has {int(missing.sum())} missing values; pass na_rm=True"
        )
    w = np.where(missing, 0.0, design.weights)
    if col.dtype.is_numeric():
        values = col.cast(pl.Float64).fill_null(0.0).fill_nan(0.0).to_numpy()
        return values[:, None], [None], w
    if (
        col.dtype == pl.Boolean
        or col.dtype in (pl.String, pl.Categorical)
        or isinstance(col.dtype, pl.Enum)
    ):
        if isinstance(col.dtype, pl.Enum):
            levels = [str(v) for v in col.dtype.categories.to_list()]
        else:
            levels = sorted(str(v) for v in col.drop_nulls().unique().to_list())
        labels = col.cast(pl.String)
        matrix = np.column_stack(
            [(labels == lev).fill_null(False).to_numpy() for lev in levels]
        ).astype(np.float64)
        return matrix, list(levels), w
    raise DesignError(
        f"variable {y!r} has type {col.dtype}, which is neither numeric nor categorical"
    )


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


def _result(
    variables: list[str],
    levels: list[str | None],
    est: FloatArray,
    var: FloatArray,
    n_used: IntArray,
    domains: list[str | None] | None = None,
    srs_var: FloatArray | None = None,
) -> pl.DataFrame:
    se = np.sqrt(np.maximum(var, 0.0))
    if srs_var is None:
        deff: list[float | None] = [None] * len(levels)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio_ = np.where(srs_var > 0, var / srs_var, np.nan)
        deff = [None if np.isnan(v) else float(v) for v in ratio_]
    return pl.DataFrame(
        {
            "variable": variables,
            "level": levels,
            "estimate": est,
            "se": se,
            "domain": domains if domains is not None else [None] * len(levels),
            "n": n_used,
            "ci_low": est - Z_95 * se,
            "ci_high": est + Z_95 * se,
            "deff": deff,
        },
        schema=RESULT_SCHEMA,
    )


def total(design: Design, y: str, *, na_rm: bool = False) -> pl.DataFrame:
    """Estimated population total of ``y`` (R's ``svytotal``), with its Taylor SE.

    For a categorical ``y`` (string, categorical, enum or boolean) one row per level: the estimated
    number of population units in each category.
    Columns: variable, level, estimate, se, domain (null), n (rows used), ci_low and ci_high
    (Wald 95%: estimate -/+ Z_95 * se), deff (variance over the variance of simple random sampling
    with replacement of the same n, R's ``deff="replace"``; null for ratios and quantiles).
    """
    values, levels, w = _response(design, y, na_rm)
    z = values * w[:, None]
    est = z.sum(axis=0)
    n_used = np.full(len(levels), _n_used(w), dtype=np.int64)
    return _result(
        [y] * len(levels),
        levels,
        est,
        variance(design, z, _total_point(values, w > 0), est),
        n_used,
        srs_var=_srs_variance(values, w, "total"),
    )


def mean(design: Design, y: str, *, na_rm: bool = False) -> pl.DataFrame:
    """Estimated population mean of ``y`` (R's ``svymean``), the ratio of two weighted totals.

    Its SE is that of the linearised variable ``w * (y - mean) / sum(w)``. For a categorical ``y``,
    one row per level: the estimated proportion of each category.
    Columns as `total`.
    """
    values, levels, w = _response(design, y, na_rm)
    weight_total = w.sum()
    if weight_total <= 0:
        raise DesignError(f"the weights of the rows with {y!r} observed sum to zero")
    est = (w @ values) / weight_total
    z = (values - est[None, :]) * (w / weight_total)[:, None]
    n_used = np.full(len(levels), _n_used(w), dtype=np.int64)
    return _result(
        [y] * len(levels),
        levels,
        est,
        variance(design, z, _mean_point(values, w > 0), est),
        n_used,
        srs_var=_srs_variance(values, w, "mean"),
    )


def _total_point(values: FloatArray, keep: npt.NDArray[np.bool_]) -> Point:
    """The weighted total of ``values`` over the rows in ``keep``, as a function of the weights."""
    mask = keep.astype(np.float64)[:, None]

    def point(weights: FloatArray) -> FloatArray:
        out: FloatArray = (weights * mask).T @ values
        return out

    return point


def _mean_point(values: FloatArray, keep: npt.NDArray[np.bool_]) -> Point:
    """The weighted mean of ``values`` over the rows in ``keep``, as a function of the weights."""
    mask = keep.astype(np.float64)[:, None]

    def point(weights: FloatArray) -> FloatArray:
        wk = weights * mask
        with np.errstate(divide="ignore", invalid="ignore"):
            out: FloatArray = (wk.T @ values) / wk.sum(axis=0)[:, None]
        return out

    return point


def _domain_codes(design: Design, by_col: str) -> tuple[IntArray, list[str]]:
    if by_col not in design.data.columns:
        raise DesignError(f"domain column {by_col!r} is not in the data")
    col = design.data.get_column(by_col)
    if col.null_count():
        raise DesignError(f"domain column {by_col!r} has {col.null_count()} missing values")
    labels = col.cast(pl.String).to_numpy().astype(str)
    names, codes = np.unique(labels, return_inverse=True)
    return codes.reshape(-1).astype(np.int64), [str(v) for v in names]


def by(
    design: Design,
    y: str | Sequence[str],
    by_col: str,
    *,
    statistic: Literal["mean", "total"] = "mean",
    na_rm: bool = False,
) -> pl.DataFrame:
    """Estimates of ``y`` in every domain of ``by_col`` (R's ``svyby(~y, ~by, design, svymean)``).

    Domains use the full design: a row outside the domain keeps its stratum and PSU and enters the
    linearised variable with weight zero, so the SE counts every PSU and stratum (never a subset).
    ``y`` may name several columns (R's ``~ell+meals``); a categorical ``y`` gives a row per level.
    One row per (domain, variable, level), domains in sorted order; ``domain`` holds the domain's
    label, ``n`` the rows used in the domain. Columns as `total`.
    """
    ys = [y] if isinstance(y, str) else list(y)
    codes, names = _domain_codes(design, by_col)
    n_dom = len(names)
    blocks = [_response(design, v, na_rm) for v in ys]
    z_cols: list[FloatArray] = []
    points: list[Point] = []
    est_all: list[FloatArray] = []
    srs_all: list[FloatArray] = []
    variables: list[str] = []
    levels_all: list[str | None] = []
    domains: list[str | None] = []
    n_all: list[int] = []
    for d in range(n_dom):  # one pass per domain, vectorised over rows
        in_d = codes == d
        for v, (values, levels, w) in zip(ys, blocks, strict=True):
            wd = np.where(in_d, w, 0.0)
            if statistic == "total":
                z = values * wd[:, None]
                est = z.sum(axis=0)
                points.append(_total_point(values, wd > 0))
            else:
                w_total = wd.sum()
                if w_total <= 0:
                    raise DesignError(
                        f"domain {by_col}={names[d]!r} has no weight with {v!r} observed"
                    )
                est = (wd @ values) / w_total
                z = (values - est[None, :]) * (wd / w_total)[:, None]
                points.append(_mean_point(values, wd > 0))
            z_cols.append(z)
            est_all.append(est)
            srs_all.append(_srs_variance(values, wd, statistic))
            variables += [v] * len(levels)
            levels_all += levels
            domains += [names[d]] * len(levels)
            n_all += [_n_used(wd)] * len(levels)
    z_all = np.hstack(z_cols)
    est_cat = np.concatenate(est_all)

    def point(weights: FloatArray) -> FloatArray:
        return np.hstack([p(weights) for p in points])

    return _result(
        variables,
        levels_all,
        est_cat,
        variance(design, z_all, point, est_cat),
        np.asarray(n_all, dtype=np.int64),
        domains,
        np.concatenate(srs_all),
    )


def ratio(design: Design, numerator: str, denominator: str, *, na_rm: bool = False) -> pl.DataFrame:
    """Ratio of two population totals (R's ``svyratio(~numerator, ~denominator)``).

    The estimate is ``sum(w num) / sum(w den)``; its SE is that of the linearised variable
    ``w (num - R den) / sum(w den)``. With ``na_rm=True`` a row missing either drops out (zero
    weight). One row, ``variable`` is ``"numerator/denominator"``. Columns as `total`.
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
        [f"{numerator}/{denominator}"],
        [None],
        np.array([est]),
        variance(design, z, point, np.array([est])),
        np.array([_n_used(w)], dtype=np.int64),
    )
