"""Taylor-linearised estimates: totals, means and proportions with standard errors, as R survey.

Every estimator reduces the data to a linearised score ``z`` (one column per estimate), and
the variance is R survey's ``svyrecvar``: the between-PSU variance of the PSU totals of ``z``
within each stratum, with its fpc, plus, when the first stage is sampled without replacement and
the second stage has an fpc, the between-SSU variance within each PSU, scaled by the PSU's
first-stage sampling fraction. All of it is sums by (stratum, PSU) keys: no per-row Python.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl

from .design import Design, DesignError, Stage

__all__ = ["RESULT_SCHEMA", "mean", "svyrecvar", "total"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

RESULT_SCHEMA: dict[str, pl.DataType] = {
    "variable": pl.String(),
    "level": pl.String(),
    "estimate": pl.Float64(),
    "se": pl.Float64(),
}

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
    """Variance of the totals of the linearised scores ``z`` (n x k): a k-vector (R's svyrecvar)."""
    if z.ndim == 1:
        z = z[:, None]
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


def _result(y: str, levels: list[str | None], est: FloatArray, var: FloatArray) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "variable": [y] * len(levels),
            "level": levels,
            "estimate": est,
            "se": np.sqrt(np.maximum(var, 0.0)),
        },
        schema=RESULT_SCHEMA,
    )


def total(design: Design, y: str, *, na_rm: bool = False) -> pl.DataFrame:
    """Estimated population total of ``y`` (R's ``svytotal``), with its Taylor SE.

    For a categorical ``y`` (string, categorical, enum or boolean) one row per level: the estimated
    number of population units in each category. Columns: variable, level, estimate, se.
    """
    values, levels, w = _response(design, y, na_rm)
    z = values * w[:, None]
    return _result(y, levels, z.sum(axis=0), svyrecvar(z, design))


def mean(design: Design, y: str, *, na_rm: bool = False) -> pl.DataFrame:
    """Estimated population mean of ``y`` (R's ``svymean``), the ratio of two weighted totals.

    Its SE is that of the linearised variable ``w * (y - mean) / sum(w)``. For a categorical ``y``,
    one row per level: the estimated proportion of each category.
    Columns: variable, level, estimate, se.
    """
    values, levels, w = _response(design, y, na_rm)
    weight_total = w.sum()
    if weight_total <= 0:
        raise DesignError(f"the weights of the rows with {y!r} observed sum to zero")
    est = (w @ values) / weight_total
    z = (values - est[None, :]) * (w / weight_total)[:, None]
    return _result(y, levels, est, svyrecvar(z, design))
