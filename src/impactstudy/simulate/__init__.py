"""Simulate: a synthetic ecosystem for a Study and a seed: population, sample, responses (good
and bad) and the ground truth.

`simulate(study, seed)` builds each group's population (calibrated so that every published
figure is its census value), records the truth, and runs the fieldwork: stratified invitations
with attribute-dependent nonresponse, modes and paradata, and bad respondents of each kind.
"""

from impactstudy.simulate.fieldwork import BAD_KINDS, Fieldwork, run_fieldwork
from impactstudy.simulate.population import (
    Population,
    SimulationError,
    Target,
    build_population,
    column_kinds,
    targets_of,
)
from impactstudy.simulate.simulation import Simulation, resample, simulate, steps
from impactstudy.simulate.truth import truth

__all__ = [
    "BAD_KINDS",
    "Fieldwork",
    "Population",
    "Simulation",
    "SimulationError",
    "Target",
    "build_population",
    "column_kinds",
    "resample",
    "run_fieldwork",
    "simulate",
    "steps",
    "targets_of",
    "truth",
]
