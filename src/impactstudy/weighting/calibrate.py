"""Calibration of a design's weights and calibration-aware variance, as R survey.

- `post_stratify` (R ``postStratify``): weights scaled within each post-stratum to its population
  count; variance residuals are taken within post-strata.
- `rake` (R ``rake``): iterated post-stratification on several margins, stopped as R stops it
  (the change of the weighted cross-table of all margins below ``epsilon``); variance residuals are
  R's iterated post-stratification residuals (10 sweeps over the margins).
- `calibrate` (R ``calibrate``): GREG weights ``w (1 + x'eta)`` meeting the population totals of
  ``x`` exactly (``calfun="linear"``), or R's ``grake`` Newton iterations for bounded linear
  ("truncated linear"), raking and logit calibration; string / categorical columns become R's
  treatment-contrast dummies (``stypeH``, ``stypeM``). Variance residuals are the weighted
  least-squares residuals of the linearised variable on ``x`` scaled by the g-weights (R's
  ``greg_calibration`` in ``svyrecvar``).

Every step records `Diagnostics` (iterations, convergence, largest margin error, g-weight range).

Everything is NumPy on integer category codes (``bincount``), with no per-row Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl

from impactstudy.estimate import Design
from impactstudy.estimate.variance import group_sums

__all__ = [
    "CalFun",
    "CalibratedDesign",
    "Diagnostics",
    "Step",
    "WeightingError",
    "calibrate",
    "post_stratify",
    "rake",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Residual = Callable[[FloatArray], FloatArray]
CalFun = Literal["linear", "raking", "logit"]

_R_RAKE_SWEEPS = 10  # R's svyrecvar iterates the raking projections 10 times


class WeightingError(ValueError):
    """A calibration that cannot be done: empty category, inconsistent targets, no convergence."""


@dataclass(frozen=True)
class Diagnostics:
    """How a weighting step went: ``iterations`` used, whether it ``converged``, the largest
    absolute difference between a weighted margin (category count or calibration total) and its
    target after the step (``max_margin_error``; for trimming, the change of the weight total),
    and the range ``(min, max)`` of the g-weights (new / old weight, over units with a positive
    old weight)."""

    iterations: int
    converged: bool
    max_margin_error: float
    g_range: tuple[float, float]


def _g_range(
    new: FloatArray, old: FloatArray, rows: npt.NDArray[np.bool_] | None = None
) -> tuple[float, float]:
    """Range of ``new / old`` over the rows with ``old > 0`` (and ``rows``, when given)."""
    keep = old > 0 if rows is None else (old > 0) & rows
    if not np.any(keep):
        return (float("nan"), float("nan"))
    g = new[keep] / old[keep]
    return (float(g.min()), float(g.max()))


@dataclass(frozen=True)
class Step:
    """One weighting step, replayable: ``reweight`` maps any weight vector (the design's, or a
    replicate's) to the weights after the step, so replicate weights are re-weighted through every
    step; ``residual`` maps linearised scores to their residuals for the calibration-aware
    variance; ``diagnostics`` says how the step went on the design's own weights."""

    name: str
    reweight: Callable[[FloatArray], FloatArray]
    residual: Residual
    diagnostics: Diagnostics | None = None


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
        if design.replicates is not None:
            # weighting a replicate design re-weights every replicate (R's svyrep methods)
            from .replicates import reweight_replicates  # replicates imports this module

            new.replicates = reweight_replicates(design.replicates, step)
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
    """A margin's name and its category label per row (joint margins joined with ':'); a single
    string, categorical or enum column is returned as it is (its codes are read directly)."""
    cols = [margin] if isinstance(margin, str) else list(margin)
    for c in cols:
        if c not in design.data.columns:
            raise WeightingError(f"margin {c!r} is not a column of the data")
        if design.data.get_column(c).null_count():
            raise WeightingError(f"margin {c!r} has missing values")
    name = ":".join(cols)
    if len(cols) == 1:
        col = design.data.get_column(cols[0])
        if col.dtype in (pl.String, pl.Categorical) or isinstance(col.dtype, pl.Enum):
            return name, col
        return name, col.cast(pl.String)
    labels = design.data.select(
        pl.concat_str([pl.col(c).cast(pl.String) for c in cols], separator=":")
    ).to_series()
    return name, labels


def _label_codes(labels: pl.Series, index: Mapping[str, int]) -> IntArray:
    """``index[label]`` per row (-1 for a label not in ``index``), through the column's enum
    codes: one hash of each row's string, then a gather."""
    if isinstance(labels.dtype, pl.Enum):
        enum = labels
    else:
        text = labels.cast(pl.String)
        enum = text.cast(pl.Enum(text.unique().sort().to_list()))
    assert isinstance(enum.dtype, pl.Enum)
    categories = [str(c) for c in enum.dtype.categories.to_list()]
    lookup = np.array([index.get(c, -1) for c in categories], dtype=np.int64)
    physical = enum.to_physical().cast(pl.Int64).to_numpy()
    codes: IntArray = lookup[physical]
    return codes


def _codes(
    labels: pl.Series, population: Mapping[str, float], name: str, weights: FloatArray
) -> tuple[IntArray, FloatArray]:
    """Category code per row and the population count of each code, checking both ways."""
    cats = [str(k) for k in population]
    targets = np.array([float(population[k]) for k in population], dtype=np.float64)
    if np.any(~np.isfinite(targets)) or np.any(targets < 0):
        raise WeightingError(f"margin {name!r}: population counts must be finite and >= 0")
    index = {c: i for i, c in enumerate(cats)}
    codes = _label_codes(labels, index)
    if np.any(codes < 0):
        unknown = sorted(
            str(v) for v in labels.cast(pl.String).filter(pl.Series(codes < 0)).unique().to_list()
        )
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
    """R svyrecvar's post-stratification residual: x - psw * (sum(x oldw/psw) / sum(oldw)).

    Rows with zero weight (nonrespondents kept as rows, units outside a subset) are outside the
    sample: they take no part and keep their score, which gives R's SE for the design without them
    (and for R's ``subset``)."""
    psw = np.where(new_w == 0, 1.0, new_w)
    denom = np.bincount(codes, weights=old_w, minlength=k)

    def residual(x: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            means = group_sums(x * (old_w / psw)[:, None], codes, k) / denom[:, None]
        out: FloatArray = x - np.nan_to_num(means)[codes] * new_w[:, None]
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
    error = float(np.max(np.abs(np.bincount(codes, weights=new, minlength=len(targets)) - targets)))
    step = Step(
        f"post_stratify({name})",
        lambda w: _poststratify_weights(w, codes, targets),
        residual,
        Diagnostics(1, True, error, _g_range(new, design.weights)),
    )
    return CalibratedDesign.derive(design, new, step)


@dataclass(frozen=True)
class _Cells:
    """The cross-classification of the raking margins: each row's cell and each cell's category
    on every margin. Raking multiplies every row of a cell by the same factor, so it runs on the
    table of cell totals and touches the rows once at the end."""

    cell: IntArray
    n_cells: int
    margin_codes: list[IntArray]

    @classmethod
    def of(cls, keyed: list[tuple[str, IntArray, FloatArray]], n: int) -> _Cells:
        sizes = [len(t) for _, _, t in keyed]
        space = float(np.prod(sizes, dtype=np.float64))
        cell = np.zeros(n, dtype=np.int64)
        for (_, codes, _), k in zip(keyed, sizes, strict=True):
            cell = cell * k + codes
        if space <= 4 * n + 1024:  # codes are dense enough: no sort
            n_cells = int(space)
            index = np.arange(n_cells, dtype=np.int64)
        else:
            index, inverse = np.unique(cell, return_inverse=True)
            cell = inverse.reshape(-1).astype(np.int64)
            n_cells = len(index)
        margin_codes = [c.astype(np.int64) for c in np.unravel_index(index, sizes)]
        return cls(cell, n_cells, margin_codes)


def _rake_table(
    table0: FloatArray,
    cells: _Cells,
    keyed: list[tuple[str, IntArray, FloatArray]],
    max_iter: int,
    tol: float,
) -> tuple[FloatArray, list[FloatArray], int]:
    """Iterated post-stratification of the cell table ``table0`` (R's stopping rule: the change
    of the cross-table below ``tol``). Returns each cell's factor, the factors after each margin
    in the last sweep, and the number of sweeps."""
    factor = np.ones(cells.n_cells)
    table = table0
    after: list[FloatArray] = []
    for sweep in range(max_iter):
        old = table
        after = []
        for (_, _, targets), codes in zip(keyed, cells.margin_codes, strict=True):
            counts = np.bincount(codes, weights=table, minlength=len(targets))
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(counts > 0, targets / counts, 0.0)
            factor = factor * ratio[codes]
            table = table0 * factor
            after.append(factor)
        if float(np.max(np.abs(table - old))) < tol:
            return factor, after, sweep + 1
    worst = max(
        zip(keyed, cells.margin_codes, strict=True),
        key=lambda m: float(
            np.max(np.abs(np.bincount(m[1], weights=table, minlength=len(m[0][2])) - m[0][2]))
        ),
    )
    raise WeightingError(
        f"raking did not converge after {max_iter} iterations; margin {worst[0][0]!r} is "
        f"furthest from its population counts"
    )


def _rake_weights(
    w0: FloatArray,
    keyed: list[tuple[str, IntArray, FloatArray]],
    cells: _Cells,
    max_iter: int,
    tol: float,
) -> tuple[FloatArray, list[FloatArray], int]:
    """Raked weights, each margin's factor per cell after its post-stratification in the last
    sweep, and the number of sweeps."""
    table0 = np.bincount(cells.cell, weights=w0, minlength=cells.n_cells).astype(np.float64)
    factor, after, sweeps = _rake_table(table0, cells, keyed, max_iter, tol)
    new: FloatArray = w0 * factor[cells.cell]
    return new, after, sweeps


def _rake_residual(
    projections: list[tuple[IntArray, FloatArray, npt.NDArray[np.bool_], FloatArray, int]],
) -> Residual:
    """R's raking residual: ``_R_RAKE_SWEEPS`` Gauss-Seidel sweeps of within-category centring
    over the margins. The sweeps are linear in ``x``, so they run on the (categories x k)
    coefficients: ``x - sum_m psw_m s_m[codes_m]``, with ``s_m`` updated from
    ``b_m - sum_m' G_mm' s_m'`` (``b_m`` the category averages of ``x / psw_m``, ``G`` the
    categories' cross-averages) — two passes over the n x k scores instead of two per sweep."""
    scaled = [
        (codes, np.where(pos, 1.0 / psw, 0.0), np.where(pos, psw, 0.0), n_k, k)
        for codes, psw, pos, n_k, k in projections
    ]
    cross: dict[tuple[int, int], FloatArray] = {}
    for a, (codes_a, inv_a, _, n_a, k_a) in enumerate(scaled):
        for b, (codes_b, _, psw_b, _, k_b) in enumerate(scaled):
            g = np.bincount(codes_a * k_b + codes_b, weights=inv_a * psw_b, minlength=k_a * k_b)
            with np.errstate(divide="ignore", invalid="ignore"):
                cross[(a, b)] = g.reshape(k_a, k_b) / n_a[:, None]

    def residual(x: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            averages = [
                group_sums(x * inv[:, None], codes, k) / n_k[:, None]
                for codes, inv, _, n_k, k in scaled
            ]
        coef = [np.zeros((k, x.shape[1])) for *_, k in scaled]
        for _ in range(_R_RAKE_SWEEPS):
            for a in range(len(scaled)):
                ave = averages[a] - sum(cross[(a, b)] @ coef[b] for b in range(len(scaled)))
                coef[a] = coef[a] + np.nan_to_num(ave)
        out = x.copy()
        for (codes, _, psw0, _, _), c in zip(scaled, coef, strict=True):
            out -= psw0[:, None] * c[codes]
        return out

    return residual


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
    warns). Margins whose counts sum to different totals are an error. Rows with zero weight stay
    zero and are left out of the variance residuals (R's SE for the design without them).
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
    cells = _Cells.of(keyed, design.n)
    tol = epsilon if epsilon >= 1 else epsilon * float(w0.sum())
    w, after, sweeps = _rake_weights(w0, keyed, cells, max_iter, tol)

    def residual(x: FloatArray) -> FloatArray:
        # Built on first use: rows with zero weight (e.g. nonrespondents kept as rows) are
        # outside the sample and left out of R's within-category averages (R gives NaN there),
        # so a design with zero-weight rows gives the SE of R's design without those rows.
        if not lazy:
            projections: list[
                tuple[IntArray, FloatArray, npt.NDArray[np.bool_], FloatArray, int]
            ] = []
            for (_, codes, targets), factor in zip(keyed, after, strict=True):
                psw = w0 * factor[cells.cell]
                pos = psw > 0
                n_k = np.bincount(codes, weights=pos.astype(np.float64), minlength=len(targets))
                projections.append(
                    (
                        codes,
                        np.where(pos, psw, 1.0).astype(np.float64),
                        pos,
                        n_k.astype(np.float64),
                        len(targets),
                    )
                )
            lazy.append(_rake_residual(projections))
        return lazy[0](x)

    lazy: list[Residual] = []

    names = ", ".join(name for name, _, _ in keyed)

    def reweight(w_in: FloatArray) -> FloatArray:
        return _rake_weights(w_in, keyed, cells, max_iter, tol)[0]

    error = max(
        float(np.max(np.abs(np.bincount(codes, weights=w, minlength=len(t)) - t)))
        for _, codes, t in keyed
    )
    diagnostics = Diagnostics(sweeps, True, error, _g_range(w, w0))
    return CalibratedDesign.derive(
        design, w, Step(f"rake({names})", reweight, residual, diagnostics)
    )


@dataclass(frozen=True)
class _ModelMatrix:
    """R's ``model.matrix`` of the calibration formula: columns, their R names, and for each
    column the data column (term) it comes from."""

    mm: FloatArray
    names: list[str]
    terms: list[str]
    absent: dict[str, tuple[str, str]]  # R name of a level with no rows -> (column, level)


def _levels(col: pl.Series) -> tuple[list[str], pl.Series]:
    """A categorical column's levels (R factor order) and its values as strings."""
    if col.dtype == pl.Boolean:
        return ["FALSE", "TRUE"], col.replace_strict(
            {False: "FALSE", True: "TRUE"}, return_dtype=pl.String
        )
    values = col.cast(pl.String)
    if isinstance(col.dtype, pl.Enum):
        return [str(c) for c in col.dtype.categories.to_list()], values
    return sorted(str(v) for v in values.unique().to_list()), values


def _model_matrix(design: Design, cols: list[str], intercept: bool) -> _ModelMatrix:
    """The model matrix of ``~ col1 + col2 ...`` (with ``-1`` when not ``intercept``), with
    string, categorical, enum and boolean columns as treatment-contrast dummies named like R's
    (``stypeH``): the first level is the baseline, except for the first factor of a model
    without intercept, which gets a dummy for every level (R's rule)."""
    parts: list[FloatArray] = [np.ones(design.n)] if intercept else []
    names = ["(Intercept)"] if intercept else []
    terms = ["(Intercept)"] if intercept else []
    absent: dict[str, tuple[str, str]] = {}
    full_dummies = not intercept
    for c in cols:
        if c not in design.data.columns:
            raise WeightingError(f"calibration variable {c!r} is not a column of the data")
        col = design.data.get_column(c)
        if col.null_count():
            raise WeightingError(
                f"calibration variable {c!r} has {col.null_count()} missing values"
            )
        if col.dtype.is_numeric():
            parts.append(col.cast(pl.Float64).to_numpy())
            names.append(c)
            terms.append(c)
            continue
        if not (
            col.dtype in (pl.String, pl.Boolean, pl.Categorical) or isinstance(col.dtype, pl.Enum)
        ):
            raise WeightingError(
                f"calibration variable {c!r} must be numeric or categorical, not {col.dtype}"
            )
        levels, values = _levels(col)
        present = set(values.unique().to_list())
        codes = values.replace_strict(
            {lv: i for i, lv in enumerate(levels)}, return_dtype=pl.Int64
        ).to_numpy()
        keep = levels if full_dummies else levels[1:]
        for lv in keep:
            i = levels.index(lv)
            parts.append((codes == i).astype(np.float64))
            names.append(f"{c}{lv}")
            terms.append(c)
            if lv not in present:
                absent[f"{c}{lv}"] = (c, lv)
        full_dummies = False
    if not parts:
        raise WeightingError("calibration needs at least one variable or the intercept")
    return _ModelMatrix(np.column_stack(parts), names, terms, absent)


def _targets(
    model: _ModelMatrix,
    population: Sequence[float] | Mapping[str, float],
    design: Design,
) -> FloatArray:
    """Population totals in model-matrix order, checked against the sample."""
    names = model.names
    if isinstance(population, Mapping):
        extra = [k for k in population if k not in names]
        unknown = []
        for k in extra:
            if k in model.absent or float(population[k]) == 0:
                continue
            unknown.append(k)
        if unknown:
            raise WeightingError(
                f"calibration totals given for {unknown}, which are not columns of the "
                f"calibration model {names} (categories are named like R: column then level)"
            )
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
    if np.any(~np.isfinite(targets)):
        raise WeightingError("calibration totals must be finite")
    sample = design.weights @ model.mm
    for j, name in enumerate(names):
        if model.terms[j] == name:
            continue  # a numeric variable or the intercept
        column, level = model.terms[j], name[len(model.terms[j]) :]
        if targets[j] < 0:
            raise WeightingError(
                f"calibration variable {column!r}: category {level!r} has a negative population "
                f"total {targets[j]:.15g}"
            )
        if targets[j] > 0 and sample[j] <= 0:
            raise WeightingError(
                f"calibration variable {column!r}: category {level!r} has a population total "
                f"({targets[j]:.15g}) but no respondents (no positive weight)"
            )
    if "(Intercept)" in names:
        size = targets[0]
        for column in dict.fromkeys(t for t, n in zip(model.terms, names, strict=True) if t != n):
            idx = [j for j, t in enumerate(model.terms) if t == column and names[j] != t]
            if targets[idx].sum() > size * (1 + 1e-12):
                raise WeightingError(
                    f"calibration variable {column!r}: the totals of categories "
                    f"{[names[j] for j in idx]} sum to {targets[idx].sum():.15g}, more than the "
                    f"population size (Intercept) {size:.15g}; the targets are inconsistent"
                )
    return targets


def _absent_positive(
    model: _ModelMatrix, population: Sequence[float] | Mapping[str, float]
) -> None:
    """A category with a population total but no rows in the sample is an error naming it."""
    if not isinstance(population, Mapping):
        return
    for name, (column, level) in model.absent.items():
        if float(population.get(name, 0.0)) > 0:
            raise WeightingError(
                f"calibration variable {column!r}: category {level!r} has a population total "
                f"({float(population[name]):.15g}) but no respondents"
            )
    for key in population:
        if key in model.names or float(population[key]) == 0:
            continue
        factors = dict.fromkeys(t for t, n in zip(model.terms, model.names, strict=True) if t != n)
        for term in factors:
            if key.startswith(term):
                col = term
                raise WeightingError(
                    f"calibration variable {col!r}: category {key[len(col) :]!r} has a population "
                    f"total ({float(population[key]):.15g}) but no respondents"
                )


_EPS = float(np.finfo(np.float64).eps)


def _calfun(
    calfun: CalFun, lo: float, hi: float
) -> tuple[Callable[[FloatArray], FloatArray], Callable[[FloatArray], FloatArray]]:
    """R's ``cal.linear``, ``cal.raking``, ``cal.logit``: ``Fm1(u) = F(u) - 1`` and ``dF``."""
    if calfun == "linear":

        def fm1(u: FloatArray) -> FloatArray:
            out: FloatArray = np.minimum(np.maximum(u + 1.0, lo), hi) - 1.0
            return out

        def df(u: FloatArray) -> FloatArray:
            return ((u < hi - 1.0) & (u > lo - 1.0)).astype(np.float64)

        return fm1, df
    if calfun == "raking":

        def fm1r(u: FloatArray) -> FloatArray:
            out: FloatArray = np.minimum(np.maximum(np.exp(u), lo), hi) - 1.0
            return out

        def dfr(u: FloatArray) -> FloatArray:
            # R compares u (not exp(u)) with the bounds minus one; copied as is
            out: FloatArray = np.where((u < hi - 1.0) & (u > lo - 1.0), np.exp(u), 0.0)
            return out

        return fm1r, dfr
    a = (hi - lo) / ((hi - 1.0) * (1.0 - lo))

    def fm1l(u: FloatArray) -> FloatArray:
        e = np.exp(a * u)
        out: FloatArray = (lo * (hi - 1.0) + hi * (1.0 - lo) * e) / (
            hi - 1.0 + (1.0 - lo) * e
        ) - 1.0
        return out

    def dfl(u: FloatArray) -> FloatArray:
        e = np.exp(a * u)
        den = hi - 1.0 + (1.0 - lo) * e
        out: FloatArray = (
            hi * (1.0 - lo) * e * a / den
            - ((lo * (hi - 1.0) + hi * (1.0 - lo) * e) * ((1.0 - lo) * e * a)) / den**2
        )
        return out

    return fm1l, dfl


def _ginv(m: FloatArray) -> FloatArray:
    """``MASS::ginv(m, tol = 256 * eps)``, the pseudo-inverse R's ``grake`` uses."""
    u, d, vt = np.linalg.svd(m)
    keep = d > max(256 * _EPS * d[0], 0.0)
    out: FloatArray = (vt[keep].T / d[keep]) @ u[:, keep].T
    return out


@dataclass(frozen=True)
class _Grake:
    g: FloatArray
    iterations: int
    converged: bool
    misfit: FloatArray  # |population - achieved| / (1 + |population|), per column


def _grake(
    mm: FloatArray,
    ww: FloatArray,
    targets: FloatArray,
    calfun: CalFun,
    bounds: tuple[float, float],
    maxit: int,
    epsilon: float,
) -> _Grake:
    """R ``grake``: Newton iterations for ``g = F(x'eta)`` meeting the totals, step-halving on
    non-finite values, convergence when every ``|misfit| / (1 + |total|) < epsilon``; weights are
    first rescaled when every total is over 20 times its sample total, as R does."""
    lo, hi = bounds
    fm1, df = _calfun(calfun, lo, hi)
    sample_total = ww @ mm
    eta = np.zeros(mm.shape[1])
    xeta = mm @ eta
    deriv = df(xeta)
    iteration = 1
    with np.errstate(divide="ignore", invalid="ignore"):
        scales = targets / sample_total
    scale: float | None = None
    if float(np.min(scales)) > 20:
        scale = float(np.mean(scales))
        ww = ww * scale
        sample_total = sample_total * scale
    converged = False
    with np.errstate(over="ignore", invalid="ignore"):
        while True:
            tmat = (mm * (ww * deriv)[:, None]).T @ mm
            misfit = targets - sample_total - (ww * fm1(xeta)) @ mm
            deta = _ginv(tmat) @ misfit
            eta = eta + deta
            xeta = mm @ eta
            g = 1.0 + fm1(xeta)
            deriv = df(xeta)
            while iteration < maxit and not (np.all(np.isfinite(g)) and np.all(np.isfinite(deriv))):
                iteration += 1
                deta = deta / 2
                eta = eta - deta
                xeta = mm @ eta
                g = 1.0 + fm1(xeta)
                deriv = df(xeta)
            misfit = targets - sample_total - (ww * fm1(xeta)) @ mm
            rel = np.abs(misfit) / (1.0 + np.abs(targets))
            if np.all(rel < epsilon):
                converged = True
                break
            iteration += 1
            if iteration > maxit:
                break
    if scale is not None:
        g = g * scale
    return _Grake(g, iteration, converged, np.where(np.isfinite(rel), rel, np.inf))


def _greg_residual(mm: FloatArray, w: FloatArray, g: FloatArray) -> Residual:
    """R svyrecvar's ``greg_calibration`` residual: ``qr.resid(qr(mm sqrt(w)), z / s) * s`` with
    ``s = g sqrt(w)``; rows with zero weight stay zero."""
    whalf = np.sqrt(w)
    q, _ = np.linalg.qr(mm * whalf[:, None])
    scale = g * whalf

    def residual(z: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(scale[:, None] != 0, z / scale[:, None], 0.0)
        res: FloatArray = (u - q @ (q.T @ u)) * scale[:, None]
        return res

    return residual


def calibrate(
    design: Design,
    x: str | Sequence[str],
    population: Sequence[float] | Mapping[str, float],
    *,
    intercept: bool = True,
    calfun: CalFun = "linear",
    bounds: tuple[float, float] = (-np.inf, np.inf),
    maxit: int = 50,
    epsilon: float = 1e-7,
) -> CalibratedDesign:
    """Calibrate the weights to population totals (R ``calibrate(design, ~x, population, ...)``).

    ``x`` names the calibration variables: numeric columns enter as they are, string /
    categorical / enum / boolean columns as R's treatment-contrast dummies named column + level
    (``stypeH``, ``stypeM``; ``xTRUE``). With ``intercept`` the model has a constant first (R's
    ``~x``), whose total is the population size. ``population`` gives the totals as a mapping of
    those R names (``"(Intercept)"``, ``"stypeH"``, ``"api99"``) or a sequence in model-matrix
    order.

    ``calfun="linear"`` without bounds is GREG (R's ``regcalibrate``: ``w (1 + x'eta)``, one
    solve). Otherwise the g-weights ``new / old = F(x'eta)`` come from R's ``grake`` Newton
    iterations (``maxit``, ``epsilon`` as R): ``"linear"`` with ``bounds`` is R's truncated linear
    calibration, ``"raking"`` is ``exp`` (raking on the margins when ``x`` is categorical; the same
    weights as `rake`), ``"logit"`` needs finite bounds ``lo < 1 < hi``. ``bounds`` bound g.

    Not converging (e.g. bounds that cannot be met) is a `WeightingError` naming the total furthest
    from its target, where R stops with "Calibration failed". The variance residuals are R's
    ``greg_calibration`` ones for every calfun.
    """
    cols = [x] if isinstance(x, str) else list(x)
    if calfun not in ("linear", "raking", "logit"):
        raise WeightingError(f"calfun must be 'linear', 'raking' or 'logit', not {calfun!r}")
    lo, hi = float(bounds[0]), float(bounds[1])
    if not lo < hi or lo > 1 or hi < 1:
        raise WeightingError(f"bounds {bounds} on the g-weights must satisfy lower <= 1 <= upper")
    if calfun == "logit" and not (np.isfinite(lo) and np.isfinite(hi) and lo < 1 < hi):
        raise WeightingError(
            f"logit calibration needs finite bounds with lower < 1 < upper, got {bounds}"
        )
    model = _model_matrix(design, cols, intercept)
    _absent_positive(model, population)
    targets = _targets(model, population, design)
    mm, names = model.mm, model.names
    w = design.weights
    # R drops a column with zero sample total whose total is zero (an empty category)
    sample = w @ mm
    keep = ~((sample == 0) & (targets == 0))
    mm, targets = mm[:, keep], targets[keep]
    names = [n for n, k in zip(names, keep, strict=True) if k]
    if np.linalg.matrix_rank((mm * w[:, None]).T @ mm) < len(names):
        raise WeightingError(f"calibration variables {names} are collinear in the sample")
    unbounded = calfun == "linear" and not (np.isfinite(lo) or np.isfinite(hi))
    label = f"calibrate({', '.join(names)}" + ("" if unbounded else f"; {calfun}, {bounds}") + ")"

    def solve(w_in: FloatArray) -> tuple[FloatArray, int]:
        if unbounded:
            new_w = _greg_weights(w_in, mm, targets)
            achieved = new_w @ mm
            bad = np.abs(achieved - targets) > 1e-7 * (1.0 + np.abs(targets))
            if np.any(bad):
                raise WeightingError(
                    f"calibration did not reach the totals of {np.array(names)[bad].tolist()}"
                )
            return new_w, 1
        fit = _grake(mm, w_in, targets, calfun, (lo, hi), maxit, epsilon)
        if not fit.converged:
            worst = int(np.argmax(fit.misfit))
            raise WeightingError(
                f"{calfun} calibration did not converge after {fit.iterations} iterations: "
                f"margin {names[worst]!r} is furthest from its population total (relative misfit "
                f"{fit.misfit[worst]:.3g})"
                + (
                    f"; the bounds {bounds} on the g-weights may be impossible to meet"
                    if np.isfinite(lo) or np.isfinite(hi)
                    else ""
                )
            )
        return w_in * fit.g, fit.iterations

    new, iterations = solve(w)
    g = new / np.where(w == 0, 1.0, w)
    error = float(np.max(np.abs(new @ mm - targets)))
    step = Step(
        label,
        lambda w_in: solve(w_in)[0],
        _greg_residual(mm, w, g),
        Diagnostics(iterations, True, error, _g_range(new, w)),
    )
    return CalibratedDesign.derive(design, new, step)


def _greg_weights(w: FloatArray, mm: FloatArray, targets: FloatArray) -> FloatArray:
    """Linear calibration weights ``w (1 + x'eta)`` meeting ``targets`` (the totals of ``mm``)."""
    tmat = (mm * w[:, None]).T @ mm
    eta = np.linalg.solve(tmat, targets - w @ mm)
    new: FloatArray = w * (1.0 + mm @ eta)
    return new
