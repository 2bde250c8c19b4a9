"""The impact model: the caict preset against the report's published 2018 model figures, the
net preset beside it, reproducibility, sensitivity, and errors.

Two kinds of check. On the simulated *population* (a census: every input at its true value, no
sampling error) the caict preset must reproduce each published figure within 2%: that tests the
model's structure. On the default simulated *sample* the published value must lie inside each
figure's 5-95% interval, and the medians must be near it: that tests the whole chain.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from impactstudy.estimate import Estimates, estimate_all
from impactstudy.impact import ModelError, ModelRun, audit_outputs, run_model, run_presets
from impactstudy.quality import screen
from impactstudy.simulate import Simulation
from impactstudy.study import Study
from impactstudy.weighting import weight

#: published 2018 model figures (seed figures.csv): quantity -> (value, half a unit of the last
#: printed digit for rates and shares, None for levels, which are held to 2%)
PUBLISHED: dict[str, tuple[float, float | None]] = {
    "jobs_driven": (22_350_000.0, None),  # W006 2235万
    "information_consumption": (240_200_000_000.0, None),  # W011 2402亿
    "traffic_consumption": (210_800_000_000.0, None),  # W113 2108亿
    "traditional_consumption": (419_800_000_000.0, None),  # W014 4198亿
    "information_consumption_share": (0.048, 0.0005),  # W012 4.8%
    "information_consumption_growth": (0.15, 0.005),  # W109 15% (2402/2097 - 1 = 14.5%)
    "traffic_consumption_growth": (0.10, 0.005),  # W115 10%
    "traditional_consumption_growth": (0.26, 0.005),  # W015 26%
    "information_consumption_cagr": (0.26, 0.005),  # W010 26%
    "catering_share_of_traditional": (0.20, 0.005),  # W121 20%
}
DRAWS = 2000


@pytest.fixture(scope="module")
def estimates(wechat_study: Study, wechat_simulation: Simulation) -> Estimates:
    valid = screen(wechat_simulation.responses, wechat_study, audit=False)
    return estimate_all(weight(valid, wechat_study), wechat_study)


@pytest.fixture(scope="module")
def census(wechat_simulation: Simulation) -> Estimates:
    """Estimates equal to the population's true values, with no sampling variance."""
    truth = wechat_simulation.truth.select(
        "indicator", pl.lit(None, dtype=pl.String).alias("by"), pl.col("value").alias("estimate")
    )
    n = truth.height
    return Estimates(truth, truth["indicator"].to_list(), np.zeros((n, n)))


@pytest.fixture(scope="module")
def runs(wechat_study: Study, estimates: Estimates) -> dict[str, ModelRun]:
    return run_presets(wechat_study, estimates, draws=DRAWS)


def _row(run: ModelRun, quantity: str) -> dict[str, object]:
    return run.summary.filter(pl.col("quantity") == quantity).row(0, named=True)


@pytest.mark.parametrize("quantity", list(PUBLISHED))
def test_caict_on_the_population_reproduces_the_published_figure(
    wechat_study: Study, census: Estimates, quantity: str
) -> None:
    run = run_model(wechat_study, census, preset="caict", draws=200)
    value, rounding = PUBLISHED[quantity]
    got = _row(run, quantity)["central"]
    if rounding is None:
        assert got == pytest.approx(value, rel=0.02)
    else:  # a rate printed to whole points: within the printed rounding
        assert got == pytest.approx(value, abs=rounding)


@pytest.mark.parametrize("quantity", list(PUBLISHED))
def test_caict_on_the_sample_covers_the_published_figure(
    runs: dict[str, ModelRun], quantity: str
) -> None:
    row = _row(runs["caict"], quantity)
    value, rounding = PUBLISHED[quantity]
    assert row["published"] == pytest.approx(value)
    assert row["published_inside"] is True
    assert row["p05"] <= value <= row["p95"]  # type: ignore[operator]
    if rounding is not None:  # rates: within a point of the published one
        assert row["median"] == pytest.approx(value, abs=0.01)
    else:  # jobs carry the sampling error of the staff totals (SE about 5%); spending is tight
        assert row["median"] == pytest.approx(
            value, rel=0.05 if quantity == "jobs_driven" else 0.02
        )


def test_net_is_below_gross_and_says_why(runs: dict[str, ModelRun]) -> None:
    caict, net = runs["caict"], runs["net"]
    for q in ("direct_jobs_net", "jobs_driven", "traditional_consumption"):
        assert _row(net, q)["median"] < _row(caict, q)["median"]  # type: ignore[operator]
    # caict fixes deadweight, displacement, substitution at 0: net = gross there
    assert np.array_equal(caict.quantity("direct_jobs_net"), caict.quantity("direct_jobs_gross"))
    assert "param.deadweight" in net.provenance["varied"]  # type: ignore[operator]
    assert "param.deadweight" not in caict.provenance["varied"]  # type: ignore[operator]


