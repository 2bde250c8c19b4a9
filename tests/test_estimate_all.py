"""The study pipeline's weighting and batch estimation: `weight` then `estimate_all`.

Checked against the simulator's truth (coverage of the 95% intervals, on the bundled study and
over 200 repeated samples of a small one), against the single-estimate API on the same design
(identities), and against the frame (margins met, weights summing to the population).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from impactstudy.estimate import Design, Estimates, estimate_all, mean, ratio, total
from impactstudy.forms import parse
from impactstudy.forms.vector import column_kinds, to_polars
from impactstudy.quality import ValidSample, screen
from impactstudy.simulate import Simulation, resample, simulate
from impactstudy.study import Study, load
from impactstudy.weighting import WeightingError
from impactstudy.weighting.study import WeightedSample, weight

MINIMAL = Path(__file__).parent / "studies" / "minimal"


@pytest.fixture(scope="module")
def valid(wechat_study: Study, wechat_simulation: Simulation) -> ValidSample:
    return screen(wechat_simulation.responses, wechat_study, audit=False)


@pytest.fixture(scope="module")
def weighted(wechat_study: Study, valid: ValidSample) -> WeightedSample:
    return weight(valid, wechat_study)


@pytest.fixture(scope="module")
def estimates(wechat_study: Study, weighted: WeightedSample) -> Estimates:
    return estimate_all(weighted, wechat_study)


def _with_truth(estimates: Estimates, sim: Simulation) -> pl.DataFrame:
    truth = sim.truth.select("indicator", pl.col("value").alias("truth"))
    return (
        estimates.overall()
        .join(truth, on="indicator")
        .with_columns(
            covered=(pl.col("truth") >= pl.col("ci_low")) & (pl.col("truth") <= pl.col("ci_high"))
        )
    )


def test_weights_meet_every_frame_margin(weighted: WeightedSample) -> None:
    margins = weighted.margins()
    assert margins.height == 31 * 4 + 2 + 6  # province for 4 groups, user gender and age band
    rel = ((margins["achieved"] - margins["target"]).abs() / margins["target"]).max()
    assert isinstance(rel, float) and rel < 1e-7


def test_weights_sum_to_each_group_population(
    wechat_study: Study, weighted: WeightedSample
) -> None:
    for gid, group in weighted.groups.items():
        population = wechat_study.frames.populations[gid].population
        assert group.design.weights.sum() == pytest.approx(population, rel=1e-9)


def test_default_run_covers_the_truth(estimates: Estimates, wechat_simulation: Simulation) -> None:
    """Issue 4: in the default run at least 90% of the 95% CIs contain the truth."""
    table = _with_truth(estimates, wechat_simulation)
    assert table.height == 124
    assert table["covered"].mean() >= 0.90
    figures = table.filter(pl.col("indicator").str.contains(r"^W\d+$"))
    assert figures.height == 45
    assert figures["covered"].mean() >= 0.90


def test_every_estimate_carries_its_provenance(estimates: Estimates) -> None:
    table = estimates.overall()
    assert table["question"].str.len_chars().min() > 0  # type: ignore[operator]
    assert table["weighting_steps"].str.contains("raking").sum() > 0  # bounded raking
    assert table["quality_steps"].str.contains("speeder").all()
    w077 = table.filter(pl.col("indicator") == "W077").row(0, named=True)
    assert "v_info" in w077["question"] and w077["published_value"] == 68.1
    assert w077["unit"] == "%" and 0 < w077["estimate"] < 100  # percent, as published


def test_covariance_diagonal_is_the_squared_se(estimates: Estimates) -> None:
    table = estimates.overall()
    se = dict(zip(table["indicator"], table["se"], strict=True))
    diag = np.diag(estimates.covariance)
    np.testing.assert_allclose(diag, [se[i] ** 2 for i in estimates.ids], rtol=1e-9)
    # symmetric, and a covariance (positive semi-definite up to rounding)
    np.testing.assert_allclose(estimates.covariance, estimates.covariance.T, rtol=1e-12)
    eig = np.linalg.eigvalsh(estimates.covariance / np.outer(np.sqrt(diag), np.sqrt(diag)))
    assert eig.min() > -1e-8


def _single(weighted: WeightedSample, group: str, column: pl.Series) -> Design:
    design = weighted.groups[group].design
    extended = design.__class__.__new__(design.__class__)
    extended.__dict__.update(design.__dict__)
    extended.data = design.data.with_columns(column)
    return extended


def _column(
    study: Study, weighted: WeightedSample, gid: str, source: str | None, name: str, kind: str
) -> pl.Series:
    """An indicator expression evaluated on a group's valid sample (null where it is)."""
    design = weighted.groups[gid].design
    kinds = column_kinds(study.groups[gid].form, design.data)
    expr = to_polars(parse(source or "1"), kinds, result=kind)  # type: ignore[arg-type]
    out = design.data.select(expr.alias(name)).to_series()
    return out.cast(pl.Float64).fill_nan(None) if kind == "number" else out


def _in_domain(study: Study, weighted: WeightedSample, gid: str, source: str | None) -> pl.Series:
    if source is None:
        return pl.Series("d", [True] * weighted.groups[gid].design.n)
    return _column(study, weighted, gid, source, "d", "boolean").fill_null(False)


