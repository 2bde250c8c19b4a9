"""Speed of the vectorised (Polars) expression backend against the scalar evaluator.

Ten expressions of the kinds the WeChat study's indicators and quality rules use, over a
synthetic response table. The vectorised backend runs on 1,000,000 rows; the scalar
evaluator (one `MappingScope` per response, as a per-row loop would) on the first 10,000
rows, extrapolated to 1,000,000. Both must give the same values on those 10,000 rows.

Run: .venv/bin/python bench/bench_vector.py
"""

from __future__ import annotations

import datetime as dt
import math
import random
import sys
import time

import polars as pl

from impactstudy.forms.expr import MappingScope, parse
from impactstudy.forms.vector import ColumnKind, to_polars

N_VECTOR = 1_000_000
N_SCALAR = 10_000
TODAY = dt.date(2018, 11, 30)
EXPRESSIONS = [
    "${v_info} >= 4",
    "${job_seek} = 'yes'",
    "selected(${pay_scenes}, 'retail')",
    "count-selected(${pay_scenes}) >= 3",
    "coalesce(${spend_retail}, 0)",
    "${spend_retail} * ${incr_retail}",
    "${staff_total} * ${revenue_share_wechat} div 100",
    "round(${spend_retail} div 30, 2)",
    "if(${staff_total} >= 100, 'large', if(${staff_total} >= 10, 'medium', 'small'))",
    "regex(${phone}, '^1[3-9][0-9]{9}$')",
]
KINDS: dict[str, ColumnKind] = {
    "v_info": "number",
    "job_seek": "text",
    "pay_scenes": "text",
    "spend_retail": "number",
    "incr_retail": "number",
    "staff_total": "number",
    "revenue_share_wechat": "number",
    "phone": "text",
}
SCENES = ["retail", "catering", "transport", "home_living", "education", "health", "finance"]


def responses(n: int, seed: int = 2018) -> pl.DataFrame:
    """A synthetic response table with blanks where a respondent skipped a question."""
    rng = random.Random(seed)

    def maybe(value: object, p_blank: float) -> object:
        return None if rng.random() < p_blank else value

    rows: dict[str, list[object]] = {k: [] for k in KINDS}
    for _ in range(n):
        rows["v_info"].append(maybe(float(rng.randint(1, 5)), 0.05))
        rows["job_seek"].append(maybe(rng.choice(["yes", "no"]), 0.1))
        k = rng.randint(0, 4)
        rows["pay_scenes"].append(maybe(" ".join(rng.sample(SCENES, k)), 0.05))
        rows["spend_retail"].append(maybe(round(rng.lognormvariate(6, 1), 2), 0.2))
        rows["incr_retail"].append(maybe(round(rng.random(), 2), 0.2))
        rows["staff_total"].append(maybe(int(rng.lognormvariate(3, 1.5)), 0.02))
        rows["revenue_share_wechat"].append(maybe(float(rng.randint(0, 100)), 0.1))
        ok = rng.random() < 0.95
        phone = "1" + str(rng.randint(3, 9) if ok else 2) + str(rng.randint(0, 10**9 - 1)).zfill(9)
        rows["phone"].append(maybe(phone, 0.05))
    schema: dict[str, type[pl.DataType]] = {
        k: pl.Float64 if v == "number" else pl.Utf8 for k, v in KINDS.items()
    }
    schema["staff_total"] = pl.Int64
    return pl.DataFrame(rows, schema=schema)


def same(a: object, b: object) -> bool:
    if a is None:
        return b == ""  # a blank number is null in the table, "" in the scalar evaluator
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b and type(a) is type(b)


def main() -> None:
    t0 = time.perf_counter()
    big = responses(N_VECTOR)
    built = time.perf_counter() - t0
    small = big.head(N_SCALAR)
    rows = small.to_dicts()
    print(
        f"Python {sys.version.split()[0]}, Polars {pl.__version__} "
        f"({pl.thread_pool_size()} threads); table of {N_VECTOR:,} rows built in {built:.1f} s\n"
    )
    print(
        "| expression | compile ms | vectorised, 1M rows, ms | scalar, 10k rows, ms "
        "| scalar, 1M rows (extrapolated), s | speed-up |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    total_vec = total_scalar = 0.0
    compiled: list[pl.Expr] = []
    for source in EXPRESSIONS:
        ex = parse(source)
        t = time.perf_counter()
        expr = to_polars(ex, KINDS, today=TODAY).alias(f"e{len(compiled)}")
        compile_ms = (time.perf_counter() - t) * 1e3
        compiled.append(expr)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            col = big.select(expr).to_series()
            times.append(time.perf_counter() - t)
        vec = min(times)
        t = time.perf_counter()
        want = [ex.evaluate(MappingScope(r, today_date=TODAY)) for r in rows]
        scalar = time.perf_counter() - t
        got = col.head(N_SCALAR).to_list()
        bad = sum(not same(g, w) for g, w in zip(got, want, strict=True))
        total_vec += vec
        total_scalar += scalar
        per_million = scalar * N_VECTOR / N_SCALAR
        print(
            f"| `{source}` | {compile_ms:.1f} | {vec * 1e3:.0f} | {scalar * 1e3:.0f} "
            f"| {per_million:.1f} | {per_million / vec:.0f}×"
            + (f" | DIFFER on {bad} rows" if bad else " |")
        )
    t = time.perf_counter()
    big.select(compiled)
    together = time.perf_counter() - t
    per_million = total_scalar * N_VECTOR / N_SCALAR
    print(
        f"| all ten, one at a time | | {total_vec * 1e3:.0f} | {total_scalar * 1e3:.0f} "
        f"| {per_million:.1f} | {per_million / total_vec:.0f}× |"
    )
    print(f"| all ten in one select | | {together * 1e3:.0f} | | | {per_million / together:.0f}× |")


if __name__ == "__main__":
    main()