def test_jobs_add_up(runs: dict[str, ModelRun]) -> None:
    """jobs driven = direct + Type I indirect + counted induced + consumption jobs, per draw
    (caict: no displacement; 93.4% of induced jobs counted)."""
    r = runs["caict"]
    total = (
        r.quantity("direct_jobs_net")
        + r.quantity("indirect_jobs")
        + 0.934 * r.quantity("induced_jobs")
        + r.quantity("consumption_jobs")
        + 0.934 * r.quantity("consumption_induced_jobs")
    )
    np.testing.assert_allclose(r.quantity("jobs_driven"), total, rtol=1e-12)
    parts = sum(r.quantity(f"traditional_{c}") for c in CATEGORIES)
    np.testing.assert_allclose(r.quantity("traditional_consumption"), parts, rtol=1e-12)


CATEGORIES = (
    "catering",
    "retail",
    "transport",
    "home_living",
    "education",
    "health",
    "culture_ent",
    "finance",
)


def test_same_seed_same_bits(wechat_study: Study, estimates: Estimates) -> None:
    a = run_model(wechat_study, estimates, preset="net", draws=300, seed=5)
    b = run_model(wechat_study, estimates, preset="net", draws=300, seed=5)
    c = run_model(wechat_study, estimates, preset="net", draws=300, seed=6)
    assert a.draws.equals(b.draws)
    assert not a.draws.equals(c.draws)


def test_survey_inputs_are_drawn_with_their_covariance(
    wechat_study: Study, runs: dict[str, ModelRun], estimates: Estimates
) -> None:
    """The draws of the survey inputs have the estimates' variances and correlations (Monte
    Carlo error at 2,000 draws: a few percent of a variance, about 0.03 of a correlation)."""
    draws = runs["net"].draws
    ids = [c.removeprefix("est.") for c in draws.columns if c.startswith("est.")]
    pos = [estimates.ids.index(i) for i in ids]
    cov = estimates.covariance[np.ix_(pos, pos)]
    sd = np.sqrt(np.diag(cov))
    corr = cov / np.outer(sd, sd)
    np.fill_diagonal(corr, 0.0)
    corr[np.abs(corr) > 0.999] = 0.0  # indicators that are the same column
    a, b = np.unravel_index(np.argmax(np.abs(corr)), corr.shape)
    assert abs(corr[a, b]) > 0.2  # a pair worth testing
    x = draws[f"est.{ids[a]}"].to_numpy()
    y = draws[f"est.{ids[b]}"].to_numpy()
    # a proportion in % is a fraction in the model; a mean in % (a percentage answer) is not
    spec = wechat_study.indicators[ids[a]].spec
    scale = 0.01 if spec.statistic == "proportion" and spec.unit == "%" else 1
    assert np.var(x, ddof=1) == pytest.approx(cov[a, a] * scale**2, rel=0.08)
    assert np.corrcoef(x, y)[0, 1] == pytest.approx(corr[a, b], abs=0.05)


def test_tornado_moves_one_input_at_a_time(runs: dict[str, ModelRun]) -> None:
    """information_consumption_share is linear in the traffic share: its swing is the input's
    5-95% range times frame.mobile_data_revenue_2018 / 100 / national information consumption."""
    tornado = runs["caict"].sensitivity
    share = tornado.filter(
        (pl.col("quantity") == "information_consumption")
        & (pl.col("input") == "est.user_data_share_wechat_traffic")
    ).row(0, named=True)
    slope = 627_500_000_000 / 100  # yuan per point of traffic share (kappa = 1 in caict)
    expected = (share["input_high"] - share["input_low"]) * slope
    assert share["swing"] == pytest.approx(expected, rel=1e-9)
    # sorted by swing within each quantity
    for _, part in tornado.group_by("quantity"):
        swings = part["swing"].to_list()
        assert swings == sorted(swings, reverse=True)


def test_unknown_preset_and_missing_estimates_are_clear(
    wechat_study: Study, estimates: Estimates
) -> None:
    with pytest.raises(ModelError, match="unknown preset 'gross'"):
        run_model(wechat_study, estimates, preset="gross", draws=10)
    partial = Estimates(
        estimates.table.filter(pl.col("indicator") != "oa_staff_wechat_ft_total"),
        [i for i in estimates.ids if i != "oa_staff_wechat_ft_total"],
        np.zeros((len(estimates.ids) - 1, len(estimates.ids) - 1)),
    )
    with pytest.raises(ModelError, match="oa_staff_wechat_ft_total"):
        run_model(wechat_study, partial, draws=10)


def test_write(runs: dict[str, ModelRun], tmp_path: object) -> None:
    from pathlib import Path

    root = runs["net"].write(Path(str(tmp_path)) / "net")
    assert pl.read_csv(root / "summary.csv").height == runs["net"].summary.height
    assert pl.read_parquet(root / "draws.parquet").height == DRAWS


def test_the_audit_runs_on_our_own_outputs(wechat_study: Study, runs: dict[str, ModelRun]) -> None:
    """Our caict medians, printed like the figures they replace, go through the same checks as the
    report: the report's own conflicts (which do not involve the model) remain, and the identities
    among the model's figures (information = 4.8% of national; growth against 2017) hold."""
    findings = audit_outputs(runs["caict"], wechat_study)
    verdict = dict(zip(findings["check"], findings["verdict"], strict=True))
    assert verdict["miniprogram_value_vs_traditional"] == "conflict"  # 5000亿 > ~4216亿
    assert verdict["info_share_2018"] == "consistent"
    quotes = findings.filter(pl.col("check") == "info_share_2018")["figures"][0].to_list()
    assert "W009" in quotes
