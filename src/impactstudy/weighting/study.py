"""Weighting a study's valid sample: each group's design, base weights and calibration to its frame.

`weight(valid, study) -> WeightedSample` is the weighting stage's public entry in the pipeline.
Per group, as the sample was drawn: strata are the provinces (the study's ``stratify_by``) when the
frame gives the group's province distribution, each respondent is its own PSU (an online / phone
sample within province quotas), the base weight is the stratum's population count over its valid
respondents and the fpc is that count. The weights are then calibrated as study.toml says (rake,
post-stratify, linear or logit) to the frame's margins (population shares x group population),
with the g-weights bounded when ``[weighting] trim`` gives bounds, and given replicate weights
when ``[weighting] variance`` asks for them. Groups with no province margin are weighted
``population / n`` without strata: the frame says nothing more about them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from impactstudy.estimate import Design
from impactstudy.quality import ValidSample
from impactstudy.study import Study
from impactstudy.study.schema import Trim

from .calibrate import CalibratedDesign, WeightingError, calibrate, post_stratify, rake
from .replicates import replicate

__all__ = ["WeightedGroup", "WeightedSample", "weight"]

WEIGHT = "_weight"
BASE_WEIGHT = "_base_weight"


@dataclass
class WeightedGroup:
    """One group's valid submissions with their weights, its design, and how it was weighted."""

    group: str
    design: Design
    #: margin, category, target (population count), achieved (weighted count)
    margins: pl.DataFrame
    steps: tuple[str, ...]
    population: float

    @property
    def data(self) -> pl.DataFrame:
        """The valid submissions with ``_base_weight`` and ``_weight`` columns."""
        base = (
            self.design.base_weights
            if isinstance(self.design, CalibratedDesign)
            else self.design.weights
        )
        return self.design.data.with_columns(
            pl.Series(BASE_WEIGHT, base), pl.Series(WEIGHT, self.design.weights)
        )


