"""Replicate weights (JK1, JKn, BRR, Fay, bootstrap) and their re-weighting through calibration,
against R survey 4.1.1: tests/fixtures/r/rep_estimates.R wrote rep_estimates.csv (estimates, SEs
and ``degf`` of R's ``as.svrepdesign`` designs, calibrated after conversion as R does it) and
rep_hadamard.R wrote rep_hadamard.csv (R's Hadamard matrix for each number of strata)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from impactstudy.estimate import Design, LonelyPSU, by, mean, ratio, total
from impactstudy.weighting import (
    CalibratedDesign,
    WeightingError,
    calibrate,
    jk1,
    post_stratify,
    rake,
)
from impactstudy.weighting.replicates import (
    hadamard,
    replicate,
    replicate_df,
    reweight_replicates,
)

FIXTURES = Path(__file__).parent / "fixtures"
API = FIXTURES / "api"
R_DIR = FIXTURES / "r"
REL = 1e-9
# R rakes each replicate as many sweeps as the full sample; we rake each one to tolerance
REL_RAKE = 1e-7
STYPE = {"E": 4421.0, "H": 755.0, "M": 1018.0}
SCH_WIDE = {"No": 1072.0, "Yes": 5122.0}
AWARDS = {"No": 2000.0, "Yes": 4194.0}
CAT = {"a": 2500.0, "b": 1500.0, "c": 1000.0}


@cache
def _csv(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, null_values="NA", infer_schema_length=None)


def apiclus1() -> pl.DataFrame:
    return _csv(API / "apiclus1.csv")


def apistrat() -> pl.DataFrame:
    return _csv(API / "apistrat.csv")


def brr_data(last_stratum: str = "s40") -> pl.DataFrame:
    return _csv(R_DIR / "rep_brr_data.csv").filter(pl.col("stratum") <= last_stratum)


def clus1(fpc: bool = True) -> Design:
    return Design(apiclus1(), ids="dnum", weights="pw", fpc="fpc" if fpc else None)


def clus2() -> Design:
    return Design(_csv(API / "apiclus2.csv"), ids=["dnum", "snum"], fpc=["fpc1", "fpc2"])


def strat() -> Design:
    return Design(apistrat(), strata="stype", weights="pw", fpc="fpc")


def strat_certain() -> Design:
    """apistrat with stratum H sampled exhaustively (fpc = n): R drops its replicates."""
    data = apistrat().with_columns(
        fpc=pl.when(pl.col("stype") == "H").then(pl.lit(50.0)).otherwise(pl.col("fpc"))
    )
    return Design(data, strata="stype", weights="pw", fpc="fpc")


def strat_lonely(rule: LonelyPSU) -> Design:
    """apistrat with its first school alone in stratum X (a lonely PSU)."""
    data = apistrat().with_columns(
        stype2=pl.when(pl.col("snum") == apistrat()["snum"][0])
        .then(pl.lit("X"))
        .otherwise(pl.col("stype"))
    )
    return Design(data, strata="stype2", weights="pw", fpc="fpc", lonely_psu=rule)


def brr_design(last_stratum: str = "s40") -> Design:
    return Design(brr_data(last_stratum), ids="psu", strata="stratum", weights="w")


# our route: weight first, then replicate; R's (the fixture): replicate first, then weight
CASES: dict[str, Callable[[], Design]] = {
    "clus1_jk1": lambda: replicate(clus1(), "JK1"),
    "clus1_jk1_mse": lambda: replicate(clus1(), "JK1", mse=True),
    "clus1_jk1_nofpc": lambda: replicate(clus1(fpc=False), "JK1"),
    "clus2_jk1": lambda: replicate(clus2(), "JK1"),
    "strat_jkn": lambda: replicate(strat(), "JKn"),
    "strat_jkn_mse": lambda: replicate(strat(), "JKn", mse=True),
    "strat_jkn_certain": lambda: replicate(strat_certain(), "JKn"),
    "strat_jkn_lonely_adjust": lambda: replicate(strat_lonely("adjust"), "JKn"),
    "strat_jkn_lonely_average": lambda: replicate(strat_lonely("average"), "JKn"),
    "strat_jkn_lonely_remove": lambda: replicate(strat_lonely("remove"), "JKn"),
    "strat_jkn_lonely_certainty": lambda: replicate(strat_lonely("certainty"), "JKn"),
    "brr40": lambda: replicate(brr_design(), "BRR"),
    "brr40_mse": lambda: replicate(brr_design(), "BRR", mse=True),
    "brr30": lambda: replicate(brr_design("s30"), "BRR"),
    "fay13": lambda: replicate(brr_design("s13"), "Fay", rho=0.3),
    "fay40_mse": lambda: replicate(brr_design(), "Fay", rho=0.5, mse=True),
    "clus1_jk1_ps": lambda: replicate(post_stratify(clus1(), "stype", STYPE), "JK1"),
    "clus1_jk1_rake": lambda: replicate(rake(clus1(), {"stype": STYPE, "sch.wide": SCH_WIDE})),
    "clus1_jk1_greg": lambda: replicate(calibrate(clus1(), "api99", [6194, 3914069]), "JK1"),
    "clus1_jk1_ps_greg": lambda: replicate(
        calibrate(post_stratify(clus1(), "stype", STYPE), "api99", [6194, 3914069]), "JK1"
    ),
    "strat_jkn_ps": lambda: replicate(post_stratify(strat(), "sch.wide", SCH_WIDE), "JKn"),
    "strat_jkn_rake_mse": lambda: replicate(
        rake(strat(), {"sch.wide": SCH_WIDE, "awards": AWARDS}), "JKn", mse=True
    ),
    "brr40_ps": lambda: replicate(post_stratify(brr_design(), "cat", CAT), "BRR"),
    "brr40_greg": lambda: replicate(calibrate(brr_design(), "x", [5000, 27000]), "BRR"),
}

API_VARS = {"y": "api00", "tot": "enroll", "num": "api00", "den": "api99", "cat": "stype"}
BRR_VARS = {"y": "y", "tot": "y", "num": "y", "den": "x", "cat": "cat", "dom": "dom"}


def variables(case: str) -> dict[str, str]:
    if case.startswith(("brr", "fay")):
        return BRR_VARS
    out = {**API_VARS, "dom": "sch.wide" if case.startswith("strat") else "stype"}
    if case == "clus2_jk1":
        out["tot"] = "api99"
    return out


@cache
def design_of(case: str) -> Design:
    return CASES[case]()


@cache
def ours(case: str, statistic: str) -> dict[str, tuple[float, float]]:
    """Our (estimate, se) by level for one R statistic of a case."""
    d, v = design_of(case), variables(case)
    if statistic == "degf":
        return {"": (float(replicate_df(d)), float("nan"))}
    if statistic == "n_replicates":
        assert d.replicates is not None
        return {"": (float(d.replicates.weights.shape[1]), float("nan"))}
    if statistic == "mean":
        res = mean(d, v["y"])
    elif statistic == "total":
        res = total(d, v["tot"])
    elif statistic == "ratio":
        res = ratio(d, v["num"], v["den"])
    elif statistic == "mean_cat":
        res = mean(d, v["cat"])
    elif statistic in ("by_mean", "by_total"):
        stat = "mean" if statistic == "by_mean" else "total"
        col = v["y"] if stat == "mean" else v["tot"]
        res = by(d, col, v["dom"], statistic=stat)
        return {str(r["domain"]): (r["estimate"], r["se"]) for r in res.iter_rows(named=True)}
    else:
        raise AssertionError(statistic)
    return {r["level"] or "": (r["estimate"], r["se"]) for r in res.iter_rows(named=True)}


def reference_rows() -> list[dict[str, str]]:
    with (R_DIR / "rep_estimates.csv").open(newline="") as fh:
        return [row for row in csv.DictReader(fh) if row["case"] in CASES]


ROWS = reference_rows()


def test_every_case_has_reference_rows() -> None:
    assert {r["case"] for r in ROWS} == set(CASES)
    assert len(ROWS) == 256 + 4 * 12


@pytest.mark.parametrize(
    "row", ROWS, ids=[f"{r['case']}:{r['statistic']}:{r['level']}" for r in ROWS]
)
def test_reference_row(row: dict[str, str]) -> None:
    got = ours(row["case"], row["statistic"])
    est, se = got[row["level"]]
    if row["statistic"] in ("degf", "n_replicates"):
        assert est == float(row["estimate"])
        return
    # raked margins' proportions have SE 0 up to the raking tolerance (R: ~1e-9)
    rel, abs_ = (REL_RAKE, 1e-8) if "rake" in row["case"] else (REL, 1e-12)
    assert est == pytest.approx(float(row["estimate"]), rel=rel, abs=abs_)
    assert se == pytest.approx(float(row["se"]), rel=rel, abs=abs_)


# -- R's Hadamard matrices -------------------------------------------------------------------


@cache
def r_hadamard() -> dict[int, np.ndarray]:
    frame = pl.read_csv(R_DIR / "rep_hadamard.csv", schema_overrides={"bits": pl.String})
    return {
        int(n): np.array([[int(c) for c in b] for b in g.sort("row")["bits"]])
        for (n,), g in frame.group_by(["n"])
    }


@pytest.mark.parametrize("n", sorted(r_hadamard()))
def test_hadamard_is_rs(n: int) -> None:
    h = hadamard(n)
    assert h.shape == r_hadamard()[n].shape
    assert np.array_equal(h, r_hadamard()[n])
    # a Hadamard matrix: distinct columns agree in exactly half of the rows
    signs = 2 * h - 1
    assert np.array_equal(signs.T @ signs, h.shape[0] * np.eye(h.shape[0]))


# -- weight structure --------------------------------------------------------------------------


def psu_factors(d: Design) -> np.ndarray:
    """Replicate weights over sampling weights, one row per first-stage PSU (checks constancy)."""
    assert d.replicates is not None
    f = d.replicates.weights / d.weights[:, None]
    first = d.stages[0]
    per_psu = f[first.psu_first]
    assert np.allclose(per_psu[first.psu], f, rtol=1e-14, atol=0)
    return per_psu


def test_jk1_structure() -> None:
    d = replicate(clus1(), "JK1")
    f = psu_factors(d)
    assert f.shape == (15, 15)
    assert np.all((f == 0) | np.isclose(f, 15 / 14, rtol=1e-15))
    assert np.array_equal((f == 0).sum(axis=0), np.ones(15))
    assert np.array_equal((f == 0).sum(axis=1), np.ones(15))
    assert d.replicates is not None
    assert d.replicates.scale == pytest.approx((757 - 15) / 757 * 14 / 15, rel=1e-15)
    assert d.replicates.type == "JK1" and d.replicates.mse is False


def test_jk1_wrapper_is_replicate_jk1() -> None:
    a, b = jk1(clus1()).replicates, replicate(clus1(), "JK1").replicates
    assert a is not None and b is not None
    assert np.array_equal(a.weights, b.weights) and a.scale == b.scale


def test_auto_type_is_rs_default() -> None:
    assert replicate(clus1()).replicates.type == "JK1"  # type: ignore[union-attr]
    assert replicate(strat()).replicates.type == "JKn"  # type: ignore[union-attr]


def test_jkn_structure_and_rscales() -> None:
    d = replicate(strat(), "JKn")
    rep = d.replicates
    assert rep is not None
    stype = apistrat()["stype"].to_numpy()
    n_h = {"E": 100, "H": 50, "M": 50}
    pop = {"E": 4421, "H": 755, "M": 1018}
    # one replicate per row (id=~1): the row dropped, the rest of its stratum scaled n_h/(n_h-1)
    f = rep.weights / d.weights[:, None]
    dropped = np.argmax(f == 0, axis=0)
    assert np.array_equal(np.sort(dropped), np.arange(200))
    for r in range(200):
        h = stype[dropped[r]]
        inside = stype == h
        expected = np.where(inside, n_h[h] / (n_h[h] - 1), 1.0)
        expected[dropped[r]] = 0.0
        np.testing.assert_allclose(f[:, r], expected, rtol=1e-15)
        assert rep.rscales[r] == pytest.approx(
            (pop[h] - n_h[h]) / pop[h] * (n_h[h] - 1) / n_h[h], rel=1e-15
        )
    assert rep.scale == 1.0


def test_brr_structure() -> None:
    d = replicate(brr_design(), "BRR")
    f = psu_factors(d)
    assert f.shape == (80, 44)
    assert set(np.unique(f)) == {0.0, 2.0}
    first = d.stages[0]
    stratum = first.stratum[first.psu_first]
    # each replicate keeps exactly one PSU of every stratum, doubled
    for h in range(40):
        assert np.array_equal(f[stratum == h].sum(axis=0), np.full(44, 2.0))
    # full orthogonal balance: every PSU is in half of the replicates, pairs of strata balanced
    assert np.array_equal((f == 2).sum(axis=1), np.full(80, 22))
    assert d.replicates is not None
    assert d.replicates.scale == pytest.approx(1 / 44, rel=1e-15)


def test_fay_structure() -> None:
    d = replicate(brr_design("s13"), "Fay", rho=0.3)
    f = psu_factors(d)
    assert f.shape == (26, 16)
    assert np.allclose(np.sort(np.unique(np.round(f, 12))), [0.3, 1.7])
    assert d.replicates is not None
    assert d.replicates.type == "Fay"
    assert d.replicates.scale == pytest.approx(1 / (16 * 0.7**2), rel=1e-15)


def test_bootstrap_structure_and_seed() -> None:
    d = replicate(strat(), "bootstrap", replicates=300, seed=7)
    rep = d.replicates
    assert rep is not None and rep.type == "bootstrap"
    counts = rep.weights / d.weights[:, None]
    assert np.allclose(counts, np.round(counts), rtol=0, atol=1e-12)
    counts = np.round(counts)
    stype = apistrat()["stype"].to_numpy()
    for h, n_h, pop in (("E", 100, 4421), ("H", 50, 755), ("M", 50, 1018)):
        block = counts[stype == h]
        assert np.array_equal(block.sum(axis=0), np.full(300, n_h))
        # without replacement from a pseudo-population of N_h: at most ceil(N_h / n_h) copies
        assert block.max() <= -(-pop // n_h)
    nbar = 1 / np.mean(1 / np.array([100, 50, 50]))
    assert rep.scale == pytest.approx(nbar / ((nbar - 1) * 299), rel=1e-15)
    again = replicate(strat(), "bootstrap", replicates=300, seed=7).replicates
    other = replicate(strat(), "bootstrap", replicates=300, seed=8).replicates
    assert again is not None and other is not None
    assert np.array_equal(rep.weights, again.weights)
    assert not np.array_equal(rep.weights, other.weights)


def test_bootstrap_without_fpc_resamples_with_replacement() -> None:
    d = replicate(clus1(fpc=False), "bootstrap", replicates=400, seed=3)
    f = psu_factors(d)
    assert np.array_equal(f.sum(axis=0), np.full(400, 15.0))
    assert f.max() > 2  # a PSU drawn three or more times happens with replacement


def test_subbootstrap_is_rao_wu() -> None:
    d = replicate(clus1(), "subbootstrap", replicates=200, seed=11)
    f = psu_factors(d)
    counts = f * 14 / 15
    assert np.allclose(counts, np.round(counts), atol=1e-12)
    assert np.allclose(counts.sum(axis=0), 14.0)
    assert d.replicates is not None
    assert d.replicates.scale == pytest.approx(1 / 199, rel=1e-15)


def r_value(case: str, statistic: str) -> tuple[float, float]:
    with (R_DIR / "rep_estimates.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["case"] == case and row["statistic"] == statistic:
                return float(row["estimate"]), float(row["se"])
    raise AssertionError((case, statistic))


# 4000 replicates: the SE's Monte Carlo relative error is about 1/sqrt(2 * 4000) = 1.1%
MC_REL = 0.05


@pytest.mark.parametrize(
    ("make", "boot", "r_boot", "taylor"),
    [
        (strat, "bootstrap", "strat_boot2000", 9.40894080278458),  # api_reference.csv "strat"
        (clus1, "bootstrap", "clus1_boot2000", r_value("clus1_taylor", "mean")[1]),
        (clus1, "subbootstrap", "clus1_subboot2000", r_value("clus1_taylor_nofpc", "mean")[1]),
    ],
)
def test_bootstrap_se_within_monte_carlo_error(
    make: Callable[[], Design], boot: str, r_boot: str, taylor: float
) -> None:
    d = replicate(make(), boot, replicates=4000, seed=20261125)  # type: ignore[arg-type]
    res = mean(d, "api00")
    est, r_se = r_value(r_boot, "mean")
    assert res["estimate"][0] == pytest.approx(est, rel=1e-12)
    assert res["se"][0] == pytest.approx(taylor, rel=MC_REL)
    assert res["se"][0] == pytest.approx(r_se, rel=MC_REL)


# -- re-weighting every replicate ----------------------------------------------------------------


def test_every_replicate_meets_the_poststratification_targets() -> None:
    d = replicate(post_stratify(clus1(), "stype", STYPE), "JK1")
    assert d.replicates is not None
    stype = apiclus1()["stype"].to_numpy()
    for cat, target in STYPE.items():
        np.testing.assert_allclose(
            d.replicates.weights[stype == cat].sum(axis=0), target, rtol=1e-12
        )


def test_every_replicate_meets_the_raking_margins() -> None:
    d = replicate(rake(strat(), {"sch.wide": SCH_WIDE, "awards": AWARDS}), "JKn")
    assert d.replicates is not None
    for col, targets in (("sch.wide", SCH_WIDE), ("awards", AWARDS)):
        labels = apistrat()[col].to_numpy()
        for cat, target in targets.items():
            np.testing.assert_allclose(
                d.replicates.weights[labels == cat].sum(axis=0), target, rtol=1e-9
            )


def test_replaying_the_steps_on_the_base_weights_gives_the_design_weights() -> None:
    d = calibrate(post_stratify(clus1(), "stype", STYPE), "api99", [6194, 3914069])
    assert isinstance(d, CalibratedDesign)
    w = d.base_weights
    for step in d.steps:
        w = step.reweight(w)
    np.testing.assert_allclose(w, d.weights, rtol=1e-12)


def test_reweighting_changes_the_se() -> None:
    """Without re-weighting the replicates the post-stratified SE would be R's unadjusted one."""
    adjusted = mean(replicate(post_stratify(clus1(), "stype", STYPE), "JK1"), "api00")["se"][0]
    plain = mean(replicate(clus1(), "JK1"), "api00")["se"][0]
    assert adjusted == pytest.approx(ours("clus1_jk1_ps", "mean")[""][1], rel=1e-12)
    assert abs(adjusted - plain) > 0.01 * plain


