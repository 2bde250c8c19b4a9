"""Weighting (post-stratification, raking, GREG calibration, JK1) against R survey on `api`."""

from __future__ import annotations

import csv
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from impactstudy.estimate import Design, mean, total
from impactstudy.estimate import mean as plain_mean
from impactstudy.weighting import (
    WeightingError,
    calibrate,
    jk1,
    post_stratify,
    rake,
)

API = Path(__file__).parent / "fixtures" / "api"
REL = 1e-9
STYPE = {"E": 4421.0, "H": 755.0, "M": 1018.0}
SCH_WIDE = {"No": 1072.0, "Yes": 5122.0}


@cache
def apiclus1() -> pl.DataFrame:
    return pl.read_csv(API / "apiclus1.csv", null_values="NA", infer_schema_length=None)


def clus1() -> Design:
    return Design(apiclus1(), ids="dnum", weights="pw", fpc="fpc")


DESIGNS: dict[str, Callable[[], Design]] = {
    "clus1_poststrat": lambda: post_stratify(clus1(), "stype", STYPE),
    "clus1_rake": lambda: rake(clus1(), {"stype": STYPE, "sch.wide": SCH_WIDE}),
    "clus1_greg": lambda: calibrate(clus1(), "api99", [6194, 3914069]),
    "clus1_jk1": lambda: jk1(clus1()),
}


def reference_rows() -> list[dict[str, str]]:
    with (API / "api_reference.csv").open(newline="") as fh:
        return [row for row in csv.DictReader(fh) if row["case"] in DESIGNS]


ROWS = reference_rows()


def test_eight_reference_rows() -> None:
    assert len(ROWS) == 8


@pytest.mark.parametrize("row", ROWS, ids=[f"{r['case']}:{r['statistic']}" for r in ROWS])
def test_reference_row(row: dict[str, str]) -> None:
    design = DESIGNS[row["case"]]()
    fun, var = row["statistic"].removesuffix(")").split("(~")
    estimator = mean if fun == "svymean" else total
    result = estimator(design, var)
    assert result.height == 1
    assert result["estimate"][0] == pytest.approx(float(row["estimate"]), rel=REL)
    assert result["se"][0] == pytest.approx(float(row["se"]), rel=REL)


def test_plain_estimators_give_calibrated_point_estimates() -> None:
    design = post_stratify(clus1(), "stype", STYPE)
    assert plain_mean(design, "api00")["estimate"][0] == pytest.approx(
        mean(design, "api00")["estimate"][0], rel=1e-14
    )


def test_poststratified_weights_reproduce_targets() -> None:
    design = post_stratify(clus1(), "stype", STYPE)
    counts = (
        apiclus1()
        .with_columns(w=pl.Series(design.weights))
        .group_by("stype")
        .agg(pl.col("w").sum())
    )
    for stype, w in counts.iter_rows():
        assert w == pytest.approx(STYPE[stype], rel=1e-12)


def test_greg_weights_reproduce_targets() -> None:
    design = calibrate(clus1(), "api99", [6194, 3914069])
    x = apiclus1()["api99"].to_numpy().astype(float)
    assert design.weights.sum() == pytest.approx(6194, rel=1e-12)
    assert design.weights @ x == pytest.approx(3914069, rel=1e-12)


def test_raking_converges_to_margins() -> None:
    design = rake(clus1(), {"stype": STYPE, "sch.wide": SCH_WIDE})
    frame = apiclus1().with_columns(w=pl.Series(design.weights))
    for column, targets in (("stype", STYPE), ("sch.wide", SCH_WIDE)):
        for cat, w in frame.group_by(column).agg(pl.col("w").sum()).iter_rows():
            assert w == pytest.approx(targets[cat], rel=1e-9)


def test_raking_non_convergence_names_margin() -> None:
    with pytest.raises(WeightingError, match=r"did not converge.*margin 'sch.wide'"):
        rake(clus1(), {"sch.wide": SCH_WIDE, "stype": STYPE}, max_iter=1)


def test_empty_category_names_margin() -> None:
    with pytest.raises(WeightingError, match=r"margin 'stype'.*\['X'\].*no respondents"):
        post_stratify(clus1(), "stype", {**STYPE, "X": 10.0})
    with pytest.raises(WeightingError, match=r"margin 'sch.wide'.*\['Maybe'\]"):
        rake(clus1(), {"stype": STYPE, "sch.wide": {"No": 1072.0, "Yes": 5117.0, "Maybe": 5.0}})


def test_inconsistent_targets_name_margin() -> None:
    with pytest.raises(WeightingError, match=r"margin 'sch.wide'.*inconsistent"):
        rake(clus1(), {"stype": STYPE, "sch.wide": {"No": 1072.0, "Yes": 5000.0}})


def test_sample_category_without_target_names_margin() -> None:
    with pytest.raises(WeightingError, match=r"margin 'stype'.*no population count"):
        post_stratify(clus1(), "stype", {"E": 4421.0, "H": 755.0})


def test_repeated_poststratification_keeps_estimate() -> None:
    once = post_stratify(clus1(), "stype", STYPE)
    twice = post_stratify(once, "stype", STYPE)
    assert mean(twice, "api00")["estimate"][0] == pytest.approx(
        mean(once, "api00")["estimate"][0], rel=1e-12
    )
    assert [s.name for s in twice.steps] == ["post_stratify(stype)", "post_stratify(stype)"]


def test_poststratify_equals_greg_on_dummies() -> None:
    ps = post_stratify(clus1(), "stype", STYPE)
    data = apiclus1().with_columns(
        H=(pl.col("stype") == "H").cast(pl.Float64), M=(pl.col("stype") == "M").cast(pl.Float64)
    )
    greg = calibrate(
        Design(data, ids="dnum", weights="pw", fpc="fpc"), ["H", "M"], [6194, 755, 1018]
    )
    np.testing.assert_allclose(ps.weights, greg.weights, rtol=1e-12)
    assert mean(ps, "api00")["se"][0] == pytest.approx(mean(greg, "api00")["se"][0], rel=1e-9)
