"""Calibration of a design's weights and calibration-aware variance, as R survey.

- `post_stratify` (R ``postStratify``): weights scaled within each post-stratum to its population
  count; variance residuals are taken within post-strata.
- `rake` (R ``rake``): iterated post-stratification on several margins, stopped as R stops it
  (the change of the weighted cross-table of all margins below ``epsilon``); variance residuals are
  R's iterated post-stratification residuals (10 sweeps over the margins).
- `calibrate` (R ``calibrate(..., calfun="linear")``): GREG weights ``w (1 + x'eta)`` meeting the
  population totals of ``x`` exactly; variance residuals are the weighted least-squares residuals of
  the linearised variable on ``x``.

Everything is NumPy on integer category codes (``bincount``), with no per-row Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from impactstudy.estimate import Design

__all__ = [
    "CalibratedDesign",
    "Step",
    "WeightingError",
    "calibrate",
    "post_stratify",
    "rake",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Residual = Callable[[FloatArray], FloatArray]

_R_RAKE_SWEEPS = 10  # R's svyrecvar iterates the raking projections 10 times


class WeightingError(ValueError):
    """A calibration that cannot be done: empty category, inconsistent targets, no convergence."""


@dataclass(frozen=True)
class Step:
    """One weighting step, replayable: ``reweight`` maps any weight vector (the design's, or a
    replicate's) to the weights after the step, so replicate weights are re-weighted through every
    step; ``residual`` maps linearised scores to their residuals for the calibration-aware
    variance."""

    name: str
    reweight: Callable[[FloatArray], FloatArray]
    residual: Residual


class CalibratedDesign(Design):
    """A `Design` whose weights have been calibrated.

    It is the original design (same data, strata, clusters and fpc) with new ``weights``, so every
    estimator of `impactstudy.estimate` gives its point estimates, and its `residualise` makes their
    standard errors calibration-aware. ``steps`` are the weighting steps in the order applied and
    ``base_weights`` the weights before the first of them.
    """

    steps: tuple[Step, ...]
    base_weights: FloatArray

    @classmethod
    def derive(cls, design: Design, weights: FloatArray, step: Step) -> CalibratedDesign:
        new = cls.__new__(cls)
        new.__dict__.update(design.__dict__)
        new.weights = weights
        if isinstance(design, CalibratedDesign):
            new.steps = (*design.steps, step)
        else:
            new.steps = (step,)
            new.base_weights = design.weights
        return new

    def residualise(self, z: FloatArray) -> FloatArray:
        """The calibration residuals of the linearised variable ``z`` (n x k), steps in the order
        applied (R's ``svyrecvar`` loop over ``postStrata``)."""
        for step in self.steps:
            z = step.residual(z)
        return z

    def __repr__(self) -> str:
        return f"CalibratedDesign(n={self.n}, steps={[s.name for s in self.steps]})"


def _key(design: Design, margin: str | Sequence[str]) -> tuple[str, pl.Series]:
    """A margin's name and its category label per row (joint margins joined with ':')."""
    cols = [margin] if isinstance(margin, str) else list(margin)
    for c in cols:
        if c not in design.data.columns:
            raise WeightingError(f"margin {c!r} is not a column of the data")
        if design.data.get_column(c).null_count():
            raise WeightingError(f"margin {c!r} has missing values")
    name = ":".join(cols)
    labels = design.data.select(
        pl.concat_str([pl.col(c).cast(pl.String) for c in cols], separator=":")
    ).to_series()
    return name, labels


def _codes(
    labels: pl.Series, population: Mapping[str, float], name: str, weights: FloatArray
) -> tuple[IntArray, FloatArray]:
    """Category code per row and the population count of each code, checking both ways."""
    cats = [str(k) for k in population]
    targets = np.array([float(population[k]) for k in population], dtype=np.float64)
    if np.any(~np.isfinite(targets)) or np.any(targets < 0):
        raise WeightingError(f"margin {name!r}: population counts must be finite and >= 0")
    index = {c: i for i, c in enumerate(cats)}
    codes = labels.replace_strict(index, default=-1, return_dtype=pl.Int64).to_numpy()
    if np.any(codes < 0):
        unknown = sorted(str(v) for v in labels.filter(pl.Series(codes < 0)).unique().to_list())
        raise WeightingError(
            f"margin {name!r}: categories {unknown} are in the sample but have no population count"
        )
    counts = np.bincount(codes, weights=weights, minlength=len(cats))
    empty = [c for c, n, t in zip(cats, counts, targets, strict=True) if n <= 0 and t > 0]
    if empty:
        raise WeightingError(
            f"margin {name!r}: categories {empty} have a population count but no respondents "
            f"(no positive weight)"
        )
    return codes.astype(np.int64), targets


def _ps_residual(codes: IntArray, new_w: FloatArray, old_w: FloatArray, k: int) -> Residual:
    """R svyrecvar's post-stratification residual: x - psw * (sum(x oldw/psw) / sum(oldw))."""
    psw = np.where((new_w == 0) & (old_w == 0), 1.0, new_w)
    denom = np.bincount(codes, weights=old_w, minlength=k)

    def residual(x: FloatArray) -> FloatArray:
        ratio = x * (old_w / psw)[:, None]
        out = np.empty_like(x)
        for j in range(x.shape[1]):
            with np.errstate(divide="ignore", invalid="ignore"):
                means = np.bincount(codes, weights=ratio[:, j], minlength=k) / denom
            out[:, j] = x[:, j] - np.nan_to_num(means)[codes] * psw
        return out

    return residual


def _poststratify_weights(w: FloatArray, codes: IntArray, targets: FloatArray) -> FloatArray:
    counts = np.bincount(codes, weights=w, minlength=len(targets))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(counts > 0, targets / counts, 0.0)
    new: FloatArray = w * ratio[codes]
    return new


def post_stratify(
    design: Design, strata: str | Sequence[str], population: Mapping[str, float]
) -> CalibratedDesign:
    """Post-stratify (R ``postStratify``): weighted count of each post-stratum = its population.

    ``strata`` is a column (or several, for joint post-strata, labels joined by ':');
    ``population`` maps each category label to its population count. A category with a count but no
    respondents, or a sample category without a count, is a `WeightingError` naming the margin.
    """
    name, labels = _key(design, strata)
    codes, targets = _codes(labels, population, name, design.weights)
    new = _poststratify_weights(design.weights, codes, targets)
    residual = _ps_residual(codes, new, design.weights, len(targets))
    step = Step(
        f"post_stratify({name})", lambda w: _poststratify_weights(w, codes, targets), residual
    )
    return CalibratedDesign.derive(design, new, step)


def _rake_weights(
    w0: FloatArray,
    keyed: list[tuple[str, IntArray, FloatArray]],
    cell: IntArray,
    n_cells: int,
    max_iter: int,
    tol: float,
) -> tuple[FloatArray, list[FloatArray]]:
    """Raked weights, and the weights after each margin's post-stratification in the last sweep."""
    w = w0
    old_table = np.bincount(cell, weights=w, minlength=n_cells)
    after: list[FloatArray] = []
    for _ in range(max_iter):
        after = []
        for _, codes, targets in keyed:
            w = _poststratify_weights(w, codes, targets)
            after.append(w)
        new_table = np.bincount(cell, weights=w, minlength=n_cells)
        if float(np.max(np.abs(new_table - old_table))) < tol:
            return w, after
        old_table = new_table
    worst = max(
        keyed,
        key=lambda m: float(
            np.max(np.abs(np.bincount(m[1], weights=w, minlength=len(m[2])) - m[2]))
        ),
    )
    raise WeightingError(
        f"raking did not converge after {max_iter} iterations; margin {worst[0]!r} is "
        f"furthest from its population counts"
    )


def rake(
    design: Design,
    margins: Mapping[str, Mapping[str, float]]
    | Sequence[tuple[str | Sequence[str], Mapping[str, float]]],
    *,
    max_iter: int = 100,
    epsilon: float = 1e-10,
) -> CalibratedDesign:
    """Rake (R ``rake``): post-stratify on each margin in turn until the weights settle.

    ``margins`` maps a column to ``{category: population count}`` (or is a list of
    ``(column or columns, counts)`` pairs, for joint margins). As in R, a sweep over all margins is
    repeated until the weighted cross-table of all margin columns changes by less than ``epsilon``
    (an absolute count when ``epsilon >= 1``, else a fraction of the sum of the design weights),
    at most ``max_iter`` sweeps. R's defaults (``maxit=10, epsilon=1``) stop after a few sweeps
    with margins still off by a fraction of a unit; the defaults here iterate to convergence.
    Not converging is a `WeightingError` naming the margin furthest from its targets (R only
    warns). Margins whose counts sum to different totals are an error.
    """
    items = list(margins.items()) if isinstance(margins, Mapping) else list(margins)
    if not items:
        raise WeightingError("rake needs at least one margin")
    w0 = design.weights
    keyed: list[tuple[str, IntArray, FloatArray]] = []
    for margin, population in items:
        name, labels = _key(design, margin)
        codes, targets = _codes(labels, population, name, w0)
        keyed.append((name, codes, targets))
    sums = [float(t.sum()) for _, _, t in keyed]
    for (name, _, _), s in zip(keyed, sums, strict=True):
        if abs(s - sums[0]) > 1e-9 * max(abs(sums[0]), 1.0):
            raise WeightingError(
                f"margin {name!r}: population counts sum to {s:.15g}, but margin "
                f"{keyed[0][0]!r} sums to {sums[0]:.15g}; the targets are inconsistent"
            )
    # the cross-table of all margins, for R's convergence check
    cell = np.zeros(design.n, dtype=np.int64)
    for _, codes, targets in keyed:
        cell = cell * len(targets) + codes
    _, cell = np.unique(cell, return_inverse=True)
    cell = cell.reshape(-1).astype(np.int64)
    n_cells = int(cell.max()) + 1
    tol = epsilon if epsilon >= 1 else epsilon * float(w0.sum())

    w, after = _rake_weights(w0, keyed, cell, n_cells, max_iter, tol)
    projections = [
        (codes, np.where(psw == 0, 1.0, psw), len(targets))
        for (_, codes, targets), psw in zip(keyed, after, strict=True)
    ]

    def residual(x: FloatArray) -> FloatArray:
        x = x.copy()
        for _ in range(_R_RAKE_SWEEPS):
            for codes, psw, k in projections:
                n_k = np.bincount(codes, minlength=k).astype(np.float64)
                for j in range(x.shape[1]):
                    with np.errstate(divide="ignore", invalid="ignore"):
                        ave = np.bincount(codes, weights=x[:, j] / psw, minlength=k) / n_k
                    x[:, j] = x[:, j] - psw * np.nan_to_num(ave)[codes]
        return x

    names = ", ".join(name for name, _, _ in keyed)

    def reweight(w_in: FloatArray) -> FloatArray:
        return _rake_weights(w_in, keyed, cell, n_cells, max_iter, tol)[0]

    return CalibratedDesign.derive(design, w, Step(f"rake({names})", reweight, residual))


def calibrate(
    design: Design,
    x: str | Sequence[str],
    population: Sequence[float] | Mapping[str, float],
    *,
    intercept: bool = True,
) -> CalibratedDesign:
    """Linear (GREG) calibration (R ``calibrate(design, ~x, population, calfun="linear")``).

    ``x`` names numeric columns; with ``intercept`` the model has a constant term first (R's
    ``~x``), whose population total is the population size. ``population`` gives the totals in the
    order (intercept, *x) or as a mapping with keys ``"(Intercept)"`` and the column names. The new
    weights are ``w (1 + x'eta)`` and reproduce the totals exactly.
    """
    cols = [x] if isinstance(x, str) else list(x)
    names = (["(Intercept)"] if intercept else []) + cols
    if isinstance(population, Mapping):
        missing = [n for n in names if n not in population]
        if missing:
            raise WeightingError(f"calibration totals missing for {missing}")
        targets = np.array([float(population[n]) for n in names])
    else:
        targets = np.asarray(population, dtype=np.float64)
    if targets.shape != (len(names),):
        raise WeightingError(
            f"{len(names)} calibration totals needed ({names}), got {len(targets)}"
        )
    parts = [np.ones(design.n)] if intercept else []
    for c in cols:
        if c not in design.data.columns:
            raise WeightingError(f"calibration variable {c!r} is not a column of the data")
        col = design.data.get_column(c)
        if col.null_count() or not col.dtype.is_numeric():
            raise WeightingError(
                f"calibration variable {c!r} must be numeric without missing values"
            )
        parts.append(col.cast(pl.Float64).to_numpy())
    mm = np.column_stack(parts)
    w = design.weights
    if np.linalg.matrix_rank((mm * w[:, None]).T @ mm) < len(names):
        raise WeightingError(f"calibration variables {names} are collinear in the sample")
    new = _greg_weights(w, mm, targets)
    achieved = new @ mm
    bad = np.abs(achieved - targets) > 1e-7 * (1.0 + np.abs(targets))
    if np.any(bad):
        raise WeightingError(f"calibration did not reach the totals of {np.array(names)[bad]}")
    g = new / np.where(w == 0, 1.0, w)
    whalf = np.sqrt(w)
    q, _ = np.linalg.qr(mm * whalf[:, None])
    scale = g * whalf

    def residual(z: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(scale[:, None] != 0, z / scale[:, None], 0.0)
        res: FloatArray = (u - q @ (q.T @ u)) * scale[:, None]
        return res

    step = Step(
        f"calibrate({', '.join(names)})", lambda w_in: _greg_weights(w_in, mm, targets), residual
    )
    return CalibratedDesign.derive(design, new, step)


def _greg_weights(w: FloatArray, mm: FloatArray, targets: FloatArray) -> FloatArray:
    """Linear calibration weights ``w (1 + x'eta)`` meeting ``targets`` (the totals of ``mm``)."""
    tmat = (mm * w[:, None]).T @ mm
    eta = np.linalg.solve(tmat, targets - w @ mm)
    new: FloatArray = w * (1.0 + mm @ eta)
    return new
