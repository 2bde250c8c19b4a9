"""Survey designs: strata, up to two stages of clusters, weights and finite population corrections.

`Design` plays the part of R survey's ``svydesign``. It holds, per row, the integer codes and counts
that the Taylor-linearised variance needs (stratum, PSU, number of PSUs in the stratum, finite
population correction at each stage), computed once with vectorised NumPy, so that every
estimator is a keyed aggregation followed by small dense algebra.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl

__all__ = ["Design", "DesignError", "LonelyPSU", "Replicates", "Stage"]

LonelyPSU = Literal["fail"]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class DesignError(ValueError):
    """A design that cannot be built or whose variance cannot be computed."""


@dataclass(frozen=True)
class Stage:
    """One sampling stage, one entry per row.

    ``stratum`` numbers the strata of the stage (at stage 2, strata are nested in the stage-1 PSU);
    ``psu`` numbers the clusters sampled at this stage (nested in their stratum);
    ``n_sampled`` is the number of clusters sampled in the row's stratum;
    ``pop_size`` is the population count of clusters in the stratum (``inf``: with replacement);
    ``psu_first`` is the first row of each PSU (indexed by PSU code).
    """

    stratum: IntArray
    psu: IntArray
    n_sampled: FloatArray
    pop_size: FloatArray
    label: str
    psu_first: IntArray

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
    """A stratified, clustered (one or two stages) sample design, as R survey's ``svydesign``.

    Parameters
    ----------
    data:
        One row per sampled unit.
    ids:
        Cluster id columns, one per stage (stage 1 = PSU). ``None`` or ``[]``: every row is its own
        PSU (R's ``id=~1``). Clusters are nested in their stratum and in the cluster of the previous
        stage, so labels may be reused across strata.
    strata:
        Stratum column(s), one per stage at most; a stage without one is unstratified.
    weights:
        Sampling weight column. Without weights (and without ``probs``) the weights are
        ``1 / prod(n / N)`` over the stages, from the fpc.
    probs:
        Selection probability column (weights = 1 / probs).
    fpc:
        Finite population correction per stage: either population counts (number of clusters in
        the stratum) or sampling fractions; a column is read as fractions when all its values are
        <= 1 (R's rule). Without fpc the first stage is taken as sampled with replacement and the
        variance is R's ultimate-cluster variance. The second-stage variance term is added when
        the first stage has an fpc and the second stage has one too.
    lonely_psu:
        What to do with a stratum that has a single sampled PSU (and is not a certainty stratum):
        ``"fail"`` raises `DesignError`.
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
        if lonely_psu != "fail":
            raise DesignError(f"lonely_psu={lonely_psu!r} is not supported yet; use 'fail'")
        if weights is not None and probs is not None:
            raise DesignError("give weights or probs, not both")
        id_cols = _as_list(ids)
        strata_cols = _as_list(strata)
        fpc_cols = _as_list(fpc)
        n = data.height
        if n == 0:
            raise DesignError("the data has no rows")
        if len(id_cols) > 2:
            raise DesignError(f"at most two stages of clusters are supported, got ids={id_cols}")
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
        parent = np.zeros(
            n, dtype=np.int64
        )  # the cluster of the previous stage (all one at stage 1)
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
            first_of_psu = np.unique(psu, return_index=True)[1]
            n_per_stratum = np.bincount(stratum[first_of_psu], minlength=int(stratum.max()) + 1)
            n_sampled = n_per_stratum[stratum].astype(np.float64)
            if fpc_cols:
                raw = _column(data, fpc_cols[s], "fpc").cast(pl.Float64).to_numpy()
                if np.any(raw <= 0):
                    raise DesignError(f"fpc column {fpc_cols[s]!r} has values <= 0")
                pop = n_sampled / raw if np.all(raw <= 1) else raw.copy()
                _check_constant(pop, stratum, fpc_cols[s])
                if np.any(pop < n_sampled * (1 - 1e-12)):
                    raise DesignError(
                        f"fpc {fpc_cols[s]!r} implies more than 100% sampling in some strata "
                        f"at {label}"
                    )
            else:
                pop = np.full(n, np.inf)
            stages.append(Stage(stratum, psu, n_sampled, pop, label, first_of_psu.astype(np.int64)))
            parent = psu
        self.stages: tuple[Stage, ...] = tuple(stages)

        if weights is not None:
            w = _column(data, weights, "weights").cast(pl.Float64).to_numpy()
        elif probs is not None:
            w = 1.0 / _column(data, probs, "probs").cast(pl.Float64).to_numpy()
        elif fpc_cols:
            w = np.ones(n)
            for st in self.stages:
                w = w * (st.pop_size / st.n_sampled)
        else:
            raise DesignError("give weights, probs or fpc (population counts) to set the weights")
        if np.any(~np.isfinite(w)) or np.any(w < 0):
            raise DesignError("weights must be finite and non-negative")
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

    @property
    def n(self) -> int:
        """Number of rows (sampled units)."""
        return self.data.height

    def __repr__(self) -> str:
        return (
            f"Design(n={self.n}, ids={self.ids or '~1'}, strata={self.strata or None}, "
            f"fpc={self.fpc or None}, stages={len(self.stages)})"
        )


def _check_constant(pop: FloatArray, stratum: IntArray, name: str) -> None:
    k = int(stratum.max()) + 1
    lo = np.full(k, np.inf)
    hi = np.full(k, -np.inf)
    np.minimum.at(lo, stratum, pop)
    np.maximum.at(hi, stratum, pop)
    if np.any(hi - lo > 1e-9 * np.maximum(1.0, np.abs(hi))):
        raise DesignError(f"fpc {name!r} must be the same for every row of a stratum")
