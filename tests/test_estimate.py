"""Design-based estimation against R survey's outputs on the `api` data (tests/fixtures/api)."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from impactstudy.estimate import (
    Z_95,
    Design,
    DesignError,
    by,
    degf,
    mean,
    quantile,
    ratio,
    t_quantile,
    total,
)

API = Path(__file__).parent / "fixtures" / "api"
REL = 1e-9


@cache
def api(name: str) -> pl.DataFrame:
    return pl.read_csv(API / f"{name}.csv", null_values="NA", infer_schema_length=None)


# The R design of each reference case, built with our API.
DESIGNS: dict[str, Callable[[], Design]] = {
    "strat": lambda: Design(api("apistrat"), strata="stype", weights="pw", fpc="fpc"),
    "clus1": lambda: Design(api("apiclus1"), ids="dnum", weights="pw", fpc="fpc"),
    "clus2": lambda: Design(api("apiclus2"), ids=["dnum", "snum"], fpc=["fpc1", "fpc2"]),
    "clus2_wr": lambda: Design(api("apiclus2"), ids=["dnum", "snum"], weights="pw"),
}

STATISTIC = re.compile(
    r"^(?P<fun>svymean|svytotal)\(~(?P<var>[\w.]+)(?P<na_rm>, na\.rm=TRUE)?\)"
    r"(\[(?P<elem>[^\]]+)\])?$"
)
BY = re.compile(
    r"^svyby\(~(?P<vars>[\w.+]+), ~(?P<by>[\w.]+), (?P<fun>svymean|svytotal)\)"
    r"\[(?:(?P<dom>[^:\]]+):(?P<var>[\w.]+)|(?P<only>[^\]]+))\]$"
)
RATIO = re.compile(r"^svyratio\(~(?P<num>[\w.]+), ~(?P<den>[\w.]+)\)$")
QUANTILE = re.compile(r"^svyquantile\(~(?P<var>[\w.]+), (?P<p>[\d.]+)\) \[qrule=math, Woodruff\]$")
PARSERS = (STATISTIC, BY, RATIO, QUANTILE)

# The R call behind each case in DESIGNS, checked against the reference file.
R_CALLS = {
    "strat": "svydesign(id=~1, strata=~stype, weights=~pw, data=apistrat, fpc=~fpc)",
    "clus1": "svydesign(id=~dnum, weights=~pw, data=apiclus1, fpc=~fpc)",
    "clus2": "svydesign(id=~dnum+snum, fpc=~fpc1+fpc2, data=apiclus2)",
    "clus2_wr": "svydesign(id=~dnum+snum, weights=~pw, data=apiclus2)",
}

# Reference rows not reproduced in this file, by (case, statistic): the coverage stays visible.
# Rows of weighted designs, reproduced by the weighting stage's tests instead.
NOT_COVERED: dict[tuple[str, str], str] = {
    ("clus1_poststrat", "svymean(~api00)"): "post-stratification: tests/test_weighting.py",
    ("clus1_poststrat", "svytotal(~enroll)"): "post-stratification: tests/test_weighting.py",
    ("clus1_rake", "svymean(~api00)"): "raking: tests/test_weighting.py",
    ("clus1_rake", "svytotal(~enroll)"): "raking: tests/test_weighting.py",
    ("clus1_greg", "svymean(~api00)"): "calibration: tests/test_weighting.py",
    ("clus1_greg", "svytotal(~enroll)"): "calibration: tests/test_weighting.py",
    ("clus1_jk1", "svymean(~api00)"): "replicate weights: tests/test_weighting.py",
    ("clus1_jk1", "svytotal(~enroll)"): "replicate weights: tests/test_weighting.py",
}


def reference_rows() -> list[dict[str, str]]:
    with (API / "api_reference.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def is_covered(row: dict[str, str]) -> bool:
    return row["case"] in DESIGNS and any(p.match(row["statistic"]) for p in PARSERS)


COVERED = [r for r in reference_rows() if is_covered(r)]


def test_coverage_is_explicit() -> None:
    """Every reference row is either reproduced below or listed in NOT_COVERED, not both."""
    rows = reference_rows()
    keys = [(r["case"], r["statistic"]) for r in rows]
    assert len(set(keys)) == len(keys)
    uncovered = {(r["case"], r["statistic"]) for r in rows if not is_covered(r)}
    assert uncovered == set(NOT_COVERED)
    assert len(COVERED) == 25
    assert len(COVERED) + len(NOT_COVERED) == len(rows) == 33


def reproduce(row: dict[str, str]) -> dict[str, object]:
    """Our result row for a reference row's R statistic."""
    design = DESIGNS[row["case"]]()
    stat = row["statistic"]
    if m := STATISTIC.match(stat):
        var = m["var"]
        fun = mean if m["fun"] == "svymean" else total
        result = fun(design, var, na_rm=m["na_rm"] is not None)
        if m["elem"] is None:
            assert result.height == 1
            assert result["level"][0] is None
            return result.row(0, named=True)
        assert m["elem"].startswith(var)
        return result.filter(pl.col("level") == m["elem"][len(var) :]).row(0, named=True)
    if m := BY.match(stat):
        variables = m["vars"].split("+")
        result = by(
            design, variables, m["by"], statistic="mean" if m["fun"] == "svymean" else "total"
        )
        assert result.height == len(variables) * result["domain"].n_unique()
        var = m["var"] or variables[0]
        dom = m["dom"] or m["only"]
        return result.filter((pl.col("domain") == dom) & (pl.col("variable") == var)).row(
            0, named=True
        )
    if m := RATIO.match(stat):
        result = ratio(design, m["num"], m["den"])
        assert result["variable"].to_list() == [f"{m['num']}/{m['den']}"]
        return result.row(0, named=True)
    m = QUANTILE.match(stat)
    assert m is not None
    result = quantile(design, m["var"], float(m["p"]))
    assert result["level"].to_list() == [m["p"]]
    return result.row(0, named=True)


