"""Session fixtures shared by several test modules: the bundled study and its default simulation
(7 s to build; built once)."""

from __future__ import annotations

import pytest

from impactstudy.simulate import Simulation, simulate
from impactstudy.study import Study, bundled_study, load

#: the bundled study's default seed (simulation.toml)
WECHAT_SEED = 20181001


@pytest.fixture(scope="session")
def wechat_study() -> Study:
    return load(bundled_study())


@pytest.fixture(scope="session")
def wechat_simulation(wechat_study: Study) -> Simulation:
    return simulate(wechat_study, WECHAT_SEED)
