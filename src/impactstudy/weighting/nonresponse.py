"""Nonresponse adjustment by weighting classes.

Within each class the respondents' weights are multiplied by (weight total of all sampled units) /
(weight total of the respondents); nonrespondents keep their rows with weight 0, so strata, PSUs
and domains stay intact. R has no function for it; its equivalent is ``postStratify`` of the
respondents to the classes' full-sample weight totals, which gives the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from impactstudy.estimate import Design

from .calibrate import (
    CalibratedDesign,
    Diagnostics,
    FloatArray,
    IntArray,
    Step,
    WeightingError,
    _g_range,
    _key,
    _ps_residual,
)

__all__ = ["nonresponse_adjust"]


def _respondent(design: Design, column: str) -> FloatArray:
    """The response indicator as 0/1 floats: a boolean column, or numeric 0/1."""
    if column not in design.data.columns:
        raise WeightingError(f"respondent column {column!r} is not a column of the data")
    col = design.data.get_column(column)
    if col.null_count():
        raise WeightingError(f"respondent column {column!r} has {col.null_count()} missing values")
    if col.dtype == pl.Boolean:
        return col.cast(pl.Float64).to_numpy()
    if col.dtype.is_numeric():
        r = col.cast(pl.Float64).to_numpy()
        if np.all((r == 0) | (r == 1)):
            return r
    raise WeightingError(f"respondent column {column!r} must be boolean (or 0/1), not {col.dtype}")


def _adjust(
    w: FloatArray, r: FloatArray, codes: IntArray, labels: list[str], name: str
) -> tuple[FloatArray, FloatArray]:
    """Adjusted weights, and each class's weight total over all sampled units."""
    k = len(labels)
    sampled: FloatArray = np.bincount(codes, weights=w, minlength=k).astype(np.float64)
    responded = np.bincount(codes, weights=w * r, minlength=k)
    empty = [labels[i] for i in np.flatnonzero((sampled > 0) & (responded <= 0))]
    if empty:
        raise WeightingError(
            f"nonresponse class {name!r}: classes {empty} have sampled units (positive weight) but "
            f"no respondents"
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(responded > 0, sampled / responded, 0.0)
    new: FloatArray = w * r * factor[codes]
    return new, sampled


def nonresponse_adjust(
    design: Design, *, respondent: str, classes: str | Sequence[str]
) -> CalibratedDesign:
    """Weighting-class nonresponse adjustment.

    ``respondent`` is a boolean (or 0/1) column; ``classes`` one column or several (joint classes,
    labels joined with ':'). Respondents' weights are multiplied by their class's ratio of sampled
    to responding weight totals; nonrespondents get weight 0 but keep their rows. A class with
    sampled units but no respondents is a `WeightingError` naming it.

    Variance: the Step's residual is the post-stratification residual of the respondents on the
    classes, treating the classes' full-sample totals as known (R's ``svyrecvar`` for
    ``postStratify`` of the respondents: ``x - new_w * sum_c(x old_w / new_w) / sum_c(old_w)`` with
    ``old_w`` the respondents' weights before adjustment; nonrespondent rows stay 0). That is the
    variance R gives for the same weights; it ignores the sampling variability of the full-sample
    class totals, as R's post-stratification ignores it for population counts. ``reweight`` replays
    the adjustment on any weight vector (replicate weights included).
    """
    r = _respondent(design, respondent)
    name, key = _key(design, classes)
    labels = key.cast(pl.String)
    label_list = [str(v) for v in labels.unique().sort().to_list()]
    codes = (
        labels.replace_strict({lab: i for i, lab in enumerate(label_list)}, return_dtype=pl.Int64)
        .to_numpy()
        .astype(np.int64)
    )
    k = len(label_list)
    w0 = design.weights
    new, sampled = _adjust(w0, r, codes, label_list, name)
    residual = _ps_residual(codes, new, w0 * r, k)

    error = float(np.max(np.abs(np.bincount(codes, weights=new, minlength=k) - sampled)))
    diagnostics = Diagnostics(1, True, error, _g_range(new, w0, r > 0))
    step = Step(
        f"nonresponse_adjust({respondent}; {name})",
        lambda w: _adjust(w, r, codes, label_list, name)[0],
        residual,
        diagnostics,
    )
    return CalibratedDesign.derive(design, new, step)
