"""Variance of an estimate: Taylor linearisation (R's ``svyrecvar``) or replicate weights.

Linearisation: the between-PSU variance of the PSU totals of the linearised scores ``z`` within
each stratum, with its fpc, plus, when the first stage is sampled without replacement and the second
stage has an fpc, the between-SSU variance within each PSU, scaled by the PSU's first-stage
sampling fraction. All of it is sums by (stratum, PSU) keys: no per-row Python.

Replicates: the estimator is re-evaluated under every column of replicate weights at once.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from .design import Design, DesignError, Stage

__all__ = ["Point", "replicate_variance", "svyrecvar", "variance"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

Point = Callable[[FloatArray], FloatArray]
"""An estimator as a function of the weights: an (n x m) weight matrix to the (m x k) estimates."""

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


def variance(design: Design, z: FloatArray, point: Point, estimate: FloatArray) -> FloatArray:
    """The variance of an estimate: from the replicates when the design has them, else Taylor
    (``z`` being its linearised scores)."""
    if design.replicates is not None:
        return replicate_variance(design, point, estimate)
    return svyrecvar(z, design)