@pytest.mark.parametrize("row", COVERED, ids=[f"{r['case']}:{r['statistic']}" for r in COVERED])
def test_reference_row(row: dict[str, str]) -> None:
    assert row["design"] == R_CALLS[row["case"]]
    got = reproduce(row)
    assert got["estimate"] == pytest.approx(float(row["estimate"]), rel=REL)
    assert got["se"] == pytest.approx(float(row["se"]), rel=REL)


def test_factor_mean_has_one_row_per_level_summing_to_one() -> None:
    result = mean(DESIGNS["clus1"](), "stype")
    assert result["level"].to_list() == ["E", "H", "M"]
    assert result["estimate"].sum() == pytest.approx(1.0, rel=1e-14)


def test_missing_values_need_na_rm() -> None:
    with pytest.raises(DesignError, match="na_rm=True"):
        total(DESIGNS["clus2"](), "enroll")


def test_lonely_psu_fails_clearly() -> None:
    data = pl.DataFrame({"h": [1, 1, 2], "y": [1.0, 2.0, 3.0], "w": [2.0, 2.0, 2.0]})
    design = Design(data, strata="h", weights="w")
    with pytest.raises(DesignError, match="only one PSU at stage 1"):
        mean(design, "y")


def test_fpc_as_count_or_fraction_agree() -> None:
    data = api("apistrat").with_columns(frac=pl.len().over("stype") / pl.col("fpc"))
    by_count = mean(Design(data, strata="stype", weights="pw", fpc="fpc"), "api00")
    by_fraction = mean(Design(data, strata="stype", weights="pw", fpc="frac"), "api00")
    assert by_fraction["se"][0] == pytest.approx(by_count["se"][0], rel=1e-12)


def test_weights_from_fpc_match_pw() -> None:
    design = DESIGNS["clus2"]()
    np.testing.assert_allclose(design.weights, api("apiclus2")["pw"].to_numpy(), rtol=1e-6)


