"""The synthetic populations: calibrated to the report, valid answers, reproducible.

Truth (the census value of each indicator over the synthetic population) must equal each
figure the report publishes, within the figure's rounding; figures published only as a phrase
take the value simulation.toml chooses, which must agree with the phrase.
"""

from __future__ import annotations

import math
import random

import polars as pl
import pytest

from impactstudy.forms import validate_submission
from impactstudy.quality import screen
from impactstudy.simulate import Population, Simulation, build_population, run_fieldwork
from impactstudy.study import Study

SEED = 20181001


@pytest.fixture(scope="module")
def study(wechat_study: Study) -> Study:
    return wechat_study


@pytest.fixture(scope="module")
def sim(wechat_simulation: Simulation) -> Simulation:
    assert wechat_simulation.seed == SEED
    return wechat_simulation


@pytest.fixture(scope="module")
def populations(sim: Simulation) -> dict[str, Population]:
    return sim.populations


@pytest.fixture(scope="module")
def true_values(sim: Simulation) -> pl.DataFrame:
    return sim.truth


def _rounding(text: str) -> float:
    """Half a unit of the last digit the report prints: 41.9% -> 0.05, 71% -> 0.5."""
    digits = text.split(".")[1] if "." in text else ""
    decimals = len([c for c in digits if c.isdigit()])
    return 0.5 * 10.0**-decimals


def test_every_published_figure_is_reproduced(study: Study, true_values: pl.DataFrame) -> None:
    rows = true_values.filter(pl.col("published_text").is_not_null()).to_dicts()
    assert len(rows) == 45
    for r in rows:
        pub, value = r["published_value"], r["value"]
        if pub is None:  # 一周: the chart with the value is lost
            continue
        if r["relation"] in ("=", "approx"):
            assert abs(value - pub) <= _rounding(r["published_text"]) + 1e-9, r
        elif r["relation"] == ">":
            assert value > pub, r
        spec = study.simulation.groups[r["groups"].split(",")[0]] if study.simulation else None
        if spec is not None and r["indicator"] in spec.targets:
            assert value == pytest.approx(spec.targets[r["indicator"]], abs=0.01), r


def test_direct_jobs_add_up_to_the_decomposition(true_values: pl.DataFrame) -> None:
    totals = dict(
        true_values.filter(pl.col("indicator").str.contains("staff_wechat_(ft|pt)_total"))
        .select("indicator", "value")
        .iter_rows()
    )
    assert sum(totals.values()) == pytest.approx(5_460_000)  # 546万 direct, simulation.toml
    mp = totals["mp_staff_wechat_ft_total"] + totals["mp_staff_wechat_pt_total"]
    assert mp == pytest.approx(700_000)  # 小程序直接就业 70万 (published)


def test_consumption_reproduces_the_caict_figures(
    study: Study, populations: dict[str, Population], true_values: pl.DataFrame
) -> None:
    per_user = dict(
        true_values.filter(pl.col("indicator").str.ends_with("_per_user"))
        .select("indicator", "value")
        .iter_rows()
    )
    users = study.frames.populations["user"].population
    spend = [v for k, v in per_user.items() if k.startswith("user_spend_")]
    content = [v for k, v in per_user.items() if k.startswith("user_content_spend_")]
    assert users * 12 * sum(spend) == pytest.approx(4198e8, rel=1e-4)  # traditional, CAICT
    assert users * 12 * sum(content) == pytest.approx(2402e8 - 2108e8, rel=1e-4)


def test_margins_are_exact(study: Study, populations: dict[str, Population]) -> None:
    for group, margins in study.frames.margins.items():
        frame = populations[group].frame
        for var, margin in margins.items():
            shares = frame[var].value_counts(normalize=True)
            got = dict(zip(shares[var].to_list(), shares["proportion"].to_list(), strict=True))
            for cat, share in margin.shares.items():
                assert got.get(cat, 0.0) == pytest.approx(share, abs=1 / frame.height), (
                    group,
                    var,
                    cat,
                )


