"""`Design` (R's ``svydesign``) and its Taylor variance against R survey 4.1.1: lonely PSUs under
every ``survey.lonely.psu`` option, certainty strata, three stages with an fpc at each stage.

The reference numbers are in tests/fixtures/r/design_*.csv, computed by the design_*.R scripts
next to them from the same CSV data (design_data.py writes the synthetic samples; the api samples
are tests/fixtures/api). Domain rows (R's ``svyby``) are reproduced here from the domain's
linearised scores and `svyrecvar` with ``present`` = the domain, which is what R's ``svyby``
computes on the subset design.
"""

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

from impactstudy.estimate import Design, DesignError, by, mean, svyreccov, svyrecvar, total
from impactstudy.estimate.design import LONELY_PSU, LonelyPSU

R = Path(__file__).parent / "fixtures" / "r"
API = Path(__file__).parent / "fixtures" / "api"
REL = 1e-9

# Data


@cache
def syn() -> pl.DataFrame:
    return pl.read_csv(R / "design_lonely_data.csv")


@cache
def apicut() -> pl.DataFrame:
    """apistrat with stratum H cut down to its first school: a lonely stratum of one PSU."""
    api = pl.read_csv(API / "apistrat.csv", null_values="NA", infer_schema_length=None)
    api = api.with_row_index("row")
    first_h = api.filter(pl.col("stype") == "H")["row"][0]
    return api.filter((pl.col("stype") != "H") | (pl.col("row") == first_h))


@cache
def ms() -> pl.DataFrame:
    """The three-stage sample, with fpc as fractions too (as design_multistage.R computes them)."""
    data = pl.read_csv(R / "design_multistage_data.csv")
    return data.with_columns(
        f1=pl.col("psu").n_unique().over("h") / pl.col("N1"),
        f2=pl.col("ssu").n_unique().over("h", "psu") / pl.col("N2"),
        f3=pl.len().over("h", "psu", "ssu") / pl.col("N3"),
        Ninf=pl.lit(float("inf")),
    )


def ms_lonely() -> pl.DataFrame:
    """PSU (1, 2) keeps one SSU and SSU (2, 1, 1) one TSU: lonely at stages 2 and 3."""
    c = pl.col
    drop = ((c("h") == 1) & (c("psu") == 2) & (c("ssu") > 1)) | (
        (c("h") == 2) & (c("psu") == 1) & (c("ssu") == 1) & (c("tsu") > 1)
    )
    return ms().filter(~drop)


def ms_ge3() -> pl.DataFrame:
    """PSUs with at least three SSUs."""
    return ms().filter(pl.col("ssu").n_unique().over("h", "psu") >= 3)


