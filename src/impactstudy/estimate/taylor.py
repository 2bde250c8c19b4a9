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

from .design import Design, DesignError, Stage

__all__ = ["RESULT_SCHEMA", "Z_95", "by", "mean", "ratio", "svyrecvar", "total"]

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

_CERTAINTY = 1e-7  # R: a stratum with f < 1e-7 is self-representing and adds no variance


def _group_sum(values: FloatArray, codes: IntArray, n_groups: int) -> FloatArray:
    """Column sums of ``values`` (n x k) by integer ``codes``: an (n_groups x k) array."""
    out = np.empty((n_groups, values.shape[1]), dtype=np.float64)
    for j in range(values.shape[1]):
        out[:, j] = np.bincount(codes, weights=values[:, j], minlength=n_groups)
    return out


def _stage_variance(z: FloatArray, stage: Stage, scale_rows: FloatArray | None) -> FloatArray:
    """Between-cluster variance of ``z`` at one stage, summed over its strata (a k-vector)."""
    n_psu = int(stage.psu.max()) + 1
    totals = _group_sum(z, stage.psu, n_psu)
    first = stage.psu_first  # one row per PSU, in PSU-code order
    stratum = stage.stratum[first]
    n_h = stage.n_sampled[first]
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(np.isinf(stage.pop_size[first]), 1.0, 1.0 - n_h / stage.pop_size[first])
    n_strata = int(stratum.max()) + 1
    stratum_mean = _group_sum(totals, stratum, n_strata) / np.bincount(stratum, minlength=n_strata)[
        :, None
    ].astype(np.float64)
    dev = totals - stratum_mean[stratum]
    lonely = (n_h == 1) & (f >= _CERTAINTY)
    if np.any(lonely):
        raise DesignError(
            f"a stratum has only one PSU at {stage.label} (lonely PSU; lonely_psu='fail')"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where((n_h > 1) & (f >= _CERTAINTY), f * n_h / (n_h - 1), 0.0)
    if scale_rows is not None:
        scale = scale * scale_rows[first]
    variance: FloatArray = (scale[:, None] * dev * dev).sum(axis=0)
    return variance


def svyrecvar(z: FloatArray, design: Design) -> FloatArray:
    """Variance of the totals of the linearised scores ``z`` (n x k): a k-vector (R's svyrecvar).

    The scores are first residualised by the design (calibration-aware variance, as R).
    """
    if z.ndim == 1:
        z = z[:, None]
    z = design.residualise(z)
    first = design.stages[0]
    variance = _stage_variance(z, first, None)
    if len(design.stages) > 1 and not first.with_replacement:
        second = design.stages[1]
        if not second.with_replacement:
            # the second stage counts with weight n/N of the first stage (R: multistage())
            variance = variance + _stage_variance(z, second, first.n_sampled / first.pop_size)
    return variance


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
    n_used = np.full(len(levels), _n_used(w), dtype=np.int64)
    return _result(
        [y] * len(levels),
        levels,
        z.sum(axis=0),
        svyrecvar(z, design),
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
        svyrecvar(z, design),
        n_used,
        srs_var=_srs_variance(values, w, "mean"),
    )


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
            else:
                w_total = wd.sum()
                if w_total <= 0:
                    raise DesignError(
                        f"domain {by_col}={names[d]!r} has no weight with {v!r} observed"
                    )
                est = (wd @ values) / w_total
                z = (values - est[None, :]) * (wd / w_total)[:, None]
            z_cols.append(z)
            est_all.append(est)
            srs_all.append(_srs_variance(values, wd, statistic))
            variables += [v] * len(levels)
            levels_all += levels
            domains += [names[d]] * len(levels)
            n_all += [_n_used(wd)] * len(levels)
    z_all = np.hstack(z_cols)
    return _result(
        variables,
        levels_all,
        np.concatenate(est_all),
        svyrecvar(z_all, design),
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
    return _result(
        [f"{numerator}/{denominator}"],
        [None],
        np.array([est]),
        svyrecvar(z, design),
        np.array([_n_used(w)], dtype=np.int64),
    )
