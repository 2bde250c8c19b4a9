"""The ground truth: every indicator's value over the whole synthetic population.

This is what a perfect census would find: later stages (weighting, estimation, the impact
model) are checked against it. Values are in the indicator's presentation unit (a proportion
with unit % is a percentage), totals in real units (each synthetic unit weighs
population / size).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from impactstudy.forms.vector import to_polars
from impactstudy.simulate.population import Population, column_kinds
from impactstudy.study import Indicator, Study

__all__ = ["truth"]


def _columns(study: Study, ind: Indicator, pop: Population) -> pl.DataFrame:
    """Per unit of one group: the indicator's value, its denominator and domain, the weight."""
    kinds = column_kinds(study.groups[pop.group].form, pop.frame)
    today = study.config.fieldwork.start
    kind = "boolean" if ind.spec.statistic == "proportion" else "number"
    cols = [
        to_polars(ind.expression, kinds, today=today, result=kind).alias("y"),  # type: ignore[arg-type]
        pl.lit(pop.weight).alias("w"),
    ]
    if ind.denominator is not None:
        cols.append(to_polars(ind.denominator, kinds, today=today, result="number").alias("d"))
    if ind.domain is not None:
        dom = to_polars(ind.domain, kinds, today=today, result="boolean").fill_null(False)
        cols.append(dom.alias("in_domain"))
    else:
        cols.append(pl.lit(True).alias("in_domain"))
    return pop.frame.select(cols)


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
    for ind in study.indicators.values():
        parts = [_columns(study, ind, populations[g]) for g in ind.groups if g in populations]
        if len(parts) != len(ind.groups):
            continue
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
    return pl.DataFrame(rows, infer_schema_length=None)
