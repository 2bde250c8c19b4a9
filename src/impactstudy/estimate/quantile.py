"""Quantiles with Woodruff confidence intervals, as R survey's ``svyquantile`` (survey 4.1).

The point estimate is R's ``qrule="math"``: the smallest observed value whose weighted empirical
distribution function reaches ``p``. The interval is Woodruff's (``interval.type="mean"``): with
``F`` the estimated proportion of the population at or below the quantile and ``se`` its Taylor SE,
the interval is the inverse, by the same rule, of ``F -/+ t * se``, where ``t`` is the Student
quantile on the design's degrees of freedom (PSUs minus strata). R's ``SE()`` of the quantile is
the interval's width over ``2 t``; the result carries that SE and the Woodruff interval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import polars as pl

from .design import Design, DesignError
from .taylor import RESULT_SCHEMA, _method, _response, design_df, t_quantile
from .variance import variance

__all__ = ["degf", "quantile", "t_quantile"]

FloatArray = npt.NDArray[np.float64]


def degf(design: Design) -> int:
    """Design degrees of freedom (R's ``degf``): stage-1 PSUs minus stage-1 strata, counting those
    holding a row with a non-zero weight (replicate designs: replicates minus one)."""
    return int(design_df(design)[0])


def _qrule_math(values: FloatArray, cumw: FloatArray, p: FloatArray) -> FloatArray:
    """R's qrule="math": the first distinct value whose cumulative weight share reaches p."""
    idx = np.searchsorted(cumw, p, side="left")
    out: FloatArray = values[np.minimum(idx, len(values) - 1)]
    return out


def quantile(
    design: Design,
    y: str,
    probs: float | Sequence[float],
    *,
    alpha: float = 0.05,
    na_rm: bool = False,
) -> pl.DataFrame:
    """Quantiles of ``y`` with Woodruff intervals (R's ``svyquantile(~y, design, probs)``).

    One row per probability, ``level`` is the probability as text (``"0.5"``). ``se`` is R's
    ``SE()``: the Woodruff interval's width over ``2 * qt(1 - alpha/2, degf)``. Unlike the other
    estimators, ``ci_low`` and ``ci_high`` are the Woodruff interval (level ``1 - alpha``), not a
    Wald interval: it is asymmetric and uses the design's degrees of freedom, as R's ``confint``.
    """
    ps = np.atleast_1d(np.asarray(probs, dtype=np.float64))
    if np.any((ps < 0) | (ps > 1)):
        raise DesignError(f"quantile probabilities must be in [0, 1], got {ps.tolist()}")
    values, levels, w = _response(design, y, na_rm)
    if levels != [None]:
        raise DesignError(f"quantiles need a numeric variable; {y!r} is categorical")
    x = values[:, 0]
    used = w > 0
    if not np.any(used):
        raise DesignError(f"no row with {y!r} observed has a positive weight")
    distinct, inverse = np.unique(x[used], return_inverse=True)
    cumw = np.cumsum(np.bincount(inverse.reshape(-1), weights=w[used])) / w[used].sum()
    qhat = _qrule_math(distinct, cumw, ps)
    # Woodruff: SE of the estimated distribution function at each quantile
    weight_total = w.sum()
    below = (x[:, None] <= qhat[None, :]).astype(np.float64)
    share = (w @ below) / weight_total
    z = (below - share[None, :]) * (w / weight_total)[:, None]
    keep = used.astype(np.float64)[:, None]

    def point(weights: FloatArray) -> FloatArray:
        wk = weights * keep
        with np.errstate(divide="ignore", invalid="ignore"):
            out: FloatArray = (wk.T @ below) / wk.sum(axis=0)[:, None]
        return out

    se_share = np.sqrt(np.maximum(variance(design, z, point, share), 0.0))
    df = degf(design)
    crit = t_quantile(1.0 - alpha / 2.0, df)
    low = _qrule_math(distinct, cumw, np.maximum(share - crit * se_share, 0.0))
    high = _qrule_math(distinct, cumw, np.minimum(share + crit * se_share, 1.0))
    n_used = int(np.count_nonzero(used))
    return pl.DataFrame(
        {
            "variable": [y] * len(ps),
            "level": [repr(float(p)) for p in ps],
            "estimate": qhat,
            "se": (high - low) / (2.0 * crit),
            "domain": [None] * len(ps),
            "n": [n_used] * len(ps),
            "ci_low": low,
            "ci_high": high,
            "deff": [None] * len(ps),
            "n_eff": [None] * len(ps),
            "df": [df] * len(ps),
            "method": [_method(design)] * len(ps),
            "ci_method": ["woodruff"] * len(ps),
        },
        schema=RESULT_SCHEMA,
    )
