"""Calibration (linear, truncated linear, raking, logit; categorical GREG), trimming and
nonresponse adjustment against R survey 4.1.1 (tests/fixtures/r/calib_reference.R), their errors,
diagnostics, and the replay contract of every weighting Step."""

from __future__ import annotations

import csv
from collections.abc import Callable
from functools import cache, reduce
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from impactstudy.estimate import Design, mean, total
from impactstudy.weighting import (
    CalibratedDesign,
    WeightingError,
    calibrate,
    jk1,
    nonresponse_adjust,
    post_stratify,
    rake,
    trim,
)

FIXTURES = Path(__file__).parent / "fixtures"
REL = 1e-9
STYPE = {"E": 4421.0, "H": 755.0, "M": 1018.0}
SCH_WIDE = {"No": 1072.0, "Yes": 5122.0}
COMP_IMP = {"No": 1712.0, "Yes": 4482.0}
STYPE_BY_SCH_WIDE = {
    "E:No": 472.0,
    "E:Yes": 3949.0,
    "H:No": 334.0,
    "H:Yes": 421.0,
    "M:No": 266.0,
    "M:Yes": 752.0,
}
POP_GREG = {"(Intercept)": 6194.0, "stypeH": 755.0, "stypeM": 1018.0, "api99": 3914069.0}
POP_RAKE = {"(Intercept)": 6194.0, "stypeH": 755.0, "stypeM": 1018.0, "sch.wideYes": 5122.0}


def _read(name: str) -> pl.DataFrame:
    return pl.read_csv(FIXTURES / "api" / name, null_values="NA", infer_schema_length=None)


@cache
def apiclus1() -> pl.DataFrame:
    return _read("apiclus1.csv")


@cache
def chain_data() -> pl.DataFrame:
    """apiclus1 with synthetic unequal selection probabilities and a response indicator, as in
    calib_reference.R."""
    factor = pl.Series([0.8, 1.0, 1.25]).gather(apiclus1()["snum"] % 3)
    return apiclus1().with_columns(
        prob=(1.0 / pl.col("pw")) * factor, respondent=(pl.col("snum") % 4) != 2
    )


def clus1() -> Design:
    return Design(apiclus1(), ids="dnum", weights="pw", fpc="fpc")


def strat() -> Design:
    return Design(_read("apistrat.csv"), strata="stype", weights="pw", fpc="fpc")


def chain_base() -> Design:
    return Design(chain_data(), ids="dnum", probs="prob", fpc="fpc")


def greg() -> CalibratedDesign:
    return calibrate(clus1(), ["stype", "api99"], POP_GREG)


def nonresponse() -> CalibratedDesign:
    return nonresponse_adjust(chain_base(), respondent="respondent", classes="stype")


def full_chain() -> CalibratedDesign:
    """probs -> nonresponse (classes stype) -> rake (sch.wide, comp.imp) -> strict trim."""
    raked = rake(nonresponse(), {"sch.wide": SCH_WIDE, "comp.imp": COMP_IMP}, epsilon=1e-12)
    return trim(raked, upper=60, strict=True)


CASES: dict[str, Callable[[], CalibratedDesign]] = {
    "logit_bounded": lambda: calibrate(
        clus1(), ["stype", "api99"], POP_GREG, calfun="logit", bounds=(0.7, 1.7)
    ),
    "linear_truncated": lambda: calibrate(clus1(), ["stype", "api99"], POP_GREG, bounds=(0.6, 1.6)),
    "greg_categorical": greg,
    "raking_calfun": lambda: calibrate(clus1(), ["stype", "sch.wide"], POP_RAKE, calfun="raking"),
    "raking_bounded": lambda: calibrate(
        clus1(), ["stype", "sch.wide"], POP_RAKE, calfun="raking", bounds=(0.8, 1.6)
    ),
    "rake_joint": lambda: rake(
        clus1(),
        [(("stype", "sch.wide"), STYPE_BY_SCH_WIDE), ("comp.imp", COMP_IMP)],
        epsilon=1e-12,  # R: control = list(maxit = 100, epsilon = 1e-12), the same stop rule
    ),
    "trim": lambda: trim(strat(), upper=40, lower=18),
    "greg_trim": lambda: trim(greg(), upper=50, lower=25),
    "greg_trim_strict": lambda: trim(greg(), upper=50, lower=25, strict=True),
    "nonresponse": nonresponse,
    "nonresponse_chain": full_chain,
    "nonresponse_poststrat": lambda: post_stratify(nonresponse(), "stype", STYPE),
}


