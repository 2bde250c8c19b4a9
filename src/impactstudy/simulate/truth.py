"""The ground truth: every indicator's value over the whole synthetic population.

This is what a perfect census would find: later stages (weighting, estimation, the impact
model) are checked against it. Values are in the indicator's presentation unit (a proportion
with unit % is a percentage), totals in real units (each synthetic unit weighs
population / size).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from impactstudy.forms.vector import column_kinds, to_polars
from impactstudy.simulate.population import Population
from impactstudy.study import Indicator, Study

__all__ = ["truth"]


#: indicators evaluated together over a population: one pass, Polars' threads across them
BATCH = 16


def _columns(study: Study, inds: Sequence[Indicator], pop: Population) -> list[pl.DataFrame]:
    """Per unit of one group, for each indicator: its value, its denominator and domain, the
    weight (`y`, `w`, `d` if it has a denominator, `in_domain`)."""
    kinds = column_kinds(study.groups[pop.group].form, pop.frame)
    today = study.config.fieldwork.start
    exprs: list[pl.Expr] = []
    for i, ind in enumerate(inds):
        kind = "boolean" if ind.spec.statistic == "proportion" else "number"
        exprs.append(to_polars(ind.expression, kinds, today=today, result=kind).alias(f"y{i}"))  # type: ignore[arg-type]
        if ind.denominator is not None:
            d = to_polars(ind.denominator, kinds, today=today, result="number")
            exprs.append(d.alias(f"d{i}"))
        if ind.domain is not None:
            dom = to_polars(ind.domain, kinds, today=today, result="boolean").fill_null(False)
            exprs.append(dom.alias(f"in_domain{i}"))
    values = pop.frame.select(exprs)
    out = []
    for i, ind in enumerate(inds):
        cols = [pl.col(f"y{i}").alias("y"), pl.lit(pop.weight).alias("w")]
        if ind.denominator is not None:
            cols.append(pl.col(f"d{i}").alias("d"))
        if ind.domain is not None:
            cols.append(pl.col(f"in_domain{i}").alias("in_domain"))
        else:
            cols.append(pl.lit(True).alias("in_domain"))
        out.append(values.select(cols))
    return out


def _value(ind: Indicator, data: pl.DataFrame) -> tuple[float, int]:
    data = data.filter(pl.col("in_domain"))
    stat = ind.spec.statistic
    if stat == "proportion":
        data = data.with_columns(pl.col("y").cast(pl.Float64).fill_null(0.0))
    else:
        data = data.filter(pl.col("y").is_not_null() & pl.col("y").is_not_nan())
    n = data.height
    if n == 0:
        return float("nan"), 0
    y = data["y"].cast(pl.Float64).to_numpy()
    w = data["w"].to_numpy()
    if stat in ("proportion", "mean"):
        value = float(np.sum(w * y) / np.sum(w))
        if stat == "proportion" and ind.spec.unit == "%":
            value *= 100
    elif stat == "total":
        value = float(np.sum(w * y))
    elif stat == "ratio":
        d = data["d"].cast(pl.Float64).fill_null(0.0).to_numpy()
        value = float(np.sum(w * y) / np.sum(w * d))
    else:
        q = ind.spec.quantile or 0.5
        order = np.argsort(y, kind="stable")
        cw = np.cumsum(w[order]) / np.sum(w)
        value = float(y[order][np.searchsorted(cw, q)])
    return value, n


def truth(study: Study, populations: Mapping[str, Population]) -> pl.DataFrame:
    """One row per indicator: the population value, units in its domain, published value."""
    rows = []
    wanted = [i for i in study.indicators.values() if all(g in populations for g in i.groups)]
    for start in range(0, len(wanted), BATCH):
        rows += _rows(study, wanted[start : start + BATCH], populations)
    return pl.DataFrame(rows, infer_schema_length=None)


def _rows(
    study: Study, inds: Sequence[Indicator], populations: Mapping[str, Population]
) -> list[dict[str, object]]:
    columns: dict[tuple[str, str], pl.DataFrame] = {}
    for g, pop in populations.items():
        mine = [ind for ind in inds if g in ind.groups]
        if mine:
            columns.update(
                ((ind.id, g), c) for ind, c in zip(mine, _columns(study, mine, pop), strict=True)
            )
    rows: list[dict[str, object]] = []
    for ind in inds:
        parts = [columns[(ind.id, g)] for g in ind.groups]
        value, n = _value(ind, pl.concat(parts, how="diagonal_relaxed"))
        pub = ind.spec.published
        rows.append(
            {
                "indicator": ind.id,
                "groups": ",".join(ind.groups),
                "statistic": ind.spec.statistic,
                "unit": ind.spec.unit,
                "value": value,
                "units_in_domain": n,
                "published_text": pub.text if pub else None,
                "published_value": pub.value if pub else None,
                "relation": pub.relation if pub else None,
            }
        )
    return rows
