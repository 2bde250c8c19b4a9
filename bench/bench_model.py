"""How long the WeChat impact model takes: 10,000 draws under both presets, and where the time goes.

    .venv/bin/python bench/bench_model.py [--draws 10000] [--repeat 3]

Builds the default simulation, screens, weights and estimates once (not timed), then times
`run_presets` (both presets; the input-output draws are shared) and its parts: the perturbed
Leontief products of the 149-sector table (`leontief_rows_draws`: the Dirichlet gamma variates and
the batched solves), and everything else (survey and prior draws, the formulas as Polars
expressions, the tornado). Results go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from impactstudy.estimate import estimate_all
from impactstudy.impact import io as iot
from impactstudy.impact import model as impact_model
from impactstudy.impact import run_model, run_presets
from impactstudy.quality import screen
from impactstudy.simulate import simulate
from impactstudy.study import bundled_study, load
from impactstudy.weighting import weight


def best(f: object, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--draws", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    study = load(bundled_study())
    sim = simulate(study)
    estimates = estimate_all(weight(screen(sim.responses, study, audit=False), study), study)
    assert study.model is not None and study.model.io is not None
    spec = study.model.io
    table = iot.load_table(spec.year, spec.sectors)
    l_all = iot.employment_coefficients(table, spec.year)
    rows = np.vstack([l_all[None, :], np.eye(table.n)[:5]])

    def io_only() -> None:
        iot.leontief_rows_draws(table.A, rows, alpha=spec.alpha, draws=args.draws, seed=1)

    def whole() -> None:
        impact_model._io_rows.cache_clear()
        run_presets(study, estimates, draws=args.draws)

    def one() -> None:
        impact_model._io_rows.cache_clear()
        run_model(study, estimates, preset="net", draws=args.draws)

    setup = iot._perturb_setup(table.A, spec.alpha)
    block = iot.DRAW_BLOCK

    def gamma_only() -> None:
        for b in range(-(-args.draws // block)):
            iot._dirichlet_block(setup, block, 1, b)

    t_io = best(io_only, args.repeat)
    t_gamma = best(gamma_only, args.repeat)
    t_whole = best(whole, args.repeat)
    t_one = best(one, args.repeat)
    print(
        f"draws: {args.draws:,}; 149-sector table, {int((table.A > 0).sum()):,} nonzero "
        f"coefficients, {len(setup.support):,} with their own variate"
    )
    print("| part | seconds |")
    print("| --- | ---: |")
    print(f"| whole model, one preset (`run_model`, net) | {t_one:.2f} |")
    print(f"| whole model, both presets (`run_presets`) | {t_whole:.2f} |")
    print(f"| perturbed Leontief products (`leontief_rows_draws`) | {t_io:.2f} |")
    print(f"| of which Dirichlet draws (gamma variates, scatter, rescale) | {t_gamma:.2f} |")
    print(f"| everything else (survey and prior draws, formulas, tornado) | {t_whole - t_io:.2f} |")
    print("\nReproduce: .venv/bin/python bench/bench_model.py")


if __name__ == "__main__":
    main()
