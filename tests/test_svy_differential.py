"""Differential tests against svy 0.35 (a test-only dependency) on generated designs.

svy equals R survey to ~1e-13 on everything compared here (estimation-notes), so agreement with it
on random designs extends the R reference rows of tests/test_estimate.py to many more
configurations: strata with and without clusters, one- and two-stage clusters, with and without
fpc, domains (one column and two crossed columns), proportions with their logit intervals and
domain df, and raking with calibration-aware SEs. Estimates, SEs, design effects (svy
``deff="wr"`` is R's ``deff="replace"``) and df are compared to 1e-9 relative.

svy conventions that differ from R, and so from us, are not compared: its JK1 ignores the fpc
(R: ``as.svrepdesign`` keeps it; see estimation-notes) and its replicate df is the number of
replicates - 1 in every domain (R: the rank of the domain's replicate weights - 1), both pinned
against R in `test_svy_jk1_ignores_the_fpc` and tests/test_estimate.py; its Wilson interval uses
a df-adjusted effective sample size and a t quantile, ours the plain n_eff and the normal quantile
(documented in `impactstudy.estimate.mean`); and svy's raking stops at ``tol=1e-4`` by default,
so it is run with ``tol=1e-13`` to compare converged weights.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from impactstudy.estimate import Design, by, mean, total
from impactstudy.weighting import rake

svy = pytest.importorskip("svy")

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)
REL = 1e-9
KINDS = ("strat", "strat_fpc", "clus1", "clus1_fpc", "clus2", "clus2_fpc")


@st.composite
def samples(draw: st.DrawFn) -> pl.DataFrame:
    """A stratified two-stage sample (2-3 SSUs per PSU, so no stage is lonely), with population
    counts ``N1`` (PSUs per stratum), ``N2`` (SSUs per PSU) and ``Nrow`` (rows per stratum), a
    numeric ``y``, a 3-level ``cat`` and domain columns ``dom`` and ``grp``. PSU labels are reused
    across strata (nested, as R's ``nest=TRUE``); SSU labels are unique. svy refuses to return
    design effects when none is defined (constant data), so ``y`` is never constant and the first
    rows hold two domains with two categories each."""
    rows: dict[str, list[Any]] = {
        k: [] for k in ("h", "psu", "ssu", "y", "cat", "dom", "grp", "w", "N1", "N2")
    }
    ssu_id = 0
    for h in range(draw(st.integers(1, 3))):
        n_psu = draw(st.integers(2, 4))
        extra_psu = draw(st.integers(0, 3))
        for p in range(n_psu):
            n_ssu = draw(st.integers(2, 3))
            extra_ssu = draw(st.integers(0, 3))
            for _ in range(n_ssu):
                ssu_id += 1
                for _ in range(draw(st.integers(1, 3))):
                    rows["h"].append(f"h{h}")
                    rows["psu"].append(p)
                    rows["ssu"].append(ssu_id)
                    r = len(rows["y"])
                    y = draw(st.floats(-100, 100, allow_nan=False, width=32))
                    rows["y"].append(y + 0.25 * r)  # never constant
                    if r < 4:  # two domains holding two categories each: some deff defined
                        rows["cat"].append("xy"[r % 2])
                        rows["dom"].append("ab"[r // 2])
                        rows["grp"].append(f"g{r % 2 + 1}")
                    else:
                        rows["cat"].append(draw(st.sampled_from(["x", "y", "z"])))
                        rows["dom"].append(draw(st.sampled_from(["a", "b", "c"])))
                        rows["grp"].append(draw(st.sampled_from(["g1", "g2"])))
                    rows["w"].append(draw(st.floats(2, 50, allow_nan=False, width=32)))
                    rows["N1"].append(float(n_psu + extra_psu))
                    rows["N2"].append(float(n_ssu + extra_ssu))
    data = pl.DataFrame(rows)
    return data.with_columns(Nrow=(pl.len().over("h") * 3).cast(pl.Float64))


def designs(data: pl.DataFrame, kind: str) -> tuple[Design, Any]:
    """Our design and svy's sample for the same configuration."""
    if kind == "strat":
        ours = Design(data, strata="h", weights="w")
        spec = svy.Design(stratum="h", wgt="w")
    elif kind == "strat_fpc":
        ours = Design(data, strata="h", weights="w", fpc="Nrow")
        spec = svy.Design(stratum="h", wgt="w", pop_size="Nrow")
    elif kind == "clus1":
        ours = Design(data, ids="psu", strata="h", weights="w")
        spec = svy.Design(stratum="h", psu="psu", wgt="w")
    elif kind == "clus1_fpc":
        ours = Design(data, ids="psu", strata="h", weights="w", fpc="N1")
        spec = svy.Design(stratum="h", psu="psu", wgt="w", pop_size="N1")
    elif kind == "clus2":
        ours = Design(data, ids=["psu", "ssu"], strata="h", weights="w")
        spec = svy.Design(stratum="h", psu="psu", ssu="ssu", wgt="w")
    else:
        ours = Design(data, ids=["psu", "ssu"], strata="h", weights="w", fpc=["N1", "N2"])
        spec = svy.Design(
            stratum="h", psu="psu", ssu="ssu", wgt="w", pop_size=svy.PopSize(psu="N1", ssu="N2")
        )
    return ours, svy.Sample(data, spec)


def close(ours: pl.Series, theirs: pl.Series, floor: float = 0.0) -> None:
    """Equal to ``REL``, with an absolute floor at ``1e-12`` of the values' scale (SEs that are 0
    in exact arithmetic come out as rounding noise) or at ``floor``."""
    a = ours.cast(pl.Float64).to_numpy()
    b = theirs.cast(pl.Float64).to_numpy()
    scale = float(np.nanmax(np.abs(b), initial=1e-300))
    np.testing.assert_allclose(a, b, rtol=REL, atol=max(1e-12 * scale, floor))


def compare(
    ours: pl.DataFrame, theirs: pl.DataFrame, keys: dict[str, str], se_floor: float = 0.0
) -> None:
    """Join our rows to svy's on ``keys`` (our column -> svy column) and compare the numbers
    (SEs to ``REL`` or to ``se_floor`` absolute)."""
    theirs = theirs.rename({v: k for k, v in keys.items()})
    joined = ours.join(
        theirs.select(
            *keys, "est", "se", "df", "n", *(["deff"] if "deff" in theirs.columns else [])
        ),
        on=list(keys),
        how="full",
        coalesce=True,
    )
    assert joined.height == ours.height == theirs.height
    close(joined["estimate"], joined["est"])
    close(joined["se"], joined["se_right"], se_floor)
    assert joined["df"].to_list() == joined["df_right"].to_list()
    assert joined["n"].to_list() == joined["n_right"].to_list()
    if "deff_right" in joined.columns:
        # deff = var / srs var inherits the SE's tolerance: d(deff)/deff = 2 d(se)/se
        both = joined.filter(pl.col("deff").is_not_null() & pl.col("deff_right").is_finite())
        d, d_svy = both["deff"].to_numpy(), both["deff_right"].to_numpy()
        se = both["se_right"].to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            tol = REL * np.abs(d_svy) + np.where(se > 0, 2 * se_floor * np.abs(d_svy) / se, 0.0)
        assert np.all(np.abs(d - d_svy) <= tol + 1e-12 * np.maximum(np.abs(d_svy), 1.0)), (d, d_svy)


@SETTINGS
@given(samples(), st.sampled_from(KINDS))
def test_means_totals_and_proportions(data: pl.DataFrame, kind: str) -> None:
    ours, sample = designs(data, kind)
    est = sample.estimation
    for our, their in (
        (mean(ours, "y"), est.mean("y", deff="wr")),
        (total(ours, "y"), est.total("y", deff="wr")),
    ):
        compare(
            our.with_columns(k=pl.lit(1)), their.to_polars().with_columns(k=pl.lit(1)), {"k": "k"}
        )
    props = est.prop("cat", deff="wr").to_polars()
    ours_p = mean(ours, "cat", ci="logit")
    compare(ours_p, props, {"level": "cat"})
    joined = ours_p.join(props.rename({"cat": "level"}), on="level")
    close(joined["ci_low"], joined["lci"])
    close(joined["ci_high"], joined["uci"])


@SETTINGS
@given(samples(), st.sampled_from(KINDS))
def test_domains(data: pl.DataFrame, kind: str) -> None:
    """svyby on the full design: means, totals and proportions (with logit intervals on the
    domain df) by one column and by two crossed columns."""
    ours, sample = designs(data, kind)
    est = sample.estimation
    compare(by(ours, "y", "dom"), est.mean("y", by="dom", deff="wr").to_polars(), {"domain": "dom"})
    compare(
        by(ours, "y", "dom", statistic="total"),
        est.total("y", by="dom", deff="wr").to_polars(),
        {"domain": "dom"},
    )
    ours_p = by(ours, "cat", "dom", ci="logit")
    props = est.prop("cat", by="dom", deff="wr").to_polars()
    compare(ours_p, props, {"domain": "dom", "level": "cat"})
    joined = ours_p.join(props.rename({"dom": "domain", "cat": "level"}), on=["domain", "level"])
    interior = joined.filter(pl.col("ci_low").is_not_null())
    close(interior["ci_low"], interior["lci"])
    close(interior["ci_high"], interior["uci"])
    crossed = by(ours, "y", ["dom", "grp"]).with_columns(
        pl.col("domain").str.extract(r"dom=(\w+)").alias("dom"),
        pl.col("domain").str.extract(r"grp=(\w+)").alias("grp"),
    )
    compare(crossed, est.mean("y", by=["dom", "grp"]).to_polars(), {"dom": "dom", "grp": "grp"})


@SETTINGS
@given(samples(), st.sampled_from(("clus1", "clus1_fpc", "clus2_fpc")), st.floats(0.8, 1.25))
def test_raking(data: pl.DataFrame, kind: str, shift: float) -> None:
    """Raking to the margins of ``cat`` and ``grp`` (those of a reweighted sample), then
    calibration-aware means, domain means and totals: impactstudy.weighting.rake vs svy's rake."""
    ours, sample = designs(data, kind)
    # targets: the margins of a positive reweighting of this very sample, so raking converges
    target_w = data.with_columns(
        t=pl.col("w")
        * pl.when(pl.col("cat") == "x").then(shift).otherwise(1.0)
        * pl.when(pl.col("grp") == "g1").then(1.0 / shift).otherwise(1.0)
        * (1.0 + pl.col("y").abs() / 400.0)
    )
    counts = {
        col: {
            str(k): float(v) for k, v in target_w.group_by(col).agg(pl.col("t").sum()).iter_rows()
        }
        for col in ("cat", "grp")
    }
    # tiny samples with nearly confounded margins converge slowly: both run to full convergence
    raked = rake(ours, counts, max_iter=5000, epsilon=1e-14)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        their = sample.weighting.rake(controls=counts, wgt_name="rk", tol=1e-13, max_iter=5000)
    est = their.estimation
    one = {"k": "k"}
    # The calibration-aware SE is R's: 10 sweeps of the raking projections over the scores. When
    # the margins nearly explain y the residual SE is a small difference of large terms, so it is
    # compared to 1e-9 of the uncalibrated SE rather than of itself.
    for our, theirs, plain in (
        (mean(raked, "y"), est.mean("y", deff="wr"), mean(ours, "y")),
        (total(raked, "y"), est.total("y", deff="wr"), total(ours, "y")),
    ):
        compare(
            our.with_columns(k=pl.lit(1)),
            theirs.to_polars().with_columns(k=pl.lit(1)),
            one,
            se_floor=REL * plain["se"][0],
        )
    compare(
        by(raked, "y", "dom"),
        est.mean("y", by="dom", deff="wr").to_polars(),
        {"domain": "dom"},
        se_floor=REL * float(by(ours, "y", "dom")["se"].max()),  # type: ignore[arg-type]
    )


def test_svy_jk1_ignores_the_fpc() -> None:
    """svy's JK1 drops the fpc: its SEs equal R's JK1 without fpc, not R's default with it
    (tests/fixtures/r/est_jk1_domains.csv pins both; ours equals R with and without, see
    tests/test_estimate.py::test_jk1_domains_match_r)."""
    api = Path(__file__).parent / "fixtures"
    data = pl.read_csv(api / "api" / "apiclus1.csv", null_values="NA", infer_schema_length=None)
    with (api / "r" / "est_jk1_domains.csv").open(newline="") as fh:
        r_rows = [
            r for r in csv.DictReader(fh) if r["statistic"].startswith("svyby(~api00, ~stype")
        ]
    sample = svy.Sample(data, svy.Design(psu="dnum", wgt="pw", pop_size="fpc"))
    theirs = (
        sample.weighting.create_jk_wgts()
        .estimation.mean("api00", by="stype", method="replication")
        .to_polars()
    )
    assert len(r_rows) == 6
    for row in r_rows:
        se = theirs.filter(pl.col("stype") == row["domain"])["se"][0]
        # svy's replicate df is replicates - 1 in every domain; R's (and ours) the domain's rank
        assert theirs.filter(pl.col("stype") == row["domain"])["df"][0] == 14
        if row["fpc"] == "FALSE":
            assert se == pytest.approx(float(row["se"]), rel=REL)
        else:
            assert se > float(row["se"]) * 1.005  # R with fpc is ~1% smaller
