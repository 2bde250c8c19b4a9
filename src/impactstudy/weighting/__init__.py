"""Weighting: post-stratification, raking, calibration (linear, truncated linear, raking, logit),
trimming and weighting-class nonresponse adjustment of a design's weights, and replicate weights,
as R survey's ``postStratify``, ``rake``, ``calibrate``, ``trimWeights`` and ``as.svrepdesign``.

A calibrated design is a `CalibratedDesign` (a `Design` with new weights and replayable weighting
`Step`s), so the estimators of `impactstudy.estimate` give its point estimates and, through
`Design.residualise`, its calibration-aware standard errors (R's ``svyrecvar`` with
``postStrata``). Replicate weights (`replicate`) are re-weighted through every step.

`weight(valid, study) -> WeightedSample` is the stage's entry in the study pipeline: each group's
design, base weights and calibration to its frame. See docs/api.md.
"""

from .calibrate import (
    CalFun,
    CalibratedDesign,
    Diagnostics,
    Step,
    WeightingError,
    calibrate,
    post_stratify,
    rake,
)
from .nonresponse import nonresponse_adjust
from .replicates import (
    ReplicateType,
    hadamard,
    jk1,
    replicate,
    replicate_df,
    reweight_replicates,
)
from .study import WeightedGroup, WeightedSample, weight
from .trim import trim

__all__ = [
    "CalFun",
    "CalibratedDesign",
    "Diagnostics",
    "ReplicateType",
    "Step",
    "WeightedGroup",
    "WeightedSample",
    "WeightingError",
    "calibrate",
    "hadamard",
    "jk1",
    "nonresponse_adjust",
    "post_stratify",
    "rake",
    "replicate",
    "replicate_df",
    "reweight_replicates",
    "trim",
    "weight",
]
