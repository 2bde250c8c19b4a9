# ruff: noqa: N802, N803, N806, E741  (matrix and vector names as in Miller & Blair: Z, A, L, l)
"""The input-output engine of the impact model: NBS input-output tables, domestic-use Leontief
inverses, jobs per unit of output, Type I/II multipliers, indirect and induced jobs (routes A and
B), and Dirichlet perturbation of the technical coefficients for Monte Carlo uncertainty.

Data: the national input-output tables of China (2017: 42 and 149 sectors; 2018: 42 and 153)
and employment by industry, 数据来源：国家统计局 (National Bureau of Statistics of China), as
packaged in the R package ionet 0.2.2 and shipped here unchanged (``data/china_io``, see its
SOURCES.md and ATTRIBUTION). Units: flows in 万元 (10,000 CNY); employment in 万人 (10,000
persons); jobs per unit of output ``l`` in persons per 万元 of gross output.

Two import layouts are read:

- the 42-sector tables split every product row into a ``Domestic`` and an ``Imports`` row (the
  non-competitive layout): the domestic system is read as published, no assumption needed;
- the 149/153-sector tables are competitive-import tables (one row per product, a total import
  column ``IM``): domestic use is derived with the standard proportional assumption, each product's
  intermediate use and domestic final use (consumption, capital formation; not exports, which are
  domestic output by definition) scaled by ``s_i = 1 - IM_i / (TIU_i + TC_i + GCF_i)``.

Either way ``x = Z_d 1 + y_d`` holds for the domestic system (``y_d`` domestic final use including
exports), so ``x = L y_d`` with ``L = (I - A_d)^-1``. The shipped tables balance to within 1.5e-12
(relative, row by row; see :meth:`IOTable.balance_residual`), so they are used as published: no
rebalancing.

Equations: Miller & Blair, Input-Output Analysis, 2nd ed., ch. 2 (Leontief), 6 (multipliers, Type II
household closure); docs/impact-model.md of the project (routes A and B, exclusion of sectors whose
workers are already counted as direct, Dirichlet perturbation of columns).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import threadpool_limits

__all__ = [
    "ATTRIBUTION",
    "EMPLOYMENT_UNIT",
    "TABLES",
    "EmploymentMultipliers",
    "IOTable",
    "IOTableError",
    "Jobs",
    "detail_parents",
    "employment_by_sector",
    "employment_coefficients",
    "employment_multipliers",
    "household_closure",
    "indirect_jobs",
    "indirect_jobs_draws",
    "leontief",
    "leontief_rows_draws",
    "load_table",
    "output_multipliers",
    "perturb_coefficients",
    "read_table",
    "route_a_output",
    "route_b_output",
    "technical_coefficients",
    "type2_jobs",
    "type2_leontief",
]

Float = NDArray[np.float64]
Mask = NDArray[np.bool_]

#: attribution NBS asks for wherever the tables or coefficients derived from them are shown
ATTRIBUTION = (
    "数据来源：国家统计局 (National Bureau of Statistics of China), via R package ionet 0.2.2"
)
#: unit of the jobs-per-output coefficients l
EMPLOYMENT_UNIT = "persons per 万元 (10,000 CNY) of gross output"
#: shipped tables: (year, sectors) -> file name
TABLES: dict[tuple[int, int], str] = {
    (2017, 42): "china_2017_42.csv",
    (2017, 149): "china_2017_149.csv",
    (2018, 42): "china_2018_42.csv",
    (2018, 153): "china_2018_153.csv",
}
_DETAIL_CONCORDANCE = {149: "io149_to_io42.csv", 153: "io153_to_io42.csv"}
_EMPLOYMENT_FILE = "china_employment.csv"
_EMPLOYMENT_CONCORDANCE = "employment_to_io42.csv"
#: published tables must balance (rows x = Z_d 1 + y_d, columns TI = GO) to this relative precision
BALANCE_TOLERANCE = 1e-6
#: 万人 -> persons
_PERSONS_PER_WANREN = 1e4

_VA_ROWS = ("VA001", "VA002", "VA003", "VA004")
_TOTAL_ROWS = ("TII", *_VA_ROWS, "TVA", "TI")
_COLS_42 = ("TIU", "TC", "FU201", "FU202", "EX", "TFU", "GO")
_COLS_DETAIL = (
    "TIU",
    "FU101",
    "FU102",
    "THC",
    "FU103",
    "TC",
    "FU201",
    "FU202",
    "GCF",
    "EX",
    "TFU",
    "IM",
    "GO",
)


class IOTableError(ValueError):
    """An input-output table, employment file or concordance that cannot be used, naming the
    file, row and column at fault."""


def _f64(values: ArrayLike) -> Float:
    """``values`` as a float64 array (for the type checker: NumPy's reductions return Any)."""
    return np.asarray(values, dtype=np.float64)


def _data_dir() -> Path:
    """The package's own copy of the NBS data (never the shared source folder)."""
    return Path(str(resources.files("impactstudy.impact").joinpath("data", "china_io")))


# --------------------------------------------------------------------------------------------
# The table


@dataclass(frozen=True, eq=False)
class IOTable:
    """One national input-output table, reduced to its domestic system.

    ``Z`` domestic intermediate flows (row i to column j), ``x`` gross output, ``y`` domestic final
    use (columns ``final_use``; exports included), ``Z_imports``/``y_imports`` the imported part
    of the same uses, ``imports`` total imports by product, ``va`` value-added rows VA001..VA004
    (VA001 compensation of employees), ``household`` domestic household consumption by product and
    ``household_total`` all household consumption including imports (None where the table has no
    household column: :func:`load_table` fills them for the 42-sector tables). All in 万元.
    """

    year: int
    codes: tuple[str, ...]
    names_zh: tuple[str, ...]
    names_en: tuple[str, ...]
    Z: Float
    x: Float
    y: Float
    final_use: tuple[str, ...]
    Z_imports: Float
    y_imports: Float
    imports: Float
    va: Float
    household: Float | None
    household_total: float | None
    import_treatment: Literal["reported", "proportional"]
    source: str

    @property
    def n(self) -> int:
        """Number of sectors."""
        return len(self.codes)

    @property
    def compensation(self) -> Float:
        """Compensation of employees (VA001, 劳动者报酬) by sector, 万元."""
        return _f64(self.va[0])

    @property
    def final_demand(self) -> Float:
        """Total domestic final use by product (exports included), 万元."""
        return _f64(self.y.sum(axis=1))

    @cached_property
    def A(self) -> Float:
        """Domestic-use technical coefficients ``A_d = Z_d x̂⁻¹``."""
        return self.domestic_coefficients()

    @cached_property
    def L(self) -> Float:
        """Type I Leontief inverse ``(I − A_d)⁻¹``."""
        return leontief(self.A)

    def domestic_coefficients(self) -> Float:
        """``A_d = Z_d x̂⁻¹``: domestic input i per unit of output of j (imports removed)."""
        return technical_coefficients(self.Z, self.x)

    def index(self, codes: str | Sequence[str]) -> NDArray[np.intp]:
        """Positions of sector codes, with an error naming an unknown code."""
        wanted = [codes] if isinstance(codes, str) else list(codes)
        pos = {c: i for i, c in enumerate(self.codes)}
        missing = [c for c in wanted if c not in pos]
        if missing:
            raise IOTableError(f"{self.source}: unknown sector code(s) {missing}")
        return np.array([pos[c] for c in wanted], dtype=np.intp)

    def balance_residual(self) -> Float:
        """Relative row imbalance ``(Z_d 1 + y_d − x) / x`` of the domestic system."""
        return _f64((self.Z.sum(axis=1) + self.final_demand - self.x) / self.x)


def _read_csv(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise IOTableError(f"{path}: file not found")
    try:
        return pl.read_csv(path, infer_schema_length=0)
    except pl.exceptions.PolarsError as exc:
        raise IOTableError(f"{path}: not a readable CSV ({exc})") from exc


def _numbers(
    frame: pl.DataFrame, rows: NDArray[np.intp], columns: Sequence[str], path: Path
) -> Float:
    """The cells (rows x columns) as floats; an empty or non-numeric cell is an error naming the
    file, row (code and CSV line) and column."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise IOTableError(f"{path}: missing column(s) {missing}")
    sub = frame[rows.tolist()].select(list(columns))
    num = sub.select(pl.all().str.strip_chars().cast(pl.Float64, strict=False))
    bad = num.select(pl.all().is_null() | pl.all().is_nan()).to_numpy()
    if bad.any():
        r, c = (int(v) for v in np.argwhere(bad)[0])
        code = frame["Code"][int(rows[r])]
        raise IOTableError(
            f"{path}: row {code!r} (line {int(rows[r]) + 2}), column {columns[c]!r}: "
            f"not a number: {sub[r, c]!r}"
        )
    return _f64(num.to_numpy())


def _fail_at(path: Path, frame: pl.DataFrame, row: int, column: str, what: str) -> IOTableError:
    code = frame["Code"][row]
    return IOTableError(f"{path}: row {code!r} (line {row + 2}), column {column!r}: {what}")


def read_table(path: str | Path, year: int) -> IOTable:
    """Read an NBS input-output table CSV (ionet layout) and reduce it to its domestic system.

    The layout is recognised from the columns: an ``Origin`` column (Domestic / Imports / TOT
    rows) means the 42-sector non-competitive layout, else the competitive layout with an ``IM``
    column (proportional import assumption, see the module docstring). Checks: square
    intermediate block (sector columns = sector rows), numbers everywhere needed, gross output
    > 0, intermediate flows >= 0, 0 <= domestic share <= 1, and balance (rows ``x = Z_d 1 + y_d``,
    columns ``TI = GO``) within :data:`BALANCE_TOLERANCE`.
    """
    path = Path(path)
    frame = _read_csv(path)
    for col in ("Code", "Description", "DescriptionInChinese"):
        if col not in frame.columns:
            raise IOTableError(f"{path}: missing column {col!r}")
    codes_all = frame["Code"].to_list()
    layout_42 = "Origin" in frame.columns
    if layout_42:
        origin = frame["Origin"].to_numpy()
        dom_rows = np.flatnonzero(origin == "Domestic")
        imp_rows = np.flatnonzero(origin == "Imports")
    else:
        dom_rows = np.array(
            [i for i, c in enumerate(codes_all) if c not in _TOTAL_ROWS], dtype=np.intp
        )
        imp_rows = dom_rows
    codes = tuple(str(codes_all[i]) for i in dom_rows)
    n = len(codes)
    if n == 0:
        raise IOTableError(f"{path}: no sector rows")
    sector_cols = [c for c in frame.columns if c in set(codes)]
    if sector_cols != list(codes):
        extra_rows = [c for c in codes if c not in frame.columns]
        hint = f"rows without a column: {extra_rows}" if extra_rows else "columns out of row order"
        raise IOTableError(
            f"{path}: intermediate block not square: {n} sector rows, "
            f"{len(sector_cols)} matching sector columns ({hint})"
        )
    if layout_42 and [codes_all[i] for i in imp_rows] != list(codes):
        raise IOTableError(f"{path}: the Imports rows do not list the Domestic rows' sectors")
    total_pos = {c: i for i, c in enumerate(codes_all) if c in _TOTAL_ROWS}
    missing_rows = [r for r in _TOTAL_ROWS if r not in total_pos]
    if missing_rows:
        raise IOTableError(f"{path}: missing row(s) {missing_rows}")

    fu_cols = _COLS_42 if layout_42 else _COLS_DETAIL
    dom = _numbers(frame, dom_rows, [*codes, *fu_cols], path)
    tot = _numbers(frame, np.array([total_pos[r] for r in _TOTAL_ROWS]), list(codes), path)
    Z_total, fu = dom[:, :n], dict(zip(fu_cols, dom[:, n:].T, strict=True))
    x = fu["GO"]
    for i in np.flatnonzero(x <= 0)[:1]:
        raise _fail_at(path, frame, int(dom_rows[i]), "GO", f"gross output {x[i]} is not > 0")
    for i, j in np.argwhere(Z_total < 0)[:1]:
        raise _fail_at(
            path, frame, int(dom_rows[i]), codes[j], f"negative intermediate flow {Z_total[i, j]}"
        )

    household: Float | None
    household_total: float | None
    if layout_42:
        imp = _numbers(frame, imp_rows, [*codes, *fu_cols], path)
        for i, j in np.argwhere(imp[:, :n] < 0)[:1]:
            raise _fail_at(
                path, frame, int(imp_rows[i]), codes[j], f"negative imported flow {imp[i, j]}"
            )
        Z, Z_imp = Z_total, imp[:, :n]
        final_use: tuple[str, ...] = ("TC", "FU201", "FU202", "EX")
        y = np.column_stack([fu[c] for c in final_use])
        y_imp = imp[:, n + 1 : n + 5]
        imports = imp[:, n + len(fu_cols) - 1]
        household, household_total = None, None
        treatment: Literal["reported", "proportional"] = "reported"
        imported_inputs = Z_imp.sum(axis=0)
    else:
        absorption = fu["TIU"] + fu["TC"] + fu["GCF"]
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(fu["IM"] == 0, 1.0, 1.0 - fu["IM"] / absorption)
        for i in np.flatnonzero(~((share >= 0) & (share <= 1)))[:1]:
            raise _fail_at(
                path,
                frame,
                int(dom_rows[i]),
                "IM",
                f"imports {fu['IM'][i]} exceed domestic absorption TIU+TC+GCF = {absorption[i]}",
            )
        Z, Z_imp = share[:, None] * Z_total, (1 - share)[:, None] * Z_total
        final_use = ("THC", "FU103", "FU201", "FU202", "EX")
        dom_use = np.column_stack([fu[c] for c in final_use[:-1]])
        y = np.column_stack([share[:, None] * dom_use, fu["EX"]])
        y_imp = np.column_stack([(1 - share)[:, None] * dom_use, np.zeros(n)])
        imports = fu["IM"]
        household, household_total = share * fu["THC"], float(fu["THC"].sum())
        treatment = "proportional"
        imported_inputs = np.zeros(n)  # TII already counts every input, domestic or imported

    # balance checks: rows (domestic system), columns (inputs = output)
    row_gap = (Z.sum(axis=1) + y.sum(axis=1) - x) / x
    for i in np.flatnonzero(np.abs(row_gap) > BALANCE_TOLERANCE)[:1]:
        raise _fail_at(
            path,
            frame,
            int(dom_rows[i]),
            "GO",
            f"row does not balance: intermediate + final domestic use - GO = "
            f"{row_gap[i] * x[i]:.6g} ({row_gap[i]:.3g} of GO)",
        )
    ti = tot[_TOTAL_ROWS.index("TI")]
    inputs = Z_total.sum(axis=0) + imported_inputs + tot[_TOTAL_ROWS.index("TVA")]
    for name, other in (("TI", ti), ("inputs", inputs)):
        gap = (other - x) / x
        for j in np.flatnonzero(np.abs(gap) > BALANCE_TOLERANCE)[:1]:
            row = total_pos["TI"]
            raise _fail_at(
                path,
                frame,
                row,
                codes[j],
                f"column does not balance: {name} {other[j]:.6g} vs GO {x[j]:.6g}",
            )
    names_zh = tuple(str(frame["DescriptionInChinese"][int(i)]) for i in dom_rows)
    names_en = tuple(str(frame["Description"][int(i)]) for i in dom_rows)
    return IOTable(
        year=year,
        codes=codes,
        names_zh=names_zh,
        names_en=names_en,
        Z=Z,
        x=x,
        y=y,
        final_use=final_use,
        Z_imports=Z_imp,
        y_imports=y_imp,
        imports=imports,
        va=tot[1:5],
        household=household,
        household_total=household_total,
        import_treatment=treatment,
        source=path.name,
    )


def _read_detail_concordance(sectors: int) -> tuple[list[str], list[str]]:
    """(detailed codes, their 42-sector parents) from the shipped concordance."""
    if sectors not in _DETAIL_CONCORDANCE:
        raise IOTableError(f"no 42-sector concordance shipped for a {sectors}-sector table")
    path = _data_dir() / _DETAIL_CONCORDANCE[sectors]
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r["code"] for r in rows], [r["parent42"] for r in rows]


def detail_parents(table: IOTable) -> NDArray[np.intp]:
    """Position (0..41) of each detailed sector's 42-sector parent (identity for 42 sectors).

    The shipped concordances (io149_to_io42.csv, io153_to_io42.csv) were derived from the
    tables' own contiguous sector order and checked by gross output: the detailed sectors'
    outputs sum to their parent's output in the 42-sector table of the same year to 1e-15.
    """
    if table.n == 42:
        return np.arange(42, dtype=np.intp)
    codes, parents = _read_detail_concordance(table.n)
    if tuple(codes) != table.codes:
        raise IOTableError(
            f"{_DETAIL_CONCORDANCE[table.n]}: codes do not match the sectors of {table.source}"
        )
    return np.array([int(p) - 1 for p in parents], dtype=np.intp)


def load_table(year: int, sectors: int) -> IOTable:
    """One shipped NBS table (2017: 42 or 149 sectors; 2018: 42 or 153).

    The 42-sector tables have no household column (TC is all final consumption, household and
    government); their household consumption is taken from the detailed table of the same year
    (THC, aggregated to 42 sectors by the shipped concordance; the two tables agree on TC to
    1e-15), and its domestic part by each product's domestic share of TC in the 42-sector table.
    """
    if (year, sectors) not in TABLES:
        raise IOTableError(f"no shipped table for {year} with {sectors} sectors: {sorted(TABLES)}")
    table = read_table(_data_dir() / TABLES[(year, sectors)], year)
    if sectors != 42:
        return table
    detail_n = next(s for (yr, s) in TABLES if yr == year and s != 42)
    detail = read_table(_data_dir() / TABLES[(year, detail_n)], year)
    parents = detail_parents(detail)
    if detail.household is None:  # pragma: no cover - the detailed layout always has THC
        raise IOTableError(f"{detail.source}: no household consumption column")
    thc = _f64(
        np.bincount(parents, weights=detail.household + detail.y_imports[:, 0], minlength=42)
    )
    tc_dom, tc_imp = table.y[:, 0], table.y_imports[:, 0]
    tc_all = tc_dom + tc_imp
    dom_share = np.divide(tc_dom, tc_all, out=np.zeros(42), where=tc_all > 0)
    return dataclasses.replace(table, household=thc * dom_share, household_total=float(thc.sum()))


# --------------------------------------------------------------------------------------------
# Leontief and multipliers


def technical_coefficients(Z: ArrayLike, x: ArrayLike) -> Float:
    """``A = Z x̂⁻¹``, input i per unit of output of j; columns with zero output are zero."""
    z, xv = np.asarray(Z, dtype=np.float64), np.asarray(x, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] != z.shape[1] or xv.shape != (z.shape[0],):
        raise IOTableError(f"Z must be square and x match it, got {z.shape} and {xv.shape}")
    return _f64(np.divide(z, xv[None, :], out=np.zeros_like(z), where=xv[None, :] != 0))


def leontief(A: ArrayLike) -> Float:
    """Leontief inverse ``L = (I − A)⁻¹``; ``A`` square with a convergent (productive) system."""
    a = np.asarray(A, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise IOTableError(f"technical coefficients must be square, got shape {a.shape}")
    try:
        return _f64(np.linalg.solve(np.eye(a.shape[0]) - a, np.eye(a.shape[0])))
    except np.linalg.LinAlgError as exc:
        raise IOTableError(f"I − A is singular: {exc}") from exc


def output_multipliers(L: ArrayLike) -> Float:
    """Type I (or, given L̄₁₁, Type II) simple output multipliers: column sums of L."""
    return _f64(np.asarray(L, dtype=np.float64).sum(axis=0))


@dataclass(frozen=True, eq=False)
class EmploymentMultipliers:
    """``simple`` = l′L, jobs per unit of final demand for each sector (persons per 万元);
    ``type_i`` = l′L / l, total jobs per direct job (NaN where l = 0)."""

    simple: Float
    type_i: Float


def employment_multipliers(l: ArrayLike, L: ArrayLike) -> EmploymentMultipliers:
    """Employment multipliers from jobs per output ``l`` and a Leontief inverse ``L``."""
    lv, Lm = np.asarray(l, dtype=np.float64), np.asarray(L, dtype=np.float64)
    simple = lv @ Lm
    ratio = np.divide(simple, lv, out=np.full_like(simple, np.nan), where=lv != 0)
    return EmploymentMultipliers(simple=simple, type_i=ratio)


# --------------------------------------------------------------------------------------------
# Employment


def _employment_leaves(year: int) -> tuple[list[str], Float]:
    """Leaf divisions of the employment file (A01.., K, P, T: no finer rows) and their persons."""
    path = _data_dir() / _EMPLOYMENT_FILE
    frame = _read_csv(path)
    if str(year) not in frame.columns:
        raise IOTableError(f"{path}: no column for year {year}")
    codes = [str(c) for c in frame["Code"].to_list()]
    sub = [c for c in codes if c != "TOT"]
    leaves = [c for c in sub if not any(o != c and o.startswith(c) for o in sub)]
    rows = np.array([codes.index(c) for c in leaves], dtype=np.intp)
    values = _numbers(frame, rows, [str(year)], path)[:, 0]
    for i in np.flatnonzero(values < 0)[:1]:
        raise _fail_at(path, frame, int(rows[i]), str(year), f"negative employment {values[i]}")
    return leaves, values * _PERSONS_PER_WANREN


def employment_by_sector(
    year: int, x42: ArrayLike, codes42: Sequence[str], *, concordance: str | Path | None = None
) -> Float:
    """Employed persons by 42-sector IO sector for ``year``, through the shipped concordance
    employment_to_io42.csv (or ``concordance``: columns ``division``, ``io42``). A division
    mapped to several sectors is split in proportion to their gross output ``x42`` (the shipped
    file maps every leaf division to one sector; the rule serves edited concordances)."""
    leaves, persons = _employment_leaves(year)
    path = _data_dir() / _EMPLOYMENT_CONCORDANCE if concordance is None else Path(concordance)
    if not path.is_file():
        raise IOTableError(f"{path}: file not found")
    with path.open(encoding="utf-8", newline="") as fh:
        conc = list(csv.DictReader(fh))
    pos = {c: i for i, c in enumerate(codes42)}
    div = np.array([leaves.index(r["division"]) if r["division"] in leaves else -1 for r in conc])
    sec = np.array([pos.get(r["io42"], -1) for r in conc])
    for k in np.flatnonzero((div < 0) | (sec < 0))[:1]:
        raise IOTableError(
            f"{path}: row {k + 1} ({conc[k]['division']} -> {conc[k]['io42']}): "
            "unknown employment division or IO sector"
        )
    unmapped = sorted(set(leaves) - {r["division"] for r in conc})
    if unmapped:
        raise IOTableError(f"{path}: employment divisions without an IO sector: {unmapped}")
    xv = np.asarray(x42, dtype=np.float64)
    div_x = np.bincount(div, weights=xv[sec], minlength=len(leaves))
    weight = xv[sec] / div_x[div]
    return _f64(np.bincount(sec, weights=persons[div] * weight, minlength=len(codes42)))


def employment_coefficients(table: IOTable, year: int | None = None) -> Float:
    """Jobs per unit of output ``l_j = E_j / x_j`` (persons per 万元), employment of ``year``
    (default the table's year) over the 42-sector table's gross output of the same year.

    A 149/153-sector table gets its 42-sector parent's coefficient for every detailed sector.
    """
    yr = table.year if year is None else year
    t42 = table if table.n == 42 else load_table(table.year, 42)
    persons = employment_by_sector(yr, t42.x, t42.codes)
    l42 = persons / t42.x
    return l42[detail_parents(table)]


# --------------------------------------------------------------------------------------------
# Jobs


def route_a_output(direct_jobs: ArrayLike, l: ArrayLike) -> Float:
    """Route A: output implied by known direct jobs, ``f_j = D_j / l_j`` (万元)."""
    d, lv = np.asarray(direct_jobs, dtype=np.float64), np.asarray(l, dtype=np.float64)
    bad = (d != 0) & (lv <= 0)
    if bad.any():
        raise IOTableError(f"direct jobs in sector(s) {np.flatnonzero(bad).tolist()} with l <= 0")
    return np.divide(d, lv, out=np.zeros_like(d), where=d != 0)


def route_b_output(theta: ArrayLike, x: ArrayLike) -> Float:
    """Route B: platform output as shares of sector output, ``f = θ ⊙ x`` (万元)."""
    return np.asarray(theta, dtype=np.float64) * np.asarray(x, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Jobs:
    """Jobs (persons) from output ``f``: ``direct`` = l′f, ``indirect`` = l′(L − I) f and, for
    Type II, ``induced`` = l′(L̄₁₁ − L) f; ``*_by_sector`` say in which sector the jobs are.
    Excluded sectors have zero indirect and induced jobs."""

    direct: float
    indirect: float
    indirect_by_sector: Float
    induced: float | None = None
    induced_by_sector: Float | None = None


def _keep_mask(n: int, exclude: ArrayLike | None) -> Float:
    """1.0 for sectors whose jobs count as indirect, 0.0 for excluded ones (positions or a mask)."""
    keep = np.ones(n)
    if exclude is None:
        return keep
    ex = np.asarray(exclude)
    if ex.dtype == np.bool_:
        if ex.shape != (n,):
            raise IOTableError(f"exclude mask has shape {ex.shape}, expected ({n},)")
        keep[ex] = 0.0
    else:
        idx = ex.astype(np.intp).ravel()
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IOTableError(f"exclude positions out of range 0..{n - 1}: {idx.tolist()}")
        keep[idx] = 0.0
    return keep


def indirect_jobs(
    L: ArrayLike, l: ArrayLike, f: ArrayLike, *, exclude: ArrayLike | None = None
) -> Jobs:
    """Type I jobs from output ``f``: direct ``l′f`` and indirect ``l′(L − I) f``.

    ``exclude``: sectors (positions, see :meth:`IOTable.index`, or a boolean mask) whose workers
    are already counted as direct; no indirect jobs are added in them (their rows of ``(L − I) f``
    are dropped), so output whose workers are counted is never counted again.
    """
    Lm, lv, fv = (np.asarray(a, dtype=np.float64) for a in (L, l, f))
    keep = _keep_mask(lv.size, exclude)
    by_sector = keep * lv * (Lm @ fv - fv)
    return Jobs(
        direct=float(lv @ fv), indirect=float(by_sector.sum()), indirect_by_sector=by_sector
    )


def household_closure(
    table: IOTable, *, basis: Literal["income", "consumption"] = "income"
) -> Float:
    """Technical coefficients closed for households, (n+1) x (n+1) (Miller & Blair §6.1).

    Household row: compensation of employees per unit of output, ``VA001_j / x_j``. Household
    column: domestic household consumption of each product per unit of household income:
    ``basis="income"`` (Miller & Blair) divides by total compensation of employees;
    ``basis="consumption"`` divides by total household consumption including imports, i.e. all
    labour income is spent, the imported part leaking out.
    """
    if table.household is None or table.household_total is None:
        raise IOTableError(f"{table.source}: no household consumption for a Type II closure")
    n = table.n
    denom = float(table.compensation.sum()) if basis == "income" else table.household_total
    closed = np.zeros((n + 1, n + 1))
    closed[:n, :n] = table.A
    closed[n, :n] = table.compensation / table.x
    closed[:n, n] = table.household / denom
    return closed


def type2_leontief(table: IOTable, *, basis: Literal["income", "consumption"] = "income") -> Float:
    """``L̄₁₁``: the original sectors' block of the household-closed Leontief inverse."""
    return leontief(household_closure(table, basis=basis))[: table.n, : table.n]


def type2_jobs(
    table: IOTable,
    l: ArrayLike,
    f: ArrayLike,
    *,
    exclude: ArrayLike | None = None,
    basis: Literal["income", "consumption"] = "income",
) -> Jobs:
    """Type I jobs plus induced jobs ``l′(L̄₁₁ − L) f`` (household spending of labour income),
    reported apart; excluded sectors get no indirect or induced jobs."""
    lv, fv = np.asarray(l, dtype=np.float64), np.asarray(f, dtype=np.float64)
    base = indirect_jobs(table.L, lv, fv, exclude=exclude)
    keep = _keep_mask(lv.size, exclude)
    induced = keep * lv * ((type2_leontief(table, basis=basis) - table.L) @ fv)
    return dataclasses.replace(base, induced=float(induced.sum()), induced_by_sector=induced)


# --------------------------------------------------------------------------------------------
# Uncertainty: Dirichlet perturbation of the columns of A


#: draws per random block: block b draws from SeedSequence(seed, spawn_key=(b,)), so results
#: depend on (seed, block size) only, not on the number of worker threads
DRAW_BLOCK = 250
#: perturbed entries below this share of their column are set to 0 (see _dirichlet_block)
_FLUSH = 1e-30


#: Dirichlet parameters below this are pooled per column (see _Perturbation)
POOL_BELOW = 1.0


@dataclass(frozen=True)
class _Perturbation:
    """What a Dirichlet perturbation of A's columns needs, computed once.

    Coefficients whose Dirichlet parameter ``α a_ij / Σ_i a_ij`` is at least `POOL_BELOW` get
    their own gamma variate. The others (each under 0.5% of its column at α = 200; together 7%
    of a column on average in the 2017 149-sector table) are pooled: the pool's total follows
    the Dirichlet exactly (a Dirichlet's components aggregate into a Dirichlet with summed
    parameters) and its coefficients keep their proportions within it. Most of the time of an
    unpooled draw went to these small-parameter gammas, which carry almost none of L's spread.
    """

    At: Float  # A transposed: row j is column j of A
    support: NDArray[np.intp]  # flat (j, i) positions with their own variate
    concentration: Float
    pool: Float  # (n,) summed parameters of each column's pooled coefficients
    pool_shape: Float  # (n, n) pooled coefficients as shares of their pool, transposed
    colsum: Float


def _dirichlet_block(p: _Perturbation, draws: int, seed: int, block: int) -> Float:
    """``draws`` perturbed coefficient matrices, stored transposed (draws, j, i): row j of each is
    column j of A ~ Dirichlet over its nonzero entries (small ones pooled) x its column sum."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(block,))))
    n = p.At.shape[0]
    g = rng.standard_gamma(np.broadcast_to(p.concentration, (draws, p.concentration.size)))
    pooled = rng.standard_gamma(np.broadcast_to(p.pool, (draws, n)))
    out = pooled[:, :, None] * p.pool_shape[None, :, :]
    out.reshape(draws, n * n)[:, p.support] = g
    # flush shares below 1e-30: tiny concentrations give gammas near the subnormal range, which
    # slow LAPACK fiftyfold; their effect on L is below 1e-30 (column sums are restored below)
    out *= out >= _FLUSH * out.sum(axis=2, keepdims=True)
    total = out.sum(axis=2, keepdims=True)
    scale = np.divide(p.colsum[None, :, None], total, out=np.zeros_like(total), where=total > 0)
    out *= scale
    empty = (total[..., 0] == 0) & (p.colsum[None, :] > 0)
    if empty.any():  # every gamma underflowed (tiny concentrations): keep the base column
        d, j = np.nonzero(empty)
        out[d, j, :] = p.At[j, :]
    return out


def _perturb_setup(A: ArrayLike, alpha: float) -> _Perturbation:
    a = np.asarray(A, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise IOTableError(f"technical coefficients must be square, got shape {a.shape}")
    if (a < 0).any():
        raise IOTableError("technical coefficients must be >= 0 to perturb them")
    if not alpha > 0:
        raise IOTableError(f"Dirichlet concentration alpha must be > 0, got {alpha}")
    At = np.ascontiguousarray(a.T)
    colsum = At.sum(axis=1)
    shares = np.divide(At, colsum[:, None], out=np.zeros_like(At), where=colsum[:, None] > 0)
    conc = alpha * shares
    own = conc >= POOL_BELOW
    small = (conc > 0) & ~own
    pool = np.where(small, conc, 0.0).sum(axis=1)
    in_pool = np.where(small, shares, 0.0)
    pool_total = in_pool.sum(axis=1, keepdims=True)
    pool_shape = np.divide(in_pool, pool_total, out=np.zeros_like(in_pool), where=pool_total > 0)
    support = np.flatnonzero(own.ravel())
    return _Perturbation(At, support, conc.ravel()[support], pool, pool_shape, colsum)


def _draw_blocks(
    setup: _Perturbation, draws: int, seed: int, block: int, workers: int | None
) -> Iterator[Float]:
    """The perturbed blocks in order. With ``workers`` > 1 they are drawn ahead on worker threads
    (NumPy's gamma sampler releases the GIL) while the caller solves the previous block on its own
    thread; BLAS is held to one thread meanwhile (its threads only contend on 149 x 149 solves:
    10,000 draws took 3.6 s with them, 2.0 s without)."""
    specs = _blocks(draws, block)
    with threadpool_limits(limits=1, user_api="blas"):  # small solves: BLAS threads only contend
        yield from _drawn(setup, specs, seed, workers)


def _drawn(
    setup: _Perturbation, specs: list[tuple[int, int]], seed: int, workers: int | None
) -> Iterator[Float]:
    if workers is None:  # every core draws, and the caller's thread solves
        workers = (os.cpu_count() or 1) + 1
    if workers <= 1 or len(specs) == 1:
        for b, size in specs:
            yield _dirichlet_block(setup, size, seed, b)
        return
    ahead = 2 * (workers - 1)  # blocks drawn ahead: bounded, each is draws x n x n floats
    with ThreadPoolExecutor(max_workers=workers - 1) as pool:
        pending = [pool.submit(_dirichlet_block, setup, size, seed, b) for b, size in specs[:ahead]]
        for b, size in specs[ahead:]:
            done = pending.pop(0).result()
            pending.append(pool.submit(_dirichlet_block, setup, size, seed, b))
            yield done
        for future in pending:
            yield future.result()


def _blocks(draws: int, block: int) -> list[tuple[int, int]]:
    if draws < 1 or block < 1:
        raise IOTableError(f"draws and block must be >= 1, got {draws} and {block}")
    return [(b, min(block, draws - b * block)) for b in range(-(-draws // block))]


def perturb_coefficients(
    A: ArrayLike, alpha: float, draws: int, seed: int, *, block: int = DRAW_BLOCK
) -> Float:
    """``draws`` perturbed copies of ``A`` (draws, n, n): each column j ~ Dirichlet(α a_·j / Σ_i
    a_ij) x Σ_i a_ij over its nonzero entries, so column sums and zero pattern are kept and the
    mean is A; larger α, smaller spread. Same seed (and block), same bits."""
    setup = _perturb_setup(A, alpha)
    parts = [_dirichlet_block(setup, size, seed, b) for b, size in _blocks(draws, block)]
    return np.ascontiguousarray(np.concatenate(parts).transpose(0, 2, 1))


def indirect_jobs_draws(
    A: ArrayLike,
    l: ArrayLike,
    f: ArrayLike,
    *,
    alpha: float,
    draws: int,
    seed: int,
    exclude: ArrayLike | None = None,
    workers: int | None = None,
    block: int = DRAW_BLOCK,
) -> Float:
    """Indirect jobs ``l′(L_r − I) f`` for each perturbed draw ``A_r`` of
    :func:`perturb_coefficients` (same seed, same draws).

    Batched: per block of draws, one ``np.linalg.solve`` of ``(I − A_r)ᵀ v_r = l`` (only l′L_r is
    needed, no inverse), then ``v_r·f − l·f``. ``f`` may be one output vector (n,) -> (draws,)
    or several (m, n) -> (draws, m), e.g. routes A and B in one pass. Blocks run on ``workers``
    threads (NumPy releases the GIL in the gamma sampling and the solve); results do not depend
    on ``workers``. Cost: the gamma variates (one per nonzero coefficient per draw: 163 million for
    10,000 draws of the 2017 149-sector table) take about three quarters of the time.
    """
    setup = _perturb_setup(A, alpha)
    n = setup.At.shape[0]
    keep = _keep_mask(n, exclude)
    lk = keep * np.asarray(l, dtype=np.float64)
    fv = np.asarray(f, dtype=np.float64)
    single = fv.ndim == 1
    fm = np.atleast_2d(fv)
    if fm.shape[1] != n or lk.shape != (n,):
        raise IOTableError(f"l must have shape ({n},) and f ({n},) or (m, {n})")
    direct_part = fm @ lk  # l_keep′ f for each f
    eye = np.eye(n)

    def solve(pt: Float) -> Float:
        np.subtract(eye, pt, out=pt)  # (I − A_r)ᵀ, in place
        v = np.linalg.solve(pt, np.broadcast_to(lk, (pt.shape[0], n))[..., None])[..., 0]
        return np.asarray(v @ fm.T - direct_part, dtype=np.float64)

    out = np.concatenate([solve(pt) for pt in _draw_blocks(setup, draws, seed, block, workers)])
    return out[:, 0] if single else out


def leontief_rows_draws(
    A: ArrayLike,
    weights: ArrayLike,
    *,
    alpha: float,
    draws: int,
    seed: int,
    workers: int | None = None,
    block: int = DRAW_BLOCK,
) -> Float:
    """``w_k′ L_r`` for every row ``w_k`` of ``weights`` (m, n) and every perturbed draw ``A_r``
    of :func:`perturb_coefficients` (same seed, same draws): shape (draws, m, n).

    One batched solve of ``(I − A_r)ᵀ V = Wᵀ`` per block of draws, however many rows: with
    ``l`` and the unit vectors of some sectors as rows, the indirect jobs per unit of output of
    every sector under every exclusion of those sectors follow from one pass of draws
    (``lk′L = l′L − Σ_e l_e e_e′L``).
    """
    setup = _perturb_setup(A, alpha)
    n = setup.At.shape[0]
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if w.shape[1] != n:
        raise IOTableError(f"weights must have {n} columns, got shape {w.shape}")
    eye = np.eye(n)

    def solve(pt: Float) -> Float:
        np.subtract(eye, pt, out=pt)  # (I − A_r)ᵀ, in place
        v = np.linalg.solve(pt, np.broadcast_to(w.T, (pt.shape[0], n, w.shape[0])))
        return np.ascontiguousarray(v.transpose(0, 2, 1))

    return np.concatenate([solve(pt) for pt in _draw_blocks(setup, draws, seed, block, workers)])