# Property tests on generated stratified two-stage designs.


@st.composite
def two_stage_samples(draw: st.DrawFn) -> pl.DataFrame:
    n_strata = draw(st.integers(1, 4))
    rows: dict[str, list[float | int]] = {"h": [], "psu": [], "y": [], "w": []}
    for h in range(n_strata):
        for p in range(draw(st.integers(2, 4))):
            for _ in range(draw(st.integers(1, 4))):
                rows["h"].append(h)
                rows["psu"].append(p)  # PSU labels reused across strata
                rows["y"].append(draw(st.floats(-100, 100, allow_nan=False)))
                rows["w"].append(draw(st.floats(0.5, 50, allow_nan=False)))
    return pl.DataFrame(rows)


@settings(max_examples=50, deadline=None)
@given(two_stage_samples())
def test_census_has_zero_se(data: pl.DataFrame) -> None:
    """All weights 1 and every PSU of every stratum taken (fpc = N = n): no sampling variance."""
    census = data.with_columns(w=pl.lit(1.0), N=pl.col("psu").n_unique().over("h").cast(pl.Float64))
    design = Design(census, ids="psu", strata="h", weights="w", fpc="N")
    for fun in (mean, total):
        assert fun(design, "y")["se"][0] == 0.0
    as_fraction = Design(
        census.with_columns(f=pl.lit(1.0)), ids="psu", strata="h", weights="w", fpc="f"
    )
    assert mean(as_fraction, "y")["se"][0] == 0.0


@settings(max_examples=50, deadline=None)
@given(two_stage_samples(), st.floats(1e-3, 1e3))
def test_scaling_weights_leaves_means_unchanged(data: pl.DataFrame, c: float) -> None:
    base = mean(Design(data, ids="psu", strata="h", weights="w"), "y")
    scaled = mean(
        Design(data.with_columns(w=pl.col("w") * c), ids="psu", strata="h", weights="w"), "y"
    )
    assert scaled["estimate"][0] == pytest.approx(base["estimate"][0], rel=1e-9, abs=1e-9)
    assert scaled["se"][0] == pytest.approx(base["se"][0], rel=1e-9, abs=1e-9)


def test_certainty_stratum_with_one_psu_is_not_lonely() -> None:
    """A stratum with n = N adds no variance, even with a single PSU (R: self-representing)."""
    data = pl.DataFrame(
        {"h": [1, 1, 2], "y": [1.0, 2.0, 3.0], "w": [2.0, 2.0, 1.0], "N": [4.0, 4.0, 1.0]}
    )
    with_certainty = mean(Design(data, strata="h", weights="w", fpc="N"), "y")
    assert with_certainty["se"][0] > 0.0
    certainty_only = Design(data.filter(pl.col("h") == 2), strata="h", weights="w", fpc="N")
    assert total(certainty_only, "y")["se"][0] == 0.0


@settings(max_examples=50, deadline=None)
@given(two_stage_samples(), st.integers(0, 5))
def test_second_stage_term_when_every_psu_is_taken(data: pl.DataFrame, extra: int) -> None:
    """All PSUs taken at stage 1: the two-stage variance is the stratified variance of the SSUs,
    with the PSUs as strata and the second-stage fpc."""
    sample = data.with_row_index("ssu").with_columns(
        n_psu=pl.col("psu").n_unique().over("h").cast(pl.Float64),
        n_ssu=(pl.len().over("h", "psu") + extra).cast(pl.Float64),
    )
    two_stage = Design(sample, ids=["psu", "ssu"], strata="h", weights="w", fpc=["n_psu", "n_ssu"])
    as_strata = Design(
        sample.with_columns(hp=pl.format("{}-{}", "h", "psu")),
        ids="ssu",
        strata="hp",
        weights="w",
        fpc="n_ssu",
    )
    if sample.group_by("h", "psu").len()["len"].min() == 1 and extra > 0:
        with pytest.raises(DesignError, match="only one PSU at stage 2"):
            total(two_stage, "y")
        return
    got = total(two_stage, "y")["se"][0]
    assert got == pytest.approx(total(as_strata, "y")["se"][0], rel=1e-9, abs=1e-9)


