"""Weighting: post-stratification, raking and linear (GREG) calibration of a design's weights, and
JK1 replicate weights, as R survey's ``postStratify``, ``rake``, ``calibrate`` and
``as.svrepdesign(type="JK1")``.

A calibrated design is a `CalibratedDesign` (a `Design` with new weights), so the estimators of
`impactstudy.estimate` give its point estimates. Its calibration-aware standard errors come from
`mean` and `total` here: the linearised variable is replaced by its residuals from the calibration
(R's ``svyrecvar`` with ``postStrata``) before the design variance (`estimate.svyrecvar`).
See docs/api.md.
"""

from .calibrate import (
    CalibratedDesign,
    ReplicateDesign,
    WeightingError,
    calibrate,
    jk1,
    mean,
    post_stratify,
    rake,
    total,
)

__all__ = [
    "CalibratedDesign",
    "ReplicateDesign",
    "WeightingError",
    "calibrate",
    "jk1",
    "mean",
    "post_stratify",
    "rake",
    "total",
]
