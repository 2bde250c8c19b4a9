"""Estimate: design-based estimates (value and SE), equal to R survey.

This first step covers the design (`Design`, R's ``svydesign``) and Taylor-linearised totals, means
and proportions (`total`, `mean`). See docs/api.md.
"""

from .design import Design, DesignError, LonelyPSU, Stage
from .taylor import RESULT_SCHEMA, mean, svyrecvar, total

__all__ = [
    "RESULT_SCHEMA",
    "Design",
    "DesignError",
    "LonelyPSU",
    "Stage",
    "mean",
    "svyrecvar",
    "total",
]