# The R design of every case, built with our API; the R calls are in the design_*.R scripts.
Builder = Callable[[LonelyPSU], Design]
THREE = ["psu", "ssu", "tsu"]
DESIGNS: dict[str, Builder] = {
    "syn_fpc": lambda o: Design(syn(), ids="psu", strata="h", weights="pw", fpc="N1", lonely_psu=o),
    "syn_frac": lambda o: Design(
        syn(), ids="psu", strata="h", weights="pw", fpc="f1", lonely_psu=o
    ),
    "syn_nofpc": lambda o: Design(syn(), ids="psu", strata="h", weights="pw", lonely_psu=o),
    "syn_fpc_noweights": lambda o: Design(syn(), ids="psu", strata="h", fpc="N1", lonely_psu=o),
    "apicut_fpc": lambda o: Design(apicut(), strata="stype", weights="pw", fpc="fpc", lonely_psu=o),
    "apicut_nofpc": lambda o: Design(apicut(), strata="stype", weights="pw", lonely_psu=o),
    "count": lambda o: Design(ms(), ids=THREE, strata="h", fpc=["N1", "N2", "N3"], lonely_psu=o),
    "fraction": lambda o: Design(ms(), ids=THREE, strata="h", fpc=["f1", "f2", "f3"], lonely_psu=o),
    "weights": lambda o: Design(
        ms(), ids=THREE, strata="h", weights="pw", fpc=["N1", "N2", "N3"], lonely_psu=o
    ),
    "stage2_wr": lambda o: Design(
        ms(), ids=THREE, strata="h", weights="pw", fpc=["N1", "Ninf", "N3"], lonely_psu=o
    ),
    "two_stage": lambda o: Design(
        ms().filter(pl.col("tsu") == 1),
        ids=["psu", "ssu"],
        strata="h",
        fpc=["N1", "N2"],
        lonely_psu=o,
    ),
    "ultimate": lambda o: Design(ms(), ids=THREE, strata="h", weights="pw", lonely_psu=o),
    "strata2": lambda o: Design(
        ms(), ids=THREE, strata=["h", "h2"], fpc=["N1", "N2s", "N3"], lonely_psu=o
    ),
    "strata2_ge3": lambda o: Design(
        ms_ge3(), ids=THREE, strata=["h", "h2"], fpc=["N1", "N2s", "N3"], lonely_psu=o
    ),
    "lonely": lambda o: Design(
        ms_lonely(), ids=THREE, strata="h", fpc=["N1", "N2", "N3"], lonely_psu=o
    ),
    "lonely_strata2": lambda o: Design(
        ms_lonely(), ids=THREE, strata=["h", "h2"], fpc=["N1", "N2s", "N3"], lonely_psu=o
    ),
}
SUBSETS: dict[str, tuple[str, Callable[[pl.DataFrame], pl.Series]]] = {
    # R: subset(design, h %in% c(2, 3)), the two certainty strata
    "syn_fpc_certain_subset": ("syn_fpc", lambda d: d["h"].is_in([2, 3])),
}