@dataclass
class WeightedSample:
    """The weighting stage's artifact: every group's weighted design, with the rules that made the
    valid sample (`ValidSample.rules`) kept for provenance."""

    study_id: str
    groups: dict[str, WeightedGroup]
    quality_steps: tuple[str, ...] = ()
    provenance: dict[str, object] = field(default_factory=dict)

    def summary(self) -> pl.DataFrame:
        """Per group: n, population, sum of weights, weight range, Kish's design effect due to
        weighting (1 + CV^2 of the weights) and the steps applied."""
        rows = []
        for g in self.groups.values():
            w = g.design.weights
            rows.append(
                {
                    "group": g.group,
                    "n": g.design.n,
                    "population": g.population,
                    "sum_weights": float(w.sum()),
                    "min_weight": float(w.min()),
                    "max_weight": float(w.max()),
                    "deff_weighting": float(1.0 + (w.std() / w.mean()) ** 2),
                    "steps": "; ".join(g.steps),
                }
            )
        return pl.DataFrame(rows)

    def margins(self) -> pl.DataFrame:
        """Every calibration target beside the weighted count achieved."""
        return pl.concat([g.margins for g in self.groups.values()], how="diagonal_relaxed")

    def write(self, path: Path | str) -> Path:
        """``weights.parquet`` (group, _uuid, base weight, weight), ``margins.csv``,
        ``summary.csv`` and ``weighting.json`` in the folder ``path``."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        weights = pl.concat(
            [
                g.data.select(pl.lit(g.group).alias("group"), "_uuid", BASE_WEIGHT, WEIGHT)
                for g in self.groups.values()
            ]
        )
        weights.write_parquet(root / "weights.parquet")
        self.margins().write_csv(root / "margins.csv")
        self.summary().write_csv(root / "summary.csv")
        meta = {"study": self.study_id, "quality_steps": list(self.quality_steps)}
        (root / "weighting.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return root


def _targets(study: Study, group: str, variable: str) -> dict[str, float]:
    margin = study.frames.margins.get(group, {}).get(variable)
    if margin is None:
        raise WeightingError(
            f"group {group!r}: weighting margin {variable!r} has no shares in the frame "
            f"(frames/margins.csv)"
        )
    population = study.frames.populations[group].population
    return {cat: share * population for cat, share in margin.shares.items()}


def _weight_group(study: Study, group: str, data: pl.DataFrame, seed: int) -> WeightedGroup:
    spec = study.config.groups[group].weighting
    settings = study.config.weighting
    population = float(study.frames.populations[group].population)
    if data.height == 0:
        raise WeightingError(f"group {group!r} has no valid submissions to weight")
    strat = study.config.sample.stratify_by
    province = study.frames.margins.get(group, {}).get(strat)
    if province is not None and strat in data.columns:
        counts = _targets(study, group, strat)
        stated = data.get_column(strat).cast(pl.String)
        unknown = sorted(set(stated.drop_nulls().unique().to_list()) - set(counts))
        if unknown or stated.null_count():
            raise WeightingError(
                f"group {group!r}: stratum column {strat!r} has values without a population "
                f"count: {unknown or ['(missing)']}"
            )
        n_h = data.group_by(strat).len()
        data = data.with_columns(
            pl.col(strat).replace_strict(counts, return_dtype=pl.Float64).alias("_N_h")
        ).join(n_h.rename({"len": "_n_h"}), on=strat, how="left")
        data = data.with_columns((pl.col("_N_h") / pl.col("_n_h")).alias(BASE_WEIGHT))
        design = Design(data, strata=strat, weights=BASE_WEIGHT, fpc="_N_h")
        base_step = f"base weights N_h/n_h within {strat}"
    else:
        data = data.with_columns(
            pl.lit(population / data.height).alias(BASE_WEIGHT),
            pl.lit(population).alias("_N_h"),
        )
        design = Design(data, weights=BASE_WEIGHT, fpc="_N_h")
        base_step = "base weights N/n"
    margins = {v: _targets(study, group, v) for v in spec.margins}

    bounds = settings.trim
    if spec.method != "none" and margins:
        if bounds is not None:
            design = _bounded(design, margins, spec.method, bounds)
        elif spec.method == "rake":
            design = rake(
                design, margins, max_iter=settings.max_iterations, epsilon=settings.tolerance
            )
        elif spec.method == "poststratify":
            if len(margins) != 1:
                raise WeightingError(
                    f"group {group!r}: poststratify takes one margin, got {list(margins)}"
                )
            ((var, counts),) = margins.items()
            design = post_stratify(design, var, counts)
        else:
            design = _bounded(design, margins, spec.method, Trim())
    if settings.variance != "taylor":
        kind = {"jk1": "JK1", "jkn": "JKn", "brr": "BRR", "bootstrap": "bootstrap"}
        design = replicate(
            design,
            kind[settings.variance],  # type: ignore[arg-type]
            replicates=settings.replicates or 50,
            seed=seed,
        )
    steps = [base_step]
    if isinstance(design, CalibratedDesign):
        steps += [s.name for s in design.steps]
    rows = []
    for var, counts in margins.items():
        # bincount sums in row order: the same bits every run (a threaded group-by may not)
        labels = design.data.get_column(var).cast(pl.String).to_numpy().astype(str)
        names, codes = np.unique(labels, return_inverse=True)
        sums = np.bincount(codes.reshape(-1), weights=design.weights, minlength=len(names))
        got = dict(zip((str(v) for v in names), sums.tolist(), strict=True))
        rows += [
            {
                "group": group,
                "margin": var,
                "category": c,
                "target": t,
                "achieved": float(got.get(c, 0.0)),
            }
            for c, t in counts.items()
        ]
    table = pl.DataFrame(
        rows,
        schema={
            "group": pl.String,
            "margin": pl.String,
            "category": pl.String,
            "target": pl.Float64,
            "achieved": pl.Float64,
        },
    )
    return WeightedGroup(group, design, table, tuple(steps), population)


def _bounded(
    design: Design, margins: dict[str, dict[str, float]], method: str, bounds: Trim
) -> Design:
    """Calibration to the margins with the g-weights (final / base weight) kept within
    ``bounds``: R's ``calibrate(calfun=..., bounds=...)`` on the margins' category indicators."""
    calfun = {"rake": "raking", "poststratify": "raking", "linear": "linear", "logit": "logit"}
    population: dict[str, float] = {}
    for var, counts in margins.items():
        population["(Intercept)"] = float(sum(counts.values()))
        # R's baseline (no dummy) is the first level in sorted order of the sample's values
        baseline = design.data.get_column(var).cast(pl.String).drop_nulls().min()
        population.update({f"{var}{cat}": n for cat, n in counts.items() if cat != baseline})
    return calibrate(
        design,
        list(margins),
        population,
        calfun=calfun[method],  # type: ignore[arg-type]
        bounds=(bounds.lower or 0.0, bounds.upper or np.inf),
    )


def weight(valid: ValidSample, study: Study, *, seed: int = 0) -> WeightedSample:
    """Weight every group of the valid sample to its frame (see the module docstring).

    ``seed`` seeds the bootstrap replicates when ``[weighting] variance = "bootstrap"``."""
    groups = {
        g.group: _weight_group(study, g.group, g.valid, seed + i) for i, g in enumerate(valid)
    }
    excluding = tuple(f"{r.id} ({r.kind})" for r in valid.rules if r.action == "exclude")
    return WeightedSample(
        valid.study_id,
        groups,
        quality_steps=excluding,
        provenance={"variance": study.config.weighting.variance},
    )
