"""Identities every design-based estimator must satisfy, on generated stratified two-stage samples.

- a census (every PSU of every stratum taken) has no sampling variance;
- multiplying the weights by a constant leaves means, proportions and their SEs unchanged;
- R's domain identity: ``svyby(~y, ~d, svymean)`` = ``svymean`` on the design whose weights are zero
  outside the domain = ``svyratio(~I(y*d), ~d)``, with the same df;
- the fast domain path (cluster sums) equals the general path (row-level scores);
- proportions over all levels sum to 1, and the two levels of a binary variable have equal SEs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from impactstudy.estimate import Design, by, mean, ratio, total
from impactstudy.weighting import post_stratify

API = Path(__file__).parent / "fixtures" / "api"

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)
REL = 1e-9


@st.composite
def samples(draw: st.DrawFn) -> pl.DataFrame:
    """A stratified two-stage sample: 1-3 strata, 2-4 PSUs each, 2-3 SSUs per PSU, 1-3 rows per
    SSU; PSU and SSU labels reused across strata; a numeric ``y``, a 3-level ``cat``, a binary
    ``yes``, a domain column ``dom`` and weights ``w``."""
    rows: dict[str, list[object]] = {k: [] for k in ("h", "psu", "ssu", "y", "cat", "dom", "w")}
    for h in range(draw(st.integers(1, 3))):
        for p in range(draw(st.integers(2, 4))):
            for s in range(draw(st.integers(2, 3))):
                for _ in range(draw(st.integers(1, 3))):
                    rows["h"].append(h)
                    rows["psu"].append(p)
                    rows["ssu"].append(s)
                    rows["y"].append(draw(st.floats(-100, 100, allow_nan=False)))
                    rows["cat"].append(draw(st.sampled_from(["x", "y", "z"])))
                    rows["dom"].append(draw(st.sampled_from(["a", "b", "c"])))
                    rows["w"].append(draw(st.floats(0.5, 50, allow_nan=False)))
    data = pl.DataFrame(rows)
    return data.with_columns(yes=(pl.col("cat") == "x").cast(pl.Float64))


def design_of(data: pl.DataFrame, two_stage: bool) -> Design:
    """One-stage (with replacement) or two-stage (with fpc at both stages) design of a sample."""
    if not two_stage:
        return Design(data, ids="psu", strata="h", weights="w")
    with_fpc = data.with_columns(
        N1=(pl.col("psu").n_unique().over("h") + 2).cast(pl.Float64),
        N2=(pl.col("ssu").n_unique().over("h", "psu") + 3).cast(pl.Float64),
    )
    return Design(with_fpc, ids=["psu", "ssu"], strata="h", weights="w", fpc=["N1", "N2"])


def close(a: npt.ArrayLike, b: npt.ArrayLike, rel: float = REL) -> None:
    """Equal to ``rel``, with an absolute floor at the scale of ``b`` (SEs that are 0 in exact
    arithmetic come out as rounding noise on one route and 0 on the other)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    scale = float(np.max(np.abs(y), initial=1.0))
    np.testing.assert_allclose(x, y, rtol=rel, atol=1e-12 * scale)


