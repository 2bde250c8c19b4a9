# ruff: noqa: N802, N806, E741  (matrix and vector names as in Miller & Blair: Z, A, L, l)
"""The input-output engine (impactstudy.impact.io) against numbers computed elsewhere: pymrio on
its own test system, the accounting identity x = L y on every shipped table, and hand
calculations (exact fractions) on the 2-sector table tests/fixtures/io/tiny_2.csv."""

from __future__ import annotations

import csv
from fractions import Fraction
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from impactstudy.impact import io

FIXTURES = Path(__file__).parent / "fixtures" / "io"
TINY = FIXTURES / "tiny_2.csv"
DATA = Path(str(resources.files("impactstudy.impact").joinpath("data", "china_io")))

# hand calculation on tiny_2.csv: A = [[1/5, 1/5], [3/10, 1/10]],
# L = [[15/11, 10/33], [5/11, 40/33]]
L_HAND = np.array([[15 / 11, 10 / 33], [5 / 11, 40 / 33]])
PER_OUTPUT = np.array([0.5, 0.1])  # jobs per unit of output, chosen for the hand calculation


def _f(q: Fraction) -> float:
    return float(q)


@pytest.fixture(scope="module")
def tiny() -> io.IOTable:
    return io.read_table(TINY, 2017)


@pytest.fixture(scope="module", params=sorted(io.TABLES))
def shipped(request: pytest.FixtureRequest) -> io.IOTable:
    year, sectors = request.param
    return io.load_table(year, sectors)


# ------------------------------------------------------------------ pymrio (independent oracle)