# Domains, ratios, quantiles and the columns every result carries.


def test_domain_mean_is_a_ratio_on_the_full_design() -> None:
    """R's identity: svyby(~y, ~d, svymean) = svyratio(~I(y*d), ~d) on the whole design."""
    data = api("apistrat").with_columns(
        d=(pl.col("awards") == "Yes").cast(pl.Float64),
    )
    data = data.with_columns(yd=pl.col("api00") * pl.col("d"))
    design = Design(data, strata="stype", weights="pw", fpc="fpc")
    dom = by(design, "api00", "awards").filter(pl.col("domain") == "Yes")
    rat = ratio(design, "yd", "d")
    assert dom["estimate"][0] == pytest.approx(rat["estimate"][0], rel=1e-12)
    assert dom["se"][0] == pytest.approx(rat["se"][0], rel=1e-12)
    assert dom["n"][0] == int(data["d"].sum())


def test_domain_totals_add_up_to_the_total() -> None:
    design = DESIGNS["clus1"]()
    parts = by(design, "enroll", "stype", statistic="total")
    assert parts["domain"].to_list() == ["E", "H", "M"]
    assert parts["n"].sum() == design.n
    whole = total(design, "enroll")
    assert parts["estimate"].sum() == pytest.approx(whole["estimate"][0], rel=1e-12)


def test_every_row_carries_n_and_a_wald_interval() -> None:
    design = DESIGNS["clus2"]()
    result = pl.concat(
        [
            mean(design, "api00"),
            total(design, "enroll", na_rm=True),
            by(design, "api00", "stype"),
            ratio(design, "api.stu", "enroll", na_rm=True),
        ]
    )
    assert result.columns[:4] == ["variable", "level", "estimate", "se"]
    np.testing.assert_allclose(result["ci_low"], result["estimate"] - Z_95 * result["se"])
    np.testing.assert_allclose(result["ci_high"], result["estimate"] + Z_95 * result["se"])
    data = api("apiclus2")
    assert result["n"][0] == data.height
    assert result["n"][1] == data["enroll"].is_not_null().sum()
    assert result["n"][-1] == data.select(pl.col("enroll").is_not_null().sum()).item()


def test_quantile_interval_brackets_the_estimate_and_gives_r_se() -> None:
    design = DESIGNS["clus1"]()
    result = quantile(design, "api00", [0.25, 0.5, 0.75])
    assert degf(design) == 14
    assert (result["ci_low"] <= result["estimate"]).all()
    assert (result["estimate"] <= result["ci_high"]).all()
    crit = t_quantile(0.975, 14)
    np.testing.assert_allclose(
        result["se"], (result["ci_high"] - result["ci_low"]) / (2 * crit), rtol=1e-15
    )
    assert result["n"].to_list() == [design.n] * 3


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.995, 0.2])
def test_t_quantile_closed_forms(p: float) -> None:
    """df=1 is Cauchy (tan), df=2 has t = (2p-1) / sqrt(2 p (1-p)); large df tends to normal."""
    assert t_quantile(p, 1) == pytest.approx(np.tan(np.pi * (p - 0.5)), rel=1e-12)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / np.sqrt(2 * p * (1 - p)), rel=1e-12)


def test_deff_is_one_under_simple_random_sampling() -> None:
    """Equal weights, no clusters, no fpc: the Taylor variance of a mean is s^2/n, so deff = 1."""
    data = api("apistrat")
    design = Design(data.with_columns(w=pl.lit(30.0)), weights="w")
    assert mean(design, "api00")["deff"][0] == pytest.approx(1.0, rel=1e-12)
    assert total(design, "enroll")["deff"][0] == pytest.approx(1.0, rel=1e-12)


