"""Variance of an estimate: Taylor linearisation (R's ``svyrecvar``) or replicate weights.

Linearisation follows R survey's ``multistage``/``onestage``/``onestrat``: at each stage, the
between-cluster variance of the cluster totals of the linearised scores ``z`` within each stratum,
with its fpc, and R's lonely-PSU rules; without fpc only the first stage counts (ultimate
cluster), with fpc the stage-k term is scaled by the product of the sampling fractions of the
earlier stages. R recurses cluster by cluster; here every stage is a handful of sums by
(stratum, cluster) keys over all rows at once: no per-row Python.

Replicates: the estimator is re-evaluated under every column of replicate weights at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from .design import Design, DesignError, LonelyPSU, Stage

__all__ = ["Point", "group_sums", "replicate_variance", "svyreccov", "svyrecvar", "variance"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

Point = Callable[[FloatArray], FloatArray]
"""An estimator as a function of the weights: an (n x m) weight matrix to the (m x k) estimates."""

_CERTAINTY = 1e-7  # R onestrat: a stratum with 1 - n/N < 1e-7 is self-representing, no variance


def group_sums(values: FloatArray, codes: IntArray, n_groups: int) -> FloatArray:
    """Column sums of ``values`` (n x k) by integer ``codes``: an (n_groups x k) array.

    One ``bincount`` over (code, column) pairs when n x k is moderate (many columns: domains x
    indicators), else one per column (many rows: no n x k index array)."""
    n, k = values.shape
    if k > 1 and n * k <= _FLAT_LIMIT:
        flat = (codes[:, None] * k + np.arange(k)[None, :]).ravel()
        summed = np.bincount(flat, weights=values.ravel(), minlength=n_groups * k)
        flat_out: FloatArray = summed.astype(np.float64, copy=False).reshape(n_groups, k)
        return flat_out
    out = np.empty((n_groups, k), dtype=np.float64)
    for j in range(k):
        out[:, j] = np.bincount(codes, weights=values[:, j], minlength=n_groups)
    return out


_group_sum = group_sums
_FLAT_LIMIT = 8_000_000


def _stage_variance(
    z: FloatArray,
    design: Design,
    index: int,
    present: BoolArray,
    fraction: FloatArray,
) -> FloatArray:
    """The stage's variance term (a k-vector): R's ``onestage`` in every cluster of the previous
    stage, times ``fraction`` (per row: product of the earlier stages' sampling fractions).

    ``z`` is zero outside ``present`` (n x k: the rows R would keep in the subset for each
    column); a stratum with no present row is absent from R's sums, and counts in no
    ``nstrat / nokstrat`` factor.
    """
    stage: Stage = design.stages[index]
    lonely_psu: LonelyPSU = design.lonely_psu
    n_psu = int(stage.psu.max()) + 1
    n_strata = int(stage.stratum.max()) + 1
    totals = _group_sum(z, stage.psu, n_psu)  # P x k
    psu_stratum = stage.stratum[stage.psu_first]
    first = stage.stratum_first  # one row per stratum
    n_h = stage.n_sampled[first]
    pop_h = stage.pop_size[first]
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(np.isinf(pop_h), 1.0, (pop_h - n_h) / pop_h)  # R: (fpc - nPSU) / fpc
    certain = f < _CERTAINTY
    lonely = (n_h == 1) & ~certain
    # R pads the stratum with zero totals for the clusters absent from a subset: with full-design
    # totals (zero for absent clusters) the stratum mean is the sum over n_h.
    mean_h = _group_sum(totals, psu_stratum, n_strata) / n_h[:, None]
    dev = totals - mean_h[psu_stratum]
    if lonely_psu == "adjust":
        dev = np.where(lonely[psu_stratum][:, None], totals, dev)  # centred at zero, not itself
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(certain, 0.0, np.where(n_h > 1, f * n_h / (n_h - 1), f))
    contrib = scale[:, None] * _group_sum(dev * dev, psu_stratum, n_strata)  # S x k
    contrib = contrib * fraction[first][:, None]

    present_h = _group_sum(present.astype(np.float64), stage.stratum, n_strata) > 0  # S x k
    lonely_present = lonely[:, None] & present_h
    if lonely_psu == "fail" and np.any(lonely_present):
        h = int(np.flatnonzero(lonely_present.any(axis=1))[0])
        raise DesignError(
            f"stratum {design.stratum_label(index, h)} has only one PSU at {stage.label} "
            f"(lonely PSU; lonely_psu='fail'; choose 'remove', 'certainty', 'adjust' or "
            "'average')"
        )
    ok = present_h & ~lonely_present if lonely_psu == "average" else present_h
    parent_h = stage.parent[first]  # the cluster of the previous stage each stratum is in
    n_groups = int(parent_h.max()) + 1
    nstrat = _group_sum(present_h.astype(np.float64), parent_h, n_groups)
    nokstrat = _group_sum(ok.astype(np.float64), parent_h, n_groups)
    summed = _group_sum(np.where(ok, contrib, 0.0), parent_h, n_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        # R: sum(na.rm=TRUE) * nstrat / nokstrat; all strata lonely gives 0 * Inf = NaN, as R
        by_group = np.where(nstrat > 0, summed * nstrat / nokstrat, 0.0)
    out: FloatArray = by_group.sum(axis=0)
    return out


def svyrecvar(z: FloatArray, design: Design, *, present: BoolArray | None = None) -> FloatArray:
    """Variance of the totals of the linearised scores ``z`` (n x k): a k-vector (R's svyrecvar).

    The scores are first residualised by the design (calibration-aware variance, as R).
    ``present`` (n or n x k, default all rows) marks the rows R would keep in the subset design
    behind each column (the domain, and rows not missing): it matters only to
    ``lonely_psu="average"``, whose ``nstrat / nokstrat`` counts the strata present in the subset,
    and to ``"fail"``, which ignores lonely strata absent from it. Rows outside it count as zero.
    A calibrated design (one that residualises) keeps every row in a subset, as R's
    ``[.survey.design2`` does (it zeroes the weights instead), so ``present`` is ignored there.
    """
    if z.ndim == 1:
        z = z[:, None]
    calibrated = type(design).residualise is not Design.residualise
    if present is None or calibrated:
        mask = np.ones(z.shape, dtype=np.bool_)
    else:
        if present.shape[0] != z.shape[0]:
            raise DesignError(f"present has {present.shape[0]} rows, the scores {z.shape[0]}")
        mask = np.broadcast_to(present.reshape(z.shape[0], -1), z.shape)
        z = np.where(mask, z, 0.0)
    z = design.residualise(z)
    # without fpc R stops at the first stage (ultimate cluster); with it, R recurses into every
    # stage, each term scaled by n/N of the earlier stages (0 after a with-replacement stage).
    n_used = len(design.stages) if design.fpc else 1
    fraction = np.ones(z.shape[0])
    total = np.zeros(z.shape[1])
    for index in range(n_used):
        total = total + _stage_variance(z, design, index, mask, fraction)
        stage = design.stages[index]
        fraction = fraction * (stage.n_sampled / stage.pop_size)
    return total


def svyreccov(z: FloatArray, design: Design) -> FloatArray:
    """Covariance matrix (k x k) of the totals of the linearised scores ``z`` (n x k), whose
    diagonal is `svyrecvar` (R's ``svyrecvar`` returns the same matrix): every column over the
    full design, the cross-products of PSU deviations weighted as the variance weights them."""
    if z.ndim == 1:
        z = z[:, None]
    z = design.residualise(z)
    n_used = len(design.stages) if design.fpc else 1
    fraction = np.ones(z.shape[0])
    out = np.zeros((z.shape[1], z.shape[1]))
    for index in range(n_used):
        out += _stage_covariance(z, design, index, fraction)
        stage = design.stages[index]
        fraction = fraction * (stage.n_sampled / stage.pop_size)
    return out


def _stage_covariance(
    z: FloatArray, design: Design, index: int, fraction: FloatArray
) -> FloatArray:
    """`_stage_variance` with every row present, as cross-products: sum over PSUs of
    c_p dev_p dev_p' with c_p the stratum's variance weight."""
    stage = design.stages[index]
    n_psu = int(stage.psu.max()) + 1
    n_strata = int(stage.stratum.max()) + 1
    totals = _group_sum(z, stage.psu, n_psu)
    psu_stratum = stage.stratum[stage.psu_first]
    first = stage.stratum_first
    n_h = stage.n_sampled[first]
    pop_h = stage.pop_size[first]
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(np.isinf(pop_h), 1.0, (pop_h - n_h) / pop_h)
    certain = f < _CERTAINTY
    lonely = (n_h == 1) & ~certain
    if design.lonely_psu == "fail" and np.any(lonely):
        h = int(np.flatnonzero(lonely)[0])
        raise DesignError(
            f"stratum {design.stratum_label(index, h)} has only one PSU at {stage.label} "
            f"(lonely PSU; lonely_psu='fail')"
        )
    mean_h = _group_sum(totals, psu_stratum, n_strata) / n_h[:, None]
    dev = totals - mean_h[psu_stratum]
    if design.lonely_psu == "adjust":
        dev = np.where(lonely[psu_stratum][:, None], totals, dev)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(certain, 0.0, np.where(n_h > 1, f * n_h / (n_h - 1), f))
    scale = scale * fraction[first]
    ok = ~lonely if design.lonely_psu == "average" else np.ones(n_strata, dtype=np.bool_)
    parent_h = stage.parent[first]
    n_groups = int(parent_h.max()) + 1
    nstrat = np.bincount(parent_h, minlength=n_groups).astype(np.float64)
    nokstrat = np.bincount(parent_h, weights=ok.astype(np.float64), minlength=n_groups)
    if np.any((nokstrat == 0) & (nstrat > 0)):
        # every stratum of a cluster lonely under "average": R (and svyrecvar) give NaN
        return np.full((z.shape[1], z.shape[1]), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = nstrat / nokstrat
    weight_h = np.where(ok, scale * factor[parent_h], 0.0)
    c = weight_h[psu_stratum]
    cov: FloatArray = (dev * c[:, None]).T @ dev
    return cov


def replicate_variance(design: Design, point: Point, estimate: FloatArray) -> FloatArray:
    """Replicate variance ``scale * sum_r rscales_r (theta_r - centre)^2`` of an estimator given as
    a function of the weights (R's ``svrVar``): ``centre`` is the full-sample ``estimate`` when the
    replicates are ``mse``, else the mean of the replicate estimates."""
    rep = design.replicates
    if rep is None:
        raise DesignError("the design has no replicate weights")
    thetas = point(rep.weights)  # R x k
    centre = estimate[None, :] if rep.mse else thetas.mean(axis=0)[None, :]
    dev = thetas - centre
    out: FloatArray = rep.scale * (rep.rscales[:, None] * dev * dev).sum(axis=0)
    return out


def variance(
    design: Design,
    z: FloatArray,
    point: Point,
    estimate: FloatArray,
    *,
    present: BoolArray | None = None,
) -> FloatArray:
    """The variance of an estimate: from the replicates when the design has them, else Taylor
    (``z`` being its linearised scores; ``present`` as `svyrecvar`)."""
    if design.replicates is not None:
        return replicate_variance(design, point, estimate)
    return svyrecvar(z, design, present=present)
