"""Quantiles with Woodruff confidence intervals, as R survey's ``svyquantile`` (survey 4.1).

The point estimate is R's ``qrule="math"``: the smallest observed value whose weighted empirical
distribution function reaches ``p``. The interval is Woodruff's (``interval.type="mean"``): with
``F`` the estimated proportion of the population at or below the quantile and ``se`` its Taylor SE,
the interval is the inverse, by the same rule, of ``F -/+ t * se``, where ``t`` is the Student
quantile on the design's degrees of freedom (PSUs minus strata). R's ``SE()`` of the quantile is
the interval's width over ``2 t``; the result carries that SE and the Woodruff interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import polars as pl

from .design import Design, DesignError
from .taylor import RESULT_SCHEMA, _response
from .variance import svyrecvar

__all__ = ["degf", "quantile", "t_quantile"]

FloatArray = npt.NDArray[np.float64]


def degf(design: Design) -> int:
    """Design degrees of freedom (R's ``degf``): stage-1 PSUs minus stage-1 strata."""
    first = design.stages[0]
    return int(first.psu.max()) + 1 - (int(first.stratum.max()) + 1)


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


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t with a positive integer ``df`` (R's ``qt(p, df)``), by bisection."""
    if df < 1:
        raise DesignError(f"the design has {df} degrees of freedom; a t quantile needs at least 1")
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
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
    se_share = np.sqrt(np.maximum(svyrecvar(z, design), 0.0))
    crit = t_quantile(1.0 - alpha / 2.0, degf(design))
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
        },
        schema=RESULT_SCHEMA,
    )