def test_reweighting_existing_replicates_equals_replicating_the_weighted_design() -> None:
    """R's order (replicate, then weight), via `reweight_replicates`, gives our order's weights."""
    cal = rake(post_stratify(clus1(), "stype", STYPE), {"stype": STYPE, "sch.wide": SCH_WIDE})
    rep = replicate(clus1(), "JK1").replicates
    assert rep is not None
    for step in cal.steps:
        rep = reweight_replicates(rep, step)
    ours_first = replicate(cal, "JK1").replicates
    assert ours_first is not None
    np.testing.assert_allclose(rep.weights, ours_first.weights, rtol=1e-12)
    assert rep.scale == ours_first.scale


def test_point_estimates_use_the_calibrated_weights() -> None:
    cal = post_stratify(clus1(), "stype", STYPE)
    assert mean(replicate(cal, "JK1"), "api00")["estimate"][0] == pytest.approx(
        mean(cal, "api00")["estimate"][0], rel=1e-14
    )


# -- errors --------------------------------------------------------------------------------------


def test_brr_names_the_strata_without_two_psus() -> None:
    with pytest.raises(WeightingError, match=r"exactly 2 PSUs.*E \(100 PSUs\), H \(50 PSUs\)"):
        replicate(strat(), "BRR")
    three = brr_data().with_columns(
        pl.when(pl.col("stratum") == "s02")
        .then(pl.lit("s01"))
        .otherwise(pl.col("stratum"))
        .alias("stratum")
    )
    with pytest.raises(WeightingError, match=r"strata s01 \(4 PSUs\)"):
        replicate(Design(three, ids="psu", strata="stratum", weights="w"), "BRR")


