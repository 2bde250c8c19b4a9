"""Session fixtures shared by several test modules: the bundled study and its default simulation
(7 s to build; built once)."""

from __future__ import annotations

import pytest

from impactstudy.estimate import estimate_all
from impactstudy.impact import audit_outputs, run_presets
from impactstudy.quality import screen
from impactstudy.report import ReportInputs, render_html
from impactstudy.simulate import Simulation, simulate
from impactstudy.study import Study, bundled_study, load
from impactstudy.weighting import weight

#: the bundled study's default seed (simulation.toml)
WECHAT_SEED = 20181001


@pytest.fixture(scope="session")
def wechat_study() -> Study:
    return load(bundled_study())


@pytest.fixture(scope="session")
def wechat_simulation(wechat_study: Study) -> Simulation:
    return simulate(wechat_study, WECHAT_SEED)


# --- report: PDF and browser tests (tests/test_report_pdf.py, tests/test_report_browser.py) ---

#: Debian's Chromium (apt package chromium); Playwright's own browsers are never downloaded
CHROMIUM = "/usr/bin/chromium"
#: no DNS lookups, no QUIC, no pings: Chromium otherwise resolves Google's update and account
#: hosts at every start (docs: setup-notes §5); Playwright adds its own flags (no sandbox,
#: no background networking, no component update), which a second --disable-features would undo
CHROMIUM_ARGS = [
    "--disable-quic",
    "--no-pings",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, object]) -> dict[str, object]:
    """pytest-playwright's launch settings with Debian's Chromium and no network lookups."""
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def report_inputs(wechat_study: Study, wechat_simulation: Simulation) -> ReportInputs:
    """The report's inputs from the default simulation, as `impactstudy run` makes them (every
    indicator overall and by province), with the impact model on 2,000 draws."""
    valid = screen(wechat_simulation.responses, wechat_study)
    weighted = weight(valid, wechat_study, seed=wechat_simulation.seed)
    estimates = estimate_all(weighted, wechat_study, by=["province"])
    runs = run_presets(wechat_study, estimates, draws=2000)
    return ReportInputs(
        study=wechat_study,
        valid=valid,
        weighted=weighted,
        estimates=estimates,
        runs=runs,
        audit=audit_outputs(runs["caict"], wechat_study),
        truth=wechat_simulation.truth,
        seed=wechat_simulation.seed,
    )


@pytest.fixture(scope="session")
def report_html(report_inputs: ReportInputs) -> str:
    """The report's HTML page in Chinese."""
    return render_html(report_inputs, "zh")