def test_deff_by_hand_on_the_cluster_sample() -> None:
    """deff of the clus1 mean, from its SE and the weighted variance computed here by hand."""
    design = DESIGNS["clus1"]()
    got = mean(design, "api00").row(0, named=True)
    y = api("apiclus1")["api00"].cast(pl.Float64).to_numpy()
    w = design.weights
    n = len(y)
    ybar = float(np.sum(w * y) / np.sum(w))
    s2 = float(np.sum(w * (y - ybar) ** 2) / np.sum(w)) * n / (n - 1)
    assert got["deff"] == pytest.approx(23.542240693781**2 / (s2 / n), rel=1e-9)
    dom = by(design, "api00", "stype").filter(pl.col("domain") == "H").row(0, named=True)
    h = api("apiclus1")["stype"].to_numpy() == "H"
    yh, wh = y[h], w[h]
    yh_bar = float(np.sum(wh * yh) / np.sum(wh))
    s2h = float(np.sum(wh * (yh - yh_bar) ** 2) / np.sum(wh)) * h.sum() / (h.sum() - 1)
    assert dom["deff"] == pytest.approx(dom["se"] ** 2 / (s2h / h.sum()), rel=1e-12)
    assert ratio(design, "api.stu", "enroll")["deff"][0] is None


# Proportion intervals, domain df and crossed domains against R (tests/fixtures/r/est_*.R).

R_FIXTURES = Path(__file__).parent / "fixtures" / "r"