def test_jkn_names_a_lonely_stratum() -> None:
    data = apistrat().with_columns(
        pl.when(pl.col("snum") == apistrat()["snum"][0])
        .then(pl.lit("X"))
        .otherwise(pl.col("stype"))
        .alias("stype2")
    )
    design = Design(data, strata="stype2", weights="pw")
    with pytest.raises(WeightingError, match=r"JKn: strata \['X'\].*one PSU"):
        replicate(design, "JKn")


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (strat, {"type": "JK1"}, "JK1 is for unstratified"),
        (clus1, {"type": "JKn"}, "JKn needs a stratified design"),
        (clus1, {"type": "BRR"}, "BRR needs a stratified design"),
        (brr_design, {"type": "Fay"}, r"0 < rho < 1, got rho=0.0"),
        (brr_design, {"type": "Fay", "rho": 1.0}, r"0 < rho < 1"),
        (brr_design, {"type": "BRR", "rho": 0.5}, r"needs type='Fay'"),
        (clus1, {"type": "jackknife"}, "unknown replicate type 'jackknife'"),
        (clus1, {"type": "bootstrap", "replicates": 1}, "at least 2 replicates"),
    ],
)
def test_bad_requests_are_weighting_errors(
    make: Callable[[], Design], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(WeightingError, match=message):
        replicate(make(), **kwargs)  # type: ignore[arg-type]


def test_replicate_df_needs_replicates() -> None:
    with pytest.raises(WeightingError, match="no replicate weights"):
        replicate_df(clus1())
