"""What the report is made from: every earlier stage's artifact, gathered once."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from impactstudy.estimate import Estimates
from impactstudy.impact import ModelRun
from impactstudy.quality import ValidSample
from impactstudy.study import Study
from impactstudy.weighting import WeightedSample

__all__ = ["ReportInputs"]


@dataclass
class ReportInputs:
    """The study and the artifacts of every stage: the valid sample (quality), the weighted
    sample (weighting), the estimates, the model runs by preset, the consistency audit of the
    model's outputs, and, for simulated data, the simulator's truth (one row per indicator:
    ``indicator``, ``value``)."""

    study: Study
    valid: ValidSample
    weighted: WeightedSample
    estimates: Estimates
    runs: dict[str, ModelRun]
    audit: pl.DataFrame | None = None
    truth: pl.DataFrame | None = None
    seed: int | None = None
