"""Weighting: post-stratification, raking and linear (GREG) calibration of a design's weights, and
replicate weights, as R survey's ``postStratify``, ``rake``, ``calibrate`` and ``as.svrepdesign``.

A calibrated design is a `CalibratedDesign` (a `Design` with new weights and replayable weighting
`Step`s), so the estimators of `impactstudy.estimate` give its point estimates and, through
`Design.residualise`, its calibration-aware standard errors (R's ``svyrecvar`` with
``postStrata``). See docs/api.md.
"""

from .calibrate import CalibratedDesign, Step, WeightingError, calibrate, post_stratify, rake
from .replicates import jk1

__all__ = [
    "CalibratedDesign",
    "Step",
    "WeightingError",
    "calibrate",
    "jk1",
    "post_stratify",
    "rake",
]