def rows(name: str) -> list[dict[str, str]]:
    with (R / f"design_{name}.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


REFERENCE = rows("lonely") + rows("multistage")
PLAIN = [r for r in REFERENCE if r["statistic"].startswith(("svymean", "svytotal"))]
DOMAIN = [r for r in REFERENCE if r["statistic"].startswith("svyby")]
STAT = re.compile(r"^(?P<fun>svymean|svytotal)\(~(?P<var>\w+)\)$")
BY = re.compile(r"^svyby\(~(?P<var>\w+), ~(?P<by>\w+), (?P<fun>svymean|svytotal)\)$")


def row_id(r: dict[str, str]) -> str:
    return f"{r['case']}:{r['lonely']}:{r['statistic']}:{r['domain']}"


def lonely_of(r: dict[str, str]) -> LonelyPSU:
    opt = r["lonely"]
    assert opt in LONELY_PSU
    return opt  # type: ignore[return-value]


def expect_number(got: float, want: str) -> None:
    if want == "NaN":
        assert np.isnan(got)
    else:
        assert got == pytest.approx(float(want), rel=REL, abs=1e-12)


def r_error_stage(r: dict[str, str]) -> str:
    m = re.search(r"only one PSU at stage (\d)", r["error"])
    assert m is not None, r["error"]
    return f"only one PSU at stage {m[1]}"


def domain_estimate(
    design: Design, var: str, in_domain: np.ndarray, fun: str
) -> tuple[float, float]:
    """A domain mean or total and its SE as R's svyby computes it on the subset design: the
    domain's linearised scores, zero outside it, and the domain as the rows present."""
    y = design.data[var].cast(pl.Float64).to_numpy()
    w = np.where(in_domain, design.weights, 0.0)
    if fun == "svytotal":
        est = float(w @ y)
        z = y * w
    else:
        est = float(w @ y / w.sum())
        z = (y - est) * w / w.sum()
    var_ = svyrecvar(z[:, None], design, present=in_domain)
    return est, float(np.sqrt(var_[0]))


def test_reference_files_cover_every_case_and_option() -> None:
    cases = {r["case"] for r in REFERENCE}
    assert cases == set(DESIGNS) | set(SUBSETS)
    for case in ("syn_fpc", "syn_nofpc", "apicut_fpc", "apicut_nofpc", "lonely", "strata2_ge3"):
        assert {r["lonely"] for r in REFERENCE if r["case"] == case} == set(LONELY_PSU)
    assert len(PLAIN) == 117
    assert len(DOMAIN) == 156


@pytest.mark.parametrize("r", PLAIN, ids=[row_id(r) for r in PLAIN])
def test_mean_and_total_match_r(r: dict[str, str]) -> None:
    m = STAT.match(r["statistic"])
    assert m is not None
    fun = mean if m["fun"] == "svymean" else total
    if r["case"] in SUBSETS:
        base, rows_in = SUBSETS[r["case"]]
        design = DESIGNS[base](lonely_of(r))
        est, se = domain_estimate(design, m["var"], rows_in(design.data).to_numpy(), m["fun"])
        expect_number(est, r["estimate"])
        assert se == 0.0 and r["se"] == "0"
        return
    design = DESIGNS[r["case"]](lonely_of(r))
    if r["error"]:
        with pytest.raises(DesignError, match=r_error_stage(r)):
            fun(design, m["var"])
        return
    got = fun(design, m["var"]).row(0, named=True)
    expect_number(got["estimate"], r["estimate"])
    expect_number(got["se"], r["se"])


@pytest.mark.parametrize("r", DOMAIN, ids=[row_id(r) for r in DOMAIN])
def test_domain_matches_r_svyby(r: dict[str, str]) -> None:
    m = BY.match(r["statistic"])
    assert m is not None
    design = DESIGNS[r["case"]](lonely_of(r))
    labels = design.data[m["by"]].cast(pl.String).to_numpy()
    if r["error"]:  # R's svyby fails in the domain holding the lonely PSU
        with pytest.raises(DesignError, match=r_error_stage(r)):
            for dom in np.unique(labels):
                domain_estimate(design, m["var"], labels == dom, m["fun"])
        return
    est, se = domain_estimate(design, m["var"], labels == r["domain"], m["fun"])
    expect_number(est, r["estimate"])
    expect_number(se, r["se"])


# What the reference numbers show about R's rules, stated directly.


def by_key(case: str, statistic: str, domain: str = "") -> dict[str, float]:
    """SE by lonely option for one reference statistic."""
    return {
        r["lonely"]: float(r["se"])
        for r in REFERENCE
        if r["case"] == case and r["statistic"] == statistic and r["domain"] == domain
        if not r["error"]
    }


def test_remove_and_certainty_agree_and_average_inflates_by_nstrat_over_nokstrat() -> None:
    """Taylor: "remove" = "certainty"; "average" = remove x nstrat/nokstrat (6/5 here: stratum 1
    is lonely, the certainty strata count as ok)."""
    se = by_key("syn_fpc", "svytotal(~x)")
    assert se["remove"] == se["certainty"]
    assert se["average"] ** 2 == pytest.approx(se["remove"] ** 2 * 6 / 5, rel=1e-12)
    se_api = by_key("apicut_nofpc", "svymean(~api00)")
    assert se_api["average"] ** 2 == pytest.approx(se_api["remove"] ** 2 * 3 / 2, rel=1e-12)


def test_adjust_centres_the_lonely_psu_total_at_zero() -> None:
    """R 4.1's "adjust" adds (1 - n/N) times the lonely PSU's squared score total (centred at the
    population mean of the scores, zero) to the "remove" variance."""
    data = syn()
    lonely = data.filter(pl.col("h") == 1)
    x_total = float((lonely["x"] * lonely["pw"]).sum())
    se = by_key("syn_fpc", "svytotal(~x)")
    assert se["adjust"] ** 2 - se["remove"] ** 2 == pytest.approx(
        (1 - 1 / 4) * x_total**2, rel=1e-9
    )


def test_certainty_strata_add_nothing_under_every_option() -> None:
    """Strata 2 (one PSU of one) and 3 (three of three) have fpc = 1: the SE of the subset made of
    them is 0 under every option, and the certainty stratum of one PSU is never lonely."""
    sub = [r for r in REFERENCE if r["case"] == "syn_fpc_certain_subset"]
    assert {r["lonely"] for r in sub} == set(LONELY_PSU)
    assert all(r["se"] == "0" for r in sub)
    no_lonely = syn().filter(pl.col("h") != 1)
    design = Design(no_lonely, ids="psu", strata="h", weights="pw", fpc="N1")
    assert total(design, "x")["se"][0] > 0  # stratum 2 alone would fail if it were lonely


def test_fail_names_the_stratum_and_stage() -> None:
    with pytest.raises(DesignError, match=r"stratum stype='H' has only one PSU at stage 1"):
        mean(DESIGNS["apicut_fpc"]("fail"), "api00")
    with pytest.raises(DesignError, match=r"stratum h=1, psu=2 has only one PSU at stage 2"):
        mean(DESIGNS["lonely"]("fail"), "y")


def test_with_replacement_stage_zeroes_the_later_terms() -> None:
    """fpc = inf at stage 2: its term has f = 1 and the stage-3 term is multiplied by n2/inf = 0,
    so dropping stage 3 gives the same SE."""
    three = DESIGNS["stage2_wr"]("fail")
    two = Design(ms(), ids=["psu", "ssu"], strata="h", weights="pw", fpc=["N1", "Ninf"])
    assert total(three, "y")["se"][0] == pytest.approx(total(two, "y")["se"][0], rel=1e-12)


def test_weights_from_fpc_are_the_product_over_stages() -> None:
    data = ms()
    design = DESIGNS["count"]("fail")
    n1 = data.select(pl.col("psu").n_unique().over("h")).to_series()
    n2 = data.select(pl.col("ssu").n_unique().over("h", "psu")).to_series()
    n3 = data.select(pl.len().over("h", "psu", "ssu")).to_series()
    want = (data["N1"] / n1) * (data["N2"] / n2) * (data["N3"] / n3)
    np.testing.assert_allclose(design.weights, want.to_numpy(), rtol=1e-14)
    with pytest.raises(DesignError, match="'Ninf' is infinite"):
        Design(data, ids=THREE, strata="h", fpc=["N1", "Ninf", "N3"])


# Bad input: a DesignError naming what is wrong.


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ids": "psu", "weights": "pw", "lonely_psu": "drop"}, "lonely_psu='drop' is not one of"),
        ({"ids": [*THREE, "y"], "weights": "pw"}, "at most 3 stages"),
        ({"ids": THREE, "fpc": ["N1", "N2"]}, "give an fpc for every stage or none"),
        ({"ids": "psu", "strata": "h", "fpc": "mixed"}, "'mixed' mixes population counts"),
        ({"ids": "psu", "strata": "h", "fpc": "vary"}, "'vary' must be the same for every row"),
        ({"ids": "psu", "strata": "h", "fpc": "d"}, "fpc column 'd' is not numeric"),
        ({"ids": "psu", "strata": "nope", "weights": "pw"}, "strata column 'nope' is not in"),
        ({"ids": "psu", "strata": "h", "fpc": "small"}, "more than 100% sampling"),
    ],
)
def test_bad_designs_are_refused_clearly(kwargs: dict[str, object], message: str) -> None:
    data = ms().with_columns(
        mixed=pl.when(pl.col("h") == 1).then(0.5).otherwise(pl.col("N1")),
        small=pl.lit(2.0),
        vary=pl.col("tsu") + 10,
    )
    with pytest.raises(DesignError, match=re.escape(message)):
        Design(data, **kwargs)  # type: ignore[arg-type]