def _reference() -> dict[tuple[str, str], float]:
    with (FIXTURES / "r" / "calib_reference.csv").open(newline="") as fh:
        return {(r["case"], r["statistic"]): float(r["value"]) for r in csv.DictReader(fh)}


def _reference_weights() -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    with (FIXTURES / "r" / "calib_weights.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            out.setdefault(r["case"], {})[int(r["row"]) - 1] = float(r["weight"])
    return out


REFERENCE = _reference()
REFERENCE_WEIGHTS = _reference_weights()
ESTIMATES = sorted(
    {(c, s.removesuffix("_estimate")) for c, s in REFERENCE if s.endswith("_estimate")}
)


@cache
def built(case: str) -> CalibratedDesign:
    return CASES[case]()


def test_every_case_has_reference_values() -> None:
    assert set(REFERENCE_WEIGHTS) == set(CASES)
    assert {c for c, _ in ESTIMATES} == set(CASES)
    assert len(ESTIMATES) == 4 * len(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_weights_equal_r(case: str) -> None:
    """Every final weight equals R's (rows R dropped as nonrespondents have weight 0 here)."""
    design = built(case)
    ref = REFERENCE_WEIGHTS[case]
    rows = np.array(sorted(ref))
    np.testing.assert_allclose(design.weights[rows], [ref[i] for i in rows], rtol=REL)
    others = np.setdiff1d(np.arange(design.n), rows)
    assert np.all(design.weights[others] == 0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_weight_summary_equals_r(case: str) -> None:
    design = built(case)
    w = design.weights[design.weights > 0]
    g = design.weights / np.where(design.base_weights > 0, design.base_weights, 1.0)
    g = g[design.weights > 0]
    got = {
        "min": w.min(),
        "max": w.max(),
        "sum": w.sum(),
        "mean": w.mean(),
        "median": np.median(w),
        "g_min": g.min(),
        "g_max": g.max(),
    }
    for name, value in got.items():
        assert value == pytest.approx(REFERENCE[(case, f"weights_{name}")], rel=REL), name


@pytest.mark.parametrize("case,statistic", ESTIMATES, ids=[f"{c}:{s}" for c, s in ESTIMATES])
def test_estimate_and_se_equal_r(case: str, statistic: str) -> None:
    fun, var = statistic.removesuffix(")").split("(~")
    estimator = mean if fun == "svymean" else total
    result = estimator(built(case), var, na_rm=True)
    assert result["estimate"][0] == pytest.approx(
        REFERENCE[(case, f"{statistic}_estimate")], rel=REL
    )
    assert result["se"][0] == pytest.approx(REFERENCE[(case, f"{statistic}_se")], rel=REL)


@pytest.mark.parametrize("case", sorted(CASES))
def test_steps_replay_from_base_weights(case: str) -> None:
    """The replay contract: folding every Step's reweight over the base weights reproduces the
    design's weights, and the last step replays the weights before it."""
    design = built(case)
    replayed = reduce(lambda w, s: s.reweight(w), design.steps, design.base_weights)
    np.testing.assert_allclose(replayed, design.weights, rtol=1e-12, atol=1e-12)
    if len(design.steps) == 1:
        np.testing.assert_allclose(
            design.steps[0].reweight(design.base_weights), design.weights, rtol=1e-12
        )


@pytest.mark.parametrize("case", sorted(CASES))
def test_steps_record_diagnostics(case: str) -> None:
    design = built(case)
    for step in design.steps:
        d = step.diagnostics
        assert d is not None, step.name
        assert d.iterations >= 1
        assert d.converged or case == "greg_trim"  # one R pass may leave weights outside
        assert d.max_margin_error < 1e-4 * design.weights.sum()
        assert d.g_range[0] <= d.g_range[1]
    last = design.steps[-1].diagnostics
    assert last is not None
    if len(design.steps) == 1:
        assert last.g_range[0] == pytest.approx(REFERENCE[(case, "weights_g_min")], rel=REL)
        assert last.g_range[1] == pytest.approx(REFERENCE[(case, "weights_g_max")], rel=REL)


def test_iterative_diagnostics_count_iterations() -> None:
    logit = built("logit_bounded").steps[-1].diagnostics
    assert logit is not None and logit.iterations > 1
    strict = built("greg_trim_strict").steps[-1].diagnostics
    once = built("greg_trim").steps[-1].diagnostics
    assert strict is not None and once is not None
    assert strict.iterations > once.iterations == 1
    assert strict.converged and not once.converged  # one R pass leaves weights below 25


def test_rake_equals_calibrate_raking() -> None:
    """R rakecheck.R: rake() and calibrate(calfun="raking") on the same margins agree."""
    raked = rake(clus1(), {"stype": STYPE, "sch.wide": SCH_WIDE})
    np.testing.assert_allclose(built("raking_calfun").weights, raked.weights, rtol=1e-8)
    assert REFERENCE[("raking_calfun", "max_abs_log_ratio_vs_rake")] < 1e-8


def test_poststratify_equals_calibrate_on_factor() -> None:
    ps = post_stratify(clus1(), "stype", STYPE)
    cal = calibrate(clus1(), "stype", {"(Intercept)": 6194.0, "stypeH": 755.0, "stypeM": 1018.0})
    np.testing.assert_allclose(cal.weights, ps.weights, rtol=1e-12)
    assert mean(cal, "api00")["se"][0] == pytest.approx(mean(ps, "api00")["se"][0], rel=1e-9)


def test_categorical_dtypes_and_no_intercept_give_the_same_weights() -> None:
    """Enum (own level order: baseline H), Categorical, and R's full dummies without intercept."""
    enum = apiclus1().with_columns(pl.col("stype").cast(pl.Enum(["H", "E", "M"])))
    by_enum = calibrate(
        Design(enum, ids="dnum", weights="pw", fpc="fpc"),
        ["stype", "api99"],
        {"(Intercept)": 6194.0, "stypeE": 4421.0, "stypeM": 1018.0, "api99": 3914069.0},
    )
    np.testing.assert_allclose(by_enum.weights, built("greg_categorical").weights, rtol=1e-10)
    cat = apiclus1().with_columns(pl.col("stype").cast(pl.Categorical))
    by_cat = calibrate(
        Design(cat, ids="dnum", weights="pw", fpc="fpc"), ["stype", "api99"], POP_GREG
    )
    np.testing.assert_allclose(by_cat.weights, built("greg_categorical").weights, rtol=1e-10)
    no_intercept = calibrate(
        clus1(),
        ["stype", "api99"],
        {"stypeE": 4421.0, "stypeH": 755.0, "stypeM": 1018.0, "api99": 3914069.0},
        intercept=False,
    )
    np.testing.assert_allclose(no_intercept.weights, built("greg_categorical").weights, rtol=1e-10)


def test_nonresponse_hand_calculation() -> None:
    data = pl.DataFrame(
        {
            "cls": ["a", "a", "a", "b", "b", "b"],
            "w": [10.0, 20.0, 30.0, 5.0, 5.0, 10.0],
            "resp": [True, False, True, True, True, False],
            "y": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        }
    )
    design = nonresponse_adjust(Design(data, weights="w"), respondent="resp", classes="cls")
    # class a: 60 / 40 = 1.5; class b: 20 / 10 = 2
    np.testing.assert_allclose(design.weights, [15.0, 0.0, 45.0, 10.0, 10.0, 0.0], rtol=1e-15)
    assert mean(design, "y")["estimate"][0] == pytest.approx((15 + 135 + 40 + 50) / 80, rel=1e-14)
    d = design.steps[0].diagnostics
    assert d is not None and d.g_range == (1.5, 2.0) and d.max_margin_error == 0.0


def _errors() -> list[tuple[str, Callable[[], object], str]]:
    bad_resp = chain_data().with_columns(respondent=pl.col("stype") != "H")
    return [
        (
            "category_without_respondents",
            lambda: calibrate(clus1(), ["stype", "api99"], {**POP_GREG, "stypeX": 10.0}),
            r"calibration variable 'stype': category 'X' has a population total .* no respondents",
        ),
        (
            "inconsistent_category_totals",
            lambda: calibrate(clus1(), ["stype", "api99"], {**POP_GREG, "stypeH": 5500.0}),
            r"calibration variable 'stype'.*\['stypeH', 'stypeM'\].*inconsistent",
        ),
        (
            "missing_total",
            lambda: calibrate(clus1(), ["stype", "api99"], {"(Intercept)": 6194.0}),
            r"totals missing for \['stypeH', 'stypeM', 'api99'\]",
        ),
        (
            "unknown_total",
            lambda: calibrate(clus1(), ["stype"], {**POP_GREG}),
            r"totals given for \['api99'\]",
        ),
        (
            "unknown_column",
            lambda: calibrate(clus1(), ["stype", "nope"], POP_GREG),
            r"calibration variable 'nope' is not a column",
        ),
        (
            "missing_values",
            lambda: calibrate(clus1(), ["acs.k3"], [6194.0, 1.0]),
            r"calibration variable 'acs.k3' has 39 missing values",
        ),
        (
            "logit_needs_finite_bounds",
            lambda: calibrate(clus1(), ["stype"], POP_GREG, calfun="logit"),
            r"logit calibration needs finite bounds",
        ),
        (
            "bounds_not_around_one",
            lambda: calibrate(clus1(), ["stype"], POP_GREG, bounds=(1.2, 2.0)),
            r"lower <= 1 <= upper",
        ),
        (
            "bounds_cannot_be_met",
            lambda: calibrate(clus1(), ["stype", "api99"], POP_GREG, bounds=(0.75, 1.25)),
            r"linear calibration did not converge after 51 iterations: margin 'stypeH' .*"
            r"bounds \(0.75, 1.25\)",
        ),
        (
            "raking_non_convergence",
            lambda: calibrate(clus1(), ["stype", "sch.wide"], POP_RAKE, calfun="raking", maxit=1),
            r"raking calibration did not converge.*margin 'stypeH'",
        ),
        (
            "logit_non_convergence",
            lambda: calibrate(
                clus1(), ["stype", "api99"], POP_GREG, calfun="logit", bounds=(0.9, 1.1)
            ),
            r"logit calibration did not converge.*margin '(stypeH|stypeM|api99|\(Intercept\))'",
        ),
        (
            "trim_bounds_cannot_be_met",
            lambda: trim(clus1(), upper=20),
            r"trim: bounds \[-inf, 20\] cannot be met: 183 weights",
        ),
        (
            "trim_bounds_reversed",
            lambda: trim(clus1(), lower=40, upper=30),
            r"lower bound 40 must be below the upper bound 30",
        ),
        (
            "nonresponse_class_without_respondents",
            lambda: nonresponse_adjust(
                Design(bad_resp, ids="dnum", probs="prob", fpc="fpc"),
                respondent="respondent",
                classes="stype",
            ),
            r"nonresponse class 'stype': classes \['H'\] have sampled units .* no respondents",
        ),
        (
            "nonresponse_joint_class_without_respondents",
            lambda: nonresponse_adjust(
                Design(bad_resp, ids="dnum", probs="prob", fpc="fpc"),
                respondent="respondent",
                classes=["stype", "sch.wide"],
            ),
            r"nonresponse class 'stype:sch.wide': classes \['H:No', 'H:Yes'\]",
        ),
        (
            "nonresponse_respondent_not_boolean",
            lambda: nonresponse_adjust(chain_base(), respondent="stype", classes="stype"),
            r"respondent column 'stype' must be boolean",
        ),
        (
            "nonresponse_class_not_a_column",
            lambda: nonresponse_adjust(chain_base(), respondent="respondent", classes="nope"),
            r"margin 'nope' is not a column",
        ),
        (
            "rake_joint_margin_cell_without_respondents",
            lambda: rake(
                clus1(),
                [
                    (("stype", "sch.wide"), {**STYPE_BY_SCH_WIDE, "X:No": 1.0}),
                    ("comp.imp", COMP_IMP),
                ],
            ),
            r"margin 'stype:sch.wide': categories \['X:No'\]",
        ),
    ]


ERRORS = _errors()


@pytest.mark.parametrize("build,pattern", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_bad_input_is_a_weighting_error_naming_it(
    build: Callable[[], object], pattern: str
) -> None:
    with pytest.raises(WeightingError, match=pattern):
        build()


def test_replay_of_nonresponse_on_other_weights_names_the_class() -> None:
    """Replaying on a replicate that zeroes every respondent of a class is an error, not 0/0."""
    design = nonresponse()
    w = design.base_weights.copy()
    data = chain_data()
    h_resp = ((data["stype"] == "H") & data["respondent"]).to_numpy()
    w[h_resp] = 0.0
    with pytest.raises(WeightingError, match=r"classes \['H'\]"):
        design.steps[0].reweight(w)


def test_chain_keeps_unit_design_weights_within_cells() -> None:
    """Rake keeps per-unit design weights: within a cell of the raking margins the ratio of final
    to base weight is constant (before trimming)."""
    raked = rake(nonresponse(), {"sch.wide": SCH_WIDE, "comp.imp": COMP_IMP})
    frame = chain_data().with_columns(
        g=pl.Series(raked.weights / raked.base_weights), w=pl.Series(raked.weights)
    )
    spread = (
        frame.filter(pl.col("w") > 0)
        .group_by("stype", "sch.wide", "comp.imp")
        .agg(
            (pl.col("g").max() - pl.col("g").min()).alias("spread"),
            pl.col("w").n_unique().alias("distinct"),
        )
    )
    assert spread["spread"].max() < 1e-12
    assert spread["distinct"].max() == 3  # the three synthetic selection probabilities survive


@pytest.mark.parametrize(
    "case",
    ["logit_bounded", "greg_categorical", "raking_calfun", "rake_joint", "nonresponse_chain"],
)
def test_replay_on_replicate_weights_meets_the_targets(case: str) -> None:
    """Replaying the steps on JK1 replicate weights (a PSU dropped) calibrates the replicate and
    keeps the dropped PSU at zero. (Bounds that the full sample meets may be infeasible for a
    replicate: truncated linear to (0.6, 1.6) and raking to (0.8, 1.6) are, and then replay is a
    WeightingError, as R's calibrate of that replicate fails.)"""
    design = built(case)
    replicate = jk1(clus1()).replicates
    assert replicate is not None
    for r in (0, 7):
        w = reduce(lambda w, s: s.reweight(w), design.steps, replicate.weights[:, r])
        assert w.sum() == pytest.approx(6194.0, rel=1e-6)
        frame = apiclus1().with_columns(w=pl.Series(w))
        got = dict(frame.group_by("stype").agg(pl.col("w").sum()).iter_rows())
        if case != "nonresponse_chain":  # the chain rakes on sch.wide and comp.imp, then trims
            assert got == pytest.approx(STYPE, rel=1e-6)
        assert np.all(w[replicate.weights[:, r] == 0] == 0)