def test_pymrio_test_system_A_L_and_multipliers_agree() -> None:
    pymrio = pytest.importorskip("pymrio")
    mrio = pymrio.load_test()
    mrio.calc_all()
    Z, Y = mrio.Z.to_numpy(), mrio.Y.to_numpy()
    x = Z.sum(axis=1) + Y.sum(axis=1)
    A = io.technical_coefficients(Z, x)
    L = io.leontief(A)
    np.testing.assert_allclose(A, mrio.A.to_numpy(), rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(L, mrio.L.to_numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(L @ Y.sum(axis=1), x, rtol=1e-9)
    # a stressor per unit of output (pymrio's S) plays the part of jobs per output l:
    # pymrio's multipliers M = S L are our simple employment multipliers l′L
    S, M = mrio.emissions.S.to_numpy(), mrio.emissions.M.to_numpy()
    for k in range(S.shape[0]):
        em = io.employment_multipliers(S[k], L)
        np.testing.assert_allclose(em.simple, M[k], rtol=1e-9, atol=1e-12)
        ok = S[k] != 0
        np.testing.assert_allclose(em.type_i[ok], M[k][ok] / S[k][ok], rtol=1e-9)
    np.testing.assert_allclose(io.output_multipliers(L), mrio.L.to_numpy().sum(axis=0), rtol=1e-9)


# ------------------------------------------------------------------ shipped tables


def test_identity_x_equals_L_y_on_every_shipped_table(shipped: io.IOTable) -> None:
    # domestic final use incl. exports; imports removed (reported or proportional)
    x_hat = shipped.L @ shipped.final_demand
    assert np.max(np.abs(x_hat - shipped.x) / shipped.x) < 1e-6
    assert np.max(np.abs(shipped.balance_residual())) < 1e-11  # measured <= 1.44e-12 (2018/153)


def test_domestic_coefficients_remove_imports(shipped: io.IOTable) -> None:
    A = shipped.domestic_coefficients()
    total = (shipped.Z + shipped.Z_imports) / shipped.x[None, :]
    assert (A >= 0).all() and (A - total <= 1e-15).all()
    assert A.sum(axis=0).max() < 1.0  # productive: every column spends < 1 on domestic inputs
    np.testing.assert_allclose(
        shipped.Z_imports.sum(), shipped.imports.sum() - _final_imports(shipped), rtol=1e-9
    )


def _final_imports(t: io.IOTable) -> float:
    return float(t.y_imports.sum())


@pytest.mark.parametrize(("year", "sectors"), [(2017, 149), (2018, 153)])
def test_detailed_tables_aggregate_to_the_42_sector_table(year: int, sectors: int) -> None:
    detail, t42 = io.load_table(year, sectors), io.load_table(year, 42)
    parents = io.detail_parents(detail)
    assert sorted(set(parents.tolist())) == list(range(42))
    P = np.zeros((42, detail.n))
    P[parents, np.arange(detail.n)] = 1.0
    np.testing.assert_allclose(P @ detail.x, t42.x, rtol=1e-12)
    flows = P @ (detail.Z + detail.Z_imports) @ P.T
    np.testing.assert_allclose(flows, t42.Z + t42.Z_imports, rtol=1e-9, atol=1e-3)
    np.testing.assert_allclose(P @ detail.imports, t42.imports, rtol=1e-9, atol=1e-3)
    # the 42-sector household column comes from the detailed table's THC
    assert t42.household_total == pytest.approx(
        float(detail.y[:, 0].sum() + detail.y_imports[:, 0].sum())
    )
    assert t42.household is not None and (t42.household <= t42.y[:, 0] + 1e-6).all()


def test_internet_sector_is_found_by_code() -> None:
    t = io.load_table(2017, 149)
    assert t.names_en[int(t.index("123")[0])] == "Internet and related services"
    assert t.names_zh[int(t.index("123")[0])] == "互联网和相关服务"
    with pytest.raises(io.IOTableError, match="unknown sector"):
        t.index("999")


# ------------------------------------------------------------------ employment


def test_employment_coefficients_units_persons_per_wanyuan() -> None:
    t42 = io.load_table(2017, 42)
    l = io.employment_coefficients(t42)
    # information transmission, software and IT (IO 31) = I01 + I02 + I03 (万人 -> persons)
    i31 = int(t42.index("31")[0])
    assert l[i31] == pytest.approx((754 + 159 + 827) * 1e4 / t42.x[i31], rel=1e-12)
    # all leaf divisions of 2017 (77642.68万 persons: the source's TOT is 77640, rounding)
    assert float(l @ t42.x) == pytest.approx(77642.68e4, rel=1e-12)
    # identity: jobs of all final demand l′L y = l′x
    assert float(io.employment_multipliers(l, t42.L).simple @ t42.final_demand) == pytest.approx(
        float(l @ t42.x), rel=1e-10
    )
    assert l.min() > 0.001 and l.max() < 1.0  # persons per 万元, not per yuan or per 亿元


def test_detailed_sectors_use_their_parents_coefficient() -> None:
    l42 = io.employment_coefficients(io.load_table(2017, 42))
    t = io.load_table(2017, 149)
    l = io.employment_coefficients(t)
    assert l[int(t.index("123")[0])] == l42[30]  # internet -> 31 information services
    np.testing.assert_array_equal(l, l42[io.detail_parents(t)])
    l18 = io.employment_coefficients(io.load_table(2018, 153))
    assert l18.shape == (153,) and (l18 > 0).all()


def _rows(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_concordance_covers_every_division_and_every_io_sector() -> None:
    conc = _rows("employment_to_io42.csv")
    emp = _rows("china_employment.csv")
    codes = [r["Code"] for r in emp if r["Code"] != "TOT"]
    leaves = {c for c in codes if not any(o != c and o.startswith(c) for o in codes)}
    mapped = [r["division"] for r in conc]
    assert set(mapped) == leaves and len(mapped) == len(set(mapped))
    # every section (A..T) is covered through its leaves, which add up to it (source rounding)
    for r in emp:
        if len(r["Code"]) == 1:
            kids = [e for e in emp if e["Code"] in leaves and e["Code"].startswith(r["Code"])]
            assert kids, r["Code"]
            assert sum(float(e["2017"]) for e in kids) == pytest.approx(float(r["2017"]), abs=1.5)
    io42 = {r["Code"] for r in _rows("china_2017_42.csv")[:42]}
    assert {r["io42"] for r in conc} == io42
    for name, n in (("io149_to_io42.csv", 149), ("io153_to_io42.csv", 153)):
        rows = _rows(name)
        assert [r["code"] for r in rows] == [f"{i:03d}" for i in range(1, n + 1)]
        assert {r["parent42"] for r in rows} == io42


def test_a_division_mapped_to_two_sectors_is_split_by_output(tmp_path: Path) -> None:
    t42 = io.load_table(2017, 42)
    conc = _rows("employment_to_io42.csv")
    path = tmp_path / "conc.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(conc[0]))
        w.writeheader()
        for r in conc:
            w.writerow(r)
            if r["division"] == "K":  # real estate also to 34 leasing and commercial services
                w.writerow({**r, "io42": "34"})
    base = io.employment_by_sector(2017, t42.x, t42.codes)
    split = io.employment_by_sector(2017, t42.x, t42.codes, concordance=path)
    i33, i34 = 32, 33
    share33 = t42.x[i33] / (t42.x[i33] + t42.x[i34])
    assert split[i33] == pytest.approx(903e4 * share33, rel=1e-12)
    assert split[i34] == pytest.approx(base[i34] + 903e4 * (1 - share33), rel=1e-12)
    assert split.sum() == pytest.approx(base.sum(), rel=1e-14)


# ------------------------------------------------------------------ hand calculation, Type I/II


def test_tiny_table_leontief_and_type_i_multipliers(tiny: io.IOTable) -> None:
    assert tiny.import_treatment == "proportional"
    np.testing.assert_allclose(tiny.A, [[0.2, 0.2], [0.3, 0.1]], rtol=1e-15)
    np.testing.assert_allclose(tiny.L, L_HAND, rtol=1e-14)
    np.testing.assert_allclose(tiny.final_demand, [40, 150], rtol=1e-15)
    np.testing.assert_allclose(tiny.L @ tiny.final_demand, [100, 200], rtol=1e-14)
    np.testing.assert_allclose(io.output_multipliers(tiny.L), [20 / 11, 50 / 33], rtol=1e-14)
    em = io.employment_multipliers(PER_OUTPUT, tiny.L)
    np.testing.assert_allclose(em.simple, [8 / 11, 3 / 11], rtol=1e-14)
    np.testing.assert_allclose(em.type_i, [16 / 11, 30 / 11], rtol=1e-14)


def test_tiny_table_route_a_and_route_b(tiny: io.IOTable) -> None:
    # route A: 10 direct jobs in sector 1 -> f = [20, 0]; indirect = l′L f − l′f = 160/11 − 10
    f_a = io.route_a_output([10.0, 0.0], PER_OUTPUT)
    np.testing.assert_allclose(f_a, [20, 0])
    a = io.indirect_jobs(tiny.L, PER_OUTPUT, f_a)
    assert a.direct == pytest.approx(10.0, rel=1e-14)
    assert a.indirect == pytest.approx(50 / 11, rel=1e-14)
    # route B: θ = [0.1, 0.05] of x = [100, 200] -> f = [10, 10]; direct 6, indirect 10 − 6
    f_b = io.route_b_output([0.1, 0.05], tiny.x)
    b = io.indirect_jobs(tiny.L, PER_OUTPUT, f_b)
    assert (b.direct, b.indirect) == (pytest.approx(6.0), pytest.approx(4.0, rel=1e-14))
    np.testing.assert_allclose(b.indirect_by_sector.sum(), b.indirect, rtol=1e-15)
    # sector 1's workers already counted as direct: only sector 2's rows, l = [0, 0.1]:
    # l_m′L = [1/22, 4/33]; (1/22)10 + (4/33)10 − 1 = 2/3
    ex = io.indirect_jobs(tiny.L, PER_OUTPUT, f_b, exclude=tiny.index("01"))
    assert ex.indirect == pytest.approx(2 / 3, rel=1e-14)
    assert ex.indirect_by_sector[0] == 0.0
    same = io.indirect_jobs(tiny.L, PER_OUTPUT, f_b, exclude=np.array([True, False]))
    assert same.indirect == ex.indirect


def test_tiny_table_type_ii_induced_jobs(tiny: io.IOTable) -> None:
    # household row h_r = [20, 40] / [100, 200] = [1/5, 1/5]; column (income basis) h_c = c / Σw
    # = [10, 30] / 60. Partitioned inverse: L̄₁₁ − L = L h_c h_r L / (1 − h_r L h_c), with
    # h_r L = [4/11, 10/33], L h_c = [25/66, 45/66], h_r L h_c = 7/33.
    closed = io.household_closure(tiny)
    np.testing.assert_allclose(closed[2, :2], [0.2, 0.2])
    np.testing.assert_allclose(closed[:2, 2], [1 / 6, 1 / 2])
    k = Fraction(33, 26)
    lLhc = Fraction(1, 2) * Fraction(25, 66) + Fraction(1, 10) * Fraction(45, 66)  # 17/66
    hrLf_b = Fraction(4, 11) * 10 + Fraction(10, 33) * 10  # 20/3
    f_b = io.route_b_output([0.1, 0.05], tiny.x)
    jobs = io.type2_jobs(tiny, PER_OUTPUT, f_b)
    assert jobs.induced == pytest.approx(_f(k * lLhc * hrLf_b), rel=1e-13)  # 85/39
    assert jobs.induced == pytest.approx(85 / 39, rel=1e-13)
    assert jobs.indirect == pytest.approx(4.0, rel=1e-14)  # Type I part unchanged, reported apart
    f_a = io.route_a_output([10.0, 0.0], PER_OUTPUT)
    assert io.type2_jobs(tiny, PER_OUTPUT, f_a).induced == pytest.approx(340 / 143, rel=1e-13)
    # excluded sector 1: induced only in sector 2: 0.1 (33/26)(45/66)(20/3) = 15/26
    ex = io.type2_jobs(tiny, PER_OUTPUT, f_b, exclude=[0])
    assert ex.induced == pytest.approx(15 / 26, rel=1e-13)
    assert ex.induced_by_sector is not None and ex.induced_by_sector[0] == 0.0
    # Type II output multipliers = [30/13, 25/13]
    np.testing.assert_allclose(
        io.output_multipliers(io.type2_leontief(tiny)), [30 / 13, 25 / 13], rtol=1e-13
    )
    # consumption basis: h_c = [10, 30] / 40 -> induced (22/15)(17/44)(20/3) = 34/9
    assert io.type2_jobs(tiny, PER_OUTPUT, f_b, basis="consumption").induced == pytest.approx(
        34 / 9, rel=1e-13
    )


def test_type_ii_on_shipped_tables_is_larger_than_type_i() -> None:
    for year, sectors in ((2017, 42), (2017, 149)):
        t = io.load_table(year, sectors)
        Lbar = io.type2_leontief(t)
        assert (Lbar >= t.L - 1e-12).all()
        assert (io.output_multipliers(Lbar) > io.output_multipliers(t.L)).all()


# ------------------------------------------------------------------ bad input


def _write_variant(tmp_path: Path, name: str, edit: object) -> Path:
    with TINY.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    assert callable(edit)
    rows = edit(rows)
    path = tmp_path / name
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def _drop_column(name: str) -> object:
    def edit(rows: list[list[str]]) -> list[list[str]]:
        k = rows[0].index(name)
        return [r[:k] + r[k + 1 :] for r in rows]

    return edit


def _set_cell(code: str, column: str, value: str) -> object:
    def edit(rows: list[list[str]]) -> list[list[str]]:
        k = rows[0].index(column)
        for r in rows:
            if r[1] == code:
                r[k] = value
        return rows

    return edit


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (_drop_column("GO"), r"broken\.csv: missing column\(s\) \['GO'\]"),
        (
            _set_cell("02", "GO", "-200"),
            r"broken\.csv: row '02' \(line 3\), column 'GO': gross output",
        ),
        (_drop_column("02"), r"broken\.csv: intermediate block not square"),
        (
            _set_cell("01", "02", "abc"),
            r"broken\.csv: row '01' \(line 2\), column '02': not a number",
        ),
        (_set_cell("01", "02", "-1"), r"broken\.csv: row '01' \(line 2\), column '02': negative"),
        (
            _set_cell("01", "EX", "25"),
            r"broken\.csv: row '01' \(line 2\), column 'GO': row does not balance",
        ),
        (
            _set_cell("TI", "01", "90"),
            r"broken\.csv: row 'TI' \(line 10\), column '01': column does not",
        ),
        (_set_cell("02", "IM", "500"), r"broken\.csv: row '02' \(line 3\), column 'IM': imports"),
    ],
)
def test_broken_table_errors_name_file_row_and_column(
    tmp_path: Path, edit: object, pattern: str
) -> None:
    path = _write_variant(tmp_path, "broken.csv", edit)
    with pytest.raises(io.IOTableError, match=pattern):
        io.read_table(path, 2017)


def test_missing_file_and_unknown_table() -> None:
    with pytest.raises(io.IOTableError, match="file not found"):
        io.read_table(FIXTURES / "nope.csv", 2017)
    with pytest.raises(io.IOTableError, match="no shipped table for 2019"):
        io.load_table(2019, 42)
    with pytest.raises(io.IOTableError, match="square"):
        io.leontief(np.zeros((2, 3)))


# ------------------------------------------------------------------ perturbation


@pytest.fixture(scope="module")
def t42() -> io.IOTable:
    return io.load_table(2017, 42)


def test_perturbation_keeps_column_sums_and_zero_pattern(t42: io.IOTable) -> None:
    A = t42.A
    draws = io.perturb_coefficients(A, alpha=50.0, draws=300, seed=7, block=128)
    assert draws.shape == (300, 42, 42)
    np.testing.assert_allclose(
        draws.sum(axis=1), np.broadcast_to(A.sum(axis=0), (300, 42)), rtol=1e-12
    )
    assert ((draws > 0) <= (A > 0)).all()  # zeros stay zero (tiny shares may flush to zero)
    assert not np.allclose(draws[0], A)
    # Dirichlet mean is A: entries with a visible share agree within a few standard errors
    big = A / A.sum(axis=0, keepdims=True) > 1e-2
    rel = np.abs(draws.mean(axis=0)[big] - A[big]) / A[big]
    assert np.median(rel) < 0.05


def test_same_seed_same_bits_and_workers_do_not_matter(t42: io.IOTable) -> None:
    A = t42.A
    a = io.perturb_coefficients(A, alpha=100.0, draws=70, seed=3, block=32)
    b = io.perturb_coefficients(A, alpha=100.0, draws=70, seed=3, block=32)
    assert np.array_equal(a, b)
    assert not np.array_equal(
        a, io.perturb_coefficients(A, alpha=100.0, draws=70, seed=4, block=32)
    )
    l = io.employment_coefficients(t42)
    f = np.vstack([io.route_b_output(np.full(42, 0.01), t42.x), t42.final_demand * 1e-3])
    one = io.indirect_jobs_draws(A, l, f, alpha=100.0, draws=70, seed=3, block=32, workers=1)
    two = io.indirect_jobs_draws(A, l, f, alpha=100.0, draws=70, seed=3, block=32, workers=2)
    assert one.shape == (70, 2) and np.array_equal(one, two)


def test_batched_draws_equal_per_draw_leontief(t42: io.IOTable) -> None:
    A = t42.A
    l = io.employment_coefficients(t42)
    f = io.route_a_output(np.where(np.arange(42) == 30, 1e6, 0.0), l)
    exclude = t42.index(["28", "30"])
    got = io.indirect_jobs_draws(A, l, f, alpha=80.0, draws=25, seed=11, exclude=exclude, block=10)
    draws = io.perturb_coefficients(A, alpha=80.0, draws=25, seed=11, block=10)
    want = [io.indirect_jobs(io.leontief(d), l, f, exclude=exclude).indirect for d in draws]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # a huge concentration leaves A (and the Type I result) practically unchanged
    base = io.indirect_jobs(t42.L, l, f, exclude=exclude).indirect
    tight = io.indirect_jobs_draws(A, l, f, alpha=1e12, draws=5, seed=1, exclude=exclude)
    np.testing.assert_allclose(tight, base, rtol=1e-4)


def test_perturbation_bad_input() -> None:
    with pytest.raises(io.IOTableError, match="alpha must be > 0"):
        io.perturb_coefficients(np.eye(2) * 0.1, alpha=0.0, draws=2, seed=1)
    with pytest.raises(io.IOTableError, match=">= 0"):
        io.perturb_coefficients(-np.eye(2), alpha=1.0, draws=2, seed=1)


def test_shipped_data_keeps_nbs_attribution_and_provenance() -> None:
    attribution = (DATA / "ATTRIBUTION").read_text(encoding="utf-8")
    sources = (DATA / "SOURCES.md").read_text(encoding="utf-8")
    for text in (attribution, sources):
        assert "数据来源：国家统计局" in text and "ionet" in text
    assert "数据来源：国家统计局" in io.ATTRIBUTION
    for name in io.TABLES.values():
        assert (DATA / name).is_file()
