"""Estimate: design-based estimates (value and SE), equal to R survey.

Covers the design (`Design`, R's ``svydesign``), Taylor-linearised totals, means and proportions
(`total`, `mean`), domain estimates on the full design (`by`), ratios (`ratio`) and quantiles with
Woodruff intervals (`quantile`), by Taylor linearisation or replicates. The stage's entry in the
study pipeline is `estimate_all(weighted, study) -> Estimates`. See docs/api.md.
"""

from .batch import ESTIMATES_SCHEMA, Estimates, estimate_all
from .design import LONELY_PSU, Design, DesignError, LonelyPSU, Replicates, Stage
from .quantile import degf, quantile, t_quantile
from .taylor import (
    RESULT_SCHEMA,
    Z_95,
    CIMethod,
    by,
    design_df,
    mean,
    norm_quantile,
    ratio,
    total,
)
from .variance import replicate_variance, svyreccov, svyrecvar, variance

__all__ = [
    "ESTIMATES_SCHEMA",
    "LONELY_PSU",
    "RESULT_SCHEMA",
    "Z_95",
    "CIMethod",
    "Design",
    "DesignError",
    "Estimates",
    "LonelyPSU",
    "Replicates",
    "Stage",
    "by",
    "degf",
    "design_df",
    "estimate_all",
    "mean",
    "norm_quantile",
    "quantile",
    "ratio",
    "replicate_variance",
    "svyreccov",
    "svyrecvar",
    "t_quantile",
    "total",
    "variance",
]