def r_rows(name: str) -> list[dict[str, str]]:
    with (R_FIXTURES / f"est_{name}.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


PROPORTION_CI = r_rows("proportion_ci")
LEVEL = re.compile(r"level=([\d.]+)\)$")


def test_proportion_ci_fixture_covers_both_designs() -> None:
    assert len(PROPORTION_CI) == 28
    assert {r["case"] for r in PROPORTION_CI} == {"clus1", "strat"}


@pytest.mark.parametrize(
    "row",
    [r for r in PROPORTION_CI if "svyciprop" in r["statistic"]],
    ids=lambda r: f"{r['case']}:{r['statistic']}:{r['domain']}",
)
def test_logit_interval_matches_svyciprop(row: dict[str, str]) -> None:
    """R's svyciprop(method="logit"): t quantile on the (domain) design df, logit scale."""
    design = DESIGNS[row["case"]]()
    m = LEVEL.search(row["statistic"])
    assert m is not None
    level = float(m[1])
    if row["domain"]:
        result = by(design, "sch.wide", "stype", ci="logit", level=level).filter(
            pl.col("domain") == row["domain"]
        )
    else:
        result = mean(design, "sch.wide", ci="logit", level=level)
    got = result.filter(pl.col("level") == "Yes").row(0, named=True)
    assert got["ci_method"] == "logit"
    assert got["method"] == "taylor"
    assert got["df"] == int(row["df"])
    for ours, theirs in [("estimate", "estimate"), ("se", "se"), ("ci_low", "ci_low")]:
        assert got[ours] == pytest.approx(float(row[theirs]), rel=REL)
    assert got["ci_high"] == pytest.approx(float(row["ci_high"]), rel=REL)
    # n_eff is R's svyciprop n.eff = p(1-p)/var
    p = got["estimate"]
    assert got["n_eff"] == pytest.approx(p * (1 - p) / got["se"] ** 2, rel=1e-12)


@pytest.mark.parametrize(
    "row",
    [r for r in PROPORTION_CI if "stype+awards" in r["statistic"]],
    ids=lambda r: f"{r['case']}:{r['domain']}",
)
def test_crossed_domains_match_svyby(row: dict[str, str]) -> None:
    """by=["stype", "awards"] is R's svyby(~api00, ~stype+awards); labels "stype=E, awards=No"."""
    result = by(DESIGNS[row["case"]](), "api00", ["stype", "awards"])
    assert result.height == 6
    got = result.filter(pl.col("domain") == row["domain"]).row(0, named=True)
    assert got["estimate"] == pytest.approx(float(row["estimate"]), rel=REL)
    assert got["se"] == pytest.approx(float(row["se"]), rel=REL)
    assert got["df"] == int(row["df"])


def test_crossed_domains_are_ordered_by_the_first_column() -> None:
    result = by(DESIGNS["strat"](), "api00", ["stype", "awards"])
    assert result["domain"].to_list() == [
        f"stype={s}, awards={a}" for s in ("E", "H", "M") for a in ("No", "Yes")
    ]


def test_wilson_interval_by_hand() -> None:
    """Wilson score interval with n replaced by n_eff = p(1-p)/var, z = qnorm(0.975)."""
    got = mean(DESIGNS["clus1"](), "sch.wide", ci="wilson").row(1, named=True)
    p, se = 0.87431693989071, 0.0203594772446274  # R svymean (fixture row 1)
    assert got["estimate"] == pytest.approx(p, rel=REL)
    m = p * (1 - p) / se**2
    z = 1.959963984540054
    centre = (p + z * z / (2 * m)) / (1 + z * z / m)
    half = z / (1 + z * z / m) * np.sqrt(p * (1 - p) / m + z * z / (4 * m * m))
    assert got["n_eff"] == pytest.approx(m, rel=1e-9)
    assert got["ci_low"] == pytest.approx(centre - half, rel=1e-9)
    assert got["ci_high"] == pytest.approx(centre + half, rel=1e-9)
    assert got["ci_method"] == "wilson"


def test_proportion_intervals_at_the_boundary() -> None:
    """p = 0: logit is undefined (R: NaN, here null); Wilson uses n (the rows used) for n_eff."""
    data = api("apistrat").with_columns(none=pl.lit(0.0))
    design = Design(data, strata="stype", weights="pw", fpc="fpc")
    logit = mean(design, "none", ci="logit").row(0, named=True)
    assert logit["estimate"] == 0.0
    assert logit["ci_low"] is None and logit["ci_high"] is None
    assert logit["n_eff"] is None
    wilson = mean(design, "none", ci="wilson").row(0, named=True)
    n = data.height
    z2 = 1.959963984540054**2
    assert wilson["ci_low"] == 0.0
    assert wilson["ci_high"] == pytest.approx(z2 / (n + z2), rel=1e-12)


def test_logit_needs_a_proportion() -> None:
    with pytest.raises(DesignError, match="'api00' is neither categorical nor 0/1"):
        mean(DESIGNS["clus1"](), "api00", ci="logit")
    with pytest.raises(DesignError, match="needs statistic='mean'"):
        by(DESIGNS["clus1"](), "sch.wide", "stype", statistic="total", ci="logit")


def test_level_sets_the_wald_interval() -> None:
    got = mean(DESIGNS["clus1"](), "api00", level=0.9).row(0, named=True)
    z90 = 1.6448536269514722  # qnorm(0.95)
    assert got["ci_high"] - got["estimate"] == pytest.approx(z90 * got["se"], rel=1e-12)
    assert got["n_eff"] == pytest.approx(got["n"] / got["deff"], rel=1e-12)


def test_replicate_designs_say_so() -> None:
    from impactstudy.weighting import jk1

    result = by(jk1(DESIGNS["clus1"]()), "api00", "stype")
    assert set(result["method"]) == {"replicate:JK1"}
    assert result["df"].to_list() == [14, 7, 11]  # R: degf(subset(rep, stype == ...))


JK1_DOMAINS = r_rows("jk1_domains")


@pytest.mark.parametrize(
    "row", JK1_DOMAINS, ids=lambda r: f"fpc={r['fpc']}:{r['statistic']}:{r['domain']}"
)
def test_jk1_domains_match_r(row: dict[str, str]) -> None:
    """Domains on a replicate design (general path, replicate variance) equal R's
    svyby(..., as.svrepdesign(dclus1, type="JK1")), which keeps the fpc in the replicate scale;
    also after post-stratifying every replicate (R's postStratify of the replicate design).

    df: R's degf of the replicate subset, the rank of the domain rows' replicate weights - 1 (7 and
    11 for H and M; svy says 14, the replicates - 1, for every domain)."""
    from impactstudy.weighting import jk1, post_stratify

    data = api("apiclus1")
    if row["fpc"] == "poststratified":
        base = jk1(Design(data, ids="dnum", weights="pw", fpc="fpc"))
        design = post_stratify(base, "stype", {"E": 4421.0, "H": 755.0, "M": 1018.0})
        domain_col = "sch.wide"
    else:
        design = jk1(
            Design(data, ids="dnum", weights="pw", fpc="fpc")
            if row["fpc"] == "TRUE"
            else Design(data, ids="dnum", weights="pw")
        )
        domain_col = "stype"
    if row["domain"]:
        result = by(design, "api00", domain_col)
        got = result.filter(pl.col("domain") == row["domain"]).row(0, named=True)
    else:
        got = mean(design, "api00").row(0, named=True)
    assert got["estimate"] == pytest.approx(float(row["estimate"]), rel=REL)
    assert got["se"] == pytest.approx(float(row["se"]), rel=REL)
    assert got["method"] == "replicate:JK1"
    assert got["df"] == int(row["df"])


def test_general_domain_path_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calibrated designs take the row-level path a chunk of domains at a time: one domain per
    chunk gives the same numbers as all domains at once."""
    import impactstudy.estimate.taylor as taylor
    from impactstudy.weighting import post_stratify

    design = post_stratify(DESIGNS["clus1"](), "stype", {"E": 4421.0, "H": 755.0, "M": 1018.0})
    whole = by(design, ["api00", "sch.wide"], ["stype", "awards"])
    monkeypatch.setattr(taylor, "_CHUNK_ELEMENTS", 1)
    chunked = by(design, ["api00", "sch.wide"], ["stype", "awards"])
    assert chunked.drop("estimate", "se").equals(whole.drop("estimate", "se"))
    np.testing.assert_allclose(chunked["estimate"], whole["estimate"], rtol=1e-14)
    np.testing.assert_allclose(chunked["se"], whole["se"], rtol=1e-12)


def test_numeric_domains_sort_numerically() -> None:
    """As R's factor of a numeric column: 2 before 10 (not the text order "10" < "2")."""
    data = pl.DataFrame(
        {"d": [10, 2, 10, 2, 10, 2], "y": [1.0, 2.0, 3.0, 4.0, 5.0, 7.0], "w": [1.0] * 6}
    )
    result = by(Design(data, weights="w"), "y", "d")
    assert result["domain"].to_list() == ["2", "10"]
    assert result["estimate"].to_list() == pytest.approx([13 / 3, 3.0], rel=1e-15)


def test_bad_domain_input_is_named() -> None:
    design = DESIGNS["clus1"]()
    with pytest.raises(DesignError, match="domain column 'nope' is not in the data"):
        by(design, "api00", ["stype", "nope"])
    with_null = Design(
        api("apiclus1").with_columns(
            g=pl.when(pl.col("stype") == "H").then(None).otherwise(pl.col("stype"))
        ),
        ids="dnum",
        weights="pw",
        fpc="fpc",
    )
    with pytest.raises(DesignError, match="domain column 'g' has 14 missing values"):
        by(with_null, "api00", "g")
    with pytest.raises(DesignError, match="ci must be 'wald', 'logit' or 'wilson'"):
        mean(design, "sch.wide", ci="exact")  # type: ignore[arg-type]
    with pytest.raises(DesignError, match="confidence level must be in"):
        mean(design, "api00", level=95)
    empty = Design(
        api("apiclus1").with_columns(
            y=pl.when(pl.col("stype") == "H").then(None).otherwise(pl.col("api00"))
        ),
        ids="dnum",
        weights="pw",
        fpc="fpc",
    )
    with pytest.raises(DesignError, match="domain stype='H' has no weight with 'y' observed"):
        by(empty, "y", "stype", na_rm=True)
