"""simulate(): the whole synthetic study for a seed: populations, truth, fieldwork, responses."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from impactstudy.responses import Responses
from impactstudy.simulate.fieldwork import Fieldwork, QuotaShortError, close_quotas, run_fieldwork
from impactstudy.simulate.population import Population, build_population, population_size
from impactstudy.simulate.truth import truth
from impactstudy.study import Study

if TYPE_CHECKING:
    from impactstudy.helper import Helper

__all__ = ["Simulation", "resample", "simulate", "steps"]

BUFFERS = (0.03, 0.1, 0.3, 1.0)


@dataclass
class Simulation:
    """A synthetic study: what the survey collected, and the truth it is judged against."""

    seed: int
    populations: dict[str, Population]
    truth: pl.DataFrame
    fieldwork: Fieldwork

    @property
    def responses(self) -> Responses:
        return self.fieldwork.responses

    def write(self, study: Study, out: Path | str) -> list[Path]:
        """Responses (the interchange folder) and the truth beside them; same seed, same bytes.

        out/responses/   the Responses, as `impactstudy.ingest.read_responses` reads them
        out/truth.csv    every indicator's population value (and .parquet)
        out/sample.csv   who was selected: unit, stratum, mode, bad kind (and .parquet)
        """
        from impactstudy.ingest import write_responses

        root = Path(out)
        root.mkdir(parents=True, exist_ok=True)
        written = list(write_responses(self.responses, study, root / "responses"))
        sample = pl.concat(
            [s.with_columns(pl.lit(g).alias("_group")) for g, s in self.fieldwork.sample.items()],
            how="diagonal_relaxed",
        ).select("_group", "_uuid", "_unit", "_stratum", "_mode", "_order", "_bad")
        for name, frame in (("truth", self.truth), ("sample", sample)):
            frame.write_parquet(root / f"{name}.parquet", statistics=False, compression="zstd")
            frame.write_csv(root / f"{name}.csv")
            written += [root / f"{name}.parquet", root / f"{name}.csv"]
        manifest = {
            "study": study.id,
            "seed": self.seed,
            "groups": {
                g: {"population": p.frame.height, "weight": p.weight}
                for g, p in self.populations.items()
            },
            "files": sorted(str(p.relative_to(root)) for p in written),
        }
        path = root / "simulation.json"
        path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return [*written, path]


def simulate(
    study: Study,
    seed: int | None = None,
    progress: Callable[[str], None] | None = None,
    helper: Helper | None = None,
) -> Simulation:
    """Build every group's population, its truth, and the fieldwork that samples it.

    `progress` is called with a short label after each step (a progress bar's hook). With a
    `helper`, its processes build the largest groups' populations while this one builds the
    smallest (same populations: each group draws from its own seeded stream)."""
    if seed is None:
        seed = study.simulation.simulation.seed if study.simulation else 0
    step = progress or (lambda label: None)
    populations = _populations(study, seed, helper, step)
    true_values = truth(study, populations)
    step("truth")
    fieldwork = _fieldwork(study, populations, seed)
    step("fieldwork")
    step("quotas closed on valid responses")
    return Simulation(seed, populations, true_values, fieldwork)


def _populations(
    study: Study, seed: int, helper: Helper | None, step: Callable[[str], None]
) -> dict[str, Population]:
    """Every group's population, in the study's group order. The helper is handed the groups
    largest first and this process takes them back smallest first (`Future.cancel()` succeeds
    for a group no helper has started), so both finish at about the same time."""
    built: dict[str, Population] = {}
    if helper is None:
        for g in study.groups:
            built[g] = build_population(study, g, seed)
            step(f"population {g}")
        return built
    sizes = {g: population_size(study, g) for g in study.groups}
    largest_first = sorted(study.groups, key=lambda g: -sizes[g])
    futures = {g: helper.submit_study(build_population, g, seed) for g in largest_first}
    for g in reversed(largest_first):
        if futures[g].cancel():
            built[g] = build_population(study, g, seed)
            step(f"population {g}")
    for g in largest_first:
        if g not in built:
            built[g] = futures[g].result()
            step(f"population {g}")
    return {g: built[g] for g in study.groups}


def _fieldwork(study: Study, populations: dict[str, Population], seed: int) -> Fieldwork:
    for buffer in BUFFERS:  # invite more only if screening leaves a quota short
        fieldwork = run_fieldwork(study, populations, seed, buffer)
        try:
            return close_quotas(study, fieldwork)
        except QuotaShortError:
            if buffer == BUFFERS[-1]:
                raise
    raise AssertionError("unreachable")


def resample(study: Study, simulation: Simulation, seed: int) -> Simulation:
    """Another sample from the same finite populations (same truth): new fieldwork for ``seed``.

    Repeated sampling from one population is what design-based coverage is about."""
    fieldwork = _fieldwork(study, simulation.populations, seed)
    return Simulation(seed, simulation.populations, simulation.truth, fieldwork)


def steps(study: Study) -> int:
    """How many times `simulate` calls `progress`."""
    return len(study.groups) + 3
