"""Survey designs: strata, up to three stages of clusters, weights and finite population correction.

`Design` plays the part of R survey's ``svydesign``. It holds, per row, the integer codes and counts
that the Taylor-linearised variance needs (stratum, PSU, number of PSUs in the stratum, population
count at each stage), computed once with vectorised NumPy, so that every estimator is a keyed
aggregation followed by small dense algebra. The lonely-PSU rule (R's
``options(survey.lonely.psu=)``) is a property of the design, read by `svyrecvar`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl

__all__ = ["LONELY_PSU", "Design", "DesignError", "LonelyPSU", "Replicates", "Stage"]

LonelyPSU = Literal["fail", "remove", "certainty", "adjust", "average"]
LONELY_PSU: tuple[LonelyPSU, ...] = ("fail", "remove", "certainty", "adjust", "average")
MAX_STAGES = 3
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class DesignError(ValueError):
    """A design that cannot be built or whose variance cannot be computed."""


@dataclass(frozen=True)
class Stage:
    """One sampling stage, one entry per row.

    ``stratum`` numbers the strata of the stage (from stage 2 on, strata are nested in the cluster
    of the previous stage); ``psu`` numbers the clusters sampled at this stage (nested in their
    stratum); ``n_sampled`` is the number of clusters sampled in the row's stratum; ``pop_size`` is
    the population count of clusters in the stratum (``inf``: with replacement); ``psu_first`` is
    the first row of each PSU (indexed by PSU code); ``parent`` is the row's cluster at the
    previous stage (all 0 at stage 1); ``stratum_first`` is the first row of each stratum.
    """

    stratum: IntArray
    psu: IntArray
    n_sampled: FloatArray
    pop_size: FloatArray
    label: str
    psu_first: IntArray
    parent: IntArray
    stratum_first: IntArray

    @property
    def with_replacement(self) -> bool:
        return bool(np.all(np.isinf(self.pop_size)))


def _as_list(x: str | Sequence[str] | None) -> list[str]:
    if x is None:
        return []
    if isinstance(x, str):
        return [x]
    return list(x)


def _codes(*keys: npt.NDArray[np.generic]) -> IntArray:
    """Dense integer codes of the combination of several key columns (sorted order)."""
    code = np.zeros(len(keys[0]), dtype=np.int64)
    for key in keys:
        _, inv = np.unique(key, return_inverse=True)
        inv = inv.reshape(-1).astype(np.int64)
        code = code * (int(inv.max(initial=0)) + 1) + inv
    _, dense = np.unique(code, return_inverse=True)
    return dense.reshape(-1).astype(np.int64)


def _column(data: pl.DataFrame, name: str, what: str) -> pl.Series:
    if name not in data.columns:
        raise DesignError(f"{what} column {name!r} is not in the data")
    col = data.get_column(name)
    if col.null_count():
        raise DesignError(f"{what} column {name!r} has {col.null_count()} missing values")
    return col


@dataclass(frozen=True)
class Replicates:
    """Replicate weights of a design (R's ``svrepdesign``): the variance of an estimate is
    ``scale * sum(rscales * (theta_r - centre)**2)``, ``centre`` being the full-sample estimate when
    ``mse`` and the mean of the replicate estimates otherwise.

    ``weights`` is n x R (already multiplied by the sampling weights); ``type`` names the method
    (``"JK1"``, ``"JKn"``, ``"BRR"``, ``"Fay"``, ``"bootstrap"``).
    """

    weights: FloatArray
    scale: float
    rscales: FloatArray
    mse: bool
    type: str


class Design:
    """A stratified, multistage (up to three stages of clusters) sample design, as R survey's
    ``svydesign``.

    Parameters
    ----------
    data:
        One row per sampled unit.
    ids:
        Cluster id columns, one per stage (stage 1 = PSU), at most three. ``None`` or ``[]``: every
        row is its own PSU (R's ``id=~1``). Clusters are nested in their stratum and in the cluster
        of the previous stage, so labels may be reused across strata (R's ``nest=TRUE``).
    strata:
        Stratum column(s), one per stage at most. A later stage without its own column is
        stratified by the cluster of the previous stage only (R: the last strata column crossed
        with that cluster, which is the same partition).
    weights:
        Sampling weight column. Without weights (and without ``probs``) the weights are
        ``prod(N / n)`` over the stages, from the fpc (which must then be finite).
    probs:
        Selection probability column (weights = 1 / probs).
    fpc:
        Finite population correction, one column per stage (or none): either population counts
        (number of clusters in the stratum at that stage; ``inf`` for a stage sampled with
        replacement) or sampling fractions (a fraction of 0 is ``inf``, as R). A column is read as
        fractions when all its values are <= 1; this agrees with R's rule (decided over all
        columns at once) whenever R accepts the design. It must be constant within a stratum.
        Without fpc the first stage is taken as sampled with replacement and the variance is R's
        ultimate-cluster variance (later stages ignored). With fpc the variance is R's multistage
        recursion: the stage-k term is the between-cluster variance within the stage-k strata,
        times the product of the sampling fractions n/N of the stages before it; a stage with
        ``N = inf`` makes every later term zero. A stratum whose clusters are all sampled
        (``n = N``) is a certainty stratum and adds no variance, whatever ``lonely_psu`` says.
    lonely_psu:
        A stratum with a single sampled cluster that is not a certainty stratum, at any stage
        (R's ``options(survey.lonely.psu=)``): ``"fail"`` raises `DesignError` when a variance is
        computed; ``"remove"`` and ``"certainty"`` make it add no variance (the same thing for
        Taylor variances); ``"adjust"`` centres its cluster total at the population mean of the
        linearised scores, zero, instead of at the stratum mean (R 4.1's ``onestrat``);
        ``"average"`` leaves it out and multiplies the summed variance of the other strata by
        ``nstrat / nokstrat`` (strata over non-lonely strata; within each cluster of the previous
        stage at later stages). A stratum that keeps several sampled clusters but has one inside a
        domain is not lonely (R's default ``survey.adjust.domain.lonely=FALSE``): the domain's
        clusters are compared with the stratum's zero-total ones.
    """

    def __init__(
        self,
        data: pl.DataFrame,
        *,
        ids: str | Sequence[str] | None = None,
        strata: str | Sequence[str] | None = None,
        weights: str | None = None,
        probs: str | None = None,
        fpc: str | Sequence[str] | None = None,
        lonely_psu: LonelyPSU = "fail",
    ) -> None:
        if lonely_psu not in LONELY_PSU:
            raise DesignError(f"lonely_psu={lonely_psu!r} is not one of {', '.join(LONELY_PSU)}")
        if weights is not None and probs is not None:
            raise DesignError("give weights or probs, not both")
        id_cols = _as_list(ids)
        strata_cols = _as_list(strata)
        fpc_cols = _as_list(fpc)
        n = data.height
        if n == 0:
            raise DesignError("the data has no rows")
        if len(id_cols) > MAX_STAGES:
            raise DesignError(
                f"at most {MAX_STAGES} stages of clusters are supported, got ids={id_cols}"
            )
        n_stages = max(len(id_cols), 1)
        if len(strata_cols) > n_stages:
            raise DesignError(f"{len(strata_cols)} strata columns for {n_stages} stage(s)")
        if fpc_cols and len(fpc_cols) != n_stages:
            raise DesignError(
                f"give an fpc for every stage or none: {len(fpc_cols)} fpc column(s) "
                f"for {n_stages} stage(s)"
            )

        self.data = data
        self.lonely_psu: LonelyPSU = lonely_psu
        self.ids = id_cols
        self.strata = strata_cols
        self.fpc = fpc_cols

        stages: list[Stage] = []
        parent = np.zeros(n, dtype=np.int64)  # the cluster of the previous stage (all 0 at stage 1)
        for s in range(n_stages):
            label = f"stage {s + 1}"
            if s < len(strata_cols):
                skey = _column(data, strata_cols[s], "strata").to_numpy()
                stratum = _codes(parent, skey)
            else:
                stratum = _codes(parent)
            if id_cols:
                ckey = _column(data, id_cols[s], "ids").to_numpy()
                psu = _codes(stratum, ckey)
            else:
                psu = np.arange(n, dtype=np.int64)
            # number of distinct clusters per stratum, broadcast to rows
            first_of_psu = np.unique(psu, return_index=True)[1].astype(np.int64)
            first_of_stratum = np.unique(stratum, return_index=True)[1].astype(np.int64)
            n_per_stratum = np.bincount(stratum[first_of_psu], minlength=int(stratum.max()) + 1)
            n_sampled = n_per_stratum[stratum].astype(np.float64)
            if fpc_cols:
                pop = _population(data, fpc_cols[s], n_sampled, label)
                _check_constant(pop, stratum, fpc_cols[s], label)
            else:
                pop = np.full(n, np.inf)
            stages.append(
                Stage(stratum, psu, n_sampled, pop, label, first_of_psu, parent, first_of_stratum)
            )
            parent = psu
        self.stages: tuple[Stage, ...] = tuple(stages)

        if weights is not None:
            w = _column(data, weights, "weights").cast(pl.Float64).to_numpy()
        elif probs is not None:
            w = 1.0 / _column(data, probs, "probs").cast(pl.Float64).to_numpy()
        elif fpc_cols:
            w = np.ones(n)
            for st, col in zip(self.stages, fpc_cols, strict=True):
                if np.any(np.isinf(st.pop_size)):
                    raise DesignError(
                        f"fpc {col!r} is infinite (sampling with replacement) at {st.label}: "
                        "give weights or probs"
                    )
                w = w * (st.pop_size / st.n_sampled)
        else:
            raise DesignError("give weights, probs or fpc (population counts) to set the weights")
        if np.any(~np.isfinite(w)) or np.any(w < 0):
            source = f"weights {weights!r}" if weights else f"probs {probs!r}" if probs else "fpc"
            raise DesignError(f"the weights from {source} must be finite and non-negative")
        self.weights: FloatArray = w.astype(np.float64)
        self.replicates: Replicates | None = None

    def residualise(self, z: FloatArray) -> FloatArray:
        """The linearised scores ``z`` (n x k) whose design variance is the estimate's variance.

        The identity here; a calibrated design (`impactstudy.weighting`) replaces ``z`` by its
        residuals from the calibration, which makes every estimator calibration-aware.
        """
        return z

    def with_replicates(self, replicates: Replicates) -> Design:
        """A copy of this design whose estimates take their variance from ``replicates``."""
        if replicates.weights.shape[0] != self.n:
            raise DesignError(
                f"replicate weights have {replicates.weights.shape[0]} rows, the design {self.n}"
            )
        new = self.__class__.__new__(self.__class__)
        new.__dict__.update(self.__dict__)
        new.replicates = replicates
        return new

    def stratum_label(self, stage: int, stratum: int) -> str:
        """A readable name of stratum code ``stratum`` at stage index ``stage`` (0 = stage 1), for
        error messages: its strata value and the clusters of the earlier stages it is nested in."""
        row = int(self.stages[stage].stratum_first[stratum])
        parts: list[str] = []
        for s in range(stage):
            if s < len(self.strata):
                parts.append(f"{self.strata[s]}={self.data[self.strata[s]][row]!r}")
            if self.ids:
                parts.append(f"{self.ids[s]}={self.data[self.ids[s]][row]!r}")
        if stage < len(self.strata):
            parts.append(f"{self.strata[stage]}={self.data[self.strata[stage]][row]!r}")
        return ", ".join(parts) if parts else "(the only stratum)"

    @property
    def n(self) -> int:
        """Number of rows (sampled units)."""
        return self.data.height

    def __repr__(self) -> str:
        return (
            f"Design(n={self.n}, ids={self.ids or '~1'}, strata={self.strata or None}, "
            f"fpc={self.fpc or None}, stages={len(self.stages)})"
        )


def _population(data: pl.DataFrame, name: str, n_sampled: FloatArray, label: str) -> FloatArray:
    """Population count of clusters per row from an fpc column of counts or fractions (R's
    ``as.fpc``): fractions when every value is <= 1 (0 meaning with replacement), else counts."""
    col = _column(data, name, "fpc")
    if not col.dtype.is_numeric():
        raise DesignError(f"fpc column {name!r} is not numeric (type {col.dtype})")
    raw = col.cast(pl.Float64).to_numpy()
    if np.any(np.isnan(raw)):
        raise DesignError(f"fpc column {name!r} has NaN values")
    if np.any(raw < 0):
        raise DesignError(f"fpc column {name!r} has negative values")
    if np.all(raw <= 1):
        with np.errstate(divide="ignore"):
            pop: FloatArray = np.where(raw == 0, np.inf, n_sampled / np.where(raw == 0, 1, raw))
    else:
        if np.any(raw < 1):
            raise DesignError(
                f"fpc column {name!r} mixes population counts (> 1) and sampling fractions (< 1)"
            )
        pop = raw.copy()
    if np.any(pop < n_sampled * (1 - 1e-12)):
        raise DesignError(f"fpc {name!r} implies more than 100% sampling in some strata at {label}")
    return pop


def _check_constant(pop: FloatArray, stratum: IntArray, name: str, label: str) -> None:
    """The population count must not vary within a stratum (R warns; we refuse)."""
    k = int(stratum.max()) + 1
    lo = np.full(k, np.inf)
    hi = np.full(k, -np.inf)
    np.minimum.at(lo, stratum, pop)
    np.maximum.at(hi, stratum, pop)
    with np.errstate(invalid="ignore"):
        varies = (hi != lo) & ~(hi - lo <= 1e-9 * np.maximum(1.0, np.abs(hi)))
    if np.any(varies):
        raise DesignError(f"fpc {name!r} must be the same for every row of a stratum at {label}")
