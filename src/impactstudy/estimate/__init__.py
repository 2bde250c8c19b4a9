"""Estimate: design-based estimates (value and SE), equal to R survey.

Covers the design (`Design`, R's ``svydesign``), Taylor-linearised totals, means and proportions
(`total`, `mean`), domain estimates on the full design (`by`), ratios (`ratio`) and quantiles with
Woodruff intervals (`quantile`). See docs/api.md.
"""

from .design import Design, DesignError, LonelyPSU, Replicates, Stage
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
from .variance import replicate_variance, svyrecvar, variance

__all__ = [
    "RESULT_SCHEMA",
    "Z_95",
    "CIMethod",
    "Design",
    "DesignError",
    "LonelyPSU",
    "Replicates",
    "Stage",
    "by",
    "degf",
    "design_df",
    "mean",
    "norm_quantile",
    "quantile",
    "ratio",
    "replicate_variance",
    "svyrecvar",
    "t_quantile",
    "total",
    "variance",
]