@pytest.mark.parametrize("statistic", ["proportion", "total", "ratio"])
def test_batch_equals_single_estimates_on_the_same_design(
    wechat_study: Study, weighted: WeightedSample, estimates: Estimates, statistic: str
) -> None:
    """Each single-group indicator equals R's svymean / svytotal / svyratio on the full design
    with out-of-domain rows set to NA (zero weight), for the first indicator of each kind with
    a domain (or any, if none has one)."""
    table = estimates.overall().filter(
        (pl.col("statistic") == statistic) & ~pl.col("groups").str.contains(",")
    )
    with_domain = table.filter(pl.col("domain_expression").is_not_null())
    row = (with_domain if with_domain.height else table).row(0, named=True)
    spec = wechat_study.indicators[row["indicator"]].spec
    gid = row["groups"]
    inside = _in_domain(wechat_study, weighted, gid, spec.domain)
    if statistic == "proportion":
        y = _column(wechat_study, weighted, gid, spec.expression, "y", "boolean")
        y = y.fill_null(False).cast(pl.Float64)
    else:
        y = _column(wechat_study, weighted, gid, spec.expression, "y", "number")
    y = pl.select(pl.when(inside).then(y).otherwise(None).alias("y")).to_series()
    design = _single(weighted, gid, y)
    if statistic == "ratio":
        den = _column(wechat_study, weighted, gid, spec.denominator, "den", "number")
        design.data = design.data.with_columns(den)
        single = ratio(design, "y", "den", na_rm=True)
    elif statistic == "total":
        single = total(design, "y", na_rm=True)
    else:
        single = mean(design, "y", na_rm=True)
    scale = 100.0 if statistic == "proportion" and spec.unit == "%" else 1.0
    assert row["estimate"] == pytest.approx(scale * single["estimate"][0], rel=1e-12)
    assert row["se"] == pytest.approx(scale * single["se"][0], rel=1e-9)
    assert row["n"] == single["n"][0]


def test_breakdown_by_province_uses_the_full_design(
    wechat_study: Study, weighted: WeightedSample
) -> None:
    est = estimate_all(weighted, wechat_study, by=["province"])
    rows = est.table.filter((pl.col("indicator") == "W088") & (pl.col("by") == "province"))
    assert rows.height == 31
    # the province totals of a proportion's numerator add up to the national one
    design = weighted.groups["user"].design
    y = (design.data["job_seek"] == "yes").cast(pl.Float64).alias("y")
    national = mean(_single(weighted, "user", y), "y")["estimate"][0]
    prov_w = (
        pl.DataFrame({"p": design.data["province"], "w": design.weights})
        .group_by("p")
        .agg(pl.col("w").sum())
    )
    share = dict(zip(prov_w["p"], prov_w["w"] / design.weights.sum(), strict=True))
    combined = sum(share[r["domain"]] * r["estimate"] / 100 for r in rows.iter_rows(named=True))
    assert combined == pytest.approx(national, rel=1e-12)


def test_write_round_trips(estimates: Estimates, tmp_path: Path) -> None:
    estimates.write(tmp_path)
    back = pl.read_parquet(tmp_path / "estimates.parquet")
    assert back.equals(estimates.table)
    cov = pl.read_parquet(tmp_path / "covariance.parquet")
    assert cov.columns == estimates.ids


@pytest.fixture(scope="module")
def minimal() -> tuple[Study, Simulation]:
    study = load(MINIMAL)
    return study, simulate(study, 1)


def test_missing_margin_names_the_group_and_margin(minimal: tuple[Study, Simulation]) -> None:
    _, sim = minimal
    study = load(MINIMAL)
    del study.frames.margins["resident"]["gender"]
    with pytest.raises(WeightingError, match=r"group 'resident'.*margin 'gender'"):
        weight(screen(sim.responses, study, audit=False), study)


def test_coverage_over_200_repeated_samples(minimal: tuple[Study, Simulation]) -> None:
    """Issue 4: 200 samples from one finite population of the small study; the 95% intervals
    cover the population values 93-97% of the time (800 intervals: binomial SE 0.8 points)."""
    study, base = minimal
    truth = base.truth.select("indicator", pl.col("value").alias("truth"))
    covered: list[bool] = []
    for seed in range(200):
        sample = resample(study, base, seed)
        est = estimate_all(weight(screen(sample.responses, study, audit=False), study), study)
        table = est.overall().join(truth, on="indicator")
        covered += (
            (table["truth"] >= table["ci_low"]) & (table["truth"] <= table["ci_high"])
        ).to_list()
    assert len(covered) == 800
    assert 0.93 <= float(np.mean(covered)) <= 0.97


def test_replicate_variance_through_the_pipeline(minimal: tuple[Study, Simulation]) -> None:
    """`[weighting] variance = "bootstrap"`: every group's design carries bootstrap replicates
    re-weighted through its calibration; the SEs agree with Taylor's within Monte Carlo error
    (500 replicates: about 3% on an SE), the estimates are unchanged."""
    study, sim = minimal
    valid = screen(sim.responses, study, audit=False)
    taylor = estimate_all(weight(valid, study), study).overall()
    boot_study = load(MINIMAL)
    boot_study.config = boot_study.config.model_copy(
        update={
            "weighting": boot_study.config.weighting.model_copy(
                update={"variance": "bootstrap", "replicates": 500}
            )
        }
    )
    boot = estimate_all(weight(valid, boot_study, seed=3), boot_study).overall()
    assert set(boot["method"]) == {"replicate"}
    np.testing.assert_allclose(boot["estimate"], taylor["estimate"], rtol=1e-12)
    np.testing.assert_allclose(boot["se"], taylor["se"], rtol=0.12)