# Properties on generated stratified designs of one to three stages.


@st.composite
def multistage_samples(draw: st.DrawFn) -> tuple[pl.DataFrame, int]:
    """A stratified sample of 1-3 stages with cluster labels reused across strata, a response
    and weights; some strata may have a single cluster at any stage."""
    n_stages = draw(st.integers(1, 3))
    rows: dict[str, list[float | int]] = {"h": [], "p1": [], "p2": [], "p3": [], "y": [], "w": []}

    def clusters(prefix: list[int], stage: int) -> None:
        for c in range(draw(st.integers(1, 3))):
            path = [*prefix, c]
            if stage < n_stages:
                clusters(path, stage + 1)
            else:
                for _ in range(draw(st.integers(1, 3))):
                    rows["h"].append(path[0])
                    for s in range(3):
                        rows[f"p{s + 1}"].append(path[s + 1] if s + 1 < len(path) else 0)
                    rows["y"].append(draw(st.floats(-100, 100, allow_nan=False)))
                    rows["w"].append(draw(st.floats(0.5, 50, allow_nan=False)))

    for h in range(draw(st.integers(1, 3))):
        clusters([h], 1)
    return pl.DataFrame(rows), n_stages


def sampled_counts(data: pl.DataFrame, n_stages: int) -> pl.DataFrame:
    """Population count = sampled count at every stage: a census of clusters."""
    keys = ["h", "p1", "p2", "p3"]
    cols = [pl.col(f"p{s + 1}").n_unique().over(keys[: s + 1]) for s in range(n_stages)]
    return data.with_columns(
        [c.cast(pl.Float64).alias(f"N{s + 1}") for s, c in enumerate(cols)]
    ).with_row_index("unit")


