"""Replicate weights created from a design (R's ``as.svrepdesign``).

A replicate design is the same `Design` carrying `Replicates`; every estimator of
`impactstudy.estimate` then takes its variance from the replicates.
"""

from __future__ import annotations

import numpy as np

from impactstudy.estimate import Design, Replicates

from .calibrate import WeightingError

__all__ = ["jk1"]


def jk1(design: Design) -> Design:
    """JK1 replicate weights of an unstratified cluster design (R ``as.svrepdesign(type="JK1")``).

    Replicate r drops PSU r and multiplies the other PSUs' weights by n/(n-1); scale (n-1)/n and,
    as R does when the design has a first-stage fpc, rscales 1 - n/N; centred on the replicate mean
    (R's ``mse=FALSE``).
    """
    first = design.stages[0]
    if int(first.stratum.max()) > 0:
        raise WeightingError("JK1 needs an unstratified design (use JKn for strata)")
    n_psu = int(first.psu.max()) + 1
    if n_psu < 2:
        raise WeightingError("JK1 needs at least two PSUs")
    factor = n_psu / (n_psu - 1)
    rep = np.full((design.n, n_psu), factor) * design.weights[:, None]
    rep[np.arange(design.n), first.psu] = 0.0
    pop = float(first.pop_size[0])
    fpc = 1.0 if np.isinf(pop) else 1.0 - n_psu / pop
    return design.with_replicates(
        Replicates(rep, (n_psu - 1) / n_psu, np.full(n_psu, fpc), mse=False, type="JK1")
    )