class _RowLevel(Design):
    """The same design with an overridden (identity) residualise: `by` takes its general path."""

    def residualise(self, z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return z


def row_level(design: Design) -> Design:
    new = _RowLevel.__new__(_RowLevel)
    new.__dict__.update(design.__dict__)
    return new


@SETTINGS
@given(samples())
def test_census_has_zero_se(data: pl.DataFrame) -> None:
    """Every PSU taken (fpc = number of PSUs): mean, total, proportions and domains have SE 0."""
    census = data.with_columns(N=pl.col("psu").n_unique().over("h").cast(pl.Float64))
    design = Design(census, ids="psu", strata="h", weights="w", fpc="N")
    for result in (
        mean(design, "y"),
        total(design, "y"),
        mean(design, "cat"),
        by(design, ["y", "cat"], "dom"),
        by(design, "y", ["dom", "cat"], statistic="total"),
    ):
        assert (result["se"] == 0.0).all()


@SETTINGS
@given(samples(), st.booleans(), st.floats(1e-3, 1e3))
def test_scaling_weights_leaves_means_and_ses_unchanged(
    data: pl.DataFrame, two_stage: bool, c: float
) -> None:
    base = design_of(data, two_stage)
    scaled = design_of(data.with_columns(w=pl.col("w") * c), two_stage)
    for fun in (
        lambda d: mean(d, "y"),
        lambda d: mean(d, "cat"),
        lambda d: by(d, ["y", "cat"], "dom"),
    ):
        a, b = fun(scaled), fun(base)
        close(a["estimate"], b["estimate"])
        close(a["se"], b["se"])
        close(a["deff"].fill_null(0.0), b["deff"].fill_null(0.0))
    t_a, t_b = total(scaled, "y"), total(base, "y")
    close(t_a["estimate"], t_b["estimate"] * c)
    close(t_a["se"], t_b["se"] * c)


@SETTINGS
@given(samples(), st.booleans())
def test_domain_identity(data: pl.DataFrame, two_stage: bool) -> None:
    """R's domain identity: by = mean with zero weights outside the domain = ratio(y*d, d)."""
    design = design_of(data, two_stage)
    domains = by(design, "y", "dom")
    for row in domains.iter_rows(named=True):
        d = row["domain"]
        marked = data.with_columns(
            w=pl.when(pl.col("dom") == d).then(pl.col("w")).otherwise(0.0),
            d=(pl.col("dom") == d).cast(pl.Float64),
        ).with_columns(yd=pl.col("y") * pl.col("d"))
        zeroed = mean(design_of(marked, two_stage), "y").row(0, named=True)
        assert row["estimate"] == pytest.approx(zeroed["estimate"], rel=REL, abs=1e-12)
        assert row["se"] == pytest.approx(zeroed["se"], rel=REL, abs=1e-12)
        assert row["df"] == zeroed["df"]
        assert row["n"] == zeroed["n"]
        as_ratio = ratio(design_of(marked.with_columns(w=data["w"]), two_stage), "yd", "d")
        assert row["estimate"] == pytest.approx(as_ratio["estimate"][0], rel=REL, abs=1e-12)
        assert row["se"] == pytest.approx(as_ratio["se"][0], rel=REL, abs=1e-12)


@SETTINGS
@given(samples(), st.booleans(), st.sampled_from(["mean", "total"]))
def test_fast_domains_equal_the_row_level_path(
    data: pl.DataFrame, two_stage: bool, statistic: str
) -> None:
    """Cluster sums (no residualisation, no replicates) give the row-level scores' variance, for
    domains and for the whole sample (`mean` and `total` take the same path with one domain)."""
    design = design_of(data, two_stage)
    for cols in ("dom", ["dom", "cat"]):
        fast = by(design, ["y", "cat"], cols, statistic=statistic)  # type: ignore[arg-type]
        general = by(row_level(design), ["y", "cat"], cols, statistic=statistic)  # type: ignore[arg-type]
        assert fast.select("variable", "level", "domain", "n", "df").equals(
            general.select("variable", "level", "domain", "n", "df")
        )
        close(fast["estimate"], general["estimate"], rel=1e-12)
        close(fast["se"], general["se"], rel=1e-12)
    fun = mean if statistic == "mean" else total
    for y in ("y", "cat"):
        fast, general = fun(design, y), fun(row_level(design), y)
        assert fast.select("level", "n", "df").equals(general.select("level", "n", "df"))
        for col in ("estimate", "se", "deff"):
            close(fast[col].fill_null(0.0), general[col].fill_null(0.0), rel=1e-12)


@SETTINGS
@given(samples(), st.booleans())
def test_proportions_sum_to_one_and_binary_levels_share_their_se(
    data: pl.DataFrame, two_stage: bool
) -> None:
    design = design_of(data, two_stage)
    props = mean(design, "cat")
    assert props["estimate"].sum() == pytest.approx(1.0, rel=1e-12)
    for _, group in by(design, "cat", "dom").group_by("domain"):
        assert group["estimate"].sum() == pytest.approx(1.0, rel=1e-12)
    binary = design.__class__.__new__(design.__class__)
    binary.__dict__.update(design.__dict__)
    binary.data = design.data.with_columns(
        yes_no=pl.when(pl.col("yes") == 1)
        .then(pl.lit("yes"))
        .otherwise(pl.lit("no"))
        .cast(pl.Enum(["no", "yes"]))  # both levels even when one is empty
    )
    two = mean(binary, "yes_no")
    assert two["level"].to_list() == ["no", "yes"]
    close(two["se"][0], two["se"][1], rel=1e-12)
    close(two["se"][1], mean(binary, "yes")["se"][0], rel=1e-12)
    for _, group in by(binary, "yes_no", "dom").group_by("domain"):
        close(group["se"][0], group["se"][1], rel=1e-9)


def test_several_variables_in_one_call_equal_one_call_each() -> None:
    """R's svymean(~a+b): the same rows as one call per variable, on the cluster-sum path and on
    a calibrated design."""
    data = pl.read_csv(API / "apistrat.csv", null_values="NA")
    design = Design(data, strata="stype", weights="pw", fpc="fpc")
    calibrated = post_stratify(design, "stype", {"E": 4421.0, "H": 755.0, "M": 1018.0})
    for d in (design, calibrated):
        for f in (mean, total):
            together = f(d, ["api00", "sch.wide", "enroll"])
            apart = pl.concat([f(d, v) for v in ["api00", "sch.wide", "enroll"]])
            assert together.select("variable", "level").equals(apart.select("variable", "level"))
            np.testing.assert_allclose(together["estimate"], apart["estimate"], rtol=1e-12)
            np.testing.assert_allclose(together["se"], apart["se"], rtol=1e-12)