def _submission(row: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in row.items():
        if k.startswith("_") or v is None:
            continue
        if isinstance(v, float) and math.isnan(v):
            continue
        out[k] = v
    return out


def test_every_sampled_unit_answers_validly(
    study: Study, populations: dict[str, Population]
) -> None:
    rng = random.Random(1)
    for group, pop in populations.items():
        form = study.groups[group].form
        picked = sorted(rng.sample(range(pop.frame.height), 150))
        rows = pop.frame[picked].to_dicts()
        children = {
            name: child.partition_by("_parent_unit", as_dict=True)
            for name, child in pop.repeats.items()
        }
        for row in rows:
            sub = _submission(row)
            for name, parts in children.items():
                part = parts.get((row["_unit"],))
                if part is not None:
                    sub[name] = [_submission(r) for r in part.sort("_index").to_dicts()]
            problems = validate_submission(form, sub, today=study.config.fieldwork.start)
            assert problems == [], (group, row["_unit"], [str(p) for p in problems])


def test_same_seed_same_population(study: Study, populations: dict[str, Population]) -> None:
    again = build_population(study, "wecom_provider", SEED)
    assert again.frame.equals(populations["wecom_provider"].frame)
    other = build_population(study, "wecom_provider", SEED + 1)
    assert not other.frame.equals(again.frame)


# --- fieldwork ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def screened(study: Study, sim: Simulation) -> pl.DataFrame:
    """Every submission with its validity after screening and its injected kind."""
    valid = screen(sim.responses, study)
    return pl.concat(
        g.submissions.select("_uuid", "_valid")
        .join(sim.fieldwork.sample[g.group].select("_uuid", "_bad", "_stratum"), on="_uuid")
        .with_columns(pl.lit(g.group).alias("group"))
        for g in valid
    )


def test_exactly_the_quotas_remain_valid(study: Study, screened: pl.DataFrame) -> None:
    # 回收有效样本共计11576份: quotas close on valid responses, per group and province
    assert screened["_valid"].sum() == 11576
    by_group = dict(screened.group_by("group").agg(pl.col("_valid").sum()).iter_rows())
    for group, spec in study.config.groups.items():
        assert by_group[group] == spec.sample.target_valid, group


def test_screening_catches_each_bad_kind(screened: pl.DataFrame) -> None:
    kinds = screened.group_by("_bad").agg(
        pl.len().alias("n"), (~pl.col("_valid")).mean().alias("excluded")
    )
    rates = {k: (n, e) for k, n, e in kinds.iter_rows()}
    for kind in ("speeder", "straightliner", "attention", "bogus", "duplicate", "phone_timing"):
        n, excluded = rates[kind]
        assert n > 0 and excluded >= 0.95, (kind, n, excluded)  # recall
    _, wrongly = rates[None]
    assert wrongly <= 0.01, wrongly  # good respondents excluded


def test_bad_respondents_come_at_their_rates(study: Study, sim: Simulation) -> None:
    sample = pl.concat(list(sim.fieldwork.sample.values()), how="diagonal_relaxed")
    responding = sample.filter(pl.col("_bad").is_null() | (pl.col("_bad") != "duplicate"))
    rates = study.simulation.simulation.bad if study.simulation else None
    assert rates is not None
    n = responding.height
    counts = dict(sample.group_by("_bad").len().iter_rows())
    for kind in ("speeder", "straightliner", "attention", "bogus"):
        p = getattr(rates, kind)
        expected = n * p
        assert abs(counts.get(kind, 0) - expected) < 4 * (expected * (1 - p)) ** 0.5 + 5, kind
    assert counts.get("duplicate", 0) > 0 and counts.get("phone_timing", 0) > 0


def test_nonresponse_makes_the_raw_sample_biased(sim: Simulation) -> None:
    pop = sim.populations["user"].frame
    resp = sim.responses.groups["user"].submissions
    young_pop = pop.select((pl.col("age") < 30).mean()).item()
    young_resp = resp.select((pl.col("age") < 30).mean()).item()
    assert young_resp > young_pop + 0.03  # young users answer more: weighting is needed


def test_paradata(sim: Simulation) -> None:
    for g in sim.responses:
        subs = g.submissions.join(sim.fieldwork.sample[g.group].select("_uuid", "_bad"), on="_uuid")
        assert subs["_duration_s"].min() > 0
        assert (subs["end"] > subs["start"]).all()
        assert (subs["_submitted"] >= subs["end"]).all()
        phone = subs.filter(pl.col("_mode") == "phone")
        assert phone["_interviewer"].null_count() == 0
        assert (
            subs.filter(pl.col("_mode") == "web")["_interviewer"].null_count()
            == subs.filter(pl.col("_mode") == "web").height
        )
        good = subs.filter(pl.col("_bad").is_null())
        median = good["_duration_s"].median()
        speeders = subs.filter(pl.col("_bad") == "speeder")
        assert median is not None and (speeders["_duration_s"] < 0.5 * median).mean() > 0.95
        pages = g.paradata
        assert pages is not None
        assert set(pages["_uuid"].unique()) <= set(subs["_uuid"])


def test_every_good_submission_validates(study: Study, sim: Simulation) -> None:
    for g in sim.responses:
        form = study.groups[g.group].form
        good = set(sim.fieldwork.sample[g.group].filter(pl.col("_bad").is_null())["_uuid"])
        children = {
            name: child.partition_by("_parent_uuid", as_dict=True)
            for name, child in g.repeats.items()
        }
        questions = [f.name for f in form.walk() if f.name in g.submissions.columns]
        rows = [
            r for r in g.submissions.select("_uuid", *questions).to_dicts() if r["_uuid"] in good
        ]
        assert len(rows) >= study.config.groups[g.group].sample.target_valid
        for row in rows:
            sub = _submission(row)
            for name, parts in children.items():
                part = parts.get((row["_uuid"],))
                if part is not None:
                    sub[name] = [_submission(r) for r in part.sort("_index").to_dicts()]
            problems = validate_submission(form, sub, today=study.config.fieldwork.start)
            assert problems == [], (g.group, row["_uuid"], [str(p) for p in problems])


def test_same_seed_same_fieldwork(study: Study, sim: Simulation) -> None:
    small = {g: sim.populations[g] for g in ("wecom_provider", "eco_provider")}
    a = run_fieldwork(study, small, SEED)
    b = run_fieldwork(study, small, SEED)
    for g in small:
        assert a.responses.groups[g].submissions.equals(b.responses.groups[g].submissions)
        # closing the quotas on valid responses only drops the latest arrivals
        kept = sim.responses.groups[g].submissions
        full = a.responses.groups[g].submissions
        assert kept.equals(full.filter(pl.col("_uuid").is_in(kept["_uuid"].implode())))
    c = run_fieldwork(study, small, SEED + 1)
    assert not c.responses.groups["eco_provider"].submissions.equals(
        a.responses.groups["eco_provider"].submissions
    )