@settings(max_examples=40, deadline=None)
@given(multistage_samples())
def test_census_has_zero_se_under_every_option(sample: tuple[pl.DataFrame, int]) -> None:
    """All weights 1 and every cluster of every stage taken (fpc = N = n): SE 0, however many
    strata have a single cluster (they are certainty strata, never lonely)."""
    data, n_stages = sample
    census = sampled_counts(data, n_stages).with_columns(w=pl.lit(1.0))
    ids = [f"p{s + 1}" for s in range(n_stages)]
    if n_stages < 3:
        ids.append("unit")  # the units are the last stage, all taken
        census = census.with_columns(
            pl.len().over(["h", *ids[:-1]]).cast(pl.Float64).alias(f"N{n_stages + 1}")
        )
    fpc = [f"N{s + 1}" for s in range(len(ids))]
    for option in LONELY_PSU:
        design = Design(census, ids=ids, strata="h", weights="w", fpc=fpc, lonely_psu=option)
        assert mean(design, "y")["se"][0] == 0.0
        assert total(design, "y")["se"][0] == 0.0
        no_weights = Design(census, ids=ids, strata="h", fpc=fpc, lonely_psu=option)
        np.testing.assert_array_equal(no_weights.weights, 1.0)


@settings(max_examples=40, deadline=None)
@given(
    multistage_samples(),
    st.floats(1e-3, 1e3),
    st.sampled_from(["remove", "certainty", "adjust", "average"]),
    st.booleans(),
)
def test_scaling_weights_scales_totals_only(
    sample: tuple[pl.DataFrame, int], c: float, option: LonelyPSU, with_fpc: bool
) -> None:
    """Weights times c: means and their SEs unchanged, totals and their SEs times c, under every
    lonely option, with the multistage fpc recursion or without fpc."""
    data, n_stages = sample
    data = sampled_counts(data, n_stages).with_columns(
        [(pl.col(f"N{s + 1}") * 2 + 1) for s in range(n_stages)]
    )
    ids = [f"p{s + 1}" for s in range(n_stages)]
    fpc = [f"N{s + 1}" for s in range(n_stages)] if with_fpc else None

    def build(frame: pl.DataFrame) -> Design:
        return Design(frame, ids=ids, strata="h", weights="w", fpc=fpc, lonely_psu=option)

    base = build(data)
    scaled = build(data.with_columns(w=pl.col("w") * c))
    m0, m1 = mean(base, "y").row(0, named=True), mean(scaled, "y").row(0, named=True)
    t0, t1 = total(base, "y").row(0, named=True), total(scaled, "y").row(0, named=True)
    for a, b, k in ((m0, m1, 1.0), (t0, t1, c)):
        if np.isnan(a["se"]):  # "average" with every stratum of a cluster lonely: NaN, as R
            assert option == "average" and np.isnan(b["se"])
            continue
        assert b["estimate"] == pytest.approx(a["estimate"] * k, rel=1e-9, abs=1e-9 * k)
        assert b["se"] == pytest.approx(a["se"] * k, rel=1e-9, abs=1e-9 * k)


