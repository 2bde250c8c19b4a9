"""Weight trimming with redistribution, as R survey's ``trimWeights``."""

from __future__ import annotations

import numpy as np

from impactstudy.estimate import Design

from .calibrate import (
    CalibratedDesign,
    Diagnostics,
    FloatArray,
    Step,
    WeightingError,
    _g_range,
)

__all__ = ["trim"]


def _trim_pass(w: FloatArray, lower: float, upper: float) -> tuple[FloatArray, bool]:
    """One R ``trimWeights`` pass on the positive weights: clip to the bounds and share the
    trimmed amount equally (an added constant, as R) among the units that were inside them."""
    pos = w > 0
    outside = pos & ((w < lower) | (w > upper))
    if not np.any(outside):
        return w, False
    inside = pos & ~outside
    if not np.any(inside):
        raise WeightingError(
            f"trim: every weight is outside the bounds [{lower:.15g}, {upper:.15g}]; no unit is "
            f"left to take the trimmed weight, the bounds cannot be met"
        )
    new = np.where(pos, np.clip(w, lower, upper), 0.0)
    new = np.where(inside, new + float((w - new).sum()) / float(inside.sum()), new)
    return new, True


def _trim_weights(
    w: FloatArray, lower: float, upper: float, strict: bool, max_iter: int
) -> tuple[FloatArray, int, bool]:
    """Trimmed weights, the number of passes, and whether every weight ends inside the bounds."""
    pos = w > 0
    n_pos, total = int(pos.sum()), float(w.sum())
    if n_pos * lower > total * (1 + 1e-12) or n_pos * upper < total * (1 - 1e-12):
        raise WeightingError(
            f"trim: bounds [{lower:.15g}, {upper:.15g}] cannot be met: {n_pos} weights summing to "
            f"{total:.15g} (mean {total / max(n_pos, 1):.15g}) cannot all lie within them"
        )
    passes = 0
    while True:
        w, changed = _trim_pass(w, lower, upper)
        if changed:
            passes += 1
        if not strict or not changed:
            break
        if passes >= max_iter:
            raise WeightingError(
                f"trim: strict trimming to [{lower:.15g}, {upper:.15g}] did not settle after "
                f"{max_iter} passes"
            )
    pos = w > 0
    inside = bool(np.all(~pos | ((w >= lower) & (w <= upper))))
    return w, passes, inside


def trim(
    design: Design,
    *,
    lower: float = -np.inf,
    upper: float = np.inf,
    strict: bool = False,
    max_iter: int = 1000,
) -> CalibratedDesign:
    """Trim the weights to ``[lower, upper]`` (R ``trimWeights(design, upper, lower, strict)``).

    Weights outside the bounds are set to the bound and the trimmed amount (net of the amount added
    to raise weights to ``lower``) is shared equally among the untrimmed units, as R does, so the
    weight total is kept. One pass can push untrimmed weights past a bound; ``strict`` repeats
    passes until none is (R's recursion; at most ``max_iter`` passes). Rows with zero weight
    (nonrespondents kept as rows, units outside a domain) are out of the sample: they stay zero and
    take no share (R would give them one; identical when no weight is zero).

    Bounds that no set of weights with this total can meet are a `WeightingError`. Like R, trimming
    leaves the variance residuals alone (the trimmed weights are treated as fixed): the Step's
    residual is the identity, after the residuals of earlier calibration steps.
    """
    if not lower < upper:
        raise WeightingError(f"trim: lower bound {lower} must be below the upper bound {upper}")
    w0 = design.weights
    new, passes, inside = _trim_weights(w0, lower, upper, strict, max_iter)

    def residual(z: FloatArray) -> FloatArray:
        return z

    diagnostics = Diagnostics(
        passes, inside, abs(float(new.sum()) - float(w0.sum())), _g_range(new, w0)
    )
    step = Step(
        f"trim([{lower:g}, {upper:g}]{', strict' if strict else ''})",
        lambda w: _trim_weights(w, lower, upper, strict, max_iter)[0],
        residual,
        diagnostics,
    )
    return CalibratedDesign.derive(design, new, step)
