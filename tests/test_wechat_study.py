"""The bundled WeChat 2018 study, checked against the report it re-creates.

The report's figures come from tests/fixtures/seed/figures.csv (307 figures of the 2019
WeChat Employment Impact Report with kind, respondent group and exact quote).
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest

from impactstudy.study import Study, bundled_study, load

SEED = Path(__file__).parent / "fixtures" / "seed" / "figures.csv"
SURVEY_KINDS = {"survey_proportion", "survey_mean"}
GROUPS = [
    "user",
    "oa_operator",
    "mp_developer",
    "pay_merchant",
    "eco_provider",
    "wecom_provider",
    "wecom_org",
]


@pytest.fixture(scope="module")
def study() -> Study:
    return load(bundled_study())


@pytest.fixture(scope="module")
def survey_figures() -> list[dict[str, str]]:
    with SEED.open(encoding="utf-8") as f:
        return [r for r in csv.DictReader(f) if r["kind"] in SURVEY_KINDS]


def test_the_seed_has_45_survey_figures(survey_figures: list[dict[str, str]]) -> None:
    assert len(survey_figures) == 45


def test_every_survey_figure_is_an_indicator(
    study: Study, survey_figures: list[dict[str, str]]
) -> None:
    missing = [r["id"] for r in survey_figures if r["id"] not in study.indicators]
    assert missing == []


def _number(text: str) -> float | None:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*", text)
    return float(m.group(1)) if m else None


def test_published_values_match_the_report(
    study: Study, survey_figures: list[dict[str, str]]
) -> None:
    for fig in survey_figures:
        spec = study.indicators[fig["id"]].spec
        assert spec.published is not None, fig["id"]
        value = _number(fig["value"])
        if value is not None:  # a number in the report: the indicator carries it
            assert spec.published.value == pytest.approx(value), fig["id"]
        if fig["kind"] == "survey_mean":
            assert spec.statistic == "mean", fig["id"]
        else:
            assert spec.statistic == "proportion", fig["id"]
            assert spec.unit == "%", fig["id"]


@pytest.mark.parametrize(
    ("figure", "text", "value", "relation"),
    [
        ("W020", "七成以上", 70, ">"),  # the heading of W018 (71%)
        ("W059", "大部分", 50, ">"),
        ("W061", "60%以上", 60, ">"),
        ("W088", "约11%", 11, "approx"),
    ],
)
def test_phrases_become_bounds(
    study: Study, figure: str, text: str, value: float, relation: str
) -> None:
    pub = study.indicators[figure].spec.published
    assert pub is not None
    assert text in pub.text
    assert pub.value == value
    assert pub.relation == relation


def test_pooled_figures_span_both_provider_groups(study: Study) -> None:
    for fig in ("W059", "W061", "W062"):
        assert study.indicators[fig].groups == ("eco_provider", "wecom_provider")


def test_follow_up_figures_have_their_base_as_domain(study: Study) -> None:
    # 51% and 25% are shares of the 11% who sought jobs; 60%...33% shares of the 40% donors
    for fig in ("W089", "W090"):
        dom = study.indicators[fig].domain
        assert dom is not None and dom.refs == {"job_seek"}
    for fig in ("W183", "W184", "W185", "W186", "W187", "W188"):
        dom = study.indicators[fig].domain
        assert dom is not None and dom.refs == {"donated"}
    for fig in ("W146", "W147", "W151"):
        dom = study.indicators[fig].domain
        assert dom is not None and "government" in dom.source


def test_seven_groups_with_real_questionnaires(study: Study) -> None:
    assert list(study.groups) == GROUPS
    for gid, group in study.groups.items():
        n = len(group.form.questions)
        assert 25 <= n <= 60, (gid, n)
        assert group.form.languages == ("zh", "en")
        for q in group.form.questions:
            assert q.labels.get("zh") and q.labels.get("en"), (gid, q.name)


def test_sample_design(study: Study) -> None:
    cfg = study.config
    assert cfg.sample.target_valid == 11576
    assert sum(g.sample.target_valid for g in cfg.groups.values()) == 11576
    assert str(cfg.fieldwork.start) == "2018-10-01"
    assert str(cfg.fieldwork.end) == "2018-11-30"
    assert len(study.frames.geography) == 31
    for gid, group in study.groups.items():
        assert group.form.choices("province").names == tuple(
            p.code for p in study.frames.geography
        ), gid


def test_every_questionnaire_has_checks_a_mixed_battery_and_skip_logic(study: Study) -> None:
    for gid, group in study.groups.items():
        q = group.spec.quality
        assert len(q.attention_checks) >= 2, gid
        assert q.batteries, gid
        for bat in q.batteries:
            assert len(bat.items) >= 6, gid
            assert 2 <= len(bat.reverse_keyed) < len(bat.items), gid
        assert any(f.relevant is not None for f in group.form.questions), gid


def test_model_inputs_of_organisations(study: Study) -> None:
    org_items = {
        "province",
        "city_tier",
        "org_type",
        "industry",
        "revenue_band",
        "staff_total",
        "staff_wechat_ft",
        "staff_wechat_pt",
        "revenue_share_wechat",
    }
    for gid, group in study.groups.items():
        if group.spec.unit == "organisation":
            assert org_items <= group.form.fields.keys(), gid
            assert group.form.choices("org_type").names == (
                "private",
                "state_owned",
                "government",
                "individual",
                "other",
            )


def test_model_inputs_of_users(study: Study) -> None:
    fields = study.groups["user"].form.fields
    for name in (
        "province",
        "city_tier",
        "age",
        "gender",
        "occupation",
        "data_share_wechat",
        "pay_scenes",
        "content_paid",
        "job_seek",
        "job_outcomes",
    ):
        assert name in fields, name
    for cat in (
        "catering",
        "retail",
        "transport",
        "home_living",
        "education",
        "health",
        "culture_ent",
        "finance",
    ):
        assert f"spend_{cat}" in fields and f"incr_{cat}" in fields, cat
    assert fields["job_outcomes"].relevant is not None  # job-seekers only


def test_frames_carry_their_sources(study: Study) -> None:
    pops = study.frames.populations
    assert pops["user"].population == 1.082e9  # 10.82亿
    assert pops["oa_operator"].population == 2e7  # 2000万
    assert pops["mp_developer"].population == 1e6  # 100万
    assert pops["wecom_org"].population == 1.5e6  # 150万
    assert pops["eco_provider"].population == 30_000 + 5_000
    assert {g: p.basis for g, p in pops.items()}["pay_merchant"] == "assumption"
    assert all(p.source for p in pops.values())
    for margins in study.frames.margins.values():
        for m in margins.values():
            assert math.isclose(sum(m.shares.values()), 1.0, abs_tol=1e-6)
    user = study.frames.margins["user"]
    assert set(user) == {"province", "gender", "age_band"}


def test_history_identities(study: Study) -> None:
    # regression anchors of docs/impact-model.md: identities among the published series
    h = study.history_value
    assert h("jobs_driven", 2019) == h("jobs_direct", 2019) + h("jobs_indirect", 2019)
    assert h("jobs_driven", 2016) == h("jobs_direct", 2016) + h("jobs_indirect", 2016)
    cagr = (h("information_consumption", 2018) / h("information_consumption", 2014)) ** 0.25 - 1
    assert cagr == pytest.approx(0.260, abs=5e-4)
    assert h("jobs_driven", 2018) / h("jobs_driven", 2017) - 1 == pytest.approx(0.101, abs=5e-4)