def test_present_per_column_equals_one_call_per_domain() -> None:
    """``present`` as an n x k mask (one domain per column) gives each domain's own variance."""
    design = DESIGNS["apicut_nofpc"]("average")
    labels = design.data["awards"].to_numpy()
    y = design.data["api00"].cast(pl.Float64).to_numpy()
    masks = np.column_stack([labels == "No", labels == "Yes"])
    z = y[:, None] * design.weights[:, None] * masks
    together = svyrecvar(z, design, present=masks)
    apart = [svyrecvar(z[:, j], design, present=masks[:, j])[0] for j in range(2)]
    np.testing.assert_allclose(together, apart, rtol=1e-14)
    assert together[1] < svyrecvar(z[:, 1], design)[0]  # "Yes" misses the lonely stratum H
    with pytest.raises(DesignError, match="present has 3 rows"):
        svyrecvar(z, design, present=np.ones(3, dtype=bool))


@pytest.mark.parametrize("r", DOMAIN, ids=[row_id(r) for r in DOMAIN])
def test_by_matches_r_svyby(r: dict[str, str]) -> None:
    """The public `by` (cluster-sum path) gives R's svyby under every lonely-PSU rule: the
    domain's clusters are the ones present in R's subset design."""
    m = BY.match(r["statistic"])
    assert m is not None
    design = DESIGNS[r["case"]](lonely_of(r))
    statistic = "mean" if m["fun"] == "svymean" else "total"
    if r["error"]:
        with pytest.raises(DesignError, match=r_error_stage(r)):
            by(design, m["var"], m["by"], statistic=statistic)
        return
    got = by(design, m["var"], m["by"], statistic=statistic)
    row = got.filter(pl.col("domain") == r["domain"]).row(0, named=True)
    expect_number(row["estimate"], r["estimate"])
    expect_number(float("nan") if row["se"] is None else row["se"], r["se"])


@pytest.mark.parametrize("case", sorted(DESIGNS))
@pytest.mark.parametrize("lonely", LONELY_PSU)
def test_covariance_diagonal_is_the_variance(case: str, lonely: LonelyPSU) -> None:
    """`svyreccov` (the covariance the impact model draws from) has `svyrecvar` on its diagonal
    and is symmetric positive semi-definite, under every stage structure and lonely-PSU rule."""
    design = DESIGNS[case](lonely)
    z = np.random.default_rng(7).normal(size=(design.n, 3)) * design.weights[:, None]
    try:
        var = svyrecvar(z, design)
    except DesignError:
        with pytest.raises(DesignError):
            svyreccov(z, design)
        return
    cov = svyreccov(z, design)
    np.testing.assert_allclose(np.diag(cov), var, rtol=1e-10)
    if np.isnan(var).any():  # R's NaN: every stratum of a cluster lonely under "average"
        assert np.isnan(cov).all()
        return
    np.testing.assert_allclose(cov, cov.T, rtol=1e-12, atol=1e-12 * float(np.abs(cov).max()))
    assert np.linalg.eigvalsh(cov).min() >= -1e-9 * float(np.abs(cov).max())
